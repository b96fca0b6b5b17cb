/**
 * `src/consul/`: Consul's HTTP API as pulldeploy uses it: KV (the desired release, locks), user events
 * (the wake-up call), sessions, the local agent, the catalog and health.
 * May import the shared modules only. The folder:
 * - client.ts: the client (this file): requests, the transport, the contracts below;
 * - config.ts: the agent's address, token and TLS from the environment and flags;
 * - blocking.ts: the blocking-query index rule and how long a blocking request may be held;
 * - decode.ts: the answers as typed records; error.ts: `ConsulError`;
 * - event-size.ts: a user event's encoded size against serf's 512-byte limit.
 *
 * Contracts:
 * - Every non-2xx answer is a `ConsulError` (phase "consul") with a one-line message, context first:
 *   `consul PUT /v1/kv/x: 403 Permission denied`; the status and the full body stay on the error.
 *   The answers that are data, not failures: a missing key (`kvGet` → null entry, `kvList` → [])
 *   and a session that is gone (`sessionRenew` → false).
 * - An unreachable agent is `consul 127.0.0.1:8500 unreachable: ECONNREFUSED`. A caller's `signal`
 *   aborting rejects with the signal's reason, unwrapped.
 * - The token goes in `X-Consul-Token` only: never in a URL, a message or a log line.
 * - Blocking queries: pass back the `index` you got with a `wait` ("30s"); feed every answer's index
 *   through `nextIndex` (blocking.ts).
 * - KV flags are uint64 (`consul lock` writes 3304740253564472344): they are `bigint`, exact.
 */
import { USER_AGENT } from "../version.ts";
import { blockingHoldMs, blockingQuery, type BlockingOptions } from "./blocking.ts";
import type { ConsulConfig } from "./config.ts";
import {
  decodeAgentSelf,
  decodeBool,
  decodeCatalogNodes,
  decodeCatalogService,
  decodeEntries,
  decodeEvent,
  decodeHealthService,
  decodeSessionInfo,
  isObject,
  parseJson,
  raftIndex,
  summary,
  type Answer,
  type CatalogNode,
  type CatalogServiceInstance,
  type ConsulEvent,
  type HealthServiceInstance,
  type KvEntry,
  type SessionInfo,
} from "./decode.ts";
import { ConsulError, unexpected } from "./error.ts";

// What callers of the client use with it, importable from here with it.
export { consulConfig, type ConsulConfig } from "./config.ts";
export type { BlockingOptions } from "./blocking.ts";
export type {
  CatalogNode,
  CatalogServiceInstance,
  ConsulEvent,
  HealthServiceInstance,
  KvEntry,
  SessionInfo,
} from "./decode.ts";
export { ConsulError } from "./error.ts";

export interface ConsulClientOptions {
  /** Time allowed for an answer beyond a blocking query's wait (default 30 s). */
  timeoutMs?: number;
  userAgent?: string;
}

type Query = Record<string, string | number | bigint | true | undefined>;

export class ConsulClient {
  readonly #config: ConsulConfig;
  readonly #timeoutMs: number;
  readonly #userAgent: string;

  constructor(config: ConsulConfig, options: ConsulClientOptions = {}) {
    this.#config = config;
    this.#timeoutMs = options.timeoutMs ?? 30_000;
    this.#userAgent = options.userAgent ?? USER_AGENT;
  }

  /** The agent as messages name it (no token). */
  get address(): string {
    return this.#config.address;
  }

  toString(): string {
    return `ConsulClient(${this.#config.address})`;
  }

  // -------------------------------------------------------------- KV

