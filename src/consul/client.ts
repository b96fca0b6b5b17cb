/**
 * `src/consul/`: Consul's HTTP API (config from the environment, the client, event size). May
 * import store/sources/types.ts and the shared modules only.
 *
 * The Consul HTTP API as pulldeploy uses it: KV (the desired release, locks), user events (the wake-up
 * call), sessions, the local agent and the catalog. See shared/spec/consul.md.
 *
 * Contracts:
 * - Every non-2xx answer is a `ConsulError` (phase "consul") with a one-line message, context first:
 *   `consul PUT /v1/kv/x: 403 Permission denied`; the status and the full body stay on the error.
 *   The answers that are data, not failures: a missing key (`kvGet` → null entry, `kvList`/`kvKeys` → [])
 *   and a session that is gone (`sessionRenew` → false).
 * - An unreachable agent is `consul 127.0.0.1:8500 unreachable: ECONNREFUSED`. A caller's `signal`
 *   aborting rejects with the signal's reason, unwrapped.
 * - The token goes in `X-Consul-Token` only: never in a URL, a message or a log line.
 * - Blocking queries: pass back the `index` you got with a `wait` ("30s"); feed every answer's index
 *   through `nextIndex` (raft-backed endpoints). The event list's index is not a raft index: it is a
 *   decimal string that only means "the last event I saw" (see `eventIndex`).
 * - KV flags are uint64 (`consul lock` writes 3304740253564472344): they are `bigint`, exact.
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { PulldeployError, UsageError } from "../errors.ts";
import type { Env } from "../store/sources/types.ts";
import { parseDuration } from "../units.ts";
import { USER_AGENT } from "../version.ts";

export class ConsulError extends PulldeployError {
  override name = "ConsulError";
  /** The HTTP status, when Consul answered. */
  readonly status?: number;
  /** The whole answer body, when Consul answered. */
  readonly body?: string;
  constructor(message: string, options: { status?: number; body?: string; cause?: unknown } = {}) {
    super(message, "consul", { cause: options.cause });
    this.status = options.status;
    this.body = options.body;
  }
}

// ------------------------------------------------------------------ configuration

export interface ConsulConfig {
  /** Where requests go, without a trailing slash: `http://127.0.0.1:8500`, `https://consul:8501`. */
  baseUrl: string;
  /** How messages name the agent: `127.0.0.1:8500`, `consul:8501`, `unix:///run/consul.sock`. */
  address: string;
  /** The socket path when CONSUL_HTTP_ADDR is `unix://…`. */
  unixSocket?: string;
  /** The ACL token, sent as `X-Consul-Token`. Never log it. */
  token?: string;
  /** For https: PEM texts (read from the files named) and whether to verify the server. */
  tls?: { ca?: string[]; cert?: string; key?: string; serverName?: string; verify: boolean };
}

/**
 * The agent's address, token and TLS settings from Consul's own environment variables, as the
 * `consul` CLI reads them; `flags` (--consul-addr, --consul-token) win over the environment.
 *
 * - CONSUL_HTTP_ADDR: `host:port` (default 127.0.0.1:8500), `http://…`, `https://…` or `unix:///path`.
 *   CONSUL_HTTP_SSL=true makes a bare `host:port` https (and an `http://` one too: Consul never
 *   falls back to http when TLS was asked for).
 * - Token: the flag, else CONSUL_HTTP_TOKEN_FILE's content (trimmed; it wins over the variable, as in
 *   Consul's API client), else CONSUL_HTTP_TOKEN.
 * - TLS (https only): CONSUL_CACERT (file), CONSUL_CAPATH (directory of PEM files), CONSUL_CLIENT_CERT
 *   with CONSUL_CLIENT_KEY, CONSUL_TLS_SERVER_NAME, CONSUL_HTTP_SSL_VERIFY=false.
 *
 * Reads the token and certificate files now, so every problem is reported at once, as a UsageError.
 */
