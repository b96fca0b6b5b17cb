/**
 * Benchmark of delta transfers (issue 11): the content index and chunk packs against the full
 * archive, on a generated app (default 20,000 files, 240 MB; bench-lib's generator, 1% of the files
 * changed in v2), served by a loopback HTTP origin in this process (Range, a byte counter, and an
 * optional shared rate cap: the "small throttling proxy").
 *
 *   publish   v1 into an empty store (full), then v2 (1% changed): bytes uploaded (archive, packs,
 *             index) and wall time, against `publish --no-delta`
 *   redeploy  an agent with v1 (sync_strategy: release) deploys v2 by delta and by the full archive
 *             (the manifest without the delta keys): bytes served by the origin, wall time, peak RSS
 *   fleet     N agents (default 20) at once against the origin capped at 100 MB/s: time until all
 *             have v2, delta vs full
 *   big file  one 50 MB file with 1 MB changed in the middle: bytes fetched by the delta
 *
 * Contenders alternate, `sync` before each timed run, medians of --reps; each agent's CPU time
 * (user + system) is reported beside its wall time. Floors (issue 11): delta bytes ≤ 3% of the
 * archive, time ≤ 0.5× the archive's, fleet ≥ 5× faster, peak RSS ≤ 80 MB on every path. Exit code 1
 * if a floor is missed.
 *
 * The agents deploy manifests without their `role:` line: with a role an agent reports to Consul KV,
 * and with no Consul here every run, delta or archive, would wait the same ~2 s for it at the end
 * (measured: a 0.2 s delta redeploy took 2.3 s), which is not the transfer being measured.
 *
 *   bun scripts/bench-delta.ts [--files 20000] [--size-mb 240] [--reps 5] [--fleet-reps 3] [--agents 20] [--cap-mb 100] [--big-mb 50] [--work .bench/delta]
 *
 * `--big-gb` (make bench's BENCH_ARGS, for the other two scripts' 1 GB archive) is accepted and ignored.
 */
import * as fs from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { benchApp, measure, median, randomBytes, writeApp, type Measured } from "./bench-lib.ts";

const { values: flags } = parseArgs({
  options: {
    files: { type: "string", default: "20000" },
    "size-mb": { type: "string", default: "240" },
    reps: { type: "string", default: "5" },
    "fleet-reps": { type: "string", default: "3" },
    agents: { type: "string", default: "20" },
    "cap-mb": { type: "string", default: "100" },
    "big-mb": { type: "string", default: "50" },
    work: { type: "string", default: ".bench/delta" },
    bin: { type: "string", default: "dist/pulldeploy" },
    seed: { type: "string", default: "1" },
    "big-gb": { type: "string" },
  },
  strict: true,
});

const FLOORS = { bytesShare: 0.03, timeRatio: 0.5, fleetSpeedup: 5, rssMb: 80 };
const MB = 2 ** 20;
const work = resolve(flags.work);
const reps = Number(flags.reps);
const fleetReps = Number(flags["fleet-reps"]);
const agents = Number(flags.agents);
const capBytes = Number(flags["cap-mb"]) * 1e6;
const spec = benchApp(flags, 0.01);
const log = (msg: string) => process.stderr.write(`[bench] ${msg}\n`);

fs.mkdirSync(work, { recursive: true });
const bin = join(work, "pulldeploy");
fs.copyFileSync(flags.bin, bin);
fs.chmodSync(bin, 0o755);
const tmp = join(work, "tmp");
fs.rmSync(tmp, { recursive: true, force: true });
fs.mkdirSync(tmp);

// ------------------------------------------------------------------ trees

const apps = join(work, `app-${spec.files}-${flags["size-mb"]}-${spec.seed}`);
for (const v of [1, 2] as const) {
  const dir = join(apps, `v${v}`);
  if (!fs.existsSync(join(dir, ".done"))) {
    fs.rmSync(dir, { recursive: true, force: true });
    log(`generating v${v}: ${spec.files} files, ${flags["size-mb"]} MB`);
    writeApp(dir, spec, v);
    fs.writeFileSync(join(dir, ".done"), "");
  }
}
// The marker is not part of the app.
const excludeDone = ["--exclude", ".done"];

