/**
 * A rollout: how one release of a role reaches its nodes (canaries, slots, a failure budget, a
 * health gate). Pure: the record's shape, its KV keys, parsing and the state rules that the
 * publisher, the agents and the fleet view share.
 *
 *   <prefix>/roles/<role>/rollouts/<release-id>          this record (JSON), written before the event
 *   <prefix>/roles/<role>/rollouts/<release-id>/slots/   the Consul semaphore of its switch slots
 *
 * One blocking query on `rollouts/<release-id>` (recursive) wakes on a change to either. A release
 * without a record deploys as before: every node at once.
 *
 * States: canary → running → done, or halted (the failure budget is spent), paused (by hand, or after
 * the canaries with `--canary-wait`), aborted (by hand). halted and aborted are final: no node starts
 * switching any more.
 */
import { jsonObject } from "./release.ts";

export const ROLLOUT_STATES = ["canary", "running", "paused", "halted", "done", "aborted"] as const;
export type RolloutState = (typeof ROLLOUT_STATES)[number];

/** What the user typed for --max-parallel / --max-failures: a count or a share of the role's nodes. */
export type Amount = { count: number } | { percent: number };

export interface RolloutRecord {
  release_id: string;
  role: string;
  state: RolloutState;
  /** Why it is halted, paused or aborted ("" otherwise). */
  reason: string;
  /** As typed: "2" or "25%"; null: no limit (every node at once). */
  max_parallel: string | null;
  /** Slots: max_parallel resolved against `nodes_total` when the rollout was written. */
  limit: number;
  canary: number;
  canary_wait: boolean;
  /** As typed; null: no budget (never halts). */
  max_failures: string | null;
  /** Failures allowed: max_failures resolved against `nodes_total`; null: no budget. */
  failure_budget: number | null;
  auto_rollback: boolean;
  /** Health gate: checks passing continuously this long (0: no gate) within the deadline. */
  health_grace_ms: number;
  health_deadline_ms: number;
  /** Nodes of the role in Consul's catalog when the rollout was written (null when unknown). */
  nodes_total: number | null;
  /** The role's release before this one (what --auto-rollback returns to), or null. */
  previous: { id: string; manifest_url: string } | null;
  /** The event that announces releases (auto-rollback fires the previous release with it). */
  event: string;
  /** The event's Consul filters as published (auto-rollback reaches the same nodes, no others). */
  event_filters: { node?: string; service?: string; tag?: string };
  /**
   * --switch-together: no node switches until every node has prepared, or until this deadline (ms after created_at).
   */
  switch_together: boolean;
  prepare_deadline_ms: number;
  /**
   * The TTL of each slot's Consul session: a pulldeploy killed while its Consul agent lives frees its
   * slot about 2 × this later. At least the Consul servers' `session_ttl_min` (10 s unless set lower).
   */
  slot_ttl_ms: number;
  /** Nodes that fetched, verified and extracted the release (each adds itself once). */
  prepared: string[];
  canaries: string[];
  healthy: string[];
  failed: { node: string; phase: string; error: string }[];
  created_at: string;
  updated_at: string;
}

/** A slot session's TTL unless the publisher chose one: Consul's default `session_ttl_min`. */
export const DEFAULT_SLOT_TTL_MS = 10_000;

export const rolloutKeys = {
  rollouts: (prefix: string, role: string) => `${prefix}/roles/${role}/rollouts/`,
  record: (prefix: string, role: string, id: string) => `${prefix}/roles/${role}/rollouts/${id}`,
  slots: (prefix: string, role: string, id: string) => `${prefix}/roles/${role}/rollouts/${id}/slots`,
};

/** `3` or `25%`: an Amount, or a message saying what is wrong. */
export function parseAmount(text: string): Amount | string {
  const t = text.trim();
  let m = /^(\d+)$/.exec(t);
  if (m) return { count: Number(m[1]) };
  m = /^(\d+(?:\.\d+)?)%$/.exec(t);
  if (m && Number(m[1]) <= 100) return { percent: Number(m[1]) };
  return `expected a number of nodes (3) or a share of the role's nodes (25%), got "${text}"`;
}

/**
 * An amount as a node count for a role of `nodes` nodes: a share rounds down, but slots never go
 * below 1 (`min` 1), while a failure budget may be 0.
 */
export function resolveAmount(a: Amount, nodes: number | null, min: number): number {
  if ("count" in a) return Math.max(min, a.count);
  if (nodes === null || nodes === 0) return min;
  return Math.max(min, Math.floor((nodes * a.percent) / 100));
}

/** States in which no node may start switching any more. */
export function isFinal(s: RolloutState): boolean {
  return s === "halted" || s === "aborted";
}

/** --switch-together: whether nodes may start switching (everyone prepared, or the deadline passed). */
export function allPrepared(r: RolloutRecord, now: Date): boolean {
  if (!r.switch_together) return true;
  if (r.nodes_total !== null && r.prepared.length >= r.nodes_total) return true;
  return now.getTime() >= Date.parse(r.created_at) + r.prepare_deadline_ms;
}

/** Canaries still counting towards `canary`: admitted and not failed. */
export function activeCanaries(r: RolloutRecord): string[] {
  const failed = new Set(r.failed.map((f) => f.node));
  return r.canaries.filter((n) => !failed.has(n));
}

