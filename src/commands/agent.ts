/**
 * `pulldeploy agent`: read one trigger (consul watch / serf / plain line, or --manifest), deploy, exit.
 * Only turns flags into options and calls `deploy`; exit code: 0 ok, 1 deploy failed, 2 usage
 * (cli.ts makes it always 0 under `consul watch`, which would otherwise stop watching).
 */
import { defineCommand, type ArgsDef } from "citty";
import { DEFAULT_LIMITS } from "../archive.ts";
import { deploy } from "../deploy.ts";
import { UsageError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { checkUrl, parseTrigger, type Trigger } from "../trigger.ts";
import { sleep } from "../unpack.ts";
import { loadPublicKey } from "../signature.ts";
import { durationFlag, intFlag, listFlag, sizeFlag } from "./_shared.ts";
import type { CommandEnv } from "../cli.ts";

const RSYNC_VERBOSE = ["", "-v", "-vv", "-vvv"];

export const agentArgs = {
  manifest: { type: "string", description: "Deploy this manifest URL instead of reading a trigger from stdin", valueHint: "url" },
  "max-bandwidth": { type: "string", alias: "max-band-width", description: "Cap the download rate: 10M / 10MB (10^6), 1MiB (2^20), 500k, bytes", valueHint: "size" },
  timeout: { type: "string", description: "Deadline on fetching src, per attempt: 30 (seconds) or 30s, 2m", valueHint: "duration" },
  "random-delay": { type: "string", description: "Sleep a random time in [0, d) before reading stdin", valueHint: "duration" },
  retry: { type: "string", description: "Extra attempts of the whole fetch after a 5xx, network or body error (default 0)", valueHint: "n" },
  "retry-wait": { type: "string", description: "Wait between attempts (default 3s)", valueHint: "duration" },
  "rsync-verbose": { type: "string", description: 'rsync verbosity: "", -v, -vv or -vvv', valueHint: "-v" },
  "command-timeout": { type: "string", description: "Kill a command's process group after this long (default: none)", valueHint: "duration" },
  "max-files": { type: "string", description: `Refuse archives with more entries (default ${DEFAULT_LIMITS.maxEntries})`, valueHint: "n" },
  "max-extract-size": { type: "string", description: "Refuse archives that expand beyond this size (default 64GiB)", valueHint: "size" },
  "trust-key": { type: "string", description: "Only deploy manifests signed by one of these Ed25519 public keys (repeat or comma-separate, for rotation)", valueHint: "file..." },
} as const satisfies ArgsDef;

export default defineCommand({
  meta: { name: "agent", description: "Deploy one release: read a trigger from stdin (consul watch, serf, or a URL line) and deploy it" },
  args: agentArgs,
  run({ args, data }) {
    return runAgent(args as Record<string, string | undefined>, data as CommandEnv);
  },
});

async function runAgent(args: Record<string, string | undefined>, ctx: CommandEnv): Promise<number> {
  const { env, log, signal } = ctx;
  const retryWait = durationFlag("retry-wait", args["retry-wait"]);
  const rsyncVerbose = args["rsync-verbose"] ?? "";
  if (!RSYNC_VERBOSE.includes(rsyncVerbose)) throw new UsageError(`--rsync-verbose: expected one of "", -v, -vv, -vvv; got "${rsyncVerbose}"`);
  const opts = {
    fetch: {
      timeoutMs: durationFlag("timeout", args.timeout),
      retry: intFlag("retry", args.retry) ?? 0,
      retryWaitMs: retryWait ?? 3000,
      maxBandwidth: sizeFlag("max-bandwidth", args["max-bandwidth"]),
    },
    rsyncVerbose,
    commandTimeoutMs: durationFlag("command-timeout", args["command-timeout"]),
    limits: {
      maxEntries: intFlag("max-files", args["max-files"], 1) ?? DEFAULT_LIMITS.maxEntries,
      maxBytes: sizeFlag("max-extract-size", args["max-extract-size"]) ?? DEFAULT_LIMITS.maxBytes,
    },
  };
  const trustKeys = listFlag(args["trust-key"]).map((file) => {
    try {
      return loadPublicKey(file);
    } catch (err) {
      throw new UsageError(`--trust-key: ${(err as Error).message}`);
    }
  });
  const randomDelay = durationFlag("random-delay", args["random-delay"]);

  if (randomDelay) {
    const ms = Math.random() * randomDelay;
    log.info(`random delay: sleeping ${(ms / 1000).toFixed(3)}s`);
    await sleep(ms, signal);
  }

  let trigger: Trigger;
  if (args.manifest !== undefined) {
    trigger = { kind: "flag", url: checkUrl(args.manifest, "--manifest") };
  } else {
    if (ctx.stdinIsTTY) throw new UsageError("no trigger: pipe a manifest URL on stdin (or a consul/serf event), or pass --manifest URL");
    trigger = parseTrigger(await ctx.readStdin(), env);
  }
  if (trigger.kind === "consul-empty") {
    log.info("consul event: no events (consul watch starts every handler with [] or the buffered events)");
    return 0;
  }
  logTrigger(trigger, log);
  if (signal.aborted) return 1;

  const result = await deploy({
    manifestUrl: trigger.url,
    eventId: trigger.kind === "consul" ? trigger.eventId : undefined,
    env,
    log,
    signal,
    trustKeys,
    ...opts,
  });
  return result.ok ? 0 : 1;
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