// ------------------------------------------------------------------ origin

let served = 0;
let rate = Infinity;
let nextFree = 0;
/** One bucket for every connection: the origin's uplink. */
async function take(n: number) {
  if (rate === Infinity) return;
  const now = performance.now();
  const start = Math.max(now, nextFree);
  nextFree = start + (n / rate) * 1000;
  if (nextFree - now > 1) await Bun.sleep(nextFree - now);
}
let root = "";
const server = Bun.serve({
  port: 0,
  hostname: "127.0.0.1",
  idleTimeout: 120,
  async fetch(req) {
    const path = join(root, decodeURIComponent(new URL(req.url).pathname));
    const file = Bun.file(path);
    if (!(await file.exists())) return new Response("not found", { status: 404 });
    const size = file.size;
    const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.get("range") ?? "");
    const start = m ? Number(m[1]) : 0;
    const end = m && m[2] !== "" ? Math.min(Number(m[2]), size - 1) : size - 1;
    const fd = fs.openSync(path, "r");
    let pos = start;
    const body = new ReadableStream<Uint8Array>({
      async pull(c) {
        if (pos > end) {
          fs.closeSync(fd);
          c.close();
          return;
        }
        const n = Math.min(256 * 1024, end + 1 - pos);
        const buf = new Uint8Array(n);
        fs.readSync(fd, buf, 0, n, pos);
        pos += n;
        await take(n);
        served += n;
        c.enqueue(buf);
      },
      cancel() {
        fs.closeSync(fd);
      },
    });
    const headers: Record<string, string> = { "content-length": String(end + 1 - start) };
    if (m) headers["content-range"] = `bytes ${start}-${end}/${size}`;
    return new Response(body, { status: m ? 206 : 200, headers });
  },
});
const base = `http://127.0.0.1:${server.port}`;

// ------------------------------------------------------------------ publish

const sizeOf = (dir: string): number => {
  let n = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true }))
    n += e.isDirectory() ? sizeOf(join(dir, e.name)) : fs.statSync(join(dir, e.name)).size;
  return n;
};
const deltaSize = (store: string) => (fs.existsSync(join(store, "web/delta")) ? sizeOf(join(store, "web/delta")) : 0);
const sync = () => Bun.spawnSync(["sync"]);
const DEST = join(work, "dest");

async function publish(store: string, version: string, delta = true): Promise<Measured & { url: string }> {
  sync();
  const m = await measure(
    [
      bin,
      "publish",
      join(apps, version),
      "--to",
      `file://${store}`,
      "--role",
      "web",
      "--dest",
      DEST,
      "--sync-strategy",
      "release",
      "--no-kv",
      "--no-event",
      ...excludeDone,
      ...(delta ? [] : ["--no-delta"]),
    ],
    { pollRss: true, env: { ...process.env, TMPDIR: tmp } },
  );
  return { ...m, url: m.stdout.trim() };
}

