/** Blocking queries, pure: the index rule, the query parameters and how long a request may be held. */
import { describe, expect, test } from "bun:test";
import { blockingHoldMs, blockingQuery, nextIndex } from "../../src/consul/blocking.ts";

describe("nextIndex: the blocking-query index rule", () => {
  const rows: [prev: number, got: number, next: number][] = [
    [0, 14, 14], // first answer
    [14, 14, 14], // wait ran out, nothing changed
    [14, 22, 22], // a change
    [22, 5, 0], // went backwards (Consul restarted, snapshot restored): start over
    [0, 0, 1], // never block on 0
  ];
  for (const [prev, got, next] of rows) {
    test(`${prev} then ${got} → ${next}`, () => expect(nextIndex(prev, got)).toBe(next));
  }
});

describe("blockingQuery: parameters only with an index", () => {
  test("no index or index 0: no parameters (the read answers at once)", () => {
    expect(blockingQuery({})).toEqual({});
    expect(blockingQuery({ index: 0, wait: "30s" })).toEqual({});
  });
  test("an index: the index and the wait", () => {
    expect(blockingQuery({ index: 14, wait: "30s" })).toEqual({ index: 14, wait: "30s" });
    expect(blockingQuery({ index: 14 })).toEqual({ index: 14, wait: undefined });
  });
});

describe("blockingHoldMs: the wait plus Consul's wait/16 jitter, capped at 10 minutes", () => {
  const rows: [wait: string | undefined, ms: number | string][] = [
    [undefined, 5 * 60_000 * (17 / 16)], // Consul's default wait
    ["30s", 30_000 * (17 / 16)],
    ["16s", 17_000],
    ["1h", 10 * 60_000 * (17 / 16)], // Consul caps the wait at 10 minutes
    ["soon", 'not a duration: "soon" (use e.g. 30, 30s, 500ms, 2m)'],
  ];
  for (const [wait, ms] of rows) test(`${wait ?? "(none)"} → ${ms}`, () => expect(blockingHoldMs(wait)).toBe(ms));
});
