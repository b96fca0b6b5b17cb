/**
 * Benchmark: `pulldeploy agent` against the shell pipeline it replaces
 *
 *   curl -sf -o F URL && echo "SUM  F" | sha256sum -c && mkdir T && tar xzf F -C T && rsync -a --delete T/ D/ && rm -rf T F
 *
 * on a generated app (default 20,000 files, 240 MB, 10% incompressible) served over loopback HTTP:
 * a first deploy into an empty dest, a redeploy with 1% of the files changed, a no-change redeploy.
 * Prints median wall times, ratios, the agent's peak RSS (also on a 1 GB archive) and startup
 * times, with PASS/FAIL against the floors of issue 2. Exit code 1 if a floor is missed.
 *
 * The same scenarios run a third time with the agent's `sync_strategy: release` (releases/<id>, a
 * `current` symlink, unchanged files hard-linked from the previous release), compared with the agent's
 * default `rsync` strategy (which hard-links files equal to dest's) and with that strategy under
 * `--no-hardlinks` (every file written first: stretcher's I/O), in time and disk writes, and
 * `pulldeploy rollback --dest` is timed on the
 * result: the floors of issue 5. Disk writes are `write_bytes` of /proc/self/io of this process across
 * a run, which holds the agent's and rsync's once they are reaped (bench-lib's `selfIo`; checked at
 * start with a dd).
 *
 *   bun scripts/bench-agent.ts [--files 20000] [--size-mb 240] [--big-gb 1] [--reps 3] [--work .bench/agent] [--fs DIR]
 *
 * `--startup-runs N` (100) times `--version` and the agent's `[]` start-up N times each.
 *
 * `--big-gb 0` skips the 1 GB archive (a quick check: `--files 2000 --size-mb 24 --big-gb 0 --reps 1`).
 *
 * `--fs DIR` puts the temp dirs and dests (everything the tools write) on another file system. Where
 * the disk is ext4 without a journal (file creation there scans recently deleted inodes and is slow
 * and erratic; the report warns), measure on a journaled one too, e.g. as root:
 *
 *   truncate -s 4G .bench/fs.img && mkfs.ext4 -q .bench/fs.img && mkdir -p /mnt/bench && mount -o loop .bench/fs.img /mnt/bench
 *   bun scripts/bench-agent.ts --fs /mnt/bench
 *
 * Generated trees and archives are cached in the work dir, keyed by their parameters.
 *
 * `--baseline-bin PATH` also times another executable (e.g. the one before a change; `make bench
 * BENCH_BASELINE=<commit>` builds it with scripts/build-baseline.sh) in the same run: contenders
 * `baseline` and `baseline-release` run exactly like `pulldeploy` and `release`, alternating with them,
 * and `--version`, the `[]` start-up and `rollback --dest` are timed for both, interleaved. The report
 * adds a table of this checkout's medians over the baseline's with PASS/FAIL against ≤ 1.05× (issue 8:
 * the hardening must not cost more than 5%).
 *
 * `--dest-owner USER` puts the dests in a directory USER owns (as on a server where the app owns its
 * directory): the agent then reaches them through pinned /proc/self/fd/N paths, its slower path; by
 * default every directory on the way is root's and it uses plain paths.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { benchApp, measure, median, sh, writeApp, type AppSpec, type Measured } from "./bench-lib.ts";

const { values: flags } = parseArgs({
  options: {
    files: { type: "string", default: "20000" },
    "size-mb": { type: "string", default: "240" },
    "big-gb": { type: "string", default: "1" },
    reps: { type: "string", default: "3" },
    work: { type: "string", default: ".bench/agent" },
    fs: { type: "string" },
    bin: { type: "string", default: "dist/pulldeploy" },
    seed: { type: "string", default: "1" },
    "baseline-bin": { type: "string" },
    "dest-owner": { type: "string" },
    "startup-runs": { type: "string", default: "100" },
  },
  strict: true,
});

const FLOORS = { ratio: 0.85, rssMb: 80, versionMs: 30, emptyMs: 50 };
/** Issue 5: release strategy vs rsync strategy on the 1%-changed redeploy; a local rollback. */
const RELEASE_FLOORS = { timeRatio: 0.5, writesRatio: 0.5, rollbackMs: 100 };
/** Issue 8: this checkout over the baseline executable, per scenario and start-up. */
const BASELINE_FLOOR = 1.05;
const ROLLBACK_RUNS = 10;
/**
 * Runs of `--version` and of the agent's `[]` start-up (each executable's, interleaved). These take 3–8 ms:
 * the median of 20 moved by up to 0.09 in the ratio between runs; of 100 it costs ~2 s more per executable.
 */