interface PublishRow {
  seconds: number[];
  archive: number;
  delta: number;
  rss: number;
}
const rows: Record<string, PublishRow> = {};
const row = (k: string) => (rows[k] ??= { seconds: [], archive: 0, delta: 0, rss: 0 });
let store = "";
let v1Url = "";
let v2Url = "";
for (let r = 0; r < Math.max(1, Math.min(reps, 3)); r++) {
  for (const delta of [true, false]) {
    const s = join(work, `store-${delta ? "delta" : "plain"}-${r}`);
    fs.rmSync(s, { recursive: true, force: true });
    const full = await publish(s, "v1", delta);
    const before = { all: sizeOf(s), delta: deltaSize(s) };
    const one = await publish(s, "v2", delta);
    const after = { all: sizeOf(s), delta: deltaSize(s) };
    const k = delta ? "delta" : "archive only";
    row(`full, ${k}`).seconds.push(full.seconds);
    row(`full, ${k}`).archive = before.all - before.delta;
    row(`full, ${k}`).delta = before.delta;
    row(`full, ${k}`).rss = Math.max(row(`full, ${k}`).rss, full.peakRss);
    row(`1% changed, ${k}`).seconds.push(one.seconds);
    row(`1% changed, ${k}`).archive = after.all - after.delta - (before.all - before.delta);
    row(`1% changed, ${k}`).delta = after.delta - before.delta;
    row(`1% changed, ${k}`).rss = Math.max(row(`1% changed, ${k}`).rss, one.peakRss);
    if (delta && r === 0) {
      store = s;
      v1Url = full.url;
      v2Url = one.url;
    } else if (!(delta && r === 0)) fs.rmSync(s, { recursive: true, force: true });
  }
}
log(`publish: ${JSON.stringify(rows)}`);

// ------------------------------------------------------------------ manifests over HTTP

root = store;
const local = (url: string) => new URL(url).pathname;
function httpManifest(url: string, name: string, dest: string, delta: boolean): string {
  let text = fs
    .readFileSync(local(url), "utf8")
    .replaceAll(`file://${store}`, base)
    .replace(/^dest: .*$/m, `dest: ${dest}`)
    .replace(/^role: .*\n/m, "");
  if (!delta) text = text.replace(/^delta_index.*\n/gm, "");
  fs.writeFileSync(join(store, `${name}.yml`), text);
  return `${base}/${name}.yml`;
}
const archiveSize = (url: string) =>
  fs.statSync(
    local(
      fs
        .readFileSync(local(url), "utf8")
        .match(/^src: (.*)$/m)![1]!
        .replace(base, `file://${store}`),
    ),
  ).size;

async function agent(manifestUrl: string): Promise<Measured & { bytes: number }> {
  const state = fs.mkdtempSync(join(tmp, "state-"));
  const before = served;
  const m = await measure([bin, "agent"], {
    stdin: `${manifestUrl}\n`,
    env: { ...process.env, TMPDIR: tmp, PULLDEPLOY_STATE_DIR: state },
    pollRss: true,
  });
  fs.rmSync(state, { recursive: true, force: true });
  if (!m.stderr.includes("deploy succeeded")) throw new Error(`agent did not succeed:\n${m.stderr}`);
  return { ...m, bytes: served - before };
}

/**
 * A dest holding v1, deployed by the agent (untimed) as a host would have it: not a copy, since a
 * copy's inodes are not the recorded ones and a hard-linked copy is an unaccounted name of each file
 * (either way the agent would rightly hash every file).
 */
let seeded: Measured = { peakRss: 0 } as Measured;
const fullArchive = archiveSize(v2Url);
let seq = 0;
async function copyDest(to: string): Promise<void> {
  fs.rmSync(to, { recursive: true, force: true });
  const m = await agent(httpManifest(v1Url, `v1-seed-${seq++}`, to, true));
  if (m.peakRss > seeded.peakRss) seeded = m;
}

// ------------------------------------------------------------------ single redeploy

const single: Record<"delta" | "archive", { seconds: number[]; cpu: number[]; bytes: number[]; rss: number }> = {
  delta: { seconds: [], cpu: [], bytes: [], rss: 0 },
  archive: { seconds: [], cpu: [], bytes: [], rss: 0 },
};
for (let r = 0; r < reps; r++) {
  for (const k of r % 2 === 0 ? (["delta", "archive"] as const) : (["archive", "delta"] as const)) {
    const dest = join(work, `dest-${k}`);
    await copyDest(dest);
    const url = httpManifest(v2Url, `v2-${k}-${r}`, dest, k === "delta");
    sync();
    const m = await agent(url);
    if (k === "delta" && !m.stderr.includes("delta: fetched")) throw new Error(`the delta was not used:\n${m.stderr}`);
    single[k].seconds.push(m.seconds);
    single[k].cpu.push(m.cpuSeconds);
    single[k].bytes.push(m.bytes);
    single[k].rss = Math.max(single[k].rss, m.peakRss);
    fs.rmSync(dest, { recursive: true, force: true });
  }
}

