/** The shared time helpers: one duration format that reads back as a flag, and the abortable sleep. */
import { describe, expect, test } from "bun:test";
import { formatDuration, sleep } from "../src/time.ts";
import { parseDuration } from "../src/units.ts";

describe("formatDuration", () => {
  const rows: [number, string][] = [
    [0, "0ms"],
    [20, "20ms"],
    [999, "999ms"],
    [1000, "1s"],
    [1500, "1.5s"],
    [59_000, "59s"],
    [60_000, "1m"],
    [90_000, "90s"],
    [600_000, "10m"],
  ];
  for (const [ms, text] of rows) {
    test(`${ms} → ${text}, and back`, () => {
      expect(formatDuration(ms)).toBe(text);
      expect(parseDuration(text)).toBe(ms);
    });
  }
});

describe("sleep", () => {
  test("an abort ends it at once, without an error", async () => {
    const ac = new AbortController();
    const started = performance.now();
    const slept = sleep(60_000, ac.signal);
    ac.abort(new Error("stop"));
    await expect(slept).resolves.toBeUndefined();
    expect(performance.now() - started).toBeLessThan(1000);
  });

  test("an already aborted signal does not wait", async () => {
    const started = performance.now();
    await sleep(60_000, AbortSignal.abort());
    expect(performance.now() - started).toBeLessThan(1000);
  });

  test("without an abort it waits its time", async () => {
    const started = performance.now();
    await sleep(30, new AbortController().signal);
    expect(performance.now() - started).toBeGreaterThanOrEqual(25);
  });
});
