/** Records as tests write them into KV: every field set, the test overriding what it is about. */
import type { RolloutRecord } from "../../src/records/rollout.ts";

/** A running rollout of one slot over 3 nodes, nothing prepared yet. */
export function rolloutRecord(over: Partial<RolloutRecord> = {}): RolloutRecord {
  const at = over.created_at ?? "2026-12-04T00:00:00.000Z";
  return {
    release_id: "20261204T000000Z-0123456789ab",
    role: "web",
    state: "running",
    reason: "",
    max_parallel: "1",
    limit: 1,
    canary: 0,
    canary_wait: false,
    max_failures: null,
    failure_budget: null,
    auto_rollback: false,
    health_grace_ms: 0,
    health_deadline_ms: 0,
    nodes_total: 3,
    previous: null,
    event: "deploy",
    event_filters: {},
    switch_together: false,
    prepare_deadline_ms: 0,
    slot_ttl_ms: 10_000,
    prepared: [],
    canaries: [],
    healthy: [],
    failed: [],
    created_at: at,
    updated_at: at,
    ...over,
  };
}