// ------------------------------------------------------------------ fleet

const fleet: Record<"delta" | "archive", number[]> = { delta: [], archive: [] };
/** Per rep, the agents' mean CPU time (user + system). */
const fleetCpu: Record<"delta" | "archive", number[]> = { delta: [], archive: [] };
let fleetRss = 0;
for (let r = 0; r < fleetReps; r++) {
  for (const k of r % 2 === 0 ? (["delta", "archive"] as const) : (["archive", "delta"] as const)) {
    const urls: string[] = [];
    for (let i = 0; i < agents; i++) {
      const dest = join(work, `fleet-${i}`);
      await copyDest(dest);
      urls.push(httpManifest(v2Url, `fleet-${k}-${r}-${i}`, dest, k === "delta"));
    }
    sync();
    rate = capBytes;
    nextFree = 0;
    const started = performance.now();
    const runs = await Promise.all(urls.map((u) => agent(u)));
    fleet[k].push((performance.now() - started) / 1000);
    fleetCpu[k].push(runs.reduce((n, m) => n + m.cpuSeconds, 0) / runs.length);
    if (k === "delta" && !runs.every((m) => m.stderr.includes("delta: fetched")))
      throw new Error("a fleet agent did not use the delta");
    rate = Infinity;
    fleetRss = Math.max(fleetRss, ...runs.map((m) => m.peakRss));
    for (let i = 0; i < agents; i++) fs.rmSync(join(work, `fleet-${i}`), { recursive: true, force: true });
  }
}

// ------------------------------------------------------------------ one big file

const bigMb = Number(flags["big-mb"]);
let big: { bytes: number; archive: number; rss: number } | undefined;
if (bigMb > 0) {
  const bigDir = join(work, "big");
  fs.rmSync(bigDir, { recursive: true, force: true });
  const data = randomBytes(7, bigMb * MB);
  const src1 = join(bigDir, "v1");
  const src2 = join(bigDir, "v2");
  fs.mkdirSync(src1, { recursive: true });
  fs.mkdirSync(src2, { recursive: true });
  fs.writeFileSync(join(src1, "data.bin"), data);
  const changed = new Uint8Array(data);
  changed.set(randomBytes(8, MB), Math.floor((bigMb * MB) / 2));
  fs.writeFileSync(join(src2, "data.bin"), changed);
  for (const f of [join(src1, "data.bin"), join(src2, "data.bin")]) fs.utimesSync(f, 1_700_000_000, 1_700_000_000);
  const bigStore = join(bigDir, "store");
  const pub = async (dir: string) => {
    const m = await measure(
      [
        bin,
        "publish",
        dir,
        "--to",
        `file://${bigStore}`,
        "--role",
        "web",
        "--dest",
        DEST,
        "--sync-strategy",
        "release",
        "--no-kv",
        "--no-event",
      ],
      { pollRss: true },
    );
    return m.stdout.trim();
  };
  const b1 = await pub(src1);
  const b2 = await pub(src2);
  const savedStore = store;
  store = bigStore;
  root = bigStore;
  const dest = join(bigDir, "dest");
  await agent(httpManifest(b1, "big-v1", dest, true));
  const m = await agent(httpManifest(b2, "big-v2", dest, true));
  big = { bytes: m.bytes, archive: archiveSize(b2), rss: m.peakRss };
  store = savedStore;
  root = savedStore;
}
server.stop(true);

// ------------------------------------------------------------------ report

