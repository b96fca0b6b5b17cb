/**
 * Benchmark: the release strategy's 1%-changed redeploy with several releases kept, this checkout
 * against another executable (`--baseline-bin`, e.g. `.bench/baseline/<commit>/pulldeploy` from
 * scripts/build-baseline.sh). bench-agent's release scenarios keep two releases; with the default
 * `keep_releases: 5` each hard-linked file has up to five names, and the link-dest vouching (every
 * other name of a linked file must be the same path in another release) looks in each of them.
 *
 * On the benchmark app (bench-lib; default 5,000 files, 60 MB, 1% of the files changed between v1
 * and v2), each contender deploys v1, v2, v1, v2, … into its own dest under a new release id each
 * time (file:// source, no download cost), so that after `--keep` deploys every redeploy links from
 * the previous release with `--keep` releases on disk and prunes the oldest. Contenders alternate,
 * `sync` before each timed run; the report gives medians of wall and CPU time (user + system) and
 * peak RSS, and PASS/FAIL against ≤ 1.05× the baseline's CPU (issue 8). Exit code 1 if missed.
 *
 *   bun scripts/bench-releases.ts --baseline-bin PATH [--files 5000] [--size-mb 60] [--reps 11] [--keep 5] [--work .bench/releases]
 */
import * as fs from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { benchApp, measure, median, sh, writeApp, type Measured } from "./bench-lib.ts";

const { values: flags } = parseArgs({
  options: {
    files: { type: "string", default: "5000" },
    "size-mb": { type: "string", default: "60" },
    reps: { type: "string", default: "11" },
    keep: { type: "string", default: "5" },
    work: { type: "string", default: ".bench/releases" },
    bin: { type: "string", default: "dist/pulldeploy" },
    "baseline-bin": { type: "string" },
    seed: { type: "string", default: "1" },
  },
  strict: true,
});
if (flags["baseline-bin"] === undefined) {
  console.error("bench-releases: --baseline-bin PATH is required (scripts/build-baseline.sh COMMIT builds one)");
  process.exit(2);
}
const FLOOR = 1.05;
const MB = 2 ** 20;
const work = resolve(flags.work);
const reps = Number(flags.reps);
const keep = Number(flags.keep);
const spec = benchApp(flags, 0.01);
const log = (msg: string) => process.stderr.write(`[bench] ${msg}\n`);
const contenders = { current: resolve(flags.bin), baseline: resolve(flags["baseline-bin"]) };

fs.rmSync(work, { recursive: true, force: true });
fs.mkdirSync(join(work, "tmp"), { recursive: true });
const archives: Record<1 | 2, { tarball: string; sum: string }> = {} as never;
for (const version of [1, 2] as const) {
  const tree = join(work, `v${version}`);
  log(`generating v${version}: ${spec.files} files, ${(spec.bytes / 1e6).toFixed(0)} MB`);
  writeApp(tree, spec, version);
  const tarball = join(work, `v${version}.tar.gz`);
  await sh(`tar czf '${tarball}' -C '${tree}' .`);
  fs.rmSync(tree, { recursive: true, force: true });
  archives[version] = { tarball, sum: (await sh(`sha256sum '${tarball}'`)).split(" ")[0]! };
}

let seq = 0;
async function deploy(name: keyof typeof contenders, version: 1 | 2): Promise<Measured> {
  const a = archives[version];
  const manifest = join(work, `m-${++seq}.yml`);
  fs.writeFileSync(
    manifest,
    `src: file://${a.tarball}\nchecksum: ${a.sum}\ndest: ${join(work, `dest-${name}`)}\n` +
      `sync_strategy: release\nrelease_id: r${seq}\nkeep_releases: ${keep}\n`,
  );
  const m = await measure([contenders[name], "agent"], {
    stdin: `file://${manifest}\n`,
    env: { ...process.env, TMPDIR: join(work, "tmp"), PULLDEPLOY_STATE_DIR: join(work, `state-${name}`) },
    pollRss: true,
  });
  if (!m.stderr.includes("deploy succeeded")) throw new Error(`${name} did not deploy:\n${m.stderr}`);
  return m;
}

// Fill each dest up to `keep` releases, untimed.
for (const name of Object.keys(contenders) as (keyof typeof contenders)[])
  for (let i = 0; i < keep; i++) await deploy(name, i % 2 === 0 ? 1 : 2);

const runs: Record<keyof typeof contenders, Measured[]> = { current: [], baseline: [] };
for (let r = 0; r < reps; r++) {
  const order: (keyof typeof contenders)[] = r % 2 === 0 ? ["current", "baseline"] : ["baseline", "current"];
  for (const name of order) {
    await sh("sync");
    const m = await deploy(name, (keep + r) % 2 === 0 ? 1 : 2);
    runs[name].push(m);
    log(`rep ${r + 1}/${reps} ${name}: ${m.seconds.toFixed(2)} s, CPU ${m.cpuSeconds.toFixed(3)} s`);
  }
}
const stat = (name: keyof typeof contenders) => ({
  wall: median(runs[name].map((m) => m.seconds)),
  cpu: median(runs[name].map((m) => m.cpuSeconds)),
  rss: Math.max(...runs[name].map((m) => m.peakRss)) / MB,
});
const cur = stat("current");
const base = stat("baseline");
console.log(
  `Release strategy, 1%-changed redeploy with ${keep} releases kept (${spec.files} files, ` +
    `${(fs.statSync(archives[1].tarball).size / MB).toFixed(1)} MiB archive), medians of ${reps}, alternating:\n\n` +
    "| contender | wall s | CPU s | peak RSS MiB |\n|---|---:|---:|---:|\n" +
    `| ${flags.bin} | ${cur.wall.toFixed(3)} | ${cur.cpu.toFixed(3)} | ${cur.rss.toFixed(1)} |\n` +
    `| ${flags["baseline-bin"]} | ${base.wall.toFixed(3)} | ${base.cpu.toFixed(3)} | ${base.rss.toFixed(1)} |\n`,
);
const ratio = cur.cpu / base.cpu;
const ok = ratio <= FLOOR;
console.log(
  `${ok ? "PASS" : "FAIL"}  CPU ${cur.cpu.toFixed(3)} s / ${base.cpu.toFixed(3)} s = ${ratio.toFixed(3)} ≤ ${FLOOR} ` +
    `(wall ${(cur.wall / base.wall).toFixed(3)})`,
);
process.exit(ok ? 0 : 1);
