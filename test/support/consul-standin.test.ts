/**
 * Replays the real Consul 1.10.12 sessions captured in test/fixtures/consul-1.10/*.http.txt against
 * the stand-in, in the order they happened, and compares every answer byte for byte: status line,
 * header names, order and values (Date only for presence), body. Every *.http.txt is replayed
 * (the last test of the first block checks it):
 * - the older dev-agent captures (127.0.0.1:18500) against startConsulStandin, literally, raft
 *   indexes included (the script reproduces every write, also the ones only the CLI captures show);
 * - the three-node cluster captures (127.0.0.1-4:29500, health-notes.txt) against
 *   startConsulCluster, each request sent to the agent of the node the capture's URL names, compared
 *   after normalising what health-notes.txt lists as varying (see the cluster section below).
 *
 * Requests go over a raw socket, exactly as curl sent them, so the answer is seen as written on the
 * wire. One thing Bun does not let a server choose is the position of some headers: it writes its
 * "common" headers (Content-Type, Content-Security-Policy, X-Content-Type-Options…) before the others
 * and Content-Length last, where Go sorts the handler's headers and appends Date, Content-Length and a
 * sniffed Content-Type. Those captures (BUN_HEADER_ORDER, CLUSTER_BUN_HEADER_ORDER: `?raw` reads and
 * text/plain errors) are compared as sets of header lines, and the test fails if Bun ever matches Go's
 * order so the lists stay honest. Bodies over 2048 bytes are chunked exactly as Go sends them
 * (Transfer-Encoding: chunked after Date, no Content-Length): no deviation there.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import {
  type ConsulCluster,
  type ConsulStandin,
  eventIndex,
  goJson,
  startConsulCluster,
  startConsulStandin,
} from "./consul-standin.ts";
import { FIXTURES } from "./helpers.ts";

const DIR = join(FIXTURES, "consul-1.10");

/** Captures whose header order Bun cannot reproduce (see above); everything else must match in order. */
const BUN_HEADER_ORDER = new Set([
  "kv-get-raw.http.txt", // Content-Length sorted first by Go; X-Content-Type-Options after X-Consul-*
  "kv-get-empty-raw.http.txt",
  "kv-put-bad-flags.http.txt", // Content-Type sniffed by Go, after Content-Length
  "event-fire-too-large.http.txt",
]);

interface Capture {
  name: string;
  /** The agent the request went to (127.0.0.1 server, .2-.4 node-1..3 in the cluster captures). */
  host: string;
  method: string;
  target: string;
  body: string | undefined;
  statusLine: string;
  headers: [string, string][];
  responseBody: Buffer;
}

function loadCapture(name: string): Capture {
  const raw = readFileSync(join(DIR, name));
  const nl = raw.indexOf("\n");
  const cmd = raw.subarray(0, nl).toString("utf8");
  const m = /^\$ curl -s -i -X (\w+) '([^']+)' ?(.*)$/.exec(cmd);
  if (!m) throw new Error(`${name}: cannot read the curl line: ${cmd}`);
  const url = new URL(m[2]!);
  const target = m[2]!.slice(url.origin.length);
  let body: string | undefined;
  const data = /^--data(?:-binary)? (.*)$/.exec(m[3]!);
  if (data) {
    const synthetic = /^<(\d+) bytes of (.)>$/.exec(data[1]!);
    body = synthetic ? synthetic[2]!.repeat(Number(synthetic[1])) : data[1];
  }
  const response = raw.subarray(nl + 1);
  const { statusLine, headers, body: rest } = splitResponse(response);
  // curl -i shows a chunked body decoded; the capture tool appended a "\n" after it.
  const chunked = headers.some(([k, v]) => k === "Transfer-Encoding" && v === "chunked");
  const length = chunked
    ? rest.length - (rest.at(-1) === 0x0a ? 1 : 0)
    : Number(headers.find(([k]) => k === "Content-Length")?.[1]);
  // The capture tool appended a "\n" after most responses: nothing else may follow the body.
  expect(["", "\n"]).toContain(rest.subarray(length).toString());
  return {
    name,
    host: url.hostname,
    method: m[1]!,
    target,
    body,
    statusLine,
    headers,
    responseBody: rest.subarray(0, length),
  };
}

function splitResponse(buf: Buffer): { statusLine: string; headers: [string, string][]; body: Buffer } {
  const end = buf.indexOf("\r\n\r\n");
  if (end === -1) throw new Error(`no end of headers in: ${JSON.stringify(buf.toString())}`);
  const [statusLine, ...lines] = buf.subarray(0, end).toString("latin1").split("\r\n");
  const headers = lines.map((l): [string, string] => {
    const i = l.indexOf(": ");
    return [l.slice(0, i), l.slice(i + 2)];
  });
  return { statusLine: statusLine!, headers, body: buf.subarray(end + 4) };
}

/** Send a request as curl did (same target bytes, body, Content-Length) and read the raw answer. */
function rawRequest(port: number, method: string, target: string, body?: string): Promise<Buffer> {
  const payload = body === undefined ? "" : body;
  const head =
    `${method} ${target} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n` +
    (body === undefined
      ? ""
      : `Content-Length: ${Buffer.byteLength(payload)}\r\nContent-Type: application/x-www-form-urlencoded\r\n`) +
    "Connection: close\r\n\r\n";
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    Bun.connect({
      hostname: "127.0.0.1",
      port,
      socket: {
        open(s) {
          s.write(head + payload);
        },
        data(_s, d) {
          chunks.push(Buffer.from(d));
        },
        close() {
          resolve(Buffer.concat(chunks));
        },
        error(_s, err) {
          reject(err);
        },
      },
    }).catch(reject);
  });
}

function compare(cap: Capture, answer: Buffer): void {
  const got = splitResponse(answer);
  expect(got.statusLine).toBe(cap.statusLine);
  expect(got.headers.some(([k]) => k === "Date")).toBe(true);
  const want = cap.headers.filter(([k]) => k !== "Date").map(([k, v]) => `${k}: ${v}`);
  const have = got.headers.filter(([k]) => k !== "Date").map(([k, v]) => `${k}: ${v}`);
  if (BUN_HEADER_ORDER.has(cap.name)) {
    expect(have.toSorted()).toEqual(want.toSorted());
    // Keeps the list honest: if Bun ever writes these in Go's order, drop them from BUN_HEADER_ORDER.
    expect(have).not.toEqual(want);
  } else {
    expect(have).toEqual(want);
  }
  expect(got.body.toString("latin1")).toBe(cap.responseBody.toString("latin1"));
}

type Step =
  | { fixture: string; whileBlocked?: (c: ConsulStandin) => Promise<unknown> }
  | { what: string; run: (c: ConsulStandin) => Promise<unknown> };

async function put(c: ConsulStandin, target: string, body?: string): Promise<string> {
  const res = splitResponse(await rawRequest(c.port, "PUT", target, body));
  return `${res.statusLine.split(" ")[1]} ${res.body.toString()}`;
}