const STARTUP_RUNS = Number(flags["startup-runs"]);
if (!Number.isInteger(STARTUP_RUNS) || STARTUP_RUNS < 1) {
  console.error(`bench-agent: --startup-runs ${flags["startup-runs"]}: give a whole number of runs, e.g. 100`);
  process.exit(2);
}
const MB = 2 ** 20;
const work = resolve(flags.work);
const reps = Number(flags.reps);
const seed = Number(flags.seed);
const spec = benchApp(flags, 0.01);
const bigGb = Number(flags["big-gb"]);
const bigSpec: AppSpec = { files: 2000, bytes: bigGb * 2 ** 30, randomShare: 0.5, seed: seed + 100, changeShare: 0 };

fs.mkdirSync(work, { recursive: true });
// A snapshot of the binary: other builds in the same tree must not swap it mid-run.
const bin = join(work, "pulldeploy");
fs.copyFileSync(flags.bin, bin);
fs.chmodSync(bin, 0o755);
let baselineBin: string | undefined;
if (flags["baseline-bin"] !== undefined) {
  if (!fs.existsSync(flags["baseline-bin"])) {
    console.error(
      `bench-agent: --baseline-bin ${flags["baseline-bin"]}: no such file; build one with ` +
        "scripts/build-baseline.sh COMMIT, or run make bench BENCH_BASELINE=COMMIT",
    );
    process.exit(2);
  }
  baselineBin = join(work, "pulldeploy-baseline");
  fs.copyFileSync(flags["baseline-bin"], baselineBin);
  fs.chmodSync(baselineBin, 0o755);
}
const scratch = resolve(flags.fs ?? work);
const tmp = join(scratch, "tmp");
fs.rmSync(tmp, { recursive: true, force: true });
fs.mkdirSync(tmp);
const scratchFs = await describeFs(scratch);
const www = join(work, "www");
fs.mkdirSync(www, { recursive: true });

const log = (msg: string) => process.stderr.write(`[bench] ${msg}\n`);

/**
 * The file system the tools write to, e.g. "/dev/vda ext4, no journal". On ext4 without a journal
 * every create scans the inodes deleted in the last minutes (ext4's recently_deleted()), so each run's
 * deletes slow the next run's creates several-fold, unevenly: such numbers say little about servers.
 */
async function describeFs(dir: string): Promise<{ text: string; noJournal: boolean }> {
  const [source = "?", type = "?"] = (await sh(`findmnt -n -o SOURCE,FSTYPE -T '${dir}'`)).trim().split(/\s+/);
  if (type !== "ext4") return { text: `${source} ${type}`, noJournal: false };
  const dev = source.split("/").pop()!;
  const noJournal = !fs.readdirSync("/proc/fs/jbd2").some((e) => e.startsWith(`${dev}-`));
  return { text: `${source} ext4${noJournal ? ", no journal" : ""}`, noJournal };
}
const loadBefore = os.loadavg()[0]!;

/** The disk-write measurement must see a grandchild's writes (a dd under sh), or its numbers mean nothing. */
async function checkWriteAccounting(): Promise<string> {
  const file = join(tmp, "io-check");
  const m = await measure([
    "sh",
    "-c",
    `sh -c 'dd if=/dev/zero of="${file}" bs=1M count=16 status=none'; rm -f '${file}'`,
  ]);
  const mib = m.writeBytes / MB;
  if (!Number.isFinite(mib) || Math.abs(mib - 16) > 0.5)
    throw new Error(
      `disk writes: a dd of 16 MiB in a grandchild measured ${mib.toFixed(1)} MiB in /proc/self/io write_bytes`,
    );
  return (
    `a dd of 16 MiB under sh measured ${mib.toFixed(1)} MiB written, ${(m.cancelledWriteBytes / MB).toFixed(1)} ` +
    "MiB cancelled (deleted while dirty)"
  );
}
const ioCheck = await checkWriteAccounting();

// --- data ----------------------------------------------------------------------------------------

