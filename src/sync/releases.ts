/**
 * The `release` layout under `dest`, and the operations on it:
 *
 *   <dest>/releases/<id>/            one complete release per directory (complete by construction:
 *                                    it appears by an atomic rename of a finished `.partial-*` dir)
 *   <dest>/releases/.partial-<id>-<pid>/   a release being extracted; removed by the next run if <pid> is dead
 *   <dest>/releases/.order           deploy order, oldest first (JSON), rewritten atomically
 *   <dest>/shared/<path>             `shared_paths`, symlinked into each release
 *   <dest>/current -> releases/<id>  switched by renaming a new symlink over it (atomic)
 *
 * A `kill -9` at any point leaves `current` on a complete release.
 *
 * The app's user may own `dest` and rewrite anything it can reach (SECURITY.md, class 1). So `dest`
 * and `releases/` are opened without following links and everything is done through those
 * descriptors (nofollow.ts); `releases/` must be made by the agent (owned by its user, writable by no
 * one else), so that every entry in it was made by the agent too and only the agent can swap them.
 * `current` is read only as `releases/<id>`; shared paths are walked without following links.
 */
import * as fs from "node:fs";
import { join } from "node:path";
import { PulldeployError } from "../errors.ts";
import { pidAlive } from "../pid.ts";
import { type Dir, describe, ensureDir, openDest, openDir, removeEntry } from "./nofollow.ts";

export interface ReleasePaths {
  dest: string;
  releases: string;
  current: string;
  shared: string;
  order: string;
}

export function releasePaths(dest: string): ReleasePaths {
  return {
    dest,
    releases: join(dest, "releases"),
    current: join(dest, "current"),
    shared: join(dest, "shared"),
    order: join(dest, "releases", ".order"),
  };
}

/** `dest` and `releases/`, opened without following links. */
export interface Layout {
  dest: Dir;
  releases: Dir;
  close(): void;
}

/**
 * Open the layout; with `create`, make what is missing. undefined when it does not exist (yet).
 * Refuses a symlink at `dest` or `releases`, and a `releases/` that is not the agent's own.
 */
export function openLayout(p: ReleasePaths, create: boolean): Layout | undefined {
  let dest = openDest(p.dest);
  if (!dest && create) {
    fs.mkdirSync(p.dest, { recursive: true, mode: 0o755 });
    dest = openDest(p.dest);
  }
  if (!dest) return undefined;
  let releases: Dir | undefined;
  try {
    releases = create ? ensureDir(dest, "releases") : openDir(dest.at("releases"), p.releases);
    if (releases) checkOwn(releases);
  } catch (err) {
    releases?.close();
    dest.close();
    throw err;
  }
  if (!releases) {
    dest.close();
    return undefined;
  }
  const d = dest;
  const r = releases;
  return { dest: d, releases: r, close: () => (r.close(), d.close()) };
}

function withLayout<T>(p: ReleasePaths, create: boolean, none: T, f: (l: Layout) => T): T {
  const l = openLayout(p, create);
  if (!l) return none;
  try {
    return f(l);
  } finally {
    l.close();
  }
}

/**
 * `releases/` must be the agent's: owned by its user and writable by no one else. Then no other user
 * can add, rename or swap an entry in it, and everything found there is what an agent run made.
 */
function checkOwn(dir: Dir): void {
  const st = dir.stat();
  const uid = process.getuid?.() ?? 0;
  if (st.uid !== uid || (st.mode & 0o022) !== 0) {
    const why =
      st.uid !== uid
        ? `owned by uid ${st.uid}`
        : `writable by its group or others (mode ${(st.mode & 0o7777).toString(8)})`;
    throw new PulldeployError(
      `sync: ${dir.shown} is ${why}, so another user could swap releases in it: chown it to uid ${uid} and ` +
        "chmod go-w it (the agent makes it so)",
      "sync",
    );
  }
}

/** A release id as a directory name: one component, not hidden. */
function validId(id: string): boolean {
  return id !== "" && !id.startsWith(".") && !id.includes("/") && !id.includes("\0");
}

/** The id `current` points at (`releases/<id>`, as the agent writes it), or undefined. */
export function currentRelease(p: ReleasePaths): string | undefined {
  const dest = openDest(p.dest);
  if (!dest) return undefined;
  let target: string;
  try {
    target = fs.readlinkSync(dest.at("current"));
  } catch {
    return undefined;
  } finally {
    dest.close();
  }
  const m = /^(?:\.\/)?releases\/([^/]+)\/?$/.exec(
    target.startsWith(`${p.releases}/`) ? target.slice(p.dest.length + 1) : target,
  );
  return m && validId(m[1]!) ? m[1] : undefined;
}

/** Complete releases in deploy order, oldest first (unknown ones first, by name). Real directories only. */
export function listReleases(p: ReleasePaths): string[] {
  return withLayout(p, false, [], (l) => listIn(l));
}

function listIn(l: Layout): string[] {
  const present = fs
    .readdirSync(l.releases.path, { withFileTypes: true })
    .filter((e) => e.isDirectory() && validId(e.name))
    .map((e) => e.name);
  const order = readOrder(l).filter((id) => present.includes(id));
  const unknown = present.filter((id) => !order.includes(id)).sort();
  return [...unknown, ...order];
}

