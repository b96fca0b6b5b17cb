/**
 * A stand-in for one Consul 1.10 dev agent (server + agent in one) on Bun.serve, 127.0.0.1, for tests.
 *
 * It answers like the captures in shared/fixtures/consul-1.10/*.http.txt, byte for byte except the
 * Date header's value and, where Bun decides, header order (Bun writes its "common" headers such as
 * Content-Type, Vary, Content-Security-Policy, X-Content-Type-Options first, then the others in
 * insertion order, then Date and Content-Length; Go writes them sorted, then Date, Content-Length and
 * a sniffed Content-Type). JSON is Go's: MarshalIndent with 4 spaces and a final newline in dev mode,
 * HTML-escaped strings, uint64 flags kept exact.
 *
 * The model follows Consul's state store and HTTP handlers:
 * - One raft index counter: every write request consumes an index, even a failed CAS or a no-op
 *   delete; the kvs table index moves only when an entry really changes (an identical re-PUT changes
 *   nothing and wakes nobody, kv-notes.txt). A key GET answers X-Consul-Index = its ModifyIndex, a
 *   missing key the table index, a list the highest ModifyIndex/tombstone under the prefix.
 * - Blocking queries (`?index=&wait=`) return when the query's index passes `index`, or at the end of
 *   the wait (no jitter here, unlike Consul's extra wait/16). Tombstones are never reaped.
 * - Events: serf's 512-byte limit computed from the real msgpack encodings of Consul's UserEvent and
 *   serf's messageUserEvent; the agent keeps the last 256 events that pass its own node/service/tag
 *   filters; the event list's X-Consul-Index is Consul's uuidToUint64 (upper XOR lower 64 bits).
 * - Sessions with TTL (invalidated after 2×TTL like Consul), release/delete behaviour, lock-delay.
 * - A catalog of nodes and services that tests fill with `addNode`; the local node (`nodeName`,
 *   "dev" by default) is the one whose services decide which events this agent keeps.
 * - Optional ACL: with `requireToken`, a request without a token gets 403 "Permission denied", one
 *   with another token 403 "ACL not found" (Consul 1.10's texts).
 *
 *   await using consul = await startConsulStandin();
 *   // CONSUL_HTTP_ADDR=consul.addr; consul.requests is the request log
 */
import { randomUUID } from "node:crypto";

export interface StandinOptions {
  /** 0 (default) picks a free port; a fixed port lets a test stop and restart on the same one. */
  port?: number;
  /** Serve on a unix socket instead of TCP. */
  unix?: string;
  /** Serve https with this PEM certificate and key. */
  tls?: { cert: string; key: string };
  /** The local agent's node name (default "dev", as in the captures). */
  nodeName?: string;
  datacenter?: string;
  /** With a token, ACLs are on with default policy deny: only this token is accepted. */
  requireToken?: string;
  /** Pretty JSON (dev mode, as captured). Default true; false answers compact JSON unless `?pretty`. */
  devMode?: boolean;
  /** The raft index before the first write. 13 makes the first write land on 14, as in the captures. */
  initialIndex?: number;
}

export interface LoggedRequest {
  method: string;
  /** Decoded path, e.g. `/v1/kv/deploy/app`. */
  path: string;
  /** Raw query string without `?`. */
  search: string;
  /** First value of each query parameter (`recurse` → ""). */
  query: Record<string, string>;
  /** Lower-case header names. */
  headers: Record<string, string>;
  body: Uint8Array;
  text: string;
}

export interface StandinService {
  name: string;
  id?: string;
  tags?: string[];
  port?: number;
  address?: string;
  meta?: Record<string, string>;
}

export interface NodeSpec {
  address?: string;
  /** Service names or full definitions; a bare name gets `tags`. */
  services?: (string | StandinService)[];
  tags?: string[];
  meta?: Record<string, string>;
  /** The node's serfHealth check (default passing). */
  status?: "passing" | "warning" | "critical";
}

export interface StoredEvent {
  id: string;
  name: string;
  payload: Uint8Array | null;
  nodeFilter: string;
  serviceFilter: string;
  tagFilter: string;
  version: number;
  ltime: number;
}

export interface KvSnapshotEntry {
  key: string;
  value: Uint8Array;
  flags: bigint;
  createIndex: number;
  modifyIndex: number;
  lockIndex: number;
  session: string;
}

const KV_MAX_VALUE_SIZE = 512 * 1024;
const USER_EVENT_SIZE_LIMIT = 512;
const EVENT_BUFFER = 256;
const MAX_QUERY_TIME_MS = 600_000;
const DEFAULT_QUERY_TIME_MS = 300_000;
const SESSION_TTL_MIN_MS = 10_000;
const SESSION_TTL_MAX_MS = 86_400_000;
const SESSION_TTL_MULTIPLIER = 2;
const DEFAULT_LOCK_DELAY_NS = 15_000_000_000;
const SERF_HEALTH = "serfHealth";

interface Session {
  id: string;
  name: string;
  node: string;
  lockDelayNs: number;
  behavior: "release" | "delete";
  ttl: string;
  nodeChecks: string[] | null;
  createIndex: number;
  modifyIndex: number;
  timer?: ReturnType<typeof setTimeout>;
}

interface CatalogNode {
  id: string;
  name: string;
  address: string;
  meta: Record<string, string>;
  services: Required<StandinService>[];
  status: "passing" | "warning" | "critical";
  createIndex: number;
  modifyIndex: number;
}

interface Waiter {
  path: string;
  wake: () => void;
}

/** What a query computes: its index and the response to send for it. */
interface QueryResult {
  index: bigint;
  respond: () => Response;
}

export async function startConsulStandin(options: StandinOptions = {}): Promise<ConsulStandin> {
  const s = new ConsulStandin(options);
  s.start();
  return s;
}

export class ConsulStandin implements AsyncDisposable {
  readonly requests: LoggedRequest[] = [];
  readonly nodeName: string;
  readonly datacenter: string;
  private readonly opts: StandinOptions;
  private server: ReturnType<typeof Bun.serve> | undefined;
  private boundPort = 0;

  // Raft-ish state.
  private raftIndex = 0;
  private kvsIndex = 0;
  private tombstoneIndex = 0;
  private sessionsIndex = 0;
  private catalogIndex = 0;
  private readonly kv = new Map<string, KvSnapshotEntry>();
  private readonly tombstones = new Map<string, number>();
  private readonly lockDelays = new Map<string, number>();
  private readonly sessions = new Map<string, Session>();
  private readonly nodes = new Map<string, CatalogNode>();
  // Agent (gossip) state.
  private events: StoredEvent[] = [];
  /** Every event fired through this agent, delivered or not, for assertions. */
  readonly fired: StoredEvent[] = [];
  private eventClock = 2;
  private readonly idQueue: string[] = [];
  // Blocking queries and test synchronisation.
  private readonly waiters = new Set<Waiter>();
  private readonly watchers = new Set<() => void>();

  constructor(options: StandinOptions = {}) {
    this.opts = options;
    this.nodeName = options.nodeName ?? "dev";
    this.datacenter = options.datacenter ?? "dc1";
    this.resetState();
  }

