/**
 * `pulldeploy rollback --dest DIR [--to ID]`: switch `current` back to an earlier release on this host,
 * with no download (sync_strategy: release), under the host lock; the state file and, with `--role`,
 * the node's report in Consul KV then say what is live (src/agent/rollback.ts). `--list` shows the releases.
 * `pulldeploy rollback --role ROLE [--to ID]`: make an earlier release the role's latest in Consul KV
 * and fire the event; agents that still hold it switch without downloading. With `--sign-key`, the
 * release's manifest is re-signed with a new issue time first (src/publish/rollback.ts): agents with
 * `--trust-key` refuse an older signed manifest otherwise. `--wait` then waits for the role's nodes as
 * `publish --wait` does (exit 1 on a failed, timed-out or empty rollout).
 */
import { defineCommand, type ArgsDef } from "citty";
import { hostname } from "node:os";
import { UsageError } from "../errors.ts";
import { checkRole, DEFAULT_KV_PREFIX } from "../records/release.ts";
import { DEFAULT_STATE_DIR, usableStateDir } from "../agent/state.ts";
import { announceArgs, durationFlag, rolloutArgs, waitArgs } from "./_shared.ts";
import type { CommandEnv } from "./context.ts";

const args = {
  dest: {
    type: "string",
    description: "Roll back this host: the manifest's dest (holding releases/ and current)",
    valueHint: "dir",
  },
  role: {
    type: "string",
    description:
      "Roll back the fleet: make an earlier release the role's latest in Consul KV and fire the event (with " +
      "--dest: report this host's rollback under this role)",
    valueHint: "role",
  },
  to: {
    type: "string",
    description: "The release id to go back to (default: the one before the current / latest)",
    valueHint: "id",
  },
  list: { type: "boolean", description: "List the releases, oldest first, and mark the current / latest one" },
  "sign-key": {
    type: "string",
    description:
      "--role: re-sign the release's manifest with a new issue time (agents with --trust-key refuse older " +
      "signed manifests)",
    valueHint: "file",
  },
  "state-dir": {
    type: "string",
    description: `--dest: the agent's state and lock (default $PULLDEPLOY_STATE_DIR or ${DEFAULT_STATE_DIR})`,
    valueHint: "dir",
  },
  "lock-wait": {
    type: "string",
    description: "--dest: how long to wait for an agent deploying on this host (default 10m; 0: don't wait)",
    valueHint: "duration",
  },
  ...waitArgs,
  ...rolloutArgs,
  ...announceArgs,
} as const satisfies ArgsDef;

type Args = Record<string, string | boolean | undefined>;

export default defineCommand({
  meta: {
    name: "rollback",
    description: "Switch current back to an earlier release on this host, without downloading",
  },
  args,
  async run({ args, data }) {
    const ctx = data as CommandEnv;
    if (args.role) {
      const bad = checkRole(args.role);
      if (bad) throw new UsageError(`--role: ${bad}`);
    }
    if (args.dest) {
      if (args.wait === true || args["wait-timeout"] !== undefined)
        throw new UsageError("--wait applies to a fleet rollback (--role ROLE), not to --dest");
      if (args["sign-key"] !== undefined)
        throw new UsageError("--sign-key applies to a fleet rollback (--role ROLE without --dest)");
      if (Object.keys(rolloutArgs).some((k) => args[k] !== undefined) && (await rolloutGiven(args as Args)))
        throw new UsageError(
          "rollout flags (--max-parallel, --canary, …) apply to a fleet rollback (--role ROLE without --dest)",
        );
      return rollbackHost(args.dest, args as Args, ctx);
    }
    if (args.role) return rollbackRole(args.role, args as Args, ctx);
    throw new UsageError("--dest DIR (this host) or --role ROLE (the fleet) is required");
  },
});

/** Whether rollout flags were given that would stage a rollout (as `publish` reads them). */
async function rolloutGiven(a: Args): Promise<boolean> {
  const { rolloutSettings } = await import("./rollout.ts");
  return rolloutSettings(a) !== undefined;
}

