/**
 * One Consul 1.10 agent's HTTP API on Bun.serve (127.0.0.1), in front of a ConsulCluster's shared
 * state. Each agent has its own node name, its own local checks and services (on its catalog node),
 * its own event buffer and its own JSON style: a dev agent (devMode, the older captures) indents by 4
 * spaces and ends with "\n"; a production agent (the cluster captures) writes compact JSON unless
 * `?pretty`.
 *
 * Wire format, as captured (health-notes.txt):
 * - Headers in Go's order: the handler's sorted headers, then Date, then Content-Length. Bun writes
 *   some "common" headers (Content-Type, Content-Security-Policy, X-Content-Type-Options) first and
 *   Content-Length last, so `?raw` KV reads and text/plain errors (Go appends a sniffed Content-Type
 *   after Content-Length) come out in another order: same lines, not the same order.
 * - Bodies over 2048 bytes are sent chunked without Content-Length (Go's net/http buffer size): a
 *   streamed Bun body gives exactly that, with Transfer-Encoding after Date as Go writes it.
 * - agent endpoints: Content-Type, Vary, X-Consul-Default-Acl-Policy (no index); catalog and health:
 *   + X-Consul-Effective-Consistency: leader and the blocking-query headers; a BLOCKING health/service
 *   read on a client agent says X-Consul-Knownleader: false, X-Consul-Query-Backend: streaming.
 * - Errors a client agent forwards to the servers carry "rpc error making call: " (a server, or a
 *   dev agent, answers them itself, without the prefix).
 * - /v1/agent/self of a production agent is the captured node-1 answer (8806 bytes: DebugConfig and
 *   all) with this agent's node name, ID, address and server flag put in; a dev agent's is the short
 *   Config/Member/Meta subset pulldeploy reads.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import {
  atLeast1,
  byteCompare,
  bytes,
  conflictingFlags,
  encodeConsulUserEvent,
  encodeSerfUserEvent,
  eventIndex,
  goJson,
  goQuote,
  goText,
  HttpError,
  type Json,
  parseGoDuration,
  parseUint64,
  parseWait,
  utf8,
} from "./go.ts";
import {
  type AgentCheck,
  type CatalogNode,
  type ConsulCluster,
  fieldCI,
  SERF_HEALTH,
  type ServiceDef,
  type Session,
  SESSION_TTL_MAX_MS,
  sessionJson,
} from "./cluster.ts";
import type { CheckStatus, KvSnapshotEntry, LoggedRequest, NodeSpec, StandinOptions, StoredEvent } from "./types.ts";

const KV_MAX_VALUE_SIZE = 512 * 1024;
const USER_EVENT_SIZE_LIMIT = 512;
/** Go's net/http buffers 2048 bytes of a body before deciding between Content-Length and chunked. */
const CHUNK_THRESHOLD = 2048;

interface Ctx {
  req: Request;
  path: string;
  q: URLSearchParams;
  body: Uint8Array;
  pretty: boolean;
}

/** What a query computes: its index and the response to send for it. */
interface QueryResult {
  index: bigint;
  respond: () => Response;
}

export interface AgentConfig extends StandinOptions {
  /** A server agent (dev agents are): no "rpc error making call" prefix, role "consul" in members. */
  server?: boolean;
}

export class ConsulStandin implements AsyncDisposable {
  readonly requests: LoggedRequest[] = [];
  readonly nodeName: string;
  readonly datacenter: string;
  /** The events this agent received (what /v1/event/list answers), in arrival order. */
  events: StoredEvent[] = [];
  /** The order /v1/agent/members lists the members in (memberlist's own order; default: server, then by name). */
  memberOrder: string[] | undefined;
  private readonly opts: AgentConfig;
  private server: ReturnType<typeof Bun.serve> | undefined;
  private boundPort = 0;

  constructor(
    readonly cluster: ConsulCluster,
    options: AgentConfig = {},
  ) {
    this.opts = options;
    this.nodeName = options.nodeName ?? "dev";
    this.datacenter = cluster.datacenter;
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
  get running(): boolean {
    return this.server !== undefined;
  }
  /** The environment that points a Consul client here (with the token when ACLs are on). */
  get env(): Record<string, string> {
    const env: Record<string, string> = { CONSUL_HTTP_ADDR: this.addr };
    if (this.opts.requireToken) env.CONSUL_HTTP_TOKEN = this.opts.requireToken;
    return env;
  }
  /** The last raft index used (cluster-wide). */
  get index(): number {
    return this.cluster.raftIndex;
  }
  get agentEvents(): readonly StoredEvent[] {
    return this.events;
  }
  /** Every event fired in the cluster, delivered or not. */
  get fired(): StoredEvent[] {
    return this.cluster.fired;
  }
  /** How many blocking queries are parked right now (cluster-wide). */
  get blocked(): number {
    return this.cluster.waiters.size;
  }
  private get isServer(): boolean {
    return this.opts.server ?? true;
  }
  private get rpcPrefix(): string {
    return this.isServer ? "" : "rpc error making call: ";
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
  }

  /** Stop listening and drop open connections (parked blocking queries see the connection close). */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    // Close the connections first, as a dying agent does: parked blocking queries get no answer.
    if (server) await server.stop(true);
    this.cluster.notify();
  }

