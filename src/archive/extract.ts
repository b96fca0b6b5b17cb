/**
 * `src/archive/`: the tar.gz formats: guarded streaming extraction (agent) and the
 * deterministic packer (publish). May import the shared modules only.
 *
 * Streaming tar extraction into a fresh directory, guarded like go-getter: entries with `..`,
 * absolute paths, paths through a symlink of the archive, hard links out of the tree, device files
 * and more than `maxEntries` entries are refused, naming the entry. Bytes are written as they arrive
 * (no copy of the archive), with synchronous writes so that memory stays flat.
 *
 * Formats: ustar, GNU (long names `L`/`K`, base-256 numbers) and pax (`x`, `g`) headers; gzip or plain.
 *
 * Parsing is strict, since the archive is hostile until its checksum is known (at the end of the
 * stream): every number of a header is octal terminated by NUL/space only (or base-256) and in range
 * for its field, pax records are framed exactly, names are valid UTF-8 without control characters,
 * and meta entries (pax, long names) are capped at 1 MiB before any byte of them is held. Each refusal
 * is one line naming the entry, its unprintable bytes escaped.
 */
import * as fs from "node:fs";
import { join } from "node:path";
import { ExtractError } from "../errors.ts";

export interface ExtractLimits {
  /** Refuse archives with more entries than this (a tar bomb). */
  maxEntries: number;
  /** Refuse archives whose entries declare more bytes than this in all (meta entries included). */
  maxBytes: number;
  /**
   * Accept an archive with no entry besides its root. Off by default: syncing an empty tree empties
   * `dest` (rsync --delete, mv, or an empty release), which is rarely what a publisher meant.
   */
  allowEmpty?: boolean;
}

export const DEFAULT_LIMITS: ExtractLimits = { maxEntries: 1_000_000, maxBytes: 64 * 2 ** 30 };

interface Header {
  name: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  type: string;
  linkname: string;
}

const BLOCK = 512;
const strictDecoder = new TextDecoder("utf-8", { fatal: true });

/** Meta entries are held whole in memory: capped like Go's archive/tar and GNU tar (1 MiB). */
export const MAX_META_SIZE = 1 << 20;
/** Linux's PATH_MAX (and NAME_MAX per component): no longer name can be created, so refuse it before it fills messages. */
const MAX_NAME_BYTES = 4096;
/** Bytes tolerated after the end-of-archive marker: padding to a record (GNU tar's largest is 1 MiB). */
const MAX_TRAILING = 16 * 2 ** 20;
/** (uid_t)-1 means "leave unchanged" to chown. */
const MAX_ID = 0xfffffffe;
/** 1901-12-13 .. 2514-05-30: what file systems store; anything beyond is a corrupt or hostile header. */
const MTIME_MIN = -(2 ** 31);
const MTIME_MAX = 2 ** 34;

/** Values of a pax `x` header (or GNU `L`/`K`) for the next entry, already validated. */
interface Overrides {
  path?: string;
  linkpath?: string;
  size?: number;
  mtime?: number;
  uid?: number;
  gid?: number;
}

/** Feed it the decompressed tar stream with `write`, then `end`. Throws `ExtractError`. */
export class TarExtractor {
  private buf = new Uint8Array(BLOCK);
  private bufLen = 0;
  /** Bytes left in the current entry's data (excluding padding). */
  private remaining = 0;
  private padding = 0;
  private fd: number | null = null;
  private entry: Header | null = null;
  /** Collected data of a meta entry (pax or GNU long name). */
  private meta: Uint8Array[] | null = null;
  private pax: Overrides = {};
  private longName: string | null = null;
  private longLink: string | null = null;
  /** Meta entries (pax, long names): they count against `maxEntries` too. */
  private metaEntries = 0;
  /** Entries other than the root: none means an empty archive. */
  private content = 0;
  private symlinks = new Set<string>();
  private dirs: { rel: string; path: string; mode: number; mtime: number }[] = [];
  /** The mtime of the archive's `./` entry, for the root (set last, after everything inside it). */
  private rootMtime: number | undefined;
  private zeroBlocks = 0;
  private done = false;
  private readonly chown: boolean;
  /** The owner every new entry gets anyway; as root, unknown (chown everything) under a setgid root. */
  private readonly newOwner: { uid: number; gid: number } | undefined;
  entries = 0;
  bytes = 0;

  /** Files hard-linked from `linkFrom` instead of written. */
  linked = 0;
  /** The archive's own hard-link entries (type 1). */
  hardLinkEntries = 0;
  /** Per linked file: its path, and its inode, size, mtime, mode, uid and gid (the archive's). */
  private linkedPaths: string[] = [];
  private linkedMeta: number[] = [];
  /** A file whose equal prefix was copied from a linked inode that was being written to meanwhile. */
  private tainted: string | undefined;

