/**
 * Sync strategies by name (the manifest's `sync_strategy`): how the verified, extracted tree reaches
 * `dest`. `rsync` is stretcher's exact command line; `mv` renames the tree into a `dest` that must not exist.
 */
import * as fs from "node:fs";
import { join } from "node:path";
import { CommandError, PulldeployError } from "./errors.ts";
import type { Logger } from "./log.ts";
import type { Manifest, SyncStrategyName } from "./manifest.ts";

export interface SyncContext {
  /** The extracted tree. */
  tree: string;
  dest: string;
  manifest: Manifest;
  /** `""`, `-v`, `-vv` or `-vvv`. */
  rsyncVerbose: string;
  env: Record<string, string | undefined>;
  log: Logger;
  signal?: AbortSignal;
}

export type SyncStrategy = (ctx: SyncContext) => Promise<void>;

export const SYNC_STRATEGIES: Record<SyncStrategyName, SyncStrategy> = {
  rsync: rsyncStrategy,
  mv: mvStrategy,
};

/** stretcher's command line, exactly: `rsync -a --delete [-v…] [--exclude-from F] [--exclude P]… tree/ dest/`. */
export function rsyncArgs(ctx: Pick<SyncContext, "tree" | "dest" | "manifest" | "rsyncVerbose">): string[] {
  const args = ["rsync", "-a", "--delete"];
  if (ctx.rsyncVerbose !== "") args.push(ctx.rsyncVerbose);
  if (ctx.manifest.excludeFrom !== undefined) args.push("--exclude-from", join(ctx.tree, ctx.manifest.excludeFrom));
  for (const p of ctx.manifest.excludes) args.push("--exclude", p);
  args.push(`${ctx.tree.replace(/\/+$/, "")}/`, `${ctx.dest.replace(/\/+$/, "")}/`);
  return args;
}

async function rsyncStrategy(ctx: SyncContext): Promise<void> {
  const { manifest, tree, log } = ctx;
  if (manifest.excludeFrom !== undefined && !fs.existsSync(join(tree, manifest.excludeFrom))) {
    throw new PulldeployError(`exclude_from: ${manifest.excludeFrom} is not in the archive`, "sync");
  }
  const args = rsyncArgs(ctx);
  log.info(`sync: ${args.join(" ")}`);
  let proc: ReturnType<typeof Bun.spawn>;
  try {
    proc = Bun.spawn(args, { stdin: "ignore", stdout: "pipe", stderr: "pipe", env: ctx.env as Record<string, string> });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw new PulldeployError("sync: rsync is not installed (apt-get install rsync, or use sync_strategy: mv)", "sync", { cause: err });
    throw new PulldeployError(`sync: cannot start rsync: ${(err as Error).message}`, "sync", { cause: err });
  }
  const onAbort = () => proc.kill("SIGTERM");
  ctx.signal?.addEventListener("abort", onAbort, { once: true });
  try {
    const [out, errText, code] = await Promise.all([
      new Response(proc.stdout as ReadableStream).text(),
      new Response(proc.stderr as ReadableStream).text(),
      proc.exited,
    ]);
    for (const line of `${out}${errText}`.split("\n")) if (line.trim() !== "") log.info(line);
    if (code !== 0) {
      const first = errText.split("\n").find((l) => l.trim() !== "") ?? "";
      throw new CommandError(`sync: rsync failed with exit code ${code}${first ? `: ${first}` : ""}`, "sync", code, errText);
    }
  } finally {
    ctx.signal?.removeEventListener("abort", onAbort);
  }
}

async function mvStrategy(ctx: SyncContext): Promise<void> {
  const { tree, dest, log } = ctx;
  if (fs.existsSync(dest)) throw new PulldeployError(`sync: mv needs a dest that does not exist, but ${dest} exists`, "sync");
  log.info(`sync: mv ${tree} ${dest}`);
  try {
    fs.renameSync(tree, dest);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === "EXDEV") {
      throw new PulldeployError(`sync: mv cannot rename across file systems (${tree} → ${dest}); set TMPDIR to a directory on dest's file system`, "sync", { cause: e });
    }
    if (e.code === "ENOENT") throw new PulldeployError(`sync: mv: the parent directory of ${dest} does not exist`, "sync", { cause: e });
    throw new PulldeployError(`sync: mv ${tree} ${dest}: ${e.code ?? e.message}`, "sync", { cause: e });
  }
}