  /**
   * Stop and start again on the same port, like an agent restart: the agent's events are gone.
   * `wipe: true` is a dev-mode restart: KV, sessions and indices start over, so indices go backwards.
   */
  async restart(options: { wipe?: boolean } = {}): Promise<void> {
    await this.stop();
    this.events = [];
    if (options.wipe) {
      this.cluster.reset();
      resetDevNode(this.cluster, this.nodeName);
    }
    this.start();
    // A restarted server (a dev agent is one) becomes leader again and starts every session's TTL
    // timer afresh, as Consul's leader does; a client's restart leaves them alone.
    if (this.isServer) this.cluster.rearmSessionTimers();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.cluster.stop();
  }

  // ------------------------------------------------------------ test controls (cluster-wide)

  useIds(...ids: string[]): void {
    this.cluster.useIds(...ids);
  }
  addNode(name: string, spec: NodeSpec = {}): void {
    this.cluster.addNode(name, spec);
  }
  removeNode(name: string): void {
    this.cluster.removeNode(name);
  }
  receivers(ev: Pick<StoredEvent, "nodeFilter" | "serviceFilter" | "tagFilter">): string[] {
    return this.cluster.receivers(ev);
  }
  kvPut(key: string, value: string | Uint8Array, flags: bigint = 0n): void {
    this.cluster.kvPut(key, value, flags);
  }
  kvEntry(key: string): KvSnapshotEntry | undefined {
    return this.cluster.kvEntry(key);
  }
  expireSession(id: string): void {
    this.cluster.expireSession(id);
  }
  advanceIndex(n: number): void {
    this.cluster.raftIndex += n;
  }
  /** Fire an event through this agent (same checks as the HTTP API). */
  fireEvent(
    name: string,
    payload: string | Uint8Array | null,
    filters: { node?: string; service?: string; tag?: string } = {},
  ): StoredEvent {
    const r = this.fire(name, payload === null ? null : bytes(payload), filters);
    if (typeof r === "string") throw new Error(r);
    return r;
  }
  /** Set one of this agent's checks, as a TTL update or a script check's result would. */
  setCheck(id: string, status: CheckStatus, output = ""): void {
    this.cluster.setCheck(this.nodeName, id, status, output);
  }
  waitForBlocked(options: { path?: string; count?: number; timeoutMs?: number } = {}): Promise<void> {
    return this.cluster.waitForBlocked(options);
  }
  async waitForRequest(pred: (r: LoggedRequest) => boolean, timeoutMs = 10_000): Promise<LoggedRequest> {
    await this.cluster.waitFor(() => this.requests.some(pred), "a matching request", timeoutMs);
    return this.requests.find(pred)!;
  }
  waitFor(cond: () => boolean, what = "a condition", timeoutMs = 10_000): Promise<void> {
    return this.cluster.waitFor(cond, what, timeoutMs);
  }

  private get aclPolicy(): string {
    return this.opts.requireToken ? "deny" : "allow";
  }

  private get localNode(): CatalogNode {
    return this.cluster.getNode(this.nodeName);
  }

  // ------------------------------------------------------------ HTTP

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
    req.headers.forEach((v, k) => {
      headers[k.toLowerCase()] = v;
    });
    const query: Record<string, string> = {};
    for (const [k, v] of q) if (!(k in query)) query[k] = v;
    this.requests.push({
      method: req.method,
      path,
      search: url.search.slice(1),
      query,
      headers,
      body,
      text: new TextDecoder().decode(body),
    });
    this.cluster.poke();

    if (this.opts.requireToken !== undefined) {
      const bearer = /^Bearer\s+(.+)$/i.exec(req.headers.get("authorization") ?? "")?.[1];
      const token = req.headers.get("x-consul-token") || q.get("token") || bearer || "";
      if (token === "") return goText(403, "Permission denied", this.aclPolicy);
      if (token !== this.opts.requireToken) return goText(403, "ACL not found", this.aclPolicy);
    }

