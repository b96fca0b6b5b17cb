/**
 * The fuzzer with a fixed seed and a bounded count, in `make test` (a few seconds); `make fuzz` runs
 * it longer with other seeds (FUZZ_SEED, FUZZ_RUNS). See run.ts for the invariants checked per case.
 */
import { expect, test } from "bun:test";
import { join } from "node:path";
import { tempDir } from "../support/helpers.ts";
import { fuzzArchives, fuzzManifests } from "./run.ts";

const SEED = 20261204;

test("300 mutated archives through the agent's unpack path: nothing escapes, limits hold, one-line refusals, flat memory", async () => {
  await using d = tempDir("pd-fuzz-");
  const stats = await fuzzArchives({ seed: SEED, runs: 300, work: join(d.path, "w"), deadlineMs: 5000 });
  expect(stats.runs).toBe(300);
  // The mutations reach past the checksum into the parser: many kinds of refusal, and some archives still extract.
  expect(stats.extracted).toBeGreaterThan(10);
  expect(stats.reasons.size).toBeGreaterThan(10);
  for (const kind of ["unsafe entry", "bad tar header", "bad pax header", "truncated archive"])
    expect(stats.reasons.get(kind)).toBeGreaterThan(0);
});

test("300 mutated manifests through the parser: a manifest or a one-line ManifestError", () => {
  const r = fuzzManifests(SEED, 300);
  expect(r.parsed).toBeGreaterThan(0);
  expect(r.refused).toBeGreaterThan(0);
});
