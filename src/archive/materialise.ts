/**
 * Safe materialisation: the entries of a tar stream made real under a fresh root directory. Every
 * path is relative and free of `..`, never goes through a symlink the archive made, hard links stay
 * in the tree, and nothing is opened that exists already (a later entry of a name replaces the
 * earlier one). Files get the archive's mode, mtime and (as root) owner as they close; directories
 * get their mode and mtime at the end, deepest first, and only where they still are directories of
 * ours. Files equal to the previous release's are linked by `LinkDest` instead of written.
 */
import { dfgOnly } from "../jit.ts";
import * as fs from "node:fs";
import { join } from "node:path";
import { ExtractError } from "../errors.ts";
import { fsError, fsTime, openNewFile, writeAll } from "./files.ts";
import { LinkDest } from "./link-dest.ts";
import { printable, type TarHeader } from "./tar-header.ts";
import type { EntrySink } from "./tar-reader.ts";

/** The entry types extracted (files, hard links, symlinks, directories); others are refused. */
const ENTRY_TYPES = new Set(["0", "1", "2", "5"]);

export class Materialiser implements EntrySink {
  private fd: number | null = null;
  /** The entry whose data comes next. */
  private current: TarHeader | null = null;
  /** Entries other than the root: none means an empty archive. */
  content = 0;
  private symlinks = new Set<string>();
  private dirs: { rel: string; path: string; mode: number; mtime: number }[] = [];
  /** The mtime of the archive's `./` entry, for the root (set last, after everything inside it). */
  private rootMtime: number | undefined;
  private readonly chown: boolean;
  /** The owner every new entry gets anyway; as root, unknown (chown everything) under a setgid root. */
  private readonly newOwner: { uid: number; gid: number } | undefined;
  private readonly umask: number;
  /** The archive's own hard-link entries (type 1). */
  hardLinkEntries = 0;
  readonly links: LinkDest;

  /**
   * @param countImplied told of the parent directories made for an entry that the archive omits,
   *   which count as entries against the limit
   */
  constructor(
    private readonly root: string,
    linkFrom: string | undefined,
    linkPeers: string[] | undefined,
    private readonly countImplied: (dirs: number, name: string) => void,
  ) {
    this.chown = typeof process.getuid === "function" && process.getuid() === 0;
    this.newOwner = newOwnerUnder(root);
    this.umask = process.umask();
    this.links = new LinkDest(root, linkFrom, linkPeers, { chown: this.chown, newOwner: this.newOwner });
  }

