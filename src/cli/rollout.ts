/**
 * `pulldeploy rollout status|pause|resume|promote|abort --role R [--release ID] [--json]`: read or
 * steer a staged rollout (publish/rollout.ts). Also the rollout flags that `publish` and `fire` share.
 * Only turns flags into options. Exit code: 0; 1 when there is no such rollout, the action does not
 * apply, or (status) the rollout is halted or aborted; 2 usage.
 */
import { defineCommand, type ArgsDef } from "citty";
import type { CommandEnv } from "./context.ts";
import { ConsulClient, consulConfig } from "../consul/client.ts";
import { UsageError } from "../errors.ts";
import {
  checkRolloutSettings,
  DEFAULT_HEALTH_DEADLINE_MS,
  DEFAULT_PREPARE_DEADLINE_MS,
  readRollout,
  ROLLOUT_ACTIONS,
  steerRollout,
  wantsRollout,
  writeRollout,
  type RolloutAction,
  type RolloutSettings,
} from "../publish/rollout.ts";
import type { AnnounceOptions } from "../publish/announce.ts";
import { defaultPublisher } from "../publish/publish.ts";
import { checkRole, DEFAULT_KV_PREFIX, normalizeKvPrefix, type ReleaseRecord } from "../records/release.ts";
import { describeRolloutRecord, isFinal } from "../records/rollout.ts";
import { consulArgs, durationFlag, intFlag } from "./_shared.ts";

type Flags = Record<string, string | boolean | undefined>;

/** The rollout flags as settings (checked), or undefined when none was given. */
export function rolloutSettings(a: Flags): RolloutSettings | undefined {
  const str = (k: string) => (typeof a[k] === "string" && a[k] !== "" ? (a[k] as string) : undefined);
  const s: RolloutSettings = {
    maxParallel: str("max-parallel"),
    canary: intFlag("canary", str("canary")) ?? 0,
    canaryWait: a["canary-wait"] === true,
    maxFailures: str("max-failures"),
    autoRollback: a["auto-rollback"] === true,
    healthGraceMs: durationFlag("health-grace", str("health-grace")) ?? 0,
    healthDeadlineMs: durationFlag("health-deadline", str("health-deadline")) ?? DEFAULT_HEALTH_DEADLINE_MS,
    switchTogether: a["switch-together"] === true,
    prepareDeadlineMs: durationFlag("prepare-deadline", str("prepare-deadline")) ?? DEFAULT_PREPARE_DEADLINE_MS,
    slotTtlMs: durationFlag("slot-ttl", str("slot-ttl")),
  };
  if (!s.switchTogether && str("prepare-deadline") !== undefined)
    throw new UsageError("--prepare-deadline only applies with --switch-together");
  if (s.slotTtlMs !== undefined && s.maxParallel === undefined)
    throw new UsageError("--slot-ttl only applies with --max-parallel (without it there are no slots)");
  checkRolloutSettings(s);
  return wantsRollout(s) ? s : undefined;
}

/**
 * The publish/fire hook that writes the rollout record before KV and the event. Usage errors for what
 * cannot stage a rollout: no role, no KV.
 */
export function rolloutHook(
  s: RolloutSettings | undefined,
  o: { role?: string; kv: boolean; prefix: string; announce: AnnounceOptions; ctx: CommandEnv },
) {
  if (!s) return undefined;
  if (o.role === undefined)
    throw new UsageError("rollout flags (--max-parallel, --canary, …) need --role: the role whose nodes take part");
  if (!o.kv)
    throw new UsageError(
      "rollout flags (--max-parallel, --canary, …) cannot go with --no-kv: agents coordinate through Consul KV",
    );
  // The halting agent fires the rollback, and an agent can only fire a Consul event: `serf event`
  // needs the publisher's Serf RPC address and key (never written to KV), and a Consul event never
  // reaches a fleet whose handlers listen to Serf. Refused rather than rolled back in KV only.
  if (s.autoRollback && o.announce.via === "serf") {
    throw new UsageError(
      "--auto-rollback cannot go with --via serf: the halting agent fires the rollback as a Consul event, " +
        `which Serf handlers never see; drop --auto-rollback (after a halt: pulldeploy rollback --role ${o.role} ` +
        "--via serf) or announce through Consul",
    );
  }
  return async (consul: ConsulClient, release: ReleaseRecord) => {
    const a = o.announce;
    await writeRollout(consul, {
      prefix: o.prefix,
      release,
      settings: s,
      event: a.event,
      filters: { node: a.node, service: a.service, tag: a.tag },
      log: o.ctx.log,
    });
  };
}

export const rolloutCommandArgs = {
  action: { type: "positional", description: `status, ${ROLLOUT_ACTIONS.join(", ")}`, required: false },
  role: { type: "string", description: "The role (required)", valueHint: "role" },
  release: {
    type: "string",
    description: "The release's rollout (default: the role's latest release)",
    valueHint: "id",
  },
  json: { type: "boolean", description: "Print the rollout record as JSON" },
  "kv-prefix": { type: "string", description: `Consul KV prefix (default ${DEFAULT_KV_PREFIX})`, valueHint: "prefix" },
  ...consulArgs,
} as const satisfies ArgsDef;

export default defineCommand({
  meta: { name: "rollout", description: "Show or steer a staged rollout: status, pause, resume, promote, abort" },
  args: rolloutCommandArgs,
  async run({ args, data }) {
    const ctx = data as CommandEnv;
    const a = args as Flags;
    const str = (k: string) => (typeof a[k] === "string" && a[k] !== "" ? (a[k] as string) : undefined);
    const action = str("action");
    const actions = ["status", ...ROLLOUT_ACTIONS];
    if (action === undefined || !actions.includes(action)) {
      throw new UsageError(
        `${action === undefined ? "missing the action" : `unknown action "${action}"`}: pulldeploy rollout ` +
          `${actions.join("|")} --role ROLE`,
      );
    }
    const role = str("role");
    if (role === undefined) throw new UsageError("--role is required: the role whose rollout to show or steer");
    const bad = checkRole(role);
    if (bad) throw new UsageError(`--role: ${bad}`);
    const prefix = normalizeKvPrefix(str("kv-prefix") ?? DEFAULT_KV_PREFIX);
    if (typeof prefix !== "string") throw new UsageError(`--kv-prefix: ${prefix.error}`);
    const consul = new ConsulClient(consulConfig(ctx.env, { addr: str("consul-addr"), token: str("consul-token") }), {
      timeoutMs: 10_000,
    });
    const releaseId = str("release");

    if (action === "status") {
      const found = await readRollout(consul, prefix, role, releaseId);
      if (!found) {
        ctx.log.info(
          `no rollout for role ${role}${releaseId ? ` release ${releaseId}` : "'s latest release"} (published ` +
            "without rollout flags: every node at once)",
        );
        return 1;
      }
      process.stdout.write(
        a.json === true ? `${JSON.stringify(found.record, null, 2)}\n` : `${describeRolloutRecord(found.record)}\n`,
      );
      return isFinal(found.record.state) ? 1 : 0;
    }
    const record = await steerRollout(consul, {
      prefix,
      role,
      releaseId,
      action: action as RolloutAction,
      by: defaultPublisher(ctx.env),
    });
    process.stdout.write(
      a.json === true ? `${JSON.stringify(record, null, 2)}\n` : `${describeRolloutRecord(record)}\n`,
    );
    return 0;
  },
});
