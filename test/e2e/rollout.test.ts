/**
 * Staged rollouts through the compiled binary: a fleet of agents, each pointed at its own node of the
 * multi-node Consul stand-in (its own node name, sessions and checks; one shared KV and catalog),
 * coordinating through KV, sessions and health checks alone. The app's health check is an HTTP
 * check that reads a file the release itself ships (`current/health`), so a bad release fails its
 * own health gate.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { BINARY, run, tempDir, waitFor, writeTree, type RunResult } from "../support/helpers.ts";
import { startConsulCluster, type ConsulCluster } from "../support/consul-standin.ts";

const NODES = ["web-1", "web-2", "web-3", "web-4"];

interface Fleet {
  root: string;
  cluster: ConsulCluster;
  /** The hooks' log: `<ns> start|end <node>` lines. */
  log: string;
  publish(version: string, health: string, flags: string[]): Promise<{ url: string; id: string }>;
  agent(node: string, url: string, extra?: string[]): Promise<RunResult>;
  current(node: string): string | undefined;
  rollout(id: string): Record<string, unknown>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Hooks that log when a node starts switching (pre) and when it is done (post), and slow the switch down. */
const HOOKS = (log: string) => `commands:
  pre: ["echo $(date +%s%N) start $NODE >> ${log}; sleep 0.3"]
  post: ["echo $(date +%s%N) end $NODE >> ${log}"]
`;

async function startFleet(): Promise<Fleet> {
  const dir = tempDir("pd-rollout-");
  const root = dir.path;
  const log = join(root, "hooks.log");
  // The app's health endpoint, one path per node: 200 when its current release ships "ok".
  const app = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch(req) {
      const node = new URL(req.url).pathname.slice(1);
      const file = join(root, node, "current", "health");
      const body = fs.existsSync(file) ? fs.readFileSync(file, "utf8").trim() : "missing";
      return new Response(body, { status: body === "ok" ? 200 : 503 });
    },
  });
  // Real time (sessions' 10 s TTL), but a failed node is detected after 300 ms instead of ~5 s.
  const cluster = await startConsulCluster({ nodes: NODES, timeScale: 1, failureDetectMs: 300 });
  for (const n of NODES) {
    fs.mkdirSync(join(root, n));
    cluster.registerService(n, { Name: "web", ID: n, Check: { CheckID: `${n}-http`, HTTP: `http://127.0.0.1:${app.port}/${n}`, Interval: "100ms" } });
  }
  fs.writeFileSync(join(root, "hooks.yml"), HOOKS(log));
  const server = cluster.node("server");
  return {
    root,
    cluster,
    log,
    async publish(version, health, flags) {
      const build = join(root, `build-${version}`);
      writeTree(build, { VERSION: version, health });
      const r = await run(
        ["publish", build, "--to", `file://${root}/store`, "--role", "web", "--dest", '{{ must_env "APP_ROOT" }}', "--sync-strategy", "release", "--manifest", join(root, "hooks.yml"), "--no-event", "-q", ...flags],
        { env: server.env },
      );
      if (r.code !== 0) throw new Error(`publish failed: ${r.stderr}`);
      const url = r.stdout.trim();
      return { url, id: /([^/]+)\.yml$/.exec(url)![1]! };
    },
    agent(node, url, extra = []) {
      return run(["agent", "--role", "web", "--manifest", url, ...extra], { env: { ...cluster.node(node).env, APP_ROOT: join(root, node), NODE: node } });
    },
    current(node) {
      const link = join(root, node, "current");
      return fs.existsSync(link) ? fs.readlinkSync(link).replace(/^releases\//, "") : undefined;
    },
    rollout(id) {
      const e = cluster.kvEntry(`pulldeploy/roles/web/rollouts/${id}`);
      return JSON.parse(Buffer.from(e!.value).toString());
    },
    async [Symbol.asyncDispose]() {
      app.stop(true);
      await cluster[Symbol.asyncDispose]();
      await dir[Symbol.asyncDispose]();
    },
  };
}

/** The most nodes between `start` and `end` at any instant, from the hooks' log. */
function maxConcurrent(log: string): { max: number; switched: string[] } {
  const events = fs
    .readFileSync(log, "utf8")
    .trim()
    .split("\n")
    .map((l) => l.split(" "))
    .map(([t, what, node]) => ({ t: BigInt(t!), what: what!, node: node! }))
    .sort((a, b) => (a.t < b.t ? -1 : a.t > b.t ? 1 : a.what === "end" ? -1 : 1));
  let now = 0;
  let max = 0;
  for (const e of events) {
    now += e.what === "start" ? 1 : -1;
    max = Math.max(max, now);
  }
  return { max, switched: [...new Set(events.filter((e) => e.what === "end").map((e) => e.node))].sort() };
}

const statusOf = (r: RunResult) => `exit ${r.code}\n${r.stderr}`;

describe("staged rollouts, 4 agents on 4 stand-in nodes", () => {
  let fleet: Fleet;
  let v1: { url: string; id: string };
  beforeAll(async () => {
    expect(fs.existsSync(BINARY)).toBe(true);
    fleet = await startFleet();
    // v1, published without rollout flags, reaches every node at once (as before): no record.
    v1 = await fleet.publish("1", "ok", []);
    const results = await Promise.all(NODES.map((n) => fleet.agent(n, v1.url)));
    for (const r of results) expect(r.code, statusOf(r)).toBe(0);
    expect(fleet.cluster.kvEntry(`pulldeploy/roles/web/rollouts/${v1.id}`)).toBeUndefined();
    fs.rmSync(fleet.log, { force: true });
  });
  afterAll(async () => {
    await fleet?.[Symbol.asyncDispose]();
  });

  test("--max-parallel 1 with a health gate: one node at a time switches, each healthy before the next", async () => {
    const v2 = await fleet.publish("2", "ok", ["--max-parallel", "1", "--health-grace", "200ms", "--health-deadline", "5s"]);
    const results = await Promise.all(NODES.map((n) => fleet.agent(n, v2.url)));
    for (const r of results) expect(r.code, statusOf(r)).toBe(0);
    const { max, switched } = maxConcurrent(fleet.log);
    expect(switched).toEqual(NODES);
    expect(max).toBe(1);
    for (const n of NODES) expect(fleet.current(n)).toBe(v2.id);
    expect(fleet.rollout(v2.id)).toMatchObject({ state: "done", limit: 1, nodes_total: 4, previous: { id: v1.id } });
    expect((fleet.rollout(v2.id).healthy as string[]).sort()).toEqual(NODES);
    // Every slot was given back and every session destroyed.
    expect(fleet.cluster.sessions.size).toBe(0);
    expect(JSON.parse(Buffer.from(fleet.cluster.kvEntry(`pulldeploy/roles/web/rollouts/${v2.id}/slots/.lock`)!.value).toString())).toEqual({ Limit: 1, Holders: {} });
    const waited = results.filter((r) => r.stderr.includes("waiting for a slot (1/1 in use; prepared)"));
    expect(waited.length).toBeGreaterThan(0);
    fs.rmSync(fleet.log, { force: true });
  }, 30_000);
});