export function consulConfig(env: Env, flags: { addr?: string; token?: string } = {}): ConsulConfig {
  const problems: string[] = [];
  const bool = (name: string): boolean | undefined => {
    const v = env[name];
    if (v === undefined || v === "") return undefined;
    const b = parseGoBool(v);
    if (b === undefined) problems.push(`${name}: not a boolean: "${v}"`);
    return b;
  };
  const read = (name: string, path: string): string | undefined => {
    try {
      return readFileSync(path, "utf8");
    } catch (err) {
      problems.push(`${name} ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      return undefined;
    }
  };

  const ssl = bool("CONSUL_HTTP_SSL") ?? false;
  const verify = bool("CONSUL_HTTP_SSL_VERIFY") ?? true;
  const addr = nonEmpty(flags.addr) ?? nonEmpty(env.CONSUL_HTTP_ADDR) ?? "127.0.0.1:8500";
  const source = nonEmpty(flags.addr) !== undefined ? "--consul-addr" : "CONSUL_HTTP_ADDR";

  let scheme = ssl ? "https" : "http";
  let hostPort = addr;
  let unixSocket: string | undefined;
  const m = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\/(.*)$/.exec(addr);
  if (m) {
    const [, s, rest] = m;
    hostPort = rest!;
    if (s === "https") scheme = "https";
    else if (s === "unix") unixSocket = rest;
    else if (s !== "http") problems.push(`${source}: unknown scheme "${s}" in "${addr}" (use host:port, http://, https:// or unix://)`);
  }
  if (unixSocket !== undefined) {
    if (unixSocket === "") problems.push(`${source}: no socket path in "${addr}"`);
  } else if (!validHostPort(hostPort)) {
    problems.push(`${source}: not a host:port: "${addr}"`);
  }

  let token = nonEmpty(flags.token);
  if (token === undefined && nonEmpty(env.CONSUL_HTTP_TOKEN_FILE) !== undefined) {
    token = nonEmpty(read("CONSUL_HTTP_TOKEN_FILE", env.CONSUL_HTTP_TOKEN_FILE!)?.trim());
  }
  token ??= nonEmpty(env.CONSUL_HTTP_TOKEN);

  let tls: ConsulConfig["tls"];
  if (scheme === "https" && unixSocket === undefined) {
    const ca: string[] = [];
    if (nonEmpty(env.CONSUL_CACERT)) {
      const pem = read("CONSUL_CACERT", env.CONSUL_CACERT!);
      if (pem !== undefined) ca.push(pem);
    }
    if (nonEmpty(env.CONSUL_CAPATH)) {
      const dir = env.CONSUL_CAPATH!;
      try {
        for (const f of readdirSync(dir).sort()) {
          const p = join(dir, f);
          if (statSync(p).isFile()) ca.push(readFileSync(p, "utf8"));
        }
      } catch (err) {
        problems.push(`CONSUL_CAPATH ${dir}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      }
    }
    const certFile = nonEmpty(env.CONSUL_CLIENT_CERT);
    const keyFile = nonEmpty(env.CONSUL_CLIENT_KEY);
    if ((certFile === undefined) !== (keyFile === undefined)) {
      problems.push("CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY: set both or neither");
    }
    tls = {
      ...(ca.length > 0 ? { ca } : {}),
      ...(certFile && keyFile ? { cert: read("CONSUL_CLIENT_CERT", certFile), key: read("CONSUL_CLIENT_KEY", keyFile) } : {}),
      ...(nonEmpty(env.CONSUL_TLS_SERVER_NAME) ? { serverName: env.CONSUL_TLS_SERVER_NAME } : {}),
      verify,
    };
  }

  if (problems.length > 0) throw new UsageError(`consul settings: ${problems.join("; ")}`, "consul");
  return {
    baseUrl: unixSocket !== undefined ? "http://localhost" : `${scheme}://${hostPort}`,
    address: unixSocket !== undefined ? `unix://${unixSocket}` : hostPort,
    ...(unixSocket !== undefined ? { unixSocket } : {}),
    ...(token !== undefined ? { token } : {}),
    ...(tls ? { tls } : {}),
  };
}

/** Go's strconv.ParseBool, which Consul uses for its boolean variables. */
function parseGoBool(v: string): boolean | undefined {
  if (["1", "t", "T", "TRUE", "true", "True"].includes(v)) return true;
  if (["0", "f", "F", "FALSE", "false", "False"].includes(v)) return false;
  return undefined;
}

function nonEmpty(v: string | undefined): string | undefined {
  return v === undefined || v === "" ? undefined : v;
}

function validHostPort(hp: string): boolean {
  if (hp === "" || /[\s/?#@]/.test(hp)) return false;
  try {
    return new URL(`http://${hp}`).host !== "";
  } catch {
    return false;
  }
}

// ------------------------------------------------------------------ blocking-query index rule

/**
 * The index to send with the next blocking query, per Consul's blocking-query rules: if the index went
 * backwards (Consul restarted in dev mode, a snapshot was restored, the newest key under a listed prefix
 * was deleted), start over from 0, which answers at once with the current index; and never wait on an
 * index below 1, which would not block. For raft-backed endpoints (KV, catalog, sessions), not events.
 */
export function nextIndex(prev: number, got: number): number {
  if (got < prev) return 0;
  if (got < 1) return 1;
  return got;
}

/**
 * The X-Consul-Index that /v1/event/list answers when `id` is the last event: Consul's uuidToUint64,
 * the UUID's upper 64 bits XOR its lower 64 bits, as a decimal string (it exceeds 2^53).
 */
export function eventIndex(id: string): string {
  const hex = id.replaceAll("-", "");
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) throw new ConsulError(`consul event ID is not a UUID: "${id}"`);
  return (BigInt(`0x${hex.slice(0, 16)}`) ^ BigInt(`0x${hex.slice(16)}`)).toString();
}

// ------------------------------------------------------------------ user event size

/** Serf's default limit for a user event, name and payload, after encoding. */
export const USER_EVENT_SIZE_LIMIT = 512;

/**
 * The size serf checks against USER_EVENT_SIZE_LIMIT when Consul fires event `name` with `payload`:
 * Consul's msgpack-encoded event (UUID, name, payload, filters, version) wrapped in serf's message under
 * the name `consul:event:<name>`. With the name `deploy` and no filters a 404-byte payload is the most
 * that fits. `ltime` is the cluster's event clock (small on a fresh cluster; above 127 it costs 1–4 bytes
 * more), so leave a few bytes of room when the clock is unknown.
 */
export function userEventSize(
  name: string,
  payload: string | Uint8Array,
  filters: { node?: string; service?: string; tag?: string } = {},
  ltime = 0,
): number {
  const len = (s: string) => Buffer.byteLength(s);
  // Consul's handle writes the new msgpack spec (str8, bin); serf's writes the old one (raw16).
  const str = (n: number) => (n < 32 ? 1 : n < 256 ? 2 : n < 65536 ? 3 : 5) + n;
  const bin = (n: number) => (n < 256 ? 2 : n < 65536 ? 3 : 5) + n;
  const raw = (n: number) => (n < 32 ? 1 : n < 65536 ? 3 : 5) + n;
  const uint = (n: number) => (n < 128 ? 1 : n < 256 ? 2 : n < 65536 ? 3 : n < 2 ** 32 ? 5 : 9);
  const p = typeof payload === "string" ? len(payload) : payload.length;
  let inner = 1 + str(2) + str(36) + str(1) + str(len(name)) + str(1) + 1; // map, ID, n, v
  if (p > 0) inner += str(1) + bin(p);
  for (const f of [filters.node, filters.service, filters.tag]) if (f) inner += str(2) + str(len(f));
  const serfName = len(`consul:event:${name}`);
  return 1 + 1 + raw(5) + uint(ltime) + raw(4) + raw(serfName) + raw(7) + raw(inner) + raw(2) + 1;
}

// ------------------------------------------------------------------ client

export interface KvEntry {
  key: string;
  /** null when the key holds no bytes. */
  value: Uint8Array | null;
  flags: bigint;
  modifyIndex: number;
  createIndex: number;
  lockIndex: number;
  /** The session holding the lock, if any. */
  session?: string;
}

export interface ConsulEvent {
  id: string;
  name: string;
  payload: Uint8Array | null;
  /** The payload as UTF-8 ("" when none). */
  payloadText: string;
  nodeFilter: string;
  serviceFilter: string;
  tagFilter: string;
  version: number;
  /** Lamport time; 0 in the answer to a fire. */
  ltime: number;
}

export interface CatalogNode {
  node: string;
  address: string;
  datacenter: string;
  meta: Record<string, string>;
}

export interface CatalogServiceInstance {
  node: string;
  address: string;
  datacenter: string;
  serviceId: string;
  serviceName: string;
  /** The service's own address; "" means the node's. */
  serviceAddress: string;
  servicePort: number;
  serviceTags: string[];
}

export interface HealthServiceInstance extends CatalogServiceInstance {
  /** The worst of the node's and service's checks. */
  status: "passing" | "warning" | "critical" | "maintenance";
}

export interface SessionInfo {
  id: string;
  name: string;
  node: string;
  ttl: string;
  behavior: string;
  lockDelayMs: number;
}

const DEFAULT_WAIT_MS = 5 * 60_000;
const MAX_WAIT_MS = 10 * 60_000;

export interface BlockingOptions {
  /** The index of the previous answer (after `nextIndex`); 0 or absent answers at once. */
  index?: number;
  /** How long Consul may hold the request, Consul syntax: "30s", "5m" (at most 10m). */
  wait?: string;
  signal?: AbortSignal;
}

export interface ConsulClientOptions {
  /** Time allowed for an answer beyond a blocking query's wait (default 30 s). */
  timeoutMs?: number;
  userAgent?: string;
}

interface Answer {
  status: number;
  headers: Headers;
  text: string;
  bytes: Uint8Array;
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
    const a = await this.#call("GET", path, { query: blockingQuery(opts), signal: opts.signal, blocking: !!opts.index, wait: opts.wait, ok: [404] });
    const index = raftIndex(a, "GET", path);
    if (a.status === 404) return { entry: null, index };
    const entries = decodeEntries(parseJson(a, "GET", path), "GET", path);
    return { entry: entries[0] ?? null, index };
  }

  /** One key's value as UTF-8; `value` is null when the key does not exist ("" when it is empty). */
  async kvGetText(key: string, opts: BlockingOptions = {}): Promise<{ value: string | null; entry: KvEntry | null; index: number }> {
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

  /** Key names under `prefix`; with a `separator`, only up to the next separator ("deploy/app/"). */
  async kvKeys(prefix: string, separator?: string): Promise<string[]> {
    const path = kvPath(prefix);
    const a = await this.#call("GET", path, { query: { keys: true, separator }, ok: [404] });
    if (a.status === 404) return [];
    const keys = parseJson(a, "GET", path);
    if (!Array.isArray(keys) || !keys.every((k) => typeof k === "string")) throw unexpected("GET", path, "a list of keys");
    return keys;
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
   * matching `service`, tagged `tag`, receive it. Best effort: see shared/spec/consul.md.
   */
  async eventFire(name: string, payload: string | Uint8Array, opts: { node?: string; service?: string; tag?: string } = {}): Promise<ConsulEvent> {
    const path = `/v1/event/fire/${encodeURIComponent(name)}`;
    const a = await this.#call("PUT", path, { query: { node: opts.node || undefined, service: opts.service || undefined, tag: opts.tag || undefined }, body: payload });
    return decodeEvent(parseJson(a, "PUT", path), "PUT", path);
  }

  /**
   * The events this agent holds (the last 256 it received), oldest first, optionally only `name`.
   * Blocks while the answer's index equals `index` (a string from a previous answer or `eventIndex`).
   */
  async eventList(name?: string, opts: { index?: string; wait?: string; signal?: AbortSignal } = {}): Promise<{ events: ConsulEvent[]; index: string }> {
    const path = "/v1/event/list";
    const blocking = opts.index !== undefined && opts.index !== "0" && opts.index !== "";
    const a = await this.#call("GET", path, {
      query: { name: name || undefined, index: blocking ? opts.index : undefined, wait: blocking ? opts.wait : undefined },
      signal: opts.signal,
      blocking,
      wait: opts.wait,
    });
    const raw = parseJson(a, "GET", path);
    if (!Array.isArray(raw)) throw unexpected("GET", path, "a list of events");
    const index = a.headers.get("x-consul-index") ?? "";
    if (!/^\d+$/.test(index)) throw unexpected("GET", path, "an X-Consul-Index header");
    return { events: raw.map((e) => decodeEvent(e, "GET", path)), index };
  }

  // -------------------------------------------------------------- agent and catalog

  async agentSelf(): Promise<{ nodeName: string; datacenter: string }> {
    const path = "/v1/agent/self";
    const raw = parseJson(await this.#call("GET", path), "GET", path);
    const cfg = isObject(raw) ? raw.Config : undefined;
    if (!isObject(cfg) || typeof cfg.NodeName !== "string" || typeof cfg.Datacenter !== "string") {
      throw unexpected("GET", path, "Config.NodeName and Config.Datacenter");
    }
    return { nodeName: cfg.NodeName, datacenter: cfg.Datacenter };
  }

  async catalogNodes(): Promise<CatalogNode[]> {
    const path = "/v1/catalog/nodes";
    const raw = parseJson(await this.#call("GET", path), "GET", path);
    if (!Array.isArray(raw)) throw unexpected("GET", path, "a list of nodes");
    return raw.map((n) => {
      if (!isObject(n) || typeof n.Node !== "string") throw unexpected("GET", path, "nodes with a Node name");
      return { node: n.Node, address: str(n.Address), datacenter: str(n.Datacenter), meta: strMap(n.Meta) };
    });
  }

  /** The instances of service `name` (carrying `tag`, if given), healthy or not. */
  async catalogService(name: string, tag?: string): Promise<CatalogServiceInstance[]> {
    const path = `/v1/catalog/service/${encodeURIComponent(name)}`;
    const raw = parseJson(await this.#call("GET", path, { query: { tag } }), "GET", path);
    if (!Array.isArray(raw)) throw unexpected("GET", path, "a list of service instances");
    return raw.map((s) => {
      if (!isObject(s) || typeof s.Node !== "string") throw unexpected("GET", path, "service instances with a Node");
      return {
        node: s.Node,
        address: str(s.Address),
        datacenter: str(s.Datacenter),
        serviceId: str(s.ServiceID),
        serviceName: str(s.ServiceName),
        serviceAddress: str(s.ServiceAddress),
        servicePort: typeof s.ServicePort === "number" ? s.ServicePort : 0,
        serviceTags: strList(s.ServiceTags),
      };
    });
  }

  /** The instances of service `name` with their health; `passing` keeps only the healthy ones. */
  async healthService(name: string, opts: { tag?: string; passing?: boolean } = {}): Promise<HealthServiceInstance[]> {
    const path = `/v1/health/service/${encodeURIComponent(name)}`;
    const raw = parseJson(await this.#call("GET", path, { query: { tag: opts.tag, passing: opts.passing ? true : undefined } }), "GET", path);
    if (!Array.isArray(raw)) throw unexpected("GET", path, "a list of service entries");
    const rank = ["passing", "warning", "critical", "maintenance"] as const;
    return raw.map((e) => {
      if (!isObject(e) || !isObject(e.Node) || !isObject(e.Service)) throw unexpected("GET", path, "entries with Node and Service");
      const checks = Array.isArray(e.Checks) ? e.Checks.filter(isObject) : [];
      let worst = 0;
      for (const c of checks) worst = Math.max(worst, rank.indexOf(c.Status as (typeof rank)[number]));
      return {
        node: str(e.Node.Node),
        address: str(e.Node.Address),
        datacenter: str(e.Node.Datacenter),
        serviceId: str(e.Service.ID),
        serviceName: str(e.Service.Service),
        serviceAddress: str(e.Service.Address),
        servicePort: typeof e.Service.Port === "number" ? e.Service.Port : 0,
        serviceTags: strList(e.Service.Tags),
        status: rank[Math.max(worst, 0)]!,
      };
    });
  }

  // -------------------------------------------------------------- sessions

  /** Create a session on this agent's node; returns its ID. `ttl`/`lockDelay` in Consul syntax ("15s"). */
  async sessionCreate(opts: { name: string; ttl?: string; behavior?: "release" | "delete"; lockDelay?: string }): Promise<string> {
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
    const raw = parseJson(await this.#call("GET", path), "GET", path);
    if (!Array.isArray(raw)) throw unexpected("GET", path, "a list of sessions");
    const s = raw[0];
    if (s === undefined || s === null) return null;
    if (!isObject(s) || typeof s.ID !== "string") throw unexpected("GET", path, "a session");
    return {
      id: s.ID,
      name: str(s.Name),
      node: str(s.Node),
      ttl: str(s.TTL),
      behavior: str(s.Behavior),
      lockDelayMs: typeof s.LockDelay === "number" ? s.LockDelay / 1e6 : 0,
    };
  }

  // -------------------------------------------------------------- transport

  async #call(
    method: string,
    path: string,
    opts: { query?: Query; body?: string | Uint8Array; json?: boolean; signal?: AbortSignal; blocking?: boolean; wait?: string; ok?: number[] } = {},
  ): Promise<Answer> {
    const cfg = this.#config;
    const url = cfg.baseUrl + path + queryString(opts.query ?? {});
    const headers: Record<string, string> = { "User-Agent": this.#userAgent };
    if (cfg.token) headers["X-Consul-Token"] = cfg.token;
    if (opts.json) headers["Content-Type"] = "application/json";

    // Consul may hold a blocking query for wait + wait/16 (wait: 5 minutes by default, 10 at most);
    // allow that plus the usual time to answer.
    let waitMs = 0;
    if (opts.blocking) {
      const w = opts.wait === undefined ? DEFAULT_WAIT_MS : parseDuration(opts.wait);
      if (typeof w === "string") throw new ConsulError(`consul ${method} ${path}: wait ${w}`);
      waitMs = Math.min(w, MAX_WAIT_MS) * (17 / 16);
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
        body: opts.body,
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
        throw new ConsulError(`consul ${method} ${path}: no answer from ${cfg.address} within ${within}`, { cause: err });
      }
      const code = (err as { code?: unknown }).code;
      const why = typeof code === "string" && code !== "" ? code : (err as Error).message;
      throw new ConsulError(`consul ${cfg.address} unreachable: ${why}`, { cause: err });
    }

    const text = new TextDecoder().decode(bytes);
    if ((res.status < 200 || res.status > 299) && !(opts.ok ?? []).includes(res.status)) {
      throw new ConsulError(`consul ${method} ${path}: ${res.status} ${summary(text) || res.statusText}`, { status: res.status, body: text });
    }
    return { status: res.status, headers: res.headers, text, bytes };
  }
}

// ------------------------------------------------------------------ decoding

/** `/v1/kv/<key>` with each segment escaped; leading slashes dropped (Consul would redirect them). */
function kvPath(key: string): string {
  return `/v1/kv/${key.replace(/^\/+/, "").split("/").map(encodeURIComponent).join("/")}`;
}

function blockingQuery(opts: BlockingOptions): Query {
  if (!opts.index) return {};
  return { index: opts.index, wait: opts.wait };
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

/** A one-line summary of an error body: go-multierror's bullet lines joined, else the first line. */
function summary(body: string): string {
  const lines = body.split("\n").map((l) => l.trim()).filter((l) => l !== "");
  if (lines.length > 1 && /^\d+ errors? occurred:$/.test(lines[0]!)) {
    return lines.slice(1).map((l) => l.replace(/^\* /, "")).join("; ");
  }
  return lines[0] ?? "";
}

function unexpected(method: string, path: string, what: string): ConsulError {
  return new ConsulError(`consul ${method} ${path}: unexpected answer (expected ${what})`);
}

/** JSON with uint64 `Flags` kept exact (as bigint): JSON.parse's source text, not the rounded double. */
function parseJson(a: Answer, method: string, path: string): unknown {
  try {
    return JSON.parse(a.text, (key: string, value: unknown, ctx?: { source?: string }) =>
      key === "Flags" && typeof value === "number" && ctx?.source !== undefined ? BigInt(ctx.source) : value,
    );
  } catch (err) {
    throw new ConsulError(`consul ${method} ${path}: answer is not JSON: ${(err as Error).message}`, { status: a.status, body: a.text, cause: err });
  }
}

function raftIndex(a: Answer, method: string, path: string): number {
  const h = a.headers.get("x-consul-index");
  if (h === null) return 0;
  const n = Number(h);
  if (!Number.isSafeInteger(n) || n < 0) throw unexpected(method, path, `a numeric X-Consul-Index, not "${h}"`);
  return n;
}

function decodeBool(a: Answer, method: string, path: string): boolean {
  const t = a.text.trim();
  if (t === "true") return true;
  if (t === "false") return false;
  throw unexpected(method, path, "true or false");
}

function decodeEntries(raw: unknown, method: string, path: string): KvEntry[] {
  if (!Array.isArray(raw)) throw unexpected(method, path, "a list of KV entries");
  return raw.map((e) => {
    if (!isObject(e) || typeof e.Key !== "string") throw unexpected(method, path, "KV entries with a Key");
    const entry: KvEntry = {
      key: e.Key,
      value: typeof e.Value === "string" ? new Uint8Array(Buffer.from(e.Value, "base64")) : null,
      flags: typeof e.Flags === "bigint" ? e.Flags : BigInt(typeof e.Flags === "number" ? e.Flags : 0),
      modifyIndex: num(e.ModifyIndex),
      createIndex: num(e.CreateIndex),
      lockIndex: num(e.LockIndex),
    };
    if (typeof e.Session === "string" && e.Session !== "") entry.session = e.Session;
    return entry;
  });
}

function decodeEvent(raw: unknown, method: string, path: string): ConsulEvent {
  if (!isObject(raw) || typeof raw.ID !== "string" || typeof raw.Name !== "string") throw unexpected(method, path, "an event with ID and Name");
  const payload = typeof raw.Payload === "string" ? new Uint8Array(Buffer.from(raw.Payload, "base64")) : null;
  return {
    id: raw.ID,
    name: raw.Name,
    payload,
    payloadText: payload ? new TextDecoder().decode(payload) : "",
    nodeFilter: str(raw.NodeFilter),
    serviceFilter: str(raw.ServiceFilter),
    tagFilter: str(raw.TagFilter),
    version: num(raw.Version),
    ltime: num(raw.LTime),
  };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

function str(v: unknown): string {
  return typeof v === "string" ? v : "";
}

function num(v: unknown): number {
  return typeof v === "number" ? v : 0;
}

function strList(v: unknown): string[] {
  return Array.isArray(v) ? v.filter((x): x is string => typeof x === "string") : [];
}

function strMap(v: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (isObject(v)) for (const [k, x] of Object.entries(v)) if (typeof x === "string") out[k] = x;
  return out;
}