/** The whole captured session, in order. Steps without a capture are the writes the other captures imply. */
const SCRIPT: Step[] = [
  { fixture: "event-list-empty.http.txt" },
  {
    what: "consul event -name deploy s3://bucket/app.yml (event-cli.txt)",
    run: async (c) => {
      c.useIds("4c4dfaad-2a88-5a22-9721-8de5244e36ea");
      expect(await put(c, "/v1/event/fire/deploy", "s3://bucket/app.yml")).toStartWith("200 ");
    },
  },
  { fixture: "event-fire.http.txt" },
  { fixture: "event-fire-node-filter.http.txt" },
  { fixture: "event-fire-node-nomatch.http.txt" },
  { fixture: "event-list.http.txt" },
  { fixture: "event-list-all-names.http.txt" },
  { fixture: "event-list-blocking-nochange.http.txt" },
  { fixture: "event-fire-too-large.http.txt" },
  { fixture: "kv-put.http.txt" },
  { fixture: "kv-put-flags.http.txt" },
  { fixture: "kv-put-json-value.http.txt" },
  { fixture: "kv-get.http.txt" },
  { fixture: "kv-get-raw.http.txt" },
  { fixture: "kv-get-recurse.http.txt" },
  { fixture: "kv-get-recurse-raw.http.txt" },
  { fixture: "kv-get-keys.http.txt" },
  { fixture: "kv-get-keys-separator.http.txt" },
  { fixture: "kv-get-missing.http.txt" },
  { fixture: "kv-get-missing-raw.http.txt" },
  { fixture: "kv-cas0-new.http.txt" },
  { fixture: "kv-cas0-existing.http.txt" },
  { fixture: "kv-cas-current.http.txt" },
  { fixture: "kv-cas-stale.http.txt" },
  { fixture: "kv-get-after-cas.http.txt" },
  { fixture: "kv-put-empty.http.txt" },
  { fixture: "kv-get-empty.http.txt" },
  { fixture: "kv-get-empty-raw.http.txt" },
  { fixture: "kv-blocking-nochange.http.txt" },
  {
    fixture: "kv-blocking-change.http.txt",
    whileBlocked: async (c) =>
      expect(await put(c, "/v1/kv/deploy/app/manifest", "s3://bucket/app-v3.yml")).toBe("200 true\n"),
  },
  {
    what: "PUT unrelated/key (kv-notes.txt's recurse probe)",
    run: async (c) => expect(await put(c, "/v1/kv/unrelated/key", "x")).toBe("200 true\n"),
  },
  { fixture: "kv-delete.http.txt" },
  { fixture: "kv-delete-missing.http.txt" },
  { fixture: "kv-delete-cas-stale.http.txt" },
  { fixture: "kv-delete-recurse.http.txt" },
  {
    what: "consul kv put deploy/cli/key hello; a refused -cas -modify-index=1 (kv-cli.txt)",
    run: async (c) => {
      expect(await put(c, "/v1/kv/deploy/cli/key", "hello")).toBe("200 true\n");
      expect(await put(c, "/v1/kv/deploy/cli/key?cas=1", "x")).toBe("200 false\n");
      expect(c.kvEntry("deploy/cli/key")?.createIndex).toBe(28);
    },
  },
  {
    what: "session deploy-lock with a 1s lock-delay (session-info.http.txt shows it)",
    run: async (c) => {
      c.useIds("73db4d26-48d2-a4b6-7ab2-d8f689eab41a");
      const body = '{"Name":"deploy-lock","TTL":"15s","Behavior":"release","LockDelay":"1s"}';
      expect(await put(c, "/v1/session/create", body)).toStartWith("200 ");
    },
  },
  { fixture: "session-create.http.txt" },
  { fixture: "session-info.http.txt" },
  { fixture: "session-list.http.txt" },
  { fixture: "kv-acquire.http.txt" },
  { fixture: "kv-get-locked.http.txt" },
  { fixture: "kv-acquire-other-session.http.txt" },
  { fixture: "kv-release-wrong-session.http.txt" },
  { fixture: "kv-release.http.txt" },
  { fixture: "kv-get-released.http.txt" },
  { fixture: "session-renew.http.txt" },
  { fixture: "session-destroy.http.txt" },
  { fixture: "kv-acquire-lockdelay.http.txt" },
  { fixture: "session-destroy-2.http.txt" },
  { fixture: "kv-put-bad-flags.http.txt" },
  {
    what: "consul lock locks/app: the holder's session and its .lock (lock-cli-holder.txt)",
    run: async (c) => {
      c.useIds("f8013f24-b524-1152-1f9a-b60e71405f67");
      const name = `Consul lock for 'echo "holder got lock"; sleep 4; echo holder done' at 'locks/app'`;
      expect(
        await put(c, "/v1/session/create", JSON.stringify({ Name: name, TTL: "15s", Behavior: "release" })),
      ).toStartWith("200 ");
      expect(
        await put(
          c,
          "/v1/kv/locks/app/.lock?acquire=f8013f24-b524-1152-1f9a-b60e71405f67&flags=3304740253564472344",
          "",
        ),
      ).toBe("200 true\n");
    },
  },
  { fixture: "lock-cli-sessions-while-held.http.txt" },
  { fixture: "lock-cli-kv-while-held.http.txt" },
  {
    what: "a contender's session comes and goes; the holder releases, deletes .lock (cas) and its session",
    run: async (c) => {
      const contender = JSON.parse((await put(c, "/v1/session/create", '{"TTL":"15s"}')).slice(4)).ID as string;
      expect(await put(c, `/v1/session/destroy/${contender}`)).toBe("200 true\n");
      expect(
        await put(
          c,
          "/v1/kv/locks/app/.lock?flags=3304740253564472344&release=f8013f24-b524-1152-1f9a-b60e71405f67",
          "",
        ),
      ).toBe("200 true\n");
      const del = splitResponse(await rawRequest(c.port, "DELETE", "/v1/kv/locks/app/.lock?cas=43"));
      expect(del.body.toString()).toBe("true\n");
      expect(await put(c, "/v1/session/destroy/f8013f24-b524-1152-1f9a-b60e71405f67")).toBe("200 true\n");
    },
  },
  { fixture: "lock-cli-kv-after.http.txt" },
];

describe("the stand-in replays Consul 1.10.12's captured session", () => {
  let consul: ConsulStandin;
  beforeAll(async () => {
    consul = await startConsulStandin();
  });
  afterAll(async () => {
    await consul.stop();
  });

  for (const step of SCRIPT) {
    if ("what" in step) {
      test(`(${step.what})`, async () => {
        await step.run(consul);
      });
      continue;
    }
    test(step.fixture, async () => {
      const cap = loadCapture(step.fixture);
      // Event and session IDs are random in Consul: hand the captured one to the stand-in.
      if (
        cap.method === "PUT" &&
        /^\/v1\/(event\/fire|session\/create)/.test(cap.target) &&
        cap.statusLine.includes(" 200 ")
      ) {
        consul.useIds(JSON.parse(cap.responseBody.toString()).ID);
      }
      let answer: Buffer;
      if (step.whileBlocked) {
        const pending = rawRequest(consul.port, cap.method, cap.target, cap.body);
        await consul.waitForBlocked({ path: new URL(cap.target, "http://x").pathname });
        await step.whileBlocked(consul);
        answer = await pending;
      } else {
        answer = await rawRequest(consul.port, cap.method, cap.target, cap.body);
      }
      compare(cap, answer);
    });
  }

  test("every *.http.txt capture is in the replay", () => {
    const all = readdirSync(DIR)
      .filter((f) => f.endsWith(".http.txt"))
      .sort();
    const replayed = [...SCRIPT, ...CLUSTER_SCRIPT, ...CLUSTER2_SCRIPT]
      .flatMap((s) => ("fixture" in s ? [s.fixture] : []))
      .sort();
    expect(replayed).toEqual(all);
  });
});