    const ctx: Ctx = { req, path, q, body, pretty: q.has("pretty") || (this.opts.devMode ?? true) };
    const m = (allowed: string[]) => this.methods(ctx, allowed);
    const rest = (prefix: string) => (path.startsWith(prefix) ? path.slice(prefix.length) : undefined);
    let p: string | undefined;
    try {
      if ((p = rest("/v1/kv/")) !== undefined) return await this.kvEndpoint(ctx, p);
      if ((p = rest("/v1/event/fire/")) !== undefined) return m(["PUT"]) ?? this.eventFire(ctx, p);
      if (path === "/v1/event/list") return m(["GET"]) ?? (await this.eventList(ctx));
      if (path === "/v1/session/create") return m(["PUT"]) ?? this.sessionCreate(ctx);
      if ((p = rest("/v1/session/destroy/")) !== undefined) return m(["PUT"]) ?? this.sessionDestroy(ctx, p);
      if ((p = rest("/v1/session/renew/")) !== undefined) return m(["PUT"]) ?? this.sessionRenew(ctx, p);
      if ((p = rest("/v1/session/info/")) !== undefined) return m(["GET"]) ?? (await this.sessionInfo(ctx, p));
      if ((p = rest("/v1/session/node/")) !== undefined) return m(["GET"]) ?? (await this.sessionNode(ctx, p));
      if (path === "/v1/session/list") return m(["GET"]) ?? (await this.sessionList(ctx));
      if (path === "/v1/agent/self") return m(["GET"]) ?? this.agentSelf(ctx);
      if (path === "/v1/agent/members") return m(["GET"]) ?? this.agentMembers(ctx);
      if (path === "/v1/agent/services") return m(["GET"]) ?? this.agentServices(ctx);
      if (path === "/v1/agent/checks") return m(["GET"]) ?? this.agentChecks(ctx);
      if (path === "/v1/agent/service/register") return m(["PUT"]) ?? this.agentServiceRegister(ctx);
      if ((p = rest("/v1/agent/service/deregister/")) !== undefined)
        return m(["PUT"]) ?? this.empty(this.cluster.deregisterService(this.nodeName, p));
      if ((p = rest("/v1/agent/service/")) !== undefined) return m(["GET"]) ?? this.agentService(ctx, p);
      if (path === "/v1/agent/check/register")
        return m(["PUT"]) ?? this.empty(this.cluster.registerCheck(this.nodeName, this.jsonBody(ctx)));
      if ((p = rest("/v1/agent/check/deregister/")) !== undefined)
        return m(["PUT"]) ?? this.empty(this.cluster.deregisterCheck(this.nodeName, p));
      for (const [verb, status] of [
        ["pass", "passing"],
        ["warn", "warning"],
        ["fail", "critical"],
      ] as const) {
        if ((p = rest(`/v1/agent/check/${verb}/`)) !== undefined)
          return m(["PUT"]) ?? this.empty(this.ttlUpdate(p, status, q.get("note") ?? ""));
      }
      if ((p = rest("/v1/agent/check/update/")) !== undefined) return m(["PUT"]) ?? this.checkUpdate(ctx, p);
      if (path === "/v1/catalog/nodes") return m(["GET"]) ?? (await this.catalogNodes(ctx));
      if ((p = rest("/v1/catalog/node/")) !== undefined) return m(["GET"]) ?? (await this.catalogNode(ctx, p));
      if (path === "/v1/catalog/services") return m(["GET"]) ?? (await this.catalogServices(ctx));
      if ((p = rest("/v1/catalog/service/")) !== undefined) return m(["GET"]) ?? (await this.catalogService(ctx, p));
      if ((p = rest("/v1/health/service/")) !== undefined) return m(["GET"]) ?? (await this.healthService(ctx, p));
      if ((p = rest("/v1/health/node/")) !== undefined)
        return m(["GET"]) ?? (await this.healthChecks(ctx, (n) => n.name === p));
      if ((p = rest("/v1/health/checks/")) !== undefined)
        return m(["GET"]) ?? (await this.healthChecks(ctx, (_n, c) => c !== undefined && c.serviceName === p));
      if ((p = rest("/v1/health/state/")) !== undefined) {
        const state = p;
        if (!["any", "passing", "warning", "critical"].includes(state))
          throw new HttpError(400, `Invalid state: ${state}`);
        return (
          m(["GET"]) ??
          (await this.healthChecks(ctx, (n, c) => state === "any" || (c ? c.synced.status : n.serf.status) === state))
        );
      }
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

  /** 200 with no body and no Content-Type: the agent PUTs that return nothing. */
  private empty(_?: unknown): Response {
    return new Response("", {
      status: 200,
      headers: [
        ["Vary", "Accept-Encoding"],
        ["X-Consul-Default-Acl-Policy", this.aclPolicy],
      ],
    });
  }

  private jsonBody(ctx: Ctx): Record<string, unknown> {
    if (ctx.body.length === 0) return {};
    try {
      const v: unknown = JSON.parse(new TextDecoder().decode(ctx.body));
      return v !== null && typeof v === "object" && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
    } catch (err) {
      throw new HttpError(400, `Request decode failed: ${(err as Error).message}`);
    }
  }

  /**
   * A JSON answer with Consul's headers. `index` adds X-Consul-Index; `meta` the blocking-query
   * headers (setMeta); `extra` goes between Vary and X-Consul-Default-Acl-Policy (sorted order).
   */
  private json(
    ctx: Ctx,
    value: Json,
    index?: bigint,
    o: { meta?: boolean; consistency?: boolean; streaming?: boolean; extra?: [string, string][] } = {},
  ): Response {
    const meta = o.meta ?? index !== undefined;
    const h: [string, string][] = [
      ["Content-Type", "application/json"],
      ["Vary", "Accept-Encoding"],
      ...(o.extra ?? []),
      ["X-Consul-Default-Acl-Policy", this.aclPolicy],
    ];
    if (o.consistency) h.push(["X-Consul-Effective-Consistency", "leader"]);
    if (index !== undefined) h.push(["X-Consul-Index", String(index)]);
    if (meta)
      h.push(
        ["X-Consul-Knownleader", o.streaming ? "false" : "true"],
        ["X-Consul-Lastcontact", "0"],
        ["X-Consul-Query-Backend", o.streaming ? "streaming" : "blocking-query"],
      );
    return goBody(200, goJson(value, ctx.pretty), h);
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
      headers: [
        ["Vary", "Accept-Encoding"],
        ["X-Consul-Default-Acl-Policy", this.aclPolicy],
        ...this.metaHeaders(index),
      ],
    });
  }

  /**
   * Consul's blockingQuery: without `index` answer at once; otherwise run the query again on every
   * change until `done(result)` says so, or answer the fresh result when the wait is over.
   */
  private async blocking(
    ctx: Ctx,
    run: () => QueryResult,
    done?: (r: QueryResult, min: bigint) => boolean,
  ): Promise<Response> {
    const { min, waitMs } = parseWait(ctx.q);
    const finished = done ?? ((r: QueryResult, m: bigint) => r.index > m);
    let result = run();
    if (min === 0n) return result.respond();
    const deadline = Date.now() + waitMs;
    const waiters = this.cluster.waiters;
    while (!finished(result, min)) {
      const left = deadline - Date.now();
      if (left <= 0 || ctx.req.signal.aborted || !this.server) break;
      await new Promise<void>((resolve) => {
        const w = {
          path: ctx.path,
          wake: () => {
            clearTimeout(timer);
            waiters.delete(w);
            ctx.req.signal.removeEventListener("abort", w.wake);
            this.cluster.poke();
            resolve();
          },
        };
        const timer = setTimeout(w.wake, left);
        ctx.req.signal.addEventListener("abort", w.wake);
        waiters.add(w);
        this.cluster.poke();
      });
      result = run();
    }
    return result.respond();
  }

  // ------------------------------------------------------------ KV

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
    const c = this.cluster;
    return this.blocking(ctx, () => {
      const e = c.kv.get(key);
      const index = BigInt(atLeast1(e ? e.modifyIndex : c.kvMaxIndex()));
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
    const c = this.cluster;
    const entries = [...c.kv.values()]
      .filter((e) => e.key.startsWith(prefix))
      .sort((a, b) => byteCompare(a.key, b.key));
    let lindex = 0;
    for (const e of entries) lindex = Math.max(lindex, e.modifyIndex);
    if (prefix !== "") {
      for (const [k, i] of c.tombstones) if (k.startsWith(prefix)) lindex = Math.max(lindex, i);
    } else {
      lindex = c.kvMaxIndex();
    }
    return { entries, index: atLeast1(lindex !== 0 ? lindex : c.kvMaxIndex()) };
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
    const c = this.cluster;
    if (key === "") throw new HttpError(400, "Missing key name");
    const conflict = conflictingFlags(ctx.q, ["cas", "acquire", "release"]);
    if (conflict) return conflict(this.aclPolicy);
    const flags = ctx.q.has("flags") ? parseUint64(ctx.q.get("flags")!) : 0n;
    const cas = ctx.q.has("cas") ? parseUint64(ctx.q.get("cas")!) : undefined;
    if (ctx.body.length > KV_MAX_VALUE_SIZE) {
      throw new HttpError(
        413,
        `Request body(${ctx.body.length} bytes) too large, max size: ${KV_MAX_VALUE_SIZE} bytes. See ` +
          "https://www.consul.io/docs/agent/options.html#kv_max_value_size.",
      );
    }
    let out = true;
    if (ctx.q.has("acquire")) {
      const session = ctx.q.get("acquire")!;
      const invalid = (id: string) =>
        this.isServer
          ? `invalid session ${goQuote(id)}`
          : `${this.rpcPrefix}raft apply failed: invalid session ${goQuote(id)}`;
      // The lock-delay check happens before raft: a refused lock consumes no index.
      if (c.lockDelayed(key)) out = false;
      else out = c.kvLock(++c.raftIndex, key, ctx.body, flags, session, invalid);
    } else if (ctx.q.has("release")) {
      out = c.kvUnlock(++c.raftIndex, key, ctx.body, flags, ctx.q.get("release")!);
    } else if (cas !== undefined) {
      out = c.kvCas(++c.raftIndex, key, ctx.body, flags, Number(cas));
    } else {
      c.kvSet(++c.raftIndex, key, ctx.body, flags);
    }
    return this.json(ctx, out);
  }

  private kvDeleteHttp(ctx: Ctx, key: string): Response {
    const c = this.cluster;
    const conflict = conflictingFlags(ctx.q, ["recurse", "cas"]);
    if (conflict) return conflict(this.aclPolicy);
    const recurse = ctx.q.has("recurse");
    if (!recurse && key === "") throw new HttpError(400, "Missing key name");
    const cas = ctx.q.has("cas") ? parseUint64(ctx.q.get("cas")!) : undefined;
    const idx = ++c.raftIndex;
    if (cas !== undefined) {
      const e = c.kv.get(key);
      if (!e || e.modifyIndex !== Number(cas)) return this.json(ctx, e === undefined);
      c.kvRemove(idx, key);
      return this.json(ctx, true);
    }
    if (recurse) {
      for (const k of [...c.kv.keys()]) if (k.startsWith(key)) c.kvRemove(idx, k);
    } else {
      c.kvRemove(idx, key);
    }
    return this.json(ctx, true);
  }

  // ------------------------------------------------------------ events

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
  private fire(
    name: string,
    payload: Uint8Array | null,
    f: { node?: string; service?: string; tag?: string },
  ): StoredEvent | string {
    const c = this.cluster;
    const ev: StoredEvent = {
      id: "",
      name,
      payload,
      nodeFilter: f.node ?? "",
      serviceFilter: f.service ?? "",
      tagFilter: f.tag ?? "",
      version: 1,
      ltime: c.eventClock,
    };
    if (ev.tagFilter !== "" && ev.serviceFilter === "") return "Cannot provide tag filter without service filter";
    for (const [what, re] of [
      ["node", ev.nodeFilter],
      ["service", ev.serviceFilter],
      ["tag", ev.tagFilter],
    ] as const) {
      if (re === "") continue;
      try {
        new RegExp(re);
      } catch (err) {
        return `Invalid ${what} filter: error parsing regexp: ${(err as Error).message}`;
      }
    }
    ev.id = c.nextId();
    const inner = encodeConsulUserEvent(ev);
    const serfName = `consul:event:${name}`;
    const broadcast = (msg: string) => `1 error occurred:\n\t* error broadcasting event to segment "": ${msg}\n\n`;
    if (utf8(serfName).length + inner.length > USER_EVENT_SIZE_LIMIT) {
      return broadcast(`user event exceeds configured limit of ${USER_EVENT_SIZE_LIMIT} bytes before encoding`);
    }
    if (encodeSerfUserEvent(ev.ltime, serfName, inner).length > USER_EVENT_SIZE_LIMIT) {
      return broadcast(`encoded user event exceeds configured limit of ${USER_EVENT_SIZE_LIMIT} bytes after encoding`);
    }
    c.eventClock++;
    c.deliver(ev);
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
        return { index, respond: () => this.json(ctx, events.map(eventJson), index, { meta: false }) };
      },
      (r, min) => r.index !== min,
    );
  }

  // ------------------------------------------------------------ sessions

  private sessionCreate(ctx: Ctx): Response {
    const c = this.cluster;
    const raw = this.jsonBody(ctx);
    const field = (n: string) => fieldCI(raw, n);
    const ttl = typeof field("TTL") === "string" ? (field("TTL") as string) : "";
    if (ttl !== "") {
      const ns = parseGoDuration(ttl);
      if (ns === undefined)
        throw new HttpError(500, `Session TTL '${ttl}' invalid: time: invalid duration ${goQuote(ttl)}`);
      const ms = ns / 1e6;
      if (ms !== 0 && (ms < c.sessionTtlMinMs || ms > SESSION_TTL_MAX_MS)) {
        const min = c.sessionTtlMinMs % 1000 === 0 ? `${c.sessionTtlMinMs / 1000}s` : `${c.sessionTtlMinMs}ms`;
        throw new HttpError(500, `${this.rpcPrefix}Invalid Session TTL '${ns}', must be between [${min}=24h0m0s]`);
      }
    }
    const behavior = (field("Behavior") as string | undefined) || "release";
    if (behavior !== "release" && behavior !== "delete")
      throw new HttpError(500, `Invalid Behavior setting '${behavior}'`);
    let lockDelayNs = c.newSessionDefaults().lockDelayNs;
    const ld = field("LockDelay");
    if (typeof ld === "string") {
      const ns = parseGoDuration(ld);
      if (ns === undefined) throw new HttpError(400, `Request decode failed: time: invalid duration ${goQuote(ld)}`);
      lockDelayNs = ns < 1000 ? ns * 1e9 : ns;
    } else if (typeof ld === "number") {
      lockDelayNs = ld < 1000 ? ld * 1e9 : ld;
    }
    const nodeChecks = field("NodeChecks");
    const serviceChecks = field("ServiceChecks");
    const checks = field("Checks");
    const node = typeof field("Node") === "string" && field("Node") !== "" ? (field("Node") as string) : this.nodeName;
    const s: Session = {
      id: "",
      name: typeof field("Name") === "string" ? (field("Name") as string) : "",
      node,
      lockDelayNs,
      behavior,
      ttl,
      // 1.10 puts serfHealth in NodeChecks unless NodeChecks is given (also with "Checks", as captured).
      nodeChecks: Array.isArray(nodeChecks) ? nodeChecks.map(String) : [SERF_HEALTH],
      serviceChecks: Array.isArray(serviceChecks)
        ? serviceChecks.map((x) => ({
            ID: String(fieldCI(x as Record<string, unknown>, "ID") ?? ""),
            Namespace: String(fieldCI(x as Record<string, unknown>, "Namespace") ?? ""),
          }))
        : null,
      // "Checks":["serfHealth"] alone says no more than the default NodeChecks: 1.10 drops it
      // (session-info-node.http.txt); with any other check it is kept (session-info-service-check).
      checks:
        Array.isArray(checks) && !(checks.length === 1 && checks[0] === SERF_HEALTH) ? checks.map(String) : undefined,
      createIndex: 0,
      modifyIndex: 0,
    };
    // The state store refuses a session on a check that is unknown or critical (apply failed).
    const ids = [
      ...new Set([...(s.checks ?? []), ...(s.nodeChecks ?? []), ...(s.serviceChecks ?? []).map((x) => x.ID)]),
    ];
    for (const id of ids) {
      const st = c.checkStatus(node, id);
      if (st === undefined)
        throw new HttpError(500, `${this.rpcPrefix}apply failed: Missing check '${id}' registration`);
      if (st === "critical")
        throw new HttpError(500, `${this.rpcPrefix}apply failed: Check '${id}' is in critical state`);
    }
    const idx = ++c.raftIndex;
    s.id = c.nextId();
    s.createIndex = idx;
    s.modifyIndex = idx;
    c.addSession(s);
    return this.json(ctx, { ID: s.id });
  }

  private sessionDestroy(ctx: Ctx, id: string): Response {
    if (id === "") throw new HttpError(400, "Missing session");
    this.cluster.destroySession(++this.cluster.raftIndex, id);
    return this.json(ctx, true);
  }

  private sessionRenew(ctx: Ctx, id: string): Response {
    if (id === "") throw new HttpError(400, "Missing session");
    const s = this.cluster.sessions.get(id);
    if (!s) throw new HttpError(404, `Session id '${id}' not found`);
    this.cluster.armSessionTimer(s);
    return this.json(ctx, [sessionJson(s)]);
  }

  private sessionQuery(ctx: Ctx, pick: () => Session[]): Promise<Response> {
    return this.blocking(ctx, () => {
      const index = BigInt(atLeast1(this.cluster.sessionsIndex));
      const json = pick()
        .sort((a, b) => byteCompare(a.id, b.id))
        .map(sessionJson);
      return { index, respond: () => this.json(ctx, json, index) };
    });
  }

  private sessionInfo(ctx: Ctx, id: string): Promise<Response> {
    if (id.length !== 36) {
      // The state store's UUID index refuses it; the answer still carries the query meta (index 1, leader unknown:
      // captured).
      const text = `${this.rpcPrefix}failed session lookup: index error: UUID must be 36 characters`;
      return Promise.resolve(
        goBody(500, text, [
          ["Vary", "Accept-Encoding"],
          ["X-Consul-Default-Acl-Policy", this.aclPolicy],
          ["X-Consul-Index", "1"],
          ["X-Consul-Knownleader", "false"],
          ["X-Consul-Lastcontact", "0"],
          ["X-Consul-Query-Backend", "blocking-query"],
          ["Content-Type", "text/plain; charset=utf-8"],
        ]),
      );
    }
    return this.sessionQuery(ctx, () => {
      const s = this.cluster.sessions.get(id);
      return s ? [s] : [];
    });
  }

  private sessionNode(ctx: Ctx, node: string): Promise<Response> {
    return this.sessionQuery(ctx, () => [...this.cluster.sessions.values()].filter((s) => s.node === node));
  }

  private sessionList(ctx: Ctx): Promise<Response> {
    return this.sessionQuery(ctx, () => [...this.cluster.sessions.values()]);
  }

  // ------------------------------------------------------------ agent

  private agentSelf(ctx: Ctx): Response {
    const node = this.localNode;
    if (this.opts.devMode ?? true) {
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
    const t = agentSelfTemplate();
    let body = t.body
      .replaceAll(t.nodeId, node.id)
      .replaceAll(`"${t.address}"`, `"${node.address}"`)
      .replaceAll("node-1", this.nodeName);
    if (this.isServer) body = body.replace('"Server":false', '"Server":true');
    if (ctx.pretty) body = goJson(JSON.parse(body) as Json, true);
    return goBody(200, body, [
      ["Content-Type", "application/json"],
      ["Vary", "Accept-Encoding"],
      ["X-Consul-Default-Acl-Policy", this.aclPolicy],
    ]);
  }

  private agentMembers(ctx: Ctx): Response {
    const c = this.cluster;
    const all = [...c.nodes.values()].filter((n) => c.agents.has(n.name));
    const order =
      this.memberOrder ??
      all
        .map((n) => n.name)
        .sort((a, b) => Number(c.getNode(b).server) - Number(c.getNode(a).server) || byteCompare(a, b));
    const json = order
      .map((name) => c.nodes.get(name))
      .filter((n): n is CatalogNode => n !== undefined)
      .map((n) => {
        const tags: Record<string, string> = n.server
          ? {
              acls: "0",
              bootstrap: "1",
              build: "1.10.12:590878ba",
              dc: this.datacenter,
              ft_fs: "1",
              ft_si: "1",
              id: n.id,
              port: String(c.ports.server),
              raft_vsn: "3",
              role: "consul",
              segment: "",
              vsn: "2",
              vsn_max: "3",
              vsn_min: "2",
              wan_join_port: String(c.ports.serfWan),
            }
          : {
              acls: "0",
              build: "1.10.12:590878ba",
              dc: this.datacenter,
              id: n.id,
              role: "node",
              segment: "",
              vsn: "2",
              vsn_max: "3",
              vsn_min: "2",
            };
        return {
          Name: n.name,
          Addr: n.address,
          Port: c.ports.serfLan,
          Tags: new Map(Object.entries(tags)),
          Status: n.member,
          ProtocolMin: 1,
          ProtocolMax: 5,
          ProtocolCur: 2,
          DelegateMin: 2,
          DelegateMax: 5,
          DelegateCur: 4,
        };
      });
    return this.json(ctx, json);
  }

  private agentServiceJson(s: ServiceDef, hash?: string): Json {
    const o: { [k: string]: Json } = {
      ID: s.id,
      Service: s.name,
      Tags: s.tags,
      Meta: new Map(Object.entries(s.meta)),
      Port: s.port,
      Address: s.address,
      Weights: { Passing: 1, Warning: 1 },
      EnableTagOverride: false,
    };
    if (hash !== undefined) o.ContentHash = hash;
    o.Datacenter = this.datacenter;
    return o;
  }

  private agentServices(ctx: Ctx): Response {
    const svcs = this.localNode.services.filter((s) => s.name !== "consul");
    return this.json(ctx, new Map(svcs.map((s) => [s.id, this.agentServiceJson(s)])));
  }

  private agentService(ctx: Ctx, id: string): Response {
    const s = this.localNode.services.find((x) => x.id === id);
    if (!s) throw new HttpError(404, `unknown service ID: ${id}`);
    // Consul hashes the service definition; any stable 16-hex digest of it serves a client's change detection.
    const hash = new Bun.CryptoHasher("sha256")
      .update(JSON.stringify([s.id, s.name, s.tags, s.port, s.address, s.meta]))
      .digest("hex")
      .slice(0, 16);
    return this.json(ctx, this.agentServiceJson(s, hash), undefined, {
      meta: false,
      extra: [["X-Consul-Contenthash", hash]],
    });
  }

  private agentServiceRegister(ctx: Ctx): Response {
    this.cluster.registerService(this.nodeName, this.jsonBody(ctx));
    return this.empty();
  }

  private agentChecks(ctx: Ctx): Response {
    const node = this.localNode;
    const checks = [...node.checks.values()].map((c): [string, Json] => [c.id, checkJson(node, c, c.local, 0, 0)]);
    return this.json(ctx, new Map(checks));
  }

  private ttlCheck(id: string): AgentCheck {
    const c = this.localNode.checks.get(id);
    if (c?.type !== "ttl") throw new HttpError(500, `CheckID ${goQuote(id)} does not have associated TTL`);
    return c;
  }

  /** pass/warn/fail: the note becomes the Output (Notes is the definition's and stays). */
  private ttlUpdate(id: string, status: CheckStatus, note: string): void {
    this.ttlCheck(id);
    this.cluster.setCheck(this.nodeName, id, status, note);
  }

  private checkUpdate(ctx: Ctx, id: string): Response {
    const b = this.jsonBody(ctx);
    const status = String(fieldCI(b, "Status") ?? "");
    if (!["passing", "warning", "critical"].includes(status))
      throw new HttpError(400, `Invalid check status: '${status}'`);
    this.ttlUpdate(id, status as CheckStatus, String(fieldCI(b, "Output") ?? ""));
    return this.empty();
  }

  // ------------------------------------------------------------ catalog, health

  private nodeJson(n: CatalogNode): Json {
    return {
      ID: n.id,
      Node: n.name,
      Address: n.address,
      Datacenter: this.datacenter,
      TaggedAddresses: taggedAddresses(n.address),
      Meta: new Map(Object.entries(n.meta)),
      CreateIndex: n.createIndex,
      ModifyIndex: n.modifyIndex,
    };
  }

  /** Catalog and health reads: blocking on the catalog index, with the leader-consistency headers. */
  private catalogRead(ctx: Ctx, value: () => Json, o: { streaming?: boolean } = {}): Promise<Response> {
    return this.blocking(ctx, () => {
      const index = BigInt(atLeast1(this.cluster.catalogIndex));
      const json = value();
      return { index, respond: () => this.json(ctx, json, index, { consistency: true, streaming: o.streaming }) };
    });
  }

  private sortedNodes(): CatalogNode[] {
    return [...this.cluster.nodes.values()].sort((a, b) => byteCompare(a.name, b.name));
  }

  private catalogNodes(ctx: Ctx): Promise<Response> {
    return this.catalogRead(ctx, () => this.sortedNodes().map((n) => this.nodeJson(n)));
  }

  private catalogNode(ctx: Ctx, name: string): Promise<Response> {
    const n = this.cluster.nodes.get(name);
    if (!n) return Promise.resolve(this.json(ctx, null, 1n, { consistency: true }));
    return this.catalogRead(ctx, () => ({
      Node: this.nodeJson(n),
      Services: new Map(n.services.map((s) => [s.id, healthServiceJson(s)])),
    }));
  }

  private catalogServices(ctx: Ctx): Promise<Response> {
    return this.catalogRead(ctx, () => {
      const tags = new Map<string, Set<string>>();
      for (const n of this.cluster.nodes.values()) {
        for (const s of n.services) {
          const set = tags.get(s.name) ?? new Set<string>();
          for (const t of s.tags) set.add(t);
          tags.set(s.name, set);
        }
      }
      return new Map<string, Json>([...tags].map(([k, v]) => [k, [...v].sort()]));
    });
  }

  /** Instances of `name` carrying every `?tag=` given, in node order. */
  private instances(name: string, q: URLSearchParams): { node: CatalogNode; svc: ServiceDef }[] {
    const want = q.getAll("tag");
    const out: { node: CatalogNode; svc: ServiceDef }[] = [];
    for (const node of this.sortedNodes()) {
      for (const svc of node.services)
        if (svc.name === name && want.every((t) => svc.tags.includes(t))) out.push({ node, svc });
    }
    return out;
  }

  private catalogService(ctx: Ctx, name: string): Promise<Response> {
    return this.catalogRead(ctx, () =>
      this.instances(name, ctx.q).map(({ node, svc }) => ({
        ID: node.id,
        Node: node.name,
        Address: node.address,
        Datacenter: this.datacenter,
        TaggedAddresses: taggedAddresses(node.address),
        NodeMeta: new Map(Object.entries(node.meta)),
        ServiceKind: "",
        ServiceID: svc.id,
        ServiceName: svc.name,
        ServiceTags: svc.tags,
        ServiceAddress: svc.address,
        ServiceWeights: { Passing: 1, Warning: 1 },
        ServiceMeta: new Map(Object.entries(svc.meta)),
        ServicePort: svc.port,
        ServiceSocketPath: "",
        ServiceEnableTagOverride: false,
        ServiceProxy: { Mode: "", MeshGateway: {}, Expose: {} },
        ServiceConnect: {},
        CreateIndex: svc.createIndex,
        ModifyIndex: svc.modifyIndex,
      })),
    );
  }

  /** The catalog's checks of a node (serfHealth first by CheckID order), as the servers have them. */
  private nodeChecks(n: CatalogNode): { json: Json; status: CheckStatus; check?: AgentCheck }[] {
    const out: { id: string; json: Json; status: CheckStatus; check?: AgentCheck }[] = [
      { id: SERF_HEALTH, json: serfJson(n), status: n.serf.status },
      ...[...n.checks.values()].map((c) => ({
        id: c.id,
        json: checkJson(n, c, c.synced, c.createIndex, c.modifyIndex),
        status: c.synced.status,
        check: c,
      })),
    ];
    return out.sort((a, b) => byteCompare(a.id, b.id));
  }

  private healthService(ctx: Ctx, name: string): Promise<Response> {
    const passing = ctx.q.has("passing");
    // A client agent serves blocking health/service reads from its streaming cache (captured headers).
    const streaming = !this.isServer && ctx.q.has("index");
    return this.catalogRead(
      ctx,
      () =>
        this.instances(name, ctx.q)
          .map(({ node, svc }) => ({
            node,
            svc,
            checks: this.nodeChecks(node).filter(
              (c) => !c.check || c.check.serviceId === "" || c.check.serviceId === svc.id,
            ),
          }))
          .filter(({ checks }) => !passing || checks.every((c) => c.status === "passing"))
          .map(({ node, svc, checks }) => ({
            Node: this.nodeJson(node),
            Service: healthServiceJson(svc),
            Checks: checks.map((c) => c.json),
          })),
      { streaming },
    );
  }

  /** health/node, health/checks, health/state: the catalog's checks that `pick` keeps. */
  private healthChecks(ctx: Ctx, pick: (n: CatalogNode, c: AgentCheck | undefined) => boolean): Promise<Response> {
    return this.catalogRead(ctx, () =>
      this.sortedNodes().flatMap((n) =>
        this.nodeChecks(n)
          .filter((c) => pick(n, c.check))
          .map((c) => c.json),
      ),
    );
  }
}

