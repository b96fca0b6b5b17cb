/**
 * `src/sync/`: how a verified tree reaches `dest` (the strategies table) and the releases/ layout
 * on disk. May import manifest/ and the shared modules only.
 *
 * Sync strategies by name (the manifest's `sync_strategy`): where the archive is extracted and how
 * the verified tree reaches `dest`.
 * - `rsync`: stretcher's exact command line from a temp dir; a file equal to dest's (size, mtime, mode,
 *   owner, then every byte) is hard-linked from dest into the temp dir instead of written, when both
 *   are on one file system, so rsync's quick check then skips it as before, but nothing was written.
 * - `mv`: rename the temp dir to a `dest` that must not exist.
 * - `release`: extract into `<dest>/releases/.partial-…` (hard-linking unchanged files from the current
 *   release), commit it as `releases/<id>`, link `shared_paths`, switch `current` atomically, prune.
 */
import * as fs from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { CommandError, PulldeployError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { Manifest, SyncStrategyName } from "../manifest/parse.ts";
import { checkDest, type Dir, onlyRootCanChange, openDest, openDir, removeEntry } from "./nofollow.ts";
import { pidAlive, type ChildTracker } from "../pid.ts";
import { formatDuration } from "../time.ts";
import * as releases from "./releases.ts";

export interface SyncContext {
  manifest: Manifest;
  /** `""`, `-v`, `-vv` or `-vvv`. */
  rsyncVerbose: string;
  /** Hard-link unchanged files from dest (rsync) or the previous release (default); false writes every file. */
  hardLinks?: boolean;
  env: Record<string, string | undefined>;
  log: Logger;
  signal?: AbortSignal;
  /** Records rsync's process, so that it and its children do not outlive a killed agent's next run. */
  track?: ChildTracker;
  /** A running rsync is said to be still running this often (default `PROGRESS_EVERY_MS`). */
  progressEveryMs?: number;
}

/**
 * How often a long step (rsync, removing a temp tree) is logged while it runs or once it is done: a
 * deploy that takes minutes in its sync phase says which part the minutes went to.
 */
export const PROGRESS_EVERY_MS = 30_000;

export interface Workspace {
  /** The fresh directory to extract into (`release`: pinned as `/proc/self/fd/N`, see nofollow.ts). */
  tree: string;
  /** A previous release, or dest (rsync), to hard-link unchanged files from. Never written to. Pinned like `tree`. */
  linkFrom?: string;
  /** `linkFrom` as a path, for messages. */
  linkFromShown?: string;
  /** Directories whose same-named files may legitimately share an inode with `linkFrom`'s (the other releases). */
  linkPeers?: string[];
  /** `release`: the partial dir `tree` names, and the opened `releases/` it is in. */
  treeDir?: Dir;
  releasesDir?: Dir;
  /** Opened directories to close at cleanup. */
  pinned?: Dir[];
  /** `release`: this release's id, the one it replaces, and whether it is already on disk. */
  releaseId?: string;
  previousId?: string;
  present?: boolean;
  /** The archive's own hard-link entries, once extracted (`rsync -a` without `-H` copies them apart). */
  archiveHardLinks?: number;
  /** Files hard-linked from `linkFrom` into the tree, once extracted. */
  linked?: number;
}

export interface SyncStrategy {
  prepare(ctx: SyncContext): Workspace;
  /** Put the verified, extracted tree in place. */
  apply(ctx: SyncContext, ws: Workspace): Promise<void>;
  /** `validate` failed: go back to what was live before; returns what it went back to. */
  revert?(ctx: SyncContext, ws: Workspace): string | undefined;
  /** Remove what is left of the workspace; runs on every path. */
  cleanup(ws: Workspace): void;
}

/** The temp tree (rsync, mv: a 0700 dir of the agent's in TMPDIR), then every opened directory. */
const removeTree = (ws: Workspace) => {
  try {
    if (ws.tree !== "" && ws.treeDir === undefined) fs.rmSync(ws.tree, { recursive: true, force: true });
  } finally {
    for (const d of ws.pinned ?? []) d.close();
  }
};

/** rsync's and mv's temp trees: `pulldeploy-<pid>-XXXXXX`, so that a later run can tell a dead run's. */
const TEMP_TREE = /^pulldeploy-(\d+)-[A-Za-z0-9]{6}$/;
const tempRoot = (env: SyncContext["env"]) => env.TMPDIR || tmpdir();
const tempTree = (env: SyncContext["env"]) => fs.mkdtempSync(join(tempRoot(env), `pulldeploy-${process.pid}-`));

/**
 * Remove the temp trees that runs now dead left in TMPDIR (a `kill -9` runs no cleanup): only real
 * directories named as the agent names them, owned by its user, whose pid is gone; never followed.
 * Run by every strategy (a host may switch strategies). Returns what was removed.
 */
export function sweepTempTrees(env: SyncContext["env"], isAlive: (pid: number) => boolean = pidAlive): string[] {
  const root = tempRoot(env);
  let dir: Dir | undefined;
  try {
    dir = openDir(root);
  } catch {
    return []; // TMPDIR a symlink: not swept (mkdtemp still works through it)
  }
  if (!dir) return [];
  const removed: string[] = [];
  const uid = process.getuid?.() ?? 0;
  try {
    for (const name of fs.readdirSync(dir.path)) {
      const m = TEMP_TREE.exec(name);
      if (!m || Number(m[1]) === process.pid || isAlive(Number(m[1]))) continue;
      const st = fs.lstatSync(dir.at(name), { throwIfNoEntry: false });
      if (!st?.isDirectory() || st.uid !== uid) continue;
      removeEntry(dir, name);
      removed.push(dir.shownAt(name));
    }
  } finally {
    dir.close();
  }
  return removed;
}

/** Refuse a symlinked dest, warn if others could change it, sweep dead runs' temp trees. */
function preflight(ctx: SyncContext): void {
  const warning = checkDest(ctx.manifest.dest!);
  if (warning !== undefined) ctx.log.info(warning);
  for (const path of sweepTempTrees(ctx.env)) ctx.log.info(`sync: removed ${path}, left by an interrupted run`);
}

export const SYNC_STRATEGIES: Record<SyncStrategyName, SyncStrategy> = {
  rsync: { prepare: rsyncPrepare, apply: rsyncApply, cleanup: removeTree },
  mv: { prepare: mvPrepare, apply: mvApply, cleanup: removeTree },
  release: { prepare: releasePrepare, apply: releaseApply, revert: releaseRevert, cleanup: releaseCleanup },
};

function mvPrepare(ctx: SyncContext): Workspace {
  preflight(ctx);
  return { tree: tempTree(ctx.env) };
}

/** stretcher's command line, exactly: `rsync -a --delete [-v…] [--exclude-from F] [--exclude P]… tree/ dest/`. */
export function rsyncArgs(ctx: { tree: string; dest: string; manifest: Manifest; rsyncVerbose: string }): string[] {
  const args = ["rsync", "-a", "--delete"];
  if (ctx.rsyncVerbose !== "") args.push(ctx.rsyncVerbose);
  if (ctx.manifest.excludeFrom !== undefined) args.push("--exclude-from", join(ctx.tree, ctx.manifest.excludeFrom));
  for (const p of ctx.manifest.excludes) args.push("--exclude", p);
  args.push(`${ctx.tree.replace(/\/+$/, "")}/`, `${ctx.dest.replace(/\/+$/, "")}/`);
  return args;
}

function rsyncPrepare(ctx: SyncContext): Workspace {
  preflight(ctx);
  const tree = tempTree(ctx.env);
  const dest = ctx.manifest.dest!;
  if (ctx.hardLinks === false) return { tree };
  // Files are hard-linked from dest as it is now, pinned: not from wherever its path leads later.
  const destDir = openDest(dest);
  if (destDir === undefined) return { tree };
  const linkFrom = linkableDir(onlyRootCanChange(dest) ? dest : destDir.path, tree);
  if (linkFrom === null)
    ctx.log.info(
      `fetch: ${tree} is not on dest's file system: every file is written (set TMPDIR to a directory there to ` +
        "hard-link unchanged files from dest)",
    );
  return { tree, linkFrom: linkFrom ?? undefined, linkFromShown: dest, pinned: [destDir] };
}

/**
 * `dir` if it is a directory on `tree`'s file system (so its files can be hard-linked into `tree`);
 * undefined if it does not exist (yet); null if it is elsewhere. A bind mount has the same st_dev and
 * still refuses links (EXDEV): the extractor then writes instead.
 */
export function linkableDir(dir: string, tree: string): string | undefined | null {
  let st: fs.Stats;
  try {
    st = fs.statSync(dir);
  } catch {
    return undefined;
  }
  if (!st.isDirectory()) return undefined;
  return st.dev === fs.statSync(tree).dev ? dir : null;
}

async function rsyncApply(ctx: SyncContext, ws: Workspace): Promise<void> {
  const { manifest, log } = ctx;
  if (manifest.excludeFrom !== undefined && !fs.existsSync(join(ws.tree, manifest.excludeFrom))) {
    throw new PulldeployError(`exclude_from: ${manifest.excludeFrom} is not in the archive`, "sync");
  }
  if (renameInstead(ctx, ws)) return;
  const args = rsyncArgs({ tree: ws.tree, dest: manifest.dest!, manifest, rsyncVerbose: ctx.rsyncVerbose });
  log.info(`sync: ${args.join(" ")}`);
  let proc: ReturnType<typeof Bun.spawn>;
  try {
    proc = Bun.spawn(args, {
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
      env: ctx.env as Record<string, string>,
      // Not a session of its own (see ChildKind in pid.ts): tracked as a process tree instead.
    });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT")
      throw new PulldeployError(
        "sync: rsync is not installed (apt-get install rsync, or use sync_strategy: mv)",
        "sync",
        { cause: err },
      );
    throw new PulldeployError(`sync: cannot start rsync: ${(err as Error).message}`, "sync", { cause: err });
  }
  ctx.track?.started(proc.pid, "sync: rsync", "tree");
  const onAbort = () => proc.kill("SIGTERM");
  ctx.signal?.addEventListener("abort", onAbort, { once: true });
  const started = performance.now();
  const progress = setInterval(
    () => log.info(`sync: rsync (pid ${proc.pid}) still running after ${elapsed(started)}`),
    ctx.progressEveryMs ?? PROGRESS_EVERY_MS,
  );
  try {
    const [out, errText, code] = await Promise.all([
      new Response(proc.stdout as ReadableStream).text(),
      new Response(proc.stderr as ReadableStream).text(),
      proc.exited,
    ]);
    for (const line of `${out}${errText}`.split("\n")) if (line.trim() !== "") log.info(line);
    if (code !== 0) {
      const first = errText.split("\n").find((l) => l.trim() !== "") ?? "";
      throw new CommandError(
        `sync: rsync failed with exit code ${code}${first ? `: ${first}` : ""}`,
        "sync",
        code,
        errText,
      );
    }
  } finally {
    clearInterval(progress);
    ctx.track?.ended(proc.pid);
    ctx.signal?.removeEventListener("abort", onAbort);
  }
}

/** The time since `start` (a `performance.now()`) for progress lines, in whole seconds from 1 s: "31s", "2m". */
export function elapsed(start: number): string {
  const ms = performance.now() - start;
  return formatDuration(ms >= 1000 ? Math.round(ms / 1000) * 1000 : Math.round(ms));
}

/**
 * A first deploy (dest missing or an empty directory) whose result `rsync -a --delete TREE/ DEST/` would make a copy
 * of the tree, byte for byte and mode for mode, is a rename of the tree instead: no second copy, no
 * temp tree to delete. Not when anything would make rsync's copy differ from the tree: excludes
 * (they are not copied), the archive's hard links (rsync -a copies them apart), `-v` output, SELinux
 * (files keep the temp dir's label in a rename). A rename that fails (another file system, dest made
 * meanwhile) falls back to rsync.
 */
function renameInstead(ctx: SyncContext, ws: Workspace): boolean {
  const { manifest, log } = ctx;
  const dest = manifest.dest!;
  if (ctx.rsyncVerbose !== "" || manifest.excludes.length > 0 || manifest.excludeFrom !== undefined) return false;
  if (ws.archiveHardLinks !== 0 || fs.existsSync("/sys/fs/selinux/enforce")) return false;
  // Files linked from a dest that `pre` then moved or emptied: renamed into place they would stay
  // names of those inodes (a backup's, say), where rsync's copy would be new files.
  if (ws.linked !== undefined && ws.linked > 0) return false;
  const state = emptyDestState(dest);
  if (state === undefined) return false;
  try {
    // Over an empty directory, rename(2) replaces it atomically; one that gained an entry meanwhile fails (ENOTEMPTY).
    fs.renameSync(ws.tree, dest);
  } catch {
    return false;
  }
  log.info(`sync: ${dest} ${state}: renamed ${ws.tree} to it (what rsync -a would have copied)`);
  return true;
}

/**
 * "did not exist", or "was an empty directory" (a real one on its parent's file system: not a symlink,
 * whose target rsync would fill, nor a mount point); undefined when dest holds anything.
 */
function emptyDestState(dest: string): string | undefined {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(dest);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "ENOENT" ? "did not exist" : undefined;
  }
  try {
    if (!st.isDirectory() || st.dev !== fs.statSync(dirname(dest)).dev || fs.readdirSync(dest).length > 0)
      return undefined;
  } catch {
    return undefined;
  }
  return "was an empty directory";
}

