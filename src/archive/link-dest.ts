/**
 * Link-dest: a file of the archive equal to the previous release's (or, for the rsync strategy,
 * dest's) is hard-linked from it instead of written again, as `rsync --link-dest` does. The old inode
 * is linked in first, then the incoming bytes are compared with it as they stream; the first difference
 * turns it back into a written file. What `from` holds is never written, truncated, chmod-ed or
 * chown-ed. Its owner may be hostile (SECURITY.md, class 2): a file is linked only when reached through
 * real directories (no symlink followed) and when every other name of its inode is accounted for (or
 * no one but root can have made one).
 * Each linked file is remembered (inode, size, mtime, mode, owner) so that a change made to it in
 * place later, through the other name, can be detected (`changedLink`).
 */
import { dfgOnly } from "../jit.ts";
import * as fs from "node:fs";
import { join } from "node:path";
import { inodeCounts } from "../dirents.ts";
import { openNewFile, unlinkEntry, writeAll } from "./files.ts";
import type { TarHeader } from "./tar-header.ts";

const { O_RDONLY, O_DIRECTORY, O_NOFOLLOW } = fs.constants;

let protectedHardlinks: boolean | undefined;
/** fs.protected_hardlinks is 1: a user may hard-link only a file it owns or may read and write. */
export function hardlinksProtected(): boolean {
  try {
    protectedHardlinks ??= fs.readFileSync("/proc/sys/fs/protected_hardlinks", "latin1").trim() === "1";
  } catch {
    protectedHardlinks = false; // no procfs (a container without it): assume not
  }
  return protectedHardlinks;
}

/** A peer release's directories from its root down to the one last looked up, each opened. */
interface PeerWalk {
  names: string[];
  /** One more than `names`: the peer's root first. */
  fds: number[];
  inos: number[];
  devs: number[];
  /**
   * Per directory, the path to look up its entries through: the plain path below the peer (as given)
   * while every directory above it is writable by the agent's user alone (no one else can swap an entry
   * on the way; half the CPU of a `/proc/self/fd/N/name` lookup), else its descriptor's.
   */
  paths: string[];
  /** Per directory, whether only the agent's user can change its entries (`onlyOurs`). */
  ours: boolean[];
  /** A directory found missing (or not a real one) at the last lookup: nothing below it is looked up. */
  failed: string | undefined;
  /**
   * Per directory, how many of its names each inode has, read once (`inodeCounts`: a descriptor is read
   * to its end, and a parent is returned to after its subdirectories), or null where they can't be (the
   * file's own name is then looked up); undefined until asked.
   */
  listings: (Map<number, number> | null | undefined)[];
  /** The directory (as given) the chain leads to now, when complete. */
  dir: string | undefined;
}

/** Whether the extractor chowns (as root) and, if it does not, the owner every new file gets. */
export interface Ownership {
  chown: boolean;
  newOwner: { uid: number; gid: number } | undefined;
}

export class LinkDest {
  /** Files hard-linked from `from` instead of written. */
  linked = 0;
  /** Per linked file: its path, and its inode, size, mtime, mode, uid and gid (the archive's). */
  private linkedPaths: string[] = [];
  private linkedMeta: number[] = [];
  /** A file whose equal prefix was copied from a linked inode that was being written to meanwhile. */
  private tainted: string | undefined;

  /**
   * @param root the tree being extracted
   * @param from the previous release or dest; dropped (nothing linked any more) at the first EXDEV
   * @param peers directories where a file of the same path may share that inode legitimately (the
   *   other releases, where it was linked before); by default `from` alone.
   */
  constructor(
    private readonly root: string,
    private from: string | undefined,
    private readonly peers: string[] | undefined,
    private readonly owner: Ownership,
  ) {}

  /** Still linking: `from` was given and is on the tree's file system. */
  get active(): boolean {
    return this.from !== undefined;
  }

  private get chown(): boolean {
    return this.owner.chown;
  }
  private get newOwner(): { uid: number; gid: number } | undefined {
    return this.owner.newOwner;
  }