  entry(h: TarHeader): void {
    this.current = h;
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
        if (this.links.active && this.links.begin(rel, path, h)) return;
        this.fd = openNewFile(path, h.mode, h.name);
        return;
      }
      case "5": {
        if (this.links.active) this.links.noteDir(rel);
        const made = mkdirEntry(path, h.name);
        this.lastDir = rel;
        this.madeDirs.add(rel);
        this.dirs.push({ rel, path, mode: h.mode, mtime: h.mtime });
        if (this.needsChown(h, made !== undefined)) fs.chownSync(path, h.uid, h.gid);
        return;
      }
      case "2":
        if (h.linkname === "") throw new ExtractError("symlink without target", h.name);
        if (rmIfExists(path)) this.madeDirs.clear();
        fs.symlinkSync(h.linkname, path);
        this.symlinks.add(rel);
        if (this.needsChown(h, true)) fs.lchownSync(path, h.uid, h.gid);
        // As tar x does: else `rsync -a` gives dest's symlink a new mtime every deploy.
        fs.lutimesSync(path, fsTime(h.mtime), fsTime(h.mtime));
        return;
      case "1": {
        const target = safeRelative(h.linkname);
        if (target === null) throw new ExtractError("hard link to the archive root", h.name);
        this.checkParents(target, h.name);
        if (this.symlinks.has(target)) throw new ExtractError("hard link to a symlink", h.name);
        if (rmIfExists(path)) this.madeDirs.clear();
        this.hardLinkEntries++;
        try {
          fs.linkSync(join(this.root, target), path);
        } catch (err) {
          throw new ExtractError(`hard link to missing ${h.linkname}`, h.name, { cause: err });
        }
        return;
      }
      default:
        throw new ExtractError(
          `unsupported entry type "${printable(h.type)}" (only files, directories and links)`,
          h.name,
        );
    }
  }

  data(bytes: Uint8Array): void {
    if (this.links.comparing) {
      const fd = this.links.data(bytes, this.current!);
      if (fd !== undefined) this.fd = fd;
      return;
    }
    if (this.fd !== null) writeAll(this.fd, bytes, this.current!.name);
  }

  finish(h: TarHeader): void {
    if (this.links.comparing) {
      this.links.finish(h);
      return;
    }
    if (h.type !== "0" || this.fd === null) return;
    const fd = this.fd;
    this.fd = null;
    try {
      fs.futimesSync(fd, fsTime(h.mtime), fsTime(h.mtime));
      if (this.needsChown(h, true)) fs.fchownSync(fd, h.uid, h.gid);
      // open() applied the umask; restore the archive's mode when it stripped bits (or for setuid & co).
      if ((h.mode & 0o7777 & ~this.umask) !== (h.mode & 0o7777) || h.mode & 0o7000) fs.fchmodSync(fd, h.mode & 0o7777);
    } finally {
      fs.closeSync(fd);
    }
  }

  /** All entries are in: directory modes and times, deepest first, then the root's time. */
  end(): void {
    this.links.closePeers();
    // Deepest first so that setting a parent's mtime is not undone by its children.
    for (const d of this.dirs.reverse()) {
      // Not through what a later entry put in its place or a parent's: chmod and utimes follow a
      // symlink out of the tree, and a hard link's inode may be linkFrom's (dest's).
      if (!this.stillDir(d.rel, d.path)) continue;
      fs.chmodSync(d.path, d.mode);
      fs.utimesSync(d.path, fsTime(d.mtime), fsTime(d.mtime));
    }
    if (this.rootMtime !== undefined) fs.utimesSync(this.root, fsTime(this.rootMtime), fsTime(this.rootMtime));
  }

  /** Close any open file; used on every failure path. */
  abort(): void {
    if (this.fd !== null) {
      fs.closeSync(this.fd);
      this.fd = null;
    }
    this.links.abort();
  }

  /** `path` is still a directory of ours: no parent is an archive symlink, and it is not replaced. */
  private stillDir(rel: string, path: string): boolean {
    for (let i = rel.indexOf("/"); i !== -1; i = rel.indexOf("/", i + 1))
      if (this.symlinks.has(rel.slice(0, i))) return false;
    try {
      return fs.lstatSync(path).isDirectory();
    } catch {
      return false; // removed, or a parent replaced by a file
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
    // A directory this extraction made (an entry's, or implied) and has not removed since: returning
    // to it after its subdirectories costs no mkdir.
    if (this.madeDirs.has(parent)) {
      this.lastDir = parent;
      return;
    }
    // Counted before they are made, so that a refused entry leaves no more than the limit on disk: the
    // missing levels, from the deepest up to the first that exists.
    let missing = 0;
    for (let dir = parent; ; ) {
      const st = fs.lstatSync(join(this.root, dir), { throwIfNoEntry: false });
      if (st !== undefined) {
        if (missing === 0 && st.isDirectory()) {
          // There already: nothing to make.
          this.lastDir = parent;
          this.madeDirs.add(parent);
          return;
        }
        break;
      }
      missing++;
      const up = dir.lastIndexOf("/");
      if (up === -1) break;
      dir = dir.slice(0, up);
    }
    if (missing > 0) this.countImplied(missing, name);
    try {
      // Also when the parent exists as something else: mkdir then says what (EEXIST, ENOTDIR).
      fs.mkdirSync(join(this.root, parent), { recursive: true, mode: 0o755 });
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      if (e.code === "EEXIST" || e.code === "ENOTDIR")
        throw new ExtractError("unsafe entry: a parent is not a directory", name, { cause: e });
      throw fsError(e, name);
    }
    this.lastDir = parent;
    this.madeDirs.add(parent);
  }
  private lastDir = "";
  /** Directories made here (relative), forgotten whenever a directory is removed (`rmIfExists`). */
  private madeDirs = new Set<string>();

  /** Root gives entries the archive's owner; one it just created already has `newOwner`. */
  private needsChown(h: TarHeader, fresh: boolean): boolean {
    return (
      this.chown &&
      (!fresh || this.newOwner === undefined || h.uid !== this.newOwner.uid || h.gid !== this.newOwner.gid)
    );
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
  // Already in that form (no empty, "." or ".." component), as nearly every entry is, or that form
  // behind "./" (`tar czf - -C dir .` names every entry so): itself, or the rest.
  const rest = name.startsWith("./") ? name.slice(2) : name;
  if (rest !== "" && !/(?:^|\/)\.{0,2}(?:\/|$)/.test(rest)) {
    if (rest.includes("\0")) throw new ExtractError("unsafe entry: NUL in name", printable(name));
    return rest;
  }
  const parts = name.split("/").filter((p) => p !== "" && p !== ".");
  if (parts.includes("..")) throw new ExtractError("unsafe entry: path contains ..", name);
  if (name.includes("\0")) throw new ExtractError("unsafe entry: NUL in name", printable(name));
  return parts.length === 0 ? null : parts.join("/");
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
    if (e.code === "EEXIST" || e.code === "ENOTDIR")
      throw new ExtractError("directory entry where an earlier entry made a file", name, { cause: e });
    throw fsError(e, name);
  }
}

/** Remove what a later link entry replaces; true when that was a directory (with what was in it). */
function rmIfExists(path: string): boolean {
  try {
    const st = fs.lstatSync(path);
    if (!st.isDirectory()) {
      fs.unlinkSync(path);
      return false;
    }
    fs.rmSync(path, { recursive: true });
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    return false;
  }
}

dfgOnly(Materialiser, safeRelative, mkdirEntry);
