/**
 * `pulldeploy agent`: read one trigger (consul watch / serf / plain line, `--manifest`, or `--from-kv`),
 * deploy, exit; or `--follow` the role's latest release. Only turns flags into options.
 * Exit code: 0 ok (or skipped), 1 deploy failed, 2 usage (main.ts makes it always 0 under `consul watch`).
 *
 * `consul watch` runs the agent with `[]` at every start and on every Consul agent restart: that
 * path reads stdin and exits. So the deploy pipeline, the Consul client and the signature code
 * (`node:crypto`) are imported only where they are used, below; the static imports here are small.
 */
import type { ArgsDef, CommandDef } from "citty";
import * as fs from "node:fs";
import { hostname } from "node:os";
import type { AgentRunOptions, ReportTarget } from "../agent/run.ts";
import { DEFAULT_LIMITS } from "../archive/extract.ts";
import type { ConsulClient } from "../consul/client.ts";
import { PulldeployError, UsageError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { checkNode, checkRole, DEFAULT_KV_PREFIX, kvKeys, type ReleaseRecord } from "../records/release.ts";
import { DEFAULT_STATE_DIR, type Handled } from "../agent/state.ts";
import { checkUrl, parseTrigger, type Trigger } from "../agent/trigger.ts";
import { sleep } from "../time.ts";
import type { CommandEnv } from "./context.ts";
import { consulArgs, durationFlag, intFlag, kvPrefixFlag, listFlag, sizeFlag } from "./_shared.ts";

const RSYNC_VERBOSE = ["", "-v", "-vv", "-vvv"];
/** consul watch and serf write the trigger and close stdin at once; its size is a few KB at most. */
const TRIGGER_TIMEOUT_MS = 60_000;
const TRIGGER_MAX_BYTES = 1 << 20;

export const agentArgs = {
  manifest: { type: "string", description: "Deploy this manifest URL instead of reading a trigger from stdin", valueHint: "url" },
  "max-bandwidth": { type: "string", alias: "max-band-width", description: "Cap the download rate: 10M / 10MB (10^6), 1MiB (2^20), 500k, bytes", valueHint: "size" },
  timeout: { type: "string", description: "Deadline on fetching src, per attempt: 30 (seconds) or 30s, 2m", valueHint: "duration" },
  "trigger-timeout": { type: "string", description: "Deadline on reading the trigger from stdin (default 60s; its size is capped at 1 MiB)", valueHint: "duration" },
  "random-delay": { type: "string", description: "Sleep a random time in [0, d) before reading stdin", valueHint: "duration" },
  retry: { type: "string", description: "Extra attempts of the whole fetch after a 5xx, network or body error (default 0)", valueHint: "n" },
  "retry-wait": { type: "string", description: "Wait between attempts (default 3s)", valueHint: "duration" },
  "rsync-verbose": { type: "string", description: 'rsync verbosity: "", -v, -vv or -vvv', valueHint: "-v" },
  hardlinks: { type: "boolean", description: "Hard-link files equal to dest's (rsync) or the previous release's instead of writing them (default; --no-hardlinks writes every file)" },
  "command-timeout": { type: "string", description: "Kill a hook's process group after this long (default: none)", valueHint: "duration" },
  "max-files": { type: "string", description: `Refuse archives with more entries (default ${DEFAULT_LIMITS.maxEntries})`, valueHint: "n" },
  "max-extract-size": { type: "string", description: "Refuse archives that expand beyond this size (default 64GiB)", valueHint: "size" },
  "allow-empty-archive": { type: "boolean", description: "Deploy an archive with no entries (it empties dest); refused by default" },
  "trust-key": { type: "string", description: "Only deploy manifests signed by one of these Ed25519 public keys (repeat or comma-separate, for rotation)", valueHint: "file..." },
  role: { type: "string", description: "This server's role: reports go to Consul KV under it; needed by --from-kv and --follow", valueHint: "role" },
  "from-kv": { type: "boolean", description: "Deploy the role's latest release from Consul KV if this server doesn't have it (boot / autoscaling)" },
  follow: { type: "boolean", description: "Keep running: converge to the role's latest release whenever it changes in Consul KV" },
  node: { type: "string", description: "Node name for reports (default: the Consul agent's node name, else the host name)", valueHint: "name" },
  "kv-prefix": { type: "string", description: `Consul KV prefix (default ${DEFAULT_KV_PREFIX})`, valueHint: "prefix" },
  "state-dir": { type: "string", description: `Where the agent keeps its state and lock (default $PULLDEPLOY_STATE_DIR or ${DEFAULT_STATE_DIR})`, valueHint: "dir" },
  force: { type: "boolean", description: "Deploy even when the event or release was handled already" },
  "follow-wait": { type: "string", description: "--follow: longest wait of one blocking query; the latest release is re-read at least this often (default 60s)", valueHint: "duration" },
  "follow-retry": { type: "string", description: "--follow: first wait before retrying a failed release; doubles up to 10m, jittered (default 10s)", valueHint: "duration" },
  "metrics-file": { type: "string", description: "After every deploy, write Prometheus metrics to this file, atomically (node_exporter's textfile collector: name it *.prom)", valueHint: "file" },
  "lock-wait": { type: "string", description: "How long to wait for another agent deploying on this host (default 10m; 0: don't wait)", valueHint: "duration" },
  ...consulArgs,
} as const satisfies ArgsDef;

type Args = Record<string, string | boolean | undefined>;

// A plain object (citty's defineCommand returns its argument): citty is loaded by main.ts.
const agentCommand: CommandDef<typeof agentArgs> = {
  meta: { name: "agent", description: "Deploy one release: read a trigger from stdin (consul watch, serf, or a URL line) and deploy it" },
  args: agentArgs,
  run({ args, data }) {
    return runAgent(args as Args, data as CommandEnv);
  },
};
export default agentCommand;

async function runAgent(args: Args, ctx: CommandEnv): Promise<number> {
  const { env, log, signal } = ctx;
  const str = (k: string) => (typeof args[k] === "string" ? (args[k] as string) : undefined);
  const rsyncVerbose = str("rsync-verbose") ?? "";
  if (!RSYNC_VERBOSE.includes(rsyncVerbose)) throw new UsageError(`--rsync-verbose: expected one of "", -v, -vv, -vvv; got "${rsyncVerbose}"`);
  const trustKeyFiles = listFlag(str("trust-key"));
  // An explicit but empty --trust-key (an unset variable in a unit file) must not mean "trust anything".
  if (args["trust-key"] !== undefined && trustKeyFiles.length === 0) {
    throw new UsageError('--trust-key: empty; give the public key file(s) to verify manifests with (e.g. --trust-key /etc/pulldeploy/release.pub), or drop the flag');
  }
  // signature.ts loads node:crypto (~15 ms): only with --trust-key.
  const signature = trustKeyFiles.length > 0 ? await import("../signature.ts") : undefined;
  const trustKeys = trustKeyFiles.map((file) => {
    try {
      return signature!.loadPublicKey(file);
    } catch (err) {
      throw new UsageError(`--trust-key: ${(err as Error).message}`);
    }
  });
  const deployOpts: AgentRunOptions["deploy"] = {
    env,
    log,
    signal,
    trustKeys,
    fetch: {
      timeoutMs: durationFlag("timeout", str("timeout")),
      retry: intFlag("retry", str("retry")) ?? 0,
      retryWaitMs: durationFlag("retry-wait", str("retry-wait")) ?? 3000,
      maxBandwidth: sizeFlag("max-bandwidth", str("max-bandwidth")),
    },
    rsyncVerbose,
    hardLinks: args.hardlinks !== false,
    commandTimeoutMs: durationFlag("command-timeout", str("command-timeout")),
    limits: {
      maxEntries: intFlag("max-files", str("max-files"), 1) ?? DEFAULT_LIMITS.maxEntries,
      maxBytes: sizeFlag("max-extract-size", str("max-extract-size")) ?? DEFAULT_LIMITS.maxBytes,
      allowEmpty: args["allow-empty-archive"] === true,
    },
  };
  const role = str("role");
  if (role !== undefined) {
    const bad = checkRole(role);
    if (bad) throw new UsageError(`--role: ${bad}`);
  }
  const fromKv = args["from-kv"] === true;
  const following = args.follow === true;
  if ((fromKv || following) && role === undefined) throw new UsageError(`--${following ? "follow" : "from-kv"} needs --role (the role whose latest release to deploy)`);
  if (fromKv && following) throw new UsageError("use either --from-kv (once, at boot) or --follow (keep running), not both");
  if ((fromKv || following) && str("manifest") !== undefined) throw new UsageError("--manifest cannot be combined with --from-kv or --follow");
  const prefix = kvPrefixFlag(str("kv-prefix"));
  const nodeFlag = str("node");
  if (nodeFlag !== undefined) {
    const bad = checkNode(nodeFlag);
    if (bad) throw new UsageError(`--node: ${bad}`);
  }
  const stateDir = usableStateDir(str("state-dir") ?? env.PULLDEPLOY_STATE_DIR ?? DEFAULT_STATE_DIR, log);
  const metricsFile = str("metrics-file");
  if (args["metrics-file"] !== undefined && !metricsFile) throw new UsageError("--metrics-file: empty; give the file to write (e.g. /var/lib/node_exporter/textfile/pulldeploy.prom), or drop the flag");
  const common = { stateDir, force: args.force === true, lockWaitMs: durationFlag("lock-wait", str("lock-wait")) ?? 600_000, metricsFile };

  // Consul is needed for --from-kv / --follow, and for reports when a role is given. Its
  // configuration is checked here; the node name (a request to the Consul agent) is looked up
  // only when there is something to deploy (not for consul watch's `[]`).
  let consul: ConsulClient | undefined;
  if (role !== undefined) {
    const { ConsulClient, consulConfig } = await import("../consul/client.ts");
    consul = new ConsulClient(consulConfig(env, { addr: str("consul-addr"), token: str("consul-token") }), { timeoutMs: 10_000 });
  }
  const reportTarget = async (): Promise<ReportTarget | undefined> => {
    if (!consul || !role) return undefined;
    const { nodeName } = await import("../agent/run.ts");
    const node = await nodeName(nodeFlag, consul, hostname());
    const bad = checkNode(node);
    if (bad) throw new UsageError(`this host's ${bad}: pass --node NAME`);
    return { consul, prefix, role, node };
  };

  if (following) {
    const report = await reportTarget();
    const [{ follow }, { agentRun }] = await Promise.all([import("../agent/follow.ts"), import("../agent/run.ts")]);
    await follow({
      consul: consul!,
      prefix,
      role: role!,
      log,
      stop: signal,
      waitMs: durationFlag("follow-wait", str("follow-wait")),
      retryMs: followRetry(durationFlag("follow-retry", str("follow-retry"))),
      converge: async (record) => {
        const outcome = await agentRun({ ...common, ...fromRecord(record), deploy: { ...deployOpts, signal: ctx.forceSignal }, report });
        return outcome.outcome !== "failed";
      },
    });
    return 0;
  }

  const randomDelay = durationFlag("random-delay", str("random-delay"));
  if (randomDelay) {
    const ms = Math.random() * randomDelay;
    log.info(`random delay: sleeping ${(ms / 1000).toFixed(3)}s`);
    await sleep(ms, signal);
  }

  let run: Pick<AgentRunOptions, "manifestUrl" | "handled" | "eventId" | "releaseId" | "checksum">;
  if (fromKv) {
    const key = kvKeys.latest(prefix, role!);
    const { value } = await consul!.kvGetJson<ReleaseRecord>(key);
    if (value === null) throw new PulldeployError(`no release recorded for role ${role} yet (${key} is empty): nothing to deploy`);
    log.info(`from-kv: latest release of ${role} is ${value.id}`);
    run = fromRecord(value);
  } else {
    let trigger: Trigger;
    if (str("manifest") !== undefined) {
      trigger = { kind: "flag", url: checkUrl(str("manifest")!, "--manifest") };
    } else {
      if (ctx.stdinIsTTY) throw new UsageError("no trigger: pipe a manifest URL on stdin (or a consul/serf event), or pass --manifest URL");
      const timeoutMs = durationFlag("trigger-timeout", str("trigger-timeout")) ?? TRIGGER_TIMEOUT_MS;
      trigger = parseTrigger(await ctx.readStdin({ timeoutMs, maxBytes: TRIGGER_MAX_BYTES }), env);
    }
    if (trigger.kind === "consul-empty") {
      log.info("consul event: no events (consul watch starts every handler with [] or the buffered events)");
      return 0;
    }
    logTrigger(trigger, log);
    run = { manifestUrl: trigger.url, handled: handledOf(trigger), eventId: trigger.kind === "consul" ? trigger.eventId : undefined };
  }
  const report = await reportTarget();
  if (signal.aborted) return 1;
  const { agentRun } = await import("../agent/run.ts");
  const outcome = await agentRun({ ...common, ...run, deploy: deployOpts, report });
  return outcome.outcome === "failed" ? 1 : 0;
}

function followRetry(firstMs: number | undefined): [number, number] | undefined {
  if (firstMs === undefined) return undefined;
  if (firstMs <= 0) throw new UsageError("--follow-retry: expected a positive duration like 10s");
  return [firstMs, Math.max(firstMs, 600_000)];
}

function fromRecord(r: ReleaseRecord): Pick<AgentRunOptions, "manifestUrl" | "handled" | "releaseId" | "checksum"> {
  return { manifestUrl: r.manifest_url, handled: { kind: "release", releaseId: r.id }, releaseId: r.id, checksum: r.checksum };
}

function handledOf(t: Trigger): Handled {
  if (t.kind === "consul") return { kind: "consul", eventId: t.eventId };
  if (t.kind === "serf") return { kind: "serf", event: t.event, ltime: t.ltime };
  return { kind: "none" };
}

/** The state dir, or undefined (with a warning) when it can't be created: stretcher kept no state. */
function usableStateDir(dir: string, log: Logger): string | undefined {
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
    fs.accessSync(dir, fs.constants.W_OK);
    return dir;
  } catch (err) {
    log.info(`state: cannot use ${dir} (${(err as NodeJS.ErrnoException).code}): no duplicate detection and no host lock this run (set --state-dir)`);
    return undefined;
  }
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
