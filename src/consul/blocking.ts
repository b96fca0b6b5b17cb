/**
 * Consul's blocking queries: the index rule and how long a blocking request may take. Pure.
 */
import { parseDuration } from "../units.ts";

/** How long Consul holds a blocking query when no `wait` is given, and the most it accepts. */
const DEFAULT_WAIT_MS = 5 * 60_000;
const MAX_WAIT_MS = 10 * 60_000;

export interface BlockingOptions {
  /** The index of the previous answer (after `nextIndex`); 0 or absent answers at once. */
  index?: number;
  /** How long Consul may hold the request, Consul syntax: "30s", "5m" (at most 10m). */
  wait?: string;
  signal?: AbortSignal;
}

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

/** The query parameters of a blocking read: none without an index (the read answers at once). */
export function blockingQuery(opts: BlockingOptions): { index?: number; wait?: string } {
  if (!opts.index) return {};
  return { index: opts.index, wait: opts.wait };
}

/**
 * How long Consul may hold a blocking request: `wait` (5 minutes when absent, 10 at most) plus the
 * wait/16 of jitter Consul adds. An error string when `wait` is not a duration.
 */
export function blockingHoldMs(wait: string | undefined): number | string {
  const w = wait === undefined ? DEFAULT_WAIT_MS : parseDuration(wait);
  if (typeof w === "string") return w;
  return Math.min(w, MAX_WAIT_MS) * (17 / 16);
}