  /**
   * A file whose size, mtime, mode and owner match `linkFrom`'s is a candidate for a hard link: the
   * old inode is linked into the tree at once, then the incoming bytes are compared with it as they
   * stream (reads, not writes). If all match, the link stays; at the first difference it is replaced by
   * a new file, written starting with the equal prefix copied from the old one. Linking first and then
   * reading the tree's name (which no one else can change) means that what is kept is exactly what was
   * compared, even if `linkFrom/rel` is replaced meanwhile.
   */
  begin(rel: string, path: string, h: TarHeader): boolean {
    if (this.missingDir !== undefined && rel.startsWith(this.missingDir)) return false;
    const parent = this.linkDir(rel);
    if (parent === undefined) return false;
    const prev = join(this.from!, rel);
    // Not an exception per new file: a first deploy into an empty dest has only those.
    const st = fs.lstatSync(prev, { throwIfNoEntry: false });
    if (st === undefined || !st.isFile() || !this.sameAsEntry(st, h)) return false;
    if (!this.link(prev, path)) return false;
    let fd: number;
    try {
      fd = fs.openSync(path, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
    } catch {
      unlinkEntry(path, h.name);
      return false;
    }
    const now = fs.fstatSync(fd);
    if (
      !now.isFile() ||
      !this.sameAsEntry(now, h) ||
      now.ino !== st.ino ||
      now.dev !== st.dev ||
      !this.vouched(rel, now, parent)
    ) {
      fs.closeSync(fd);
      unlinkEntry(path, h.name);
      return false;
    }
    this.compare = { fd, ino: now.ino, rel, path, offset: 0 };
    if (h.size === 0) this.finish(h);
    return true;
  }

  /**
   * The inode of the directory holding `rel` in `linkFrom` when every directory on the way is a real
   * one (lstat: a symlink planted there is never followed), else undefined. Cached per directory, with
   * whether only the agent's user can change it and every directory above it (`linkSafe`).
   */
  private linkDir(rel: string): number | undefined {
    const slash = rel.lastIndexOf("/");
    const parent = slash === -1 ? "" : rel.slice(0, slash);
    // The same directory as the last file's (an archive lists a directory's files together).
    if (parent === this.lastParent) return this.lastParentIno;
    const ino = this.walkDirs(rel);
    this.lastParent = parent;
    this.lastParentIno = ino;
    return ino;
  }
  private lastParent: string | undefined;
  private lastParentIno: number | undefined;

  /** `linkDir` without the last directory's shortcut: each directory on the way, from the cache or looked up. */
  private walkDirs(rel: string): number | undefined {
    let ino = this.linkDirs.get("");
    if (ino === undefined) {
      const st = fs.statSync(this.from!); // the root itself is given (pinned by the caller)
      ino = st.ino;
      this.linkDirs.set("", ino);
      this.linkSafe.set("", this.onlyOurs(st));
    }
    let parent = "";
    for (let i = rel.indexOf("/"); i !== -1; i = rel.indexOf("/", i + 1)) {
      const dir = rel.slice(0, i);
      let known = this.linkDirs.get(dir);
      if (known === undefined) {
        const st = fs.lstatSync(join(this.from!, dir), { throwIfNoEntry: false });
        known = st?.isDirectory() ? st.ino : -1;
        this.linkDirs.set(dir, known);
        this.linkSafe.set(dir, known !== -1 && this.linkSafe.get(parent) === true && this.onlyOurs(st!));
      }
      if (known === -1) return undefined;
      ino = known;
      parent = dir;
    }
    return ino;
  }
  private linkDirs = new Map<string, number>();
  private linkSafe = new Map<string, boolean>();
  private onlyOurs(st: fs.Stats): boolean {
    return st.uid === this.uid && (st.mode & 0o022) === 0;
  }
  private readonly uid = process.getuid?.() ?? 0;

  /**
   * The file just linked (`now`, with our new name counted in its nlink) is one the agent can vouch
   * for: its directory in `linkFrom` is still the real one checked before the link (no one else can
   * have swapped it if it and every directory above are writable by the agent's user alone, as in a
   * release packed by `publish`), and each of its other names is a name in the same directory of
   * `linkFrom` or a peer (a release it was linked into before), each directory a distinct real one
   * reached without following a link. A name more, such as a hard link the app made to a file outside
   * the tree, and it is written instead. Which name it has there does not matter: every name counted is
   * inside a release, and the count must equal nlink exactly.
   */
  private vouched(rel: string, now: fs.Stats, parent: number): boolean {
    const slash = rel.lastIndexOf("/");
    const dir = slash === -1 ? "" : rel.slice(0, slash);
    if (
      dir !== "" &&
      this.linkSafe.get(dir) !== true &&
      fs.lstatSync(join(this.from!, dir), { throwIfNoEntry: false })?.ino !== parent
    )
      return false;
    if (now.nlink === 2) return true; // `linkFrom`'s name, proven by the lstat before the link, and ours
    if (this.onlyOursMadeNames(now, dir)) return true;
    if (this.peers === undefined) return false;
    const base = slash === -1 ? rel : rel.slice(slash + 1);
    const seen = new Set([parent]);
    // Names still to account for: all but `linkFrom`'s and ours.
    let missing = now.nlink - 2;
    // Newest release first: a file changed a few releases ago has its names there, and the loop stops
    // as soon as every name is accounted for.
    for (const walk of this.peerWalks()) {
      const holder = this.peerDir(walk, dir);
      if (holder === undefined || seen.has(holder.ino) || holder.dev !== now.dev) continue;
      // The directory's listing, read once for all its files (an lstat per file and peer was most of
      // a redeploy's system calls with a few releases kept), else a lookup of this name.
      const level = walk.fds.length - 1;
      let listing = walk.listings[level];
      if (listing === undefined) listing = walk.listings[level] = inodeCounts(walk.fds[level]!) ?? null;
      const names =
        listing !== null
          ? (listing.get(now.ino) ?? 0)
          : fs.lstatSync(`${holder.path}/${base}`, { throwIfNoEntry: false })?.ino === now.ino
            ? 1
            : 0;
      if (names === 0) continue;
      seen.add(holder.ino);
      missing -= names;
      // More names than nlink: a listing read before a name was removed; trust none of it.
      if (missing <= 0) return missing === 0;
    }
    return false;
  }

  /**
   * Every name of the inode was made by the agent's user (root), so none needs looking for: the file is
   * that user's and writable by no one else, the kernel refuses a hard link to a file one neither owns
   * nor may write (fs.protected_hardlinks = 1), and its directory in `linkFrom` and every one above can
   * be changed by that user alone (`linkSafe`), so no one else can have moved a name of some other file
   * there. The file's owner and mode are its own since it was made (link-dest never chmods or chowns an
   * inode it did not just write, and a mode or owner change in an archive makes a new file).
   */
  private onlyOursMadeNames(now: fs.Stats, dir: string): boolean {
    return now.uid === this.uid && (now.mode & 0o022) === 0 && this.linkSafe.get(dir) === true && hardlinksProtected();
  }

  /**
   * The peers other than `linkFrom` (whose name `begin` proved), newest first, each with the chain of
   * directories last looked up in it. Opened once, on the first file with more than one other name.
   */
  private peerWalks(): PeerWalk[] {
    if (this.walks !== undefined) return this.walks;
    this.walks = [];
    const from = fs.statSync(this.from!);
    for (const peer of [...this.peers!].reverse()) {
      let fd: number;
      try {
        fd = fs.openSync(peer, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
      } catch {
        continue; // pruned meanwhile, or not a directory: holds no name
      }
      const st = fs.fstatSync(fd);
      if (st.ino === from.ino && st.dev === from.dev) {
        fs.closeSync(fd);
        continue;
      }
      // The peer's root as given: its path is pinned (or only root can change it) by the caller, as `from`.
      this.walks.push({
        names: [],
        fds: [fd],
        inos: [st.ino],
        devs: [st.dev],
        paths: [peer],
        ours: [this.onlyOurs(st)],
        failed: undefined,
        listings: [undefined],
        dir: undefined,
      });
    }
    return this.walks;
  }
  private walks: PeerWalk[] | undefined;

  /**
   * The directory `dir` of a peer, opened: each component with O_NOFOLLOW through its parent's
   * descriptor, so a symlink planted on the way is never followed and a directory renamed or swapped
   * after it was opened is not looked into. The chain of the previous lookup is kept (an archive lists
   * a directory's files together): a file in the same directory costs no open. undefined when the peer
   * has no such real directory.
   */
  private peerDir(walk: PeerWalk, dir: string): { path: string; ino: number; dev: number } | undefined {
    if (walk.failed !== undefined && (dir === walk.failed || dir.startsWith(`${walk.failed}/`))) return undefined;
    const depth = walk.names.length;
    // The same directory as the last file's (an archive lists a directory's files together).
    if (walk.failed === undefined && walk.dir === dir)
      return { path: walk.paths[depth]!, ino: walk.inos[depth]!, dev: walk.devs[depth]! };
    walk.dir = undefined;
    const names = dir === "" ? [] : dir.split("/");
    let keep = 0;
    while (keep < names.length && keep < walk.names.length && names[keep] === walk.names[keep]) keep++;
    while (walk.names.length > keep) {
      walk.names.pop();
      walk.inos.pop();
      walk.devs.pop();
      walk.listings.pop();
      walk.paths.pop();
      walk.ours.pop();
      fs.closeSync(walk.fds.pop()!);
    }
    walk.failed = undefined;
    for (let i = keep; i < names.length; i++) {
      let fd: number;
      try {
        // Through the plain path where no one else can change an entry on the way (`paths`).
        const at = walk.ours[i] ? `${walk.paths[i]}/${names[i]}` : `/proc/self/fd/${walk.fds[i]}/${names[i]}`;
        fd = fs.openSync(at, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
      } catch {
        walk.failed = names.slice(0, i + 1).join("/");
        return undefined;
      }
      const st = fs.fstatSync(fd);
      walk.names.push(names[i]!);
      walk.fds.push(fd);
      walk.inos.push(st.ino);
      walk.devs.push(st.dev);
      walk.listings.push(undefined);
      walk.paths.push(walk.ours[i] ? `${walk.paths[i]}/${names[i]}` : `/proc/self/fd/${fd}`);
      walk.ours.push(walk.ours[i]! && this.onlyOurs(st));
    }
    walk.dir = dir;
    return { path: walk.paths[names.length]!, ino: walk.inos[names.length]!, dev: walk.devs[names.length]! };
  }

  /** Close the peers' directories (all entries are in, or extraction failed). */
  closePeers(): void {
    for (const walk of this.walks ?? []) for (const fd of walk.fds) fs.closeSync(fd);
    this.walks = undefined;
  }

  /**
   * `linkFrom` has no directory `rel` (or a symlink there): skip looking up the files the archive
   * lists under it next. One lookup per directory instead of one per file on a first deploy.
   */
  noteDir(rel: string): void {
    if (this.missingDir !== undefined && rel.startsWith(this.missingDir)) return;
    const st = fs.lstatSync(join(this.from!, rel), { throwIfNoEntry: false });
    this.missingDir = st?.isDirectory() ? undefined : `${rel}/`;
  }
  /** A directory missing from `linkFrom`, with a trailing slash. */
  private missingDir: string | undefined;

  /** Size, mtime (to the nanosecond), mode and the owner a written file would end up with. */
  private sameAsEntry(st: fs.Stats, h: TarHeader): boolean {
    if (st.size !== h.size || st.mtimeMs !== h.mtime * 1000 || (st.mode & 0o7777) !== (h.mode & 0o7777)) return false;
    const owner = this.chown ? h : this.newOwner;
    return owner !== undefined && st.uid === owner.uid && st.gid === owner.gid;
  }

  /** Hard-link `prev` as `path`; false (write the file instead) where the file system refuses. */
  private link(prev: string, path: string): boolean {
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        fs.linkSync(prev, path);
        return true;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        // EXDEV: `linkFrom` is on another file system (or mount), so no link will work. EMLINK, EPERM
        // (protected_hardlinks) and the like: this file only.
        if (code === "EXDEV") this.from = undefined;
        if (attempt > 0 || (code !== "EEXIST" && code !== "ENOENT")) return false;
        try {
          // EEXIST: an earlier entry of the same name; ENOENT: a parent not in the archive.
          if (code === "EEXIST") fs.unlinkSync(path);
          else fs.mkdirSync(path.slice(0, path.lastIndexOf("/")), { recursive: true, mode: 0o755 });
        } catch {
          return false; // openNewFile will say what is wrong
        }
      }
    }
    return false;
  }

  private compare: { fd: number; ino: number; rel: string; path: string; offset: number } | null = null;
  private scratch = Buffer.alloc(1 << 16);

  /** A file is being compared: `data` and `finish` are for it. */
  get comparing(): boolean {
    return this.compare !== null;
  }

  /**
   * Compare incoming bytes with the linked file. At the first difference the file is written after
   * all: the new file's descriptor is returned (holding the equal prefix and `bytes`), for the rest.
   */
  data(bytes: Uint8Array, h: TarHeader): number | undefined {
    const c = this.compare!;
    if (this.scratch.length < bytes.length) this.scratch = Buffer.alloc(bytes.length);
    const n = fs.readSync(c.fd, this.scratch, 0, bytes.length, c.offset);
    if (n === bytes.length && this.scratch.subarray(0, n).equals(bytes)) {
      c.offset += n;
      return undefined;
    }
    // Different after all: a new file (openNewFile unlinks the link), beginning with the equal prefix.
    this.compare = null;
    let fd: number | undefined;
    try {
      fd = openNewFile(c.path, h.mode, h.name);
      for (let off = 0; off < c.offset; ) {
        const len = fs.readSync(c.fd, this.scratch, 0, Math.min(this.scratch.length, c.offset - off), off);
        if (len <= 0) break;
        writeAll(fd, this.scratch.subarray(0, len), h.name);
        off += len;
      }
      // Written to in place while we read it: the prefix may not be the archive's.
      if (!this.sameAsEntry(fs.fstatSync(c.fd), h)) this.tainted ??= c.rel;
      writeAll(fd, bytes, h.name);
      return fd;
    } catch (err) {
      if (fd !== undefined) fs.closeSync(fd);
      throw err;
    } finally {
      fs.closeSync(c.fd);
    }
  }

  /** Every byte matched: the link stays. */
  finish(h: TarHeader): void {
    const c = this.compare!;
    this.compare = null;
    // Written to in place while we compared (mtime or size moved), even if the bytes read matched.
    try {
      if (!this.sameAsEntry(fs.fstatSync(c.fd), h)) this.tainted ??= c.rel;
    } finally {
      fs.closeSync(c.fd);
    }
    const owner = this.chown ? h : this.newOwner!;
    this.linkedPaths.push(c.rel);
    this.linkedMeta.push(c.ino, h.size, h.mtime, h.mode & 0o7777, owner.uid, owner.gid);
    this.linked++;
  }

  /**
   * The first linked file that is no longer as extracted, or undefined. A linked file shares its inode
   * with `linkFrom`, so whoever writes to or chmods that file in place after extraction (a `pre`
   * command, the running app) changes this tree too, and the archive's bytes are gone: the caller
   * must extract again without links. A write shows as a new mtime (or size), a chmod/chown as such.
   * Without `each`, only a file seen changing while it was compared (with it, a stat per linked file).
   */
  changedLink(each = true): string | undefined {
    if (this.tainted !== undefined || !each) return this.tainted;
    const meta = this.linkedMeta;
    for (let i = 0; i < this.linkedPaths.length; i++) {
      const rel = this.linkedPaths[i]!;
      let st: fs.Stats;
      try {
        st = fs.lstatSync(join(this.root, rel));
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === "ENOENT" || code === "ENOTDIR") continue; // removed by a later entry
        return rel;
      }
      const m = i * 6;
      if (st.ino !== meta[m]) continue; // replaced by a later entry of the archive: not linked
      if (
        st.size !== meta[m + 1] ||
        st.mtimeMs !== meta[m + 2]! * 1000 ||
        (st.mode & 0o7777) !== meta[m + 3] ||
        st.uid !== meta[m + 4] ||
        st.gid !== meta[m + 5]
      )
        return rel;
    }
    return undefined;
  }

  /** Close the file being compared; used on every failure path. */
  abort(): void {
    if (this.compare !== null) {
      fs.closeSync(this.compare.fd);
      this.compare = null;
    }
    this.closePeers();
  }
}

dfgOnly(LinkDest);
