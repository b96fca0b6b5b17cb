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
import { appRelease, BINARY, run, tempDir, waitFor, writeTree, type RunResult } from "../support/helpers.ts";
import { startConsulCluster, startConsulStandin, type ConsulCluster } from "../support/consul-standin.ts";
import { freePort } from "../support/serf.ts";

const NODES = ["web-1", "web-2", "web-3", "web-4"];
/** A fifth node, not (yet) in the web service: it joins later with --from-kv. */
const NEWCOMER = "web-5";

interface Fleet {
  root: string;
  cluster: ConsulCluster;
  /** The hooks' log: `<ns> start|end <node>` lines. */
  log: string;
  publish(version: string, health: string, flags: string[]): Promise<{ url: string; id: string }>;
  agent(node: string, url: string, extra?: string[], env?: Record<string, string>): Promise<RunResult>;
  /** The binary with the server's Consul address. */
  cli(args: string[]): Promise<RunResult>;
  current(node: string): string | undefined;
  rollout(id: string): Record<string, unknown>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Hooks that log when a node starts switching (pre) and when it is done (post), and slow the switch down. */
const HOOKS = (log: string) => `commands:
  pre: ["echo $(date +%s%N) start $NODE >> ${log}; sleep 0.15; test -z $HOLD || sleep 60"]
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
      // "ok": healthy everywhere; else healthy only on the nodes it names.
      return new Response(body, { status: body === "ok" || body.split(/\s+/).includes(node) ? 200 : 503 });
    },
  });
  // Real time (sessions' 10 s TTL), but a failed node is detected after 300 ms instead of ~5 s.
  // Servers with `session_ttl_min = 1s` (real Consul allows it), so that --slot-ttl 1s is accepted.
  const cluster = await startConsulCluster({
    nodes: [...NODES, NEWCOMER],
    timeScale: 1,
    failureDetectMs: 300,
    sessionTtlMinMs: 1000,
  });
  for (const n of [...NODES, NEWCOMER]) fs.mkdirSync(join(root, n));
  for (const n of NODES) {
    cluster.registerService(n, {
      Name: "web",
      ID: n,
      Check: { CheckID: `${n}-http`, HTTP: `http://127.0.0.1:${app.port}/${n}`, Interval: "100ms" },
    });
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
        [
          "publish",
          build,
          "--to",
          `file://${root}/store`,
          "--role",
          "web",
          "--dest",
          '{{ must_env "APP_ROOT" }}',
          "--sync-strategy",
          "release",
          "--manifest",
          join(root, "hooks.yml"),
          "--no-event",
          "-q",
          ...flags,
        ],
        { env: server.env },
      );
      if (r.code !== 0) throw new Error(`publish failed: ${r.stderr}`);
      const url = r.stdout.trim();
      return { url, id: /([^/]+)\.yml$/.exec(url)![1]! };
    },
    agent(node, url, extra = [], env = {}) {
      const trigger = url === "" ? [] : ["--manifest", url];
      const role = extra.includes("--no-role") ? [] : ["--role", "web"];
      return run(["agent", ...role, ...trigger, ...extra.filter((x) => x !== "--no-role")], {
        env: { ...cluster.node(node).env, APP_ROOT: join(root, node), NODE: node, ...env },
      });
    },
    cli(args) {
      return run(args, { env: server.env });
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
    const v2 = await fleet.publish("2", "ok", [
      "--max-parallel",
      "1",
      "--health-grace",
      "200ms",
      "--health-deadline",
      "5s",
    ]);
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
    expect(
      JSON.parse(
        Buffer.from(fleet.cluster.kvEntry(`pulldeploy/roles/web/rollouts/${v2.id}/slots/.lock`)!.value).toString(),
      ),
    ).toEqual({ Limit: 1, Holders: {} });
    const waited = results.filter((r) => r.stderr.includes("waiting for a slot (1/1 in use; prepared)"));
    expect(waited.length).toBeGreaterThan(0);
    fs.rmSync(fleet.log, { force: true });
  }, 30_000);

  let v2: string;
  test("a release that fails its canary's health gate halts the rollout: the canary switches back, the others keep their release", async () => {
    v2 = fleet.current("web-1")!;
    const v3 = await fleet.publish("3", "broken", [
      "--canary",
      "1",
      "--max-failures",
      "0",
      "--health-grace",
      "200ms",
      "--health-deadline",
      "1s",
    ]);
    const results = await Promise.all(NODES.map((n) => fleet.agent(n, v3.url)));
    const record = fleet.rollout(v3.id) as {
      state: string;
      reason: string;
      canaries: string[];
      failed: { node: string; phase: string }[];
    };
    expect(record.state).toBe("halted");
    expect(record.canaries).toHaveLength(1);
    const canary = record.canaries[0]!;
    expect(record.failed).toMatchObject([{ node: canary, phase: "health" }]);
    expect(record.reason).toContain("more than the budget of 0");
    for (const [i, n] of NODES.entries()) {
      expect(results[i]!.code, statusOf(results[i]!)).toBe(1);
      expect(fleet.current(n)).toBe(v2); // the canary switched back; the others never switched
      if (n === canary) {
        expect(results[i]!.stderr).toContain(
          `health gate: ${n}'s checks did not pass for 0.2s within 1s (${n}-http critical: HTTP GET`,
        );
        expect(results[i]!.stderr).toContain(`rolled back: current -> releases/${v2}`);
      } else {
        expect(results[i]!.stderr).toContain(`rollout of ${v3.id} is halted (1 node failed, more than the budget of 0`);
        expect(results[i]!.stderr).toContain("this node keeps its current release");
      }
    }
    expect(maxConcurrent(fleet.log).switched).toEqual([canary]);
    // The nodes' reports say so too.
    for (const n of NODES.filter((x) => x !== canary)) {
      const report = JSON.parse(
        Buffer.from(fleet.cluster.kvEntry(`pulldeploy/roles/web/nodes/${n}`)!.value).toString(),
      );
      expect(report).toMatchObject({ status: "failure", phase: "rollout", release_id: v3.id });
    }
    fs.rmSync(fleet.log, { force: true });

    // A new node booting with --from-kv during the halted rollout deploys the last good release.
    const joined = await fleet.agent(NEWCOMER, "", ["--from-kv"]);
    expect(joined.code, statusOf(joined)).toBe(0);
    expect(joined.stderr).toContain(`from-kv: the rollout of ${v3.id} is halted`);
    expect(fleet.current(NEWCOMER)).toBe(v2);
    const fleetStatus = await fleet.cli(["status", "--role", "web"]);
    expect(fleetStatus.stdout).toContain(
      `  held back (kept their release): ${NODES.filter((n) => n !== canary).join(", ")}\n`,
    );
    expect(fleetStatus.stdout).toContain(`  failed: ${canary} in health: health gate: `);
    const status = await fleet.cli(["rollout", "status", "--role", "web"]);
    expect(status.code).toBe(1);
    expect(status.stdout).toContain(`rollout ${v3.id}: halted (1 node failed`);
  }, 30_000);

  test("--auto-rollback: past the budget the previous good release is the latest again and fired; the switched nodes go back", async () => {
    // Healthy on web-1 and web-2 only; one node at a time, one failure allowed.
    const v4 = await fleet.publish("4", "web-1 web-2", [
      "--max-parallel",
      "1",
      "--max-failures",
      "1",
      "--auto-rollback",
      "--health-grace",
      "200ms",
      "--health-deadline",
      "500ms",
      "--service",
      "web",
    ]);
    expect(fleet.rollout(v4.id)).toMatchObject({ previous: { id: v2 }, failure_budget: 1 }); // v3 halted: not a release to return to
    const results = await Promise.all(NODES.map((n) => fleet.agent(n, v4.url)));
    const record = fleet.rollout(v4.id) as { state: string; healthy: string[]; failed: { node: string }[] };
    expect(record.state).toBe("halted");
    expect(record.failed.map((f) => f.node).sort()).toEqual(["web-3", "web-4"]);
    expect(
      results.filter((r) => r.stderr.includes(`rollout: auto-rollback: web's latest is ${v2} again; fired deploy`)),
    ).toHaveLength(1);
    const latest = JSON.parse(Buffer.from(fleet.cluster.kvEntry("pulldeploy/roles/web/latest")!.value).toString());
    expect(latest.id).toBe(v2);
    const switched = NODES.filter((n) => fleet.current(n) === v4.id);
    expect(switched.sort()).toEqual(record.healthy.sort());
    // Each node's Consul agent got the rollback event: deliver it as consul watch does.
    const back = await Promise.all(
      NODES.map(async (n) => {
        const events = await (await fetch(`${fleet.cluster.node(n).url}/v1/event/list?name=deploy`)).text();
        expect(events).toContain(Buffer.from(latest.manifest_url).toString("base64"));
        expect(events).toContain('"ServiceFilter":"web"'); // the publisher's filters, reused
        return run(["agent", "--role", "web"], {
          stdin: events,
          env: { ...fleet.cluster.node(n).env, APP_ROOT: join(fleet.root, n), NODE: n, CONSUL_INDEX: "1" },
        });
      }),
    );
    for (const [i, n] of NODES.entries()) {
      expect(back[i]!.stderr).toContain("deploy succeeded");
      expect(fleet.current(n)).toBe(v2);
    }
    fs.rmSync(fleet.log, { force: true });
  }, 30_000);

  test("a node killed while holding the only slot frees it (its session dies with serfHealth)", async () => {
    const v5 = await fleet.publish("5", "ok", ["--max-parallel", "1"]);
    const n1 = fleet.cluster.node("web-1");
    const held = Bun.spawn([BINARY, "agent", "--role", "web", "--manifest", v5.url], {
      env: {
        PATH: process.env.PATH!,
        ...n1.env,
        APP_ROOT: join(fleet.root, "web-1"),
        NODE: "web-1",
        HOLD: "1",
        PULLDEPLOY_STATE_DIR: join(fleet.root, "state-held"),
      },
      stdout: "ignore",
      stderr: "pipe",
    });
    try {
      await waitFor(
        () => fs.existsSync(fleet.log) && fs.readFileSync(fleet.log, "utf8").includes("start web-1"),
        "web-1 to hold the slot and start switching",
      );
      const second = fleet.agent("web-2", v5.url);
      await fleet.cluster.waitForBlocked({ path: `/v1/kv/pulldeploy/roles/web/rollouts/${v5.id}` });
      const killedAt = Date.now();
      await fleet.cluster.killNode("web-1");
      const r = await second;
      expect(r.code, statusOf(r)).toBe(0);
      expect(Date.now() - killedAt).toBeLessThan(5000);
      expect(fleet.current("web-2")).toBe(v5.id);
      const { max } = maxConcurrent(fleet.log);
      expect(max).toBe(2); // web-1 never finished: its "start" stays open; only one slot was ever held at a time
    } finally {
      held.kill(9);
      await held.exited;
      await fleet.cluster.restartNode("web-1");
    }
    fs.rmSync(fleet.log, { force: true });
  }, 30_000);

  test("--canary-wait holds after a healthy canary until `rollout promote`; then the rest go, two at a time", async () => {
    const v6 = await fleet.publish("6", "ok", [
      "--canary",
      "1",
      "--canary-wait",
      "--max-parallel",
      "2",
      "--health-grace",
      "100ms",
    ]);
    const key = `/v1/kv/pulldeploy/roles/web/rollouts/${v6.id}`;
    const agents = Promise.all(NODES.map((n) => fleet.agent(n, v6.url)));
    await waitFor(() => fleet.rollout(v6.id).state === "paused", "the canary to be healthy");
    await fleet.cluster.waitForBlocked({ path: key, count: 3 });
    const canary = (fleet.rollout(v6.id).canaries as string[])[0]!;
    expect(NODES.filter((n) => fleet.current(n) === v6.id)).toEqual([canary]);
    const status = await fleet.cli(["rollout", "status", "--role", "web"]);
    expect(status.code).toBe(0);
    expect(status.stdout).toContain(
      `rollout ${v6.id}: paused (canaries healthy (1); waiting for: pulldeploy rollout promote --role web) · ` +
        `canaries ${canary} · 4 prepared, 1 healthy, 0 failed of 4 · 2 slots`,
    );
    const fleetStatus = await fleet.cli(["status", "--role", "web"]);
    expect(fleetStatus.stdout).toContain(`  waiting: ${NODES.filter((n) => n !== canary).join(", ")}\n`);
    expect(JSON.parse((await fleet.cli(["status", "--role", "web", "--json"])).stdout).rollout).toMatchObject({
      switching: [],
      record: { state: "paused" },
    });
    const json = JSON.parse((await fleet.cli(["rollout", "status", "--role", "web", "--json"])).stdout);
    expect(json).toMatchObject({ release_id: v6.id, state: "paused", healthy: [canary] });

    const promoted = await fleet.cli(["rollout", "promote", "--role", "web", "--release", v6.id]);
    expect(promoted.code, statusOf(promoted)).toBe(0);
    for (const r of await agents) expect(r.code, statusOf(r)).toBe(0);
    for (const n of NODES) expect(fleet.current(n)).toBe(v6.id);
    expect(fleet.rollout(v6.id).state).toBe("done");
    expect(maxConcurrent(fleet.log).max).toBeLessThanOrEqual(2);
    // Nothing left to steer in a finished rollout.
    const late = await fleet.cli(["rollout", "pause", "--role", "web"]);
    expect(late.code).toBe(1);
    expect(late.stderr).toContain(`rollout of ${v6.id} is done: nothing to pause`);
    fs.rmSync(fleet.log, { force: true });
  }, 30_000);

  test("pause before the event holds every node; resume lets them go; abort stops the ones still waiting", async () => {
    const v6 = fleet.current("web-1")!;
    const v7 = await fleet.publish("7", "ok", ["--max-parallel", "1"]);
    const paused = await fleet.cli(["rollout", "pause", "--role", "web"]);
    expect(paused.code, statusOf(paused)).toBe(0);
    expect(paused.stdout).toContain(`rollout ${v7.id}: paused (paused by `);
    const agents = Promise.all(NODES.map((n) => fleet.agent(n, v7.url)));
    await fleet.cluster.waitForBlocked({ path: `/v1/kv/pulldeploy/roles/web/rollouts/${v7.id}`, count: 4 });
    expect(fs.existsSync(fleet.log)).toBe(false); // nobody started switching
    expect((await fleet.cli(["rollout", "resume", "--role", "web"])).code).toBe(0);
    await waitFor(() => fs.existsSync(fleet.log), "the first node to start switching");
    const aborted = await fleet.cli(["rollout", "abort", "--role", "web"]);
    expect(aborted.code, statusOf(aborted)).toBe(0);
    const results = await agents;
    const done = NODES.filter((n) => fleet.current(n) === v7.id);
    expect(done.length).toBeGreaterThanOrEqual(1);
    expect(done.length).toBeLessThan(NODES.length);
    for (const [i, n] of NODES.entries()) {
      if (done.includes(n)) expect(results[i]!.code, statusOf(results[i]!)).toBe(0);
      else {
        expect(results[i]!.code).toBe(1);
        expect(results[i]!.stderr).toContain(`rollout of ${v7.id} is aborted (aborted by `);
        expect(fleet.current(n)).toBe(v6);
      }
    }
    expect(fleet.rollout(v7.id).state).toBe("aborted");
    const bad = await fleet.cli(["rollout", "restart", "--role", "web"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain(
      'unknown action "restart": pulldeploy rollout status|pause|resume|promote|abort --role ROLE',
    );
    fs.rmSync(fleet.log, { force: true });
  }, 30_000);

  test("agents without --role learn it from the manifest (publish writes role:) and take part in the rollout, with no extra request", async () => {
    const v8 = await fleet.publish("8", "ok", ["--max-parallel", "1"]);
    expect(fs.readFileSync(new URL(v8.url).pathname, "utf8")).toContain("role: web\n");
    const results = await Promise.all(NODES.map((n) => fleet.agent(n, v8.url, ["--no-role"])));
    for (const r of results) {
      expect(r.code, statusOf(r)).toBe(0);
      expect(r.stderr).toContain("role: web (from the manifest)");
    }
    expect(maxConcurrent(fleet.log).max).toBe(1);
    expect(fleet.rollout(v8.id)).toMatchObject({ state: "done" });
    expect((fleet.rollout(v8.id).healthy as string[]).sort()).toEqual(NODES);
    for (const n of NODES) expect(fleet.current(n)).toBe(v8.id);
    fs.rmSync(fleet.log, { force: true });
  }, 30_000);

  test("--switch-together: no node switches before the last one has prepared", async () => {
    const v9 = await fleet.publish("9", "ok", ["--switch-together"]);
    const [last, ...first] = NODES;
    const early = Promise.all(first.map((n) => fleet.agent(n, v9.url)));
    await fleet.cluster.waitForBlocked({ path: `/v1/kv/pulldeploy/roles/web/rollouts/${v9.id}`, count: first.length });
    expect(fs.existsSync(fleet.log)).toBe(false);
    expect((fleet.rollout(v9.id).prepared as string[]).sort()).toEqual(first.sort());
    const lastStarted = BigInt(Date.now()) * 1_000_000n; // as `date +%s%N` writes it
    const lastOne = fleet.agent(last!, v9.url);
    const results = [...(await early), await lastOne];
    for (const r of results) expect(r.code, statusOf(r)).toBe(0);
    for (const r of results.slice(0, first.length))
      expect(r.stderr).toContain(
        `waiting for every node to prepare before switching together (${first.length}/4 prepared)`,
      );
    const starts = fs
      .readFileSync(fleet.log, "utf8")
      .trim()
      .split("\n")
      .filter((l) => l.includes(" start "))
      .map((l) => BigInt(l.split(" ")[0]!));
    expect(starts).toHaveLength(4);
    for (const t of starts) expect(t).toBeGreaterThan(lastStarted);
    expect(maxConcurrent(fleet.log).max).toBeGreaterThan(1); // no slot limit: together
    fs.rmSync(fleet.log, { force: true });
  }, 30_000);

  /** Deliver the role's last `deploy` event to `node` as `consul watch` does (stdin, CONSUL_INDEX), with no --role. */
  async function watchAgent(node: string, extra: string[] = []): Promise<RunResult> {
    const events = await (await fetch(`${fleet.cluster.node(node).url}/v1/event/list?name=deploy`)).text();
    return run(["agent", ...extra], {
      stdin: events,
      env: { ...fleet.cluster.node(node).env, APP_ROOT: join(fleet.root, node), NODE: node, CONSUL_INDEX: "1" },
    });
  }
  const fire = async (url: string) =>
    expect(
      (await fetch(`${fleet.cluster.node("server").url}/v1/event/fire/deploy`, { method: "PUT", body: url })).status,
    ).toBe(200);
  const reportOf = (n: string) => {
    const e = fleet.cluster.kvEntry(`pulldeploy/roles/web/nodes/${n}`);
    return e ? JSON.parse(Buffer.from(e.value).toString()) : undefined;
  };
  const dropReports = async () =>
    expect(
      (
        await fetch(`${fleet.cluster.node("server").url}/v1/kv/pulldeploy/roles/web/nodes/?recurse`, {
          method: "DELETE",
        })
      ).status,
    ).toBe(200);

  test("the drop-in `consul watch … pulldeploy agent` (no --role) reports to KV under the manifest's role; `[]` asks Consul nothing", async () => {
    const v10 = await fleet.publish("10", "ok", ["--max-parallel", "2"]);
    await dropReports();
    const n1 = fleet.cluster.node("web-1");
    const before = n1.requests.length;
    const empty = await run(["agent"], { stdin: "[]", env: { ...n1.env, CONSUL_INDEX: "1" } });
    expect(empty.code, statusOf(empty)).toBe(0);
    expect(n1.requests.length).toBe(before);

    await fire(v10.url);
    const results = await Promise.all(NODES.map((n) => watchAgent(n)));
    for (const r of results) {
      expect(r.code, statusOf(r)).toBe(0);
      expect(r.stderr).toContain("role: web (from the manifest)");
      expect(r.stderr).not.toContain("no report and no rollout");
    }
    for (const n of NODES) {
      expect(fleet.current(n)).toBe(v10.id);
      expect(reportOf(n)).toMatchObject({
        node: n,
        role: "web",
        status: "success",
        phase: "done",
        release_id: v10.id,
        error: null,
      });
      expect(reportOf(n).event_id).toBeString();
    }
    expect(fleet.rollout(v10.id)).toMatchObject({ state: "done" });
    const view = JSON.parse((await fleet.cli(["status", "--role", "web", "--json"])).stdout) as {
      rows: { node: string; status: string; on_latest: boolean }[];
    };
    for (const n of NODES)
      expect(view.rows.find((r) => r.node === n)).toMatchObject({ status: "success", on_latest: true });
    fs.rmSync(fleet.log, { force: true });
  }, 30_000);

  test("with --trust-key, the manifest's role is used only once its signature is verified: a forged manifest writes no report and touches no rollout", async () => {
    const keys = tempDir("pd-keys-");
    try {
      for (const k of ["good", "other"]) expect((await run(["keygen", "--out", join(keys.path, k)])).code).toBe(0);
      const v11 = await fleet.publish("11", "ok", [
        "--max-parallel",
        "1",
        "--max-failures",
        "0",
        "--sign-key",
        join(keys.path, "good"),
      ]);
      await dropReports();
      await fire(v11.url);
      const refused = await watchAgent("web-1", ["--trust-key", join(keys.path, "other.pub")]);
      expect(refused.code).toBe(0); // consul watch: always 0
      expect(refused.stderr).toContain("deploy failed in phase signature");
      expect(refused.stderr).not.toContain("role: web");
      expect(reportOf("web-1")).toBeUndefined();
      expect(fleet.rollout(v11.id)).toMatchObject({ state: "running", prepared: [], failed: [] });
      expect(fleet.current("web-1")).not.toBe(v11.id);

      const trusted = await watchAgent("web-1", ["--trust-key", join(keys.path, "good.pub")]);
      expect(trusted.stderr).toContain("role: web (from the manifest)");
      expect(reportOf("web-1")).toMatchObject({ status: "success", release_id: v11.id });
      expect(fleet.rollout(v11.id)).toMatchObject({ prepared: ["web-1"], healthy: ["web-1"] });
    } finally {
      await keys[Symbol.asyncDispose]();
    }
    fs.rmSync(fleet.log, { force: true });
  }, 30_000);

  test("no --role: a checksum failure before `prepared` counts against the failure budget and halts the rollout", async () => {
    const v12 = await fleet.publish("12", "ok", ["--max-parallel", "1", "--max-failures", "0"]);
    // The manifest (unsigned here) says another checksum and no delta index: the full archive is fetched and refused.
    const manifest = new URL(v12.url).pathname;
    const good = fs.readFileSync(manifest, "utf8");
    fs.writeFileSync(
      manifest,
      good.replace(/^checksum: .*$/m, `checksum: ${"0".repeat(64)}`).replace(/^delta_index.*\n/gm, ""),
    );
    await fire(v12.url);
    const bad = await watchAgent("web-1");
    expect(bad.stderr).toContain("checksum mismatch");
    const record = fleet.rollout(v12.id) as {
      state: string;
      reason: string;
      failed: { node: string; phase: string }[];
    };
    expect(record.failed).toMatchObject([{ node: "web-1", phase: "checksum" }]);
    expect(record.state).toBe("halted");
    expect(reportOf("web-1")).toMatchObject({ status: "failure", phase: "checksum", release_id: v12.id });
    fs.writeFileSync(manifest, good);
    const held = await watchAgent("web-2");
    expect(held.stderr).toContain(`rollout of ${v12.id} is halted (1 node failed, more than the budget of 0`);
    expect(fleet.current("web-2")).not.toBe(v12.id);
  }, 30_000);

  test("--slot-ttl: a pulldeploy killed while its Consul agent lives keeps its slot no longer than its session's TTL (~2× TTL); alive, it renews it", async () => {
    // Healthy on web-2 only: web-1 holds its slot in the health gate (no hook process left behind when killed).
    const v13 = await fleet.publish("13", "web-2", [
      "--max-parallel",
      "1",
      "--slot-ttl",
      "1s",
      "--health-grace",
      "100ms",
      "--health-deadline",
      "60s",
    ]);
    expect(fleet.rollout(v13.id)).toMatchObject({ slot_ttl_ms: 1000, limit: 1 });
    const n1 = fleet.cluster.node("web-1");
    const mark = n1.requests.length;
    const since = () => n1.requests.slice(mark);
    const held = Bun.spawn([BINARY, "agent", "--role", "web", "--manifest", v13.url], {
      env: {
        PATH: process.env.PATH!,
        ...n1.env,
        APP_ROOT: join(fleet.root, "web-1"),
        NODE: "web-1",
        PULLDEPLOY_STATE_DIR: join(fleet.root, "state-ttl"),
      },
      stdout: "ignore",
      stderr: "ignore",
    });
    try {
      await waitFor(() => since().some((r) => r.path === "/v1/session/create"), "web-1 to open its slot session");
      const create = since().find((r) => r.path === "/v1/session/create")!;
      expect(JSON.parse(create.text)).toMatchObject({ TTL: "1s", Behavior: "delete", NodeChecks: ["serfHealth"] });
      const renewals = () => since().filter((r) => r.path.startsWith("/v1/session/renew/")).length;
      // Alive past 2 × TTL: still holding, because it renews (every TTL/3).
      await waitFor(() => renewals() >= 7, "web-1 to renew its session past 2 × TTL");
      expect(fleet.cluster.sessions.size).toBe(1);
      expect(fleet.current("web-1")).toBe(v13.id);
      const second = fleet.agent("web-2", v13.url);
      await fleet.cluster.waitForBlocked({ path: `/v1/kv/pulldeploy/roles/web/rollouts/${v13.id}` });
      const killedAt = Date.now();
      held.kill(9);
      await held.exited;
      const r = await second;
      const waited = Date.now() - killedAt;
      expect(r.code, statusOf(r)).toBe(0);
      expect(fleet.current("web-2")).toBe(v13.id);
      // Freed by the TTL (2 × 1 s after the last renewal, which was at most TTL/3 before the kill), not by serfHealth:
      // web-1's agent lives.
      expect(waited).toBeGreaterThan(1500);
      expect(waited).toBeLessThan(6000);
      const checks = (await (await fetch(`${n1.url}/v1/health/node/web-1`)).json()) as {
        CheckID: string;
        Status: string;
      }[];
      expect(checks.find((c) => c.CheckID === "serfHealth")?.Status).toBe("passing");
    } finally {
      held.kill(9);
      await held.exited;
    }
  }, 30_000);
});

