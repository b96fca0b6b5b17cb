/**
 * Benchmark: `pulldeploy publish` against the pipeline a user would script to do the same,
 *
 *   tar czf F -C APP . && sha256sum F && <upload F with the AWS SDK: multipart, 4 parts in flight>
 *
 * both into the loopback S3 server (s3rver, running in this process for both), on the benchmark app
 * of scripts/bench-lib.ts (default 20,000 files, 240 MB, 10% incompressible). Prints median wall
 * times, the ratio, publish's peak RSS, and a publish of a 1 GiB tree, with PASS/FAIL against the
 * floors of issue 3 (ratio ≤ 0.6, peak RSS ≤ 150 MB). Exit code 1 if a floor is missed.
 *
 *   bun scripts/bench-publish.ts [--files 20000] [--size-mb 240] [--big-gb 1] [--reps 3] [--work .bench]
 *
 * The upload half of the pipeline is this script run as `--upload-file F s3://bucket/key`.
 *
 * `--baseline-bin PATH` also times another executable's publish (contender `baseline`, alternating
 * with `publish`), with PASS/FAIL against ≤ 1.05× its median (issue 8); `make bench BENCH_BASELINE=<commit>`.
 *
 * `--no-delta` publishes this checkout's releases without the delta index and packs (`publish
 * --no-delta`): like for like against a baseline from before delta transfers (issue 11), which
 * writes neither; the delta's own cost is the difference between a run with and one without.
 */
import * as fs from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { benchApp, measure, median, sh, writeApp, type AppSpec, type Measured } from "./bench-lib.ts";

const { values: flags } = parseArgs({
  options: {
    files: { type: "string", default: "20000" },
    "size-mb": { type: "string", default: "240" },
    "big-gb": { type: "string", default: "1" },
    reps: { type: "string", default: "3" },
    work: { type: "string", default: ".bench" },
    bin: { type: "string", default: "dist/pulldeploy" },
    seed: { type: "string", default: "1" },
    "upload-file": { type: "string" },
    "baseline-bin": { type: "string" },
    "no-delta": { type: "boolean", default: false },
  },
  allowPositionals: true,
  strict: true,
});

const MB = 2 ** 20;

if (flags["upload-file"] !== undefined) {
  await uploadFile(flags["upload-file"], process.argv.at(-1)!);
  process.exit(0);
}

/** The upload a user would script with the SDK: multipart, 8 MiB parts, 4 in flight (like `aws s3 cp`). */
async function uploadFile(path: string, url: string): Promise<void> {
  const { createS3Client, parseS3Url } = await import("../src/store/s3client.ts");
  const s3 = await import("@aws-sdk/client-s3");
  const { bucket, key } = parseS3Url(url);
  const client = await createS3Client(process.env);
  const size = fs.statSync(path).size;
  const partSize = 8 * MB;
  const { UploadId } = await client.send(new s3.CreateMultipartUploadCommand({ Bucket: bucket, Key: key }));
  const fd = fs.openSync(path, "r");
  const parts: { PartNumber: number; ETag: string }[] = [];
  let next = 0;
  const worker = async () => {
    for (;;) {
      const n = next++;
      if (n * partSize >= size) return;
      const buf = Buffer.allocUnsafe(Math.min(partSize, size - n * partSize));
      fs.readSync(fd, buf, 0, buf.length, n * partSize);
      const r = await client.send(
        new s3.UploadPartCommand({ Bucket: bucket, Key: key, UploadId, PartNumber: n + 1, Body: buf }),
      );
      parts.push({ PartNumber: n + 1, ETag: r.ETag! });
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
  parts.sort((a, b) => a.PartNumber - b.PartNumber);
  await client.send(
    new s3.CompleteMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId, MultipartUpload: { Parts: parts } }),
  );
  fs.closeSync(fd);
  client.destroy();
}

const FLOORS = { ratio: 0.6, rssMb: 150 };
const work = resolve(flags.work, "publish");
const reps = Number(flags.reps);
const seed = Number(flags.seed);
const spec = benchApp(flags, 0);
const bigGb = Number(flags["big-gb"]);
const bigSpec: AppSpec = { files: 2000, bytes: bigGb * 2 ** 30, randomShare: 0.5, seed: seed + 100, changeShare: 0 };
const log = (msg: string) => process.stderr.write(`[bench] ${msg}\n`);

fs.mkdirSync(work, { recursive: true });
// A snapshot of the binary: other builds in the same tree must not swap it mid-run.
const bin = join(work, "pulldeploy");
fs.copyFileSync(flags.bin, bin);
fs.chmodSync(bin, 0o755);
let baselineBin: string | undefined;
if (flags["baseline-bin"] !== undefined) {
  if (!fs.existsSync(flags["baseline-bin"])) {
    console.error(
      `bench-publish: --baseline-bin ${flags["baseline-bin"]}: no such file; build one with ` +
        "scripts/build-baseline.sh COMMIT, or run make bench BENCH_BASELINE=COMMIT",
    );
    process.exit(2);
  }
  baselineBin = join(work, "pulldeploy-baseline");
  fs.copyFileSync(flags["baseline-bin"], baselineBin);
  fs.chmodSync(baselineBin, 0o755);
}
const BASELINE_FLOOR = 1.05;
const tmp = join(work, "tmp");
fs.rmSync(tmp, { recursive: true, force: true });
fs.mkdirSync(tmp);