  /** One key; `entry` is null when the key does not exist. */
  async kvGet(key: string, opts: BlockingOptions = {}): Promise<{ entry: KvEntry | null; index: number }> {
    const path = kvPath(key);
    const a = await this.#call("GET", path, {
      query: blockingQuery(opts),
      signal: opts.signal,
      blocking: !!opts.index,
      wait: opts.wait,
      ok: [404],
    });
    const index = raftIndex(a, "GET", path);
    if (a.status === 404) return { entry: null, index };
    const entries = decodeEntries(parseJson(a, "GET", path), "GET", path);
    return { entry: entries[0] ?? null, index };
  }

  /** One key's value as UTF-8; `value` is null when the key does not exist ("" when it is empty). */
  async kvGetText(
    key: string,
    opts: BlockingOptions = {},
  ): Promise<{ value: string | null; entry: KvEntry | null; index: number }> {
    const { entry, index } = await this.kvGet(key, opts);
    return { value: entry ? new TextDecoder().decode(entry.value ?? new Uint8Array()) : null, entry, index };
  }

  /**
   * One key's value parsed as JSON (null when the key does not exist). `parse` turns the parsed value
   * into `T` or throws; without it the value is trusted to be a `T`.
   */
  async kvGetJson<T>(
    key: string,
    opts: BlockingOptions & { parse?: (raw: unknown) => T } = {},
  ): Promise<{ value: T | null; entry: KvEntry | null; index: number }> {
    const { value: text, entry, index } = await this.kvGetText(key, opts);
    if (text === null) return { value: null, entry, index };
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch (err) {
      throw new ConsulError(`consul kv ${key}: value is not JSON: ${(err as Error).message}`, { cause: err });
    }
    return { value: opts.parse ? opts.parse(raw) : (raw as T), entry, index };
  }

  /** Every key under `prefix` (recursive), in key order; [] when there are none. */
  async kvList(prefix: string, opts: BlockingOptions = {}): Promise<{ entries: KvEntry[]; index: number }> {
    const path = kvPath(prefix);
    const a = await this.#call("GET", path, {
      query: { recurse: true, ...blockingQuery(opts) },
      signal: opts.signal,
      blocking: !!opts.index,
      wait: opts.wait,
      ok: [404],
    });
    const index = raftIndex(a, "GET", path);
    if (a.status === 404) return { entries: [], index };
    return { entries: decodeEntries(parseJson(a, "GET", path), "GET", path), index };
  }

  /**
   * Write `key`. `cas`: only if its ModifyIndex is still that (0: only if it does not exist);
   * `acquire`/`release`: take or give back the lock with a session. Returns Consul's true/false
   * (a plain write is always true; a refused cas or lock is false).
   */
  async kvPut(
    key: string,
    body: string | Uint8Array,
    opts: { cas?: number; flags?: number | bigint; acquire?: string; release?: string } = {},
  ): Promise<boolean> {
    const path = kvPath(key);
    const a = await this.#call("PUT", path, {
      query: { flags: opts.flags, cas: opts.cas, acquire: opts.acquire, release: opts.release },
      body,
    });
    return decodeBool(a, "PUT", path);
  }

  /** Delete `key` (or every key under it with `recurse`); with `cas`, only if its ModifyIndex is that. */
  async kvDelete(key: string, opts: { recurse?: boolean; cas?: number } = {}): Promise<boolean> {
    const path = kvPath(key);
    const a = await this.#call("DELETE", path, { query: { recurse: opts.recurse ? true : undefined, cas: opts.cas } });
    return decodeBool(a, "DELETE", path);
  }

  // -------------------------------------------------------------- events

  /**
   * Fire user event `name`; the agents whose node name matches `node` (a regexp), that run a service
   * matching `service`, tagged `tag`, receive it. Best effort: gossip, no delivery guarantee and no
   * replay for an agent that was down (the agents catch up from KV).
   */
  async eventFire(
    name: string,
    payload: string | Uint8Array,
    opts: { node?: string; service?: string; tag?: string } = {},
  ): Promise<ConsulEvent> {
    const path = `/v1/event/fire/${encodeURIComponent(name)}`;
    const a = await this.#call("PUT", path, {
      query: { node: opts.node || undefined, service: opts.service || undefined, tag: opts.tag || undefined },
      body: payload,
    });
    return decodeEvent(parseJson(a, "PUT", path), "PUT", path);
  }

  // -------------------------------------------------------------- agent and catalog

  async agentSelf(): Promise<{ nodeName: string; datacenter: string }> {
    const path = "/v1/agent/self";
    return decodeAgentSelf(parseJson(await this.#call("GET", path), "GET", path), path);
  }

  /**
   * The agent's clock against ours: its answer's `Date` header (1 s resolution) minus our clock at the
   * request's midpoint, in ms (the header's whole second plus half a second: it was truncated). Any
   * answer counts, a 403 too: no ACL rights are needed to read a clock.
   */
  async clockSkewMs(): Promise<number> {
    const before = Date.now();
    const a = await this.#call("GET", "/v1/agent/self", { ok: [401, 403] });
    const after = Date.now();
    const date = Date.parse(a.headers.get("date") ?? "");
    if (Number.isNaN(date)) throw new ConsulError(`consul GET /v1/agent/self: no Date header in the answer`);
    return date + 500 - (before + after) / 2;
  }

  async catalogNodes(): Promise<CatalogNode[]> {
    const path = "/v1/catalog/nodes";
    return decodeCatalogNodes(parseJson(await this.#call("GET", path), "GET", path), path);
  }

  /** The instances of service `name` (carrying `tag`, if given), healthy or not. */
  async catalogService(name: string, tag?: string): Promise<CatalogServiceInstance[]> {
    const path = `/v1/catalog/service/${encodeURIComponent(name)}`;
    return decodeCatalogService(parseJson(await this.#call("GET", path, { query: { tag } }), "GET", path), path);
  }

  /** The instances of service `name` with their health; `passing` keeps only the healthy ones. */
  async healthService(name: string, opts: { tag?: string; passing?: boolean } = {}): Promise<HealthServiceInstance[]> {
    const path = `/v1/health/service/${encodeURIComponent(name)}`;
    const raw = parseJson(
      await this.#call("GET", path, { query: { tag: opts.tag, passing: opts.passing ? true : undefined } }),
      "GET",
      path,
    );
    return decodeHealthService(raw, path);
  }

  // -------------------------------------------------------------- sessions

  /** Create a session on this agent's node; returns its ID. `ttl`/`lockDelay` in Consul syntax ("15s"). */
  async sessionCreate(opts: {
    name: string;
    ttl?: string;
    behavior?: "release" | "delete";
    lockDelay?: string;
  }): Promise<string> {
    const path = "/v1/session/create";
    const body = JSON.stringify({
      Name: opts.name,
      ...(opts.ttl !== undefined ? { TTL: opts.ttl } : {}),
      ...(opts.behavior !== undefined ? { Behavior: opts.behavior } : {}),
      ...(opts.lockDelay !== undefined ? { LockDelay: opts.lockDelay } : {}),
    });
    const raw = parseJson(await this.#call("PUT", path, { body, json: true }), "PUT", path);
    if (!isObject(raw) || typeof raw.ID !== "string") throw unexpected("PUT", path, "a session ID");
    return raw.ID;
  }

  /** Reset the session's TTL; false when the session no longer exists (its locks are gone). */
  async sessionRenew(id: string): Promise<boolean> {
    const path = `/v1/session/renew/${encodeURIComponent(id)}`;
    const a = await this.#call("PUT", path, { ok: [404] });
    return a.status !== 404;
  }

  async sessionDestroy(id: string): Promise<boolean> {
    const path = `/v1/session/destroy/${encodeURIComponent(id)}`;
    return decodeBool(await this.#call("PUT", path), "PUT", path);
  }

  /** The session, or null when it does not exist. */
  async sessionInfo(id: string): Promise<SessionInfo | null> {
    const path = `/v1/session/info/${encodeURIComponent(id)}`;
    return decodeSessionInfo(parseJson(await this.#call("GET", path), "GET", path), path);
  }

  /**
   * Any endpoint, for the modules that own their own decoding (sessions, health: session.ts,
   * semaphore.ts): the answer's JSON (compact or pretty), its raft index, and its status. Non-2xx
   * answers other than `ok` are ConsulErrors as everywhere else.
   */
  async request(
    method: string,
    path: string,
    opts: BlockingOptions & { query?: Query; body?: string; ok?: number[] } = {},
  ): Promise<{ status: number; json: unknown; index: number; text: string }> {
    const a = await this.#call(method, path, {
      query: { ...opts.query, ...blockingQuery(opts) },
      body: opts.body,
      json: opts.body !== undefined,
      signal: opts.signal,
      blocking: !!opts.index,
      wait: opts.wait,
      ok: opts.ok,
    });
    const json = a.status >= 200 && a.status < 300 && a.text.trim() !== "" ? parseJson(a, method, path) : null;
    return { status: a.status, json, index: raftIndex(a, method, path), text: a.text };
  }

  // -------------------------------------------------------------- transport

  async #call(
    method: string,
    path: string,
    opts: {
      query?: Query;
      body?: string | Uint8Array;
      json?: boolean;
      signal?: AbortSignal;
      blocking?: boolean;
      wait?: string;
      ok?: number[];
    } = {},
  ): Promise<Answer> {
    const cfg = this.#config;
    const url = cfg.baseUrl + path + queryString(opts.query ?? {});
    const headers: Record<string, string> = { "User-Agent": this.#userAgent };
    if (cfg.token) headers["X-Consul-Token"] = cfg.token;
    if (opts.json) headers["Content-Type"] = "application/json";

    // A blocking query may be held for its wait (and Consul's jitter); allow that plus the usual time to answer.
    let waitMs = 0;
    if (opts.blocking) {
      const w = blockingHoldMs(opts.wait);
      if (typeof w === "string") throw new ConsulError(`consul ${method} ${path}: wait ${w}`);
      waitMs = w;
    }
    const limitMs = waitMs + this.#timeoutMs;
    const timeout = AbortSignal.timeout(limitMs);
    const signal = opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;

    let res: Response;
    let bytes: Uint8Array;
    try {
      res = await fetch(url, {
        method,
        headers,
        // An ArrayBuffer-backed view: what the DOM's fetch types take too (the dashboard page's check loads this file).
        body: opts.body as string | Uint8Array<ArrayBuffer> | undefined,
        signal,
        redirect: "manual",
        ...(cfg.unixSocket !== undefined ? { unix: cfg.unixSocket } : {}),
        ...(cfg.tls
          ? {
              tls: {
                ...(cfg.tls.ca ? { ca: cfg.tls.ca } : {}),
                ...(cfg.tls.cert ? { cert: cfg.tls.cert } : {}),
                ...(cfg.tls.key ? { key: cfg.tls.key } : {}),
                ...(cfg.tls.serverName ? { serverName: cfg.tls.serverName } : {}),
                rejectUnauthorized: cfg.tls.verify,
              },
            }
          : {}),
      });
      bytes = new Uint8Array(await res.arrayBuffer());
    } catch (err) {
      if (opts.signal?.aborted) throw opts.signal.reason;
      if (timeout.aborted) {
        const within = limitMs < 10_000 ? `${Math.round(limitMs)}ms` : `${Math.round(limitMs / 1000)}s`;
        throw new ConsulError(`consul ${method} ${path}: no answer from ${cfg.address} within ${within}`, {
          cause: err,
        });
      }
      const code = (err as { code?: unknown }).code;
      const why = typeof code === "string" && code !== "" ? code : (err as Error).message;
      throw new ConsulError(`consul ${cfg.address} unreachable: ${why}`, { cause: err });
    }

    const text = new TextDecoder().decode(bytes);
    if ((res.status < 200 || res.status > 299) && !(opts.ok ?? []).includes(res.status)) {
      throw new ConsulError(`consul ${method} ${path}: ${res.status} ${summary(text) || res.statusText}`, {
        status: res.status,
        body: text,
      });
    }
    return { status: res.status, headers: res.headers, text, bytes };
  }
}

// ------------------------------------------------------------------ request shape

/** `/v1/kv/<key>` with each segment escaped; leading slashes dropped (Consul would redirect them). */
/**
 * A key's URL path. A `.` or `..` segment is refused: `fetch` resolves dot segments, so
 * `nodes/../latest` would read or write another key (names are checked where they come in too;
 * this is the second line).
 */
function kvPath(key: string): string {
  const segments = key.replace(/^\/+/, "").split("/");
  if (segments.some((s) => s === "." || s === ".."))
    throw new ConsulError(`consul kv ${JSON.stringify(key)}: a key may not have a "." or ".." segment`);
  return `/v1/kv/${segments.map(encodeURIComponent).join("/")}`;
}

/** `?recurse&flags=42`: `true` is a bare flag, undefined is left out. Never carries the token. */
function queryString(q: Query): string {
  const parts: string[] = [];
  for (const [k, v] of Object.entries(q)) {
    if (v === undefined) continue;
    parts.push(v === true ? k : `${k}=${encodeURIComponent(String(v))}`);
  }
  return parts.length === 0 ? "" : `?${parts.join("&")}`;
}
