/**
 * What an agent tells the fleet: one JSON value per node at `<prefix>/roles/<role>/nodes/<node>`
 * (see release.ts for the layout), rewritten at start, at each phase change and at the end. Small by
 * design (the log is only its last 2 KB), far below Consul's 512 KB value limit.
 */
import type { Phase } from "./errors.ts";

export type NodeStatus = "deploying" | "success" | "failure" | "skipped";

export interface NodeReport {
  node: string;
  role: string;
  status: NodeStatus;
  /** The phase the deploy is in, or the one it failed in; "done" after a success. */
  phase: Phase | "done";
  release_id: string | null;
  manifest_url: string;
  /** Hex digest of the archive, when the manifest was read. */
  checksum: string | null;
  /** One line; null unless failed. */
  error: string | null;
  /** `release` strategy: where `current` was switched back to after a failed validate. */
  rolled_back_to: string | null;
  event_id: string | null;
  started_at: string;
  finished_at: string | null;
  duration_ms: number | null;
  agent_version: string;
  /** The last 2 KB of the deploy's log. */
  log_tail: string;
}

export const LOG_TAIL_BYTES = 2048;

/** The last `max` bytes of a log, cut at a line start when possible. */
export function logTail(text: string, max = LOG_TAIL_BYTES): string {
  const bytes = new TextEncoder().encode(text);
  if (bytes.length <= max) return text;
  const tail = new TextDecoder().decode(bytes.subarray(bytes.length - max)).replace(/^\uFFFD+/, "");
  const nl = tail.indexOf("\n");
  return nl >= 0 && nl < tail.length - 1 ? tail.slice(nl + 1) : tail;
}

/** Parse a report read back from KV; undefined when it is not one (old or foreign data). */
export function parseReport(value: unknown): NodeReport | undefined {
  if (value === null || typeof value !== "object") return undefined;
  const r = value as Record<string, unknown>;
  if (typeof r.node !== "string" || typeof r.status !== "string" || typeof r.started_at !== "string") return undefined;
  return r as unknown as NodeReport;
}
