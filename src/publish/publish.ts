/**
 * `src/publish/`: the publisher: pack, upload, record, announce; fire. May import manifest/,
 * archive/, store/, consul/, records/ and the shared modules; never agent/ or fleet/.
 *
 * `publish` ships a directory as a new release (this file); `fire.ts` re-announces an existing one;
 * `announce.ts` records and announces both; `rollback.ts` is `rollback --role`; `progress.ts` the bar.
 * The manifest publish writes is rendered by `manifest/render.ts`. The order of `publish`, each phase
 * named in its errors:
 *
 *   check     flags, the hooks file (a trial manifest through the agent's parser), the event's size
 *             limit, the Consul settings, the target (missing bucket…): all before a byte is sent
 *   pack      walk the tree, then tar → gzip → hash, streamed into the target as it is produced
 *   name      the release id: the start time and the archive checksum's prefix
 *   upload    the archive under `<to>/<role>/<id>.tar.gz`, then (signature and) the manifest
 *             `<id>.yml`, rendered and parsed again as the agent will: never a manifest without its archive
 *   record    Consul KV: `releases/<id>`, then the role's `latest` (see records/release.ts)
 *   announce  the event (Consul or Serf) with the manifest URL
 *
 * Once the upload is done nothing is lost: a failure to record or announce says so and prints the
 * `pulldeploy fire` command that finishes the job. `--dry-run` runs check and pack (reading only) and
 * prints what the other phases would do.
 */
