/**
 * The publisher's side of a rollout: write its record before the event is fired (publish, fire), and
 * steer a running one by hand (`pulldeploy rollout pause|resume|promote|abort`). The record and its
 * rules: records/rollout.ts; the agents' side: agent/rollout.ts.
 */
import { ConsulError, type ConsulClient } from "../consul/client.ts";
import { goDuration } from "../consul/session.ts";
import { messageOf, PulldeployError, UsageError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { kvKeys, parseReleaseRecord, type ReleaseRecord } from "../records/release.ts";
import {
  DEFAULT_SLOT_TTL_MS,
  describeRolloutRecord,
  isFinal,
  parseAmount,
  parseRolloutRecord,
  renderRolloutRecord,
  resolveAmount,
  rolloutKeys,
  type RolloutRecord,
  type RolloutState,
} from "../records/rollout.ts";

/** The rollout flags, parsed. Absent altogether: no record, every node at once (as before). */
export interface RolloutSettings {
  maxParallel?: string;
  canary: number;
  canaryWait: boolean;
  maxFailures?: string;
  autoRollback: boolean;
  healthGraceMs: number;
  healthDeadlineMs: number;
  switchTogether: boolean;
  prepareDeadlineMs: number;
  /** The slots' session TTL; undefined: Consul's default minimum, 10 s. */
  slotTtlMs?: number;
}

export const DEFAULT_HEALTH_DEADLINE_MS = 5 * 60_000;
export const DEFAULT_PREPARE_DEADLINE_MS = 10 * 60_000;

/** Every problem with the rollout flags at once, as one UsageError. */
export function checkRolloutSettings(s: RolloutSettings): void {
  const problems: string[] = [];
  for (const [flag, v] of [
    ["--max-parallel", s.maxParallel],
    ["--max-failures", s.maxFailures],
  ] as const) {
    if (v === undefined) continue;
    const a = parseAmount(v);
    if (typeof a === "string") problems.push(`${flag}: ${a}`);
    else if (flag === "--max-parallel" && (("count" in a && a.count === 0) || ("percent" in a && a.percent === 0)))
      problems.push("--max-parallel: must be at least 1 (or above 0%)");
  }
  if (s.canaryWait && s.canary === 0) problems.push("--canary-wait needs --canary N (the canaries to wait after)");
  // 0 would be a session without a TTL (a killed agent's slot held until its node dies); below 1 s the
  // renewals (every TTL/3) are a request storm.
  if (s.slotTtlMs !== undefined && s.slotTtlMs < 1000)
    problems.push(`--slot-ttl: must be at least 1s (got ${goDuration(s.slotTtlMs)})`);
  if (s.healthDeadlineMs < s.healthGraceMs)
    problems.push(
      `--health-deadline (${s.healthDeadlineMs / 1000}s) must be at least --health-grace (${s.healthGraceMs / 1000}s)`,
    );
  if (problems.length > 0) throw new UsageError(problems.join("; "));
}

export function wantsRollout(s: RolloutSettings): boolean {
  return (
    s.maxParallel !== undefined ||
    s.canary > 0 ||
    s.maxFailures !== undefined ||
    s.autoRollback ||
    s.healthGraceMs > 0 ||
    s.switchTogether
  );
}

/**
 * Write the rollout record of `release` (before the role's `latest` moves: its current value is the
 * rollout's `previous`). The role's node count (catalog service: the event's service filter, else the role) turns
 * shares into counts.
 */
export async function writeRollout(
  consul: ConsulClient,
  o: {
    prefix: string;
    release: ReleaseRecord;
    settings: RolloutSettings;
    event: string;
    filters: { node?: string; service?: string; tag?: string };
    log: Logger;
    now?: Date;
  },
): Promise<RolloutRecord> {
  const { release: rel, settings: s } = o;
  const nodes = new Set((await consul.catalogService(o.filters.service ?? rel.role)).map((i) => i.node)).size;
  const { value } = await consul.kvGetText(kvKeys.latest(o.prefix, rel.role));
  const latest = value === null ? undefined : parseReleaseRecord(value);
  let previous =
    latest && typeof latest !== "string" && latest.id !== rel.id
      ? { id: latest.id, manifest_url: latest.manifest_url }
      : null;
  if (previous) {
    // A latest release whose rollout halted or was aborted is not one to return to: its own previous is.
    const theirs = await readRollout(consul, o.prefix, rel.role, previous.id);
    if (theirs && isFinal(theirs.record.state)) previous = theirs.record.previous;
  }
  if (s.slotTtlMs !== undefined) await checkSlotTtl(consul, s.slotTtlMs);
  const at = (o.now ?? new Date()).toISOString();
  const amount = (v: string | undefined) =>
    v === undefined ? undefined : (parseAmount(v) as Exclude<ReturnType<typeof parseAmount>, string>);
  const par = amount(s.maxParallel);
  const fail = amount(s.maxFailures);
  const record: RolloutRecord = {
    release_id: rel.id,
    role: rel.role,
    state: s.canary > 0 ? "canary" : "running",
    reason: "",
    max_parallel: s.maxParallel ?? null,
    limit: par ? resolveAmount(par, nodes, 1) : Math.max(nodes, 1),
    canary: s.canary,
    canary_wait: s.canaryWait,
    max_failures: s.maxFailures ?? null,
    failure_budget: fail ? resolveAmount(fail, nodes, 0) : null,
    auto_rollback: s.autoRollback,
    health_grace_ms: s.healthGraceMs,
    health_deadline_ms: s.healthDeadlineMs,
    nodes_total: nodes,
    previous,
    event: o.event,
    event_filters: Object.fromEntries(Object.entries(o.filters).filter(([, v]) => v !== undefined && v !== "")),
    switch_together: s.switchTogether,
    prepare_deadline_ms: s.prepareDeadlineMs,
    slot_ttl_ms: s.slotTtlMs ?? DEFAULT_SLOT_TTL_MS,
    prepared: [],
    canaries: [],
    healthy: [],
    failed: [],
    created_at: at,
    updated_at: at,
  };
  await consul.kvPut(rolloutKeys.record(o.prefix, rel.role, rel.id), renderRolloutRecord(record));
  o.log.info(`rollout: ${describeRolloutRecord(record)}${previous ? ` · previous ${previous.id}` : ""}`);
  return record;
}

/**
 * `--slot-ttl` is for Consul to judge (its servers' `session_ttl_min`, 10 s unless set lower): a
 * session with that TTL is made and destroyed here, so that a refused TTL fails the publish, before
 * the release is recorded or announced, rather than every node's deploy.
 */
async function checkSlotTtl(consul: ConsulClient, ttlMs: number): Promise<void> {
  let id: string | undefined;
  try {
    const { json } = await consul.request("PUT", "/v1/session/create", {
      body: JSON.stringify({ Name: "pulldeploy slot-ttl check", TTL: goDuration(ttlMs), Behavior: "delete" }),
    });
    id = (json as { ID?: string } | null)?.ID;
  } catch (err) {
    if (err instanceof ConsulError && err.status !== undefined) {
      throw new PulldeployError(
        `--slot-ttl ${goDuration(ttlMs)}: Consul refuses it (${messageOf(err)}); give at least its servers' ` +
          "session_ttl_min (10s unless set lower)",
      );
    }
    throw err;
  }
  if (id !== undefined) await consul.sessionDestroy(id);
}

/** The role's rollout of `releaseId`, else of its latest release; null when there is none. */
export async function readRollout(
  consul: ConsulClient,
  prefix: string,
  role: string,
  releaseId?: string,
): Promise<{ record: RolloutRecord; modifyIndex: number } | null> {
  let id = releaseId;
  if (id === undefined) {
    const { value } = await consul.kvGetText(kvKeys.latest(prefix, role));
    const latest = value === null ? undefined : parseReleaseRecord(value);
    if (latest === undefined || typeof latest === "string") return null;
    id = latest.id;
  }
  const key = rolloutKeys.record(prefix, role, id);
  const { value, entry } = await consul.kvGetText(key);
  if (value === null || !entry) return null;
  const r = parseRolloutRecord(value);
  if (typeof r === "string") throw new PulldeployError(`${key}: unreadable rollout record (${r})`, "consul");
  return { record: r, modifyIndex: entry.modifyIndex };
}

export const ROLLOUT_ACTIONS = ["pause", "resume", "promote", "abort"] as const;
export type RolloutAction = (typeof ROLLOUT_ACTIONS)[number];

/** The state an action leads to from `r`, or why it can't. */
export function applyAction(
  r: RolloutRecord,
  action: RolloutAction,
  by: string,
): { state: RolloutState; reason: string } | string {
  if (isFinal(r.state) || r.state === "done") return `rollout of ${r.release_id} is ${r.state}: nothing to ${action}`;
  switch (action) {
    case "pause":
      return r.state === "paused"
        ? `rollout of ${r.release_id} is paused already`
        : { state: "paused", reason: `paused by ${by}` };
    case "resume":
      if (r.state !== "paused") return `rollout of ${r.release_id} is ${r.state}, not paused`;
      // Back to the canary phase while canaries are still missing; promote skips it.
      return {
        state: r.canary > 0 && r.healthy.filter((n) => r.canaries.includes(n)).length < r.canary ? "canary" : "running",
        reason: "",
      };
    case "promote":
      if (r.state !== "paused" && r.state !== "canary")
        return `rollout of ${r.release_id} is ${r.state}: only a canary or paused rollout can be promoted`;
      return { state: "running", reason: "" };
    case "abort":
      return { state: "aborted", reason: `aborted by ${by}` };
  }
}

/** Apply an action by CAS (re-read and re-checked on a race). */
export async function steerRollout(
  consul: ConsulClient,
  o: { prefix: string; role: string; releaseId?: string; action: RolloutAction; by: string; now?: () => Date },
): Promise<RolloutRecord> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const found = await readRollout(consul, o.prefix, o.role, o.releaseId);
    if (!found)
      throw new PulldeployError(
        `no rollout for role ${o.role}${o.releaseId ? ` release ${o.releaseId}` : "'s latest release"} (it was ` +
          "published without rollout flags)",
        "consul",
      );
    const next = applyAction(found.record, o.action, o.by);
    if (typeof next === "string") throw new PulldeployError(next, "consul");
    const record = { ...found.record, ...next, updated_at: (o.now ?? (() => new Date()))().toISOString() };
    if (
      await consul.kvPut(rolloutKeys.record(o.prefix, o.role, record.release_id), renderRolloutRecord(record), {
        cas: found.modifyIndex,
      })
    )
      return record;
  }
  throw new PulldeployError(`rollout of role ${o.role}: too many concurrent updates; try again`, "consul");
}
