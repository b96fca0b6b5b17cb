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
 */
import * as fs from "node:fs";
import { dirname, join } from "node:path";
import { PulldeployError } from "../errors.ts";
import { pidAlive } from "../pid.ts";

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

/** The id `current` points at, or undefined. */
export function currentRelease(p: ReleasePaths): string | undefined {
  try {
    const target = fs.readlinkSync(p.current);
    return target.replace(/\/+$/, "").split("/").at(-1);
  } catch {
    return undefined;
  }
}

/** Complete releases in deploy order, oldest first (unknown ones first, by name). */
export function listReleases(p: ReleasePaths): string[] {
  let present: string[];
  try {
    present = fs.readdirSync(p.releases).filter((n) => !n.startsWith("."));
  } catch {
    return [];
  }
  const order = readOrder(p).filter((id) => present.includes(id));
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
  try {
    return fs.statSync(join(p.releases, id)).isDirectory();
  } catch {
    return false;
  }
}

/** A fresh directory to extract release `id` into, on dest's file system. */
export function partialDir(p: ReleasePaths, id: string, pid = process.pid): string {
  fs.mkdirSync(p.releases, { recursive: true });
  const dir = join(p.releases, `.partial-${id}-${pid}`);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { mode: 0o700 });
  return dir;
}

/** Remove what a dead run left: partial dirs of processes that are gone, stray `current` temp links. */
export function cleanStale(p: ReleasePaths, isAlive: (pid: number) => boolean = pidAlive): string[] {
  const removed: string[] = [];
  for (const dir of [p.releases, p.dest]) {
    let names: string[];
    try {
      names = fs.readdirSync(dir);
    } catch {
      continue;
    }
    for (const name of names) {
      const m = /^\.(?:partial-.+|current\.tmp|order\.tmp)-(\d+)$/.exec(name);
      if (!m || isAlive(Number(m[1]))) continue;
      fs.rmSync(join(dir, name), { recursive: true, force: true });
      removed.push(join(dir, name));
    }
  }
  return removed;
}

/** Move a finished partial dir into place as release `id` (replacing a stale one of that id). */
export function commitRelease(p: ReleasePaths, partial: string, id: string): string {
  const final = join(p.releases, id);
  if (fs.existsSync(final)) {
    if (currentRelease(p) === id) throw new PulldeployError(`release ${id} is current and would be replaced; give it a new release_id`, "sync");
    fs.rmSync(final, { recursive: true, force: true });
  }
  fs.renameSync(partial, final);
  return final;
}

/** Link `shared_paths` into a release dir: each becomes a symlink to `<dest>/shared/<path>`. */
export function linkShared(p: ReleasePaths, releaseDir: string, paths: string[]): void {
  for (const rel of paths) {
    const target = join(p.shared, rel);
    if (!fs.existsSync(target)) fs.mkdirSync(target, { recursive: true });
    const link = join(releaseDir, rel);
    fs.mkdirSync(dirname(link), { recursive: true });
    fs.rmSync(link, { recursive: true, force: true });
    fs.symlinkSync(target, link);
  }
}

/** Point `current` at release `id` atomically: a new symlink renamed over the old one. */
export function switchCurrent(p: ReleasePaths, id: string): void {
  if (!releaseExists(p, id)) throw new PulldeployError(`no release ${id} in ${p.releases}`, "sync");
  const tmp = join(p.dest, `.current.tmp-${process.pid}`);
  fs.rmSync(tmp, { force: true });
  fs.symlinkSync(join("releases", id), tmp);
  try {
    fs.renameSync(tmp, p.current);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "EISDIR" || code === "ENOTEMPTY" || code === "EEXIST") {
      throw new PulldeployError(`${p.current} is a directory, not a symlink: move it away to use sync_strategy: release`, "sync", { cause: err });
    }
    throw err;
  }
}

/** Record `id` as the newest deployed release. */
export function recordDeployed(p: ReleasePaths, id: string): void {
  writeOrder(p, [...readOrder(p).filter((x) => x !== id), id]);
}

/** A release rolled back from: oldest in the order, so it is pruned first and never "previous". */
export function abandon(p: ReleasePaths, id: string): void {
  writeOrder(p, [id, ...readOrder(p).filter((x) => x !== id)]);
}

/** Keep the newest `keep` releases; never current or the one before it. Returns the removed ids. */
export function prune(p: ReleasePaths, keep: number): string[] {
  const all = listReleases(p);
  const current = currentRelease(p);
  const protect = new Set([current, previousRelease(p, current)].filter((x): x is string => x !== undefined));
  const excess = all.length - keep;
  const removed: string[] = [];
  for (const id of all) {
    if (removed.length >= excess) break;
    if (protect.has(id)) continue;
    fs.rmSync(join(p.releases, id), { recursive: true, force: true });
    removed.push(id);
  }
  if (removed.length > 0) writeOrder(p, readOrder(p).filter((x) => !removed.includes(x)));
  return removed;
}

function readOrder(p: ReleasePaths): string[] {
  try {
    const data = JSON.parse(fs.readFileSync(p.order, "utf8")) as { order?: unknown };
    return Array.isArray(data.order) ? data.order.filter((x): x is string => typeof x === "string") : [];
  } catch {
    return []; // missing or corrupt: survive with directory names
  }
}

function writeOrder(p: ReleasePaths, order: string[]): void {
  fs.mkdirSync(p.releases, { recursive: true });
  const tmp = join(p.releases, `.order.tmp-${process.pid}`);
  fs.writeFileSync(tmp, `${JSON.stringify({ order })}\n`);
  fs.renameSync(tmp, p.order);
}