async function mvApply(ctx: SyncContext, ws: Workspace): Promise<void> {
  const dest = ctx.manifest.dest!;
  const { tree } = ws;
  if (fs.lstatSync(dest, { throwIfNoEntry: false }) !== undefined)
    throw new PulldeployError(`sync: mv needs a dest that does not exist, but ${dest} exists`, "sync");
  ctx.log.info(`sync: mv ${tree} ${dest}`);
  try {
    fs.renameSync(tree, dest);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === "EXDEV") {
      throw new PulldeployError(
        `sync: mv cannot rename across file systems (${tree} → ${dest}); set TMPDIR to a directory on dest's ` +
          "file system",
        "sync",
        { cause: e },
      );
    }
    if (e.code === "ENOENT")
      throw new PulldeployError(`sync: mv: the parent directory of ${dest} does not exist`, "sync", { cause: e });
    throw new PulldeployError(`sync: mv ${tree} ${dest}: ${e.code ?? e.message}`, "sync", { cause: e });
  }
}

/** The id of a manifest's release: its `release_id`, else the checksum's first 16 hex digits. */
export function releaseIdOf(m: Manifest): string {
  return m.releaseId ?? m.checksum?.hex.slice(0, 16) ?? "commands-only";
}

function releasePrepare(ctx: SyncContext): Workspace {
  preflight(ctx);
  const p = releases.releasePaths(ctx.manifest.dest!);
  const layout = releases.openLayout(p, true)!;
  for (const path of releases.cleanStale(p)) ctx.log.info(`release: removed ${path}, left by an interrupted run`);
  const releaseId = releaseIdOf(ctx.manifest);
  const previousId = releases.currentRelease(p);
  if (releases.releaseExists(p, releaseId)) {
    layout.close();
    return { tree: "", releaseId, previousId, present: true };
  }
  const ws: Workspace = {
    tree: "",
    releaseId,
    previousId,
    pinned: [layout.dest, layout.releases],
    releasesDir: layout.releases,
  };
  // Extraction goes through the pinned directories when another user could swap a path on the way
  // (dest owned by the app); through their paths when only root can change them (cheaper per file).
  const pin = !onlyRootCanChange(p.releases);
  try {
    if (ctx.hardLinks !== false && previousId !== undefined && releases.releaseExists(p, previousId)) {
      const prev = openDir(layout.releases.at(previousId), join(p.releases, previousId));
      if (prev !== undefined) {
        ws.pinned!.push(prev);
        ws.linkFrom = pin ? prev.path : prev.shown;
        ws.linkFromShown = prev.shown;
        ws.linkPeers = releases.listReleases(p).map((id) => (pin ? layout.releases.at(id) : join(p.releases, id)));
      }
    }
    ws.treeDir = releases.partialDir(p, releaseId);
    ws.pinned!.push(ws.treeDir);
    ws.tree = pin ? ws.treeDir.path : ws.treeDir.shown;
  } catch (err) {
    for (const d of ws.pinned!) d.close();
    throw err;
  }
  return ws;
}

