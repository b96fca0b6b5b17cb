/**
 * The deploy pipeline, in order (the contract's section 6):
 *
 *   manifest   fetch and parse the manifest (no command runs if this fails)
 *   signature  with trust keys: verify `<manifest>.sig` before anything is downloaded or run, then
 *              `admit` it (the downgrade check: not issued before what this dest runs); then the
 *              manifest is `accepted` (an agent without --role learns its role from it here)
 *   fetch      download `src`, hash it, and extract it into the strategy's fresh dir as the bytes arrive
 *   checksum   compare the hash: nothing has touched `dest` and no command has run yet
 *   pre        `pre` commands
 *   extract    raise any extraction error found while streaming; if a hard-linked file was changed in
 *              place meanwhile, extract again without links; chmod the tree to `dest_mode`
 *   sync       the manifest's sync strategy (rsync | mv | release) puts the tree in place
 *   post       `post` commands
 *   validate   (`release`) `validate` commands; on failure `current` is switched back
 *   then       `success` or `failure` commands, with the log so far on stdin
 *
 * Errors carry their phase; the workspace is removed on every path.
 */
import * as fs from "node:fs";
import type { KeyObject } from "node:crypto";
import { join } from "node:path";
import type { ExtractLimits } from "../archive/extract.ts";
import { FetchError, isDeployPhase, ManifestError, messageOf, PulldeployError, type DeployPhase } from "../errors.ts";
import { runCommands } from "./hooks.ts";
import { redact, type Logger } from "../log.ts";
import { parseManifest, type Manifest } from "../manifest/parse.ts";
import type { ChildTracker } from "../pid.ts";
import { fetchBytes, fetchText, MAX_DOCUMENT_BYTES, type DocumentPolicy } from "../store/sources/index.ts";
import type { Env } from "../env.ts";
import { emptyDir } from "../sync/nofollow.ts";
import { elapsed, PROGRESS_EVERY_MS, SYNC_STRATEGIES, type SyncContext, type Workspace } from "../sync/strategies.ts";
import { sleep } from "../time.ts";
import { fetchAndExtract } from "./unpack.ts";
import type { DeltaFetchOptions, TreeResult } from "../delta/fetch.ts";
import { USER_AGENT } from "../version.ts";

export interface FetchPolicy {
  /** Deadline per attempt, in ms, on fetching `src`, the manifest and its signature (those two: 60 s when unset). */
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
  /** false: write every file instead of hard-linking unchanged ones from dest / the previous release. */
  hardLinks?: boolean;
  /** Per-command timeout in ms. */
  commandTimeoutMs?: number;
  limits: ExtractLimits;
  /** With keys, an unsigned or badly signed manifest is refused before anything is fetched or run. */
  trustKeys?: KeyObject[];
  /** With trust keys, after the signature: throws (a PulldeployError) to refuse a verified manifest. */
  admit?: (manifest: Manifest) => void;
  /**
   * Once the manifest is read and, with trust keys, verified and admitted: before anything is fetched
   * or run (an agent without --role learns its report target and rollout from the manifest's `role:`
   * here, never from an unverified one). Must not throw for Consul being away.
   */
  accepted?: (manifest: Manifest) => Promise<void>;
  /** Told about every hook and rsync process group while it runs. */
  track?: ChildTracker;
  /** How often long sync steps are logged (`PROGRESS_EVERY_MS` in sync/strategies.ts by default). */
  progressEveryMs?: number;
  /** Told each time the deploy enters a phase (for progress reports). */
  onPhase?: (phase: DeployPhase, manifest?: Manifest) => void;
  /**
   * A staged rollout (agent/rollout.ts): `prepared` runs once the release is fetched, verified and
   * extracted, before `pre` and the switch, and may wait for a slot or refuse (phase "rollout");
   * `settled` runs after `validate`, still in the slot (the health gate, phase "health": failing it
   * switches back as a failed `validate` does).
   */
  rollout?: {
    prepared(manifest: Manifest, manifestUrl: string): Promise<void>;
    settled(manifest: Manifest): Promise<void>;
  };
}