  /** `127.0.0.1:PORT` (or `unix://PATH`), what CONSUL_HTTP_ADDR takes. */
  get addr(): string {
    if (this.opts.unix) return `unix://${this.opts.unix}`;
    return `${this.opts.tls ? "https://" : ""}127.0.0.1:${this.boundPort}`;
  }
  get url(): string {
    return `${this.opts.tls ? "https" : "http"}://127.0.0.1:${this.boundPort}`;
  }
  get port(): number {
    return this.boundPort;
  }
  /** The environment that points a Consul client here (with the token when ACLs are on). */
  get env(): Record<string, string> {
    const env: Record<string, string> = { CONSUL_HTTP_ADDR: this.addr };
    if (this.opts.requireToken) env.CONSUL_HTTP_TOKEN = this.opts.requireToken;
    return env;
  }
  /** The last raft index used. */
  get index(): number {
    return this.raftIndex;
  }
  /** The events this agent holds (what /v1/event/list answers without a name). */
  get agentEvents(): readonly StoredEvent[] {
    return this.events;
  }
  /** How many blocking queries are parked right now. */
  get blocked(): number {
    return this.waiters.size;
  }

  start(): void {
    if (this.server) return;
    const common = {
      fetch: (req: Request) => this.handle(req),
      error: (err: Error) => goText(500, err.message, this.aclPolicy),
    };
    this.server = this.opts.unix
      ? Bun.serve({ ...common, unix: this.opts.unix })
      : Bun.serve({
          ...common,
          // Blocking queries hold a request open for up to 10 minutes: no idle timeout.
          idleTimeout: 0,
          hostname: "127.0.0.1",
          port: this.boundPort || this.opts.port || 0,
          ...(this.opts.tls ? { tls: this.opts.tls } : {}),
        });
    this.boundPort = this.server.port ?? 0;
    for (const s of this.sessions.values()) this.armSessionTimer(s);
  }