describe("details the captures pin down", () => {
  test("the event list's index is the last event ID's halves XORed (watch CONSUL_INDEX values)", () => {
    expect(eventIndex("f4e50f41-d645-b52c-d385-1db2de63a736")).toBe(2837288600266478106n);
    // watch-2/watch-3 env: CONSUL_INDEX after the CLI and the HTTP event.
    expect(eventIndex("4c4dfaad-2a88-5a22-9721-8de5244e36ea")).toBe(15811143543160204488n);
    expect(eventIndex("5fecab1d-d429-652a-925c-a6ccf1d1d5d8")).toBe(14821361565612683506n);
  });

  test("Go's JSON: HTML escaping, sorted maps, exact uint64, compact without dev mode", () => {
    expect(
      goJson(
        {
          a: '<&>\u2028"\\\n\u0001',
          m: new Map([
            ["b", 1],
            ["a", 2],
          ]),
          f: 3304740253564472344n,
        },
        false,
      ),
    ).toBe('{"a":"\\u003c\\u0026\\u003e\\u2028\\"\\\\\\n\\u0001","m":{"a":2,"b":1},"f":3304740253564472344}');
    expect(goJson([], true)).toBe("[]\n");
  });

  test("the largest payload for 'deploy' is 404 bytes; beyond 434 serf refuses before encoding", async () => {
    await using c = await startConsulStandin();
    const fire = async (n: number) => {
      const res = await fetch(`${c.url}/v1/event/fire/deploy`, { method: "PUT", body: "x".repeat(n) });
      return `${res.status} ${res.status === 200 ? "" : await res.text()}`;
    };
    expect(await fire(404)).toBe("200 ");
    expect(await fire(405)).toContain("encoded user event exceeds configured limit of 512 bytes after encoding");
    expect(await fire(435)).toContain("user event exceeds configured limit of 512 bytes before encoding");
  });

  test("an identical re-PUT changes nothing and wakes nobody; a flags change does (kv-notes.txt)", async () => {
    await using c = await startConsulStandin();
    c.kvPut("k", "v");
    const before = c.kvEntry("k")!.modifyIndex;
    const pending = fetch(`${c.url}/v1/kv/k?index=${before}&wait=30s`);
    await c.waitForBlocked({ path: "/v1/kv/k" });
    expect(await put(c, "/v1/kv/k", "v")).toBe("200 true\n"); // consumes raft index before+1, changes nothing
    expect(c.kvEntry("k")!.modifyIndex).toBe(before);
    expect(await put(c, "/v1/kv/k?flags=1", "v")).toBe("200 true\n");
    const res = await pending;
    // The blocked read answered the flags change, not the identical write.
    expect(res.headers.get("x-consul-index")).toBe(String(before + 2));
    expect(((await res.json()) as { Flags: number }[])[0]!.Flags).toBe(1);
  });

  test("an agent keeps only the events that pass its node, service and tag filters", async () => {
    await using c = await startConsulStandin();
    c.addNode("dev", { services: ["web"], tags: ["blue"] });
    c.addNode("web1", { services: ["web"], tags: ["green"] });
    c.addNode("db1", { services: ["db"] });
    const all = c.fireEvent("deploy", "a");
    const blue = c.fireEvent("deploy", "b", { service: "web", tag: "blue" });
    const db = c.fireEvent("deploy", "c", { service: "db" });
    const web = c.fireEvent("deploy", "d", { node: "^web" });
    expect(c.receivers(all)).toEqual(["db1", "dev", "web1"]);
    expect(c.receivers(blue)).toEqual(["dev"]);
    expect(c.receivers(db)).toEqual(["db1"]);
    expect(c.receivers(web)).toEqual(["web1"]);
    expect(c.agentEvents.map((e) => e.payload && new TextDecoder().decode(e.payload))).toEqual(["a", "b"]);
    expect(c.fired.map((e) => e.ltime)).toEqual([2, 3, 4, 5]);
    expect(() => c.fireEvent("deploy", "x", { tag: "blue" })).toThrow(
      "Cannot provide tag filter without service filter",
    );
  });

  test("an agent holds the last 256 events", async () => {
    await using c = await startConsulStandin();
    for (let i = 0; i < 300; i++) c.fireEvent("deploy", String(i));
    expect(c.agentEvents).toHaveLength(256);
    expect(new TextDecoder().decode(c.agentEvents[0]!.payload!)).toBe("44");
    const res = await fetch(`${c.url}/v1/event/list?name=deploy`);
    const last = c.agentEvents[255]!;
    expect(res.headers.get("x-consul-index")).toBe(String(eventIndex(last.id)));
    expect(((await res.json()) as unknown[]).length).toBe(256);
  });

  test("a token is required when ACLs are on: 403 Permission denied without, ACL not found with another", async () => {
    await using c = await startConsulStandin({ requireToken: "s3cret" });
    const get = async (headers: Record<string, string>, q = "") => {
      const res = await fetch(`${c.url}/v1/kv/x${q}`, { headers });
      return `${res.status} ${res.headers.get("x-consul-default-acl-policy")} ${await res.text()}`;
    };
    expect(await get({})).toBe("403 deny Permission denied");
    expect(await get({ "X-Consul-Token": "nope" })).toBe("403 deny ACL not found");
    expect(await get({ "X-Consul-Token": "s3cret" })).toBe("404 deny ");
    expect(await get({}, "?token=s3cret")).toBe("404 deny ");
    expect(await get({ Authorization: "Bearer s3cret" })).toBe("404 deny ");
  });

  test("restart on the same port: events are gone; with wipe, KV and indices start over", async () => {
    await using c = await startConsulStandin();
    const port = c.port;
    c.kvPut("a", "1");
    c.fireEvent("deploy", "x");
    await c.restart();
    expect(c.port).toBe(port);
    expect(c.agentEvents).toHaveLength(0);
    expect((await fetch(`${c.url}/v1/kv/a?raw`)).status).toBe(200);
    await c.restart({ wipe: true });
    expect(c.port).toBe(port);
    const res = await fetch(`${c.url}/v1/kv/a`);
    expect(res.status).toBe(404);
    expect(res.headers.get("x-consul-index")).toBe("1");
  });
});

// ================================================================== the three-node cluster captures

/**
 * The cluster captures (health-notes.txt) replayed against startConsulCluster, in the order they were
 * made, each request sent to the agent of the node whose address the capture's URL shows. The steps
 * without a capture are the writes and events the notes and narratives describe between them.
 *
 * Compared byte for byte after normalising only what health-notes.txt lists as varying run to run:
 * the Date header (presence only), raft indexes (X-Consul-Index, CreateIndex, ModifyIndex), event
 * LTimes, ContentHash / X-Consul-Contenthash (must still agree with each other), and so Content-Length
 * (checked against the body actually sent, then compared as a placeholder). UUIDs are not normalised:
 * the captured session and event IDs are handed to the stand-in (useIds) and the node IDs given as
 * options, so they must come out literally, and with them every order that depends on them.
 * Chunked answers are decoded (curl -i shows them decoded); "Transfer-Encoding: chunked" itself and
 * the absence of Content-Length are compared.
 *
 * Requests that named a raft index (?index= of a blocking read, ?cas= of a .lock update) get the
 * stand-in's own index in its place; blocking reads that ran out their wait=5s get wait=150ms (the
 * answer does not depend on it). Timed events (TTL expiry, node failure, lock-delay) are driven with
 * the cluster's controls instead of waited out.
 */
const CLUSTER_HOSTS: Record<string, string> = {
  "127.0.0.1": "server",
  "127.0.0.2": "node-1",
  "127.0.0.3": "node-2",
  "127.0.0.4": "node-3",
};

/** Text error answers: Go writes Content-Type after Content-Length (sniffed), Bun first. */
const CLUSTER_BUN_HEADER_ORDER = new Set([
  "agent-check-pass-unknown.http.txt",
  "agent-check-update-bad-status.http.txt",
  "agent-check-update-unknown.http.txt",
  "session-create-critical-check.http.txt",
  "session-create-unknown-check.http.txt",
  "session-create-ttl-too-short.http.txt",
  "session-info-bad-id.http.txt",
  "session-renew-invalidated.http.txt",
  "kv-acquire-invalidated-session.http.txt",
  "semaphore-lock-key-raw.http.txt",
]);

type ClusterStep =
  | {
      fixture: string;
      target?: (c: ConsulCluster, cap: Capture) => Promise<string>;
      whileBlocked?: (c: ConsulCluster) => Promise<unknown>;
    }
  | { what: string; run: (c: ConsulCluster) => Promise<unknown> };

function dechunk(buf: Buffer): Buffer {
  const out: Buffer[] = [];
  let at = 0;
  for (;;) {
    const eol = buf.indexOf("\r\n", at);
    const size = Number.parseInt(buf.subarray(at, eol).toString(), 16);
    if (size === 0) return Buffer.concat(out);
    out.push(buf.subarray(eol + 2, eol + 2 + size));
    at = eol + 2 + size + 2;
  }
}

const normBody = (b: string) =>
  b
    .replace(/"(CreateIndex|ModifyIndex|LTime)":\d+/g, '"$1":<n>')
    .replace(/"ContentHash":"[0-9a-f]+"/g, '"ContentHash":"<hash>"');

function normHeaders(headers: [string, string][], body: Buffer): string[] {
  return headers
    .filter(([k]) => k !== "Date")
    .map(([k, v]) => {
      if (k === "Content-Length") {
        expect(Number(v)).toBe(body.length);
        return "Content-Length: <len>";
      }
      if (k === "X-Consul-Index" || k === "X-Consul-Contenthash") return `${k}: <n>`;
      return `${k}: ${v}`;
    });
}

