/**
 * The deploy pipeline, in order (the contract's section 6):
 *
 *   manifest  fetch and parse the manifest (no command runs if this fails)
 *   fetch     download `src`, hash it, and extract it into a fresh temp dir as the bytes arrive
 *   checksum  compare the hash: nothing has touched `dest` and no command has run yet
 *   pre       `pre` commands
 *   extract   raise any extraction error found while streaming; chmod the tree to `dest_mode`
 *   sync      the manifest's sync strategy (rsync | mv) into `dest`
 *   post      `post` commands
 *   then      `success` or `failure` commands, with the log so far on stdin
 *
 * Errors carry their phase; the temp dir is removed on every path.
 */
import * as fs from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ExtractLimits } from "./archive.ts";
import { FetchError, ManifestError, messageOf, PulldeployError, type Phase } from "./errors.ts";
import { runCommands } from "./hooks.ts";
import type { Logger } from "./log.ts";
import { redact } from "./log.ts";
import { parseManifest, type Manifest } from "./manifest.ts";
import { fetchText } from "./sources/index.ts";
import type { Env } from "./sources/types.ts";
import { SYNC_STRATEGIES } from "./sync.ts";
import { fetchAndExtract, sleep } from "./unpack.ts";
import { USER_AGENT } from "./version.ts";

export interface FetchPolicy {
  /** Deadline on fetching `src`, per attempt, in ms. */
  timeoutMs?: number;
  /** Extra attempts of the whole fetch after a retryable failure. */
  retry: number;
  retryWaitMs: number;
  /** Bytes per second. */
  maxBandwidth?: number;
}

export interface DeployOptions {
  manifestUrl: string;
  /** The trigger's event id, for logs and hooks. */
  eventId?: string;
  env: Env;
  log: Logger;
  signal?: AbortSignal;
  fetch: FetchPolicy;
  rsyncVerbose: string;
  /** Per-command timeout in ms. */
  commandTimeoutMs?: number;
  limits: ExtractLimits;
}

export type DeployResult =
  | { ok: true; manifest: Manifest }
  | { ok: false; phase: Phase; error: string; manifest?: Manifest };

export async function deploy(opts: DeployOptions): Promise<DeployResult> {
  const { log, env, signal } = opts;

  // manifest
  let manifest: Manifest;
  try {
    const text = await fetchText(opts.manifestUrl, { env, signal, userAgent: USER_AGENT });
    const parsed = parseManifest(text, env);
    for (const w of parsed.warnings) log.info(w);
    manifest = parsed.manifest;
  } catch (err) {
    const error = phaseError(err, "manifest");
    log.info(`deploy failed in phase manifest: ${error.message}`);
    if (err instanceof ManifestError && !err.fatal) {
      // The manifest is readable enough to know its failure commands: run them.
      const failure = failureCommandsOf(err, opts);
      if (failure) await runFailure(failure.commands, failure.env, "manifest", error.message, opts);
    }
    return { ok: false, phase: "manifest", error: error.message };
  }

  const hookEnv = commandEnv(opts, manifest);
  let tree: string | undefined;
  let phase: Phase = "fetch";
  try {
    if (manifest.src === undefined) {
      log.info("no src: running commands only");
      phase = "pre";
      await runCommands(manifest.commands.pre, { phase, env: hookEnv, timeoutMs: opts.commandTimeoutMs, signal, log });
    } else {
      tree = fs.mkdtempSync(join(env.TMPDIR || tmpdir(), "pulldeploy-"));
      log.info(`fetch: ${redact(manifest.src)}`);
      const started = performance.now();
      const result = await fetchWithRetry(manifest, tree, opts);
      const secs = (performance.now() - started) / 1000;
      log.info(`checksum: ${manifest.checksum!.algorithm} ${manifest.checksum!.hex} ok (${result.bytes} bytes, ${result.entries} entries, ${secs.toFixed(2)}s)`);
      phase = "pre";
      await runCommands(manifest.commands.pre, { phase, env: hookEnv, timeoutMs: opts.commandTimeoutMs, signal, log });
      phase = "extract";
      if (result.extractError) throw result.extractError;
      fs.chmodSync(tree, manifest.destMode);
      phase = "sync";
      await SYNC_STRATEGIES[manifest.syncStrategy]({ tree, dest: manifest.dest!, manifest, rsyncVerbose: opts.rsyncVerbose, env, log, signal });
    }
    phase = "post";
    await runCommands(manifest.commands.post, { phase, env: hookEnv, timeoutMs: opts.commandTimeoutMs, signal, log });
  } catch (err) {
    const error = phaseError(err, phase);
    const where = error.phase ?? phase;
    log.info(`deploy failed in phase ${where}: ${error.message}`);
    await runFailure(manifest.commands.failure, hookEnv, where, error.message, opts);
    return { ok: false, phase: where, error: error.message, manifest };
  } finally {
    if (tree !== undefined) fs.rmSync(tree, { recursive: true, force: true });
  }

  log.info("deploy succeeded");
  try {
    await runCommands(manifest.commands.success, { phase: "success", env: hookEnv, stdin: log.text(), timeoutMs: opts.commandTimeoutMs, signal, log });
  } catch (err) {
    log.info(`success command failed (the deploy still succeeded): ${messageOf(err)}`);
  }
  return { ok: true, manifest };
}

