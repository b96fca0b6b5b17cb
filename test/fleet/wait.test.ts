/**
 * waitForRollout (publish --wait) against the Consul stand-in: agents' reports are written to KV while
 * the wait is parked on its blocking query, as real agents would write them.
 */
import { describe, expect, test } from "bun:test";
import { ConsulClient, consulConfig } from "../../src/consul/client.ts";
import { kvKeys } from "../../src/records/release.ts";
import type { NodeReport } from "../../src/records/report.ts";
import { describeRollout, waitForRollout, type RolloutProgress } from "../../src/fleet/wait.ts";
import { startConsulStandin, type ConsulStandin } from "../support/consul-standin.ts";

const NEW = "20260301T115000Z-0123456789ab";
const OLD = "20260228T090000Z-aaaaaaaaaaaa";
const NODES_PATH = "/v1/kv/pulldeploy/roles/web/nodes/";

function report(node: string, patch: Partial<NodeReport> = {}): string {
  const r: NodeReport = {
    node,
    role: "web",
    status: "success",
    phase: "done",
    release_id: NEW,
    manifest_url: `file:///store/web/${NEW}.yml`,
    checksum: null,
    error: null,
    rolled_back_to: null,
    event_id: null,
    started_at: new Date().toISOString(),
    finished_at: new Date().toISOString(),
    duration_ms: 100,
    agent_version: "0.1.0",
    log_tail: "",
    ...patch,
  };
  return JSON.stringify(r);
}

function put(consul: ConsulStandin, node: string, patch: Partial<NodeReport> = {}) {
  consul.kvPut(kvKeys.node("pulldeploy", "web", node), report(node, patch));
}

async function fleet(nodes: string[], service = "web") {
  const consul = await startConsulStandin();
  for (const n of nodes) consul.addNode(n, { services: [service] });
  const client = new ConsulClient(consulConfig({}, { addr: consul.addr }));
  return { consul, client };
}

/** Count the wait's parked blocking queries; resolves once `n` have parked in total. */
async function parked(consul: ConsulStandin, n: number) {
  await consul.waitFor(
    () =>
      consul.requests.filter((r) => r.path === NODES_PATH && r.query.index !== undefined).length >= n &&
      consul.blocked >= 1,
    `blocking query #${n}`,
  );
}