function compareNormalized(cap: Capture, answer: Buffer): void {
  const got = splitResponse(answer);
  const chunked = got.headers.some(([k, v]) => k === "Transfer-Encoding" && v === "chunked");
  const body = chunked ? dechunk(got.body) : got.body;
  expect(got.statusLine).toBe(cap.statusLine);
  expect(got.headers.some(([k]) => k === "Date")).toBe(true);
  const want = normHeaders(cap.headers, cap.responseBody);
  const have = normHeaders(got.headers, body);
  if (CLUSTER_BUN_HEADER_ORDER.has(cap.name)) {
    expect(have.toSorted()).toEqual(want.toSorted());
    expect(have).not.toEqual(want);
  } else {
    expect(have).toEqual(want);
  }
  const hash = got.headers.find(([k]) => k === "X-Consul-Contenthash")?.[1];
  if (hash !== undefined) expect(body.toString()).toContain(`"ContentHash":"${hash}"`);
  expect(normBody(body.toString("latin1"))).toBe(normBody(cap.responseBody.toString("latin1")));
}

async function call(
  c: ConsulCluster,
  node: string,
  method: string,
  target: string,
  body?: string,
): Promise<{ status: number; text: string; index: string | null }> {
  const res = await fetch(`${c.node(node).url}${target}`, { method, body });
  return { status: res.status, text: await res.text(), index: res.headers.get("x-consul-index") };
}
const cput = async (c: ConsulCluster, node: string, target: string, body?: string) => {
  const r = await call(c, node, "PUT", target, body);
  return `${r.status} ${r.text}`;
};

/** The blocking read's target with the stand-in's current index for it (and, optionally, a shorter wait). */
function atCurrentIndex(wait?: string) {
  return async (c: ConsulCluster, cap: Capture) => {
    const node = CLUSTER_HOSTS[cap.host]!;
    const plain = cap.target.replace(/[?&]index=\d+/, "").replace(/[?&]wait=[^&]+/, "");
    const { index } = await call(c, node, "GET", plain);
    let t = cap.target.replace(/index=\d+/, `index=${index}`);
    if (wait) t = t.replace(/wait=[^&]+/, `wait=${wait}`);
    return t;
  };
}

const ID = {
  sa: "468f5903-1332-edc0-a51d-126457999f2d",
  sc: "a9fbd538-c6b3-acda-a1f1-12ba2e7ea5e7",
  sd: "b88752fa-34ec-61fc-af1a-2b9b218f3e72",
  sb: "085043e9-d6bb-9bfe-bbcb-2e3f227cd46d",
  a: "26777aff-d189-4523-30a5-5d7adcb6125c",
  b: "6b75fdc4-67e3-cd8c-e736-15f9df9fa84e",
  cs: "3deecd3e-c066-944f-b315-3d5e679fad28",
  sem1: "2036682f-e3f7-975b-743e-3cc99581dddd",
  sem2: "b5f4fcc5-5126-694b-c4b7-35bb2813008f",
  sem3: "98afaaa8-4d78-26a5-1c6a-d35874f7f97b",
  r1: "af61a60b-5fd8-f31e-80cf-32c2a1aff695",
  r2: "b52ec1bb-5ce0-a576-3b27-34e40feca997",
  r3: "7d9d6698-d172-b346-fbe9-86c72cb73e4a",
};
const SEM_FLAGS = "16210313421097356768";
const lockValue = (holders: string[]) =>
  JSON.stringify({ Limit: 2, Holders: Object.fromEntries(holders.toSorted().map((h) => [h, true])) });
let recipeLockIndex = "";

