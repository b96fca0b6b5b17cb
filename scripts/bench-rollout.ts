/**
 * Benchmark: a staged rollout against an all-at-once deploy of the same app, in the same run.
 *
 * 20 agents (the compiled binary, one process per node, as consul watch would start them on each
 * event), each pointed at its own node of the multi-node Consul stand-in on loopback (real-time TTLs),
 * `sync_strategy: release`, a `pre` hook that takes `--switch-ms` (default 200 ms) to stand for the
 * switch's work. For each mode: the time from the event (all agents started at once) to the last node
 * done (with a health gate: healthy), and the Consul HTTP requests each node's agent served.
 *
 *   bun scripts/bench-rollout.ts [--nodes 20] [--max-parallel 5] [--switch-ms 200] [--health-grace 0]
 *
 * Modes: all at once (no rollout record: today's behaviour; with `--health-grace`, `--max-parallel 100%` and the same
 * gate), then `--max-parallel N` (a new release of the same tree, into fresh dests). The ideal staged time is
 * ceil(nodes / N) × the switch's time; what the staged run takes beyond that is the coordination's cost (slot hand-over
 * through blocking queries).
 */
import * as fs from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { startConsulCluster } from "../test/support/consul-standin.ts";

const ROOT = resolve(import.meta.dir, "..");
const BINARY = join(ROOT, "dist/pulldeploy");
const args = process.argv.slice(2);
const flag = (name: string, def: number) => {
  const i = args.indexOf(`--${name}`);
  return i === -1 ? def : Number(args[i + 1]);
};
const NODES = flag("nodes", 20);
const PARALLEL = flag("max-parallel", 5);
const SWITCH_MS = flag("switch-ms", 200);
const GRACE_MS = flag("health-grace", 0);

if (!fs.existsSync(BINARY)) throw new Error(`${BINARY} missing: make build first`);
const work = fs.mkdtempSync(join(tmpdir(), "pd-bench-rollout-"));
const names = Array.from({ length: NODES }, (_, i) => `web-${i + 1}`);
const cluster = await startConsulCluster({ nodes: names, timeScale: 1 });
const app = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("ok") });
for (const n of names)
  cluster.registerService(n, {
    Name: "web",
    ID: n,
    Check: { CheckID: `${n}-http`, HTTP: `http://127.0.0.1:${app.port}/${n}`, Interval: "1s" },
  });

const build = join(work, "build");
fs.mkdirSync(join(build, "lib"), { recursive: true });
for (let i = 0; i < 200; i++) fs.writeFileSync(join(build, "lib", `f${i}.js`), `// file ${i}\n${"x".repeat(2000)}\n`);
fs.writeFileSync(join(work, "hooks.yml"), `commands:\n  pre: ["sleep ${SWITCH_MS / 1000}"]\n`);

async function sh(
  cmd: string[],
  env: Record<string, string>,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const p = Bun.spawn(cmd, { env: { PATH: process.env.PATH!, ...env }, stdout: "pipe", stderr: "pipe" });
  const [stdout, stderr, code] = await Promise.all([
    new Response(p.stdout).text(),
    new Response(p.stderr).text(),
    p.exited,
  ]);
  return { code, stdout, stderr };
}

async function publish(flags: string[]): Promise<string> {
  const r = await sh(
    [
      BINARY,
      "publish",
      build,
      "--to",
      `file://${work}/store`,
      "--role",
      "web",
      "--dest",
      '{{ must_env "APP_ROOT" }}',
      "--sync-strategy",
      "release",
      "--manifest",
      join(work, "hooks.yml"),
      "--no-event",
      "-q",
      ...flags,
    ],
    cluster.node("server").env,
  );
  if (r.code !== 0) throw new Error(`publish: ${r.stderr}`);
  return r.stdout.trim();
}

async function deployAll(label: string, url: string): Promise<{ seconds: number; perNode: number[] }> {
  const before = names.map((n) => cluster.node(n).requests.length);
  const started = performance.now();
  const results = await Promise.all(
    names.map((n) => {
      const root = join(work, label, n);
      fs.mkdirSync(root, { recursive: true });
      return sh([BINARY, "agent", "--role", "web", "--manifest", url], {
        ...cluster.node(n).env,
        APP_ROOT: root,
        PULLDEPLOY_STATE_DIR: join(work, label, `${n}.state`),
      });
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  for (const [i, r] of results.entries())
    if (r.code !== 0) throw new Error(`${label} ${names[i]}: exit ${r.code}\n${r.stderr}`);
  return { seconds, perNode: names.map((n, i) => cluster.node(n).requests.length - before[i]!) };
}

const stats = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return `min ${s[0]}, median ${s[Math.floor(s.length / 2)]}, max ${s[s.length - 1]}`;
};

try {
  const gate = GRACE_MS > 0 ? ["--health-grace", `${GRACE_MS}ms`] : [];
  // With a health gate, all at once is a rollout with a slot per node (--max-parallel 100%), gated alike.
  const all = await deployAll("all", await publish(GRACE_MS > 0 ? ["--max-parallel", "100%", ...gate] : []));
  const staged = await deployAll("staged", await publish(["--max-parallel", String(PARALLEL), ...gate]));
  const ideal = (Math.ceil(NODES / PARALLEL) * (SWITCH_MS + GRACE_MS)) / 1000;
  console.log(
    `bench-rollout: ${NODES} agents on loopback, each with its own Consul stand-in node; switch ${SWITCH_MS} ` +
      `ms (pre hook)${GRACE_MS ? `, health grace ${GRACE_MS} ms` : ""}`,
  );
  console.log(
    `  all at once:         event → last node done ${all.seconds.toFixed(2)} s; Consul requests per node: ` +
      `${stats(all.perNode)}`,
  );
  console.log(
    `  --max-parallel ${PARALLEL}:   event → last node done ${staged.seconds.toFixed(2)} s (ideal ` +
      `${ideal.toFixed(2)} s + the all-at-once time); Consul requests per node: ${stats(staged.perNode)}`,
  );
} finally {
  app.stop(true);
  await cluster[Symbol.asyncDispose]();
  fs.rmSync(work, { recursive: true, force: true });
}