/** Generate the tree unless a previous run left it with the same parameters. */
function app(name: string, s: AppSpec): string {
  const tree = join(work, "apps", name);
  const stamp = `${tree}.json`;
  const key = JSON.stringify({ ...s, generator: 3 });
  if (fs.existsSync(tree) && fs.existsSync(stamp) && fs.readFileSync(stamp, "utf8") === key) return tree;
  log(`generating ${name}: ${s.files} files, ${(s.bytes / 1e6).toFixed(0)} MB`);
  fs.rmSync(tree, { recursive: true, force: true });
  const t = performance.now();
  writeApp(tree, s, 1);
  fs.writeFileSync(stamp, key);
  log(`  written in ${((performance.now() - t) / 1000).toFixed(1)}s`);
  return tree;
}

const tree = app("v1", spec);
const bigTree = bigGb > 0 ? app(`big${bigGb}g`, bigSpec) : undefined;

const { startS3Server } = await import("../test/support/s3-server.ts");
const s3 = await startS3Server();
await s3.createBucket("bench");
const env = { PATH: process.env.PATH, HOME: process.env.HOME, TMPDIR: tmp, ...s3.env };
const settle = () => sh("sync");

/** `baseline`: publish run with the --baseline-bin executable. */
type Tool = "pipeline" | "publish" | "baseline";
let counter = 0;
async function once(tool: Tool, dir: string): Promise<Measured> {
  const n = ++counter;
  if (tool !== "pipeline") {
    return measure(
      [
        tool === "baseline" ? baselineBin! : bin,
        "publish",
        dir,
        "--to",
        `s3://bench/pub${n}`,
        "--role",
        "web",
        "--dest",
        "/srv/web",
        "--no-kv",
        "--no-event",
        ...(tool === "publish" && flags["no-delta"] ? ["--no-delta"] : []),
      ],
      { env, pollRss: true },
    );
  }
  const file = join(tmp, "app.tar.gz");
  // Each step's end time on stdout (`date +%s.%N`), then the archive's size.
  const script = [
    "date +%s.%N",
    `tar czf '${file}' -C '${dir}' .`,
    "date +%s.%N",
    `sha256sum '${file}' > '${file}.sha256'`,
    "date +%s.%N",
    `'${process.execPath}' '${import.meta.path}' --upload-file '${file}' s3://bench/base${n}/app.tar.gz`,
    "date +%s.%N",
    `stat -c %s '${file}'`,
    `rm -f '${file}' '${file}.sha256'`,
  ].join(" && ");
  return measure(["sh", "-c", script], { env });
}

const times = { pipeline: [] as number[], publish: [] as number[], baseline: [] as number[] };
const rss: number[] = [];
const baselineRss: number[] = [];
/** CPU time (user + system) of each publish run: steadier than wall time on a loaded machine. */
const cpu = { pipeline: [] as number[], publish: [] as number[], baseline: [] as number[] };
const sizes = { pipeline: 0, publish: 0, baseline: 0 };
/** publish logs `uploaded s3://…tar.gz: 110.7 MB (…)`; the pipeline prints the file's size. */
const sizeOf = (tool: Tool, m: Measured) =>
  tool !== "pipeline"
    ? Number(/tar\.gz: ([\d.]+) MB/.exec(m.stderr)?.[1] ?? NaN) * 1e6
    : Number(m.stdout.trim().split("\n").at(-1));
const steps = { tar: [] as number[], sha256sum: [] as number[], upload: [] as number[] };
for (let rep = 0; rep < reps; rep++) {
  const tools: Tool[] = baselineBin === undefined ? ["publish", "pipeline"] : ["publish", "baseline", "pipeline"];
  // The tools take turns at going first.
  const order = tools.map((_, i) => tools[(i + rep) % tools.length]!);
  for (const tool of order) {
    await settle();
    const m = await once(tool, tree);
    times[tool].push(m.seconds);
    cpu[tool].push(m.cpuSeconds);
    sizes[tool] = sizeOf(tool, m);
    if (tool === "publish") rss.push(m.peakRss);
    else if (tool === "baseline") baselineRss.push(m.peakRss);
    else {
      const [t0, t1, t2, t3] = m.stdout.trim().split("\n").map(Number);
      steps.tar.push(t1! - t0!);
      steps.sha256sum.push(t2! - t1!);
      steps.upload.push(t3! - t2!);
    }
    log(
      `rep ${rep + 1}/${reps}: ${tool} ` +
        `${m.seconds.toFixed(2)}s${tool !== "pipeline" ? `, peak RSS ${(m.peakRss / MB).toFixed(1)} MiB` : ""}`,
    );
  }
}

