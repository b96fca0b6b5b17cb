/**
 * `src/agent/`: one agent run on one host: the trigger, the host lock and state file, the deploy
 * pipeline (`deploy.ts`), hooks, the fetch-and-extract stream, the node report's writing, `--follow`.
 * May import sync/, manifest/, archive/, store/, consul/, records/ and the shared modules; never
 * publish/ or fleet/.
 *
 * One agent run around the deploy pipeline: take the host's lock, skip what was handled already
 * (consul watch replays buffered events), report progress to Consul KV, deploy, remember the outcome.
 *
 *   lock → kill leftovers → state → duplicate? → report "deploying" → deploy (phase reports)
 *     → report result → state → unlock
 *
 * The lock is flock(2)ed: the kernel frees it when the holder dies. Hooks and rsync a killed holder
 * left running are killed right after the lock is taken (their process groups are recorded). With
 * trust keys, the state's per-dest high-water mark of `issued_at` refuses replayed older releases.
 *
 * Consul being down never fails a deploy: the report waits in the state file for the next run.
 */
import type { ConsulClient } from "../consul/client.ts";
import { deploy, type DeployOptions, type DeployResult } from "./deploy.ts";
import { messageOf, PulldeployError } from "../errors.ts";
import { redact } from "../log.ts";
import { releaseIdOfUrl, kvKeys } from "../records/release.ts";
import { createReporter, logTail, renderReport, type NodeReport, type Reporter } from "../records/report.ts";
import {
  childTracker,
  downgradeOf,
  duplicateOf,
  markHandled,
  raiseMark,
  StateStore,
  takeHostLock,
  type AgentState,
  type Handled,
  type HostLock,
} from "./state.ts";
import { VERSION } from "../version.ts";
import { writeMetricsFile } from "./metrics.ts";

export interface ReportTarget {
  consul: ConsulClient;
  prefix: string;
  role: string;
  node: string;
}

export interface AgentRunOptions {
  manifestUrl: string;
  /** What woke the agent, for duplicate detection. */
  handled: Handled;
  eventId?: string;
  /** Known from KV (`--from-kv`, `--follow`): the release's id and checksum. */
  releaseId?: string;
  checksum?: string;
  deploy: Omit<DeployOptions, "manifestUrl" | "eventId" | "onPhase">;
  /** No state dir: no lock and no duplicate detection (a warning was logged). */
  stateDir?: string;
  force: boolean;
  lockWaitMs: number;
  report?: ReportTarget;
  /** `--metrics-file`: rewritten after every deploy (not after a skip). */
  metricsFile?: string;
  /**
   * No `report`: the target for the manifest's `role:`, asked once the deploy has read (and, with
   * trust keys, verified and admitted) the manifest; undefined: no report.
   */
  reportOf?: (role: string) => Promise<ReportTarget | undefined>;
}

export type AgentOutcome =
  | { outcome: "deployed" | "failed"; result: DeployResult }
  | { outcome: "skipped"; reason: string };

