/**
 * The production Consul client against the stand-in (whose answers are proven against Consul 1.10.12's
 * captures in consul-standin.test.ts): KV, cas, locks, blocking queries, events with filters, ACL
 * tokens, errors, TLS and unix sockets (configuration from the environment: config.test.ts).
 */
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { nextIndex } from "../../src/consul/blocking.ts";
import { ConsulClient, ConsulError, consulConfig } from "../../src/consul/client.ts";
import { USER_EVENT_SIZE_LIMIT, userEventSize } from "../../src/consul/event-size.ts";
import { startConsulStandin } from "../support/consul-standin.ts";
import { tempDir } from "../support/helpers.ts";

const text = (b: Uint8Array | null) => (b === null ? null : new TextDecoder().decode(b));

function clientFor(env: Record<string, string>, flags?: { addr?: string; token?: string }): ConsulClient {
  return new ConsulClient(consulConfig(env, flags));
}

async function rejection(p: Promise<unknown>): Promise<ConsulError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof ConsulError) return err;
    throw err;
  }
  throw new Error("expected a ConsulError, got an answer");
}

/** The events the stand-in agent holds, read over HTTP, not through the client (which only fires). */
async function eventsHeld(
  url: string,
  token?: string,
): Promise<{ ID: string; Name: string; Payload: string | null; LTime: number }[]> {
  const res = await fetch(`${url}/v1/event/list`, { headers: token ? { "X-Consul-Token": token } : {} });
  expect(res.status).toBe(200);
  return (await res.json()) as { ID: string; Name: string; Payload: string | null; LTime: number }[];
}

