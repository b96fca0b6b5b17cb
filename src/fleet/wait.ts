/**
 * `publish --wait`: watch the role's node reports with blocking queries until every node of the role
 * (Consul's catalog, re-read as the rollout goes: nodes that join must report too, nodes that leave
 * are no longer waited for) has reported the new release as a success or a failure, or until the
 * deadline. Consul going away mid-wait is retried until the deadline: it never ends the wait early.
 */
import type { ConsulClient } from "../consul/client.ts";
import { nextIndex } from "../consul/blocking.ts";
import { messageOf } from "../errors.ts";
import { catalogNodesOf, reportsOf } from "./view.ts";
import { kvKeys } from "../records/release.ts";
import type { NodeReport } from "../records/report.ts";
import { formatDuration, sleep } from "../time.ts";

export interface RolloutOptions {
  consul: ConsulClient;
  /** KV prefix (DEFAULT_KV_PREFIX is "pulldeploy"). */
  prefix: string;
  role: string;
  /** The Consul service whose nodes make the role (default: the role's name). */
  service?: string;
  /** The release every node must report. */
  releaseId: string;
  /** Give up after this long (publish's --wait-timeout, 10 minutes by default). */
  timeoutMs: number;
  /** Aborting rejects with the signal's reason. */
  signal?: AbortSignal;
  /** Called once per change: a node's status or phase for the new release, or a Consul hiccup. */
  onProgress?: (p: RolloutProgress) => void;
  /**
   * How long one blocking query may wait (Consul syntax; default "30s"); the catalog is re-read at least this often.
   */
  blockingWait?: string;
  /** Waits between attempts while Consul is unreachable (default 0.5 s doubling to 5 s). */
  retryMs?: [number, number];
}

export interface RolloutProgress {
  /** `web-2: success (3/5)`, `web-3: failure in post: exit 1 (4/5)`, `consul: … (retrying)`. */
  line: string;
  /** The node that changed; absent for a notice about Consul or the catalog. */
  node?: string;
  status?: NodeReport["status"];
  /** Nodes that reported the new release as success or failure, of `total`. */
  done: number;
  total: number;
}

export interface RolloutNode {
  node: string;
  /** The node's last report: its status and release (null when it never reported). */
  status: NodeReport["status"] | "never-reported";
  release_id: string | null;
  phase: string | null;
  error: string | null;
}

export interface RolloutResult {
  /** True when every node reported success; false on any failure, a timeout, or no nodes at all. */
  ok: boolean;
  outcome: "success" | "failure" | "timeout" | "no-nodes";
  /** One line for the operator: `rollout of R to web: 4/5 succeeded, 1 failed (web-3)`. */
  message: string;
  total: number;
  succeeded: string[];
  /** Nodes that reported the new release as failed, with their errors. */
  failed: RolloutNode[];
  /** Nodes still not done at the deadline, with what they last reported. */
  pending: RolloutNode[];
  elapsedMs: number;
}