  /**
   * @param linkFrom a previous release (or, for the rsync strategy, dest itself): a regular file whose
   *   size, mtime, mode and owner match is hard-linked from it instead of written again (as
   *   `rsync --link-dest` does), once its bytes are found equal. Nothing under `linkFrom` is ever
   *   written, truncated, chmod-ed or chown-ed: a later entry of the same name replaces the link.
   *   Its owner may be hostile (SECURITY.md, class 2): a file is linked only when reached through real
   *   directories (no symlink followed) and when every other name of its inode is accounted for.
   * @param linkPeers directories where a file of the same path may share that inode legitimately (the
   *   other releases, where it was linked before); by default `linkFrom` alone.
   */
  constructor(
    private readonly root: string,
    private readonly limits: ExtractLimits = DEFAULT_LIMITS,
    private linkFrom?: string,
    private readonly linkPeers?: string[],
  ) {
    this.chown = typeof process.getuid === "function" && process.getuid() === 0;
    this.newOwner = newOwnerUnder(root);
    this.umask = process.umask();
  }
  private readonly umask: number;

  write(chunk: Uint8Array): void {
    let off = 0;
    while (off < chunk.length && !this.done) {
      if (this.remaining > 0) {
        const n = Math.min(this.remaining, chunk.length - off);
        this.data(chunk.subarray(off, off + n));
        this.remaining -= n;
        off += n;
        if (this.remaining === 0) this.finishEntry();
        continue;
      }
      if (this.padding > 0) {
        const n = Math.min(this.padding, chunk.length - off);
        this.padding -= n;
        off += n;
        continue;
      }
      // Accumulate one header block.
      const n = Math.min(BLOCK - this.bufLen, chunk.length - off);
      this.buf.set(chunk.subarray(off, off + n), this.bufLen);
      this.bufLen += n;
      off += n;
      if (this.bufLen === BLOCK) {
        this.bufLen = 0;
        this.header(this.buf);
      }
    }
    // After the end marker the bytes are ignored (as tar does), but not without bound: else a gzip
    // stream of zeros after it would be inflated for as long as it lasts, counted by no limit.
    if (this.done && off < chunk.length) {
      this.trailing += chunk.length - off;
      if (this.trailing > MAX_TRAILING) throw new ExtractError(`more than ${MAX_TRAILING} bytes after the end-of-archive marker (concatenated archives are not supported)`, this.entry?.name);
    }
  }
  private trailing = 0;

  /** The stream ended: a partial entry means a truncated archive. Sets directory modes and times. */
  end(): void {
    if (this.remaining > 0 || this.bufLen > 0 || this.meta !== null) {
      const name = this.entry?.name ?? this.longName ?? "(header)";
      this.abort();
      throw new ExtractError("truncated archive: stream ended inside entry", name);
    }
    if (this.content === 0 && !this.limits.allowEmpty) {
      this.abort();
      throw new ExtractError("empty archive: no entry besides its root; deploying it would empty dest (pass --allow-empty-archive if that is what you want)");
    }
    // Deepest first so that setting a parent's mtime is not undone by its children.
    for (const d of this.dirs.reverse()) {
      // Not through what a later entry put in its place or a parent's: chmod and utimes follow a
      // symlink out of the tree, and a hard link's inode may be linkFrom's (dest's).
      if (!this.stillDir(d.rel, d.path)) continue;
      fs.chmodSync(d.path, d.mode);
      fs.utimesSync(d.path, d.mtime, d.mtime);
    }
    if (this.rootMtime !== undefined) fs.utimesSync(this.root, this.rootMtime, this.rootMtime);
  }

  /** `path` is still a directory of ours: no parent is an archive symlink, and it is not replaced. */
  private stillDir(rel: string, path: string): boolean {
    for (let i = rel.indexOf("/"); i !== -1; i = rel.indexOf("/", i + 1)) if (this.symlinks.has(rel.slice(0, i))) return false;
    try {
      return fs.lstatSync(path).isDirectory();
    } catch {
      return false; // removed, or a parent replaced by a file
    }
  }

  /**
   * The first linked file that is no longer as extracted, or undefined. A linked file shares its inode
   * with `linkFrom`, so whoever writes to or chmods that file in place after extraction (a `pre`
   * command, the running app) changes this tree too, and the archive's bytes are gone: the caller
   * must extract again without links. A write shows as a new mtime (or size), a chmod/chown as such.
   * Without `each`, only a file seen changing while it was compared (a stat per linked file is ~5 µs).
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
      if (st.size !== meta[m + 1] || st.mtimeMs !== meta[m + 2]! * 1000 || (st.mode & 0o7777) !== meta[m + 3] || st.uid !== meta[m + 4] || st.gid !== meta[m + 5]) return rel;
    }
    return undefined;
  }

  /** Close any open file; used on every failure path. */
  abort(): void {
    if (this.fd !== null) {
      fs.closeSync(this.fd);
      this.fd = null;
    }
    if (this.compare !== null) {
      fs.closeSync(this.compare.fd);
      this.compare = null;
    }
  }