describe("KV", () => {
  test("a key with a . or .. segment is refused before any request (fetch would resolve it to another key)", async () => {
    await using consul = await startConsulStandin();
    const c = clientFor(consul.env);
    for (const key of ["pulldeploy/roles/web/nodes/../latest", "pulldeploy/./roles", ".."]) {
      expect((await rejection(c.kvGetText(key))).message).toContain('may not have a "." or ".." segment');
      expect((await rejection(c.kvPut(key, "x"))).message).toContain('may not have a "." or ".." segment');
    }
    expect(consul.requests.filter((r) => r.path.startsWith("/v1/kv/"))).toEqual([]);
    expect(await c.kvPut("pulldeploy/roles/web/nodes/a..b", "x")).toBe(true); // dots inside a name are fine
  });

  test("round trips: text, JSON, bytes, empty, missing, exact uint64 flags, odd key names", async () => {
    await using consul = await startConsulStandin();
    const c = clientFor(consul.env);
    expect(await c.kvPut("deploy/app/manifest", "s3://bucket/app.yml")).toBe(true);
    const { entry, index } = await c.kvGet("deploy/app/manifest");
    expect(entry).toEqual({
      key: "deploy/app/manifest",
      value: entry!.value,
      flags: 0n,
      modifyIndex: 14,
      createIndex: 14,
      lockIndex: 0,
    });
    expect(text(entry!.value)).toBe("s3://bucket/app.yml");
    expect(index).toBe(14);

    expect(await c.kvPut("deploy/app/config", JSON.stringify({ url: "http://x/app.yml", n: 1 }))).toBe(true);
    const parsed = await c.kvGetJson("deploy/app/config", {
      parse: (raw) => {
        if (typeof raw !== "object" || raw === null || typeof (raw as { url?: unknown }).url !== "string")
          throw new Error("bad config");
        return raw as { url: string };
      },
    });
    expect(parsed.value?.url).toBe("http://x/app.yml");
    await c.kvPut("deploy/app/garbage", "{not json");
    expect((await rejection(c.kvGetJson("deploy/app/garbage"))).message).toStartWith(
      "consul kv deploy/app/garbage: value is not JSON:",
    );

    const all = Uint8Array.from({ length: 256 }, (_, i) => i);
    await c.kvPut("bin", all);
    expect((await c.kvGet("bin")).entry!.value).toEqual(all);

    await c.kvPut("deploy/app/empty", "");
    expect((await c.kvGet("deploy/app/empty")).entry!.value).toBeNull();
    expect((await c.kvGetText("deploy/app/empty")).value).toBe("");

    const missing = await c.kvGet("deploy/missing");
    expect(missing.entry).toBeNull();
    expect(missing.index).toBeGreaterThanOrEqual(1);
    expect((await c.kvGetText("deploy/missing")).value).toBeNull();
    expect((await c.kvGetJson("deploy/missing")).value).toBeNull();

    const lockFlag = 3304740253564472344n; // consul lock's flag value, above 2^53
    await c.kvPut("locks/app/.lock", "", { flags: lockFlag });
    expect((await c.kvGet("locks/app/.lock")).entry!.flags).toBe(lockFlag);
    expect((await c.kvList("locks/")).entries[0]!.flags).toBe(lockFlag);

    const odd = "deploy/we ird/ü?#&=%/key";
    await c.kvPut(odd, "odd");
    expect(consul.kvEntry(odd) && text(consul.kvEntry(odd)!.value)).toBe("odd");
    expect((await c.kvGetText(`/${odd}`)).value).toBe("odd");
  });

  test("list, delete and recursive delete", async () => {
    await using consul = await startConsulStandin();
    const c = clientFor(consul.env);
    for (const k of ["deploy/b/x", "deploy/a/y", "deploy/a/x", "other/z"]) await c.kvPut(k, k);
    const list = await c.kvList("deploy/");
    expect(list.entries.map((e) => e.key)).toEqual(["deploy/a/x", "deploy/a/y", "deploy/b/x"]);
    expect(list.index).toBe(Math.max(...list.entries.map((e) => e.modifyIndex)));
    expect((await c.kvList("nothing/")).entries).toEqual([]);

    expect(await c.kvDelete("deploy/b/x")).toBe(true);
    expect(await c.kvDelete("deploy/b/x")).toBe(true); // Consul: deleting a missing key is true too
    expect(await c.kvDelete("deploy/", { recurse: true })).toBe(true);
    expect((await c.kvList("")).entries.map((e) => e.key)).toEqual(["other/z"]);
  });

  test("cas: create-only, current index, stale index; delete with cas", async () => {
    await using consul = await startConsulStandin();
    const c = clientFor(consul.env);
    expect(await c.kvPut("k", "first", { cas: 0 })).toBe(true);
    expect(await c.kvPut("k", "again", { cas: 0 })).toBe(false);
    const { entry } = await c.kvGet("k");
    expect(await c.kvPut("k", "second", { cas: entry!.modifyIndex })).toBe(true);
    expect(await c.kvPut("k", "stale", { cas: entry!.modifyIndex })).toBe(false);
    expect((await c.kvGetText("k")).value).toBe("second");
    const now = (await c.kvGet("k")).entry!.modifyIndex;
    expect(await c.kvDelete("k", { cas: now - 1 })).toBe(false);
    expect(await c.kvDelete("k", { cas: now })).toBe(true);
    expect((await c.kvGet("k")).entry).toBeNull();
  });

  test("locks with sessions: acquire, contention, release, renew, destroy", async () => {
    await using consul = await startConsulStandin();
    const c = clientFor(consul.env);
    const a = await c.sessionCreate({ name: "host-a", ttl: "15s", behavior: "release", lockDelay: "1s" });
    const b = await c.sessionCreate({ name: "host-b", ttl: "15s" });
    expect(await c.sessionInfo(a)).toEqual({
      id: a,
      name: "host-a",
      node: "dev",
      ttl: "15s",
      behavior: "release",
      lockDelayMs: 1000,
    });
    expect(await c.kvPut("locks/deploy", "host-a", { acquire: a })).toBe(true);
    expect(await c.kvPut("locks/deploy", "host-b", { acquire: b })).toBe(false);
    expect((await c.kvGet("locks/deploy")).entry).toMatchObject({ session: a, lockIndex: 1 });
    expect(await c.kvPut("locks/deploy", "", { release: b })).toBe(false);
    expect(await c.sessionRenew(a)).toBe(true);
    expect(await c.kvPut("locks/deploy", "", { release: a })).toBe(true);
    expect((await c.kvGet("locks/deploy")).entry!.session).toBeUndefined();
    expect(await c.sessionDestroy(a)).toBe(true);
    expect(await c.sessionRenew(a)).toBe(false);
    expect(await c.sessionInfo(a)).toBeNull();
    expect(await c.kvPut("locks/deploy", "host-b", { acquire: b })).toBe(true);
    // A session that dies holding a lock releases it; lock-delay then refuses new holders for a while.
    consul.expireSession(b);
    expect((await c.kvGet("locks/deploy")).entry!.session).toBeUndefined();
    const c2 = await c.sessionCreate({ name: "host-c" });
    expect(await c.kvPut("locks/deploy", "host-c", { acquire: c2 })).toBe(false);
    // An unknown session is Consul's 500, as a ConsulError.
    const err = await rejection(c.kvPut("locks/other", "", { acquire: "00000000-0000-0000-0000-000000000000" }));
    expect(err.message).toBe(
      'consul PUT /v1/kv/locks/other: 500 invalid session "00000000-0000-0000-0000-000000000000"',
    );
  });
});