/** The release deployed before `id` (or before current), for rollback. */
export function previousRelease(p: ReleasePaths, id = currentRelease(p)): string | undefined {
  const all = listReleases(p);
  const i = id === undefined ? -1 : all.indexOf(id);
  return i > 0 ? all[i - 1] : undefined;
}

export function releaseExists(p: ReleasePaths, id: string): boolean {
  return validId(id) && withLayout(p, false, false, (l) => existsIn(l, id));
}

function existsIn(l: Layout, id: string): boolean {
  return fs.lstatSync(l.releases.at(id), { throwIfNoEntry: false })?.isDirectory() === true;
}

/** The name of the partial dir of release `id` made by process `pid`. */
export function partialName(id: string, pid = process.pid): string {
  return `.partial-${id}-${pid}`;
}

/**
 * A fresh directory (0700, the agent's) to extract release `id` into, on dest's file system, opened:
 * extract through its `path`, which stays this directory whatever happens to `dest` meanwhile.
 */
export function partialDir(p: ReleasePaths, id: string, pid = process.pid): Dir {
  if (!validId(id)) throw new PulldeployError(`sync: release id ${JSON.stringify(id)} is not a directory name`, "sync");
  return withLayout(p, true, undefined, (l) => {
    const name = partialName(id, pid);
    removeEntry(l.releases, name);
    fs.mkdirSync(l.releases.at(name), { mode: 0o700 });
    return openDir(l.releases.at(name), l.releases.shownAt(name))!;
  })!;
}

/**
 * Remove what a dead run left: partial dirs of processes that are gone, stray `current` and `.order`
 * temp links. Only entries owned by the agent's user are touched, never followed.
 */
export function cleanStale(p: ReleasePaths, isAlive: (pid: number) => boolean = pidAlive): string[] {
  const removed: string[] = [];
  const uid = process.getuid?.() ?? 0;
  withLayout(p, false, undefined, (l) => {
    for (const dir of [l.releases, l.dest]) {
      for (const name of fs.readdirSync(dir.path)) {
        const m = /^\.(?:partial-.+|current\.tmp|order\.tmp)-(\d+)$/.exec(name);
        if (!m || isAlive(Number(m[1]))) continue;
        if (fs.lstatSync(dir.at(name), { throwIfNoEntry: false })?.uid !== uid) continue; // not ours
        removeEntry(dir, name);
        removed.push(dir.shownAt(name));
      }
    }
  });
  return removed;
}

/** Move the finished partial dir (opened as `partial`) into place as release `id`, replacing a stale one of that id. */
export function commitRelease(p: ReleasePaths, partial: Dir, id: string): string {
  return (
    withLayout(p, false, undefined, (l) => {
      const from = fs.lstatSync(l.releases.at(partialName(id)), { throwIfNoEntry: false });
      const made = partial.stat();
      if (!from?.isDirectory() || from.ino !== made.ino || from.dev !== made.dev) {
        throw new PulldeployError(
          `sync: ${l.releases.shownAt(partialName(id))} is no longer the directory this run extracted into`,
          "sync",
        );
      }
      if (fs.lstatSync(l.releases.at(id), { throwIfNoEntry: false }) !== undefined) {
        if (currentRelease(p) === id)
          throw new PulldeployError(`release ${id} is current and would be replaced; give it a new release_id`, "sync");
        removeEntry(l.releases, id);
      }
      fs.renameSync(l.releases.at(partialName(id)), l.releases.at(id));
      return join(p.releases, id);
    }) ?? fail(p)
  );
}

function fail(p: ReleasePaths): never {
  throw new PulldeployError(`sync: ${p.releases} is missing`, "sync");
}

/**
 * Link `shared_paths` into a release dir (opened as `release`): each becomes a symlink to
 * `<dest>/shared/<path>`, by name. `<dest>/shared/<path>` is made (as directories) only where missing,
 * walking without following links: whatever the app has put there, a symlink included, is left as
 * it is, and root never creates or changes anything through a link. In the release, a shared path
 * under a symlink of the archive is refused (it would put the link outside the tree).
 */
export function linkShared(p: ReleasePaths, release: Dir, paths: string[]): void {
  if (paths.length === 0) return;
  const dest = openDest(p.dest) ?? fail(p);
  try {
    for (const rel of paths) {
      const parts = rel.split("/").filter((x) => x !== "");
      if (parts.length === 0 || parts.some((x) => x === "." || x === "..")) {
        throw new PulldeployError(
          `sync: shared_paths: ${JSON.stringify(rel)} must name a path inside ${p.shared}`,
          "sync",
        );
      }
      const shared = walkShared(dest, ["shared", ...parts], p);
      shared?.close();
      const last = parts.at(-1)!;
      const parent = walkTree(release, parts.slice(0, -1), rel);
      try {
        removeEntry(parent, last);
        fs.symlinkSync(join(p.shared, rel), parent.at(last));
      } finally {
        if (parent !== release) parent.close();
      }
    }
  } finally {
    dest.close();
  }
}

