/**
 * `rollback --dest`: this host's side. Switch `current` back to an earlier release on disk (no
 * download), and keep the books as a deploy does: under the host lock (never beside a deploy), the
 * state file then says what is live (so the next agent run, `--from-kv` and duplicate detection see
 * the truth), and with a report target the node's report in Consul KV says so too (status success,
 * `rolled_back_to` the release now live), for `status` and `publish --wait`.
 *
 * The downgrade high-water mark is left as it is: a local rollback is the operator's act on the host,
 * not a signed statement, and it must not let a replayed older manifest in afterwards.
 */
import { PulldeployError, UsageError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { kvKeys } from "../records/release.ts";
import { logTail, type NodeReport } from "../records/report.ts";
import * as releases from "../sync/releases.ts";
import { VERSION } from "../version.ts";
import type { ReportTarget } from "./run.ts";
import { StateStore, takeHostLock, type HostLock } from "./state.ts";

export interface LocalRollbackOptions {
  dest: string;
  /** The release to go back to (default: the one before current). */
  to?: string;
  /** No state dir: no lock and no state update (a warning was logged). */
  stateDir?: string;
  lockWaitMs: number;
  report?: ReportTarget;
  log: Logger;
  signal?: AbortSignal;
}

/** The releases on disk, oldest first, and the current one. */
export function localReleases(dest: string): { ids: string[]; current?: string } {
  const p = releases.releasePaths(dest);
  return { ids: releases.listReleases(p), current: releases.currentRelease(p) };
}

export async function rollbackLocal(
  o: LocalRollbackOptions,
): Promise<{ from?: string; to: string; switched: boolean }> {
  const { log } = o;
  const warn = (m: string) => log.info(m);
  let lock: HostLock | undefined;
  if (o.stateDir !== undefined) {
    lock = await takeHostLock(o.stateDir, { waitMs: o.lockWaitMs, signal: o.signal, log, warn });
  }
  try {
    // Read under the lock: a deploy that just finished may have moved `current`.
    const p = releases.releasePaths(o.dest);
    const all = releases.listReleases(p);
    const current = releases.currentRelease(p);
    if (all.length === 0)
      throw new PulldeployError(`no releases in ${p.releases} (was it deployed with sync_strategy: release?)`);
    const target = o.to ?? releases.previousRelease(p, current);
    if (target === undefined)
      throw new PulldeployError(
        `no release before ${current ?? "current"} to roll back to (releases: ${all.join(", ")})`,
      );
    if (!all.includes(target))
      throw new UsageError(`--to: no release "${target}" in ${p.releases} (releases: ${all.join(", ")})`);
    if (target === current) {
      log.info(`rollback: ${target} is already current`);
      return { from: current, to: target, switched: false };
    }
    const started = new Date();
    const t0 = performance.now();
    releases.switchCurrent(p, target);
    if (current !== undefined) releases.abandon(p, current);
    log.info(
      `rollback: current -> releases/${target} (was ${current ?? "none"}) in ` +
        `${((performance.now() - t0) / 1000).toFixed(3)}s`,
    );

    let pending: NodeReport | undefined;
    if (o.report) {
      const report = rollbackReport(o.report, target, started, log.text());
      try {
        await o.report.consul.kvPut(kvKeys.node(o.report.prefix, o.report.role, o.report.node), JSON.stringify(report));
        log.info(
          `report: ${o.report.node} runs ${target} (rolled back), in ` +
            `${kvKeys.node(o.report.prefix, o.report.role, o.report.node)}`,
        );
      } catch (err) {
        pending = report;
        log.info(
          `report: Consul did not take the rollback's report (${(err as Error).message}); it is kept in the ` +
            "state file and sent by the next agent run",
        );
      }
    }
    if (o.stateDir !== undefined) {
      const store = new StateStore(o.stateDir);
      const state = store.read(warn);
      try {
        store.write({
          ...state,
          release_id: target,
          // What `target` was deployed from is not known here.
          manifest_url: undefined,
          checksum: undefined,
          status: "success",
          // A report kept from an earlier run is older than this one: ours replaces it.
          pending_report: o.report ? pending : state.pending_report,
        });
      } catch (err) {
        log.info(`state: cannot write ${store.file}: ${(err as Error).message}`);
      }
    }
    return { from: current, to: target, switched: true };
  } finally {
    lock?.release();
  }
}

function rollbackReport(t: ReportTarget, target: string, started: Date, log: string): NodeReport {
  const finished = new Date();
  return {
    node: t.node,
    role: t.role,
    status: "success",
    phase: "done",
    release_id: target,
    manifest_url: "",
    checksum: null,
    error: null,
    rolled_back_to: target,
    event_id: null,
    started_at: started.toISOString(),
    finished_at: finished.toISOString(),
    duration_ms: finished.getTime() - started.getTime(),
    agent_version: VERSION,
    log_tail: logTail(log),
  };
}