// Each side is imported where it is used, the flag tables aside (`_shared.ts`): `rollback --dest`
// loads neither the publish side nor the Consul client (unless it reports under --role).
async function rollbackRole(role: string, a: Args, ctx: CommandEnv): Promise<number> {
  const [
    { fire },
    { isSigned, pickRollback, resignManifest, roleReleases },
    { announceOptions, waitForNodes, waitOptions },
    { rolloutHook, rolloutSettings },
    { ConsulClient, consulConfig },
  ] = await Promise.all([
    import("../publish/fire.ts"),
    import("../publish/rollback.ts"),
    import("./publish.ts"),
    import("./rollout.ts"),
    import("../consul/client.ts"),
  ]);
  const list = a.list === true;
  const opts = announceOptions(a, ctx);
  const wait = waitOptions(a, opts, list ? "--list" : undefined);
  const beforeRecord = rolloutHook(rolloutSettings(a), {
    role,
    kv: opts.kv,
    prefix: opts.kvPrefix,
    announce: opts.announce,
    ctx,
  });
  const consul = new ConsulClient(consulConfig(ctx.env, opts.consul));
  const { records, latest } = await roleReleases(consul, opts.kvPrefix, role, ctx.signal);
  if (list) {
    for (const r of records)
      process.stdout.write(
        `${r.id === latest?.id ? "* " : "  "}${r.id}  ${r.created_at}  ` +
          `${r.publisher}${r.message ? `  ${r.message}` : ""}\n`,
      );
    return 0;
  }
  const target = pickRollback(records, latest, typeof a.to === "string" ? a.to : undefined, role, opts.kvPrefix);
  const signKey = typeof a["sign-key"] === "string" ? a["sign-key"] : undefined;
  // With a key, a latest that agents refused (a rollback fired unsigned) is re-signed and fired again.
  if (target.id === latest?.id && signKey === undefined) {
    ctx.log.info(
      `rollback: ${target.id} is already the latest release of ` +
        `${role}${wait ? ": no event fired, nothing to wait for" : ""}`,
    );
    return 0;
  }
  ctx.log.info(`rollback: role ${role} from ${latest?.id ?? "none"} to ${target.id}`);
  let manifestUrl = target.manifest_url;
  if (signKey !== undefined) {
    manifestUrl = await resignManifest({ manifestUrl, signKey, env: ctx.env, log: ctx.log, signal: ctx.signal });
  } else if (await isSigned(manifestUrl, ctx.env, ctx.signal)) {
    ctx.log.info(
      `rollback: warning: ${target.id}'s manifest is signed; agents with --trust-key that ran a later release ` +
        "refuse it as a downgrade (pass --sign-key KEY to re-sign it)",
    );
  }
  await fire({
    manifestUrl,
    role,
    ...opts,
    record: { ...target, manifest_url: manifestUrl },
    env: ctx.env,
    log: ctx.log,
    signal: ctx.signal,
    beforeRecord,
  });
  if (!wait) return 0;
  return waitForNodes({ ...wait, role, releaseId: target.id, common: opts, ctx, log: ctx.log });
}

async function rollbackHost(dest: string, a: Args, ctx: CommandEnv): Promise<number> {
  const { localReleases, rollbackLocal } = await import("../agent/rollback.ts");
  if (a.list === true) {
    const { ids, current } = localReleases(dest);
    for (const id of ids) process.stdout.write(`${id === current ? "* " : "  "}${id}\n`);
    return 0;
  }
  const str = (k: string) => (typeof a[k] === "string" ? (a[k] as string) : undefined);
  const role = str("role");
  let report;
  if (role !== undefined) {
    const [{ nodeName }, { ConsulClient, consulConfig }] = await Promise.all([
      import("../agent/run.ts"),
      import("../consul/client.ts"),
    ]);
    const consul = new ConsulClient(consulConfig(ctx.env, { addr: str("consul-addr"), token: str("consul-token") }), {
      timeoutMs: 10_000,
    });
    report = {
      consul,
      prefix: str("kv-prefix") ?? DEFAULT_KV_PREFIX,
      role,
      node: await nodeName(str("node"), consul, hostname()),
    };
  }
  await rollbackLocal({
    dest,
    to: str("to"),
    stateDir: usableStateDir(
      str("state-dir") ?? ctx.env.PULLDEPLOY_STATE_DIR ?? DEFAULT_STATE_DIR,
      ctx.log,
      "no host lock and no state update",
    ),
    lockWaitMs: durationFlag("lock-wait", str("lock-wait")) ?? 600_000,
    report,
    log: ctx.log,
    signal: ctx.signal,
  });
  return 0;
}