  private header(block: Uint8Array): void {
    if (block.every((b) => b === 0)) {
      if (++this.zeroBlocks >= 2) this.done = true;
      return;
    }
    this.zeroBlocks = 0;
    if (!checksumOk(block)) throw new ExtractError("corrupt archive: bad tar header checksum after entry", this.entry?.name ?? "(start)");
    const type = typeOf(block[156]!);
    if (type === "x" || type === "g" || type === "L" || type === "K") {
      // Held in memory until its end: refused at the cap before a byte of it is buffered.
      const label = printable(field(block, 0, 100));
      this.metaEntries++;
      this.countEntry(label);
      const size = numeric(block, 124, 12, "size", label);
      if (size > MAX_META_SIZE) throw new ExtractError(`${META_KIND[type]} of ${size} bytes is larger than the ${MAX_META_SIZE}-byte limit`, label);
      this.countBytes(size, label);
      this.entry = { name: label, mode: 0, uid: 0, gid: 0, size, mtime: 0, type, linkname: "" };
      this.meta = [];
      this.remaining = size;
      this.padding = pad(size);
      if (size === 0) this.finishEntry();
      return;
    }
    // Overrides from preceding pax / GNU long-name entries; a GNU long name wins over pax.
    const over: Overrides = { ...this.pax };
    if (this.longName !== null) over.path = this.longName;
    if (this.longLink !== null) over.linkpath = this.longLink;
    this.pax = {};
    this.longName = null;
    this.longLink = null;
    const h = parseHeader(block, over);
    this.entry = h;
    this.countBytes(h.size, h.name);
    this.begin(h);
    this.remaining = h.type === "0" ? h.size : 0;
    this.padding = pad(h.size);
    // Data of non-file entries (rare) is skipped as padding.
    if (h.type !== "0") this.padding = pad(h.size) + h.size;
    if (this.remaining === 0) this.finishEntry();
  }

  private countEntry(name: string): void {
    if (this.entries + this.metaEntries + this.impliedDirs > this.limits.maxEntries) {
      const meta = this.metaEntries > 0 ? `, counting ${this.metaEntries} pax and long-name headers` : "";
      const implied = this.impliedDirs > 0 ? `, counting ${this.impliedDirs} directories the archive implies` : "";
      throw new ExtractError(`too many entries (limit ${this.limits.maxEntries}${meta}${implied})`, name);
    }
  }

  /**
   * Make the entry's missing parent directories (archives may omit them), counting each one made
   * against `maxEntries`: else one entry `d/d/d/…/f` would make ~2000 inodes. Skipped while entries
   * stay in the last directory seen, so that a tar-ordered archive costs no extra system call.
   */
  private impliedParents(rel: string, name: string): void {
    const slash = rel.lastIndexOf("/");
    if (slash === -1) return;
    const parent = rel.slice(0, slash);
    if (parent === this.lastDir) return;
    let made: string | undefined;
    try {
      made = fs.mkdirSync(join(this.root, parent), { recursive: true, mode: 0o755 });
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      if (e.code === "EEXIST" || e.code === "ENOTDIR") throw new ExtractError("unsafe entry: a parent is not a directory", name, { cause: e });
      throw fsError(e, name);
    }
    this.lastDir = parent;
    if (made === undefined) return;
    this.impliedDirs += parent.split("/").length - made.slice(this.root.length + 1).split("/").length + 1;
    this.countEntry(name);
  }
  private lastDir = "";
  private impliedDirs = 0;

  /** Every entry's declared size counts, whatever its type: nothing streams past `maxBytes`. */
  private countBytes(size: number, name: string): void {
    this.bytes += size;
    if (this.bytes > this.limits.maxBytes) throw new ExtractError(`archive expands beyond ${this.limits.maxBytes} bytes`, name);
  }

  private begin(h: Header): void {
    this.entries++;
    this.countEntry(h.name);
    const rel = safeRelative(h.name);
    if (rel === null) {
      if (h.type !== "5") throw new ExtractError("unsafe entry: the archive root is not a directory", h.name);
      // "." or "./": the root itself. Like GNU tar, give it the entry's mtime (else `rsync -a` stamps
      // a new one on dest every deploy). Not its mode or owner: the root stays 0700 and ours until
      // the deploy chmods it to `dest_mode` right before the sync, which is all stretcher keeps of it.
      if (h.type === "5") this.rootMtime = h.mtime;
      return;
    }
    this.content++;
    const path = join(this.root, rel);
    this.checkParents(rel, h.name);
    this.replaceSymlink(rel, path);
    if (ENTRY_TYPES.has(h.type)) this.impliedParents(rel, h.name);
    switch (h.type) {
      case "0": {
        if (this.linkFrom !== undefined && this.linkUnchanged(rel, path, h)) return;
        this.fd = this.openFile(path, h.mode, h.name);
        return;
      }
      case "5": {
        if (this.linkFrom !== undefined) this.noteMissingDir(rel);
        const made = mkdirEntry(path, h.name);
        this.lastDir = rel;
        this.dirs.push({ rel, path, mode: h.mode, mtime: h.mtime });
        if (this.needsChown(h, made !== undefined)) fs.chownSync(path, h.uid, h.gid);
        return;
      }
      case "2":
        if (h.linkname === "") throw new ExtractError("symlink without target", h.name);
        rmIfExists(path);
        fs.symlinkSync(h.linkname, path);
        this.symlinks.add(rel);
        if (this.needsChown(h, true)) fs.lchownSync(path, h.uid, h.gid);
        // As tar x does: else `rsync -a` gives dest's symlink a new mtime every deploy.
        fs.lutimesSync(path, h.mtime, h.mtime);
        return;
      case "1": {
        const target = safeRelative(h.linkname);
        if (target === null) throw new ExtractError("hard link to the archive root", h.name);
        this.checkParents(target, h.name);
        if (this.symlinks.has(target)) throw new ExtractError("hard link to a symlink", h.name);
        rmIfExists(path);
        this.hardLinkEntries++;
        try {
          fs.linkSync(join(this.root, target), path);
        } catch (err) {
          throw new ExtractError(`hard link to missing ${h.linkname}`, h.name, { cause: err });
        }
        return;
      }
      default:
        throw new ExtractError(`unsupported entry type "${printable(h.type)}" (only files, directories and links)`, h.name);
    }
  }