// ------------------------------------------------------------ JSON shapes

function taggedAddresses(a: string): Json {
  return new Map(Object.entries({ lan: a, lan_ipv4: a, wan: a, wan_ipv4: a }));
}

function healthServiceJson(s: ServiceDef): Json {
  return {
    ID: s.id,
    Service: s.name,
    Tags: s.tags,
    Address: s.address,
    // A service registered without Meta has a nil map in the state store: null here, {} on the agent.
    Meta: Object.keys(s.meta).length === 0 ? null : new Map(Object.entries(s.meta)),
    Port: s.port,
    Weights: { Passing: 1, Warning: 1 },
    EnableTagOverride: false,
    Proxy: { Mode: "", MeshGateway: {}, Expose: {} },
    Connect: {},
    CreateIndex: s.createIndex,
    ModifyIndex: s.modifyIndex,
  };
}

function checkJson(
  n: CatalogNode,
  c: AgentCheck,
  view: { status: string; output: string },
  createIndex: number,
  modifyIndex: number,
): Json {
  return {
    Node: n.name,
    CheckID: c.id,
    Name: c.name,
    Status: view.status,
    Notes: c.notes,
    Output: view.output,
    ServiceID: c.serviceId,
    ServiceName: c.serviceName,
    ServiceTags: c.serviceTags,
    Type: c.type,
    Interval: c.interval,
    Timeout: c.timeout,
    ExposedPort: 0,
    Definition: {},
    CreateIndex: createIndex,
    ModifyIndex: modifyIndex,
  };
}

