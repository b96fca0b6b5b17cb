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
  const lines = body.split("\n").map((l) => l.trim()).filter((l) => l !== "");
  if (lines.length > 1 && /^\d+ errors? occurred:$/.test(lines[0]!)) {
    return lines.slice(1).map((l) => l.replace(/^\* /, "")).join("; ");
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
    throw new ConsulError(`consul ${method} ${path}: answer is not JSON: ${(err as Error).message}`, { status: a.status, body: a.text, cause: err });
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