  /** Stop listening and drop open connections (parked blocking queries see the connection close). */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const s of this.sessions.values()) clearTimeout(s.timer);
    // Close the connections first, as a dying agent does: parked blocking queries get no answer.
    if (server) await server.stop(true);
    for (const w of [...this.waiters]) w.wake();
    this.waiters.clear();
  }

  /**
   * Stop and start again on the same port, like an agent restart: the agent's events are gone.
   * `wipe: true` is a dev-mode restart: KV, sessions and indices start over, so indices go backwards.
   */
  async restart(options: { wipe?: boolean } = {}): Promise<void> {
    await this.stop();
    this.events = [];
    if (options.wipe) this.resetState();
    this.start();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  /** Use these IDs, in order, for the next events and sessions created (then random UUIDs again). */
  useIds(...ids: string[]): void {
    this.idQueue.push(...ids);
  }

  /** Register (or replace) a node and its services in the catalog; the local node's services filter events. */
  addNode(name: string, spec: NodeSpec = {}): void {
    const idx = ++this.raftIndex;
    const old = this.nodes.get(name);
    const address = spec.address ?? old?.address ?? "127.0.0.1";
    const services = (spec.services ?? []).map((s) => {
      const d = typeof s === "string" ? { name: s, tags: spec.tags } : s;
      return {
        name: d.name,
        id: d.id ?? d.name,
        tags: d.tags ?? [],
        port: d.port ?? 0,
        address: d.address ?? "",
        meta: d.meta ?? {},
      };
    });
    this.nodes.set(name, {
      id: old?.id ?? nodeIdFor(name),
      name,
      address,
      meta: spec.meta ?? old?.meta ?? { "consul-network-segment": "" },
      services,
      status: spec.status ?? "passing",
      createIndex: old?.createIndex ?? idx,
      modifyIndex: idx,
    });
    this.catalogIndex = idx;
    this.notify();
  }

  removeNode(name: string): void {
    const idx = ++this.raftIndex;
    if (this.nodes.delete(name)) this.catalogIndex = idx;
    this.notify();
  }

  /** Which catalog nodes an event reaches: each agent applies the filters to its own node and services. */
  receivers(ev: Pick<StoredEvent, "nodeFilter" | "serviceFilter" | "tagFilter">): string[] {
    return [...this.nodes.values()].filter((n) => passesFilters(ev, n)).map((n) => n.name).sort();
  }

  /** A write as if through the HTTP API (consumes a raft index); for setting up state in tests. */
  kvPut(key: string, value: string | Uint8Array, flags: bigint = 0n): void {
    this.kvSet(++this.raftIndex, key, bytes(value), flags);
  }

  /** The stored entry for assertions, or undefined. */
  kvEntry(key: string): KvSnapshotEntry | undefined {
    const e = this.kv.get(key);
    return e && { ...e };
  }

  /** Invalidate a session now, as if its TTL ran out. */
  expireSession(id: string): void {
    this.destroySession(++this.raftIndex, id);
  }

  /** Consume `n` raft indices, as other writes in a cluster would. */
  advanceIndex(n: number): void {
    this.raftIndex += n;
  }

  /** Fire an event as another agent would (gossip reaches this one): same checks as the HTTP API. */
  fireEvent(name: string, payload: string | Uint8Array | null, filters: { node?: string; service?: string; tag?: string } = {}): StoredEvent {
    const r = this.fire(name, payload === null ? null : bytes(payload), filters);
    if (typeof r === "string") throw new Error(r);
    return r;
  }

  /** Resolves once `count` (default 1) blocking queries on paths starting with `path` are parked. */
  waitForBlocked(options: { path?: string; count?: number; timeoutMs?: number } = {}): Promise<void> {
    const count = options.count ?? 1;
    const match = () => [...this.waiters].filter((w) => w.path.startsWith(options.path ?? "")).length >= count;
    return this.waitUntil(match, options.timeoutMs ?? 10_000, `${count} blocking query(ies) on ${options.path ?? "any path"}`);
  }

  /** Resolves with the first logged request that matches (already logged or still to come). */
  async waitForRequest(pred: (r: LoggedRequest) => boolean, timeoutMs = 10_000): Promise<LoggedRequest> {
    await this.waitUntil(() => this.requests.some(pred), timeoutMs, "a matching request");
    return this.requests.find(pred)!;
  }

  /** Resolves once `cond` holds; it is checked again whenever a request arrives or a blocking query parks or leaves. */
  waitFor(cond: () => boolean, what = "a condition", timeoutMs = 10_000): Promise<void> {
    return this.waitUntil(cond, timeoutMs, what);
  }

  private waitUntil(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
    if (cond()) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const check = () => {
        if (!cond()) return;
        this.watchers.delete(check);
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        this.watchers.delete(check);
        reject(new Error(`consul stand-in: timed out waiting for ${what}`));
      }, timeoutMs);
      this.watchers.add(check);
    });
  }

  private poke(): void {
    for (const w of [...this.watchers]) w();
  }

  private resetState(): void {
    for (const s of this.sessions.values()) clearTimeout(s.timer);
    this.raftIndex = this.opts.initialIndex ?? 13;
    this.kvsIndex = 0;
    this.tombstoneIndex = 0;
    this.sessionsIndex = 0;
    this.kv.clear();
    this.tombstones.clear();
    this.lockDelays.clear();
    this.sessions.clear();
    this.nodes.clear();
    this.events = [];
    this.eventClock = 2;
    // The local node exists from the start, registered before the first index the tests see.
    this.nodes.set(this.nodeName, {
      id: nodeIdFor(this.nodeName),
      name: this.nodeName,
      address: "127.0.0.1",
      meta: { "consul-network-segment": "" },
      services: [],
      status: "passing",
      createIndex: Math.min(this.raftIndex, 10),
      modifyIndex: Math.min(this.raftIndex, 11),
    });
    this.catalogIndex = Math.min(this.raftIndex, 11);
  }

  private nextId(): string {
    return this.idQueue.shift() ?? randomUUID();
  }

  private notify(): void {
    for (const w of [...this.waiters]) w.wake();
  }

  private get aclPolicy(): string {
    return this.opts.requireToken ? "deny" : "allow";
  }

  private pretty(q: URLSearchParams): boolean {
    return q.has("pretty") || (this.opts.devMode ?? true);
  }

  // ---------------------------------------------------------------- HTTP

  private async handle(req: Request): Promise<Response> {
    const url = new URL(req.url);
    let path: string;
    try {
      path = decodeURIComponent(url.pathname);
    } catch {
      return goText(400, `invalid URL escape "${url.pathname}"`, this.aclPolicy);
    }
    const body = new Uint8Array(await req.arrayBuffer());
    const q = url.searchParams;
    const headers: Record<string, string> = {};
    req.headers.forEach((v, k) => (headers[k.toLowerCase()] = v));
    const query: Record<string, string> = {};
    for (const [k, v] of q) if (!(k in query)) query[k] = v;
    this.requests.push({ method: req.method, path, search: url.search.slice(1), query, headers, body, text: new TextDecoder().decode(body) });
    this.poke();

    if (this.opts.requireToken !== undefined) {
      const bearer = /^Bearer\s+(.+)$/i.exec(req.headers.get("authorization") ?? "")?.[1];
      const token = req.headers.get("x-consul-token") || q.get("token") || bearer || "";
      if (token === "") return goText(403, "Permission denied", this.aclPolicy);
      if (token !== this.opts.requireToken) return goText(403, "ACL not found", this.aclPolicy);
    }

    const ctx: Ctx = { req, path, q, body, pretty: this.pretty(q) };
    try {
      if (path.startsWith("/v1/kv/")) return await this.kvEndpoint(ctx, path.slice("/v1/kv/".length));
      if (path.startsWith("/v1/event/fire/")) return this.methods(ctx, ["PUT"]) ?? this.eventFire(ctx, path.slice("/v1/event/fire/".length));
      if (path === "/v1/event/list") return this.methods(ctx, ["GET"]) ?? (await this.eventList(ctx));
      if (path === "/v1/session/create") return this.methods(ctx, ["PUT"]) ?? this.sessionCreate(ctx);
      if (path.startsWith("/v1/session/destroy/")) return this.methods(ctx, ["PUT"]) ?? this.sessionDestroy(ctx, path.slice("/v1/session/destroy/".length));
      if (path.startsWith("/v1/session/renew/")) return this.methods(ctx, ["PUT"]) ?? this.sessionRenew(ctx, path.slice("/v1/session/renew/".length));
      if (path.startsWith("/v1/session/info/")) return this.methods(ctx, ["GET"]) ?? (await this.sessionInfo(ctx, path.slice("/v1/session/info/".length)));
      if (path === "/v1/session/list") return this.methods(ctx, ["GET"]) ?? (await this.sessionList(ctx));
      if (path === "/v1/agent/self") return this.methods(ctx, ["GET"]) ?? this.agentSelf(ctx);
      if (path === "/v1/catalog/nodes") return this.methods(ctx, ["GET"]) ?? (await this.catalogNodes(ctx));
      if (path === "/v1/catalog/services") return this.methods(ctx, ["GET"]) ?? (await this.catalogServices(ctx));
      if (path.startsWith("/v1/catalog/service/")) return this.methods(ctx, ["GET"]) ?? (await this.catalogService(ctx, path.slice("/v1/catalog/service/".length)));
      if (path.startsWith("/v1/health/service/")) return this.methods(ctx, ["GET"]) ?? (await this.healthService(ctx, path.slice("/v1/health/service/".length)));
    } catch (err) {
      if (err instanceof HttpError) return goText(err.status, err.message, this.aclPolicy);
      throw err;
    }
    // Go's http.NotFound, outside Consul's wrappers.
    return new Response("404 page not found\n", {
      status: 404,
      headers: [
        ["Content-Type", "text/plain; charset=utf-8"],
        ["X-Content-Type-Options", "nosniff"],
      ],
    });
  }

  private methods(ctx: Ctx, allowed: string[]): Response | undefined {
    if (allowed.includes(ctx.req.method)) return undefined;
    return goText(405, `method ${ctx.req.method} not allowed`, this.aclPolicy, [["Allow", allowed.join(",")]]);
  }

  /** A JSON answer with Consul's headers; `meta` adds the blocking-query headers (setMeta). */
  private json(ctx: Ctx, value: Json, index?: bigint, meta = index !== undefined): Response {
    const h: [string, string][] = [
      ["Content-Type", "application/json"],
      ["Vary", "Accept-Encoding"],
      ["X-Consul-Default-Acl-Policy", this.aclPolicy],
    ];
    if (index !== undefined) h.push(["X-Consul-Index", String(index)]);
    if (meta) h.push(["X-Consul-Knownleader", "true"], ["X-Consul-Lastcontact", "0"], ["X-Consul-Query-Backend", "blocking-query"]);
    return new Response(goJson(value, ctx.pretty), { status: 200, headers: h });
  }

  private metaHeaders(index: bigint): [string, string][] {
    return [
      ["X-Consul-Index", String(index)],
      ["X-Consul-Knownleader", "true"],
      ["X-Consul-Lastcontact", "0"],
      ["X-Consul-Query-Backend", "blocking-query"],
    ];
  }

  /** 404 with an empty body and the blocking-query headers (a missing key or an empty prefix). */
  private notFound(index: bigint): Response {
    return new Response("", {
      status: 404,
      headers: [["Vary", "Accept-Encoding"], ["X-Consul-Default-Acl-Policy", this.aclPolicy], ...this.metaHeaders(index)],
    });
  }

  /**
   * Consul's blockingQuery: without `index` answer at once; otherwise run the query again on every
   * change until `done(result)` says so, or answer the fresh result when the wait is over.
   */
  private async blocking(ctx: Ctx, run: () => QueryResult, done?: (r: QueryResult, min: bigint) => boolean): Promise<Response> {
    const { min, waitMs } = parseWait(ctx.q);
    const finished = done ?? ((r: QueryResult, m: bigint) => r.index > m);
    let result = run();
    if (min === 0n) return result.respond();
    const deadline = Date.now() + waitMs;
    while (!finished(result, min)) {
      const left = deadline - Date.now();
      if (left <= 0 || ctx.req.signal.aborted || !this.server) break;
      await new Promise<void>((resolve) => {
        const w: Waiter = {
          path: ctx.path,
          wake: () => {
            clearTimeout(timer);
            this.waiters.delete(w);
            ctx.req.signal.removeEventListener("abort", w.wake);
            this.poke();
            resolve();
          },
        };
        const timer = setTimeout(w.wake, left);
        ctx.req.signal.addEventListener("abort", w.wake);
        this.waiters.add(w);
        this.poke();
      });
      result = run();
    }
    return result.respond();
  }

  // ---------------------------------------------------------------- KV

  private kvMaxIndex(): number {
    return Math.max(this.kvsIndex, this.tombstoneIndex);
  }

  private async kvEndpoint(ctx: Ctx, key: string): Promise<Response> {
    switch (ctx.req.method) {
      case "GET":
        if (ctx.q.has("keys")) return this.kvKeys(ctx, key);
        if (ctx.q.has("recurse")) return this.kvList(ctx, key);
        if (key === "") throw new HttpError(400, "Missing key name");
        return this.kvGet(ctx, key);
      case "PUT":
        return this.kvPutHttp(ctx, key);
      case "DELETE":
        return this.kvDeleteHttp(ctx, key);
      default:
        return this.methods(ctx, ["GET", "PUT", "DELETE"])!;
    }
  }

  private kvGet(ctx: Ctx, key: string): Promise<Response> {
    return this.blocking(ctx, () => {
      const e = this.kv.get(key);
      const index = BigInt(atLeast1(e ? e.modifyIndex : this.kvMaxIndex()));
      if (!e) return { index, respond: () => this.notFound(index) };
      if (ctx.q.has("raw")) {
        const value = e.value;
        return {
          index,
          respond: () =>
            new Response(value, {
              status: 200,
              headers: [
                ["Content-Length", String(value.length)],
                ["Content-Security-Policy", "sandbox"],
                ["Content-Type", "text/plain"],
                ["Vary", "Accept-Encoding"],
                ["X-Consul-Default-Acl-Policy", this.aclPolicy],
                ...this.metaHeaders(index),
                ["X-Content-Type-Options", "nosniff"],
              ],
            }),
        };
      }
      const json = [dirEntryJson(e)];
      return { index, respond: () => this.json(ctx, json, index) };
    });
  }

  /** Entries under `prefix` in byte order, and Consul's list index (kvsListTxn). */
  private kvUnder(prefix: string): { entries: KvSnapshotEntry[]; index: number } {
    const entries = [...this.kv.values()].filter((e) => e.key.startsWith(prefix)).sort((a, b) => byteCompare(a.key, b.key));
    let lindex = 0;
    for (const e of entries) lindex = Math.max(lindex, e.modifyIndex);
    if (prefix !== "") {
      for (const [k, i] of this.tombstones) if (k.startsWith(prefix)) lindex = Math.max(lindex, i);
    } else {
      lindex = this.kvMaxIndex();
    }
    return { entries, index: atLeast1(lindex !== 0 ? lindex : this.kvMaxIndex()) };
  }

  private kvList(ctx: Ctx, prefix: string): Promise<Response> {
    return this.blocking(ctx, () => {
      const { entries, index: i } = this.kvUnder(prefix);
      const index = BigInt(i);
      if (entries.length === 0) return { index, respond: () => this.notFound(index) };
      const json = entries.map(dirEntryJson);
      return { index, respond: () => this.json(ctx, json, index) };
    });
  }

  private kvKeys(ctx: Ctx, prefix: string): Promise<Response> {
    const sep = ctx.q.get("separator") ?? ctx.q.get("seperator") ?? "";
    return this.blocking(ctx, () => {
      const { entries, index: i } = this.kvUnder(prefix);
      const index = BigInt(i);
      const keys: string[] = [];
      for (const e of entries) {
        if (sep === "") {
          keys.push(e.key);
          continue;
        }
        const at = e.key.indexOf(sep, prefix.length);
        const k = at === -1 ? e.key : e.key.slice(0, at + sep.length);
        if (keys[keys.length - 1] !== k) keys.push(k);
      }
      if (keys.length === 0 && prefix !== "") return { index, respond: () => this.notFound(index) };
      return { index, respond: () => this.json(ctx, keys, index) };
    });
  }

  private kvPutHttp(ctx: Ctx, key: string): Response {
    if (key === "") throw new HttpError(400, "Missing key name");
    const conflict = conflictingFlags(ctx.q, ["cas", "acquire", "release"]);
    if (conflict) return conflict(this.aclPolicy);
    const flags = ctx.q.has("flags") ? parseUint64(ctx.q.get("flags")!) : 0n;
    const cas = ctx.q.has("cas") ? parseUint64(ctx.q.get("cas")!) : undefined;
    if (ctx.body.length > KV_MAX_VALUE_SIZE) {
      throw new HttpError(
        413,
        `Request body(${ctx.body.length} bytes) too large, max size: ${KV_MAX_VALUE_SIZE} bytes. See https://www.consul.io/docs/agent/options.html#kv_max_value_size.`,
      );
    }
    let out = true;
    if (ctx.q.has("acquire")) {
      const session = ctx.q.get("acquire")!;
      // The lock-delay check happens before raft: a refused lock consumes no index.
      if ((this.lockDelays.get(key) ?? 0) > Date.now()) out = false;
      else out = this.kvLock(++this.raftIndex, key, ctx.body, flags, session);
    } else if (ctx.q.has("release")) {
      out = this.kvUnlock(++this.raftIndex, key, ctx.body, flags, ctx.q.get("release")!);
    } else if (cas !== undefined) {
      out = this.kvCas(++this.raftIndex, key, ctx.body, flags, Number(cas));
    } else {
      this.kvSet(++this.raftIndex, key, ctx.body, flags);
    }
    return this.json(ctx, out);
  }

  private kvDeleteHttp(ctx: Ctx, key: string): Response {
    const conflict = conflictingFlags(ctx.q, ["recurse", "cas"]);
    if (conflict) return conflict(this.aclPolicy);
    const recurse = ctx.q.has("recurse");
    if (!recurse && key === "") throw new HttpError(400, "Missing key name");
    const cas = ctx.q.has("cas") ? parseUint64(ctx.q.get("cas")!) : undefined;
    const idx = ++this.raftIndex;
    if (cas !== undefined) {
      const e = this.kv.get(key);
      if (!e || e.modifyIndex !== Number(cas)) return this.json(ctx, e === undefined);
      this.kvRemove(idx, key);
      return this.json(ctx, true);
    }
    if (recurse) {
      for (const k of [...this.kv.keys()]) if (k.startsWith(key)) this.kvRemove(idx, k);
    } else {
      this.kvRemove(idx, key);
    }
    return this.json(ctx, true);
  }

  /** kvsSetTxn: keeps CreateIndex and (unless `session` is given) the session; an identical write is a no-op. */
  private kvSet(idx: number, key: string, value: Uint8Array, flags: bigint, lock?: { session: string; lockIndex: number }): void {
    const old = this.kv.get(key);
    const next: KvSnapshotEntry = {
      key,
      value,
      flags,
      createIndex: old?.createIndex ?? idx,
      modifyIndex: idx,
      lockIndex: lock ? lock.lockIndex : 0,
      session: lock ? lock.session : (old?.session ?? ""),
    };
    if (
      old &&
      old.lockIndex === next.lockIndex &&
      old.flags === next.flags &&
      old.session === next.session &&
      Buffer.compare(old.value, next.value) === 0
    ) {
      return;
    }
    this.kv.set(key, next);
    this.tombstones.delete(key);
    this.kvsIndex = idx;
    this.notify();
  }

  private kvCas(idx: number, key: string, value: Uint8Array, flags: bigint, cas: number): boolean {
    const old = this.kv.get(key);
    if (cas === 0 && old) return false;
    if (cas !== 0 && (!old || old.modifyIndex !== cas)) return false;
    this.kvSet(idx, key, value, flags);
    return true;
  }

  private kvLock(idx: number, key: string, value: Uint8Array, flags: bigint, session: string): boolean {
    if (session === "") throw new HttpError(500, "missing session");
    if (!this.sessions.has(session)) throw new HttpError(500, `invalid session ${goQuote(session)}`);
    const old = this.kv.get(key);
    let lockIndex = 1;
    if (old) {
      if (old.session === session) lockIndex = old.lockIndex;
      else if (old.session !== "") return false;
      else lockIndex = old.lockIndex + 1;
    }
    this.kvSet(idx, key, value, flags, { session, lockIndex });
    return true;
  }

  private kvUnlock(idx: number, key: string, value: Uint8Array, flags: bigint, session: string): boolean {
    if (session === "") throw new HttpError(500, "missing session");
    const old = this.kv.get(key);
    if (!old || old.session !== session) return false;
    this.kvSet(idx, key, value, flags, { session: "", lockIndex: old.lockIndex });
    return true;
  }

  private kvRemove(idx: number, key: string): void {
    if (!this.kv.delete(key)) return;
    this.tombstones.set(key, idx);
    this.tombstoneIndex = idx;
    this.notify();
  }

  // ---------------------------------------------------------------- events

  private eventFire(ctx: Ctx, name: string): Response {
    if (name === "") throw new HttpError(400, "Missing name");
    const r = this.fire(name, ctx.body.length > 0 ? ctx.body : null, {
      node: ctx.q.get("node") ?? undefined,
      service: ctx.q.get("service") ?? undefined,
      tag: ctx.q.get("tag") ?? undefined,
    });
    if (typeof r === "string") throw new HttpError(500, r);
    return this.json(ctx, eventJson({ ...r, ltime: 0 }));
  }

  /** Agent.UserEvent + serf.UserEvent; a string is the error Consul answers with a 500. */
  private fire(name: string, payload: Uint8Array | null, f: { node?: string; service?: string; tag?: string }): StoredEvent | string {
    const ev: StoredEvent = {
      id: "",
      name,
      payload,
      nodeFilter: f.node ?? "",
      serviceFilter: f.service ?? "",
      tagFilter: f.tag ?? "",
      version: 1,
      ltime: this.eventClock,
    };
    if (ev.tagFilter !== "" && ev.serviceFilter === "") return "Cannot provide tag filter without service filter";
    for (const [what, re] of [["node", ev.nodeFilter], ["service", ev.serviceFilter], ["tag", ev.tagFilter]] as const) {
      if (re === "") continue;
      try {
        new RegExp(re);
      } catch (err) {
        return `Invalid ${what} filter: error parsing regexp: ${(err as Error).message}`;
      }
    }
    ev.id = this.nextId();
    const inner = encodeConsulUserEvent(ev);
    const serfName = `consul:event:${name}`;
    const broadcast = (msg: string) => `1 error occurred:\n\t* error broadcasting event to segment "": ${msg}\n\n`;
    if (utf8(serfName).length + inner.length > USER_EVENT_SIZE_LIMIT) {
      return broadcast(`user event exceeds configured limit of ${USER_EVENT_SIZE_LIMIT} bytes before encoding`);
    }
    if (encodeSerfUserEvent(ev.ltime, serfName, inner).length > USER_EVENT_SIZE_LIMIT) {
      return broadcast(`encoded user event exceeds configured limit of ${USER_EVENT_SIZE_LIMIT} bytes after encoding`);
    }
    this.eventClock++;
    this.fired.push(ev);
    const local = this.nodes.get(this.nodeName);
    if (local && passesFilters(ev, local)) {
      this.events.push(ev);
      if (this.events.length > EVENT_BUFFER) this.events.splice(0, this.events.length - EVENT_BUFFER);
      this.notify();
    }
    return ev;
  }

  private eventList(ctx: Ctx): Promise<Response> {
    const name = ctx.q.get("name") ?? "";
    // Not a raft index: blocks only while the index equals the one given (it is not monotonic).
    return this.blocking(
      ctx,
      () => {
        const events = name === "" ? [...this.events] : this.events.filter((e) => e.name === name);
        const index = events.length === 0 ? 1n : eventIndex(events[events.length - 1]!.id);
        return { index, respond: () => this.json(ctx, events.map(eventJson), index, false) };
      },
      (r, min) => r.index !== min,
    );
  }

  // ---------------------------------------------------------------- sessions

  private sessionCreate(ctx: Ctx): Response {
    let raw: Record<string, unknown> = {};
    if (ctx.body.length > 0) {
      try {
        const parsed: unknown = JSON.parse(new TextDecoder().decode(ctx.body));
        if (parsed !== null && typeof parsed === "object" && !Array.isArray(parsed)) raw = parsed as Record<string, unknown>;
      } catch (err) {
        throw new HttpError(400, `Request decode failed: ${(err as Error).message}`);
      }
    }
    // Go's encoding/json matches field names case-insensitively.
    const field = (n: string) => {
      const k = Object.keys(raw).find((k) => k.toLowerCase() === n.toLowerCase());
      return k === undefined ? undefined : raw[k];
    };
    const ttl = typeof field("TTL") === "string" ? (field("TTL") as string) : "";
    if (ttl !== "") {
      const ns = parseGoDuration(ttl);
      if (ns === undefined) throw new HttpError(500, `Session TTL '${ttl}' invalid: time: invalid duration ${goQuote(ttl)}`);
      const ms = ns / 1e6;
      if (ms !== 0 && (ms < SESSION_TTL_MIN_MS || ms > SESSION_TTL_MAX_MS)) {
        throw new HttpError(500, `Invalid Session TTL '${ns}', must be between [10s=24h0m0s]`);
      }
    }
    const behavior = (field("Behavior") as string | undefined) || "release";
    if (behavior !== "release" && behavior !== "delete") throw new HttpError(500, `Invalid Behavior setting '${behavior}'`);
    let lockDelayNs = DEFAULT_LOCK_DELAY_NS;
    const ld = field("LockDelay");
    if (typeof ld === "string") {
      const ns = parseGoDuration(ld);
      if (ns === undefined) throw new HttpError(400, `Request decode failed: time: invalid duration ${goQuote(ld)}`);
      lockDelayNs = ns < 1000 ? ns * 1e9 : ns;
    } else if (typeof ld === "number") {
      lockDelayNs = ld < 1000 ? ld * 1e9 : ld;
    }
    const checks = field("NodeChecks");
    const idx = ++this.raftIndex;
    const s: Session = {
      id: this.nextId(),
      name: typeof field("Name") === "string" ? (field("Name") as string) : "",
      node: typeof field("Node") === "string" && field("Node") !== "" ? (field("Node") as string) : this.nodeName,
      lockDelayNs,
      behavior,
      ttl,
      nodeChecks: Array.isArray(checks) ? checks.map(String) : [SERF_HEALTH],
      createIndex: idx,
      modifyIndex: idx,
    };
    this.sessions.set(s.id, s);
    this.sessionsIndex = idx;
    this.armSessionTimer(s);
    this.notify();
    return this.json(ctx, { ID: s.id });
  }

  private armSessionTimer(s: Session): void {
    clearTimeout(s.timer);
    if (s.ttl === "") return;
    const ns = parseGoDuration(s.ttl) ?? 0;
    if (ns === 0) return;
    s.timer = setTimeout(() => this.expireSession(s.id), (ns / 1e6) * SESSION_TTL_MULTIPLIER);
    s.timer.unref?.();
  }

  /** Invalidate: release or delete the keys it holds (with lock-delay), then drop it. */
  private destroySession(idx: number, id: string): void {
    const s = this.sessions.get(id);
    if (!s) return;
    clearTimeout(s.timer);
    for (const e of [...this.kv.values()]) {
      if (e.session !== id) continue;
      if (s.lockDelayNs > 0) this.lockDelays.set(e.key, Date.now() + s.lockDelayNs / 1e6);
      if (s.behavior === "delete") this.kvRemove(idx, e.key);
      else this.kvSet(idx, e.key, e.value, e.flags, { session: "", lockIndex: e.lockIndex });
    }
    this.sessions.delete(id);
    this.sessionsIndex = idx;
    this.notify();
  }

  private sessionDestroy(ctx: Ctx, id: string): Response {
    if (id === "") throw new HttpError(400, "Missing session");
    this.destroySession(++this.raftIndex, id);
    return this.json(ctx, true);
  }

  private sessionRenew(ctx: Ctx, id: string): Response {
    if (id === "") throw new HttpError(400, "Missing session");
    const s = this.sessions.get(id);
    if (!s) throw new HttpError(404, `Session id '${id}' not found`);
    this.armSessionTimer(s);
    return this.json(ctx, [sessionJson(s)]);
  }

  private sessionInfo(ctx: Ctx, id: string): Promise<Response> {
    return this.blocking(ctx, () => {
      const index = BigInt(atLeast1(this.sessionsIndex));
      const s = this.sessions.get(id);
      const json = s ? [sessionJson(s)] : [];
      return { index, respond: () => this.json(ctx, json, index) };
    });
  }

  private sessionList(ctx: Ctx): Promise<Response> {
    return this.blocking(ctx, () => {
      const index = BigInt(atLeast1(this.sessionsIndex));
      const json = [...this.sessions.values()].sort((a, b) => byteCompare(a.id, b.id)).map(sessionJson);
      return { index, respond: () => this.json(ctx, json, index) };
    });
  }

  // ---------------------------------------------------------------- agent, catalog, health

  private agentSelf(ctx: Ctx): Response {
    const node = this.nodes.get(this.nodeName)!;
    return this.json(ctx, {
      Config: {
        Datacenter: this.datacenter,
        NodeName: this.nodeName,
        NodeID: node.id,
        Revision: "590878ba",
        Server: true,
        Version: "1.10.12",
      },
      Member: {
        Name: this.nodeName,
        Addr: node.address,
        Port: 8301,
        Tags: new Map(
          Object.entries({
            acls: this.opts.requireToken ? "1" : "0",
            build: "1.10.12:590878ba",
            dc: this.datacenter,
            id: node.id,
            port: "8300",
            raft_vsn: "3",
            role: "consul",
            segment: "",
            vsn: "2",
            vsn_max: "3",
            vsn_min: "2",
          }),
        ),
        Status: 1,
        ProtocolMin: 1,
        ProtocolMax: 5,
        ProtocolCur: 2,
        DelegateMin: 2,
        DelegateMax: 5,
        DelegateCur: 4,
      },
      Meta: new Map(Object.entries(node.meta)),
    });
  }

  private nodeJson(n: CatalogNode): Json {
    return {
      ID: n.id,
      Node: n.name,
      Address: n.address,
      Datacenter: this.datacenter,
      TaggedAddresses: new Map(Object.entries({ lan: n.address, lan_ipv4: n.address, wan: n.address, wan_ipv4: n.address })),
      Meta: new Map(Object.entries(n.meta)),
      CreateIndex: n.createIndex,
      ModifyIndex: n.modifyIndex,
    };
  }

  private catalogNodes(ctx: Ctx): Promise<Response> {
    return this.blocking(ctx, () => {
      const index = BigInt(atLeast1(this.catalogIndex));
      const json = [...this.nodes.values()].sort((a, b) => byteCompare(a.name, b.name)).map((n) => this.nodeJson(n));
      return { index, respond: () => this.json(ctx, json, index) };
    });
  }

  private catalogServices(ctx: Ctx): Promise<Response> {
    return this.blocking(ctx, () => {
      const index = BigInt(atLeast1(this.catalogIndex));
      const tags = new Map<string, Set<string>>();
      for (const n of this.nodes.values()) {
        for (const s of n.services) {
          const set = tags.get(s.name) ?? new Set<string>();
          for (const t of s.tags) set.add(t);
          tags.set(s.name, set);
        }
      }
      const json = new Map<string, Json>([...tags].map(([k, v]) => [k, [...v].sort()]));
      return { index, respond: () => this.json(ctx, json, index) };
    });
  }

  /** Instances of `name` carrying every `?tag=` given, in node order. */
  private instances(name: string, q: URLSearchParams): { node: CatalogNode; svc: Required<StandinService> }[] {
    const want = q.getAll("tag");
    const out: { node: CatalogNode; svc: Required<StandinService> }[] = [];
    for (const node of [...this.nodes.values()].sort((a, b) => byteCompare(a.name, b.name))) {
      for (const svc of node.services) {
        if (svc.name === name && want.every((t) => svc.tags.includes(t))) out.push({ node, svc });
      }
    }
    return out;
  }

  private catalogService(ctx: Ctx, name: string): Promise<Response> {
    return this.blocking(ctx, () => {
      const index = BigInt(atLeast1(this.catalogIndex));
      const json = this.instances(name, ctx.q).map(({ node, svc }) => ({
        ID: node.id,
        Node: node.name,
        Address: node.address,
        Datacenter: this.datacenter,
        TaggedAddresses: new Map(Object.entries({ lan: node.address, lan_ipv4: node.address, wan: node.address, wan_ipv4: node.address })),
        NodeMeta: new Map(Object.entries(node.meta)),
        ServiceKind: "",
        ServiceID: svc.id,
        ServiceName: svc.name,
        ServiceTags: svc.tags,
        ServiceAddress: svc.address,
        ServiceWeights: { Passing: 1, Warning: 1 },
        ServiceMeta: new Map(Object.entries(svc.meta)),
        ServicePort: svc.port,
        ServiceEnableTagOverride: false,
        ServiceProxy: { MeshGateway: {}, Expose: {} },
        ServiceConnect: {},
        CreateIndex: node.createIndex,
        ModifyIndex: node.modifyIndex,
      }));
      return { index, respond: () => this.json(ctx, json, index) };
    });
  }

  private healthService(ctx: Ctx, name: string): Promise<Response> {
    return this.blocking(ctx, () => {
      const index = BigInt(atLeast1(this.catalogIndex));
      const passing = ctx.q.has("passing");
      const json = this.instances(name, ctx.q)
        .filter(({ node }) => !passing || node.status === "passing")
        .map(({ node, svc }) => ({
          Node: this.nodeJson(node),
          Service: {
            ID: svc.id,
            Service: svc.name,
            Tags: svc.tags,
            Address: svc.address,
            Meta: new Map(Object.entries(svc.meta)),
            Port: svc.port,
            Weights: { Passing: 1, Warning: 1 },
            EnableTagOverride: false,
            Proxy: { MeshGateway: {}, Expose: {} },
            Connect: {},
            CreateIndex: node.createIndex,
            ModifyIndex: node.modifyIndex,
          },
          Checks: [
            {
              Node: node.name,
              CheckID: SERF_HEALTH,
              Name: "Serf Health Status",
              Status: node.status,
              Notes: "",
              Output: node.status === "passing" ? "Agent alive and reachable" : "Agent not live or unreachable",
              ServiceID: "",
              ServiceName: "",
              ServiceTags: [],
              Type: "",
              Definition: {},
              CreateIndex: node.createIndex,
              ModifyIndex: node.modifyIndex,
            },
          ],
        }));
      return { index, respond: () => this.json(ctx, json, index) };
    });
  }
}