async function fetchWithRetry(manifest: Manifest, tree: string, opts: DeployOptions) {
  const { log } = opts;
  for (let attempt = 0; ; attempt++) {
    const signals = [opts.signal, opts.fetch.timeoutMs ? AbortSignal.timeout(opts.fetch.timeoutMs) : undefined].filter((s) => s !== undefined);
    try {
      return await fetchAndExtract({
        url: manifest.src!,
        checksum: manifest.checksum!,
        tree,
        env: opts.env,
        userAgent: USER_AGENT,
        signal: signals.length > 0 ? AbortSignal.any(signals) : undefined,
        maxBandwidth: opts.fetch.maxBandwidth,
        limits: opts.limits,
      });
    } catch (err) {
      const retryable = err instanceof FetchError && err.retryable && !opts.signal?.aborted;
      if (!retryable || attempt >= opts.fetch.retry) {
        if (retryable && opts.fetch.retry > 0) throw new FetchError(`${(err as Error).message} (after ${attempt + 1} attempts)`, false, { cause: err });
        throw err;
      }
      log.info(`fetch: ${messageOf(err)}; retrying in ${opts.fetch.retryWaitMs / 1000}s (attempt ${attempt + 2} of ${opts.fetch.retry + 1})`);
      // Start the next attempt from an empty tree.
      fs.rmSync(tree, { recursive: true, force: true });
      fs.mkdirSync(tree, { mode: 0o700 });
      await sleep(opts.fetch.retryWaitMs, opts.signal);
    }
  }
}

/** The failure commands run with the log so far on stdin; their own failure is only logged. */
async function runFailure(commands: string[], env: Record<string, string>, phase: Phase, error: string, opts: DeployOptions) {
  if (commands.length === 0) return;
  try {
    await runCommands(commands, {
      phase: "failure",
      env: { ...env, PULLDEPLOY_FAILED_PHASE: phase, PULLDEPLOY_ERROR: error },
      stdin: opts.log.text(),
      timeoutMs: opts.commandTimeoutMs,
      log: opts.log,
    });
  } catch (err) {
    opts.log.info(`failure command failed: ${messageOf(err)}`);
  }
}

/** For a non-fatal manifest error the commands section parsed: recover it to run `failure`. */
function failureCommandsOf(err: ManifestError, opts: DeployOptions): { commands: string[]; env: Record<string, string> } | undefined {
  const partial = err.partial;
  if (!partial) return undefined;
  return { commands: partial.failure, env: { ...commandEnvBase(opts), ...partial.env } };
}

function commandEnvBase(opts: DeployOptions): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(opts.env)) if (v !== undefined) env[k] = v;
  env.PULLDEPLOY_MANIFEST_URL = redact(opts.manifestUrl);
  if (opts.eventId) env.PULLDEPLOY_EVENT_ID = opts.eventId;
  return env;
}

/** The agent's environment, plus `commands.env`, plus `PULLDEPLOY_*` describing the deploy. */
function commandEnv(opts: DeployOptions, m: Manifest): Record<string, string> {
  const env = { ...commandEnvBase(opts), ...m.commands.env };
  if (m.src) env.PULLDEPLOY_SRC = redact(m.src);
  if (m.checksum) env.PULLDEPLOY_CHECKSUM = m.checksum.hex;
  if (m.dest) env.PULLDEPLOY_DEST = m.dest;
  return env;
}

function phaseError(err: unknown, phase: Phase): PulldeployError {
  if (err instanceof PulldeployError) return err;
  return new PulldeployError(messageOf(err), phase, { cause: err });
}