/** Walk (making what is missing) `parts` under `from`; the last one is left as it is if present. */
function walkShared(from: Dir, parts: string[], p: ReleasePaths): Dir | undefined {
  let dir = from;
  try {
    for (let i = 0; i < parts.length; i++) {
      const name = parts[i]!;
      const st = fs.lstatSync(dir.at(name), { throwIfNoEntry: false });
      if (st !== undefined && i === parts.length - 1) return undefined; // the app's: a link in it is its business
      if (st !== undefined && !st.isDirectory()) {
        throw new PulldeployError(
          `sync: shared_paths: ${join(p.dest, ...parts.slice(0, i + 1))} is ${describe(dir.at(name))}: ` +
            "refusing to create shared paths through it as root",
          "sync",
        );
      }
      const next = ensureDir(dir, name);
      if (dir !== from) dir.close();
      dir = next;
    }
    return dir;
  } catch (err) {
    if (dir !== from) dir.close();
    throw err;
  }
}

/** The directory `parts` of the release tree, made where missing; a symlink of the archive on the way is refused. */
function walkTree(root: Dir, parts: string[], rel: string): Dir {
  let dir = root;
  try {
    for (const name of parts) {
      const st = fs.lstatSync(dir.at(name), { throwIfNoEntry: false });
      if (st !== undefined && !st.isDirectory())
        throw new PulldeployError(
          `sync: shared_paths: ${rel}: ${name} is ${describe(dir.at(name))} in the archive, not a directory`,
          "sync",
        );
      const next = ensureDir(dir, name);
      if (dir !== root) dir.close();
      dir = next;
    }
    return dir;
  } catch (err) {
    if (dir !== root) dir.close();
    throw err;
  }
}

/** Point `current` at release `id` atomically: a new symlink renamed over the old one, inside the opened dest. */
export function switchCurrent(p: ReleasePaths, id: string): void {
  const found = withLayout(p, false, false, (l) => {
    if (!validId(id) || !existsIn(l, id)) throw new PulldeployError(`no release ${id} in ${p.releases}`, "sync");
    const tmp = `.current.tmp-${process.pid}`;
    removeEntry(l.dest, tmp);
    fs.symlinkSync(join("releases", id), l.dest.at(tmp));
    try {
      fs.renameSync(l.dest.at(tmp), l.dest.at("current"));
    } catch (err) {
      removeEntry(l.dest, tmp);
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "EISDIR" || code === "ENOTEMPTY" || code === "EEXIST") {
        throw new PulldeployError(
          `${p.current} is a directory, not a symlink: move it away to use sync_strategy: release`,
          "sync",
          { cause: err },
        );
      }
      throw err;
    }
    return true;
  });
  if (!found) throw new PulldeployError(`no release ${id} in ${p.releases}`, "sync");
}

/** Record `id` as the newest deployed release. */
export function recordDeployed(p: ReleasePaths, id: string): void {
  withLayout(p, false, undefined, (l) => writeOrder(l, [...readOrder(l).filter((x) => x !== id), id]));
}

/** A release rolled back from: oldest in the order, so it is pruned first and never "previous". */
export function abandon(p: ReleasePaths, id: string): void {
  withLayout(p, false, undefined, (l) => writeOrder(l, [id, ...readOrder(l).filter((x) => x !== id)]));
}

/**
 * Keep the newest `keep` releases; never current or the one before it. Returns the removed ids. Only
 * real directories directly in the agent's `releases/` are candidates, removed without following links.
 */
export function prune(p: ReleasePaths, keep: number): string[] {
  const current = currentRelease(p);
  return withLayout(p, false, [], (l) => {
    const all = listIn(l);
    const i = current === undefined ? -1 : all.indexOf(current);
    const protect = new Set([current, i > 0 ? all[i - 1] : undefined].filter((x): x is string => x !== undefined));
    const excess = all.length - keep;
    const removed: string[] = [];
    for (const id of all) {
      if (removed.length >= excess) break;
      if (protect.has(id)) continue;
      removeEntry(l.releases, id);
      removed.push(id);
    }
    if (removed.length > 0)
      writeOrder(
        l,
        readOrder(l).filter((x) => !removed.includes(x)),
      );
    return removed;
  });
}

function readOrder(l: Layout): string[] {
  try {
    const fd = fs.openSync(l.releases.at(".order"), fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    let text: string;
    try {
      text = fs.readFileSync(fd, "utf8");
    } finally {
      fs.closeSync(fd);
    }
    const data = JSON.parse(text) as { order?: unknown };
    return Array.isArray(data.order) ? data.order.filter((x): x is string => typeof x === "string") : [];
  } catch {
    return []; // missing, a symlink or corrupt: survive with directory names
  }
}

function writeOrder(l: Layout, order: string[]): void {
  const tmp = `.order.tmp-${process.pid}`;
  removeEntry(l.releases, tmp);
  fs.writeFileSync(l.releases.at(tmp), `${JSON.stringify({ order })}\n`, { flag: "wx", mode: 0o644 });
  fs.renameSync(l.releases.at(tmp), l.releases.at(".order"));
}