/** Resolves when every catalog node of the role has reported `releaseId` as success or failure, or at `timeoutMs`. */
export async function waitForRollout(o: RolloutOptions): Promise<RolloutResult> {
  const started = Date.now();
  const service = o.service ?? o.role;
  const nodesPrefix = `${kvKeys.role(o.prefix, o.role)}/nodes/`;
  const deadline = AbortSignal.timeout(Math.max(0, o.timeoutMs));
  const stop = o.signal ? AbortSignal.any([o.signal, deadline]) : deadline;
  const [minRetry, maxRetry] = o.retryMs ?? [500, 5000];

  let index = 0;
  let retry = minRetry;
  let away = false;
  let catalog: string[] | undefined;
  let catalogAt = 0;
  let reports = new Map<string, NodeReport>();
  const seen = new Map<string, string>(); // node → the last state announced
  let total = 0;

  const finishedOf = (node: string) => {
    const r = reports.get(node);
    return r &&
      r.release_id === o.releaseId &&
      (r.status === "success" || r.status === "skipped" || r.status === "failure")
      ? r
      : undefined;
  };
  const summary = (outcome: RolloutResult["outcome"]): RolloutResult => {
    const nodes = catalog ?? [];
    const succeeded: string[] = [];
    const failed: RolloutNode[] = [];
    const pending: RolloutNode[] = [];
    for (const node of nodes) {
      const r = finishedOf(node);
      if (r && r.status !== "failure") succeeded.push(node);
      else if (r) failed.push(rolloutNode(node, r));
      else pending.push(rolloutNode(node, reports.get(node)));
    }
    const parts = [`${succeeded.length}/${nodes.length} succeeded`];
    if (failed.length) parts.push(`${failed.length} failed (${failed.map((f) => f.node).join(", ")})`);
    if (pending.length) parts.push(`${pending.length} not done (${pending.map((p) => p.node).join(", ")})`);
    const what = `rollout of ${o.releaseId} to ${o.role}`;
    const message =
      outcome === "no-nodes"
        ? `${what}: no nodes of service "${service}" in Consul's catalog: nothing to wait for`
        : outcome === "timeout"
          ? `${what}: timed out after ${formatDuration(o.timeoutMs)}: ${parts.join(", ")}`
          : `${what}: ${parts.join(", ")}`;
    return {
      ok: outcome === "success",
      outcome,
      message,
      total: nodes.length,
      succeeded,
      failed,
      pending,
      elapsedMs: Date.now() - started,
    };
  };

  while (true) {
    try {
      // Re-read the catalog at most every 5 s, and after every blocking query that ran out.
      const wait = o.blockingWait ?? "30s";
      const answer = await o.consul.kvList(nodesPrefix, index ? { index, wait, signal: stop } : { signal: stop });
      const timedOut = index !== 0 && answer.index === index;
      index = nextIndex(index, answer.index);
      reports = reportsOf(answer.entries, nodesPrefix).reports;
      if (catalog === undefined || timedOut || Date.now() - catalogAt > 5000) {
        catalog = (await catalogNodesOf(o.consul, service)).sort();
        catalogAt = Date.now();
        if (catalog.length === 0) return summary("no-nodes");
      }
      if (away) o.onProgress?.({ line: `consul: answering again`, done: countDone(), total });
      away = false;
      retry = minRetry;
    } catch (err) {
      if (o.signal?.aborted) throw o.signal.reason;
      if (deadline.aborted) return summary(catalog && catalog.length > 0 ? "timeout" : "no-nodes");
      if (!away)
        o.onProgress?.({ line: `consul: ${messageOf(err)} (retrying until the deadline)`, done: countDone(), total });
      away = true;
      index = 0;
      await sleep(retry, stop);
      retry = Math.min(retry * 2, maxRetry);
      continue;
    }

    total = catalog.length;
    // Count up line by line, so that two nodes finishing in one answer read (4/5), (5/5).
    let done = catalog.filter((n) => finishedOf(n) && seen.get(n) === stateOf(reports.get(n)!)).length;
    for (const node of catalog) {
      const r = reports.get(node);
      if (!r || r.release_id !== o.releaseId) continue;
      const state = stateOf(r);
      if (seen.get(node) === state) continue;
      seen.set(node, state);
      if (finishedOf(node)) done++;
      o.onProgress?.({ line: `${node}: ${state} (${done}/${total})`, node, status: r.status, done, total });
    }
    if (countDone() === total)
      return summary(catalog.some((n) => finishedOf(n)?.status === "failure") ? "failure" : "success");
  }

  function countDone(): number {
    return (catalog ?? []).filter((n) => finishedOf(n) !== undefined).length;
  }
}

/**
 * The result for the operator: the summary line, then one line per node that failed (with its error)
 * or was not done (with what it last reported). Publish prints these after a `--wait`.
 */
export function describeRollout(r: RolloutResult): string[] {
  const lines = [r.message];
  for (const f of r.failed)
    lines.push(`  ${f.node}: failed in ${f.phase ?? "an unknown phase"}: ${f.error ?? "no error message"}`);
  for (const p of r.pending) {
    if (p.status === "never-reported") lines.push(`  ${p.node}: never reported`);
    else if (p.status === "deploying")
      lines.push(`  ${p.node}: still deploying ${p.release_id ?? "an unknown release"} (${p.phase ?? "?"})`);
    else
      lines.push(
        `  ${p.node}: last reported ${p.status} for ` +
          `${p.release_id ?? "an unknown release"}${p.error ? `: ${p.error}` : ""}`,
      );
  }
  return lines;
}

/** What a progress line says about a report of the new release. */
function stateOf(r: NodeReport): string {
  if (r.status === "deploying") return `deploying: ${r.phase}`;
  if (r.status === "failure") return `failure in ${r.phase}: ${r.error ?? "no error message"}`;
  return r.status;
}

function rolloutNode(node: string, r: NodeReport | undefined): RolloutNode {
  if (!r) return { node, status: "never-reported", release_id: null, phase: null, error: null };
  return { node, status: r.status, release_id: r.release_id ?? null, phase: r.phase ?? null, error: r.error ?? null };
}
