/**
 * The agent's rollout gate in-process against the multi-node stand-in, fed hostile or broken KV:
 * it must fail closed (this node keeps its release) on a record it cannot trust, and must not be
 * held off a free slot by a forged or stale `.lock`.
 */
import { describe, expect, test } from "bun:test";
import { ConsulClient, consulConfig } from "../../src/consul/client.ts";
import { SEMAPHORE_FLAGS } from "../../src/consul/semaphore.ts";
import { healthGate, rolloutGate } from "../../src/agent/rollout.ts";
import { createLogger } from "../../src/log.ts";
import type { Manifest } from "../../src/manifest/parse.ts";
import { renderRolloutRecord, rolloutKeys, type RolloutRecord } from "../../src/records/rollout.ts";
import { startConsulCluster } from "../support/consul-standin.ts";
import { rolloutRecord } from "../support/records.ts";

const ID = "20261204T000000Z-0123456789ab";
const KEY = rolloutKeys.record("pulldeploy", "web", ID);
const SLOTS = rolloutKeys.slots("pulldeploy", "web", ID);
const manifest = { releaseId: ID } as Manifest;
const at = new Date().toISOString();
const record: RolloutRecord = rolloutRecord({ release_id: ID, created_at: at, updated_at: at });

async function gateOn(node: string, cluster: Awaited<ReturnType<typeof startConsulCluster>>) {
  const lines: string[] = [];
  const consul = new ConsulClient(consulConfig(cluster.node(node).env));
  const gate = rolloutGate({
    consul,
    prefix: "pulldeploy",
    role: "web",
    node,
    log: createLogger({ write: (l) => void lines.push(l) }),
  });
  return { gate, lines, consul };
}

describe("the rollout gate fails closed on a record it cannot trust", () => {
  test.each([
    ["not JSON", "{", "is unreadable (not JSON: "],
    [
      "an unknown state",
      renderRolloutRecord({ ...record, state: "yolo" as never }),
      "is unreadable (state: expected canary | running | paused | halted | done | aborted)",
    ],
    [
      "limit 0",
      renderRolloutRecord({ ...record, limit: 0 }),
      "is unreadable (limit: expected a whole number ≥ 1 (0 would hold every node forever))",
    ],
    [
      "halted",
      renderRolloutRecord({ ...record, state: "halted", reason: "2 nodes failed" }),
      `rollout of ${ID} is halted (2 nodes failed): this node keeps its current release`,
    ],
  ])("%s", async (_what, value, message) => {
    await using c = await startConsulCluster({ timeScale: 1 });
    c.kvPut(KEY, value);
    const { gate } = await gateOn("node-1", c);
    const err = await gate.prepared(manifest, "file:///x.yml").then(
      () => undefined,
      (e: Error & { phase?: string }) => e,
    );
    expect(err?.message).toContain(message);
    expect(err?.phase).toBe("rollout");
    expect(c.sessions.size).toBe(0); // nothing was queued
  });

  test("no record: passes straight through (every node at once, as before)", async () => {
    await using c = await startConsulCluster({ timeScale: 1 });
    const { gate } = await gateOn("node-1", c);
    await gate.prepared(manifest, "file:///x.yml");
    expect(c.sessions.size).toBe(0);
  });
});

describe("a forged or stale .lock does not hold a node off a free slot", () => {
  test("holders with no held contender key are pruned; an unlocked contender key named after a session is not a holder", async () => {
    await using c = await startConsulCluster({ timeScale: 1 });
    c.kvPut(KEY, renderRolloutRecord(record));
    const fake = "11111111-2222-3333-4444-555555555555";
    c.kvPut(
      `${SLOTS}/.lock`,
      JSON.stringify({ Limit: 1, Holders: { [fake]: true, "not-a-session": true } }),
      SEMAPHORE_FLAGS,
    );
    c.kvPut(`${SLOTS}/${fake}`, "web-9", SEMAPHORE_FLAGS); // written, never acquired
    const { gate, lines } = await gateOn("node-2", c);
    await gate.prepared(manifest, "file:///x.yml");
    expect(lines.join("")).toContain(`rollout: node-2 took a slot of ${ID} (1/1 in use)`);
    const lock = JSON.parse(Buffer.from(c.kvEntry(`${SLOTS}/.lock`)!.value).toString()) as {
      Limit: number;
      Holders: Record<string, true>;
    };
    expect(lock.Limit).toBe(1);
    expect(Object.keys(lock.Holders)).toHaveLength(1);
    expect(Object.keys(lock.Holders)[0]).not.toBe(fake);
    await gate.finish({ ok: true, manifest, bytesFetched: 0 }, "file:///x.yml");
    expect(c.sessions.size).toBe(0);
    expect(JSON.parse(Buffer.from(c.kvEntry(KEY)!.value).toString())).toMatchObject({
      healthy: ["node-2"],
      prepared: ["node-2"],
    });
  });

  test("garbage in .lock counts as empty and is replaced by check-and-set", async () => {
    await using c = await startConsulCluster({ timeScale: 1 });
    c.kvPut(KEY, renderRolloutRecord(record));
    c.kvPut(`${SLOTS}/.lock`, "\u0000not json", SEMAPHORE_FLAGS);
    const { gate } = await gateOn("node-3", c);
    await gate.prepared(manifest, "file:///x.yml");
    expect(Buffer.from(c.kvEntry(`${SLOTS}/.lock`)!.value).toString()).toMatch(
      /^\{"Limit":1,"Holders":\{"[0-9a-f-]{36}":true\}\}$/,
    );
    await gate.finish(undefined, "file:///x.yml");
  });
});

