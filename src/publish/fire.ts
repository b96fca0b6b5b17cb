/**
 * `fire`: announce a release that is already stored (re-deploy, roll back by hand), optionally making it the role's
 * latest.
 */
import { ConsulClient, consulConfig } from "../consul/client.ts";
import { messageOf, PulldeployError, UsageError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { redact } from "../log.ts";
import { parseManifest } from "../manifest/parse.ts";
import {
  checkRole,
  kvKeys,
  parseReleaseRecord,
  releaseId,
  releaseIdOfUrl,
  type ReleaseRecord,
} from "../records/release.ts";
import { fetchText, openUrl } from "../store/sources/index.ts";
import type { Env } from "../env.ts";
import { USER_AGENT } from "../version.ts";
import type { AnnounceOptions, ConsulSettings } from "./announce.ts";
import { recordAndAnnounce, checkAnnounce, checkEventSize } from "./announce.ts";
import { placeholderEnv } from "../manifest/render.ts";
import { resignManifest } from "./rollback.ts";

export interface FireOptions {
  manifestUrl: string;
  /** Also make this release the role's `latest` in KV. */
  role?: string;
  kv: boolean;
  kvPrefix: string;
  announce: AnnounceOptions;
  consul: ConsulSettings;
  publisher: string;
  message: string;
  env: Env;
  log: Logger;
  signal?: AbortSignal;
  now?: () => Date;
  /** The record to write when KV does not hold one for this URL (a re-signed rollback: the original's, re-pointed). */
  record?: ReleaseRecord;
  /**
   * Re-sign the manifest with this private key and a new issue time first, and fire that (agents with
   * `--trust-key` refuse a manifest older than the one they run).
   */
  signKey?: string;
  /** Before the KV writes and the event (rollouts: publish/rollout.ts writes its record here). */
  beforeRecord?: (consul: ConsulClient, record: ReleaseRecord) => Promise<void>;
  /** The rollout flags as typed, for the `pulldeploy fire` hint of a failed announce (`AnnounceStep`). */
  rolloutFlags?: string[];
}

/**
 * Re-send an existing release: with a role, point `latest` at it (its recorded `releases/<id>` when
 * there is one, else a record rebuilt from the manifest), then fire the event. Returns the manifest
 * URL fired (the re-signed one with `signKey`).
 */
export async function fire(opts: FireOptions): Promise<{ record?: ReleaseRecord; manifestUrl: string }> {
  const manifestUrl =
    opts.signKey === undefined
      ? opts.manifestUrl
      : await resignManifest({
          manifestUrl: opts.manifestUrl,
          signKey: opts.signKey,
          env: opts.env,
          log: opts.log,
          signal: opts.signal,
        });
  const o = { ...opts, manifestUrl };
  const { log } = o;
  if (o.role !== undefined) {
    const p = checkRole(o.role);
    if (p) throw new UsageError(`--role: ${p}`);
  }
  checkAnnounce(o.announce);
  checkEventSize(o.announce, o.manifestUrl);
  const useKv = o.kv && o.role !== undefined;
  const consul = useKv || o.announce.via === "consul" ? consulConfig(o.env, o.consul) : undefined;

  let record: ReleaseRecord | undefined;
  let recorded = false;
  if (useKv) {
    const client = new ConsulClient(consul!);
    const id = releaseIdOfUrl(o.manifestUrl);
    if (id !== undefined) {
      const { value } = await client.kvGetText(kvKeys.release(o.kvPrefix, o.role!, id), { signal: o.signal });
      if (value !== null) {
        const r = parseReleaseRecord(value);
        if (typeof r === "string")
          log.info(`kv ${kvKeys.release(o.kvPrefix, o.role!, id)}: ignoring an unreadable record (${r})`);
        else if (r.manifest_url === o.manifestUrl) {
          record = r;
          recorded = true;
        }
      }
    }
    record ??= o.record ?? (await recordFromManifest(o, id));
  }
  log.set({ role: o.role, release_id: record?.id ?? releaseIdOfUrl(o.manifestUrl) });
  await recordAndAnnounce({ ...o, kv: useKv, consul, consulFlags: o.consul, record, recorded, stage: "fire" });
  return { record, manifestUrl };
}

/** Rebuild a release record from the manifest alone (a publish that never reached KV). */
async function recordFromManifest(o: FireOptions, idFromUrl: string | undefined): Promise<ReleaseRecord> {
  const src = { env: o.env, signal: o.signal, userAgent: USER_AGENT };
  const text = await fetchText(o.manifestUrl, src);
  const { manifest } = parseManifest(text, placeholderEnv());
  if (!manifest.src || !manifest.checksum)
    throw new PulldeployError(
      `fire ${redact(o.manifestUrl)}: the manifest has no src/checksum, so it is not a release to record (drop ` +
        "--role to only fire the event)",
      "manifest",
    );
  let size: number | null = null;
  try {
    const opened = await openUrl(manifest.src, src);
    size = opened.size ?? null;
    await opened.body.cancel().catch(() => {});
  } catch (err) {
    throw new PulldeployError(
      `fire ${redact(o.manifestUrl)}: its archive is not readable: ${messageOf(err)}`,
      "fetch",
      { cause: err },
    );
  }
  const now = (o.now ?? (() => new Date()))();
  const id = idFromUrl ?? releaseId(now, manifest.checksum.hex);
  const at = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z/.exec(id);
  return {
    id,
    role: o.role!,
    manifest_url: o.manifestUrl,
    archive_url: manifest.src,
    algorithm: manifest.checksum.algorithm,
    checksum: manifest.checksum.hex,
    size,
    files: null,
    created_at: at
      ? `${at[1]}-${at[2]}-${at[3]}T${at[4]}:${at[5]}:${at[6]}Z`
      : now.toISOString().replace(/\.\d{3}Z$/, "Z"),
    publisher: o.publisher,
    message: o.message,
  };
}