/** Generate and pack `name` unless a previous run left it with the same parameters. */
async function archive(
  name: string,
  s: AppSpec,
  version: 1 | 2,
  keepTree: boolean,
): Promise<{ tarball: string; sum: string; tree: string }> {
  const tree = join(work, "apps", name);
  const tarball = join(www, `${name}.tar.gz`);
  const stamp = join(work, "apps", `${name}.json`);
  const key = JSON.stringify({ ...s, version, generator: 3 });
  if (
    fs.existsSync(tarball) &&
    fs.existsSync(stamp) &&
    fs.readFileSync(stamp, "utf8") === key &&
    (!keepTree || fs.existsSync(tree))
  ) {
    return { tarball, sum: fs.readFileSync(`${tarball}.sha256`, "utf8").trim(), tree };
  }
  log(`generating ${name}: ${s.files} files, ${(s.bytes / 1e6).toFixed(0)} MB`);
  fs.rmSync(tree, { recursive: true, force: true });
  fs.rmSync(stamp, { force: true });
  let t = performance.now();
  writeApp(tree, s, version);
  log(`  written in ${((performance.now() - t) / 1000).toFixed(1)}s; packing with tar czf`);
  t = performance.now();
  await sh(`tar czf '${tarball}' -C '${tree}' .`);
  const sum = (await sh(`sha256sum '${tarball}'`)).split(" ")[0]!;
  fs.writeFileSync(`${tarball}.sha256`, `${sum}\n`);
  log(
    `  packed in ${((performance.now() - t) / 1000).toFixed(1)}s: ${(fs.statSync(tarball).size / MB).toFixed(1)} MiB`,
  );
  if (!keepTree) fs.rmSync(tree, { recursive: true, force: true });
  fs.writeFileSync(stamp, key);
  return { tarball, sum, tree };
}

const v1 = await archive("v1", spec, 1, false);
const v2 = await archive("v2", spec, 2, true);
const big = bigGb > 0 ? await archive(`big${bigGb}g`, bigSpec, 1, false) : undefined;

// Served from this process with sendfile (Bun.file): little CPU, and timing is the children's wall time.
const server = Bun.serve({
  port: 0,
  hostname: "127.0.0.1",
  async fetch(req) {
    const file = Bun.file(join(www, new URL(req.url).pathname.slice(1)));
    return (await file.exists()) ? new Response(file) : new Response("not found", { status: 404 });
  },
});
const base = `http://127.0.0.1:${server.port}`;

let destParent = scratch;
if (flags["dest-owner"] !== undefined) {
  const user = flags["dest-owner"];
  const id = (opt: string) => Number(Bun.spawnSync(["id", opt, user]).stdout.toString().trim() || NaN);
  const [uid, gid] = [id("-u"), id("-g")];
  if (!Number.isInteger(uid) || !Number.isInteger(gid))
    throw new Error(
      `--dest-owner ${user}: no such user (id -u ${user} failed); make one, e.g. scripts/setup.sh makes pulldeploy-app`,
    );
  destParent = join(scratch, `owned-by-${user}`);
  fs.mkdirSync(destParent, { recursive: true });
  fs.chownSync(destParent, uid, gid);
}
const dests = {
  pipeline: join(destParent, "dest-pipeline"),
  pulldeploy: join(destParent, "dest-pulldeploy"),
  nolinks: join(destParent, "dest-nolinks"),
  release: join(destParent, "dest-release"),
  baseline: join(destParent, "dest-baseline"),
  "baseline-release": join(destParent, "dest-baseline-release"),
  big: join(destParent, "dest-big"),
};
/** `release`: the strategy of that name, the release named after the version (v1, v2). */
function manifest(name: string, a: { tarball: string; sum: string }, dest: string, release?: string): string {
  const file = `${name}.yml`;
  const strategy = release === undefined ? "" : `sync_strategy: release\nrelease_id: ${release}\n`;
  fs.writeFileSync(
    join(www, file),
    `src: ${base}/${a.tarball.slice(www.length + 1)}\nchecksum: ${a.sum}\ndest: ${dest}\n${strategy}`,
  );
  return `${base}/${file}`;
}
// The agent's state (exactly-once record, lock) in the scratch dir: never the host's /var/lib/pulldeploy.
const agentEnv = { ...process.env, TMPDIR: tmp, PULLDEPLOY_STATE_DIR: join(scratch, "state") };
// The baseline keeps a state dir of its own: the two versions' records need not agree.
const baselineEnv = { ...agentEnv, PULLDEPLOY_STATE_DIR: join(scratch, "state-baseline") };

/**
 * `pulldeploy` is the agent with its default `rsync` strategy, `nolinks` the same with `--no-hardlinks`
 * (every file written to the temp dir, then rsync: stretcher's I/O), `release` the agent with
 * `sync_strategy: release`; `baseline` and `baseline-release` are `pulldeploy` and `release` run with the
 * --baseline-bin executable.
 */
type Tool = "pipeline" | "pulldeploy" | "nolinks" | "release" | "baseline" | "baseline-release";
const TOOLS: Tool[] =
  baselineBin === undefined
    ? ["pulldeploy", "release", "nolinks", "pipeline"]
    : ["pulldeploy", "baseline", "release", "baseline-release", "nolinks", "pipeline"];