describe("waitForRollout", () => {
  test("resolves when every node reported the new release; a line per change; failed nodes with their errors", async () => {
    const { consul, client } = await fleet(["web-1", "web-2", "web-3"]);
    await using _ = consul;
    put(consul, "web-1", { release_id: OLD });
    put(consul, "web-2", { release_id: OLD });
    const lines: string[] = [];
    const waiting = waitForRollout({
      consul: client,
      prefix: "pulldeploy",
      role: "web",
      releaseId: NEW,
      timeoutMs: 10_000,
      onProgress: (p) => lines.push(p.line),
    });

    await parked(consul, 1);
    put(consul, "web-1", { status: "deploying", phase: "fetch", finished_at: null });
    await parked(consul, 2);
    put(consul, "web-1");
    await parked(consul, 3);
    put(consul, "web-3", {
      status: "failure",
      phase: "post",
      error: "post: command failed with exit code 1: ./restart.sh",
    });
    await parked(consul, 4);
    // A report about another release wakes the wait but adds no line.
    put(consul, "web-2", { release_id: OLD, started_at: "2026-02-28T09:00:00.000Z" });
    await parked(consul, 5);
    put(consul, "web-2", { status: "skipped" });

    const result = await waiting;
    expect(lines).toEqual([
      "web-1: deploying: fetch (0/3)",
      "web-1: success (1/3)",
      "web-3: failure in post: post: command failed with exit code 1: ./restart.sh (2/3)",
      "web-2: skipped (3/3)",
    ]);
    expect(result.ok).toBe(false);
    expect(result.outcome).toBe("failure");
    expect(result.succeeded).toEqual(["web-1", "web-2"]);
    expect(result.failed).toEqual([
      {
        node: "web-3",
        status: "failure",
        release_id: NEW,
        phase: "post",
        error: "post: command failed with exit code 1: ./restart.sh",
      },
    ]);
    expect(result.pending).toEqual([]);
    expect(result.message).toBe(`rollout of ${NEW} to web: 2/3 succeeded, 1 failed (web-3)`);
    expect(describeRollout(result)).toEqual([
      result.message,
      "  web-3: failed in post: post: command failed with exit code 1: ./restart.sh",
    ]);
  });

  test("all succeed: ok; reports already there count at once, two in one answer count up", async () => {
    const { consul, client } = await fleet(["a", "b", "c"]);
    await using _ = consul;
    put(consul, "a");
    const progress: RolloutProgress[] = [];
    const waiting = waitForRollout({
      consul: client,
      prefix: "pulldeploy",
      role: "web",
      releaseId: NEW,
      timeoutMs: 10_000,
      onProgress: (p) => progress.push(p),
    });
    await parked(consul, 1);
    // Two writes before the wait's next query: one answer carries both.
    put(consul, "c");
    put(consul, "b");
    const result = await waiting;
    expect(result).toMatchObject({
      ok: true,
      outcome: "success",
      total: 3,
      succeeded: ["a", "b", "c"],
      failed: [],
      pending: [],
    });
    expect(progress.map((p) => p.line)).toEqual(["a: success (1/3)", "b: success (2/3)", "c: success (3/3)"]);
    expect(progress.map((p) => [p.node, p.status, p.done, p.total])).toEqual([
      ["a", "success", 1, 3],
      ["b", "success", 2, 3],
      ["c", "success", 3, 3],
    ]);
  });

  test("times out with the nodes not done and what they last reported", async () => {
    const { consul, client } = await fleet(["web-1", "web-2", "web-3"]);
    await using _ = consul;
    put(consul, "web-1");
    put(consul, "web-2", { release_id: OLD });
    const started = Date.now();
    const result = await waitForRollout({
      consul: client,
      prefix: "pulldeploy",
      role: "web",
      releaseId: NEW,
      timeoutMs: 400,
    });
    expect(Date.now() - started).toBeLessThan(3000);
    expect(result.ok).toBe(false);
    expect(result.outcome).toBe("timeout");
    expect(result.pending).toEqual([
      { node: "web-2", status: "success", release_id: OLD, phase: "done", error: null },
      { node: "web-3", status: "never-reported", release_id: null, phase: null, error: null },
    ]);
    expect(result.message).toBe(
      `rollout of ${NEW} to web: timed out after 400ms: 1/3 succeeded, 2 not done (web-2, web-3)`,
    );
    expect(describeRollout(result)).toEqual([
      result.message,
      `  web-2: last reported success for ${OLD}`,
      "  web-3: never reported",
    ]);
  });

  test("a role with no catalog nodes ends at once and is not ok; --service names another service", async () => {
    const { consul, client } = await fleet(["f-1"], "frontend");
    await using _ = consul;
    const none = await waitForRollout({
      consul: client,
      prefix: "pulldeploy",
      role: "web",
      releaseId: NEW,
      timeoutMs: 10_000,
    });
    expect(none).toMatchObject({ ok: false, outcome: "no-nodes", total: 0 });
    expect(none.message).toBe(
      `rollout of ${NEW} to web: no nodes of service "web" in Consul's catalog: nothing to wait for`,
    );
    put(consul, "f-1");
    const done = await waitForRollout({
      consul: client,
      prefix: "pulldeploy",
      role: "web",
      service: "frontend",
      releaseId: NEW,
      timeoutMs: 10_000,
    });
    expect(done).toMatchObject({ ok: true, succeeded: ["f-1"] });
  });

  test("a node that joins the catalog mid-rollout must report too", async () => {
    const { consul, client } = await fleet(["a"]);
    await using _ = consul;
    const waiting = waitForRollout({
      consul: client,
      prefix: "pulldeploy",
      role: "web",
      releaseId: NEW,
      timeoutMs: 10_000,
      blockingWait: "200ms",
    });
    await parked(consul, 1);
    consul.addNode("b", { services: ["web"] });
    // The catalog is re-read after a blocking query that ran out: wait for that read, then report a.
    const catalogReads = () => consul.requests.filter((r) => r.path === "/v1/catalog/service/web").length;
    await consul.waitFor(() => catalogReads() >= 2, "the catalog read again");
    put(consul, "a");
    await parked(consul, 3);
    expect(consul.requests.filter((r) => r.path === NODES_PATH).length).toBeGreaterThanOrEqual(3);
    put(consul, "b");
    expect(await waiting).toMatchObject({ ok: true, total: 2, succeeded: ["a", "b"] });
  });

  test("Consul away mid-wait: a notice, then it goes on when Consul is back", async () => {
    const consul = await startConsulStandin({ port: 0 });
    await using _ = consul;
    consul.addNode("a", { services: ["web"] });
    const client = new ConsulClient(consulConfig({}, { addr: consul.addr }));
    const lines: string[] = [];
    const waiting = waitForRollout({
      consul: client,
      prefix: "pulldeploy",
      role: "web",
      releaseId: NEW,
      timeoutMs: 10_000,
      retryMs: [50, 100],
      onProgress: (p) => lines.push(p.line),
    });
    await parked(consul, 1);
    await consul.stop();
    await waitForLine(lines, /^consul: /);
    await consul.restart();
    consul.addNode("a", { services: ["web"] });
    put(consul, "a");
    const result = await waiting;
    expect(result.ok).toBe(true);
    expect(lines[0]).toMatch(/^consul: .*(unreachable|ECONNREFUSED|closed).* \(retrying until the deadline\)$/);
    expect(lines.slice(-2)).toEqual(["consul: answering again", "a: success (1/1)"]);
  });

  test("the caller's signal rejects with its reason", async () => {
    const { consul, client } = await fleet(["a"]);
    await using _ = consul;
    const stop = new AbortController();
    const waiting = waitForRollout({
      consul: client,
      prefix: "pulldeploy",
      role: "web",
      releaseId: NEW,
      timeoutMs: 10_000,
      signal: stop.signal,
    });
    await parked(consul, 1);
    stop.abort(new Error("interrupted by SIGINT"));
    await expect(waiting).rejects.toThrow("interrupted by SIGINT");
  });
});

async function waitForLine(lines: string[], re: RegExp) {
  const end = Date.now() + 5000;
  while (!lines.some((l) => re.test(l))) {
    if (Date.now() > end) throw new Error(`no line matching ${re}: ${JSON.stringify(lines)}`);
    await Bun.sleep(10);
  }
}
