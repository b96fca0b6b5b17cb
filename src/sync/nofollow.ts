/**
 * Root's walk under a `dest` whose owner (commonly the app's user) may replace any path with a
 * symlink, a hard link or a read-only directory at any moment (SECURITY.md, threat class 1).
 *
 * A directory is opened once with O_DIRECTORY|O_NOFOLLOW, and what is below it is reached through
 * `/proc/self/fd/<fd>/<name>`: the kernel resolves that to the opened directory itself, not by
 * walking its path again, so renaming or replacing the path afterwards cannot redirect root. Each
 * name is then handled with lstat/O_NOFOLLOW/rename/unlink, which never follow a last-component link.
 * Needs Linux's /proc.
 */
import * as fs from "node:fs";
import { dirname, join } from "node:path";
import { PulldeployError } from "../errors.ts";

const { O_RDONLY, O_DIRECTORY, O_NOFOLLOW } = fs.constants;

/** An opened directory: `at(name)` names an entry of exactly this directory, whatever its path becomes. */
export class Dir {
  constructor(
    readonly fd: number,
    /** The path it was opened as, for messages. */
    readonly shown: string,
  ) {}
  /** The path of the directory itself, pinned to the opened inode. */
  get path(): string {
    return `/proc/self/fd/${this.fd}`;
  }
  at(name: string): string {
    return `${this.path}/${name}`;
  }
  shownAt(name: string): string {
    return join(this.shown, name);
  }
  stat(): fs.Stats {
    return fs.fstatSync(this.fd);
  }
  close(): void {
    try {
      fs.closeSync(this.fd);
    } catch {
      // already closed
    }
  }
}

/** What `path` is, in a few words, without following it: for refusals. */
export function describe(path: string): string {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(path);
  } catch (err) {
    return `unreadable (${(err as NodeJS.ErrnoException).code})`;
  }
  if (st.isSymbolicLink()) {
    let target = "?";
    try {
      target = fs.readlinkSync(path);
    } catch {
      // raced away
    }
    return `a symlink (to ${target})`;
  }
  if (st.isDirectory()) return "a directory";
  if (st.isFile()) return "a file";
  return "a special file";
}

/** The refusal when a path root was to walk through is not a real directory. */
export function notADirectory(shown: string, what: string): PulldeployError {
  return new PulldeployError(
    `sync: ${shown} is ${what}, not a directory: refusing to follow it as root; remove it (it is recreated)`,
    "sync",
  );
}

/**
 * Open `path` as a directory without following a symlink at its last component. undefined if it does
 * not exist; a refusal if it is a symlink or anything but a directory.
 */
export function openDir(path: string, shown = path): Dir | undefined {
  try {
    return new Dir(fs.openSync(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW), shown);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return undefined;
    if (code === "ENOTDIR" || code === "ELOOP") throw notADirectory(shown, describe(path));
    throw new PulldeployError(`sync: cannot open ${shown}: ${code ?? (err as Error).message}`, "sync", { cause: err });
  }
}

/** The entry `name` of `parent` as an opened directory, made (with `mode`) if missing. */
export function ensureDir(parent: Dir, name: string, mode = 0o755): Dir {
  const existing = openDir(parent.at(name), parent.shownAt(name));
  if (existing) return existing;
  try {
    fs.mkdirSync(parent.at(name), { mode });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST")
      throw new PulldeployError(
        `sync: cannot create ${parent.shownAt(name)}: ${(err as NodeJS.ErrnoException).code}`,
        "sync",
        { cause: err },
      );
  }
  const made = openDir(parent.at(name), parent.shownAt(name));
  if (!made) throw new PulldeployError(`sync: ${parent.shownAt(name)} vanished as it was created`, "sync");
  return made;
}

/**
 * Remove the entry `name` of `parent` as `rm -rf` would, never following a symlink: a symlink or file
 * is unlinked; a directory is opened with O_NOFOLLOW, emptied through its descriptor and removed, so a
 * directory swapped for a symlink meanwhile is unlinked, not entered. Read-only directories of ours
 * (0555, as in Go module caches) are made writable first; they never stop a non-root run either.
 * Missing: nothing to do.
 */
export function removeEntry(parent: Dir, name: string, retried = false): void {
  const st = fs.lstatSync(parent.at(name), { throwIfNoEntry: false });
  if (st === undefined) return;
  if (st.isDirectory()) {
    // Bun's recursive rmSync walks by descriptor: each directory opened with O_NOFOLLOW|O_DIRECTORY
    // relative to its parent's, each entry removed with unlinkat (a symlink is unlinked, never
    // entered; seen with strace on the pinned Bun), as `removeDir` does, in native code (much less
    // CPU). It stops at a read-only directory of a non-root run: then ours.
    try {
      fs.rmSync(parent.at(name), { recursive: true, force: true });
      return;
    } catch {
      // (EACCES on a 0555 directory as non-root, or a race): the walk below goes on from what is left.
    }
    if (removeDir(parent, name)) return;
  }
  unlinkChild(parent, name, retried);
}

/**
 * Empty and remove the directory `name` of `parent` (true; also when it is gone), or false when it
 * is not a directory (any more). Its children are taken by the type the listing gives: a directory
 * is opened as one, anything else unlinked without a lookup first (unlink(2) never follows a symlink;
 * a directory put there meanwhile fails with EISDIR and is removed as one).
 */