/** The record after `node` became healthy: the canary phase ends when every canary is healthy. */
export function markHealthy(r: RolloutRecord, node: string, now: Date): RolloutRecord {
  const healthy = r.healthy.includes(node) ? r.healthy : [...r.healthy, node];
  let { state, reason } = r;
  if (state === "canary") {
    const ok = activeCanaries(r).filter((n) => healthy.includes(n)).length;
    if (ok >= r.canary)
      [state, reason] = r.canary_wait
        ? ["paused", `canaries healthy (${ok}); waiting for: pulldeploy rollout promote --role ${r.role}`]
        : ["running", ""];
  }
  if (state === "running" && r.nodes_total !== null && healthy.length + r.failed.length >= r.nodes_total)
    state = "done";
  return { ...r, state, reason, healthy, updated_at: now.toISOString() };
}

/** The record after `node` failed: past the failure budget the rollout halts (unless already final). */
export function markFailed(r: RolloutRecord, node: string, phase: string, error: string, now: Date): RolloutRecord {
  const failed = [...r.failed.filter((f) => f.node !== node), { node, phase, error: error.slice(0, 300) }];
  let { state, reason } = r;
  if (!isFinal(state) && r.failure_budget !== null && failed.length > r.failure_budget) {
    state = "halted";
    reason =
      `${failed.length} node${failed.length === 1 ? "" : "s"} failed, more than the budget of ` +
      `${r.failure_budget} (last: ${node} in ${phase}: ${error.slice(0, 200)})`;
  }
  return { ...r, state, reason, failed, updated_at: now.toISOString() };
}

/** Parse a stored record; a string lists what is wrong. */
export function parseRolloutRecord(json: string): RolloutRecord | string {
  const r = jsonObject(json);
  if (typeof r === "string") return r;
  const problems: string[] = [];
  const want = (k: string, ok: boolean, what: string) => {
    if (!ok) problems.push(`${k}: expected ${what}`);
  };
  const isStr = (x: unknown) => typeof x === "string";
  const isNat = (x: unknown) => typeof x === "number" && Number.isInteger(x) && x >= 0;
  for (const k of ["release_id", "role", "reason", "event", "created_at", "updated_at"])
    want(k, isStr(r[k]), "a string");
  // Added after the first records: absent reads as off / empty.
  r.switch_together ??= false;
  r.prepare_deadline_ms ??= 0;
  r.prepared ??= [];
  r.slot_ttl_ms ??= DEFAULT_SLOT_TTL_MS;
  r.event_filters ??= {};
  want("switch_together", typeof r.switch_together === "boolean", "true or false");
  want("prepare_deadline_ms", isNat(r.prepare_deadline_ms), "a whole number");
  want("slot_ttl_ms", isNat(r.slot_ttl_ms) && (r.slot_ttl_ms as number) >= 1, "a whole number of ms ≥ 1");
  want("prepared", Array.isArray(r.prepared) && (r.prepared as unknown[]).every(isStr), "a list of node names");
  want(
    "state",
    isStr(r.state) && (ROLLOUT_STATES as readonly string[]).includes(r.state as string),
    ROLLOUT_STATES.join(" | "),
  );
  for (const k of ["max_parallel", "max_failures"]) want(k, r[k] === null || isStr(r[k]), "a string or null");
  want("limit", isNat(r.limit) && (r.limit as number) >= 1, "a whole number ≥ 1 (0 would hold every node forever)");
  for (const k of ["canary", "health_grace_ms", "health_deadline_ms"]) want(k, isNat(r[k]), "a whole number");
  for (const k of ["failure_budget", "nodes_total"]) want(k, r[k] === null || isNat(r[k]), "a whole number or null");
  for (const k of ["canary_wait", "auto_rollback"]) want(k, typeof r[k] === "boolean", "true or false");
  for (const k of ["canaries", "healthy"])
    want(k, Array.isArray(r[k]) && (r[k] as unknown[]).every(isStr), "a list of node names");
  want(
    "failed",
    Array.isArray(r.failed) &&
      (r.failed as unknown[]).every(
        (f) => typeof f === "object" && f !== null && isStr((f as Record<string, unknown>).node),
      ),
    "a list of {node, phase, error}",
  );
  const p = r.previous as Record<string, unknown> | null;
  want(
    "previous",
    p === null || (typeof p === "object" && isStr(p.id) && isStr(p.manifest_url)),
    "{id, manifest_url} or null",
  );
  if (problems.length > 0) return problems.join("; ");
  return r as unknown as RolloutRecord;
}

export function renderRolloutRecord(r: RolloutRecord): string {
  return JSON.stringify(r);
}

/** One line for people: `canary (1 of 1 canaries) · 2 healthy, 1 failed of 4 · 2 slots`. */
export function describeRolloutRecord(r: RolloutRecord): string {
  const parts = [`rollout ${r.release_id}: ${r.state}${r.reason ? ` (${r.reason})` : ""}`];
  if (r.canary > 0) parts.push(`canaries ${r.canaries.join(", ") || "none yet"}`);
  const of = r.nodes_total !== null ? ` of ${r.nodes_total}` : "";
  parts.push(`${r.prepared.length} prepared, ${r.healthy.length} healthy, ${r.failed.length} failed${of}`);
  if (r.failed.length > 0) parts.push(`failed: ${r.failed.map((f) => `${f.node} (${f.phase})`).join(", ")}`);
  parts.push(`${r.max_parallel === null ? "no slot limit" : `${r.limit} slot${r.limit === 1 ? "" : "s"}`}`);
  if (r.failure_budget !== null) parts.push(`failure budget ${r.failure_budget}`);
  return parts.join(" · ");
}
