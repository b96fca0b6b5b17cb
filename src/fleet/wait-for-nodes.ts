/**
 * `--wait` of publish, fire and rollback: after the event, watch the role's nodes until each has
 * reported the release (`waitForRollout`), logging progress, and say how to go on watching when
 * interrupted (the rollout itself goes on).
 */
import { ConsulClient, consulConfig } from "../consul/client.ts";
import type { Env } from "../env.ts";
import { messageOf } from "../errors.ts";
import type { Logger } from "../log.ts";
import { DEFAULT_KV_PREFIX } from "../records/release.ts";
import { formatDuration } from "../time.ts";
import { readRolloutView, renderRollout } from "./rollout.ts";
import { describeRollout, type RolloutProgress, waitForRollout } from "./wait.ts";

export interface NodesWaitOptions {
  env: Env;
  /** `--consul-addr`, `--consul-token` (the environment fills in the rest). */
  consul: { addr?: string; token?: string };
  prefix: string;
  role: string;
  /** The catalog service whose nodes make the role: `--service`, else the role. */
  service?: string;
  releaseId: string;
  timeoutMs: number;
  /** Stops the wait (not the rollout). */
  signal: AbortSignal;
  /** Progress lines (quiet with --quiet). */
  log: Logger;
  /** A result that is not a success, and the interruption, are told here even then. */
  errLog: Logger;
}

/** True when every node reported the release as a success; false on a failure, a timeout, no nodes, or `signal`. */
export async function waitForNodes(o: NodesWaitOptions): Promise<boolean> {
  const { log, role } = o;
  const consul = new ConsulClient(consulConfig(o.env, o.consul));
  const service = o.service ?? role;
  log.info(
    `wait: for every node of service "${service}" to report release ${o.releaseId} (timeout ` +
      `${formatDuration(o.timeoutMs)})`,
  );
  let last: RolloutProgress | undefined;
  let result;
  try {
    result = await waitForRollout({
      consul,
      prefix: o.prefix,
      role,
      service: o.service,
      releaseId: o.releaseId,
      timeoutMs: o.timeoutMs,
      signal: o.signal,
      onProgress: (p) => {
        last = p;
        log.info(`wait: ${p.line}`);
      },
    });
  } catch (err) {
    if (!o.signal.aborted) throw err;
    const done = last ? `${last.done}/${last.total} nodes done` : "no node done yet";
    o.errLog.info(
      `wait: stopped waiting (${messageOf(o.signal.reason)}), ${done}; release ${o.releaseId} is published and ` +
        `announced, the rollout goes on: ${statusCommand(o)}`,
    );
    return false;
  }
  for (const line of describeRollout(result)) (result.ok ? log : o.errLog).info(line);
  // A staged rollout (--max-parallel, --canary…): its state, and why it halted.
  const staged = await readRolloutView(consul, o.prefix, role, o.releaseId).catch(() => null);
  for (const line of staged ? renderRollout(staged) : []) (result.ok ? log : o.errLog).info(`wait: ${line}`);
  return result.ok;
}

function statusCommand(o: NodesWaitOptions): string {
  const parts = ["pulldeploy status --role", o.role];
  if (o.service !== undefined) parts.push("--service", o.service);
  if (o.prefix !== DEFAULT_KV_PREFIX) parts.push("--kv-prefix", o.prefix);
  if (o.consul.addr) parts.push("--consul-addr", o.consul.addr);
  return parts.join(" ");
}