  /**
   * A file whose size, mtime, mode and owner match `linkFrom`'s is a candidate for a hard link: the
   * old inode is linked into the tree at once, then the incoming bytes are compared with it as they
   * stream (reads, not writes). If all match, the link stays; at the first difference it is replaced by
   * a new file, written starting with the equal prefix copied from the old one. Linking first and then
   * reading the tree's name (which no one else can change) means that what is kept is exactly what was
   * compared, even if `linkFrom/rel` is replaced meanwhile.
   */
  private linkUnchanged(rel: string, path: string, h: Header): boolean {
    if (this.missingDir !== undefined && rel.startsWith(this.missingDir)) return false;
    const parent = this.linkDir(rel);
    if (parent === undefined) return false;
    const prev = join(this.linkFrom!, rel);
    // Not an exception per new file: a first deploy into an empty dest has only those.
    const st = fs.lstatSync(prev, { throwIfNoEntry: false });
    if (st === undefined || !st.isFile() || !this.sameAsEntry(st, h)) return false;
    if (!this.link(prev, path)) return false;
    let fd: number;
    try {
      fd = fs.openSync(path, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
    } catch {
      this.unlink(path, h.name);
      return false;
    }
    const now = fs.fstatSync(fd);
    if (!now.isFile() || !this.sameAsEntry(now, h) || now.ino !== st.ino || now.dev !== st.dev || !this.vouched(rel, now, parent)) {
      fs.closeSync(fd);
      this.unlink(path, h.name);
      return false;
    }
    this.compare = { fd, ino: now.ino, rel, path, offset: 0 };
    if (h.size === 0) this.finishCompare();
    return true;
  }

  /**
   * The inode of the directory holding `rel` in `linkFrom` when every directory on the way is a real
   * one (lstat: a symlink planted there is never followed), else undefined. Cached per directory, with
   * whether only the agent's user can change it and every directory above it (`linkSafe`).
   */
  private linkDir(rel: string): number | undefined {
    let ino = this.linkDirs.get("");
    if (ino === undefined) {
      const st = fs.statSync(this.linkFrom!); // the root itself is given (pinned by the caller)
      ino = st.ino;
      this.linkDirs.set("", ino);
      this.linkSafe.set("", this.onlyOurs(st));
    }
    let parent = "";
    for (let i = rel.indexOf("/"); i !== -1; i = rel.indexOf("/", i + 1)) {
      const dir = rel.slice(0, i);
      let known = this.linkDirs.get(dir);
      if (known === undefined) {
        const st = fs.lstatSync(join(this.linkFrom!, dir), { throwIfNoEntry: false });
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
    return st.uid === (process.getuid?.() ?? 0) && (st.mode & 0o022) === 0;
  }

  /**
   * The file just linked (`now`, with our new name counted in its nlink) is one the agent can vouch
   * for: its directory in `linkFrom` is still the real one checked before the link (no one else can
   * have swapped it if it and every directory above are writable by the agent's user alone, as in a
   * release packed by `publish`), and each of its other names is the same path in a distinct real
   * directory of `linkFrom` or a peer (a release it was linked into before). A name more, such as a
   * hard link the app made to a file outside the tree, and it is written instead.
   */
  private vouched(rel: string, now: fs.Stats, parent: number): boolean {
    const slash = rel.lastIndexOf("/");
    const dir = slash === -1 ? "" : rel.slice(0, slash);
    if (dir !== "" && this.linkSafe.get(dir) !== true && fs.lstatSync(join(this.linkFrom!, dir), { throwIfNoEntry: false })?.ino !== parent) return false;
    if (now.nlink === 2) return true; // `linkFrom`'s name, proven by the lstat before the link, and ours
    if (this.linkPeers === undefined) return false;
    const seen = new Set([parent]);
    for (const peer of this.linkPeers) {
      const st = fs.lstatSync(join(peer, rel), { throwIfNoEntry: false });
      if (st === undefined || st.ino !== now.ino || st.dev !== now.dev) continue;
      const holder = dir === "" ? fs.statSync(peer) : fs.lstatSync(join(peer, dir), { throwIfNoEntry: false });
      if (holder === undefined || !holder.isDirectory() || seen.has(holder.ino)) continue;
      seen.add(holder.ino);
    }
    return seen.size === now.nlink - 1;
  }

  /**
   * `linkFrom` has no directory `rel` (or a symlink there): skip looking up the files the archive
   * lists under it next. One lookup per directory instead of one per file on a first deploy.
   */
  private noteMissingDir(rel: string): void {
    if (this.missingDir !== undefined && rel.startsWith(this.missingDir)) return;
    const st = fs.lstatSync(join(this.linkFrom!, rel), { throwIfNoEntry: false });
    this.missingDir = st?.isDirectory() ? undefined : `${rel}/`;
  }
  /** A directory missing from `linkFrom`, with a trailing slash. */
  private missingDir: string | undefined;

  /** Size, mtime (to the nanosecond), mode and the owner a written file would end up with. */
  private sameAsEntry(st: fs.Stats, h: Header): boolean {
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
        if (code === "EXDEV") this.linkFrom = undefined;
        if (attempt > 0 || (code !== "EEXIST" && code !== "ENOENT")) return false;
        try {
          if (code === "EEXIST") fs.unlinkSync(path); // an earlier entry of the same name
          else fs.mkdirSync(path.slice(0, path.lastIndexOf("/")), { recursive: true, mode: 0o755 }); // parent not in the archive
        } catch {
          return false; // openFile will say what is wrong
        }
      }
    }
    return false;
  }

  private compare: { fd: number; ino: number; rel: string; path: string; offset: number } | null = null;
  private scratch = Buffer.alloc(1 << 16);

  /** Compare incoming bytes with the linked file; on the first difference, switch to writing. */
  private compareData(bytes: Uint8Array): void {
    const c = this.compare!;
    if (this.scratch.length < bytes.length) this.scratch = Buffer.alloc(bytes.length);
    const n = fs.readSync(c.fd, this.scratch, 0, bytes.length, c.offset);
    if (n === bytes.length && this.scratch.subarray(0, n).equals(bytes)) {
      c.offset += n;
      return;
    }
    // Different after all: a new file (openFile unlinks the link), beginning with the equal prefix.
    const h = this.entry!;
    this.compare = null;
    try {
      this.fd = this.openFile(c.path, h.mode, h.name);
      for (let off = 0; off < c.offset; ) {
        const len = fs.readSync(c.fd, this.scratch, 0, Math.min(this.scratch.length, c.offset - off), off);
        if (len <= 0) break;
        this.writeAll(this.scratch.subarray(0, len));
        off += len;
      }
      // Written to in place while we read it: the prefix may not be the archive's.
      if (!this.sameAsEntry(fs.fstatSync(c.fd), h)) this.tainted ??= c.rel;
    } finally {
      fs.closeSync(c.fd);
    }
    this.writeAll(bytes);
  }

  /** Every byte matched: the link stays. */
  private finishCompare(): void {
    const c = this.compare!;
    this.compare = null;
    const h = this.entry!;
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

  private unlink(path: string, name: string): void {
    try {
      fs.unlinkSync(path);
    } catch (err) {
      throw fsError(err as NodeJS.ErrnoException, name);
    }
  }

  /**
   * A new file, never an existing one opened: an earlier entry of the same name is unlinked first (as
   * GNU tar does), since it may share its inode with another name (a hard-link entry, or a file
   * linked from `linkFrom`) that truncating it would corrupt. O_EXCL also refuses to follow a symlink.
   */
  private openFile(path: string, mode: number, name: string): number {
    try {
      return fs.openSync(path, "wx", mode & 0o7777);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      try {
        if (e.code === "EEXIST") {
          this.unlink(path, name);
          return fs.openSync(path, "wx", mode & 0o7777);
        }
        if (e.code === "ENOENT") {
          // Archives may omit parent directories.
          fs.mkdirSync(path.slice(0, path.lastIndexOf("/")), { recursive: true, mode: 0o755 });
          return fs.openSync(path, "wx", mode & 0o7777);
        }
        throw e;
      } catch (err) {
        if (err instanceof ExtractError) throw err;
        throw fsError(err as NodeJS.ErrnoException, name);
      }
    }
  }

  private data(bytes: Uint8Array): void {
    if (this.meta !== null) {
      this.meta.push(bytes.slice());
      return;
    }
    if (this.compare !== null) return this.compareData(bytes);
    if (this.fd === null) return;
    this.writeAll(bytes);
  }

  private writeAll(bytes: Uint8Array): void {
    try {
      let off = 0;
      while (off < bytes.length) off += fs.writeSync(this.fd!, bytes, off, bytes.length - off);
    } catch (err) {
      throw fsError(err as NodeJS.ErrnoException, this.entry!.name);
    }
  }

  private finishEntry(): void {
    const h = this.entry!;
    if (this.meta !== null) {
      const bytes = Buffer.concat(this.meta);
      this.meta = null;
      // "g": global pax headers carry nothing we use, but are held to the same framing.
      if (h.type === "x" || h.type === "g") {
        const pax = parsePax(bytes, h.name);
        if (h.type === "x") this.pax = pax;
      } else {
        const name = longName(bytes, h.name);
        if (h.type === "L") this.longName = name;
        else this.longLink = name;
      }
      return;
    }
    if (this.compare !== null) return this.finishCompare();
    if (h.type !== "0" || this.fd === null) return;
    const fd = this.fd;
    this.fd = null;
    try {
      fs.futimesSync(fd, h.mtime, h.mtime);
      if (this.needsChown(h, true)) fs.fchownSync(fd, h.uid, h.gid);
      // open() applied the umask; restore the archive's mode when it stripped bits (or for setuid & co).
      if ((h.mode & 0o7777 & ~this.umask) !== (h.mode & 0o7777) || h.mode & 0o7000) fs.fchmodSync(fd, h.mode & 0o7777);
    } finally {
      fs.closeSync(fd);
    }
  }

  /** Root gives entries the archive's owner; one it just created already has `newOwner`. */
  private needsChown(h: Header, fresh: boolean): boolean {
    return this.chown && (!fresh || this.newOwner === undefined || h.uid !== this.newOwner.uid || h.gid !== this.newOwner.gid);
  }

  /** Refuse entries whose path goes through a symlink created by this archive. */
  private checkParents(rel: string, name: string): void {
    if (this.symlinks.size === 0) return;
    let i = rel.indexOf("/");
    while (i !== -1) {
      if (this.symlinks.has(rel.slice(0, i))) throw new ExtractError("unsafe entry: path goes through a symlink", name);
      i = rel.indexOf("/", i + 1);
    }
  }

  /** A later entry replaces an earlier symlink of the same name instead of writing through it. */
  private replaceSymlink(rel: string, path: string): void {
    if (this.symlinks.delete(rel)) fs.unlinkSync(path);
  }
}

/**
 * The entry's path relative to the root, or null for the root itself. Throws on absolute paths and
 * `..` components. `a//b`, `./a` and `a/` all name `a/b`, `a`, `a`: the symlink guards work on this form.
 */
export function safeRelative(name: string): string | null {
  if (name.startsWith("/")) throw new ExtractError("unsafe entry: absolute path", name);
  const parts = name.split("/").filter((p) => p !== "" && p !== ".");
  if (parts.includes("..")) throw new ExtractError("unsafe entry: path contains ..", name);
  if (name.includes("\0")) throw new ExtractError("unsafe entry: NUL in name", printable(name));
  return parts.length === 0 ? null : parts.join("/");
}

/** The entry types extracted (files, hard links, symlinks, directories); others are refused. */
const ENTRY_TYPES = new Set(["0", "1", "2", "5"]);

const META_KIND: Record<string, string> = { x: "pax header", g: "global pax header", L: "GNU long name", K: "GNU long link name" };

/** The header's checksum field against its bytes (unsigned, or signed as some old tars summed). */
function checksumOk(b: Uint8Array): boolean {
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const v = i >= 148 && i < 156 ? 32 : b[i]!;
    unsigned += v;
    signed += v > 127 ? v - 256 : v;
  }
  const stored = octalDigits(b, 148, 8);
  return stored !== null && (stored === unsigned || stored === signed);
}

/** The typeflag; NUL and `7` (contiguous) are regular files. */
function typeOf(byte: number): string {
  return byte === 0 || byte === 0x37 ? "0" : String.fromCharCode(byte);
}

/**
 * A header parsed strictly: every number in range for its field, the name and link name valid.
 * `over` holds what preceding pax / GNU long-name entries set (validated already).
 */
export function parseHeader(b: Uint8Array, over: Overrides = {}): Header {
  let type = typeOf(b[156]!);
  let name = over.path;
  if (name === undefined) {
    let bytes = field(b, 0, 100);
    // POSIX ustar ("ustar\0") has a prefix field; GNU's "ustar  " keeps other data there.
    if (b[257] === 0x75 && b[262] === 0 && String.fromCharCode(...b.subarray(257, 262)) === "ustar") {
      const prefix = field(b, 345, 155);
      if (prefix.length > 0) bytes = Buffer.concat([prefix, Buffer.from("/"), bytes]);
    }
    name = checkName(bytes, "name");
  } else checkName(name, "name");
  if (name === "") throw new ExtractError("unsafe entry: an entry has an empty name");
  const linkname = over.linkpath ?? checkName(field(b, 157, 100), "link name", printable(name));
  // Old-style archives mark directories with a trailing slash on a regular entry.
  if (type === "0" && name.endsWith("/")) type = "5";
  let mode = numeric(b, 100, 8, "mode", name);
  // Some writers include the file type bits (S_IFREG…): accepted when they agree with the typeflag.
  const ifmt = mode >> 12;
  if (mode > 0o177777 || (ifmt !== 0 && ifmt !== IFMT[type])) throw new ExtractError(`bad tar header: mode ${mode.toString(8)} has bits beyond 07777`, name);
  mode &= 0o7777;
  const id = (off: number, what: string, v: number | undefined) => {
    const n = v ?? numeric(b, off, 8, what, name);
    if (n > MAX_ID) throw new ExtractError(`bad tar header: ${what} ${n} is out of range (0..${MAX_ID})`, name);
    return n;
  };
  const mtime = over.mtime ?? numeric(b, 136, 12, "mtime", name, true);
  if (mtime < MTIME_MIN || mtime > MTIME_MAX) throw new ExtractError(`bad tar header: mtime ${mtime} is out of range`, name);
  return {
    name,
    mode,
    uid: id(108, "uid", over.uid),
    gid: id(116, "gid", over.gid),
    size: over.size ?? numeric(b, 124, 12, "size", name),
    mtime,
    type,
    linkname,
  };
}

/** The S_IFMT bits (>> 12) a mode may carry for each type. */
const IFMT: Record<string, number> = { "0": 0o10, "1": 0o10, "2": 0o12, "5": 0o04 };

/** A NUL-terminated header field's bytes. */
function field(b: Uint8Array, off: number, len: number): Uint8Array {
  let end = off;
  while (end < off + len && b[end] !== 0) end++;
  return b.subarray(off, end);
}

/** Octal digits, optionally led by spaces and ended by NULs/spaces (as GNU and POSIX tars write); else null. */
function octalDigits(b: Uint8Array, off: number, len: number): number | null {
  let i = off;
  const end = off + len;
  while (i < end && b[i] === 0x20) i++;
  // Summed as read (at most 12 digits: exact in a double), no string per field: ~6 fields a header.
  let n = 0;
  while (i < end && b[i]! >= 0x30 && b[i]! <= 0x37) n = n * 8 + (b[i++]! - 0x30);
  for (; i < end; i++) if (b[i] !== 0 && b[i] !== 0x20) return null;
  return n;
}

/**
 * A numeric field: octal, or GNU base-256 (two's complement) when the first byte's high bit is set.
 * Negative only where `signed` (mtime); never beyond Number.MAX_SAFE_INTEGER.
 */
function numeric(b: Uint8Array, off: number, len: number, what: string, name: string, signed = false): number {
  const bad = (why: string) => new ExtractError(`bad tar header: ${what} ${why}`, name);
  if (b[off]! & 0x80) {
    let v = BigInt(b[off]! & 0x7f);
    for (let i = 1; i < len; i++) v = (v << 8n) | BigInt(b[off + i]!);
    if (b[off]! & 0x40) v -= 1n << BigInt(len * 8 - 1);
    if (v < 0n && !signed) throw bad(`is negative (${v})`);
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < -BigInt(Number.MAX_SAFE_INTEGER)) throw bad(`${v} is out of range`);
    return Number(v);
  }
  const n = octalDigits(b, off, len);
  if (n === null) throw bad(`is not an octal number ("${printable(b.subarray(off, off + len))}")`);
  return n;
}