test("--slot-ttl below the Consul servers' session_ttl_min (10 s by default): publish fails saying so, before the release is recorded or announced", async () => {
  await using consul = await startConsulStandin();
  await using d = tempDir("pd-slot-ttl-");
  writeTree(join(d.path, "app"), { VERSION: "1" });
  const r = await run(
    [
      "publish",
      join(d.path, "app"),
      "--to",
      `file://${d.path}/store`,
      "--role",
      "web",
      "--dest",
      "/srv/app",
      "--max-parallel",
      "1",
      "--slot-ttl",
      "2s",
    ],
    { env: consul.env },
  );
  expect(r.code).toBe(1);
  expect(r.stderr).toContain("--slot-ttl 2s: Consul refuses it (");
  expect(r.stderr).toContain(
    "Invalid Session TTL '2000000000', must be between [10s=24h0m0s]); give at least its servers' " +
      "session_ttl_min (10s unless set lower)",
  );
  expect(consul.requests.filter((q) => q.method === "PUT" && q.path.startsWith("/v1/kv/"))).toEqual([]);
  expect(consul.requests.some((q) => q.path.startsWith("/v1/event/fire/"))).toBe(false);
});

test("no --role, and a Consul node name that is no KV key segment (web-1/../../latest): no report and no rollout under the manifest's role; the deploy goes on", async () => {
  await using consul = await startConsulStandin({ nodeName: "web-1/../../latest" });
  await using d = tempDir("pd-node-name-");
  const dest = join(d.path, "dest");
  const rel = appRelease(
    d.path,
    { "index.html": "v1" },
    (a) => `src: file://${a.path}\nchecksum: ${a.sha256}\ndest: ${dest}\nrole: web\n`,
  );
  const r = await run(["agent", "--manifest", rel.manifestUrl], { env: consul.env });
  expect(r.code, statusOf(r)).toBe(0);
  expect(r.stderr).toContain(
    `role web (from the manifest): no report and no rollout: this host's node name "web-1/../../latest" must ` +
      "be 1–128 letters",
  );
  expect(consul.requests.filter((q) => q.method === "PUT")).toEqual([]);
  expect(fs.readFileSync(join(dest, "index.html"), "utf8")).toBe("v1");
});