import { hostname } from "node:os";
import type { HashAlgorithm } from "../checksum.ts";
import { consulConfig, type ConsulClient, type ConsulConfig } from "../consul/client.ts";
import { messageOf, UsageError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { redact } from "../log.ts";
import { packTree, scanTree, type PackResult, type TreePlan } from "../archive/pack.ts";
import {
  checkRole,
  kvKeys,
  releaseId,
  renderReleaseRecord,
  storedNames,
  type ReleaseRecord,
} from "../records/release.ts";
import { loadPrivateKey, SIGNATURE_SUFFIX, signBytes } from "../signature.ts";
import type { Env } from "../env.ts";
import type { Progress } from "./progress.ts";
import { openTarget } from "../store/targets/index.ts";
import { type DeltaSession, startDelta } from "../delta/index.ts";
import { formatBytes } from "../units.ts";
import { USER_AGENT } from "../version.ts";
import type { AnnounceOptions, ConsulSettings } from "./announce.ts";
import { recordAndAnnounce, checkAnnounce, checkEventSize, describeFilters } from "./announce.ts";
import { type ManifestFields, readHooks, renderManifest } from "../manifest/render.ts";

export interface PublishOptions {
  dir: string;
  to: string;
  role: string;
  manifest: ManifestFields;
  pack: { excludes: string[]; includeGit: boolean; gzipLevel: number; algorithm: HashAlgorithm };
  kvPrefix: string;
  /** false: skip the KV phase (`--no-kv`, for fleets without Consul). */
  kv: boolean;
  announce: AnnounceOptions;
  consul: ConsulSettings;
  publisher: string;
  message: string;
  /** false: no content index and chunks for delta transfers (`--no-delta`). */
  delta?: boolean;
  /** Ed25519 private key file: upload `<id>.yml.sig` before the manifest. */
  signKey?: string;
  dryRun: boolean;
  retries: number;
  retryWaitMs: number;
  env: Env;
  log: Logger;
  signal?: AbortSignal;
  progress?: Progress;
  /** stdout, for `--dry-run`'s report. */
  print: (text: string) => void;
  now?: () => Date;
  /** Before the KV writes and the event (rollouts: publish/rollout.ts writes its record here). */
  beforeRecord?: (consul: ConsulClient, record: ReleaseRecord) => Promise<void>;
  /** The rollout flags as typed, for the `pulldeploy fire` hint of a failed announce (`AnnounceStep`). */
  rolloutFlags?: string[];
}

export interface PublishResult {
  id: string;
  manifestUrl: string;
  archiveUrl: string;
  record: ReleaseRecord;
}

// ------------------------------------------------------------------ publish

export async function publish(o: PublishOptions): Promise<PublishResult> {
  const { log } = o;
  const now = o.now ?? (() => new Date());
  const createdAt = now();

  // check: everything that can be known before packing.
  const roleProblem = checkRole(o.role);
  if (roleProblem) throw new UsageError(`--role: ${roleProblem}`);
  log.set({ role: o.role });
  const signKey = o.signKey === undefined ? undefined : loadPrivateKey(o.signKey);
  const consul = o.kv || o.announce.via === "consul" ? consulConfig(o.env, o.consul) : undefined;
  checkAnnounce(o.announce);
  const target = await openTarget(o.to, {
    env: o.env,
    log,
    signal: o.signal,
    retries: o.retries,
    retryWaitMs: o.retryWaitMs,
    onSent: o.progress?.sent,
  });
  try {
    // Ids have a fixed length: the manifest URL, and so the event's size, is known now.
    const sampleId = releaseId(createdAt, "0".repeat(64));
    checkEventSize(o.announce, target.urlOf(storedNames.manifest(o.role, sampleId)));
    const hooks = readHooks(o.manifest.hooks);
    renderManifest(o.manifest, hooks, {
      src: target.urlOf(storedNames.archive(o.role, sampleId)),
      checksum: "0".repeat(hexLength(o.pack.algorithm)),
      releaseId: sampleId,
    });
    const plan = scanTree(o.dir, { excludes: o.pack.excludes, includeGit: o.pack.includeGit });
    Bun.gc(true); // the scan's garbage goes before packing, not beside it
    if (!o.dryRun) await target.preflight();

    // delta: what the store holds, then a tap on packing that cuts the same reads into chunks.
    let delta: DeltaSession | undefined;
    if (!o.dryRun && o.delta !== false) {
      try {
        delta = await startDelta({
          plan,
          target,
          role: o.role,
          env: o.env,
          log,
          signal: o.signal,
          userAgent: USER_AGENT,
        });
      } catch (err) {
        if (o.signal?.aborted) throw err;
        log.info(`delta: not stored (${messageOf(err)}); agents will fetch the full archive`);
      }
    }

    // pack + upload the archive (its final name is known once the last byte is hashed), and the new chunks.
    log.info(
      `pack ${o.dir}: ${plan.files} files, ` +
        `${formatBytes(plan.bytes)}${o.dryRun ? " (dry run: reading only)" : ` → ${target.base}`}`,
    );
    const started = performance.now();
    o.progress?.start(plan.bytes);
    const packed = packTree(plan, {
      algorithm: o.pack.algorithm,
      gzipLevel: o.pack.gzipLevel,
      onBytes: o.progress?.packed,
      tap: delta?.tap,
      freeRead: true,
    });
    const idOf = (r: PackResult) => releaseId(createdAt, r.checksum);
    let archive: PackResult;
    try {
      if (o.dryRun) {
        for await (const _ of packed.stream as unknown as AsyncIterable<Uint8Array>);
      } else {
        await target.putStream(
          packed.stream,
          () => storedNames.archive(o.role, idOf(packed.final!)),
          "application/gzip",
        );
      }
      archive = await packed.result;
    } catch (err) {
      await delta?.abort(err);
      throw err;
    } finally {
      o.progress?.finish();
    }
    const seconds = (performance.now() - started) / 1000;

    // name
    const id = idOf(archive);
    log.set({ release_id: id });
    const archiveUrl = target.urlOf(storedNames.archive(o.role, id));
    const manifestUrl = target.urlOf(storedNames.manifest(o.role, id));
    log.info(
      `${o.dryRun ? "packed" : "uploaded"} ${archiveUrl}: ${formatBytes(archive.size)} (${plan.files} files, ` +
        `${formatBytes(plan.bytes)}) in ${seconds.toFixed(1)}s, ${o.pack.algorithm} ${archive.checksum}`,
    );

    // delta: the pack's end and the content index; without it agents fetch the archive.
    let deltaIndex: { url: string; sha256: string } | undefined;
    if (delta) {
      try {
        const d = await delta.finish(id, archive.size);
        deltaIndex = { url: d.indexUrl, sha256: d.sha256 };
        log.info(
          `delta: uploaded ${d.newChunks} new of ${d.chunks} chunks (${formatBytes(d.packBytes)}) and the ` +
            `index ${d.indexUrl} (${formatBytes(d.indexBytes)})`,
        );
      } catch (err) {
        if (o.signal?.aborted) throw err;
        log.info(`delta: not stored (${messageOf(err)}); agents will fetch the full archive`);
      }
    }

    // upload the manifest, after it round-trips through the agent's parser.
    // A signed manifest carries its signed issue time: agents refuse one older than what they run.
    const issuedAt = signKey ? createdAt.toISOString() : undefined;
    const manifestText = renderManifest(o.manifest, hooks, {
      src: archiveUrl,
      checksum: archive.checksum,
      releaseId: id,
      issuedAt,
      deltaIndex,
    });
    const manifestBytes = new TextEncoder().encode(manifestText);
    const record: ReleaseRecord = {
      id,
      role: o.role,
      manifest_url: manifestUrl,
      archive_url: archiveUrl,
      algorithm: archive.algorithm,
      checksum: archive.checksum,
      size: archive.size,
      files: plan.files,
      created_at: createdAt.toISOString().replace(/\.\d{3}Z$/, "Z"),
      publisher: o.publisher,
      message: o.message,
    };

    if (o.dryRun) {
      o.print(dryRunReport(o, plan, archive, archiveUrl, manifestUrl, manifestText, record, consul));
      return { id, manifestUrl, archiveUrl, record };
    }

    if (signKey) {
      await target.putBytes(
        `${storedNames.manifest(o.role, id)}${SIGNATURE_SUFFIX}`,
        new TextEncoder().encode(signBytes(manifestBytes, signKey)),
        "text/plain",
      );
    }
    await target.putBytes(storedNames.manifest(o.role, id), manifestBytes, "application/x-yaml");
    log.info(`uploaded ${manifestUrl}`);

    // record + announce: the release is safe now; a failure here only needs `pulldeploy fire`.
    await recordAndAnnounce({ ...o, consul, consulFlags: o.consul, record, manifestUrl, stage: "publish" });
    return { id, manifestUrl, archiveUrl, record };
  } finally {
    target.close();
  }
}

export function hexLength(algorithm: HashAlgorithm): number {
  return { md5: 32, sha1: 40, sha256: 64, sha512: 128 }[algorithm];
}

// ------------------------------------------------------------------ output

function dryRunReport(
  o: PublishOptions,
  plan: TreePlan,
  archive: PackResult,
  archiveUrl: string,
  manifestUrl: string,
  manifestText: string,
  record: ReleaseRecord,
  consul: ConsulConfig | undefined,
): string {
  const lines = [
    "dry run: nothing was uploaded, written or fired",
    `pack      ${o.dir}: ${plan.files} files, ${plan.entries.length} entries, ${formatBytes(plan.bytes)} → ` +
      `${formatBytes(archive.size)} tar.gz, ${archive.algorithm} ${archive.checksum}`,
    `upload    ${redact(archiveUrl)}`,
    ...(o.signKey ? [`upload    ${redact(manifestUrl)}${SIGNATURE_SUFFIX}`] : []),
    `upload    ${redact(manifestUrl)}:`,
    ...manifestText
      .trimEnd()
      .split("\n")
      .map((l) => `            ${l}`),
  ];
  const at = consul ? ` (consul ${consul.address})` : "";
  if (o.kv) {
    const body = renderReleaseRecord(record);
    lines.push(`kv put    ${kvKeys.release(o.kvPrefix, o.role, record.id)}${at} = ${body}`);
    lines.push(`kv put    ${kvKeys.latest(o.kvPrefix, o.role)}${at} = ${body}`);
  } else lines.push("kv        nothing (--no-kv)");
  const a = o.announce;
  if (a.via === "none") lines.push("event     nothing (--no-event)");
  else if (a.via === "consul")
    lines.push(`fire      consul event ${a.event}${describeFilters(a)}${at}: ${redact(manifestUrl)}`);
  else
    lines.push(
      `fire      serf event ${a.event}${a.serfRpcAddr ? ` (rpc ${a.serfRpcAddr})` : ""}: ${redact(manifestUrl)}`,
    );
  return `${lines.join("\n")}\n`;
}

/** `user@host`, the default publisher. */
export function defaultPublisher(env: Env): string {
  return `${env.USER || env.LOGNAME || "unknown"}@${hostname()}`;
}