/** `bytesFetched`: archive bytes downloaded (every attempt that completed), for the metrics file. */
export type DeployResult =
  | { ok: true; manifest: Manifest; releaseId?: string; bytesFetched: number }
  | {
      ok: false;
      phase: DeployPhase;
      error: string;
      manifest?: Manifest;
      releaseId?: string;
      rolledBackTo?: string;
      bytesFetched: number;
    };

export async function deploy(opts: DeployOptions): Promise<DeployResult> {
  const { log, env, signal } = opts;
  const enter = (phase: DeployPhase, m?: Manifest) => opts.onPhase?.(phase, m);

  // manifest (+ signature): nothing from an unreadable or untrusted manifest may run
  let manifest: Manifest;
  let phase: DeployPhase = "manifest";
  enter(phase);
  try {
    const bytes = await fetchBytes(
      opts.manifestUrl,
      { env, signal, userAgent: USER_AGENT },
      MAX_DOCUMENT_BYTES,
      documentPolicy(opts, "manifest"),
    );
    if (opts.trustKeys && opts.trustKeys.length > 0) {
      phase = "signature";
      enter(phase);
      await checkSignature(opts.manifestUrl, bytes, opts);
      phase = "manifest";
    }
    const parsed = parseManifest(new TextDecoder().decode(bytes), env);
    for (const w of parsed.warnings) log.info(w);
    manifest = parsed.manifest;
    if (opts.trustKeys && opts.trustKeys.length > 0 && opts.admit) {
      phase = "signature";
      opts.admit(manifest);
    }
    phase = "manifest";
    await opts.accepted?.(manifest);
  } catch (err) {
    const error = phaseError(err, phase);
    log.error(`deploy failed in phase ${phase}: ${error.message}`);
    if (err instanceof ManifestError && !err.fatal && err.partial) {
      // The manifest is readable enough to know its failure commands: run them.
      await runFailure(err.partial.failure, { ...baseEnv(opts), ...err.partial.env }, phase, error.message, opts);
    }
    return { ok: false, phase, error: error.message, bytesFetched: 0 };
  }

  const strategy = SYNC_STRATEGIES[manifest.syncStrategy];
  const ctx: SyncContext = {
    manifest,
    rsyncVerbose: opts.rsyncVerbose,
    hardLinks: opts.hardLinks,
    env,
    log,
    signal,
    track: opts.track,
    progressEveryMs: opts.progressEveryMs,
  };
  let hookEnv = commandEnv(opts, manifest);
  const run = (p: DeployPhase, commands: string[], stdin?: string) => {
    phase = p;
    enter(p, manifest);
    return runCommands(commands, {
      phase: p,
      env: hookEnv,
      stdin,
      timeoutMs: opts.commandTimeoutMs,
      signal,
      log,
      track: opts.track,
    });
  };
  let ws: Workspace | undefined;
  let applied = false;
  let bytesFetched = 0;
  try {
    if (manifest.src === undefined) {
      log.info("no src: running commands only");
      await run("pre", manifest.commands.pre);
    } else {
      phase = "fetch";
      enter(phase, manifest);
      ws = strategy.prepare(ctx);
      hookEnv = { ...hookEnv, ...releaseEnv(manifest, ws) };
      let extractError: PulldeployError | undefined;
      let changedLink: ((each: boolean) => string | undefined) | undefined;
      if (ws.present) {
        log.info(`release ${ws.releaseId} is already on disk: switching without a download`);
      } else {
        log.info(`fetch: ${redact(manifest.src)}`);
        const started = performance.now();
        const result = await fetchWithRetry(manifest, ws, opts);
        bytesFetched += result.bytes;
        const secs = (performance.now() - started) / 1000;
        const linked = result.linked > 0 ? `, ${result.linked} unchanged files hard-linked` : "";
        if (result.delta) log.info(`checksum: ${result.delta}`);
        else
          log.info(
            `checksum: ${manifest.checksum!.algorithm} ${manifest.checksum!.hex} ok (${result.bytes} bytes, ` +
              `${result.entries} entries${linked}, ${secs.toFixed(2)}s)`,
          );
        extractError = result.extractError;
        changedLink = result.changedLink;
        ws.archiveHardLinks = result.hardLinks;
        ws.linked = result.linked;
      }
      if (opts.rollout) {
        phase = "rollout";
        enter(phase, manifest);
        await opts.rollout.prepared(manifest, opts.manifestUrl);
      }
      await run("pre", manifest.commands.pre);
      phase = "extract";
      enter(phase, manifest);
      if (extractError) throw extractError;
      // Each linked file is checked only after `pre` commands (the way to change dest on purpose now;
      // ~5 µs a file); otherwise only one seen changing while it was compared.
      const changed = changedLink?.(manifest.commands.pre.length > 0);
      if (changed !== undefined) {
        // Written to in place since it was hard-linked (by `pre`, or the app): the linked inode no
        // longer holds the archive's bytes, so neither does the tree.
        log.info(
          `fetch: ${changed} changed in ${ws.linkFromShown ?? ws.linkFrom} after it was hard-linked into the ` +
            "new tree; fetching again without links",
        );
        phase = "fetch";
        emptyDir(ws.tree);
        const again = await fetchWithRetry(manifest, { ...ws, linkFrom: undefined }, opts);
        bytesFetched += again.bytes;
        ws.archiveHardLinks = again.hardLinks;
        ws.linked = again.linked;
        phase = "extract";
        if (again.extractError) throw again.extractError;
      }
      if (!ws.present) fs.chmodSync(ws.tree, manifest.destMode);
      phase = "sync";
      enter(phase, manifest);
      await strategy.apply(ctx, ws);
      applied = true;
    }
    await run("post", manifest.commands.post);
    if (manifest.commands.validate.length > 0) await run("validate", manifest.commands.validate);
    if (opts.rollout && applied) {
      phase = "health";
      enter(phase, manifest);
      await opts.rollout.settled(manifest);
    }
  } catch (err) {
    const error = phaseError(err, phase);
    const where = isDeployPhase(error.phase) ? error.phase : phase;
    log.error(`deploy failed in phase ${where}: ${error.message}`);
    let rolledBackTo: string | undefined;
    if (applied && (where === "validate" || where === "health") && strategy.revert && ws) {
      rolledBackTo = strategy.revert(ctx, ws);
      log.info(
        rolledBackTo
          ? `rolled back: current -> releases/${rolledBackTo}`
          : "validate failed and there is no previous release to roll back to",
      );
    }
    await runFailure(manifest.commands.failure, hookEnv, where, error.message, opts);
    return {
      ok: false,
      phase: where,
      error: error.message,
      manifest,
      releaseId: ws?.releaseId,
      rolledBackTo,
      bytesFetched,
    };
  } finally {
    // The outcome is decided: a failed cleanup is a warning, never a failed (or a succeeded) deploy.
    const cleanupStarted = performance.now();
    try {
      if (ws) strategy.cleanup(ws);
    } catch (err) {
      log.info(`cleanup: warning: ${messageOf(err)}`);
    }
    if (performance.now() - cleanupStarted >= (opts.progressEveryMs ?? PROGRESS_EVERY_MS))
      log.info(`cleanup: took ${elapsed(cleanupStarted)}`);
  }

  log.info("deploy succeeded");
  try {
    await run("success", manifest.commands.success, log.text());
  } catch (err) {
    log.info(`success command failed (the deploy still succeeded): ${messageOf(err)}`);
  }
  return { ok: true, manifest, releaseId: ws?.releaseId, bytesFetched };
}

