/**
 * Sessions and the semaphore recipe against the multi-node stand-in (which answers like a real
 * Consul 1.10 cluster: compact JSON, sessions dying with serfHealth, Behavior delete).
 */
import { describe, expect, test } from "bun:test";
import { ConsulClient, consulConfig } from "../../src/consul/client.ts";
import { Semaphore, SEMAPHORE_FLAGS } from "../../src/consul/semaphore.ts";
import { nodeSessions, openSession } from "../../src/consul/session.ts";
import { startConsulCluster } from "../support/consul-standin.ts";

const clientOf = (env: Record<string, string>) => new ConsulClient(consulConfig(env));

describe("sessions for slots", () => {
  test("tied to serfHealth with a 10 s TTL and Behavior delete; leftovers of the same name on this node are destroyed, others kept", async () => {
    await using c = await startConsulCluster({ timeScale: 1 });
    const n1 = clientOf(c.node("node-1").env);
    const logs: string[] = [];
    const old = await openSession(n1, { name: "pulldeploy rollout slot", node: "node-1" });
    const other = (
      await n1.request("PUT", "/v1/session/create", { body: JSON.stringify({ Name: "someone else's lock" }) })
    ).json as { ID: string };
    const theirs = await openSession(clientOf(c.node("node-2").env), {
      name: "pulldeploy rollout slot",
      node: "node-2",
    });
    const fresh = await openSession(n1, { name: "pulldeploy rollout slot", node: "node-1", log: (m) => logs.push(m) });
    expect(logs).toEqual([
      `consul: destroyed a leftover session ${old.id} of this node (a pulldeploy that did not finish)`,
    ]);
    expect((await nodeSessions(n1, "node-1")).map((s) => s.id).sort()).toEqual([fresh.id, other.ID].sort());
    expect(c.sessions.has(theirs.id)).toBe(true);
    expect(c.sessions.get(fresh.id)).toMatchObject({
      ttl: "10s",
      behavior: "delete",
      nodeChecks: ["serfHealth"],
      lockDelayNs: 0,
    });
    for (const s of [old, theirs, fresh]) await s.close();
    expect(c.sessions.has(fresh.id)).toBe(false);
  });
});

describe("the semaphore recipe", () => {
  test("limit 2 among 3 nodes: .lock as `consul lock -n` writes it, a lost CAS race, a dead holder pruned, release", async () => {
    await using c = await startConsulCluster({ timeScale: 0.01 }); // a killed node is failed 51 ms later
    const prefix = "pulldeploy/roles/web/rollouts/r1/slots";
    const sems: Semaphore[] = [];
    for (const n of ["node-1", "node-2", "node-3"]) {
      const consul = clientOf(c.node(n).env);
      // A session with no TTL here: the stand-in's 10 s TTL × 0.01 would expire it before the renewal.
      const id = (
        (
          await consul.request("PUT", "/v1/session/create", {
            body: JSON.stringify({ Name: "slot", Behavior: "delete", LockDelay: "0s" }),
          })
        ).json as { ID: string }
      ).ID;
      const sem = new Semaphore(consul, prefix, id, 2);
      expect(await sem.contend(n)).toBe(true);
      sems.push(sem);
    }
    const consul = clientOf(c.node("server").env);
    const read = async () => (await consul.kvList(prefix)).entries;
    const [s1, s2, s3] = sems as [Semaphore, Semaphore, Semaphore];
    // node-3 read before node-1 wrote: its CAS on the old .lock index loses.
    const stale = await read();
    expect(await s1.tryTake(await read())).toMatchObject({ taken: true });
    expect(await s3.tryTake(stale)).toEqual({ taken: false, retry: true, holders: [], queued: true });
    expect(await s2.tryTake(await read())).toMatchObject({ taken: true });
    expect(await s3.tryTake(await read())).toEqual({
      taken: false,
      retry: false,
      holders: [s1.session, s2.session].sort(),
      queued: true,
    });
    const lock = c.kvEntry(`${prefix}/.lock`)!;
    expect(lock.flags).toBe(SEMAPHORE_FLAGS);
    expect(Buffer.from(lock.value).toString()).toBe(
      `{"Limit":2,"Holders":{${[s1.session, s2.session]
        .sort()
        .map((s) => `"${s}":true`)
        .join(",")}}}`,
    );
    expect(c.kvEntry(`${prefix}/${s3.session}`)).toMatchObject({ session: s3.session, flags: SEMAPHORE_FLAGS });

    // node-1's agent dies: its session and contender key go; .lock still names it until node-3 prunes it.
    await c.killNode("node-1");
    await c.waitFor(() => !c.sessions.has(s1.session), "node-1's session to be invalidated");
    expect(Buffer.from(c.kvEntry(`${prefix}/.lock`)!.value).toString()).toContain(s1.session);
    expect(await s3.tryTake(await read())).toMatchObject({ taken: true, holders: [s2.session, s3.session].sort() });

    // A contender whose key vanished (deleted by hand, or its session died) must queue again before it takes a slot.
    await s2.release();
    expect(await s2.tryTake(await read())).toEqual({
      taken: false,
      retry: false,
      holders: [s3.session],
      queued: false,
    });
    expect(await s2.contend("node-2")).toBe(true);
    expect(await s2.tryTake(await read())).toMatchObject({ taken: true, queued: true });
    await s2.release();
    expect(c.kvEntry(`${prefix}/${s2.session}`)).toBeUndefined();
    expect(JSON.parse(Buffer.from(c.kvEntry(`${prefix}/.lock`)!.value).toString())).toEqual({
      Limit: 2,
      Holders: { [s3.session]: true },
    });
  });
});