describe("blocking queries", () => {
  test("a KV read waits for the change and answers the new value and index", async () => {
    await using consul = await startConsulStandin();
    const c = clientFor(consul.env);
    await c.kvPut("deploy/app/manifest", "v1");
    const first = await c.kvGet("deploy/app/manifest");
    const pending = c.kvGet("deploy/app/manifest", { index: first.index, wait: "30s" });
    await consul.waitForBlocked({ path: "/v1/kv/deploy/app/manifest" });
    await c.kvPut("deploy/app/other", "unrelated"); // another key: the read keeps waiting
    await c.kvPut("deploy/app/manifest", "v2");
    const got = await pending;
    expect(text(got.entry!.value)).toBe("v2");
    expect(got.index).toBe(first.index + 2);
    expect(nextIndex(first.index, got.index)).toBe(got.index);
    const req = consul.requests.find((r) => r.query.index === String(first.index))!;
    expect(req.query.wait).toBe("30s");
  });

  test("without a change the read answers at the end of the wait with the same index", async () => {
    await using consul = await startConsulStandin();
    const c = clientFor(consul.env);
    await c.kvPut("k", "v");
    const first = await c.kvGet("k");
    const again = await c.kvGet("k", { index: first.index, wait: "1s" });
    expect(again.index).toBe(first.index);
    expect(text(again.entry!.value)).toBe("v");
    const list = await c.kvList("", { index: (await c.kvList("")).index, wait: "1s" });
    expect(list.entries.map((e) => e.key)).toEqual(["k"]);
  });

  test("a prefix read wakes on a change under the prefix", async () => {
    await using consul = await startConsulStandin();
    const c = clientFor(consul.env);
    await c.kvPut("deploy/app/a", "1");
    const first = await c.kvList("deploy/app/");
    const pending = c.kvList("deploy/app/", { index: first.index, wait: "30s" });
    await consul.waitForBlocked({ path: "/v1/kv/deploy/app/" });
    await c.kvPut("deploy/app/b", "2");
    expect((await pending).entries.map((e) => e.key)).toEqual(["deploy/app/a", "deploy/app/b"]);
  });

  test("the caller's signal aborts a blocking read with its own reason", async () => {
    await using consul = await startConsulStandin();
    const c = clientFor(consul.env);
    await c.kvPut("k", "v");
    const { index } = await c.kvGet("k");
    const ac = new AbortController();
    const pending = c.kvGet("k", { index, wait: "30s", signal: ac.signal });
    await consul.waitForBlocked({ path: "/v1/kv/k" });
    ac.abort(new Error("shutting down"));
    await expect(pending).rejects.toThrow("shutting down");
    await consul.waitFor(() => consul.blocked === 0, "the aborted query to leave");
  });

  test("Consul restarted with its data gone: the index goes backwards and nextIndex starts over", async () => {
    await using consul = await startConsulStandin();
    const c = clientFor(consul.env);
    for (const v of ["1", "2", "3"]) await c.kvPut("deploy/app/manifest", v);
    const before = await c.kvGet("deploy/app/manifest");
    await consul.restart({ wipe: true });
    await c.kvPut("deploy/app/manifest", "after-restart");
    // The old index is ahead of the new state: Consul holds the read for the whole wait.
    const got = await c.kvGet("deploy/app/manifest", { index: before.index, wait: "1s" });
    expect(got.index).toBeLessThan(before.index);
    const next = nextIndex(before.index, got.index);
    expect(next).toBe(0);
    const fresh = await c.kvGet("deploy/app/manifest", { index: next, wait: "30s" });
    expect(text(fresh.entry!.value)).toBe("after-restart");
  });
});