const CLUSTER_SCRIPT: ClusterStep[] = [
  // TTL checks (14:16:00)
  { fixture: "agent-service-register.http.txt" },
  { fixture: "agent-service-register-checks.http.txt" },
  { fixture: "agent-checks-initial.http.txt" },
  { fixture: "agent-check-pass-service-id.http.txt" },
  { fixture: "agent-checks-node-2.http.txt" },
  { fixture: "agent-check-pass.http.txt" },
  { fixture: "agent-checks-passing.http.txt" },
  { fixture: "agent-check-warn.http.txt" },
  { fixture: "agent-checks-warning.http.txt" },
  { fixture: "agent-check-fail.http.txt" },
  { fixture: "agent-checks-critical.http.txt" },
  { fixture: "agent-check-update.http.txt" },
  { fixture: "agent-checks-updated.http.txt" },
  { fixture: "agent-check-pass-unknown.http.txt" },
  { fixture: "agent-check-update-bad-status.http.txt" },
  { fixture: "agent-check-update-unknown.http.txt" },
  // agent, catalog, health (14:16:19)
  {
    what: "node-1's memberlist happens to list node-2, node-1, server, node-3",
    run: async (c) => {
      c.node("node-1").memberOrder = ["node-2", "node-1", "server", "node-3"];
    },
  },
  { fixture: "agent-members.http.txt" },
  { fixture: "agent-self.http.txt" },
  { fixture: "agent-service-web-1.http.txt" },
  { fixture: "agent-services.http.txt" },
  { fixture: "catalog-nodes.http.txt" },
  { fixture: "catalog-service.http.txt" },
  { fixture: "catalog-services.http.txt" },
  { fixture: "catalog-node-missing.http.txt" },
  { fixture: "catalog-node.http.txt" },
  {
    what: "web-2 warns: degraded",
    run: async (c) => expect(await cput(c, "node-2", "/v1/agent/check/warn/service:web-2?note=degraded")).toBe("200 "),
  },
  { fixture: "health-checks-web.http.txt" },
  { fixture: "health-node.http.txt" },
  { fixture: "health-service-passing.http.txt" },
  { fixture: "health-service.http.txt" },
  {
    what: "web-2 fails: connection refused",
    run: async (c) =>
      expect(await cput(c, "node-2", "/v1/agent/check/fail/service:web-2?note=connection%20refused")).toBe("200 "),
  },
  { fixture: "health-state-critical.http.txt" },
  {
    fixture: "health-service-blocking-change.http.txt",
    target: atCurrentIndex(),
    whileBlocked: async (c) =>
      expect(await cput(c, "node-2", "/v1/agent/check/pass/service:web-2?note=recovered")).toBe("200 "),
  },
  { fixture: "health-service-blocking-nochange.http.txt", target: atCurrentIndex("150ms") },
  {
    fixture: "health-service-blocking-output-only.http.txt",
    target: atCurrentIndex("150ms"),
    whileBlocked: async (c) =>
      expect(await cput(c, "node-1", "/v1/agent/check/pass/web-ttl?note=release%20v3%20ok")).toBe("200 "),
  },
  // sessions tied to a service check (14:17:28, session-check-failure.txt)
  {
    what: "web-2 critical again",
    run: async (c) => expect(await cput(c, "node-2", "/v1/agent/check/fail/service:web-2")).toBe("200 "),
  },
  { fixture: "session-create-critical-check.http.txt" },
  { fixture: "session-create-unknown-check.http.txt" },
  {
    what: "web-2 passing",
    run: async (c) => expect(await cput(c, "node-2", "/v1/agent/check/pass/service:web-2")).toBe("200 "),
  },
  { fixture: "session-create-service-check.http.txt" },
  { fixture: "session-info-service-check.http.txt" },
  { fixture: "session-info-bad-id.http.txt" },
  { fixture: "kv-acquire-slot-node-2.http.txt" },
  { fixture: "kv-get-slot-held.http.txt" },
  { fixture: "session-create-ttl.http.txt" },
  { fixture: "session-create-ttl-delete.http.txt" },
  {
    what: "node-3 takes its two slots (session-ttl-expiry.txt)",
    run: async (c) => {
      expect(await cput(c, "node-3", `/v1/kv/pulldeploy/slots/node-3?acquire=${ID.sc}`, "node-3")).toBe("200 true");
      expect(await cput(c, "node-3", `/v1/kv/pulldeploy/slots/node-3-delete?acquire=${ID.sd}`, "node-3-delete")).toBe(
        "200 true",
      );
    },
  },
  { fixture: "session-info-ttl.http.txt" },
  {
    what: "web-2 warns (slow), then nobody refreshes: both web TTLs run out; the TTL sessions are never renewed",
    run: async (c) => {
      expect(await cput(c, "node-2", "/v1/agent/check/warn/service:web-2?note=slow")).toBe("200 ");
      expect(c.sessions.has(ID.sa)).toBe(true); // warning does not invalidate
      c.expireCheckTtl("node-1", "web-ttl");
      c.expireCheckTtl("node-2", "service:web-2");
      expect(c.sessions.has(ID.sa)).toBe(false);
      c.expireSession(ID.sc);
      c.expireSession(ID.sd);
    },
  },
  { fixture: "agent-checks-ttl-expired.http.txt" },
  { fixture: "health-checks-ttl-expired.http.txt" },
  { fixture: "kv-get-slot-after-check-critical.http.txt" },
  { fixture: "kv-get-slot-after-ttl-delete.http.txt" },
  { fixture: "kv-get-slot-after-ttl-expiry.http.txt" },
  { fixture: "session-info-invalidated.http.txt" },
  {
    what: "web-2 passing",
    run: async (c) => expect(await cput(c, "node-2", "/v1/agent/check/pass/service:web-2")).toBe("200 "),
  },
  { fixture: "session-create-servicechecks-field.http.txt" },
  { fixture: "session-info-servicechecks-field.http.txt" },
  {
    what: "node-2 takes pulldeploy/slots/node-2-sc; then its check fails (crashed)",
    run: async (c) => {
      expect(await cput(c, "node-2", `/v1/kv/pulldeploy/slots/node-2-sc?acquire=${ID.sb}`, "node-2-sc")).toBe(
        "200 true",
      );
      expect(await cput(c, "node-2", "/v1/agent/check/fail/service:web-2?note=crashed")).toBe("200 ");
      expect(c.sessions.has(ID.sb)).toBe(false);
    },
  },
  { fixture: "kv-get-slot-after-check-fail.http.txt" },
  { fixture: "agent-check-register-ttl.http.txt" },
  { what: "ttl-demo's 2s TTL runs out", run: async (c) => c.expireCheckTtl("node-3", "ttl-demo") },
  { fixture: "agent-checks-ttl-expired-no-output.http.txt" },
  { fixture: "agent-check-deregister.http.txt" },
  // sessions tied to serfHealth, node-1 killed -9 (14:19:35, session-node-death.txt)
  { fixture: "session-create-node.http.txt" },
  { fixture: "session-create-node-ttl.http.txt" },
  { fixture: "session-info-node.http.txt" },
  { fixture: "session-node-list.http.txt" },
  { fixture: "kv-acquire-slot-node-1.http.txt" },
  {
    what: "node-1-ttl taken; a contender session on node-2 is refused the slot",
    run: async (c) => {
      expect(await cput(c, "node-1", `/v1/kv/pulldeploy/slots/node-1-ttl?acquire=${ID.b}`, "node-1-ttl")).toBe(
        "200 true",
      );
      c.useIds(ID.cs);
      expect(
        await cput(
          c,
          "node-2",
          "/v1/session/create",
          '{"Name":"contender-node-2","Checks":["serfHealth"],"LockDelay":"1s","Behavior":"release"}',
        ),
      ).toBe(`200 {"ID":"${ID.cs}"}`);
      expect(await cput(c, "node-2", `/v1/kv/pulldeploy/slots/node-1?acquire=${ID.cs}`, "node-2")).toBe("200 false");
    },
  },
  { fixture: "kv-get-slot-node-1-held.http.txt" },
  {
    what: "kill -9 node-1: refused at once; serfHealth critical and both sessions gone together",
    run: async (c) => {
      const url = c.node("node-1").url;
      await c.killNode("node-1");
      await expect(fetch(`${url}/v1/agent/self`)).rejects.toThrow();
      await c.waitFor(() => !c.sessions.has(ID.a) && !c.sessions.has(ID.b), "node-1's sessions invalidated");
      expect(c.kvEntry("pulldeploy/slots/node-1")!.modifyIndex).toBe(
        c.kvEntry("pulldeploy/slots/node-1-ttl")!.modifyIndex,
      );
    },
  },
  { fixture: "kv-acquire-in-lock-delay.http.txt" },
  { fixture: "agent-members-node-dead.http.txt" },
  { fixture: "catalog-nodes-node-dead.http.txt" },
  { fixture: "health-node-dead.http.txt" },
  { fixture: "health-service-passing-none.http.txt" },
  { fixture: "kv-get-slot-after-node-death.http.txt" },
  {
    what: "the lock-delay ends: the contender takes the slot",
    run: async (c) => {
      c.endLockDelay("pulldeploy/slots/node-1");
      expect(await cput(c, "node-2", `/v1/kv/pulldeploy/slots/node-1?acquire=${ID.cs}`, "node-2")).toBe("200 true");
    },
  },
  { fixture: "kv-get-slot-taken-over.http.txt" },
  { fixture: "session-list-after-node-death.http.txt" },
  { what: "restart node-1", run: (c) => c.restartNode("node-1") },
  { fixture: "agent-checks-after-restart.http.txt" },
  { fixture: "agent-services-after-restart.http.txt" },
  { fixture: "event-list-after-restart.http.txt" },
  { fixture: "health-node-after-restart.http.txt" },
  { fixture: "session-node-after-restart.http.txt" },
  // semaphore, consul lock -n 2 on three nodes (14:21:15, semaphore-3-nodes.txt)
  {
    what: "consul lock -n 2 pulldeploy/sem on node-1, node-2, node-3: two hold, node-3 waits",
    run: async (c) => {
      expect(await cput(c, "node-2", `/v1/session/destroy/${ID.cs}`)).toBe("200 true");
      for (const [node, id] of [
        ["node-1", ID.sem1],
        ["node-2", ID.sem2],
        ["node-3", ID.sem3],
      ] as const) {
        c.useIds(id);
        const name =
          `Consul lock for 'echo $(date +%s.%N) ${node} got slot; sleep 60; echo ${node} done' at ` +
          "'pulldeploy/sem'";
        expect(
          await cput(
            c,
            node,
            "/v1/session/create",
            JSON.stringify({ Name: name, LockDelay: "15s", Behavior: "delete", TTL: "15s" }),
          ),
        ).toBe(`200 {"ID":"${id}"}`);
        expect(await cput(c, node, `/v1/kv/pulldeploy/sem/${id}?acquire=${id}&flags=${SEM_FLAGS}`)).toBe("200 true");
        const lock = c.kvEntry("pulldeploy/sem/.lock");
        const holders = lock ? Object.keys(JSON.parse(Buffer.from(lock.value).toString()).Holders) : [];
        if (holders.length < 2) {
          const cas = lock ? lock.modifyIndex : 0;
          expect(
            await cput(
              c,
              node,
              `/v1/kv/pulldeploy/sem/.lock?cas=${cas}&flags=${SEM_FLAGS}`,
              lockValue([...holders, id]),
            ),
          ).toBe("200 true");
        }
      }
    },
  },
  { fixture: "semaphore-kv-while-held.http.txt" },
  { fixture: "semaphore-lock-key-raw.http.txt" },
  { fixture: "semaphore-sessions.http.txt" },
  {
    what: "kill -9 node-1: its session dies, its contender key goes (delete); node-3 prunes .lock and takes the slot",
    run: async (c) => {
      await c.killNode("node-1");
      await c.waitFor(() => !c.sessions.has(ID.sem1), "the dead holder's session invalidated");
      expect(c.kvEntry(`pulldeploy/sem/${ID.sem1}`)).toBeUndefined();
      const lock = c.kvEntry("pulldeploy/sem/.lock")!;
      expect(
        await cput(
          c,
          "node-3",
          `/v1/kv/pulldeploy/sem/.lock?cas=${lock.modifyIndex}&flags=${SEM_FLAGS}`,
          lockValue([ID.sem2, ID.sem3]),
        ),
      ).toBe("200 true");
    },
  },
  { fixture: "semaphore-kv-after-holder-death.http.txt" },
  {
    what: "SIGTERM to the other two: each gives up its slot, the last deletes .lock",
    run: async (c) => {
      for (const [node, id] of [
        ["node-2", ID.sem2],
        ["node-3", ID.sem3],
      ] as const) {
        expect((await call(c, node, "DELETE", `/v1/kv/pulldeploy/sem/${id}`)).text).toBe("true");
        expect(await cput(c, node, `/v1/session/destroy/${id}`)).toBe("200 true");
      }
      expect((await call(c, "node-3", "DELETE", "/v1/kv/pulldeploy/sem/.lock")).text).toBe("true");
    },
  },
  { fixture: "semaphore-kv-after-release.http.txt" },
  { what: "restart node-1", run: (c) => c.restartNode("node-1") },
  // the same recipe by hand (14:21:51)
  {
    what: "one Behavior delete session per node for pulldeploy/sem2",
    run: async (c) => {
      for (const [node, id] of [
        ["node-1", ID.r1],
        ["node-2", ID.r2],
        ["node-3", ID.r3],
      ] as const) {
        c.useIds(id);
        expect(await cput(c, node, "/v1/session/create", '{"Behavior":"delete"}')).toBe(`200 {"ID":"${id}"}`);
      }
    },
  },
  { fixture: "semaphore-contender-acquire.http.txt" },
  { fixture: "semaphore-lock-create-cas0.http.txt" },
  {
    what: "node-2's contender key",
    run: async (c) =>
      expect(await cput(c, "node-2", `/v1/kv/pulldeploy/sem2/${ID.r2}?acquire=${ID.r2}&flags=${SEM_FLAGS}`)).toBe(
        "200 true",
      ),
  },
  {
    fixture: "semaphore-lock-update-cas.http.txt",
    target: async (c, cap) => {
      recipeLockIndex = String(c.kvEntry("pulldeploy/sem2/.lock")!.modifyIndex);
      return cap.target.replace(/cas=\d+/, `cas=${recipeLockIndex}`);
    },
  },
  {
    what: "node-3's contender key",
    run: async (c) =>
      expect(await cput(c, "node-3", `/v1/kv/pulldeploy/sem2/${ID.r3}?acquire=${ID.r3}&flags=${SEM_FLAGS}`)).toBe(
        "200 true",
      ),
  },
  {
    fixture: "semaphore-lock-update-cas-stale.http.txt",
    target: async (_c, cap) => cap.target.replace(/cas=\d+/, `cas=${recipeLockIndex}`),
  },
  { fixture: "semaphore-recipe-kv.http.txt" },
  {
    what: "destroy node-1's session",
    run: async (c) => expect(await cput(c, "node-1", `/v1/session/destroy/${ID.r1}`)).toBe("200 true"),
  },
  { fixture: "semaphore-recipe-kv-after-destroy.http.txt" },
  // events in the cluster (14:22:07, event-cluster-filters.txt)
  {
    what: "gossip held; five events fired through node-2, the CLI's through node-3",
    run: async (c) => {
      c.holdEvents();
      const fires: [string, string, string, string][] = [
        ["node-2", "371d0f53-fbc8-41b9-6b4d-ed420d3deddb", "node=%5Enode-%5B12%5D%24", "to-node-1-2"],
        ["node-2", "6d78e6d1-2433-d7f6-e3c5-e1451a1054a4", "service=web", "to-web"],
        ["node-2", "c26ba8dc-c9c4-aed7-a459-2444081f0f61", "service=web&tag=blue", "to-web-blue"],
        ["node-2", "e0965d65-ee42-e5ee-1929-126c442abd13", "node=%5Enode-3%24&service=web", "to-nobody"],
        ["node-2", "a78cfa84-0b3f-3fe5-674a-82d7eca80ce7", "node=node", "node-substring"],
        ["node-3", "5408fb88-6e4c-a59a-6a66-38d434b360af", "node=%5Enode-%5B23%5D%24", "cli-node-2-3"],
      ];
      for (const [node, id, q, body] of fires) {
        c.useIds(id);
        expect(await cput(c, node, `/v1/event/fire/deploy?${q}`, body)).toStartWith(`200 {"ID":"${id}"`);
      }
    },
  },
  { fixture: "event-fire-node-regexp.http.txt" },
  { fixture: "event-fire-service.http.txt" },
  {
    what: "gossip delivers them in the order the agents' lists show (LTime 3, 6, 2, 4, 5, 7, 9, 8)",
    run: async (c) => {
      c.releaseEvents([
        "6d78e6d1-2433-d7f6-e3c5-e1451a1054a4",
        "a78cfa84-0b3f-3fe5-674a-82d7eca80ce7",
        "371d0f53-fbc8-41b9-6b4d-ed420d3deddb",
        "c26ba8dc-c9c4-aed7-a459-2444081f0f61",
        "e0965d65-ee42-e5ee-1929-126c442abd13",
        "5408fb88-6e4c-a59a-6a66-38d434b360af",
        "d380c9a8-49a9-e755-b862-ae51144127fe",
        "5f4ce67e-102f-4db6-5483-34fadf1166de",
      ]);
    },
  },
  { fixture: "event-list-node-1.http.txt" },
  { fixture: "event-list-node-2.http.txt" },
  { fixture: "event-list-node-3.http.txt" },
  { fixture: "event-list-server.http.txt" },
  // a dead session (14:23), a short TTL (14:25)
  {
    what: "minutes later: node-3's slot is long out of its lock-delay",
    run: async (c) => c.endLockDelay("pulldeploy/slots/node-3"),
  },
  { fixture: "kv-acquire-invalidated-session.http.txt" },
  { fixture: "session-renew-invalidated.http.txt" },
  { fixture: "session-create-ttl-too-short.http.txt" },
];