async function deployOnce(tool: Tool, a: { tarball: string; sum: string }, version: string): Promise<Measured> {
  const dest = dests[tool];
  if (tool !== "pipeline") {
    const baseline = tool === "baseline" || tool === "baseline-release";
    const url = manifest(
      `${version}-${tool}`,
      a,
      dest,
      tool === "release" || tool === "baseline-release" ? version : undefined,
    );
    const args = [baseline ? baselineBin! : bin, "agent", ...(tool === "nolinks" ? ["--no-hardlinks"] : [])];
    const m = await measure(args, { stdin: `${url}\n`, env: baseline ? baselineEnv : agentEnv, pollRss: true });
    if (!m.stderr.includes("deploy succeeded")) throw new Error(`pulldeploy agent did not succeed:\n${m.stderr}`);
    return m;
  }
  const file = join(tmp, "app.tar.gz");
  const tree = join(tmp, "tree");
  const url = `${base}/${a.tarball.slice(www.length + 1)}`;
  return measure([
    "sh",
    "-c",
    `curl -sf -o '${file}' '${url}' && echo '${a.sum}  ${file}' | sha256sum -c && mkdir '${tree}' && tar xzf ` +
      `'${file}' -C '${tree}' && rsync -a --delete '${tree}/' '${dest}/' && rm -rf '${tree}' '${file}'`,
  ]);
}

/** Where the agent's time went, from its log's timestamps: "fetch+extract 1.42s, sync+cleanup 2.10s". */
function phases(log: string): string {
  const at = (marker: string) => {
    const line = log.split("\n").find((l) => l.includes(marker));
    return line === undefined ? NaN : Date.parse(line.slice(0, line.indexOf(" ")));
  };
  const [fetch, sync, done] = [at(" fetch: "), at(" sync: "), at(" deploy succeeded")];
  if (Number.isNaN(fetch) && log.includes("already on disk"))
    return `no download, switch+cleanup ${((done - at("already on disk")) / 1000).toFixed(2)}s`;
  return `fetch+extract ${((sync - fetch) / 1000).toFixed(2)}s, sync+cleanup ${((done - sync) / 1000).toFixed(2)}s`;
}

/** Dirty pages of the previous run are written back before the next one starts. */
const settle = () => sh("sync");

// --- deploy scenarios ----------------------------------------------------------------------------

const SCENARIOS = [
  { name: "first deploy (empty dest)", archive: v1, version: "v1" },
  { name: "redeploy, 1% of files changed", archive: v2, version: "v2" },
  { name: "no-change redeploy", archive: v2, version: "v2" },
] as const;
const results = SCENARIOS.map(() => ({
  ...({ pipeline: [], pulldeploy: [], nolinks: [], release: [], baseline: [], "baseline-release": [] } as Record<
    Tool,
    number[]
  >),
  runs: [] as Measured[],
  nolinksRuns: [] as Measured[],
  releaseRuns: [] as Measured[],
  /** Every agent run, by contender: the baseline table's peak RSS. */
  measured: { pipeline: [], pulldeploy: [], nolinks: [], release: [], baseline: [], "baseline-release": [] } as Record<
    Tool,
    Measured[]
  >,
}));
const mib = (b: number) => (b / MB).toFixed(1);

for (let rep = 0; rep < reps; rep++) {
  // The tools take turns at going first.
  const order = TOOLS.map((_, i) => TOOLS[(i + rep) % TOOLS.length]!);
  for (const tool of order) {
    fs.rmSync(dests[tool], { recursive: true, force: true });
    fs.mkdirSync(dests[tool]);
  }
  for (const [i, sc] of SCENARIOS.entries()) {
    for (const tool of order) {
      await settle();
      const m = await deployOnce(tool, sc.archive, sc.version);
      results[i]![tool].push(m.seconds);
      if (tool === "pulldeploy") results[i]!.runs.push(m);
      if (tool === "release") results[i]!.releaseRuns.push(m);
      if (tool === "nolinks") results[i]!.nolinksRuns.push(m);
      results[i]!.measured[tool].push(m);
      const agentInfo = tool === "pipeline" ? "" : ` (${phases(m.stderr)}), peak RSS ${mib(m.peakRss)} MiB`;
      log(
        `rep ${rep + 1}/${reps} ${sc.name}: ${tool} ${m.seconds.toFixed(2)}s${agentInfo}, wrote ` +
          `${mib(m.writeBytes)} MiB (${mib(m.cancelledWriteBytes)} cancelled)`,
      );
    }
  }
}

// Every dest (the release one: its `current`) must now hold exactly v2: contents, modes and times. The one difference
// tolerated (and reported) is the time of dest itself, which `tar xzf` takes from the archive's `./` entry.
const notes: string[] = [];
const destTree = (tool: Tool) =>
  tool === "release" || tool === "baseline-release" ? join(dests[tool], "current") : dests[tool];
