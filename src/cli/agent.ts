/**
 * `pulldeploy agent`: read one trigger (consul watch / serf / plain line, `--manifest`, or `--from-kv`),
 * deploy, exit; or `--follow` the role's latest release. Only turns flags into options.
 * Exit code: 0 ok (or skipped), 1 deploy failed, 2 usage (run.ts makes it always 0 under `consul watch`).
 *
 * The work is `startAgent` (agent/start.ts). `consul watch` runs the agent with `[]` at every start and
 * on every Consul agent restart: that path reads stdin and exits. So the signature code
 * (`node:crypto`) is imported only with `--trust-key`; the static imports here are small.
 */
import type { ArgsDef, CommandDef } from "citty";
import type { AgentRunOptions } from "../agent/run.ts";
import { type AgentSource, startAgent } from "../agent/start.ts";
import { DEFAULT_LIMITS } from "../archive/limits.ts";
import { UsageError } from "../errors.ts";
import { checkNode, checkRole, DEFAULT_KV_PREFIX } from "../records/release.ts";
import { DEFAULT_STATE_DIR } from "../agent/state.ts";
import { checkUrl } from "../agent/trigger.ts";
import type { CommandEnv } from "./context.ts";
import { consulArgs, durationFlag, intFlag, kvPrefixFlag, listFlag, sizeFlag } from "./_shared.ts";

const RSYNC_VERBOSE = ["", "-v", "-vv", "-vvv"];
/** consul watch and serf write the trigger and close stdin at once; its size is a few KB at most. */
const TRIGGER_TIMEOUT_MS = 60_000;
const TRIGGER_MAX_BYTES = 1 << 20;

export const agentArgs = {
  manifest: {
    type: "string",
    description: "Deploy this manifest URL instead of reading a trigger from stdin",
    valueHint: "url",
  },
  "max-bandwidth": {
    type: "string",
    alias: "max-band-width",
    description: "Cap the download rate: 10M / 10MB (10^6), 1MiB (2^20), 500k, bytes",
    valueHint: "size",
  },
  timeout: {
    type: "string",
    description: "Deadline on fetching src, per attempt: 30 (seconds) or 30s, 2m",
    valueHint: "duration",
  },
  "trigger-timeout": {
    type: "string",
    description: "Deadline on reading the trigger from stdin (default 60s; its size is capped at 1 MiB)",
    valueHint: "duration",
  },
  "random-delay": {
    type: "string",
    description: "Sleep a random time in [0, d) before reading stdin",
    valueHint: "duration",
  },
  retry: {
    type: "string",
    description: "Extra attempts of the whole fetch after a 5xx, network or body error (default 0)",
    valueHint: "n",
  },
  "retry-wait": { type: "string", description: "Wait between attempts (default 3s)", valueHint: "duration" },
  "rsync-verbose": { type: "string", description: 'rsync verbosity: "", -v, -vv or -vvv', valueHint: "-v" },
  hardlinks: {
    type: "boolean",
    description:
      "Hard-link files equal to dest's (rsync) or the previous release's instead of writing them (default; " +
      "--no-hardlinks writes every file)",
  },
  "command-timeout": {
    type: "string",
    description: "Kill a hook's process group after this long (default: none)",
    valueHint: "duration",
  },
  "max-files": {
    type: "string",
    description: `Refuse archives with more entries (default ${DEFAULT_LIMITS.maxEntries})`,
    valueHint: "n",
  },
  "max-extract-size": {
    type: "string",
    description: "Refuse archives that expand beyond this size (default 64GiB)",
    valueHint: "size",
  },
  "allow-empty-archive": {
    type: "boolean",
    description: "Deploy an archive with no entries (it empties dest); refused by default",
  },
  "trust-key": {
    type: "string",
    description:
      "Only deploy manifests signed by one of these Ed25519 public keys (repeat or comma-separate, for rotation)",
    valueHint: "file...",
  },
  role: {
    type: "string",
    description: "This server's role: reports go to Consul KV under it; needed by --from-kv and --follow",
    valueHint: "role",
  },
  "from-kv": {
    type: "boolean",
    description: "Deploy the role's latest release from Consul KV if this server doesn't have it (boot / autoscaling)",
  },
  follow: {
    type: "boolean",
    description: "Keep running: converge to the role's latest release whenever it changes in Consul KV",
  },
  node: {
    type: "string",
    description: "Node name for reports (default: the Consul agent's node name, else the host name)",
    valueHint: "name",
  },
  "kv-prefix": { type: "string", description: `Consul KV prefix (default ${DEFAULT_KV_PREFIX})`, valueHint: "prefix" },
  "state-dir": {
    type: "string",
    description: `Where the agent keeps its state and lock (default $PULLDEPLOY_STATE_DIR or ${DEFAULT_STATE_DIR})`,
    valueHint: "dir",
  },
  force: { type: "boolean", description: "Deploy even when the event or release was handled already" },
  "follow-wait": {
    type: "string",
    description:
      "--follow: longest wait of one blocking query; the latest release is re-read at least this often (default 60s)",
    valueHint: "duration",
  },
  "follow-retry": {
    type: "string",
    description: "--follow: first wait before retrying a failed release; doubles up to 10m, jittered (default 10s)",
    valueHint: "duration",
  },
  "metrics-file": {
    type: "string",
    description:
      "After every deploy, write Prometheus metrics to this file, atomically (node_exporter's textfile " +
      "collector: name it *.prom)",
    valueHint: "file",
  },
  "lock-wait": {
    type: "string",
    description: "How long to wait for another agent deploying on this host (default 10m; 0: don't wait)",
    valueHint: "duration",
  },
  ...consulArgs,
} as const satisfies ArgsDef;

