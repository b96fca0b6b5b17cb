/**
 * The fleet's words (format.ts), and the same functions as the dashboard page gets them: the
 * /format.js module built from their source, imported as a real ES module, must answer alike
 * (a function that leaned on anything outside itself would fail there).
 */
import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { FORMAT_JS } from "../../src/fleet/dashboard/assets.js";
import * as format from "../../src/fleet/format.ts";
import { tempDir } from "../support/helpers.ts";

const AGES: [number | null, string][] = [
  [null, "-"],
  [0, "0s"],
  [59_999, "59s"],
  [60_000, "1m"],
  [3_599_999, "59m"],
  [3_600_000, "1h"],
  [47 * 3_600_000, "47h"],
  [48 * 3_600_000, "2d"],
];
const TOOK: [number, string][] = [
  [850, "850 ms"],
  [3900, "3.9 s"],
  [59_949, "59.9 s"],
  [125_000, "2 min 5 s"],
];
const ROWS: [{ status: string; behind: boolean; in_catalog: boolean }, string | null][] = [
  [{ status: "failure", behind: true, in_catalog: false }, "failed"],
  [{ status: "never-reported", behind: false, in_catalog: true }, "never-reported"],
  [{ status: "success", behind: true, in_catalog: false }, "behind"],
  [{ status: "success", behind: false, in_catalog: false }, "not-in-catalog"],
  [{ status: "deploying", behind: false, in_catalog: true }, null],
];

function checkAll(f: typeof format) {
  for (const [ms, text] of AGES) expect(f.formatAge(ms)).toBe(text);
  for (const [ms, text] of TOOK) expect(f.formatTook(ms)).toBe(text);
  for (const [row, why] of ROWS) expect(f.attention(row)).toBe(why as never);
  expect([f.statusText("never-reported"), f.statusText("success")]).toEqual(["never reported", "success"]);
}

describe("the fleet's words", () => {
  test("ages (largest whole unit), durations, attention (most serious first), statuses", () => checkAll(format));

  test("/format.js, the page's copy, is an ES module of the same functions that answers the same", async () => {
    await using d = tempDir();
    const file = join(d.path, "format.mjs");
    fs.writeFileSync(file, FORMAT_JS);
    const served = (await import(file)) as typeof format;
    expect(Object.keys(served).sort()).toEqual(["attention", "formatAge", "formatTook", "statusText"]);
    checkAll(served);
  });
});