test("no --role, Consul down: the deploy goes on, the report under the manifest's role waits in the state file, and the next run sends it", async () => {
  await using d = tempDir("pd-pending-");
  const state = join(d.path, "state");
  const dest = join(d.path, "dest");
  const port = await freePort();
  const rel = appRelease(
    d.path,
    { "index.html": "v1" },
    (a) => `src: file://${a.path}\nchecksum: ${a.sha256}\ndest: ${dest}\nrole: web\n`,
  );
  const args = ["agent", "--node", "web-9", "--manifest", rel.manifestUrl];
  const down = await run(args, { env: { CONSUL_HTTP_ADDR: `127.0.0.1:${port}`, PULLDEPLOY_STATE_DIR: state } });
  expect(down.code, statusOf(down)).toBe(0);
  expect(JSON.parse(fs.readFileSync(join(state, "state.json"), "utf8")).pending_report).toMatchObject({
    node: "web-9",
    role: "web",
    status: "success",
  });
  await using consul = await startConsulStandin({ port });
  const later = await run(args, { env: { ...consul.env, PULLDEPLOY_STATE_DIR: state } });
  expect(later.stderr).toContain("report: sent the report Consul missed earlier (success, release ");
  expect(JSON.parse(fs.readFileSync(join(state, "state.json"), "utf8")).pending_report).toBeUndefined();
  expect(consul.kvEntry("pulldeploy/roles/web/nodes/web-9")).toBeDefined();
});