async function releaseApply(ctx: SyncContext, ws: Workspace): Promise<void> {
  const { manifest, log } = ctx;
  const p = releases.releasePaths(manifest.dest!);
  const id = ws.releaseId!;
  if (!ws.present) {
    releases.linkShared(p, ws.treeDir!, manifest.sharedPaths);
    releases.commitRelease(p, ws.treeDir!, id);
  }
  releases.switchCurrent(p, id);
  log.info(`sync: current -> releases/${id}${ws.previousId && ws.previousId !== id ? ` (was ${ws.previousId})` : ""}`);
  // `current` is switched: from here on, a failure is a warning and the deploy succeeded (it is live).
  try {
    releases.recordDeployed(p, id);
    const pruned = releases.prune(p, manifest.keepReleases);
    if (pruned.length > 0) log.info(`release: pruned ${pruned.join(", ")} (keep_releases: ${manifest.keepReleases})`);
  } catch (err) {
    log.info(
      `release: warning: releases/${id} is live, but bookkeeping or pruning old releases failed: ` +
        `${(err as Error).message}`,
    );
  }
}

/** A partial dir still in place (the deploy failed before commit) is removed, if it is still ours. */
function releaseCleanup(ws: Workspace): void {
  try {
    const r = ws.releasesDir;
    if (r !== undefined && ws.treeDir !== undefined && ws.releaseId !== undefined) {
      const name = releases.partialName(ws.releaseId);
      const st = fs.lstatSync(r.at(name), { throwIfNoEntry: false });
      const made = ws.treeDir.stat();
      if (st?.isDirectory() && st.ino === made.ino && st.dev === made.dev) removeEntry(r, name);
    }
  } finally {
    for (const d of ws.pinned ?? []) d.close();
  }
}

function releaseRevert(ctx: SyncContext, ws: Workspace): string | undefined {
  const p = releases.releasePaths(ctx.manifest.dest!);
  const back = ws.previousId;
  if (back === undefined || back === ws.releaseId || !releases.releaseExists(p, back)) return undefined;
  releases.switchCurrent(p, back);
  releases.abandon(p, ws.releaseId!);
  return back;
}
