/**
 * `make fuzz`: the archive and manifest fuzzers of test/fuzz for longer than `make test` runs them.
 * FUZZ_SEED (default: random, printed) and FUZZ_RUNS (default 5000); FUZZ_CASE replays one case.
 * Exits 1 at the first broken invariant, printing the seed and case to replay it.
 */
import * as fs from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fuzzArchives, fuzzManifests } from "../test/fuzz/run.ts";

const seed = process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : Math.floor(Math.random() * 2 ** 31);
const runs = Number(process.env.FUZZ_RUNS ?? 5000);
const only = process.env.FUZZ_CASE !== undefined ? Number(process.env.FUZZ_CASE) : undefined;
if (!Number.isInteger(seed) || !Number.isInteger(runs) || runs < 1) {
  console.error(
    `fuzz: FUZZ_SEED and FUZZ_RUNS must be integers (got ${process.env.FUZZ_SEED}, ${process.env.FUZZ_RUNS})`,
  );
  process.exit(2);
}
const work = fs.mkdtempSync(join(tmpdir(), "pd-fuzz-"));
console.log(`fuzz: FUZZ_SEED=${seed} FUZZ_RUNS=${runs}${only !== undefined ? ` FUZZ_CASE=${only}` : ""}`);
const t0 = performance.now();
try {
  const s = await fuzzArchives({ seed, runs, work: join(work, "w"), only });
  const secs = ((performance.now() - t0) / 1000).toFixed(1);
  console.log(
    `archives: ${s.runs} runs in ${secs}s, ${s.extracted} extracted, ${s.refused} refused; slowest case ` +
      `${s.maxCaseMs.toFixed(0)} ms; RSS growth ${(s.rssGrowth / 2 ** 20).toFixed(1)} MiB`,
  );
  for (const [reason, n] of [...s.reasons].sort((a, b) => b[1] - a[1]))
    console.log(`  ${String(n).padStart(6)}  ${reason}`);
  const m = fuzzManifests(seed, only !== undefined ? 0 : runs);
  console.log(`manifests: ${m.runs} runs, ${m.parsed} parsed, ${m.refused} refused`);
} catch (err) {
  console.error((err as Error).message);
  process.exitCode = 1;
} finally {
  fs.rmSync(work, { recursive: true, force: true });
}