async function checkSignature(url: string, bytes: Uint8Array, opts: DeployOptions): Promise<void> {
  // Loaded here, not with the pipeline: it loads node:crypto, which a deploy without trust keys never needs.
  const { SIGNATURE_SUFFIX, verifyBytes } = await import("../signature.ts");
  const sigUrl = `${url}${SIGNATURE_SUFFIX}`;
  let signature: string;
  try {
    signature = await fetchText(
      sigUrl,
      { env: opts.env, signal: opts.signal, userAgent: USER_AGENT },
      4096,
      documentPolicy(opts, "signature"),
    );
  } catch (err) {
    if (!(err instanceof FetchError && err.status === 404)) {
      // Unreachable, slow or oversized: say so, rather than claim the manifest is unsigned.
      throw new PulldeployError(
        `cannot verify the manifest: ${messageOf(err)}; refusing it because trust keys are configured`,
        "signature",
        { cause: err },
      );
    }
    throw new PulldeployError(
      `manifest is not signed (${redact(sigUrl)}: not found); refusing it because trust keys are configured`,
      "signature",
      { cause: err },
    );
  }
  if (!verifyBytes(bytes, signature, opts.trustKeys!)) {
    throw new PulldeployError(
      `bad signature: ${redact(sigUrl)} does not match the manifest under any of the ${opts.trustKeys!.length} ` +
        "trusted keys",
      "signature",
    );
  }
  opts.log.info(`signature: ok (${redact(sigUrl)})`);
}