/**
 * A name or link name from the archive: valid UTF-8 (else two names could decode to one), no NUL or
 * control character (C0, DEL, C1), at most PATH_MAX bytes. `shown` names the entry in the error
 * (already printable); by default the name itself, escaped.
 */
function checkName(raw: Uint8Array | string, what: string, shown?: string): string {
  let name: string;
  if (typeof raw === "string") name = raw;
  else {
    try {
      name = strictDecoder.decode(raw);
    } catch {
      throw new ExtractError(`unsafe entry: ${what} is not valid UTF-8`, shown ?? printable(raw));
    }
  }
  if (name.includes("\0")) throw new ExtractError(`unsafe entry: NUL in ${what}`, shown ?? printable(name));
  if (/[\x01-\x1f\x7f-\x9f]/.test(name)) throw new ExtractError(`unsafe entry: control character in ${what}`, shown ?? printable(name));
  if (Buffer.byteLength(name) > MAX_NAME_BYTES) throw new ExtractError(`unsafe entry: ${what} longer than ${MAX_NAME_BYTES} bytes`, shown ?? printable(name));
  if (what !== "link name" && name.split("/").some((c) => Buffer.byteLength(c) > 255)) throw new ExtractError(`unsafe entry: ${what} has a component longer than 255 bytes`, shown ?? printable(name));
  return name;
}

