/**
 * What an agent tells the fleet: one JSON value per node at `<prefix>/roles/<role>/nodes/<node>`
 * (see release.ts for the layout), rewritten at start, at each phase change and at the end. Small by
 * design (the log is only its last 2 KB), far below Consul's 512 KB value limit.
 */
import type { DeployPhase } from "../errors.ts";
import { redact } from "../log.ts";

export type NodeStatus = "deploying" | "success" | "failure" | "skipped";

export interface NodeReport {
  node: string;
  role: string;
  status: NodeStatus;
  /** The phase the deploy is in, or the one it failed in; "done" after a success. */
  phase: DeployPhase | "done";
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

/**
 * The stored form of a report: every string passes through `redact`, so no URL credential (from an
 * error message, the log tail, the manifest URL) reaches Consul KV.
 */
export function renderReport(r: NodeReport): string {
  return JSON.stringify(r, (_key, v: unknown) => (typeof v === "string" ? redact(v) : v));
}

/** Writes a node's report to Consul KV; a Consul outage never fails the deploy. */
export interface Reporter {
  /** Merge `patch` into the report and send it (in order, in the background). */
  update(patch: Partial<NodeReport>): void;
  /** Send the final report, retrying briefly; false when Consul did not take it (keep it for later). */
  finish(patch: Partial<NodeReport>): Promise<boolean>;
  readonly report: NodeReport;
}

export interface ReportSink {
  kvPut(key: string, body: string): Promise<boolean>;
}

export function createReporter(opts: {
  sink: ReportSink;
  key: string;
  base: NodeReport;
  log: (msg: string) => void;
  retryWaitsMs?: number[];
}): Reporter {
  let report = opts.base;
  let chain: Promise<boolean> = Promise.resolve(true);
  let warned = false;
  const send = async (r: NodeReport): Promise<boolean> => {
    try {
      await opts.sink.kvPut(opts.key, renderReport(r));
      return true;
    } catch (err) {
      if (!warned) {
        warned = true;
        opts.log(`report: ${(err as Error).message}; the deploy goes on, the report is sent when Consul answers`);
      }
      return false;
    }
  };
  return {
    get report() {
      return report;
    },
    update(patch) {
      report = { ...report, ...patch };
      const snapshot = report;
      chain = chain.then(() => send(snapshot));
    },
    async finish(patch) {
      report = { ...report, ...patch };
      await chain;
      for (const wait of [0, ...(opts.retryWaitsMs ?? [500, 1500])]) {
        if (wait > 0) await Bun.sleep(wait);
        if (await send(report)) return true;
      }
      return false;
    },
  };
}