/** The second cluster (14:27): both web checks registered passing, node-1 killed under a blocking ?passing read. */
const CLUSTER2_SCRIPT: ClusterStep[] = [
  { fixture: "agent-service-register-initial-passing.http.txt" },
  {
    what: "node-2 registers web-2 the same way",
    run: async (c) =>
      expect(
        await cput(
          c,
          "node-2",
          "/v1/agent/service/register",
          '{"Name":"web","ID":"web-2","Port":8080,"Check":{"CheckID":"web-ttl","TTL":"60s","Status":"passing"}}',
        ),
      ).toBe("200 "),
  },
  { fixture: "agent-checks-initial-passing.http.txt" },
  {
    fixture: "health-service-passing-blocking-node-death.http.txt",
    target: atCurrentIndex(),
    whileBlocked: (c) => c.killNode("node-1"),
  },
  { fixture: "health-service-passing-node-dead.http.txt" },
];

function replayCluster(title: string, script: ClusterStep[], start: () => Promise<ConsulCluster>): void {
  describe(title, () => {
    let cluster: ConsulCluster;
    beforeAll(async () => {
      cluster = await start();
    });
    afterAll(async () => {
      await cluster.stop();
    });
    for (const step of script) {
      if ("what" in step) {
        test(`(${step.what})`, async () => {
          await step.run(cluster);
        });
        continue;
      }
      test(step.fixture, async () => {
        const cap = loadCapture(step.fixture);
        const agent = cluster.node(CLUSTER_HOSTS[cap.host]!);
        if (
          cap.method === "PUT" &&
          /^\/v1\/(event\/fire|session\/create)/.test(cap.target) &&
          cap.statusLine.includes(" 200 ")
        ) {
          cluster.useIds(JSON.parse(cap.responseBody.toString()).ID);
        }
        const target = step.target ? await step.target(cluster, cap) : cap.target;
        let answer: Buffer;
        if (step.whileBlocked) {
          const pending = rawRequest(agent.port, cap.method, target, cap.body);
          await cluster.waitForBlocked({ path: new URL(target, "http://x").pathname });
          await step.whileBlocked(cluster);
          answer = await pending;
        } else {
          answer = await rawRequest(agent.port, cap.method, target, cap.body);
        }
        compareNormalized(cap, answer);
      });
    }
  });
}

const CLUSTER_PORTS = { serfLan: 29301, server: 29300, serfWan: 29302 };

