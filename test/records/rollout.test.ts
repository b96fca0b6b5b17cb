/** The rollout record's pure rules: amounts, the state machine's steps, parsing, steering. */
import { describe, expect, test } from "bun:test";
import { applyAction } from "../../src/publish/rollout.ts";
import {
  markFailed,
  markHealthy,
  parseAmount,
  parseRolloutRecord,
  renderRolloutRecord,
  resolveAmount,
  type RolloutRecord,
} from "../../src/records/rollout.ts";
import { rolloutRecord } from "../support/records.ts";

const at = new Date("2026-12-04T00:00:00Z");
const base: RolloutRecord = rolloutRecord({
  max_parallel: "2",
  limit: 2,
  max_failures: "1",
  failure_budget: 1,
  health_deadline_ms: 300000,
  nodes_total: 4,
  created_at: at.toISOString(),
  updated_at: at.toISOString(),
});

describe("amounts", () => {
  test.each([
    ["3", { count: 3 }],
    [" 25% ", { percent: 25 }],
    ["12.5%", { percent: 12.5 }],
    ["0", { count: 0 }],
  ])("%p parses", (text, want) => expect(parseAmount(text)).toEqual(want));
  test.each(["", "-1", "3 nodes", "101%", "%", "1e3", "0x10"])("%p is refused with what to type", (text) => {
    expect(parseAmount(text)).toBe(
      `expected a number of nodes (3) or a share of the role's nodes (25%), got "${text}"`,
    );
  });
  test.each([
    [{ count: 3 }, 10, 1, 3],
    [{ percent: 25 }, 10, 1, 2],
    [{ percent: 25 }, 3, 1, 1], // slots never below 1
    [{ percent: 25 }, 3, 0, 0], // a failure budget may be 0
    [{ percent: 50 }, null, 1, 1], // unknown node count
    [{ count: 0 }, 4, 1, 1],
  ] as const)("%p of %p nodes (min %p) is %p", (a, nodes, min, want) =>
    expect(resolveAmount(a, nodes, min)).toBe(want),
  );
});

describe("state steps", () => {
  test("failures within the budget keep it running; one more halts it with the reason; halting is sticky", () => {
    const one = markFailed(base, "web-1", "health", "health gate: web-1-http critical", at);
    expect(one).toMatchObject({ state: "running", failed: [{ node: "web-1", phase: "health" }] });
    const two = markFailed(one, "web-2", "post", "exit 1", at);
    expect(two.state).toBe("halted");
    expect(two.reason).toBe("2 nodes failed, more than the budget of 1 (last: web-2 in post: exit 1)");
    expect(markHealthy(two, "web-3", at).state).toBe("halted");
    // The same node failing twice counts once.
    expect(markFailed(one, "web-1", "post", "again", at).failed).toHaveLength(1);
    // No budget: never halts.
    let r: RolloutRecord = { ...base, failure_budget: null, max_failures: null };
    for (const n of ["a", "b", "c"]) r = markFailed(r, n, "post", "x", at);
    expect(r.state).toBe("running");
  });

  test("the canary phase ends when the canaries are healthy: running, or paused with --canary-wait; done when every node reported", () => {
    const c: RolloutRecord = { ...base, state: "canary", canary: 2, canaries: ["web-1", "web-2"] };
    expect(markHealthy(c, "web-1", at).state).toBe("canary");
    expect(markHealthy(markHealthy(c, "web-1", at), "web-2", at).state).toBe("running");
    const waiting = markHealthy(markHealthy({ ...c, canary_wait: true }, "web-1", at), "web-2", at);
    expect(waiting).toMatchObject({
      state: "paused",
      reason: "canaries healthy (2); waiting for: pulldeploy rollout promote --role web",
    });
    let r = { ...base, healthy: ["web-1", "web-2"], failed: [{ node: "web-3", phase: "post", error: "x" }] };
    r = markHealthy(r, "web-4", at);
    expect(r.state).toBe("done");
  });

  test("steering: what each action does from each state, and why not", () => {
    expect(applyAction(base, "pause", "me@h")).toEqual({ state: "paused", reason: "paused by me@h" });
    expect(applyAction({ ...base, state: "paused" }, "resume", "me@h")).toEqual({ state: "running", reason: "" });
    expect(applyAction({ ...base, state: "paused", canary: 1, canaries: ["a"] }, "resume", "me@h")).toEqual({
      state: "canary",
      reason: "",
    });
    expect(applyAction({ ...base, state: "canary" }, "promote", "me@h")).toEqual({ state: "running", reason: "" });
    expect(applyAction(base, "abort", "me@h")).toEqual({ state: "aborted", reason: "aborted by me@h" });
    expect(applyAction(base, "resume", "me@h")).toBe(`rollout of ${base.release_id} is running, not paused`);
    expect(applyAction(base, "promote", "me@h")).toBe(
      `rollout of ${base.release_id} is running: only a canary or paused rollout can be promoted`,
    );
    for (const state of ["halted", "aborted", "done"] as const)
      expect(applyAction({ ...base, state }, "resume", "me@h")).toBe(
        `rollout of ${base.release_id} is ${state}: nothing to resume`,
      );
  });
});

describe("parsing the stored record", () => {
  test("round trip", () => {
    expect(parseRolloutRecord(renderRolloutRecord(base))).toEqual(base);
  });
  test("every problem at once", () => {
    const bad = { ...base, state: "rolling", limit: -1, canaries: "web-1", previous: { id: 3 } };
    expect(parseRolloutRecord(JSON.stringify(bad))).toBe(
      "state: expected canary | running | paused | halted | done | aborted; limit: expected a whole number ≥ 1 " +
        "(0 would hold every node forever); canaries: expected a list of node names; previous: expected {id, " +
        "manifest_url} or null",
    );
    expect(parseRolloutRecord("[1]")).toBe("not a JSON object");
    // Records written before switch_together/prepared/slot_ttl_ms existed read as off / empty / 10 s.
    const {
      switch_together: _,
      prepared: __,
      prepare_deadline_ms: ___,
      event_filters: ____,
      slot_ttl_ms: _____,
      ...older
    } = base;
    expect(parseRolloutRecord(JSON.stringify(older))).toEqual(base);
    expect(parseRolloutRecord("{")).toMatch(/^not JSON: /);
  });
});