function removeDir(parent: Dir, name: string): boolean {
  const path = parent.at(name);
  let dir: Dir | undefined;
  try {
    dir = openDir(path, parent.shownAt(name));
  } catch {
    return false; // replaced by a non-directory
  }
  if (!dir) return true;
  try {
    const now = dir.stat();
    if ((now.mode & 0o200) === 0 && now.uid === process.getuid?.()) fs.fchmodSync(dir.fd, (now.mode & 0o7777) | 0o700);
    for (const child of fs.readdirSync(dir.path, { withFileTypes: true })) {
      if (!child.isDirectory() || !removeDir(dir, child.name)) unlinkChild(dir, child.name);
    }
  } finally {
    dir.close();
  }
  fs.rmdirSync(path);
  return true;
}

/** Unlink the entry `name` of `parent`; one found to be a directory is removed as one (once: `retried`). */
function unlinkChild(parent: Dir, name: string, retried = false): void {
  try {
    fs.unlinkSync(parent.at(name));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return;
    if (code === "EISDIR" && !retried) {
      removeEntry(parent, name, true); // a directory now
      return;
    }
    throw err;
  }
}

/** Empty the directory at `path` (a pinned `/proc/self/fd/N` path or a directory of ours), keeping it. */
export function emptyDir(path: string): void {
  const dir = openDir(path);
  if (!dir) return;
  try {
    for (const name of fs.readdirSync(dir.path)) removeEntry(dir, name);
  } finally {
    dir.close();
  }
}

/**
 * Why someone other than root could replace `path` or a directory above it, or undefined: the first
 * of them (from `/` down) that is not owned by root, or is group/other-writable without the sticky bit.
 * `dest` owned by the app is common and allowed; root then walks it with the care above.
 */
export function writableByOthers(path: string): string | undefined {
  const chain: string[] = [];
  for (let p = path; ; p = dirname(p)) {
    chain.unshift(p);
    if (dirname(p) === p) break;
  }
  for (const p of chain) {
    let st: fs.Stats;
    try {
      st = fs.lstatSync(p);
    } catch {
      continue; // not made yet
    }
    if (st.isSymbolicLink()) {
      if (st.uid !== 0) return `${p} is a symlink owned by uid ${st.uid}`;
      continue;
    }
    if (st.uid !== 0) return `${p} is owned by uid ${st.uid}`;
    if ((st.mode & 0o022) !== 0 && (st.mode & 0o1000) === 0)
      return `${p} is writable by its group or others (mode ${(st.mode & 0o7777).toString(8)})`;
  }
  return undefined;
}

/**
 * Whether only the agent's user (root) can change what `path` leads to: every directory on the way,
 * as given and as resolved (through a symlink of root's), is root's and writable by no one else.
 * Then `path` needs no pinning: nothing can be swapped under it. Pinning (`/proc/self/fd/N/…`) costs a
 * procfs lookup per system call, which the extraction's hot path pays only where it must.
 */
export function onlyRootCanChange(path: string): boolean {
  if (writableByOthers(path) !== undefined) return false;
  try {
    return writableByOthers(fs.realpathSync(path)) === undefined;
  } catch {
    return false;
  }
}

/**
 * Why a symlink at `path` may have been planted or changed by a user other than the agent's, or
 * undefined when only the agent's user (root) could have made it: it owns the link, and it owns the
 * directory holding it, which no one else may write to (or which is sticky, as /tmp is).
 */
export function untrustedLink(path: string): string | undefined {
  const uid = process.getuid?.() ?? 0;
  const link = fs.lstatSync(path);
  if (link.uid !== uid) return `the link is owned by uid ${link.uid}`;
  const parent = fs.statSync(dirname(path));
  if (parent.uid !== uid) return `${dirname(path)} is owned by uid ${parent.uid}`;
  if ((parent.mode & 0o022) !== 0 && (parent.mode & 0o1000) === 0)
    return `${dirname(path)} is writable by its group or others`;
  return undefined;
}

/**
 * `dest` as the manifest names it, opened. A symlink there is followed only if no one but the agent's
 * user could have made or changed it (`untrustedLink`), else refused: whoever can write dest's parent
 * could point it anywhere (rsync would fill the target, `release` would prune in it). undefined when
 * dest does not exist.
 */
export function openDest(dest: string): Dir | undefined {
  const st = fs.lstatSync(dest, { throwIfNoEntry: false });
  if (st?.isSymbolicLink()) {
    checkDest(dest);
    try {
      return new Dir(fs.openSync(dest, O_RDONLY | O_DIRECTORY), dest);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT") return undefined;
      throw new PulldeployError(`sync: cannot open dest ${dest}: ${code ?? (err as Error).message}`, "sync", {
        cause: err,
      });
    }
  }
  return openDir(dest);
}

/**
 * Refuse a dest that is a symlink another user could have planted (see `openDest`). Returns a warning
 * when dest (or a directory above) could be changed by a user other than root: common (the app owns
 * dest) and allowed, since root then walks it without following links.
 */
export function checkDest(dest: string): string | undefined {
  const st = fs.lstatSync(dest, { throwIfNoEntry: false });
  if (st?.isSymbolicLink()) {
    const why = untrustedLink(dest);
    if (why !== undefined) {
      throw new PulldeployError(
        `sync: dest ${dest} is ${describe(dest)} and ${why}: refusing to follow it as root; set dest in the ` +
          "manifest to the real path",
        "sync",
      );
    }
  }
  const why = writableByOthers(dest);
  return why === undefined
    ? undefined
    : `sync: warning: ${why}: another user can change what is under dest ${dest}; the agent (as root) walks it ` +
        "without following links";
}