replayCluster("the stand-in replays the three-node Consul 1.10.12 cluster captures", CLUSTER_SCRIPT, () =>
  startConsulCluster({
    nodes: ["node-1", "node-2", "node-3"],
    server: "server",
    ports: CLUSTER_PORTS,
    failureDetectMs: 20,
    nodeIds: {
      server: "b33b854e-6e7c-bf13-a2f9-9cfde877bb06",
      "node-1": "e6d1c9f7-b467-2714-373b-f9676ec2155e",
      "node-2": "627d5da6-b94b-7804-3e04-e7a1eb25d3dc",
      "node-3": "bf0fb153-ed53-3992-95d2-80c3fb07a6e9",
    },
  }),
);

replayCluster("the stand-in replays the second cluster's node-death capture", CLUSTER2_SCRIPT, () =>
  startConsulCluster({
    ports: CLUSTER_PORTS,
    failureDetectMs: 20,
    nodeIds: { "node-2": "916dad9b-d821-1def-695b-7bbb8e6f35c0" },
  }),
);

// ================================================================== narratives, scaled down

describe("cluster narratives with scaled-down timings (timeScale 0.01)", () => {
  const put = async (url: string, body?: string) => {
    const res = await fetch(url, { method: "PUT", body });
    return { status: res.status, text: await res.text() };
  };
  const createSession = async (agentUrl: string, body: Record<string, unknown>) => {
    const r = await put(`${agentUrl}/v1/session/create`, JSON.stringify(body));
    expect(r.status).toBe(200);
    return (JSON.parse(r.text) as { ID: string }).ID;
  };

  test("a serfHealth session dies with its node's agent after the failure detection, in one raft write (session-node-death.txt)", async () => {
    await using c = await startConsulCluster({ timeScale: 0.01 }); // failure detected 51 ms after the kill
    const [n1, n2] = [c.node("node-1"), c.node("node-2")];
    const a = await createSession(n1.url, {
      Name: "slot-node-1",
      Checks: ["serfHealth"],
      LockDelay: "15s",
      Behavior: "release",
    });
    const b = await createSession(n1.url, { Name: "slot-node-1-ttl", TTL: "30s", LockDelay: "15s" });
    expect((await put(`${n1.url}/v1/kv/pulldeploy/slots/node-1?acquire=${a}`, "node-1")).text).toBe("true");
    expect((await put(`${n1.url}/v1/kv/pulldeploy/slots/node-1-ttl?acquire=${b}`, "node-1-ttl")).text).toBe("true");
    const cs = await createSession(n2.url, { Name: "contender-node-2", LockDelay: "1s" });
    const acquire = () => put(`${n2.url}/v1/kv/pulldeploy/slots/node-1?acquire=${cs}`, "node-2");
    expect((await acquire()).text).toBe("false");

    const killedAt = Date.now();
    await c.killNode("node-1");
    await expect(fetch(`${n1.url}/v1/agent/self`)).rejects.toThrow(); // connection refused at once
    expect(c.sessions.has(a)).toBe(true); // gossip has not given up on it yet
    await c.waitFor(() => !c.sessions.has(a) && !c.sessions.has(b), "node-1's sessions invalidated");
    expect(Date.now() - killedAt).toBeGreaterThanOrEqual(45);
    const k1 = c.kvEntry("pulldeploy/slots/node-1")!;
    expect(k1).toMatchObject({ session: "", lockIndex: 1 });
    expect(c.kvEntry("pulldeploy/slots/node-1-ttl")!.modifyIndex).toBe(k1.modifyIndex);
    const members = (await (await fetch(`${n2.url}/v1/agent/members`)).json()) as { Name: string; Status: number }[];
    expect(members.map((m) => `${m.Name}:${m.Status}`)).toEqual(["server:1", "node-1:4", "node-2:1", "node-3:1"]);
    const health = (await (await fetch(`${n2.url}/v1/health/node/node-1`)).json()) as {
      CheckID: string;
      Status: string;
      Output: string;
    }[];
    expect(health).toMatchObject([
      { CheckID: "serfHealth", Status: "critical", Output: "Agent not live or unreachable" },
    ]);
    // The lock-delay (15 s × 0.01) counts from the invalidation: refused, then taken with LockIndex 2.
    expect((await acquire()).text).toBe("false");
    // Nothing announces the end of a lock-delay (Consul neither): retry as a client would.
    let got = "false";
    for (let i = 0; i < 200 && got !== "true"; i++) {
      got = (await acquire()).text;
      if (got !== "true") await Bun.sleep(5);
    }
    expect(got).toBe("true");
    expect(c.kvEntry("pulldeploy/slots/node-1")).toMatchObject({ session: cs, lockIndex: 2 });
    // Back: same node, old sessions stay dead, serfHealth passing.
    await c.restartNode("node-1");
    expect((await (await fetch(`${n1.url}/v1/session/node/node-1`)).json()) as unknown[]).toEqual([]);
    expect(c.getNode("node-1")).toMatchObject({ member: 1, serf: { status: "passing" } });
  });

  test("kill -9 and a restart before the failure detection go unnoticed: the session and its lock stay", async () => {
    await using c = await startConsulCluster({ timeScale: 0.01 });
    const n2 = c.node("node-2");
    const s = await createSession(n2.url, { Name: "fast-restart" });
    expect((await put(`${n2.url}/v1/kv/pulldeploy/slots/fast-restart?acquire=${s}`, "x")).text).toBe("true");
    await c.killNode("node-2");
    await c.restartNode("node-2");
    expect(c.failurePending("node-2")).toBe(false);
    await Bun.sleep(c.ms(5100) * 2); // proving an absence: twice the failure detection delay
    expect(c.sessions.has(s)).toBe(true);
    expect(c.kvEntry("pulldeploy/slots/fast-restart")!.session).toBe(s);
  });

  test("semaphore with 3 nodes, limit 2: the holder's node dies, the waiting contender gets the slot (semaphore-3-nodes.txt)", async () => {
    await using c = await startConsulCluster({ timeScale: 0.01 });
    const prefix = "pulldeploy/sem";
    const flags = "16210313421097356768";
    type Entry = { Key: string; Value: string | null; Session?: string; ModifyIndex: number };
    /** The documented recipe (as `consul lock -n` does it): contender key, then a .lock holder slot by CAS. */
    const acquireSlot = async (url: string, limit: number) => {
      const session = await createSession(url, { Behavior: "delete", TTL: "15s", LockDelay: "15s" });
      expect((await put(`${url}/v1/kv/${prefix}/${session}?acquire=${session}&flags=${flags}`)).text).toBe("true");
      let index = "";
      for (;;) {
        const res = await fetch(`${url}/v1/kv/${prefix}?recurse${index ? `&index=${index}&wait=30s` : ""}`);
        index = res.headers.get("x-consul-index")!;
        const entries = res.status === 200 ? ((await res.json()) as Entry[]) : [];
        const lockEntry = entries.find((e) => e.Key === `${prefix}/.lock`);
        const live = new Set(entries.flatMap((e) => (e.Session ? [e.Session] : [])));
        const lock = lockEntry
          ? (JSON.parse(atob(lockEntry.Value!)) as { Holders: Record<string, boolean> })
          : { Holders: {} };
        const holders = Object.keys(lock.Holders).filter((h) => live.has(h)); // prune departed holders
        if (holders.length >= limit) continue;
        const body = JSON.stringify({
          Limit: limit,
          Holders: Object.fromEntries([...holders, session].sort().map((h) => [h, true])),
        });
        if (
          (await put(`${url}/v1/kv/${prefix}/.lock?cas=${lockEntry?.ModifyIndex ?? 0}&flags=${flags}`, body)).text ===
          "true"
        )
          return session;
        index = "";
      }
    };
    const s1 = await acquireSlot(c.node("node-1").url, 2);
    const s2 = await acquireSlot(c.node("node-2").url, 2);
    let s3: string | undefined;
    const third = acquireSlot(c.node("node-3").url, 2).then((s) => (s3 = s));
    await c.waitForBlocked({ path: `/v1/kv/${prefix}` });
    expect(s3).toBeUndefined();
    await c.killNode("node-1");
    await third;
    expect(c.getNode("node-1").member).toBe(4);
    expect(c.sessions.has(s1)).toBe(false);
    expect(c.kvEntry(`${prefix}/${s1}`)).toBeUndefined(); // Behavior delete
    const lock = JSON.parse(Buffer.from(c.kvEntry(`${prefix}/.lock`)!.value).toString());
    expect(lock).toEqual({ Limit: 2, Holders: Object.fromEntries([s2, s3!].sort().map((h) => [h, true])) });
  });

  test("TTL sessions expire at 2 × TTL (release keeps the key, delete removes it); a dead session's renew and acquire fail (session-ttl-expiry.txt)", async () => {
    await using c = await startConsulCluster({ timeScale: 0.01 });
    const n3 = c.node("node-3");
    const sc = await createSession(n3.url, { Name: "slot-node-3", TTL: "10s", LockDelay: "0s" });
    const sd = await createSession(n3.url, {
      Name: "slot-node-3-delete",
      TTL: "10s",
      LockDelay: "0s",
      Behavior: "delete",
    });
    expect((await put(`${n3.url}/v1/kv/pulldeploy/slots/node-3?acquire=${sc}`, "node-3")).text).toBe("true");
    expect((await put(`${n3.url}/v1/kv/pulldeploy/slots/node-3-delete?acquire=${sd}`, "x")).text).toBe("true");
    const created = Date.now();
    await c.waitFor(() => !c.sessions.has(sc) && !c.sessions.has(sd), "the TTL sessions to expire");
    expect(Date.now() - created).toBeGreaterThanOrEqual(180); // 2 × 10 s × 0.01
    expect(c.kvEntry("pulldeploy/slots/node-3")).toMatchObject({ session: "", lockIndex: 1 });
    expect(c.kvEntry("pulldeploy/slots/node-3-delete")).toBeUndefined();
    expect(await put(`${n3.url}/v1/session/renew/${sc}`)).toEqual({
      status: 404,
      text: `Session id '${sc}' not found`,
    });
    expect(await put(`${n3.url}/v1/kv/pulldeploy/slots/node-3?acquire=${sc}`, "node-3")).toEqual({
      status: 500,
      text: `rpc error making call: raft apply failed: invalid session "${sc}"`,
    });
    expect(await put(`${n3.url}/v1/session/create`, '{"TTL":"5s"}')).toEqual({
      status: 500,
      text: "rpc error making call: Invalid Session TTL '5000000000', must be between [10s=24h0m0s]",
    });
  });

  test("a TTL check that is not refreshed goes critical with the captured Output and takes its sessions along; warning does not", async () => {
    await using c = await startConsulCluster({ timeScale: 0.01 });
    const n2 = c.node("node-2");
    expect(
      (
        await put(
          `${n2.url}/v1/agent/service/register`,
          '{"Name":"web","ID":"web-2","Checks":[{"Name":"web TTL","TTL":"30s"}]}',
        )
      ).status,
    ).toBe(200);
    // A new TTL check is critical: no session on it yet.
    expect(await put(`${n2.url}/v1/session/create`, '{"Checks":["serfHealth","service:web-2"]}')).toEqual({
      status: 500,
      text: "rpc error making call: apply failed: Check 'service:web-2' is in critical state",
    });
    expect((await put(`${n2.url}/v1/agent/check/warn/service:web-2?note=slow`)).status).toBe(200);
    const s = await createSession(n2.url, { Checks: ["serfHealth", "service:web-2"] });
    const warnedAt = Date.now();
    await c.waitFor(() => !c.sessions.has(s), "the session to die with its check");
    expect(Date.now() - warnedAt).toBeGreaterThanOrEqual(280); // TTL 30 s × 0.01, counted from the warn
    const checks = (await (await fetch(`${n2.url}/v1/agent/checks`)).json()) as Record<
      string,
      { Status: string; Output: string }
    >;
    expect(checks["service:web-2"]).toMatchObject({
      Status: "critical",
      Output: "TTL expired (last output before timeout follows): slow",
    });
    // A check that never had an Output says just "TTL expired".
    const n3 = c.node("node-3");
    expect(
      (await put(`${n3.url}/v1/agent/check/register`, '{"ID":"ttl-demo","Name":"ttl demo","TTL":"2s"}')).status,
    ).toBe(200);
    expect((await put(`${n3.url}/v1/agent/check/pass/ttl-demo`)).status).toBe(200);
    await c.waitFor(
      () => c.getNode("node-3").checks.get("ttl-demo")!.local.status === "critical",
      "ttl-demo to expire",
    );
    expect(c.getNode("node-3").checks.get("ttl-demo")!.local.output).toBe("TTL expired");
  });

  test("a blocking health read wakes on a status change, not on an Output-only change (CheckUpdateInterval)", async () => {
    await using c = await startConsulCluster();
    const [n1, n3] = [c.node("node-1"), c.node("node-3")];
    c.registerService("node-1", {
      Name: "web",
      ID: "web-1",
      Check: { CheckID: "web-ttl", TTL: "30s", Status: "passing" },
    });
    const first = await fetch(`${n3.url}/v1/health/service/web`);
    const index = first.headers.get("x-consul-index")!;
    let settled = false;
    const pending = fetch(`${n3.url}/v1/health/service/web?index=${index}&wait=30s`).then((r) => ((settled = true), r));
    await c.waitForBlocked({ path: "/v1/health/service/web" });
    expect((await put(`${n1.url}/v1/agent/check/pass/web-ttl?note=new%20note`)).status).toBe(200);
    // The local view changed at once, the catalog's did not, and the read is still parked.
    expect(c.getNode("node-1").checks.get("web-ttl")).toMatchObject({
      local: { output: "new note" },
      synced: { output: "" },
    });
    expect(c.blocked).toBe(1);
    expect(settled).toBe(false);
    n1.setCheck("web-ttl", "warning", "slow"); // the test-side control: as PUT /v1/agent/check/warn would
    const res = await pending;
    expect(res.headers.get("x-consul-query-backend")).toBe("streaming");
    expect(Number(res.headers.get("x-consul-index"))).toBeGreaterThan(Number(index));
    const body = (await res.json()) as { Checks: { CheckID: string; Status: string; Output: string }[] }[];
    expect(body[0]!.Checks.find((x) => x.CheckID === "web-ttl")).toMatchObject({ Status: "warning", Output: "slow" });
  });

  test("each agent is its own node: agent/self, env, compact JSON, ?pretty", async () => {
    await using c = await startConsulCluster();
    for (const [name, server, address] of [
      ["node-3", false, "127.0.0.4"],
      ["server", true, "127.0.0.1"],
    ] as const) {
      const a = c.node(name);
      expect(a.env).toEqual({ CONSUL_HTTP_ADDR: `127.0.0.1:${a.port}` });
      const res = await fetch(`${a.url}/v1/agent/self`);
      expect(res.headers.get("transfer-encoding")).toBe("chunked");
      const self = (await res.json()) as {
        Config: { NodeName: string; Server: boolean; NodeID: string };
        Member: { Name: string; Addr: string };
      };
      expect(self.Config).toMatchObject({ NodeName: name, Server: server, NodeID: c.getNode(name).id });
      expect(self.Member).toMatchObject({ Name: name, Addr: address });
    }
    const n1 = c.node("node-1");
    expect(await (await fetch(`${n1.url}/v1/catalog/services`)).text()).toBe('{"consul":[]}');
    expect(await (await fetch(`${n1.url}/v1/catalog/services?pretty`)).text()).toBe('{\n    "consul": []\n}\n');
  });

  test("an HTTP check follows the endpoint the test controls: 2xx passing, 429 warning, else critical", async () => {
    let status = 200;
    await using app = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("ok", { status }) });
    await using c = await startConsulCluster({ timeScale: 0.01 }); // Interval 1s → 10 ms
    const appUrl = `http://127.0.0.1:${app.port}/health`;
    c.registerService("node-1", {
      Name: "web",
      ID: "web-1",
      Check: { CheckID: "web-http", HTTP: appUrl, Interval: "1s" },
    });
    const check = () => c.getNode("node-1").checks.get("web-http")!.synced;
    await c.waitFor(() => check().status === "passing", "the HTTP check to pass");
    expect(check().output).toBe(`HTTP GET ${appUrl}: 200 OK Output: ok`);
    status = 429;
    await c.waitFor(() => check().status === "warning", "the HTTP check to warn");
    status = 503;
    await c.waitFor(() => check().status === "critical", "the HTTP check to fail");
  });
});
