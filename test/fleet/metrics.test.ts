/**
 * The dashboard's /metrics text from KV anyone with KV write can shape: escaped, valid, only well-formed rollout
 * records counted.
 */
import { describe, expect, test } from "bun:test";
import type { KvEntry } from "../../src/consul/client.ts";
import { dashboardRoles } from "../../src/fleet/dashboard/state.ts";
import { fleetMetrics, rolloutsOf } from "../../src/fleet/metrics.ts";
import { lintExposition } from "../../src/prometheus.ts";

const enc = new TextEncoder();
const entry = (key: string, value: string, modifyIndex = 1): KvEntry => ({
  key,
  value: enc.encode(value),
  flags: 0n,
  modifyIndex,
  createIndex: 1,
  lockIndex: 0,
});

describe("fleetMetrics", () => {
  test("hostile rollout ids and states are escaped; non-JSON, non-string states and nested keys are ignored; the newest record wins", () => {
    const entries = [
      entry("p/roles/web/rollouts/a", JSON.stringify({ state: 'x"} 1\nevil_metric 1' }), 5),
      entry("p/roles/web/rollouts/b", JSON.stringify({ state: "older" }), 4),
      entry("p/roles/web/rollouts/c", JSON.stringify({ state: 7 }), 9),
      entry("p/roles/web/rollouts/d", "{", 10),
      entry("p/roles/web/rollouts/e/f", JSON.stringify({ state: "nested" }), 11),
      entry("p/roles/api/rollouts/r", "null", 3),
    ];
    expect([...rolloutsOf(entries, "p")]).toEqual([["web", { id: "a", state: 'x"} 1\nevil_metric 1' }]]);
    const now = new Date("2026-12-04T12:00:00Z");
    const state = {
      index: 1,
      generated_at: now.toISOString(),
      prefix: "p",
      consul: { address: "x", ok: false, error: "down" },
      roles: dashboardRoles({ entries, prefix: "p", catalogs: new Map(), now }),
    };
    const text = fleetMetrics(state, entries, now);
    expect(lintExposition(text)).toEqual([]);
    expect(text).toContain('pulldeploy_rollout_info{role="web",rollout_id="a",state="x\\"} 1\\nevil_metric 1"} 1\n');
    expect(text).not.toMatch(/^evil_metric/m);
    expect(text).toContain("pulldeploy_consul_up 0\n");
    expect(text).not.toContain("pulldeploy_latest_release"); // no latest: the family is left out
  });
});