for (const tool of TOOLS) {
  await sh(`diff -r '${v2.tree}' '${destTree(tool)}/'`);
  const drift = (await sh(`rsync -ani --delete '${v2.tree}/' '${destTree(tool)}/'`))
    .split("\n")
    .filter((l) => l !== "");
  // Under --dest-owner, dest itself is the user's and the archive's `./` root's: tolerated too.
  const unexpected = drift.filter(
    (l) =>
      l !== ".d..t...... ./" && !(flags["dest-owner"] !== undefined && /^\.d\.\.[.t]\.[.o][.g]\.\.\. \.\/$/.test(l)),
  );
  if (unexpected.length > 0)
    throw new Error(`${tool}: dest differs from v2 in metadata:\n${unexpected.slice(0, 10).join("\n")}`);
  if (drift.length > 0)
    notes.push(`${tool}: dest's own mtime differs from the archive's \`./\` entry (rsync -ani: \`${drift[0]}\`)`);
}
const currentId = (dest = dests.release) => fs.readlinkSync(join(dest, "current"));
for (const tool of TOOLS.filter((t) => t === "release" || t === "baseline-release")) {
  if (currentId(dests[tool]) !== join("releases", "v2"))
    throw new Error(`${tool}: current -> ${currentId(dests[tool])}, expected releases/v2`);
}
const linkedFiles = Number((await sh(`find '${dests.release}/releases/v2/' -type f -links +1 | wc -l`)).trim());
const releaseFiles = Number((await sh(`find '${dests.release}/releases/v2/' -type f | wc -l`)).trim());

// --- rollback: `current` back to the previous release and forth again, no download ---------------

const rollbacks: Measured[] = [];
const baselineRollbacks: Measured[] = [];
for (let i = 0; i < ROLLBACK_RUNS; i++) {
  // With a baseline, the two executables take turns, each on its own release dest.
  const turns = baselineBin === undefined ? [false] : i % 2 === 0 ? [false, true] : [true, false];
  for (const baseline of turns) {
    const dest = baseline ? dests["baseline-release"] : dests.release;
    await settle();
    const m = await measure([baseline ? baselineBin! : bin, "rollback", "--dest", dest], {
      env: baseline ? baselineEnv : agentEnv,
    });
    const expected = join("releases", i % 2 === 0 ? "v1" : "v2");
    if (!m.stderr.includes("rollback: current -> ") || currentId(dest) !== expected)
      throw new Error(`rollback ${dest}: current -> ${currentId(dest)}, expected ${expected}:\n${m.stderr}`);
    (baseline ? baselineRollbacks : rollbacks).push(m);
  }
}
const rollbackMs = median(rollbacks.map((m) => m.seconds)) * 1000;
log(`rollback --dest: ${rollbacks.map((m) => (m.seconds * 1000).toFixed(0)).join(", ")} ms`);

// --- the big archive: memory must not grow with its size -----------------------------------------

let bigRun: Measured | undefined;
if (big) {
  fs.rmSync(dests.big, { recursive: true, force: true });
  await settle();
  bigRun = await measure([bin, "agent"], {
    stdin: `${manifest("big-pulldeploy", big, dests.big)}\n`,
    env: agentEnv,
    pollRss: true,
  });
  if (!bigRun.stderr.includes("deploy succeeded"))
    throw new Error(`pulldeploy agent did not succeed:\n${bigRun.stderr}`);
  log(`${bigGb} GiB archive: ${bigRun.seconds.toFixed(2)}s, peak RSS ${(bigRun.peakRss / MB).toFixed(1)} MiB`);
  fs.rmSync(dests.big, { recursive: true, force: true });
}

// --- startup -------------------------------------------------------------------------------------

type Startup = { wall: number; cpu: number; runs: Measured[] };
/**
 * Median wall time and median CPU time (user + system) of STARTUP_RUNS runs, in ms; with a baseline, its
 * runs interleaved with these (each executable goes first in turn).
 */
async function startup(
  stdin: string | undefined,
  args: string[],
  env: Record<string, string | undefined>,
  envBaseline: Record<string, string | undefined>,
) {
  const runs: Measured[] = [];
  const baseRuns: Measured[] = [];
  for (let i = 0; i < STARTUP_RUNS; i++) {
    const turns = baselineBin === undefined ? [false] : i % 2 === 0 ? [false, true] : [true, false];
    for (const baseline of turns) {
      if (baseline) baseRuns.push(await measure([baselineBin!, ...args], { stdin, env: envBaseline }));
      else runs.push(await measure([bin, ...args], { stdin, env }));
    }
  }
  const sum = (rs: Measured[]): Startup => ({
    wall: median(rs.map((r) => r.seconds)) * 1000,
    cpu: median(rs.map((r) => r.cpuSeconds)) * 1000,
    runs: rs,
  });
  return { ...sum(runs), baseline: baseRuns.length > 0 ? sum(baseRuns) : undefined };
}
const version = await startup(undefined, ["--version"], process.env, process.env);
const empty = await startup(
  "[]\n",
  ["agent"],
  { ...agentEnv, CONSUL_INDEX: "1" },
  { ...baselineEnv, CONSUL_INDEX: "1" },
);
server.stop(true);
const loadAfter = os.loadavg()[0]!;