const mb = (n: number) => `${(n / MB).toFixed(1)} MB`;
const out: string[] = [];
let failed = false;
const check = (ok: boolean, what: string) => {
  out.push(`  ${ok ? "PASS" : "FAIL"}  ${what}`);
  if (!ok) failed = true;
};
out.push(
  `delta transfers: ${spec.files} files, ${flags["size-mb"]} MB (1% changed in v2); archive ` +
    `${mb(fullArchive)}; reps ${reps}, fleet reps ${fleetReps}`,
);
out.push("", "publish (bytes stored in the store; median wall time):");
for (const [k, r] of Object.entries(rows))
  out.push(
    `  ${k.padEnd(26)} archive ${mb(r.archive).padStart(9)}  delta ${mb(r.delta).padStart(9)}  ` +
      `${median(r.seconds).toFixed(2)}s  peak RSS ${mb(r.rss)}`,
  );
const d = { s: median(single.delta.seconds), b: median(single.delta.bytes) };
const a = { s: median(single.archive.seconds), b: median(single.archive.bytes) };
out.push("", "1%-changed redeploy (release strategy, one agent, uncapped loopback origin):");
const cpu = (k: "delta" | "archive") => median(single[k].cpu).toFixed(2);
out.push(
  `  delta    ${mb(d.b).padStart(9)} fetched  ${d.s.toFixed(2)}s (CPU ${cpu("delta")}s)  peak RSS ${mb(single.delta.rss)}`,
);
out.push(
  `  archive  ${mb(a.b).padStart(9)} fetched  ${a.s.toFixed(2)}s (CPU ${cpu("archive")}s)  peak RSS ` +
    `${mb(single.archive.rss)}`,
);
const fd = median(fleet.delta);
const fa = median(fleet.archive);
out.push(
  "",
  `fleet: ${agents} agents at once, origin capped at ${flags["cap-mb"]} MB/s: delta ${fd.toFixed(2)}s, archive ` +
    `${fa.toFixed(2)}s (${(fa / fd).toFixed(1)}x); CPU per agent: delta ${median(fleetCpu.delta).toFixed(2)}s, ` +
    `archive ${median(fleetCpu.archive).toFixed(2)}s`,
);
if (big)
  out.push(
    "",
    `one ${bigMb} MB file, 1 MB changed in the middle: delta fetched ${mb(big.bytes)} (archive ` +
      `${mb(big.archive)}), peak RSS ${mb(big.rss)}`,
  );
out.push("", "floors (issue 11):");
check(
  d.b <= FLOORS.bytesShare * fullArchive,
  `redeploy bytes: delta ${((100 * d.b) / fullArchive).toFixed(2)}% of the archive (≤ ${FLOORS.bytesShare * 100}%)`,
);
check(
  d.s <= FLOORS.timeRatio * a.s,
  `redeploy time: delta ${(d.s / a.s).toFixed(2)}x the archive's (≤ ${FLOORS.timeRatio}x)`,
);
check(fa / fd >= FLOORS.fleetSpeedup, `fleet: ${(fa / fd).toFixed(1)}x faster (≥ ${FLOORS.fleetSpeedup}x)`);
const rss = Math.max(
  seeded.peakRss,
  single.delta.rss,
  single.archive.rss,
  fleetRss,
  big?.rss ?? 0,
  ...Object.values(rows).map((r) => r.rss),
);
check(
  rss <= FLOORS.rssMb * MB,
  `peak RSS on every path: ${mb(rss)} (≤ ${FLOORS.rssMb} MB; first deploys ${mb(seeded.peakRss)}, delta ` +
    `${mb(single.delta.rss)}, archive ${mb(single.archive.rss)}, fleet ${mb(fleetRss)}, big file ${mb(big?.rss ?? 0)}, ` +
    `publish ${mb(Math.max(...Object.values(rows).map((r) => r.rss)))})`,
);
console.log(out.join("\n"));
process.exitCode = failed ? 1 : 0;
