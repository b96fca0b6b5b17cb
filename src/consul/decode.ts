/**
 * What Consul's answers mean, as typed records: the JSON decoders (uint64 flags kept exact) and the
 * one-line summary of an error body. Pure.
 */
import { ConsulError, unexpected } from "./error.ts";

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

/** One HTTP answer from Consul, read whole. */
export interface Answer {
  status: number;
  headers: Headers;
  text: string;
  bytes: Uint8Array;
}

/** A one-line summary of an error body: go-multierror's bullet lines joined, else the first line. */
export function summary(body: string): string {
  const lines = body
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "");
  if (lines.length > 1 && /^\d+ errors? occurred:$/.test(lines[0]!)) {
    return lines
      .slice(1)
      .map((l) => l.replace(/^\* /, ""))
      .join("; ");
  }
  return lines[0] ?? "";
}

/** JSON with uint64 `Flags` kept exact (as bigint): JSON.parse's source text, not the rounded double. */
export function parseJson(a: Answer, method: string, path: string): unknown {
  try {
    return JSON.parse(a.text, (key: string, value: unknown, ctx?: { source?: string }) =>
      key === "Flags" && typeof value === "number" && ctx?.source !== undefined ? BigInt(ctx.source) : value,
    );
  } catch (err) {
    throw new ConsulError(`consul ${method} ${path}: answer is not JSON: ${(err as Error).message}`, {
      status: a.status,
      body: a.text,
      cause: err,
    });
  }
}

export function raftIndex(a: Answer, method: string, path: string): number {
  const h = a.headers.get("x-consul-index");
  if (h === null) return 0;
  const n = Number(h);
  if (!Number.isSafeInteger(n) || n < 0) throw unexpected(method, path, `a numeric X-Consul-Index, not "${h}"`);
  return n;
}

export function decodeBool(a: Answer, method: string, path: string): boolean {
  const t = a.text.trim();
  if (t === "true") return true;
  if (t === "false") return false;
  throw unexpected(method, path, "true or false");
}

export function decodeEntries(raw: unknown, method: string, path: string): KvEntry[] {
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

export function decodeEvent(raw: unknown, method: string, path: string): ConsulEvent {
  if (!isObject(raw) || typeof raw.ID !== "string" || typeof raw.Name !== "string")
    throw unexpected(method, path, "an event with ID and Name");
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

export function decodeAgentSelf(raw: unknown, path: string): { nodeName: string; datacenter: string } {
  const cfg = isObject(raw) ? raw.Config : undefined;
  if (!isObject(cfg) || typeof cfg.NodeName !== "string" || typeof cfg.Datacenter !== "string") {
    throw unexpected("GET", path, "Config.NodeName and Config.Datacenter");
  }
  return { nodeName: cfg.NodeName, datacenter: cfg.Datacenter };
}

export function decodeCatalogNodes(raw: unknown, path: string): CatalogNode[] {
  if (!Array.isArray(raw)) throw unexpected("GET", path, "a list of nodes");
  return raw.map((n) => {
    if (!isObject(n) || typeof n.Node !== "string") throw unexpected("GET", path, "nodes with a Node name");
    return { node: n.Node, address: str(n.Address), datacenter: str(n.Datacenter), meta: strMap(n.Meta) };
  });
}

export function decodeCatalogService(raw: unknown, path: string): CatalogServiceInstance[] {
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

/** Each instance with the worst of its node's and service's checks as its status. */
export function decodeHealthService(raw: unknown, path: string): HealthServiceInstance[] {
  if (!Array.isArray(raw)) throw unexpected("GET", path, "a list of service entries");
  const rank = ["passing", "warning", "critical", "maintenance"] as const;
  return raw.map((e) => {
    if (!isObject(e) || !isObject(e.Node) || !isObject(e.Service))
      throw unexpected("GET", path, "entries with Node and Service");
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

/** The first session of the answer, or null when there is none (the session does not exist). */
export function decodeSessionInfo(raw: unknown, path: string): SessionInfo | null {
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

export function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

export function str(v: unknown): string {
  return typeof v === "string" ? v : "";
}

export function num(v: unknown): number {
  return typeof v === "number" ? v : 0;
}

export function strList(v: unknown): string[] {
  return Array.isArray(v) ? v.filter((x): x is string => typeof x === "string") : [];
}

export function strMap(v: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (isObject(v)) for (const [k, x] of Object.entries(v)) if (typeof x === "string") out[k] = x;
  return out;
}
