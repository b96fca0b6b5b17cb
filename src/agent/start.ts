/**
 * What `pulldeploy agent` does once its flags are options: find what to deploy (a trigger on stdin,
 * `--manifest`, the role's latest release in KV, or following it), then one `agentRun` per release.
 * Probes the state dir (none usable: a warning, and no lock or duplicate detection, as stretcher),
 * sleeps the random delay, builds the Consul client when a role is given.
 *
 * `consul watch` runs the agent with `[]` at every start and on every Consul agent restart: that
 * path reads stdin and returns. So the deploy pipeline (`run.ts`), the Consul client and `--follow`
 * are imported only where they are used; the static imports here are small.
 */
import { hostname } from "node:os";
import type { ConsulClient } from "../consul/client.ts";
import type { Env } from "../env.ts";
import { PulldeployError, UsageError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { checkNode, kvKeys, type ReleaseRecord } from "../records/release.ts";
import { sleep } from "../time.ts";
import type { AgentRunOptions, ReportTarget } from "./run.ts";
import { type Handled, usableStateDir } from "./state.ts";
import { parseTrigger, type Trigger } from "./trigger.ts";

/** Where the release to deploy comes from. */
export type AgentSource =
  /** Converge to the role's latest release in KV whenever it changes, until `signal`. */
  | { kind: "follow"; waitMs?: number; retryMs?: [number, number] }
  /** The role's latest release in KV, once (boot, autoscaling). */
  | { kind: "from-kv" }
  /** A manifest URL given on the command line (checked already). */
  | { kind: "manifest"; url: string }
  /** A trigger (consul watch / serf / plain line) read from stdin with `read`. */
  | { kind: "stdin"; isTTY: boolean; read: () => Promise<string> };

export interface AgentStartOptions {
  source: AgentSource;
  /** The deploy's options, shared by every run (`env`, `log` and `signal` among them). */
  deploy: AgentRunOptions["deploy"];
  /** Aborted by the first signal: stops following, the random delay, a deploy about to begin. */
  signal: AbortSignal;
  /** Aborted by a second signal: under `--follow`, a deploy in progress is stopped only by it. */
  forceSignal: AbortSignal;
  /** The role (checked already): reports go to Consul KV under it; needed by `follow`/`from-kv`. */
  role?: string;
  /** The node name for reports; by default the Consul agent's, else the host name. */
  node?: string;
  prefix: string;
  consul: { addr?: string; token?: string };
  /** The state dir wanted; made if missing. */
  stateDir: string;
  force: boolean;
  lockWaitMs: number;
  /** `--metrics-file`: a Prometheus text file written after every deploy (agent/metrics.ts). */
  metricsFile?: string;
  /** Sleep a random time in [0, randomDelayMs) before reading the trigger. */
  randomDelayMs?: number;
}

/** Exit code: 0 ok or nothing to do, 1 the deploy failed (or was interrupted before it began). */
export async function startAgent(o: AgentStartOptions): Promise<number> {
  const { env, log } = o.deploy;
  const signal = o.signal;
  const stateDir = usableStateDir(o.stateDir, log, "no duplicate detection and no host lock");
  const common = { stateDir, force: o.force, lockWaitMs: o.lockWaitMs, metricsFile: o.metricsFile };
  const role = o.role;

  // Consul is needed for from-kv / follow, and for reports when a role is given. Its configuration
  // is checked here; the node name (a request to the Consul agent) is looked up only when there is
  // something to deploy (not for consul watch's `[]`).
  const consul = role === undefined ? undefined : await consulClient(env, o.consul);
  const reportTarget = async (): Promise<ReportTarget | undefined> => {
    if (!consul || !role) return undefined;
    const { nodeName } = await import("./run.ts");
    const node = await nodeName(o.node, consul, hostname());
    const bad = checkNode(node);
    if (bad) throw new UsageError(`this host's ${bad}: pass --node NAME`);
    return { consul, prefix: o.prefix, role, node };
  };

  const source = o.source;
  if (source.kind === "follow") {
    const report = await reportTarget();
    const [{ follow }, { agentRun }] = await Promise.all([import("./follow.ts"), import("./run.ts")]);
    await follow({
      consul: consul!,
      prefix: o.prefix,
      role: role!,
      log,
      stop: signal,
      waitMs: source.waitMs,
      retryMs: source.retryMs,
      converge: async (latest) => {
        const good = await (await import("./rollout.ts")).lastGoodRelease(consul!, o.prefix, latest);
        if (good.why) log.info(`follow: ${good.why}`);
        const outcome = await runGated(
          { ...common, ...fromRecord(good.release), deploy: { ...o.deploy, signal: o.forceSignal }, report },
          o.prefix,
          agentRun,
        );
        return outcome.outcome !== "failed";
      },
    });
    return 0;
  }

  if (o.randomDelayMs) {
    const ms = Math.random() * o.randomDelayMs;
    log.info(`random delay: sleeping ${(ms / 1000).toFixed(3)}s`);
    await sleep(ms, signal);
  }

  let run: Pick<AgentRunOptions, "manifestUrl" | "handled" | "eventId" | "releaseId" | "checksum">;
  if (source.kind === "from-kv") {
    const key = kvKeys.latest(o.prefix, role!);
    const { value } = await consul!.kvGetJson<ReleaseRecord>(key);
    if (value === null)
      throw new PulldeployError(`no release recorded for role ${role} yet (${key} is empty): nothing to deploy`);
    log.info(`from-kv: latest release of ${role} is ${value.id}`);
    const good = await (await import("./rollout.ts")).lastGoodRelease(consul!, o.prefix, value);
    if (good.why) log.info(`from-kv: ${good.why}`);
    run = fromRecord(good.release);
  } else {
    let trigger: Trigger;
    if (source.kind === "manifest") {
      trigger = { kind: "flag", url: source.url };
    } else {
      if (source.isTTY)
        throw new UsageError(
          "no trigger: pipe a manifest URL on stdin (or a consul/serf event), or pass --manifest URL",
        );
      trigger = parseTrigger(await source.read(), env);
    }
    if (trigger.kind === "consul-empty") {
      log.info("consul event: no events (consul watch starts every handler with [] or the buffered events)");
      return 0;
    }
    logTrigger(trigger, log);
    run = {
      manifestUrl: trigger.url,
      handled: handledOf(trigger),
      eventId: trigger.kind === "consul" ? trigger.eventId : undefined,
    };
  }
  const report = await reportTarget();
  if (signal.aborted) return 1;
  const { agentRun } = await import("./run.ts");
  // No --role: the manifest's `role:` (publish writes it) makes this agent take part in the release's
  // rollout, read once the deploy has fetched (and verified) the manifest: no extra request.
  const byManifest = async (manifestRole: string): Promise<ReportTarget | undefined> => {
    try {
      const client = await consulClient(env, o.consul);
      const { nodeName } = await import("./run.ts");
      const node = await nodeName(o.node, client, hostname());
      const bad = checkNode(node);
      if (bad) throw new UsageError(`this host's ${bad}: pass --node NAME`);
      log.info(`role: ${manifestRole} (from the manifest)`);
      return { consul: client, prefix: o.prefix, role: manifestRole, node };
    } catch (err) {
      log.info(`role ${manifestRole} (from the manifest): no report and no rollout: ${(err as Error).message}`);
      return undefined;
    }
  };
  const outcome = await runGated(
    { ...common, ...run, deploy: o.deploy, report },
    o.prefix,
    agentRun,
    report ? undefined : byManifest,
  );
  return outcome.outcome === "failed" ? 1 : 0;
}

/**
 * One agent run that takes part in the release's rollout, if it has one: with a role (`--role`, or
 * `byManifest` turning the manifest's `role:` into a Consul target once the deploy has read and
 * verified it: the same target then carries the node's report).
 */
async function runGated(
  o: AgentRunOptions,
  prefix: string,
  agentRun: typeof import("./run.ts").agentRun,
  byManifest?: (role: string) => Promise<ReportTarget | undefined>,
) {
  const t = o.report;
  if (!t && !byManifest) return agentRun(o);
  const { lazyRolloutGate, rolloutGate } = await import("./rollout.ts");
  const gateOf = (x: ReportTarget) =>
    rolloutGate({ consul: x.consul, prefix, role: x.role, node: x.node, log: o.deploy.log, signal: o.deploy.signal });
  let run: AgentRunOptions;
  let gate: import("./rollout.ts").RolloutGate;
  if (t) {
    gate = gateOf(t);
    run = { ...o, deploy: { ...o.deploy, rollout: gate } };
  } else {
    // Asked twice (the report, the gate), looked up once: one node-name request at most.
    let target: Promise<ReportTarget | undefined> | undefined;
    const reportOf = (role: string) => (target ??= byManifest!(role));
    const lazy = lazyRolloutGate(async (role) => {
      const x = await reportOf(role);
      return x ? gateOf(x) : undefined;
    });
    gate = lazy;
    run = { ...o, reportOf, deploy: { ...o.deploy, rollout: lazy, accepted: lazy.accepted } };
  }
  let outcome: Awaited<ReturnType<typeof agentRun>> | undefined;
  try {
    outcome = await agentRun(run);
    return outcome;
  } finally {
    await gate.finish(outcome?.outcome === "skipped" ? undefined : outcome?.result, o.manifestUrl);
  }
}

async function consulClient(env: Env, flags: { addr?: string; token?: string }): Promise<ConsulClient> {
  const { ConsulClient, consulConfig } = await import("../consul/client.ts");
  return new ConsulClient(consulConfig(env, flags), { timeoutMs: 10_000 });
}

function fromRecord(r: ReleaseRecord): Pick<AgentRunOptions, "manifestUrl" | "handled" | "releaseId" | "checksum"> {
  return {
    manifestUrl: r.manifest_url,
    handled: { kind: "release", releaseId: r.id },
    releaseId: r.id,
    checksum: r.checksum,
  };
}

function handledOf(t: Trigger): Handled {
  if (t.kind === "consul") return { kind: "consul", eventId: t.eventId };
  if (t.kind === "serf") return { kind: "serf", event: t.event, ltime: t.ltime };
  return { kind: "none" };
}

function logTrigger(t: Trigger, log: Logger): void {
  switch (t.kind) {
    case "consul":
      log.info(`consul event ${t.eventId} (LTime ${t.ltime}): ${t.url}`);
      break;
    case "serf":
      log.info(`serf user event ${t.event} (LTime ${t.ltime}): ${t.url}`);
      break;
    case "plain":
      log.info(`stdin: ${t.url}`);
      break;
    case "flag":
      log.info(`--manifest: ${t.url}`);
      break;
  }
}