/** The manifest and its `.sig` are fetched under the same `--timeout` / `--retry` as `src`. */
function documentPolicy(opts: DeployOptions, what: string): DocumentPolicy {
  return {
    timeoutMs: opts.fetch.timeoutMs,
    retry: opts.fetch.retry,
    retryWaitMs: opts.fetch.retryWaitMs,
    onRetry: (err, attempt, of) =>
      opts.log.info(
        `${what}: ${err.message}; retrying in ${opts.fetch.retryWaitMs / 1000}s (attempt ${attempt} of ${of})`,
      ),
  };
}

async function fetchWithRetry(manifest: Manifest, ws: Workspace, opts: DeployOptions): Promise<TreeResult> {
  const { log } = opts;
  for (let attempt = 0; ; attempt++) {
    const signals = [opts.signal, opts.fetch.timeoutMs ? AbortSignal.timeout(opts.fetch.timeoutMs) : undefined].filter(
      (s) => s !== undefined,
    );
    try {
      const signal = signals.length > 0 ? AbortSignal.any(signals) : undefined;
      const full = () =>
        fetchAndExtract({
          url: manifest.src!,
          checksum: manifest.checksum!,
          tree: ws.tree,
          linkFrom: ws.linkFrom,
          linkPeers: ws.linkPeers,
          env: opts.env,
          userAgent: USER_AGENT,
          signal,
          maxBandwidth: opts.fetch.maxBandwidth,
          limits: opts.limits,
          resumes: opts.fetch.retry,
          onResume: (offset, err) => log.info(`fetch: ${err.message}; resuming at byte ${offset} with a Range request`),
        });
      if (!manifest.deltaIndex) return await full();
      // The delta side is loaded only for a manifest that has a content index.
      const [{ fetchTree }, { recordPath }] = await Promise.all([
        import("../delta/fetch.ts"),
        import("../delta/record.ts"),
      ]);
      return await fetchTree(deltaOptions(manifest, ws, opts, signal, recordPath), full);
    } catch (err) {
      const retryable = err instanceof FetchError && err.retryable && !opts.signal?.aborted;
      if (!retryable || attempt >= opts.fetch.retry) {
        if (retryable && opts.fetch.retry > 0)
          throw new FetchError(`${(err as Error).message} (after ${attempt + 1} attempts)`, false, { cause: err });
        throw err;
      }
      log.info(
        `fetch: ${messageOf(err)}; retrying in ${opts.fetch.retryWaitMs / 1000}s (attempt ${attempt + 2} of ` +
          `${opts.fetch.retry + 1})`,
      );
      // Start the next attempt from an empty tree (the same directory: `release` extracts into a pinned one).
      emptyDir(ws.tree);
      await sleep(opts.fetch.retryWaitMs, opts.signal);
    }
  }
}