export async function agentRun(o: AgentRunOptions): Promise<AgentOutcome> {
  const { log } = o.deploy;
  const warn = (m: string) => log.info(m);
  log.set({
    phase: undefined,
    node: o.report?.node,
    role: o.report?.role,
    event_id: o.eventId,
    release_id: o.releaseId ?? releaseIdOfUrl(o.manifestUrl),
  });
  let lock: HostLock | undefined;
  let store: StateStore | undefined;
  if (o.stateDir !== undefined) {
    store = new StateStore(o.stateDir);
    lock = await takeHostLock(o.stateDir, { waitMs: o.lockWaitMs, signal: o.deploy.signal, log, warn });
  }
  try {
    let state: AgentState = store?.read(warn) ?? {};
    if (state.pending_report && o.report) {
      if (await sendPending(o.report, state.pending_report, log)) {
        state = { ...state, pending_report: undefined };
        store?.write(state);
      }
    }
    const dup = o.force ? undefined : duplicateOf(o.handled, state);
    if (dup !== undefined) {
      log.info(`skip: ${dup} (--force to deploy anyway)`);
      return { outcome: "skipped", reason: dup };
    }

    const started = new Date();
    let reporter = o.report ? startReport(o, o.report, started) : undefined;
    const admitted = state;
    const result = await deploy({
      ...o.deploy,
      manifestUrl: o.manifestUrl,
      eventId: o.eventId,
      track: o.stateDir !== undefined ? childTracker(o.stateDir, warn) : undefined,
      admit: (m) => {
        const refused = m.dest === undefined ? undefined : downgradeOf(m.issuedAt, m.dest, admitted);
        if (refused !== undefined) throw new PulldeployError(refused, "signature");
        if (m.issuedAt !== undefined) log.info(`signature: issued ${m.issuedAt}`);
      },
      accepted: async (m) => {
        if (!reporter && o.reportOf && m.role !== undefined) {
          const t = await o.reportOf(m.role);
          if (t) {
            if (state.pending_report && (await sendPending(t, state.pending_report, log))) {
              state = { ...state, pending_report: undefined };
              store?.write(state);
            }
            reporter = startReport(o, t, started, m.releaseId);
          }
        }
        await o.deploy.accepted?.(m);
      },
      onPhase: (phase, manifest) => {
        log.set({
          phase,
          ...(o.releaseId === undefined && manifest?.releaseId ? { release_id: manifest.releaseId } : {}),
        });
        reporter?.update({
          phase,
          checksum: manifest?.checksum?.hex ?? reporter.report.checksum,
          release_id: reporter.report.release_id ?? manifest?.releaseId ?? null,
        });
      },
    });
    const releaseId =
      o.releaseId ?? (result.manifest?.releaseId || releaseIdOfUrl(o.manifestUrl) || result.releaseId) ?? undefined;
    log.set({ release_id: releaseId, phase: result.ok ? "done" : result.phase });
    if (o.metricsFile !== undefined) metrics(o, result, releaseId, started, reporter?.report);
    let delivered = true;
    if (reporter) {
      const finished = new Date();
      delivered = await reporter.finish({
        status: result.ok ? "success" : "failure",
        phase: result.ok ? "done" : result.phase,
        error: result.ok ? null : result.error,
        rolled_back_to: result.ok ? null : (result.rolledBackTo ?? null),
        release_id: releaseId ?? null,
        finished_at: finished.toISOString(),
        duration_ms: finished.getTime() - started.getTime(),
        log_tail: logTail(log.text()),
      });
      if (!delivered)
        log.info("report: Consul did not take the final report; it is kept in the state file and sent by the next run");
    }
    if (store) {
      state = markHandled(state, o.handled);
      // A manifest refused by its signature (unsigned, forged, a replayed downgrade) changed nothing
      // here: the state keeps saying what is live.
      const untouched = !result.ok && result.phase === "signature";
      state = {
        ...state,
        ...(untouched
          ? {}
          : {
              release_id: releaseId,
              manifest_url: redact(o.manifestUrl),
              checksum: result.manifest?.checksum?.hex,
              status: result.ok ? ("success" as const) : ("failure" as const),
            }),
        pending_report: delivered ? undefined : reporter?.report,
      };
      const m = result.manifest;
      if (
        result.ok &&
        o.deploy.trustKeys &&
        o.deploy.trustKeys.length > 0 &&
        m?.dest !== undefined &&
        m.issuedAt !== undefined
      ) {
        state = raiseMark(state, m.dest, m.issuedAt);
      }
      try {
        store.write(state);
      } catch (err) {
        log.info(`state: cannot write ${store.file}: ${messageOf(err)}`);
      }
    }
    return { outcome: result.ok ? "deployed" : "failed", result };
  } finally {
    lock?.release();
  }
}

/** `who`: the node report's role and node (from `--role`, or the manifest's `role:`), when it reports. */
function metrics(
  o: AgentRunOptions,
  result: DeployResult,
  releaseId: string | undefined,
  started: Date,
  who: { role: string; node: string } | undefined,
): void {
  const finishedAt = new Date();
  const m = result.ok ? result.manifest : undefined;
  const release = m
    ? {
        release_id: releaseId ?? "",
        ...(who ? { role: who.role, node: who.node } : {}),
        dest: m.dest ?? "",
        strategy: m.syncStrategy,
        checksum: m.checksum?.hex ?? "",
      }
    : undefined;
  try {
    writeMetricsFile(o.metricsFile!, {
      finishedAt,
      success: result.ok,
      durationMs: finishedAt.getTime() - started.getTime(),
      bytesFetched: result.bytesFetched,
      release,
    });
  } catch (err) {
    o.deploy.log.info(`metrics: cannot write ${o.metricsFile}: ${messageOf(err)}`);
  }
}

function startReport(o: AgentRunOptions, t: ReportTarget, started: Date, manifestReleaseId?: string): Reporter {
  const base: NodeReport = {
    node: t.node,
    role: t.role,
    status: "deploying",
    phase: "manifest",
    release_id: o.releaseId ?? manifestReleaseId ?? releaseIdOfUrl(o.manifestUrl) ?? null,
    manifest_url: redact(o.manifestUrl),
    checksum: o.checksum ?? null,
    error: null,
    rolled_back_to: null,
    event_id: o.eventId ?? null,
    started_at: started.toISOString(),
    finished_at: null,
    duration_ms: null,
    agent_version: VERSION,
    log_tail: "",
  };
  const reporter = createReporter({
    sink: t.consul,
    key: kvKeys.node(t.prefix, t.role, t.node),
    base,
    log: (m) => o.deploy.log.info(m),
  });
  reporter.update({});
  return reporter;
}

async function sendPending(t: ReportTarget, report: NodeReport, log: { info(m: string): void }): Promise<boolean> {
  try {
    await t.consul.kvPut(kvKeys.node(t.prefix, report.role || t.role, report.node || t.node), renderReport(report));
    log.info(
      `report: sent the report Consul missed earlier (${report.status}, release ${report.release_id ?? "unknown"})`,
    );
    return true;
  } catch {
    return false;
  }
}

/** The node's name for reports: `--node`, else the Consul agent's node name, else the host name. */
export async function nodeName(
  flag: string | undefined,
  consul: ConsulClient | undefined,
  hostname: string,
): Promise<string> {
  if (flag) return flag;
  if (consul) {
    try {
      return (await consul.agentSelf()).nodeName;
    } catch {}
  }
  return hostname;
}