describe("events", () => {
  test("fire with node/service/tag filters and a token; the agent holds the events", async () => {
    await using consul = await startConsulStandin({ requireToken: "s3cret-token" });
    consul.addNode("dev", { services: ["web"], tags: ["blue"] });
    const c = clientFor(consul.env);
    const ev = await c.eventFire("deploy", "s3://bucket/app.yml", { node: "^dev$", service: "web", tag: "blue" });
    expect(ev).toMatchObject({
      name: "deploy",
      payloadText: "s3://bucket/app.yml",
      nodeFilter: "^dev$",
      serviceFilter: "web",
      tagFilter: "blue",
      version: 1,
      ltime: 0,
    });
    expect(ev.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);

    const fired = consul.requests.find((r) => r.path === "/v1/event/fire/deploy")!;
    expect(fired.method).toBe("PUT");
    expect(fired.query).toEqual({ node: "^dev$", service: "web", tag: "blue" });
    expect(fired.headers["x-consul-token"]).toBe("s3cret-token");
    expect(fired.headers["user-agent"]).toStartWith("pulldeploy/");
    expect(fired.search).not.toContain("s3cret");
    expect(fired.text).toBe("s3://bucket/app.yml");

    await c.eventFire("other", "");
    const held = await eventsHeld(consul.url, "s3cret-token");
    expect(held.map((e) => [e.ID, e.Name, e.Payload, e.LTime])).toEqual([
      [ev.id, "deploy", Buffer.from("s3://bucket/app.yml").toString("base64"), 2],
      [expect.any(String), "other", null, 3],
    ]);
  });

  test("events filtered away from this agent are not in its list", async () => {
    await using consul = await startConsulStandin();
    const c = clientFor(consul.env);
    await c.eventFire("deploy", "for-web", { service: "web" });
    await c.eventFire("deploy", "for-others", { node: "^nomatch$" });
    expect(await eventsHeld(consul.url)).toEqual([]);
    const err = await rejection(c.eventFire("deploy", "x", { tag: "blue" }));
    expect(err.message).toBe("consul PUT /v1/event/fire/deploy: 500 Cannot provide tag filter without service filter");
  });

  test("a payload too large is Consul's 500, one line", async () => {
    await using consul = await startConsulStandin();
    const c = clientFor(consul.env);
    expect((await c.eventFire("deploy", "x".repeat(404))).payload).toHaveLength(404);
    const err = await rejection(c.eventFire("deploy", "x".repeat(405)));
    expect(err.status).toBe(500);
    expect(err.phase).toBe("consul");
    expect(err.message).toBe(
      'consul PUT /v1/event/fire/deploy: 500 error broadcasting event to segment "": encoded user event ' +
        "exceeds configured limit of 512 bytes after encoding",
    );
    expect(err.body).toStartWith("1 error occurred:\n\t* ");
  });

  test("userEventSize agrees with the stand-in's msgpack encodings at the limit", async () => {
    await using consul = await startConsulStandin();
    const c = clientFor(consul.env);
    expect(userEventSize("deploy", "x".repeat(404))).toBe(USER_EVENT_SIZE_LIMIT);
    const cases: { name: string; filters: { node?: string; service?: string; tag?: string } }[] = [
      { name: "deploy", filters: {} },
      { name: "d", filters: { node: "^web-[0-9]+$" } },
      { name: "release-announcements", filters: { service: "web", tag: "blue" } },
    ];
    for (const { name, filters } of cases) {
      let max = 0;
      while (userEventSize(name, "y".repeat(max + 1), filters) <= USER_EVENT_SIZE_LIMIT) max++;
      expect((await c.eventFire(name, "y".repeat(max), filters)).payload).toHaveLength(max);
      expect((await rejection(c.eventFire(name, "y".repeat(max + 1), filters))).status).toBe(500);
    }
  });
});

describe("agent and catalog", () => {
  test("agent self, nodes, service instances by tag, health", async () => {
    await using consul = await startConsulStandin({ nodeName: "web1", datacenter: "eu1" });
    consul.addNode("web1", { services: ["web"], tags: ["blue"], address: "127.0.0.11" });
    consul.addNode("web2", {
      services: [{ name: "web", tags: ["green"], port: 8080 }],
      address: "127.0.0.12",
      status: "critical",
    });
    const c = clientFor(consul.env);
    expect(await c.agentSelf()).toEqual({ nodeName: "web1", datacenter: "eu1" });
    expect((await c.catalogNodes()).map((n) => [n.node, n.address, n.datacenter])).toEqual([
      ["web1", "127.0.0.11", "eu1"],
      ["web2", "127.0.0.12", "eu1"],
    ]);
    expect((await c.catalogService("web")).map((s) => [s.node, s.serviceTags, s.servicePort])).toEqual([
      ["web1", ["blue"], 0],
      ["web2", ["green"], 8080],
    ]);
    expect((await c.catalogService("web", "green")).map((s) => s.node)).toEqual(["web2"]);
    expect(await c.catalogService("nope")).toEqual([]);
    expect((await c.healthService("web")).map((s) => [s.node, s.status])).toEqual([
      ["web1", "passing"],
      ["web2", "critical"],
    ]);
    expect((await c.healthService("web", { passing: true })).map((s) => s.node)).toEqual(["web1"]);
  });
});