type Args = Record<string, string | boolean | undefined>;

// A plain object (citty's defineCommand returns its argument): citty is loaded by run.ts.
const agentCommand: CommandDef<typeof agentArgs> = {
  meta: {
    name: "agent",
    description: "Deploy one release: read a trigger from stdin (consul watch, serf, or a URL line) and deploy it",
  },
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
  if (!RSYNC_VERBOSE.includes(rsyncVerbose))
    throw new UsageError(`--rsync-verbose: expected one of "", -v, -vv, -vvv; got "${rsyncVerbose}"`);
  const trustKeyFiles = listFlag(str("trust-key"));
  // An explicit but empty --trust-key (an unset variable in a unit file) must not mean "trust anything".
  if (args["trust-key"] !== undefined && trustKeyFiles.length === 0) {
    throw new UsageError(
      "--trust-key: empty; give the public key file(s) to verify manifests with (e.g. --trust-key " +
        "/etc/pulldeploy/release.pub), or drop the flag",
    );
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
  if ((fromKv || following) && role === undefined)
    throw new UsageError(
      `--${following ? "follow" : "from-kv"} needs --role (the role whose latest release to deploy)`,
    );
  if (fromKv && following)
    throw new UsageError("use either --from-kv (once, at boot) or --follow (keep running), not both");
  if ((fromKv || following) && str("manifest") !== undefined)
    throw new UsageError("--manifest cannot be combined with --from-kv or --follow");
  const prefix = kvPrefixFlag(str("kv-prefix"));
  const node = str("node");
  if (node !== undefined) {
    const bad = checkNode(node);
    if (bad) throw new UsageError(`--node: ${bad}`);
  }
  const metricsFile = str("metrics-file");
  if (args["metrics-file"] !== undefined && !metricsFile)
    throw new UsageError(
      "--metrics-file: empty; give the file to write (e.g. /var/lib/node_exporter/textfile/pulldeploy.prom), " +
        "or drop the flag",
    );
  // Each mode's own flags are read only in that mode (others ignore them, as they always did).
  let source: AgentSource;
  if (following)
    source = {
      kind: "follow",
      waitMs: durationFlag("follow-wait", str("follow-wait")),
      retryMs: followRetry(durationFlag("follow-retry", str("follow-retry"))),
    };
  else if (fromKv) source = { kind: "from-kv" };
  else if (str("manifest") !== undefined) source = { kind: "manifest", url: checkUrl(str("manifest")!, "--manifest") };
  else {
    const timeoutMs = durationFlag("trigger-timeout", str("trigger-timeout")) ?? TRIGGER_TIMEOUT_MS;
    source = {
      kind: "stdin",
      isTTY: ctx.stdinIsTTY,
      read: () => ctx.readStdin({ timeoutMs, maxBytes: TRIGGER_MAX_BYTES }),
    };
  }
  return startAgent({
    source,
    deploy: deployOpts,
    signal,
    forceSignal: ctx.forceSignal,
    role,
    node,
    prefix,
    consul: { addr: str("consul-addr"), token: str("consul-token") },
    stateDir: str("state-dir") ?? env.PULLDEPLOY_STATE_DIR ?? DEFAULT_STATE_DIR,
    force: args.force === true,
    lockWaitMs: durationFlag("lock-wait", str("lock-wait")) ?? 600_000,
    metricsFile,
    randomDelayMs: following ? undefined : durationFlag("random-delay", str("random-delay")),
  });
}

function followRetry(firstMs: number | undefined): [number, number] | undefined {
  if (firstMs === undefined) return undefined;
  if (firstMs <= 0) throw new UsageError("--follow-retry: expected a positive duration like 10s");
  return [firstMs, Math.max(firstMs, 600_000)];
}