// ------------------------------------------------------------------ helpers

interface Ctx {
  req: Request;
  path: string;
  q: URLSearchParams;
  body: Uint8Array;
  pretty: boolean;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** A plain-text answer as Go writes one (fmt.Fprint after WriteHeader: the Content-Type is sniffed). */
function goText(status: number, text: string, aclPolicy: string, extra: [string, string][] = []): Response {
  return new Response(text, {
    status,
    headers: [...extra, ["Vary", "Accept-Encoding"], ["X-Consul-Default-Acl-Policy", aclPolicy], ...(text === "" ? [] : [["Content-Type", "text/plain; charset=utf-8"] as [string, string]])],
  });
}

function conflictingFlags(q: URLSearchParams, flags: string[]): ((aclPolicy: string) => Response) | undefined {
  if (flags.filter((f) => q.has(f)).length < 2) return undefined;
  return (aclPolicy) => goText(400, `Conflicting flags: ${goQueryEncode(q)}`, aclPolicy);
}

/** Go's url.Values.Encode: keys sorted, QueryEscape'd. */
function goQueryEncode(q: URLSearchParams): string {
  const esc = (s: string) =>
    [...utf8(s)].map((b) => (/[A-Za-z0-9\-_.~]/.test(String.fromCharCode(b)) ? String.fromCharCode(b) : b === 0x20 ? "+" : `%${b.toString(16).toUpperCase().padStart(2, "0")}`)).join("");
  const keys = [...new Set(q.keys())].sort();
  return keys.flatMap((k) => q.getAll(k).map((v) => `${esc(k)}=${esc(v)}`)).join("&");
}

function parseWait(q: URLSearchParams): { min: bigint; waitMs: number } {
  let min = 0n;
  const idx = q.get("index");
  if (idx !== null && idx !== "") {
    if (!/^[0-9]+$/.test(idx) || BigInt(idx) >= 1n << 64n) throw new HttpError(400, "Invalid index");
    min = BigInt(idx);
  }
  let waitMs = 0;
  const wait = q.get("wait");
  if (wait !== null && wait !== "") {
    const ns = parseGoDuration(wait);
    if (ns === undefined) throw new HttpError(400, "Invalid wait time");
    waitMs = ns / 1e6;
  }
  if (waitMs > MAX_QUERY_TIME_MS) waitMs = MAX_QUERY_TIME_MS;
  if (min > 0n && waitMs === 0) waitMs = DEFAULT_QUERY_TIME_MS;
  return { min, waitMs };
}

/** strconv.ParseUint(s, 10, 64), with Go's error text. */
function parseUint64(s: string): bigint {
  if (!/^[0-9]+$/.test(s)) throw new HttpError(500, `strconv.ParseUint: parsing ${goQuote(s)}: invalid syntax`);
  const v = BigInt(s);
  if (v >= 1n << 64n) throw new HttpError(500, `strconv.ParseUint: parsing ${goQuote(s)}: value out of range`);
  return v;
}

/** time.ParseDuration → nanoseconds, or undefined when Go would refuse it. */
export function parseGoDuration(s: string): number | undefined {
  const units: Record<string, number> = { ns: 1, us: 1e3, "µs": 1e3, "μs": 1e3, ms: 1e6, s: 1e9, m: 60e9, h: 3600e9 };
  let rest = s;
  let sign = 1;
  if (rest.startsWith("-") || rest.startsWith("+")) {
    sign = rest.startsWith("-") ? -1 : 1;
    rest = rest.slice(1);
  }
  if (rest === "0") return 0;
  if (rest === "") return undefined;
  let total = 0;
  const re = /^(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)/;
  while (rest !== "") {
    const m = re.exec(rest);
    if (!m) return undefined;
    total += Number(m[1]) * units[m[2]!]!;
    rest = rest.slice(m[0].length);
  }
  return sign * total;
}

function goQuote(s: string): string {
  return JSON.stringify(s);
}

function atLeast1(n: number): number {
  return n < 1 ? 1 : n;
}

function bytes(v: string | Uint8Array): Uint8Array {
  return typeof v === "string" ? utf8(v) : v;
}

function utf8(s: string): Uint8Array {
  return new TextEncoder().encode(s);
}

function byteCompare(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

/** A stable node ID derived from the name (Consul's are random UUIDs). */
function nodeIdFor(name: string): string {
  const h = new Bun.CryptoHasher("sha256").update(`node:${name}`).digest("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

/** Consul's uuidToUint64: the UUID's upper and lower 64 bits XORed, the event list's index. */
export function eventIndex(id: string): bigint {
  const hex = id.replaceAll("-", "");
  return BigInt(`0x${hex.slice(0, 16)}`) ^ BigInt(`0x${hex.slice(16, 32)}`);
}

/** shouldProcessUserEvent: node name regexp, then a service (and tag) of this node matching. */
function passesFilters(ev: Pick<StoredEvent, "nodeFilter" | "serviceFilter" | "tagFilter">, node: CatalogNode): boolean {
  if (ev.nodeFilter !== "" && !new RegExp(ev.nodeFilter).test(node.name)) return false;
  if (ev.serviceFilter !== "") {
    const sre = new RegExp(ev.serviceFilter);
    const tre = ev.tagFilter !== "" ? new RegExp(ev.tagFilter) : undefined;
    return node.services.some((s) => sre.test(s.name) && (!tre || s.tags.some((t) => tre.test(t))));
  }
  return true;
}

function dirEntryJson(e: KvSnapshotEntry): Json {
  const o: { [k: string]: Json } = {
    LockIndex: e.lockIndex,
    Key: e.key,
    Flags: e.flags,
    Value: e.value.length === 0 ? null : Buffer.from(e.value).toString("base64"),
  };
  if (e.session !== "") o.Session = e.session;
  o.CreateIndex = e.createIndex;
  o.ModifyIndex = e.modifyIndex;
  return o;
}

function eventJson(e: StoredEvent): Json {
  return {
    ID: e.id,
    Name: e.name,
    Payload: e.payload === null ? null : Buffer.from(e.payload).toString("base64"),
    NodeFilter: e.nodeFilter,
    ServiceFilter: e.serviceFilter,
    TagFilter: e.tagFilter,
    Version: e.version,
    LTime: e.ltime,
  };
}

function sessionJson(s: Session): Json {
  return {
    ID: s.id,
    Name: s.name,
    Node: s.node,
    LockDelay: s.lockDelayNs,
    Behavior: s.behavior,
    TTL: s.ttl,
    NodeChecks: s.nodeChecks,
    ServiceChecks: null,
    CreateIndex: s.createIndex,
    ModifyIndex: s.modifyIndex,
  };
}

// ------------------------------------------------------------------ Go's encoding/json

/** Objects are Go structs (fields in order); a Map is a Go map (keys sorted). */
type Json = null | boolean | number | bigint | string | Json[] | Map<string, Json> | { [k: string]: Json };

/** json.Marshal, or json.MarshalIndent(v, "", "    ") plus "\n" as Consul's dev mode writes. */
export function goJson(v: Json, pretty: boolean): string {
  const enc = (v: Json, depth: number): string => {
    if (v === null) return "null";
    if (typeof v === "boolean" || typeof v === "bigint") return String(v);
    if (typeof v === "number") return String(v);
    if (typeof v === "string") return goString(v);
    const items: [string | undefined, Json][] = Array.isArray(v)
      ? v.map((x) => [undefined, x])
      : v instanceof Map
        ? [...v].sort(([a], [b]) => byteCompare(a, b))
        : Object.entries(v);
    const [open, close] = Array.isArray(v) ? ["[", "]"] : ["{", "}"];
    if (items.length === 0) return open + close;
    const nl = pretty ? `\n${"    ".repeat(depth + 1)}` : "";
    const parts = items.map(([k, x]) => (k === undefined ? "" : `${goString(k)}:${pretty ? " " : ""}`) + enc(x, depth + 1));
    return open + nl + parts.join(`,${nl}`) + (pretty ? `\n${"    ".repeat(depth)}` : "") + close;
  };
  return enc(v, 0) + (pretty ? "\n" : "");
}

/** Go's string encoding with HTML escaping (<, >, & and U+2028/2029 as \u escapes). */
function goString(s: string): string {
  let out = '"';
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (ch === '"') out += '\\"';
    else if (ch === "\\") out += "\\\\";
    else if (ch === "\n") out += "\\n";
    else if (ch === "\r") out += "\\r";
    else if (ch === "\t") out += "\\t";
    else if (c < 0x20 || ch === "<" || ch === ">" || ch === "&" || c === 0x2028 || c === 0x2029) out += `\\u${c.toString(16).padStart(4, "0")}`;
    else if (c >= 0xd800 && c <= 0xdfff) out += "\\ufffd";
    else out += ch;
  }
  return out + '"';
}

// ------------------------------------------------------------------ msgpack sizes of a user event

/**
 * Go's ugorji codec. Consul's handle writes the new spec (WriteExt: str8, bin); serf's default
 * handle writes the old one (raw16 for strings and bytes of 32 bytes and more).
 */
class Msgpack {
  readonly out: number[] = [];
  constructor(private readonly newSpec: boolean) {}
  private len(l: number, fix: number | undefined, b8: number | undefined, b16: number, b32: number): void {
    if (fix !== undefined && l < 32) this.out.push(fix | l);
    else if (b8 !== undefined && l < 256) this.out.push(b8, l);
    else if (l < 65536) this.out.push(b16, l >> 8, l & 0xff);
    else this.out.push(b32, (l >>> 24) & 0xff, (l >> 16) & 0xff, (l >> 8) & 0xff, l & 0xff);
  }
  str(s: string): this {
    const b = utf8(s);
    if (this.newSpec) this.len(b.length, 0xa0, 0xd9, 0xda, 0xdb);
    else this.len(b.length, 0xa0, undefined, 0xda, 0xdb);
    this.out.push(...b);
    return this;
  }
  bin(b: Uint8Array): this {
    if (this.newSpec) this.len(b.length, undefined, 0xc4, 0xc5, 0xc6);
    else this.len(b.length, 0xa0, undefined, 0xda, 0xdb);
    this.out.push(...b);
    return this;
  }
  map(n: number): this {
    this.out.push(0x80 | n);
    return this;
  }
  uint(n: number): this {
    if (n < 128) this.out.push(n);
    else if (n < 256) this.out.push(0xcc, n);
    else if (n < 65536) this.out.push(0xcd, n >> 8, n & 0xff);
    else this.out.push(0xce, (n >>> 24) & 0xff, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff);
    return this;
  }
  bool(v: boolean): this {
    this.out.push(v ? 0xc3 : 0xc2);
    return this;
  }
}

/** Consul's UserEvent struct as encodeMsgPack writes it (omitempty fields left out, LTime not encoded). */
function encodeConsulUserEvent(ev: StoredEvent): Uint8Array {
  const fields: [string, (m: Msgpack) => void][] = [
    ["ID", (m) => m.str(ev.id)],
    ["n", (m) => m.str(ev.name)],
  ];
  if (ev.payload && ev.payload.length > 0) fields.push(["p", (m) => m.bin(ev.payload!)]);
  if (ev.nodeFilter !== "") fields.push(["nf", (m) => m.str(ev.nodeFilter)]);
  if (ev.serviceFilter !== "") fields.push(["sf", (m) => m.str(ev.serviceFilter)]);
  if (ev.tagFilter !== "") fields.push(["tf", (m) => m.str(ev.tagFilter)]);
  fields.push(["v", (m) => m.uint(ev.version)]);
  const m = new Msgpack(true).map(fields.length);
  for (const [k, f] of fields) {
    m.str(k);
    f(m);
  }
  return Uint8Array.from(m.out);
}

/** serf's encodeMessage(messageUserEventType, messageUserEvent{LTime, Name, Payload, CC}). */
function encodeSerfUserEvent(ltime: number, name: string, payload: Uint8Array): Uint8Array {
  const m = new Msgpack(false);
  m.out.push(8);
  m.map(4).str("LTime").uint(ltime).str("Name").str(name).str("Payload").bin(payload).str("CC").bool(false);
  return Uint8Array.from(m.out);
}