let big: Measured | undefined;
if (bigTree) {
  await settle();
  big = await once("publish", bigTree);
  log(`${bigGb} GiB tree: publish ${big.seconds.toFixed(2)}s, peak RSS ${(big.peakRss / MB).toFixed(1)} MiB`);
}
await s3.stop();

// --- report --------------------------------------------------------------------------------------

const mb = (b: number) => (b / MB).toFixed(1);
const p = median(times.pipeline);
const a = median(times.publish);
const peak = Math.max(...rss);
const lines: string[] = [];
const verdicts: [string, boolean][] = [];
lines.push(
  `${spec.files} files, ${(spec.bytes / 1e6).toFixed(0)} MB (${spec.randomShare * 100}% random) to s3rver on ` +
    `loopback; median of ${reps} runs, tools alternating; ${new Date().toISOString().slice(0, 10)}, ` +
    `${navigator.hardwareConcurrency} cores`,
);
lines.push("");
lines.push("| run | pipeline median s | publish median s | ratio | publish peak RSS MB |");
lines.push("|---|---:|---:|---:|---:|");
lines.push(
  `| ${spec.files} files, ${(spec.bytes / 1e6).toFixed(0)} MB | ${p.toFixed(2)} | ${a.toFixed(2)} | ` +
    `${(a / p).toFixed(2)} | ${mb(peak)} |`,
);
verdicts.push([`ratio ${(a / p).toFixed(2)} ≤ ${FLOORS.ratio}`, a / p <= FLOORS.ratio]);
verdicts.push([`peak RSS ${mb(peak)} MB ≤ ${FLOORS.rssMb} MB`, peak / MB <= FLOORS.rssMb]);
if (big) {
  lines.push(
    `| ${bigGb} GiB tree (${bigSpec.files} files, ${bigSpec.randomShare * 100}% random) | – | ` +
      `${big.seconds.toFixed(2)} | – | ${mb(big.peakRss)} |`,
  );
  verdicts.push([
    `${bigGb} GiB tree: peak RSS ${mb(big.peakRss)} MB ≤ ${FLOORS.rssMb} MB`,
    big.peakRss / MB <= FLOORS.rssMb,
  ]);
}
if (baselineBin !== undefined) {
  const b = median(times.baseline);
  const range = (xs: number[]) => `${Math.min(...xs).toFixed(2)}–${Math.max(...xs).toFixed(2)}`;
  lines.push("");
  lines.push(
    `Issue 8: publish of this checkout (${flags.bin}) against the baseline (${flags["baseline-bin"]}), same ` +
      "runs, alternating:",
  );
  lines.push("");
  const [ca, cb] = [median(cpu.publish), median(cpu.baseline)];
  lines.push(
    "| run | publish median s (range) | baseline median s (range) | ratio | publish CPU s | baseline CPU s | " +
      "CPU ratio | publish peak RSS MiB | baseline peak RSS MiB |",
  );
  lines.push("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
  lines.push(
    `| ${spec.files} files, ${(spec.bytes / 1e6).toFixed(0)} MB | ${a.toFixed(2)} (${range(times.publish)}) | ` +
      `${b.toFixed(2)} (${range(times.baseline)}) | ${(a / b).toFixed(3)} | ${ca.toFixed(3)} | ${cb.toFixed(3)} ` +
      `| ${(ca / cb).toFixed(3)} | ${mb(peak)} | ${mb(Math.max(...baselineRss))} |`,
  );
  verdicts.push([
    `vs baseline, publish: ${a.toFixed(2)} s / ${b.toFixed(2)} s = ${(a / b).toFixed(3)} ≤ ${BASELINE_FLOOR}`,
    a / b <= BASELINE_FLOOR,
  ]);
}
lines.push("");
lines.push(
  `Pipeline: \`tar czf\` ${median(steps.tar).toFixed(2)} s + \`sha256sum\` ` +
    `${median(steps.sha256sum).toFixed(2)} s + a multipart upload of the file with the same SDK (8 MiB parts, 4 ` +
    `in flight) ${median(steps.upload).toFixed(2)} s (medians).`,
);
lines.push(
  `Archive: ${mb(sizes.pipeline)} MiB from \`tar czf\` (GNU gzip -6), ${mb(sizes.publish)} MiB from publish ` +
    "(libdeflate -6, one gzip member per MiB).",
);
lines.push("Peak RSS is the publish process's VmHWM (polled).");
lines.push("");
for (const [what, ok] of verdicts) lines.push(`${ok ? "PASS" : "FAIL"}  ${what}`);
const report = lines.join("\n");
console.log(report);
fs.writeFileSync(join(work, "results.md"), `${report}\n`);
if (verdicts.some(([, ok]) => !ok)) process.exitCode = 1;