/**
 * With a content index in the manifest: build the tree from the previous one (the link source, else
 * the previous release or rsync's dest) plus the chunks it lacks; src/delta falls back to `src`.
 */
function deltaOptions(
  manifest: Manifest,
  ws: Workspace,
  opts: DeployOptions,
  signal: AbortSignal | undefined,
  recordPath: (releasesDir: string, id: string) => string,
): DeltaFetchOptions | undefined {
  if (!manifest.deltaIndex) return undefined;
  const previous = ws.previousId
    ? join(manifest.dest!, "releases", ws.previousId)
    : manifest.syncStrategy === "rsync"
      ? manifest.dest
      : undefined;
  // `release`: each release's tree is recorded beside it, so the next delta need not hash what did not change.
  const releases = manifest.syncStrategy === "release" && ws.releaseId ? join(manifest.dest!, "releases") : undefined;
  return {
    indexUrl: manifest.deltaIndex.url,
    indexSha256: manifest.deltaIndex.sha256,
    tree: ws.tree,
    seedFrom: ws.linkFrom ?? previous,
    linkFrom: ws.linkFrom,
    linkPeers: ws.linkPeers,
    env: opts.env,
    userAgent: USER_AGENT,
    signal,
    maxBandwidth: opts.fetch.maxBandwidth,
    limits: opts.limits,
    retries: opts.fetch.retry,
    retryWaitMs: opts.fetch.retryWaitMs,
    log: opts.log,
    // Through the pinned releases/ when the strategy opened one (dest may belong to the app).
    recordFrom: releases && ws.previousId ? recordPath(ws.releasesDir?.path ?? releases, ws.previousId) : undefined,
    recordAs: releases ? recordPath(ws.releasesDir?.path ?? releases, ws.releaseId!) : undefined,
  };
}

/** The failure commands run with the log so far on stdin; their own failure is only logged. */
async function runFailure(
  commands: string[],
  env: Record<string, string>,
  phase: DeployPhase,
  error: string,
  opts: DeployOptions,
) {
  if (commands.length === 0) return;
  opts.onPhase?.("failure");
  try {
    await runCommands(commands, {
      phase: "failure",
      env: { ...env, PULLDEPLOY_FAILED_PHASE: phase, PULLDEPLOY_ERROR: error },
      stdin: opts.log.text(),
      timeoutMs: opts.commandTimeoutMs,
      log: opts.log,
      track: opts.track,
    });
  } catch (err) {
    opts.log.info(`failure command failed: ${messageOf(err)}`);
  }
}

function baseEnv(opts: DeployOptions): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(opts.env)) if (v !== undefined) env[k] = v;
  env.PULLDEPLOY_MANIFEST_URL = redact(opts.manifestUrl);
  if (opts.eventId) env.PULLDEPLOY_EVENT_ID = opts.eventId;
  return env;
}

/** The agent's environment, plus `commands.env`, plus `PULLDEPLOY_*` describing the deploy. */
function commandEnv(opts: DeployOptions, m: Manifest): Record<string, string> {
  const env = { ...baseEnv(opts), ...m.commands.env };
  if (m.src) env.PULLDEPLOY_SRC = redact(m.src);
  if (m.checksum) env.PULLDEPLOY_CHECKSUM = m.checksum.hex;
  if (m.dest) env.PULLDEPLOY_DEST = m.dest;
  return env;
}

function releaseEnv(m: Manifest, ws: Workspace): Record<string, string> {
  if (ws.releaseId === undefined) return {};
  const env: Record<string, string> = {
    PULLDEPLOY_RELEASE_ID: ws.releaseId,
    PULLDEPLOY_RELEASE_DIR: join(m.dest!, "releases", ws.releaseId),
  };
  if (ws.previousId) env.PULLDEPLOY_PREVIOUS_RELEASE = ws.previousId;
  return env;
}

function phaseError(err: unknown, phase: DeployPhase): PulldeployError {
  if (err instanceof PulldeployError) return err;
  return new PulldeployError(messageOf(err), phase, { cause: err });
}
