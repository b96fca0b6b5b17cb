/** Public shapes of the Consul stand-in (see cluster.ts for the model). */

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
  status?: CheckStatus;
}

export type CheckStatus = "passing" | "warning" | "critical";

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

export interface ClusterOptions {
  /** Client agents, each with its own HTTP API (default ["node-1","node-2","node-3"]). */
  nodes?: string[];
  /** The server's node name; it gets an HTTP API too (default "server"). */
  server?: string;
  datacenter?: string;
  /**
   * Advertised addresses (catalog Address, members Addr, agent/self), by node name. Only data:
   * every agent listens on 127.0.0.1. Default: the server 127.0.0.1, the i-th client 127.0.0.(i+2),
   * as in the captures.
   */
  addresses?: Record<string, string>;
  /** Fixed node IDs by name (default: derived from the name). */
  nodeIds?: Record<string, string>;
  /** serf LAN port in members (default 8301), server RPC port (8300) and serf WAN port (8302). */
  ports?: { serfLan?: number; server?: number; serfWan?: number };
  /**
   * Multiplies every real-time delay the model keeps: node failure detection, session TTL expiry
   * (2 × TTL), lock-delay, check TTLs. 0.01 turns the captures' 5.1 s failure detection into 51 ms
   * and a "10s" session TTL into a 200 ms expiry.
   */
  timeScale?: number;
  /** kill -9 → serfHealth critical, before timeScale (default 5100 ms, as captured: 5.1–6.4 s). */
  failureDetectMs?: number;
  /**
   * The servers' `session_ttl_min` (default 10 s, as unset in the captures): a session TTL below it is
   * refused with "Invalid Session TTL '<ns>', must be between [<min>=24h0m0s]", as Consul does.
   */
  sessionTtlMinMs?: number;
  /** The raft index before the first write (default 13). */
  initialIndex?: number;
}