// --- report --------------------------------------------------------------------------------------

const mb = (b: number) => (b / MB).toFixed(1);
const archiveMb = (a: { tarball: string }) => mb(fs.statSync(a.tarball).size);
const maxOf = (runs: Measured[], f: (m: Measured) => number) => Math.max(...runs.map(f));
const lines: string[] = [];
const verdicts: [string, boolean][] = [];
lines.push(
  `${spec.files} files, ${(spec.bytes / 1e6).toFixed(0)} MB (${spec.randomShare * 100}% random), archive ` +
    `${archiveMb(v1)} MiB; median of ${reps} runs, tools alternating; ${os.cpus().length} cores, load average ` +
    `${loadBefore.toFixed(1)} before, ${loadAfter.toFixed(1)} after`,
);
lines.push(`Temp dirs and dests on ${scratchFs.text} (${scratch})`);
if (flags["dest-owner"] !== undefined)
  lines.push(
    `Dests in ${destParent}, owned by ${flags["dest-owner"]}: the agent reaches them through pinned ` +
      "/proc/self/fd/N paths.",
  );
if (scratchFs.noJournal) {
  lines.push(
    "Warning: ext4 without a journal: every create scans recently deleted inodes, so file creation is slow and " +
      "noisy here; for server-like numbers use --fs on a journaled file system (e.g. a loop-mounted ext4).",
  );
}
lines.push("");
lines.push("| scenario | pipeline median s | pulldeploy median s | ratio | pulldeploy peak RSS MB |");
lines.push("|---|---:|---:|---:|---:|");
const allRuns: Measured[] = [];
for (const [i, sc] of SCENARIOS.entries()) {
  const r = results[i]!;
  const p = median(r.pipeline);
  const a = median(r.pulldeploy);
  const rss = maxOf(r.runs, (m) => m.peakRss);
  allRuns.push(...r.runs);
  lines.push(`| ${sc.name} | ${p.toFixed(2)} | ${a.toFixed(2)} | ${(a / p).toFixed(2)} | ${mb(rss)} |`);
  verdicts.push([`${sc.name}: ratio ${(a / p).toFixed(2)} ≤ ${FLOORS.ratio}`, a / p <= FLOORS.ratio]);
  verdicts.push([`${sc.name}: peak RSS ${mb(rss)} MB ≤ ${FLOORS.rssMb} MB`, rss / MB <= FLOORS.rssMb]);
}
const releaseLines: string[] = [];
releaseLines.push(
  "| scenario | rsync strategy median s | release strategy median s | time ratio | rsync strategy written MiB " +
    "(cancelled) | release strategy written MiB (cancelled) | writes ratio | release peak RSS MiB |",
);
releaseLines.push("|---|---:|---:|---:|---:|---:|---:|---:|");
for (const [i, sc] of SCENARIOS.entries()) {
  const r = results[i]!;
  const [ts, tr] = [median(r.pulldeploy), median(r.release)];
  const written = (runs: Measured[]) => median(runs.map((m) => m.writeBytes));
  const cancelled = (runs: Measured[]) => median(runs.map((m) => m.cancelledWriteBytes));
  const [ws, wr] = [written(r.runs), written(r.releaseRuns)];
  const writesRatio = ws === 0 ? NaN : wr / ws;
  releaseLines.push(
    `| ${sc.name} | ${ts.toFixed(2)} | ${tr.toFixed(2)} | ${(tr / ts).toFixed(2)} | ${mb(ws)} ` +
      `(${mb(cancelled(r.runs))}) | ${mb(wr)} (${mb(cancelled(r.releaseRuns))}) | ${writesRatio.toFixed(3)} | ` +
      `${mb(maxOf(r.releaseRuns, (m) => m.peakRss))} |`,
  );
  if (sc === SCENARIOS[1]) {
    // Issue 5's floors are on the 1%-changed redeploy.
    verdicts.push([
      `release strategy, ${sc.name}: time ${tr.toFixed(2)} s / rsync strategy ${ts.toFixed(2)} s = ` +
        `${(tr / ts).toFixed(2)} ≤ ${RELEASE_FLOORS.timeRatio}`,
      tr / ts <= RELEASE_FLOORS.timeRatio,
    ]);
    verdicts.push([
      `release strategy, ${sc.name}: disk writes ${mb(wr)} MiB / rsync strategy ${mb(ws)} MiB = ` +
        `${writesRatio.toFixed(3)} ≤ ${RELEASE_FLOORS.writesRatio}`,
      writesRatio <= RELEASE_FLOORS.writesRatio,
    ]);
  }
}
// The same against the rsync strategy with --no-hardlinks: every file written to the temp dir first, as stretcher does.
releaseLines.push("");
releaseLines.push(
  "Against the rsync strategy with `--no-hardlinks` (every file written to the temp dir, then rsync: " +
    "stretcher's I/O), same runs:",
);
releaseLines.push("");
releaseLines.push(
  "| scenario | rsync --no-hardlinks median s | release strategy median s | time ratio | rsync --no-hardlinks " +
    "written MiB (cancelled) | release strategy written MiB | writes ratio |",
);
releaseLines.push("|---|---:|---:|---:|---:|---:|---:|");
for (const [i, sc] of SCENARIOS.entries()) {
  const r = results[i]!;
  const [tn, tr] = [median(r.nolinks), median(r.release)];
  const [wn, wr] = [median(r.nolinksRuns.map((m) => m.writeBytes)), median(r.releaseRuns.map((m) => m.writeBytes))];
  const writesRatio = wn === 0 ? NaN : wr / wn;
  releaseLines.push(
    `| ${sc.name} | ${tn.toFixed(2)} | ${tr.toFixed(2)} | ${(tr / tn).toFixed(2)} | ${mb(wn)} ` +
      `(${mb(median(r.nolinksRuns.map((m) => m.cancelledWriteBytes)))}) | ${mb(wr)} | ${writesRatio.toFixed(3)} |`,
  );
  if (sc === SCENARIOS[1]) {
    verdicts.push([
      `release strategy, ${sc.name}: time ${tr.toFixed(2)} s / rsync --no-hardlinks ${tn.toFixed(2)} s = ` +
        `${(tr / tn).toFixed(2)} ≤ ${RELEASE_FLOORS.timeRatio}`,
      tr / tn <= RELEASE_FLOORS.timeRatio,
    ]);
    verdicts.push([
      `release strategy, ${sc.name}: disk writes ${mb(wr)} MiB / rsync --no-hardlinks ${mb(wn)} MiB = ` +
        `${writesRatio.toFixed(3)} ≤ ${RELEASE_FLOORS.writesRatio}`,
      writesRatio <= RELEASE_FLOORS.writesRatio,
    ]);
  }
}
verdicts.push([
  `rollback --dest ${rollbackMs.toFixed(1)} ms ≤ ${RELEASE_FLOORS.rollbackMs} ms`,
  rollbackMs <= RELEASE_FLOORS.rollbackMs,
]);
if (bigRun && big) {
  allRuns.push(bigRun);
  lines.push(
    `| ${bigGb} GiB archive (${bigSpec.files} files, ${archiveMb(big)} MiB gz), first deploy | – | ` +
      `${bigRun.seconds.toFixed(2)} | – | ${mb(bigRun.peakRss)} |`,
  );
  verdicts.push([
    `${bigGb} GiB archive: peak RSS ${mb(bigRun.peakRss)} MB ≤ ${FLOORS.rssMb} MB`,
    bigRun.peakRss / MB <= FLOORS.rssMb,
  ]);
}
lines.push("");
for (const n of notes) lines.push(`Note: ${n}.`);
lines.push(
  "Peak RSS is the agent process's VmHWM (MB = MiB). Its parts at their largest: anonymous " +
    `${mb(maxOf(allRuns, (m) => m.peakAnon))} MB, ` +
    `file-backed ${mb(maxOf(allRuns, (m) => m.peakFile))} MB (pages of the executable). The rsync it runs ` +
    `peaked at ${mb(maxOf(allRuns, (m) => m.peakChildRss))} MB (separate processes, not included).`,
);
lines.push(
  `\`pulldeploy --version\`: ${version.wall.toFixed(1)} ms wall (median of ${STARTUP_RUNS}; CPU ${version.cpu.toFixed(1)} ms)`,
);
lines.push(
  `\`pulldeploy agent\` on \`[]\` with CONSUL_INDEX=1: ${empty.wall.toFixed(1)} ms wall (median of ${STARTUP_RUNS}; CPU ` +
    `${empty.cpu.toFixed(1)} ms)`,
);
verdicts.push([`--version ${version.wall.toFixed(1)} ms ≤ ${FLOORS.versionMs} ms`, version.wall <= FLOORS.versionMs]);
verdicts.push([`agent on [] ${empty.wall.toFixed(1)} ms ≤ ${FLOORS.emptyMs} ms`, empty.wall <= FLOORS.emptyMs]);
lines.push("");
lines.push(
  "Issue 5: the agent with `sync_strategy: release` against its default `rsync` strategy (the pulldeploy " +
    "column above), same runs:",
);
lines.push("");
lines.push(...releaseLines);
lines.push("");
lines.push(
  "Disk writes: `write_bytes` of /proc/self/io of this script across each run, which holds the agent's and the " +
    "rsync's it ran once they are reaped (" +
    `${ioCheck}). They count the page-cache pages the run dirtied: file data, and on ext4 without a journal ` +
    "also the metadata blocks (inodes, directories, bitmaps) " +
    "it is the first to dirty since the preceding `sync` (with a journal, jbd2 writes those and they are not " +
    "counted); in parentheses the part deleted while still dirty " +
    "(`cancelled_write_bytes`: the rsync strategy's temp tree), which a machine with this much free memory may " +
    "never write back but one under memory pressure does. Ratios use the written bytes.",
);
lines.push(`Release v2: ${linkedFiles} of ${releaseFiles} files hard-linked (shared with v1).`);
lines.push(
  `\`pulldeploy rollback --dest\` (current: releases/v2 -> v1 and back, alternately): ${rollbackMs.toFixed(1)} ` +
    `ms wall (median of ${ROLLBACK_RUNS}; CPU ${(median(rollbacks.map((m) => m.cpuSeconds)) * 1000).toFixed(1)} ` +
    "ms)",
);
if (baselineBin !== undefined) {
  const spread = (xs: number[], digits: number) =>
    `${median(xs).toFixed(digits)} (${Math.min(...xs).toFixed(digits)}–${Math.max(...xs).toFixed(digits)})`;
  lines.push("");
  lines.push(
    `Issue 8: this checkout (${flags.bin}) against the baseline (${flags["baseline-bin"]}), same runs, ` +
      "alternating; medians, in parentheses the fastest and slowest run:",
  );
  lines.push("");
  lines.push(
    "| scenario | current wall | baseline wall | wall ratio current/baseline | current CPU | baseline CPU | " +
      "CPU ratio | current peak RSS MiB | baseline peak RSS MiB |",
  );
  lines.push("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
  /** Wall times and CPU times (user + system, with children: rsync) of the runs, in `unit`. */
  type Times = { wall: number[]; cpu: number[] };
  const row = (what: string, cur: Times, base: Times, unit: "s" | "ms", rss?: [Measured[], Measured[]]) => {
    const ratio = median(cur.wall) / median(base.wall);
    const digits = unit === "s" ? 2 : 1;
    const peak = rss === undefined ? ["–", "–"] : rss.map((runs) => mb(maxOf(runs, (m) => m.peakRss)));
    const cpu = [median(cur.cpu), median(base.cpu)] as const;
    lines.push(
      `| ${what} | ${spread(cur.wall, digits)} ${unit} | ${spread(base.wall, digits)} ${unit} | ` +
        `${ratio.toFixed(3)} | ${cpu[0].toFixed(digits + 1)} ${unit} | ${cpu[1].toFixed(digits + 1)} ${unit} | ` +
        `${(cpu[0] / cpu[1]).toFixed(3)} | ${peak[0]} | ${peak[1]} |`,
    );
    verdicts.push([
      `vs baseline, ${what}: ${median(cur.wall).toFixed(digits)} ${unit} / ` +
        `${median(base.wall).toFixed(digits)} ${unit} = ${ratio.toFixed(3)} ≤ ${BASELINE_FLOOR}`,
      ratio <= BASELINE_FLOOR,
    ]);
  };
  for (const [strategy, cur, base] of [
    ["rsync strategy", "pulldeploy", "baseline"],
    ["release strategy", "release", "baseline-release"],
  ] as const) {
    for (const [i, sc] of SCENARIOS.entries()) {
      const r = results[i]!;
      const times = (runs: Measured[]): Times => ({
        wall: runs.map((m) => m.seconds),
        cpu: runs.map((m) => m.cpuSeconds),
      });
      row(`${strategy}, ${sc.name}`, times(r.measured[cur]), times(r.measured[base]), "s", [
        r.measured[cur],
        r.measured[base],
      ]);
    }
  }
  const ms = (runs: Measured[]): Times => ({
    wall: runs.map((m) => m.seconds * 1000),
    cpu: runs.map((m) => m.cpuSeconds * 1000),
  });
  row("`--version`", ms(version.runs), ms(version.baseline!.runs), "ms");
  row("agent on `[]`", ms(empty.runs), ms(empty.baseline!.runs), "ms");
  row("`rollback --dest`", ms(rollbacks), ms(baselineRollbacks), "ms");
}
lines.push("");
for (const [what, ok] of verdicts) lines.push(`${ok ? "PASS" : "FAIL"}  ${what}`);
const report = lines.join("\n");
console.log(report);
fs.writeFileSync(join(work, "results.md"), `${report}\n`);
if (verdicts.some(([, ok]) => !ok)) process.exitCode = 1;