describe("the gate when Consul or the record goes away", () => {
  test("Consul unreachable when the record is read: deploy without a rollout, saying so (a Consul outage never fails a deploy)", async () => {
    const lines: string[] = [];
    const consul = new ConsulClient(consulConfig({ CONSUL_HTTP_ADDR: "127.0.0.1:1" }));
    const gate = rolloutGate({
      consul,
      prefix: "pulldeploy",
      role: "web",
      node: "node-1",
      log: createLogger({ write: (l) => void lines.push(l) }),
    });
    await gate.prepared(manifest, "file:///x.yml");
    expect(lines.join("")).toContain(`rollout: cannot read ${KEY} (consul 127.0.0.1:1 unreachable: `);
    expect(lines.join("")).toContain("): deploying without a rollout");
  });

  test("the record deleted while a node waits: it refuses (keeps its release) instead of switching unsupervised", async () => {
    await using c = await startConsulCluster({ timeScale: 1 });
    c.kvPut(KEY, renderRolloutRecord({ ...record, state: "paused", reason: "paused by me" }));
    const { gate, consul } = await gateOn("node-1", c);
    const waiting = gate.prepared(manifest, "file:///x.yml").then(
      () => undefined,
      (e: Error) => e,
    );
    await c.waitForBlocked({ path: `/v1/kv/${KEY}` });
    await consul.kvDelete(KEY);
    expect((await waiting)?.message).toBe(
      `rollout of ${ID}: its record ${KEY} was deleted while this node waited; this node keeps its current release`,
    );
  });
});

describe("the health gate", () => {
  const grace = 150;
  test("the role's service checks decide when there are any: passing for the grace → healthy", async () => {
    await using c = await startConsulCluster({ timeScale: 1 });
    c.registerService("node-1", {
      Name: "web",
      ID: "web-1",
      Check: { CheckID: "web-ttl", TTL: "30s", Status: "passing" },
    });
    c.registerCheck("node-1", { ID: "disk", Name: "disk", TTL: "30s" }); // critical, but not the role's
    const { consul, lines } = await gateOn("node-1", c);
    const started = Date.now();
    await healthGate(
      {
        consul,
        prefix: "pulldeploy",
        role: "web",
        node: "node-1",
        log: createLogger({ write: (l) => void lines.push(l) }),
      },
      grace,
      2000,
    );
    expect(Date.now() - started).toBeGreaterThanOrEqual(grace);
    expect(lines.join("")).toContain("health: web-ttl passing for 0.15s");
  });

  test("no service of the role: all the node's checks; one critical until the deadline fails, naming it with its output", async () => {
    await using c = await startConsulCluster({ timeScale: 1 });
    c.registerCheck("node-2", { ID: "disk", Name: "disk", TTL: "30s" });
    // A status change reaches the catalog with its output (an output-only change would not: CheckUpdateInterval).
    c.setCheck("node-2", "disk", "passing", "ok");
    c.setCheck("node-2", "disk", "critical", "disk full");
    const { consul } = await gateOn("node-2", c);
    const err = await healthGate(
      { consul, prefix: "pulldeploy", role: "web", node: "node-2", log: createLogger({ write: () => {} }) },
      grace,
      400,
    ).then(
      () => undefined,
      (e: Error & { phase?: string }) => e,
    );
    expect(err?.message).toBe(
      "health gate: node-2's checks did not pass for 0.15s within 0.4s (disk critical: disk full)",
    );
    expect(err?.phase).toBe("health");
  });

  test("a check that turns critical inside the grace restarts it; passing again later within the deadline is healthy", async () => {
    await using c = await startConsulCluster({ timeScale: 1 });
    c.registerService("node-3", {
      Name: "web",
      ID: "web-3",
      Check: { CheckID: "web-ttl", TTL: "30s", Status: "passing" },
    });
    const { consul } = await gateOn("node-3", c);
    const lines: string[] = [];
    const gated = healthGate(
      {
        consul,
        prefix: "pulldeploy",
        role: "web",
        node: "node-3",
        log: createLogger({ write: (l) => void lines.push(l) }),
      },
      400,
      5000,
    );
    await c.waitForBlocked({ path: "/v1/health/node/node-3" });
    const flapped = Date.now();
    c.setCheck("node-3", "web-ttl", "critical", "flap");
    await c.waitForBlocked({ path: "/v1/health/node/node-3" });
    c.setCheck("node-3", "web-ttl", "passing", "back");
    await gated;
    expect(Date.now() - flapped).toBeGreaterThanOrEqual(400); // the grace counted again from "back"
  });
});