function serfJson(n: CatalogNode): Json {
  return {
    Node: n.name,
    CheckID: SERF_HEALTH,
    Name: "Serf Health Status",
    Status: n.serf.status,
    Notes: "",
    Output: n.serf.output,
    ServiceID: "",
    ServiceName: "",
    ServiceTags: [],
    Type: "",
    Interval: "",
    Timeout: "",
    ExposedPort: 0,
    Definition: {},
    CreateIndex: n.serf.createIndex,
    ModifyIndex: n.serf.modifyIndex,
  };
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

/**
 * A body as Go's net/http writes it: Content-Length when it fits the 2048-byte buffer, chunked
 * without Content-Length beyond (Bun streams a ReadableStream body chunked, Transfer-Encoding after Date).
 */
function goBody(status: number, text: string, headers: [string, string][]): Response {
  const b = utf8(text);
  if (b.length <= CHUNK_THRESHOLD) return new Response(b, { status, headers });
  const stream = new ReadableStream<Uint8Array>({
    start(c) {
      c.enqueue(b);
      c.close();
    },
  });
  return new Response(stream, { status, headers });
}

/** The dev agent's own node, registered before the first index the tests see. */
export function resetDevNode(cluster: ConsulCluster, name: string): void {
  const node = cluster.addNode(name, { address: "127.0.0.1", server: true });
  cluster.raftIndex--; // registered "before" the first index, as in the captures
  const first = Math.min(cluster.raftIndex, 10);
  node.createIndex = first;
  node.serf.createIndex = first;
  node.modifyIndex = Math.min(cluster.raftIndex, 11);
  node.serf.modifyIndex = node.modifyIndex;
  cluster.catalogIndex = Math.min(cluster.raftIndex, 11);
}

let selfTemplate: { body: string; nodeId: string; address: string } | undefined;

/** The captured /v1/agent/self of node-1 (test/fixtures/consul-1.10/agent-self.http.txt), body only. */
function agentSelfTemplate(): { body: string; nodeId: string; address: string } {
  if (selfTemplate) return selfTemplate;
  const raw = readFileSync(join(import.meta.dir, "../../fixtures/consul-1.10/agent-self.http.txt"), "utf8");
  let body = raw.slice(raw.indexOf("\r\n\r\n") + 4);
  if (body.endsWith("\n")) body = body.slice(0, -1); // the capture tool's final "\n"
  const cfg = JSON.parse(body) as { Config: { NodeID: string }; Member: { Addr: string } };
  selfTemplate = { body, nodeId: cfg.Config.NodeID, address: cfg.Member.Addr };
  return selfTemplate;
}