/** A GNU `L`/`K` entry's data: the name and its NUL terminator(s), nothing after. */
function longName(data: Uint8Array, label: string): string {
  let end = data.length;
  while (end > 0 && data[end - 1] === 0) end--;
  const bytes = data.subarray(0, end);
  if (bytes.includes(0)) throw new ExtractError("unsafe entry: NUL in GNU long name", printable(bytes));
  return checkName(bytes, "GNU long name");
}

/**
 * Shown in a message: unprintable characters (C0, DEL, C1, line and bidi controls) and bytes that are
 * not UTF-8 escaped as `\xNN` / `\u{N}`, backslashes doubled, long names cut, so the line stays one
 * safe line.
 */
export function printable(name: Uint8Array | string): string {
  let s: string;
  if (typeof name === "string") s = name;
  else {
    try {
      s = strictDecoder.decode(name);
    } catch {
      s = "";
      for (const byte of name) {
        if (byte === 0x5c) s += "\\\\";
        else s += byte >= 0x20 && byte < 0x7f ? String.fromCharCode(byte) : `\\x${byte.toString(16).padStart(2, "0")}`;
      }
      return cut(s);
    }
  }
  return cut(
    s.replace(/[\\\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g, (c) => {
      if (c === "\\") return "\\\\";
      const code = c.charCodeAt(0);
      return code <= 0xff ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u{${code.toString(16)}}`;
    }),
  );
}

function cut(s: string): string {
  return s.length <= 300 ? s : `${s.slice(0, 300)}…(${s.length} chars)`;
}

function pad(size: number): number {
  return (BLOCK - (size % BLOCK)) % BLOCK;
}

/**
 * A pax header's records, each `<length> <key>=<value>\n` with the length counting the whole record:
 * any other framing, a bad number, or a sparse file (not supported) is an error naming `label`.
 * An empty value removes the key (POSIX), i.e. the ustar field applies.
 */
export function parsePax(data: Uint8Array, label: string): Overrides {
  const out: Overrides = {};
  const bad = (why: string) => new ExtractError(`bad pax header: ${why}`, label);
  let i = 0;
  while (i < data.length) {
    let sp = i;
    while (sp < data.length && sp - i < 15 && data[sp]! >= 0x30 && data[sp]! <= 0x39) sp++;
    if (sp === i || data[sp] !== 0x20 || (data[i] === 0x30 && sp - i > 0)) throw bad(`record at byte ${i} does not start with its length`);
    const len = Number(String.fromCharCode(...data.subarray(i, sp)));
    const end = i + len;
    if (end > data.length || end - 1 <= sp + 1 || data[end - 1] !== 0x0a) throw bad(`record at byte ${i} is not ${len} bytes ending in a newline`);
    const record = data.subarray(sp + 1, end - 1);
    const eq = record.indexOf(0x3d);
    if (eq <= 0) throw bad(`record at byte ${i} has no key=value`);
    const key = printable(record.subarray(0, eq));
    const raw = record.subarray(eq + 1);
    i = end;
    if (key.startsWith("GNU.sparse.")) throw bad(`sparse files are not supported (${key})`);
    if (!PAX_KEYS.has(key)) continue; // uname, gname, xattrs, comments…: nothing we use
    const k = key as keyof Overrides;
    if (raw.length === 0) {
      delete out[k];
      continue;
    }
    if (key === "path" || key === "linkpath") {
      out[k] = checkName(raw, `pax ${key}`, label) as never;
      continue;
    }
    const text = String.fromCharCode(...raw.subarray(0, 40));
    const v = paxNumber(key, text, raw.length);
    if (v === null) throw bad(`${key}="${printable(raw)}" is not a valid ${key}`);
    if (key === "atime" || key === "ctime") continue; // validated, unused
    out[k] = v as never;
  }
  return out;
}

const PAX_KEYS = new Set(["path", "linkpath", "size", "mtime", "uid", "gid", "atime", "ctime"]);

/** A pax number: decimal `size`, `uid`, `gid` in range; times with an optional sign and fraction (floored). */
function paxNumber(key: string, text: string, rawLength: number): number | null {
  if (rawLength > 40) return null;
  if (key === "mtime" || key === "atime" || key === "ctime") {
    if (!/^-?[0-9]{1,15}(\.[0-9]{1,20})?$/.test(text)) return null;
    const t = Math.floor(Number(text));
    return t >= MTIME_MIN && t <= MTIME_MAX ? t : null;
  }
  if (!/^[0-9]{1,16}$/.test(text)) return null;
  const n = Number(text);
  if (key === "size") return n <= Number.MAX_SAFE_INTEGER ? n : null;
  return n <= MAX_ID ? n : null;
}

/**
 * Who owns what we create under `root`: us, with our group, as long as no directory hands down its
 * group. During extraction only `root` could (directory modes are set at the end; the directories we
 * make under it inherit its setgid bit and group), so under a setgid `root` it is `root`'s group; as
 * root (which chowns) "unknown" then.
 */
function newOwnerUnder(root: string): { uid: number; gid: number } | undefined {
  const st = fs.statSync(root);
  const uid = process.geteuid!();
  if (st.mode & 0o2000) return uid === 0 ? undefined : { uid, gid: st.gid };
  return { uid, gid: process.getegid!() };
}

/** A directory entry: made (with missing parents) unless one is there; a file or link in its place is an error. */
function mkdirEntry(path: string, name: string): string | undefined {
  try {
    return fs.mkdirSync(path, { recursive: true, mode: 0o700 });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === "EEXIST" || e.code === "ENOTDIR") throw new ExtractError("directory entry where an earlier entry made a file", name, { cause: e });
    throw fsError(e, name);
  }
}

function rmIfExists(path: string): void {
  try {
    const st = fs.lstatSync(path);
    if (st.isDirectory()) fs.rmSync(path, { recursive: true });
    else fs.unlinkSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
}

function fsError(e: NodeJS.ErrnoException, name: string): ExtractError {
  if (e.code === "ENOSPC") return new ExtractError("no space left on device while extracting", name, { cause: e });
  if (e.code === "EDQUOT") return new ExtractError("disk quota exceeded while extracting", name, { cause: e });
  return new ExtractError(`cannot write (${e.code ?? e.message})`, name, { cause: e });
}

/** Compression by magic bytes: what `tar xf` would detect. */
export type Compression = "gzip" | "none";

export function detectCompression(head: Uint8Array): Compression | string {
  if (head[0] === 0x1f && head[1] === 0x8b) return "gzip";
  if (head[0] === 0x42 && head[1] === 0x5a && head[2] === 0x68) return "bzip2 archives are not supported: use tar.gz";
  if (head[0] === 0xfd && head[1] === 0x37 && head[2] === 0x7a) return "xz archives are not supported: use tar.gz";
  if (head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f && head[3] === 0xfd) return "zstd archives are not supported: use tar.gz";
  return "none";
}
