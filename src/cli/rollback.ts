/**
 * `pulldeploy rollback --dest DIR [--to ID]`: switch `current` back to an earlier release on this host,
 * with no download (sync_strategy: release). `--list` shows the releases.
 * `pulldeploy rollback --role ROLE [--to ID]`: make an earlier release the role's latest in Consul KV
 * and fire the event; agents that still hold it switch without downloading. `--wait` then waits for
 * the role's nodes as `publish --wait` does (exit 1 on a failed, timed-out or empty rollout).
 */
import { defineCommand, type ArgsDef } from "citty";
import { ConsulClient, consulConfig } from "../consul/client.ts";
import { PulldeployError, UsageError } from "../errors.ts";
import { fire } from "../publish/publish.ts";
import { checkRole, kvKeys, parseReleaseRecord, type ReleaseRecord } from "../records/release.ts";
import { announceArgs, announceOptions, waitArgs, waitForNodes, waitOptions } from "./publish.ts";
import * as releases from "../sync/releases.ts";
import type { CommandEnv } from "./context.ts";

const args = {
  dest: { type: "string", description: "Roll back this host: the manifest's dest (holding releases/ and current)", valueHint: "dir" },
  role: { type: "string", description: "Roll back the fleet: make an earlier release the role's latest in Consul KV and fire the event", valueHint: "role" },
  to: { type: "string", description: "The release id to go back to (default: the one before the current / latest)", valueHint: "id" },
  list: { type: "boolean", description: "List the releases, oldest first, and mark the current / latest one" },
  ...waitArgs,
  ...announceArgs,
} as const satisfies ArgsDef;

export default defineCommand({
  meta: { name: "rollback", description: "Switch current back to an earlier release on this host, without downloading" },
  args,
  run({ args, data }) {
    const ctx = data as CommandEnv;
    if (args.dest && args.role) throw new UsageError("use --dest (this host) or --role (the fleet), not both");
    if (args.role) return rollbackRole(args.role, args.to, args.list === true, args as Record<string, string | boolean | undefined>, ctx);
    if (!args.dest) throw new UsageError("--dest DIR (this host) or --role ROLE (the fleet) is required");
    if (args.wait === true || args["wait-timeout"] !== undefined) throw new UsageError("--wait applies to a fleet rollback (--role ROLE), not to --dest");
    return rollbackLocal(args.dest, args.to, args.list === true, ctx.log);
  },
});

async function rollbackRole(role: string, to: string | undefined, list: boolean, a: Record<string, string | boolean | undefined>, ctx: CommandEnv): Promise<number> {
  const bad = checkRole(role);
  if (bad) throw new UsageError(`--role: ${bad}`);
  const opts = announceOptions(a, ctx);
  const wait = waitOptions(a, opts, list ? "--list" : undefined);
  const consul = new ConsulClient(consulConfig(ctx.env, opts.consul));
  const { entries } = await consul.kvList(kvKeys.releases(opts.kvPrefix, role), { signal: ctx.signal });
  const records = entries
    .map((e) => parseReleaseRecord(new TextDecoder().decode(e.value ?? new Uint8Array())))
    .filter((r): r is ReleaseRecord => typeof r !== "string")
    .sort((x, y) => x.created_at.localeCompare(y.created_at) || x.id.localeCompare(y.id));
  const { value: latest } = await consul.kvGetJson<ReleaseRecord>(kvKeys.latest(opts.kvPrefix, role), { signal: ctx.signal });
  if (list) {
    for (const r of records) process.stdout.write(`${r.id === latest?.id ? "* " : "  "}${r.id}  ${r.created_at}  ${r.publisher}${r.message ? `  ${r.message}` : ""}\n`);
    return 0;
  }
  if (records.length === 0) throw new PulldeployError(`no releases recorded for role ${role} (${kvKeys.releases(opts.kvPrefix, role)})`);
  const ids = records.map((r) => r.id);
  let target: ReleaseRecord | undefined;
  if (to !== undefined) {
    target = records.find((r) => r.id === to);
    if (!target) throw new UsageError(`--to: no release "${to}" recorded for role ${role} (releases: ${ids.join(", ")})`);
  } else {
    const i = latest ? ids.indexOf(latest.id) : -1;
    target = i > 0 ? records[i - 1] : undefined;
    if (!target) throw new PulldeployError(`no release before ${latest?.id ?? "the latest"} to roll back to (releases: ${ids.join(", ")})`);
  }
  if (target.id === latest?.id) {
    ctx.log.info(`rollback: ${target.id} is already the latest release of ${role}${wait ? ": no event fired, nothing to wait for" : ""}`);
    return 0;
  }
  ctx.log.info(`rollback: role ${role} from ${latest?.id ?? "none"} to ${target.id}`);
  await fire({ manifestUrl: target.manifest_url, role, ...opts, env: ctx.env, log: ctx.log, signal: ctx.signal });
  if (!wait) return 0;
  return waitForNodes({ ...wait, role, releaseId: target.id, common: opts, ctx, log: ctx.log });
}

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
