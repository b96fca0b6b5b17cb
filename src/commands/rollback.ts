/**
 * `pulldeploy rollback --dest DIR [--to ID]`: switch `current` back to an earlier release on this host,
 * with no download (sync_strategy: release). `--list` shows the releases.
 */
import { defineCommand, type ArgsDef } from "citty";
import { PulldeployError, UsageError } from "../errors.ts";
import * as releases from "../release-dirs.ts";
import type { CommandEnv } from "../cli.ts";

const args = {
  dest: { type: "string", description: "The manifest's dest (holding releases/ and current)", valueHint: "dir" },
  to: { type: "string", description: "The release id to switch to (default: the one deployed before current)", valueHint: "id" },
  list: { type: "boolean", description: "List the releases, newest last, and mark current" },
} as const satisfies ArgsDef;

export default defineCommand({
  meta: { name: "rollback", description: "Switch current back to an earlier release on this host, without downloading" },
  args,
  run({ args, data }) {
    const { log } = data as CommandEnv;
    if (!args.dest) throw new UsageError("--dest is required: the directory holding releases/ and current");
    return rollbackLocal(args.dest, args.to, args.list === true, log);
  },
});

function rollbackLocal(dest: string, to: string | undefined, list: boolean, log: CommandEnv["log"]): number {
  const p = releases.releasePaths(dest);
  const all = releases.listReleases(p);
  const current = releases.currentRelease(p);
  if (list) {
    for (const id of all) process.stdout.write(`${id === current ? "* " : "  "}${id}\n`);
    return 0;
  }
  if (all.length === 0) throw new PulldeployError(`no releases in ${p.releases} (was it deployed with sync_strategy: release?)`);
  const target = to ?? releases.previousRelease(p, current);
  if (target === undefined) throw new PulldeployError(`no release before ${current ?? "current"} to roll back to (releases: ${all.join(", ")})`);
  if (!all.includes(target)) throw new UsageError(`--to: no release "${target}" in ${p.releases} (releases: ${all.join(", ")})`);
  if (target === current) {
    log.info(`rollback: ${target} is already current`);
    return 0;
  }
  const started = performance.now();
  releases.switchCurrent(p, target);
  if (current !== undefined) releases.abandon(p, current);
  log.info(`rollback: current -> releases/${target} (was ${current ?? "none"}) in ${((performance.now() - started) / 1000).toFixed(3)}s`);
  return 0;
}