describe("errors", () => {
  test("ACL: no token is 403 Permission denied, a wrong one 403 ACL not found; the token is never shown", async () => {
    await using consul = await startConsulStandin({ requireToken: "right-token" });
    const none = await rejection(clientFor({ CONSUL_HTTP_ADDR: consul.addr }).kvPut("x", "1"));
    expect(none.message).toBe("consul PUT /v1/kv/x: 403 Permission denied");
    expect(none.status).toBe(403);
    const wrongClient = clientFor({ CONSUL_HTTP_ADDR: consul.addr, CONSUL_HTTP_TOKEN: "wrong-token" });
    const wrong = await rejection(wrongClient.kvGet("x"));
    expect(wrong.message).toBe("consul GET /v1/kv/x: 403 ACL not found");
    expect(`${wrong.message} ${wrong.stack} ${String(wrongClient)} ${Bun.inspect(wrongClient)}`).not.toContain(
      "wrong-token",
    );
    expect(await clientFor(consul.env).kvPut("x", "1")).toBe(true);
  });

  test("an agent that is not there: unreachable, with the address", async () => {
    const consul = await startConsulStandin();
    const addr = consul.addr;
    await consul.stop();
    const err = await rejection(clientFor({ CONSUL_HTTP_ADDR: addr }).kvGet("x"));
    expect(err.message).toBe(`consul ${addr} unreachable: ECONNREFUSED`);
    expect(err.status).toBeUndefined();
    expect(err.phase).toBe("consul");
  });

  test("an agent that accepts but never answers: a timeout naming the request", async () => {
    const hung = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    try {
      const c = new ConsulClient(consulConfig({ CONSUL_HTTP_ADDR: `127.0.0.1:${hung.port}` }), { timeoutMs: 300 });
      const err = await rejection(c.kvGet("deploy/app/manifest"));
      expect(err.message).toBe(
        `consul GET /v1/kv/deploy/app/manifest: no answer from 127.0.0.1:${hung.port} within 300ms`,
      );
    } finally {
      hung.stop(true);
    }
  });

  test("the client outlives a Consul restart on the same port", async () => {
    await using consul = await startConsulStandin();
    const c = clientFor(consul.env);
    await c.kvPut("k", "v");
    await consul.stop();
    expect((await rejection(c.kvGet("k"))).message).toContain("unreachable");
    await consul.restart();
    expect((await c.kvGetText("k")).value).toBe("v");
  });
});

describe("transports", () => {
  test("https: CONSUL_CACERT verifies the server; without it the certificate is refused; SSL_VERIFY=false skips", async () => {
    await using dir = tempDir("pd-consul-tls-");
    const key = join(dir.path, "key.pem");
    const cert = join(dir.path, "cert.pem");
    const gen = Bun.spawnSync(
      [
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        key,
        "-out",
        cert,
        "-days",
        "2",
        "-subj",
        "/CN=127.0.0.1",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
      ],
      { stderr: "pipe" },
    );
    expect(gen.exitCode).toBe(0);
    await using consul = await startConsulStandin({
      tls: { cert: await Bun.file(cert).text(), key: await Bun.file(key).text() },
    });
    expect(consul.addr).toStartWith("https://127.0.0.1:");
    expect(await clientFor({ CONSUL_HTTP_ADDR: consul.addr, CONSUL_CACERT: cert }).kvPut("k", "v")).toBe(true);
    const refused = await rejection(clientFor({ CONSUL_HTTP_ADDR: consul.addr }).kvGet("k"));
    expect(refused.message).toMatch(/^consul 127\.0\.0\.1:\d+ unreachable: \S*CERT/);
    const insecure = clientFor({
      CONSUL_HTTP_ADDR: consul.addr.replace("https://", ""),
      CONSUL_HTTP_SSL: "true",
      CONSUL_HTTP_SSL_VERIFY: "false",
    });
    expect((await insecure.kvGetText("k")).value).toBe("v");
  });

  test("unix socket", async () => {
    await using dir = tempDir("pd-consul-sock-");
    await using consul = await startConsulStandin({ unix: join(dir.path, "consul.sock") });
    const c = clientFor(consul.env);
    expect(c.address).toBe(`unix://${join(dir.path, "consul.sock")}`);
    expect(await c.kvPut("k", "over a socket")).toBe(true);
    expect((await c.kvGetText("k")).value).toBe("over a socket");
  });
});
