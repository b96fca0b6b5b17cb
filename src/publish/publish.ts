/**
 * `src/publish/`: the publisher: pack, upload, record, announce; fire. May import manifest/,
 * archive/, store/, consul/, records/ and the shared modules; never agent/ or fleet/.
 *
 * The publisher's side: `publish` ships a directory as a new release, `fire` re-announces an existing
 * one. The order of `publish`, each phase named in its errors:
 *
 *   check     flags, the hooks file (a trial manifest through the agent's parser), the event's size
 *             limit, the Consul settings, the target (missing bucket…): all before a byte is sent
 *   pack      walk the tree, then tar → gzip → hash, streamed into the target as it is produced
 *   name      the release id: the start time and the archive checksum's prefix
 *   upload    the archive under `<to>/<role>/<id>.tar.gz`, then (signature and) the manifest
 *             `<id>.yml`, rendered and parsed again as the agent will: never a manifest without its archive
 *   record    Consul KV: `releases/<id>`, then the role's `latest` (see release.ts)
 *   announce  the event (Consul or Serf) with the manifest URL
 *
 * Once the upload is done nothing is lost: a failure to record or announce says so and prints the
 * `pulldeploy fire` command that finishes the job. `--dry-run` runs check and pack (reading only) and
 * prints what the other phases would do.
 */
import { hostname } from "node:os";
import { Document, isMap, isScalar, parseDocument, type Scalar } from "yaml";
import type { HashAlgorithm } from "../checksum.ts";
import { parseChecksum } from "../checksum.ts";
import { ConsulClient, ConsulError, consulConfig, type ConsulConfig } from "../consul/client.ts";
import { USER_EVENT_SIZE_LIMIT, userEventSize } from "../consul/event-size.ts";
import { ManifestError, messageOf, PulldeployError, UsageError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { redact } from "../log.ts";
import { parseManifest, type SyncStrategyName } from "../manifest/parse.ts";
import { packTree, scanTree, type PackResult, type TreePlan } from "../archive/pack.ts";
import { checkRole, kvKeys, parseReleaseRecord, releaseId, releaseIdOfUrl, renderReleaseRecord, storedNames, type ReleaseRecord } from "../records/release.ts";
import { loadPrivateKey, SIGNATURE_SUFFIX, signBytes } from "../signature.ts";
import { fetchText, openUrl } from "../store/sources/index.ts";
import type { Env } from "../env.ts";
import { openTarget } from "../store/targets/index.ts";
import { formatBytes } from "../units.ts";
import { USER_AGENT } from "../version.ts";

// ------------------------------------------------------------------ options

/** How the release is announced. `none`: recorded in KV only (`--no-event`). */
export interface AnnounceOptions {
  via: "consul" | "serf" | "none";
  /** Event name (default `deploy`). */
  event: string;
  /** Consul filters: node-name regexp, service, tag (tag needs service). */
  node?: string;
  service?: string;
  tag?: string;
  /** `serf event -rpc-addr`. */
  serfRpcAddr?: string;
}

/** What goes into the manifest besides `src` and `checksum`. Flags win over the hooks file. */
export interface ManifestFields {
  dest?: string;
  /** Octal text as typed, e.g. `0755`. */
  destMode?: string;
  syncStrategy?: SyncStrategyName;
  /** `--exclude-on-dest`: replaces the hooks file's `excludes` when given. */
  excludes?: string[];
  /** A stretcher-style YAML file (commands, excludes, …). */
  hooks?: { path: string; text: string };
}

export interface ConsulSettings {
  /** `--consul-addr`, `--consul-token` (the environment fills in the rest). */
  addr?: string;
  token?: string;
}

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
}

export interface PublishResult {
  id: string;
  manifestUrl: string;
  archiveUrl: string;
  record: ReleaseRecord;
}

/**
 * The release is stored but the fleet was not told (KV or event failed). `fireCommand` finishes
 * the job; the message already contains it.
 */
export class NotAnnouncedError extends PulldeployError {
  override name = "NotAnnouncedError";
  constructor(
    message: string,
    readonly fireCommand: string,
    options?: { cause?: unknown },
  ) {
    super(message, "consul", options);
  }
}

// ------------------------------------------------------------------ publish

export async function publish(o: PublishOptions): Promise<PublishResult> {
  const { log } = o;
  const now = o.now ?? (() => new Date());
  const createdAt = now();

  // check: everything that can be known before packing.
  const roleProblem = checkRole(o.role);
  if (roleProblem) throw new UsageError(`--role: ${roleProblem}`);
  const signKey = o.signKey === undefined ? undefined : loadPrivateKey(o.signKey);
  const consul = o.kv || o.announce.via === "consul" ? consulConfig(o.env, o.consul) : undefined;
  checkAnnounce(o.announce);
  const target = await openTarget(o.to, { env: o.env, log, signal: o.signal, retries: o.retries, retryWaitMs: o.retryWaitMs, onSent: o.progress?.sent });
  try {
    // Ids have a fixed length: the manifest URL, and so the event's size, is known now.
    const sampleId = releaseId(createdAt, "0".repeat(64));
    checkEventSize(o.announce, target.urlOf(storedNames.manifest(o.role, sampleId)));
    const hooks = readHooks(o.manifest.hooks);
    renderManifest(o.manifest, hooks, { src: target.urlOf(storedNames.archive(o.role, sampleId)), checksum: "0".repeat(hexLength(o.pack.algorithm)), releaseId: sampleId });
    const plan = scanTree(o.dir, { excludes: o.pack.excludes, includeGit: o.pack.includeGit });
    if (!o.dryRun) await target.preflight();

    // pack + upload the archive (its final name is known once the last byte is hashed).
    log.info(`pack ${o.dir}: ${plan.files} files, ${formatBytes(plan.bytes)}${o.dryRun ? " (dry run: reading only)" : ` → ${target.base}`}`);
    const started = performance.now();
    o.progress?.start(plan.bytes);
    const packed = packTree(plan, { algorithm: o.pack.algorithm, gzipLevel: o.pack.gzipLevel, onBytes: o.progress?.packed });
    const idOf = (r: PackResult) => releaseId(createdAt, r.checksum);
    let archive: PackResult;
    try {
      if (o.dryRun) {
        for await (const _ of packed.stream as unknown as AsyncIterable<Uint8Array>);
      } else {
        await target.putStream(packed.stream, () => storedNames.archive(o.role, idOf(packed.final!)), "application/gzip");
      }
      archive = await packed.result;
    } finally {
      o.progress?.finish();
    }
    const seconds = (performance.now() - started) / 1000;

    // name
    const id = idOf(archive);
    const archiveUrl = target.urlOf(storedNames.archive(o.role, id));
    const manifestUrl = target.urlOf(storedNames.manifest(o.role, id));
    log.info(
      `${o.dryRun ? "packed" : "uploaded"} ${archiveUrl}: ${formatBytes(archive.size)} (${plan.files} files, ${formatBytes(plan.bytes)}) in ${seconds.toFixed(1)}s, ${o.pack.algorithm} ${archive.checksum}`,
    );

    // upload the manifest, after it round-trips through the agent's parser.
    // A signed manifest carries its signed issue time: agents refuse one older than what they run.
    const issuedAt = signKey ? createdAt.toISOString() : undefined;
    const manifestText = renderManifest(o.manifest, hooks, { src: archiveUrl, checksum: archive.checksum, releaseId: id, issuedAt });
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
      await target.putBytes(`${storedNames.manifest(o.role, id)}${SIGNATURE_SUFFIX}`, new TextEncoder().encode(signBytes(manifestBytes, signKey)), "text/plain");
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

// ------------------------------------------------------------------ fire

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
}

/**
 * Re-send an existing release: with a role, point `latest` at it (its recorded `releases/<id>` when
 * there is one, else a record rebuilt from the manifest), then fire the event.
 */
export async function fire(o: FireOptions): Promise<{ record?: ReleaseRecord }> {
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
        if (typeof r === "string") log.info(`kv ${kvKeys.release(o.kvPrefix, o.role!, id)}: ignoring an unreadable record (${r})`);
        else if (r.manifest_url === o.manifestUrl) {
          record = r;
          recorded = true;
        }
      }
    }
    record ??= o.record ?? (await recordFromManifest(o, id));
  }
  await recordAndAnnounce({ ...o, kv: useKv, consul, consulFlags: o.consul, record, recorded, stage: "fire" });
  return { record };
}

/** Rebuild a release record from the manifest alone (a publish that never reached KV). */
async function recordFromManifest(o: FireOptions, idFromUrl: string | undefined): Promise<ReleaseRecord> {
  const src = { env: o.env, signal: o.signal, userAgent: USER_AGENT };
  const text = await fetchText(o.manifestUrl, src);
  const { manifest } = parseManifest(text, placeholderEnv());
  if (!manifest.src || !manifest.checksum) throw new PulldeployError(`fire ${redact(o.manifestUrl)}: the manifest has no src/checksum, so it is not a release to record (drop --role to only fire the event)`, "manifest");
  let size: number | null = null;
  try {
    const opened = await openUrl(manifest.src, src);
    size = opened.size ?? null;
    await opened.body.cancel().catch(() => {});
  } catch (err) {
    throw new PulldeployError(`fire ${redact(o.manifestUrl)}: its archive is not readable: ${messageOf(err)}`, "fetch", { cause: err });
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
    created_at: at ? `${at[1]}-${at[2]}-${at[3]}T${at[4]}:${at[5]}:${at[6]}Z` : now.toISOString().replace(/\.\d{3}Z$/, "Z"),
    publisher: o.publisher,
    message: o.message,
  };
}

// ------------------------------------------------------------------ record + announce

interface AnnounceStep {
  manifestUrl: string;
  record?: ReleaseRecord;
  /** The record is already in the history (`fire` of a recorded release): only `latest` is written. */
  recorded?: boolean;
  kv: boolean;
  kvPrefix: string;
  announce: AnnounceOptions;
  consul: ConsulConfig | undefined;
  /** The flags given, to print a `pulldeploy fire` command that repeats them. */
  consulFlags?: ConsulSettings;
  env: Env;
  log: Logger;
  signal?: AbortSignal;
  stage: "publish" | "fire";
  message?: string;
}

async function recordAndAnnounce(s: AnnounceStep): Promise<void> {
  const { log, record } = s;
  const client = s.consul ? new ConsulClient(s.consul) : undefined;
  let kvDone = false;
  try {
    if (s.kv && record) {
      const releaseKey = kvKeys.release(s.kvPrefix, record.role, record.id);
      const body = renderReleaseRecord(record);
      // Create-only: a release's history entry never changes (an identical one is fine).
      if (!s.recorded && !(await client!.kvPut(releaseKey, body, { cas: 0 }))) {
        const { value } = await client!.kvGetText(releaseKey, { signal: s.signal });
        if (value !== body && s.stage === "publish") throw new ConsulError(`consul kv ${releaseKey}: a different record already exists`);
      }
      await client!.kvPut(kvKeys.latest(s.kvPrefix, record.role), body);
      kvDone = true;
      log.info(`kv ${kvKeys.latest(s.kvPrefix, record.role)} → ${record.id} (history: ${releaseKey})`);
    }
    await announce(s, client);
  } catch (err) {
    if (s.signal?.aborted && !(err instanceof PulldeployError)) throw err;
    const cmd = fireCommand(s, { kvDone });
    const what = s.stage === "publish" ? `release ${record?.id ?? ""} is uploaded (${redact(s.manifestUrl)}) but not announced` : `fire ${redact(s.manifestUrl)}: not announced`;
    const done = kvDone ? " (KV is up to date; the event was not sent)" : "";
    throw new NotAnnouncedError(`${what}${done}: ${messageOf(err)}; finish with: ${cmd}`, cmd, { cause: err });
  }
}

async function announce(s: AnnounceStep, client: ConsulClient | undefined): Promise<void> {
  const a = s.announce;
  if (a.via === "none") {
    s.log.info("event: not fired (--no-event)");
    return;
  }
  if (a.via === "consul") {
    const ev = await client!.eventFire(a.event, s.manifestUrl, { node: a.node, service: a.service, tag: a.tag });
    s.log.info(`fired consul event ${a.event} ${ev.id}${describeFilters(a)}: ${redact(s.manifestUrl)}`);
    return;
  }
  await serfEvent(a, s.manifestUrl, s.env, s.signal);
  s.log.info(`fired serf user event ${a.event}${a.serfRpcAddr ? ` via ${a.serfRpcAddr}` : ""}: ${redact(s.manifestUrl)}`);
}

/** `serf event [-rpc-addr=…] <name> <payload>` through the local agent; its own RPC auth comes from SERF_RPC_AUTH. */
async function serfEvent(a: AnnounceOptions, payload: string, env: Env, signal?: AbortSignal): Promise<void> {
  const args = ["serf", "event", ...(a.serfRpcAddr ? [`-rpc-addr=${a.serfRpcAddr}`] : []), a.event, payload];
  let proc: ReturnType<typeof Bun.spawn>;
  try {
    proc = Bun.spawn(args, { env: env as Record<string, string>, stdin: "ignore", stdout: "pipe", stderr: "pipe", signal });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new PulldeployError(code === "ENOENT" ? "serf event: the serf command was not found in PATH (install serf, or announce through Consul)" : `serf event: ${messageOf(err)}`, "consul", { cause: err });
  }
  const [out, errText, code] = await Promise.all([new Response(proc.stdout as ReadableStream).text(), new Response(proc.stderr as ReadableStream).text(), proc.exited]);
  if (code !== 0) {
    const detail = (errText.trim() || out.trim()).split("\n").filter((l) => l.trim() !== "").join("; ");
    throw new PulldeployError(`serf event ${a.event} failed with exit code ${code}${detail ? `: ${detail}` : ""}`, "consul");
  }
}

// ------------------------------------------------------------------ checks

const MAX_EVENT_NAME = 256;

function checkAnnounce(a: AnnounceOptions): void {
  if (a.via === "none") return;
  if (a.event === "" || a.event.length > MAX_EVENT_NAME || /[\s/]/.test(a.event)) throw new UsageError(`--event: "${a.event}" is not a usable event name (no spaces or slashes)`);
  if (a.via === "serf" && (a.node || a.service || a.tag)) throw new UsageError("--node, --service and --tag are Consul event filters: Serf user events have none (drop them, or fire through Consul)");
  if (a.tag && !a.service) throw new UsageError("--tag needs --service (Consul filters tags of a service)");
}

/** Serf's encoding of a user event (type byte + msgpack map with LTime, Name, Payload, CC), old msgpack spec. */
export function serfEventSize(name: string, payload: string, ltime = 0): number {
  const raw = (n: number) => (n < 32 ? 1 : n < 65536 ? 3 : 5) + n;
  const uint = (n: number) => (n < 128 ? 1 : n < 256 ? 2 : n < 65536 ? 3 : n < 2 ** 32 ? 5 : 9);
  return 1 + 1 + raw(5) + uint(ltime) + raw(4) + raw(Buffer.byteLength(name)) + raw(7) + raw(Buffer.byteLength(payload)) + raw(2) + 1;
}

/** The largest payload (bytes) that fits an event with this name and filters, and the payload's size. */
export function eventPayloadLimit(a: AnnounceOptions, payload: string): { max: number; size: number; fits: boolean } {
  const size = (n: number) => {
    const p = "x".repeat(n);
    return a.via === "serf" ? serfEventSize(a.event, p) : userEventSize(a.event, p, { node: a.node, service: a.service, tag: a.tag });
  };
  let max = 0;
  while (size(max + 1) <= USER_EVENT_SIZE_LIMIT) max++;
  const bytes = Buffer.byteLength(payload);
  return { max, size: bytes, fits: bytes <= max };
}

/**
 * A manifest URL must fit the event: 512 bytes for name and payload after encoding, so 404 bytes of
 * payload for a Consul event named `deploy` (less with filters), 476 for Serf. (A cluster whose event
 * clock passed 127 has 1–4 bytes less; the agent then refuses with its own clear error.)
 */
function checkEventSize(a: AnnounceOptions, manifestUrl: string): void {
  if (a.via === "none") return;
  const { max, size, fits } = eventPayloadLimit(a, manifestUrl);
  if (fits) return;
  const kind = a.via === "serf" ? "a Serf user event" : `a Consul event${describeFilters(a)}`;
  throw new PulldeployError(
    `event payload too long: the manifest URL ${redact(manifestUrl)} is ${size} bytes, ${size - max} more than the ${max} that fit in ${kind} named "${a.event}" (512 bytes after encoding); use a shorter --to, --role or --event`,
    "publish",
  );
}

function describeFilters(a: AnnounceOptions): string {
  const f = [a.node && `node=${a.node}`, a.service && `service=${a.service}`, a.tag && `tag=${a.tag}`].filter(Boolean);
  return f.length > 0 ? ` (${f.join(", ")})` : "";
}

function hexLength(algorithm: HashAlgorithm): number {
  return { md5: 32, sha1: 40, sha256: 64, sha512: 128 }[algorithm];
}

// ------------------------------------------------------------------ the manifest

/** The hooks file's fields, read once, and what is already wrong with them. */
export interface Hooks {
  fields: Record<string, unknown>;
  problems: string[];
  /** How problems name the source: `--manifest hooks.yml`. */
  where: string;
}

/** Parse `--manifest FILE` (stretcher-style YAML 1.1). Syntax errors stop here; other problems wait to be listed with the rest. */
/** Manifest fields publish writes itself: a hooks file that sets them is an error, not a silent override. */
const SET_BY_PUBLISH = { src: "the uploaded archive's URL", checksum: "the uploaded archive's", release_id: "the release id that KV and the agents' reports use" };

export function readHooks(hooks: ManifestFields["hooks"]): Hooks {
  if (!hooks) return { fields: {}, problems: [], where: "manifest" };
  const where = `--manifest ${hooks.path}`;
  const doc = parseDocument(hooks.text, { version: "1.1", merge: true, uniqueKeys: false, prettyErrors: false });
  if (doc.errors.length > 0) throw new ManifestError(doc.errors.map((e) => `${where}: YAML syntax: ${e.message.split("\n")[0]!.trim()}`), true);
  const root = doc.contents;
  const empty = root === null || (isScalar(root) && root.value === null);
  if (!empty && !isMap(root)) throw new ManifestError([`${where}: expected a mapping of fields (commands, excludes, …)`], true);
  const fields = empty ? {} : (doc.toJS({ maxAliasCount: 1000 }) as Record<string, unknown>);
  const problems = Object.entries(SET_BY_PUBLISH)
    .filter(([k]) => k in fields)
    .map(([k, what]) => `${k}: set by publish (${what}); remove it from the file`);
  return { fields, problems, where };
}

/**
 * The manifest's YAML: `src`, `checksum`, `dest`, `dest_mode`, `sync_strategy`, `excludes` from the
 * flags over the hooks file's fields, then parsed again with the agent's `parseManifest`. Throws one
 * `ManifestError` with every problem, including keys the agent would ignore (a typo such as
 * `comands:`). Templates (`{{ env "A" }}`) are kept for each agent to render.
 */
export function renderManifest(fields: ManifestFields, hooks: Hooks, release: { src: string; checksum: string; releaseId: string; issuedAt?: string }): string {
  const base = hooks.fields;
  const problems = [...hooks.problems];
  const strategy = fields.syncStrategy ?? base.sync_strategy;
  const merged: Record<string, unknown> = {
    src: release.src,
    checksum: release.checksum,
    dest: fields.dest ?? base.dest,
    dest_mode: fields.destMode !== undefined ? parseInt(fields.destMode, 8) : base.dest_mode,
    sync_strategy: strategy,
    // The `release` strategy names each release's directory: by its id.
    release_id: strategy === "release" ? release.releaseId : undefined,
    excludes: fields.excludes !== undefined && fields.excludes.length > 0 ? fields.excludes : base.excludes,
    issued_at: release.issuedAt,
  };
  for (const [k, v] of Object.entries(base)) if (!(k in merged)) merged[k] = v;
  for (const k of Object.keys(merged)) if (merged[k] === undefined) delete merged[k];
  const noDest = merged.dest === undefined || merged.dest === null;
  if (noDest) problems.push(`dest: required: pass --dest /abs/path${hooks.where === "manifest" ? "" : " or set dest in the file"}`);

  const doc = new Document(merged, { version: "1.1" });
  if (typeof merged.dest_mode === "number") (doc.get("dest_mode", true) as Scalar).format = "OCT";
  const text = doc.toString({ lineWidth: 0 });

  {
    try {
      const { manifest, warnings } = parseManifest(text, placeholderEnv());
      problems.push(...warnings.map((w) => w.replace(/^manifest: /, "")));
      if (manifest.src !== release.src) problems.push(`src: reads back as "${manifest.src}", not "${release.src}"`);
      const want = parseChecksum(release.checksum);
      if (typeof want === "string" || manifest.checksum?.hex !== want.hex) problems.push("checksum: does not read back as written");
    } catch (err) {
      if (!(err instanceof ManifestError)) throw err;
      problems.push(...unknownKeys(merged), ...err.problems);
      // A malformed `commands` stops the agent's parser early: ask again without it for the rest.
      if (err.fatal && "commands" in merged) {
        const { commands: _, ...rest } = merged;
        try {
          parseManifest(new Document(rest, { version: "1.1" }).toString({ lineWidth: 0 }), placeholderEnv());
        } catch (again) {
          if (again instanceof ManifestError) problems.push(...again.problems.filter((p) => !problems.includes(p)));
        }
      }
    }
  }
  const listed = noDest ? problems.filter((p) => !p.startsWith("dest: required when")) : problems;
  if (listed.length > 0) throw new ManifestError(listed.map((p) => `${hooks.where}: ${p}`), true);
  return text;
}

/**
 * The agent's warning about keys it would ignore, even when other problems stop its parser: asked of
 * a skeleton manifest holding every key of `fields` with no value.
 */
function unknownKeys(fields: Record<string, unknown>): string[] {
  const skeleton: Record<string, unknown> = { src: "file:///x", checksum: "0".repeat(64), dest: "/x" };
  for (const k of Object.keys(fields)) if (!(k in skeleton)) skeleton[k] = null;
  try {
    return parseManifest(new Document(skeleton, { version: "1.1" }).toString()).warnings.map((w) => w.replace(/^manifest: /, ""));
  } catch {
    return [];
  }
}

/**
 * Templates are rendered by each agent with its own environment. To check the structure here, every
 * variable is taken as set, to `/NAME` (so `dest: '{{ must_env "APP_DEST" }}'` still reads as absolute).
 */
export function placeholderEnv(): Env {
  return new Proxy({} as Env, { get: (_t, name) => (typeof name === "string" ? `/${name}` : undefined) });
}

// ------------------------------------------------------------------ output

/** `pulldeploy fire …` that repeats the announce flags of this run (never the token). */
export function fireCommand(s: Pick<AnnounceStep, "manifestUrl" | "record" | "kv" | "kvPrefix" | "announce" | "consulFlags" | "message">, opts: { kvDone: boolean }): string {
  const q = shellQuote;
  const a = s.announce;
  const parts = ["pulldeploy", "fire", q(s.manifestUrl)];
  if (s.kv && s.record && !opts.kvDone) {
    parts.push("--role", q(s.record.role));
    if (s.kvPrefix !== "pulldeploy") parts.push("--kv-prefix", q(s.kvPrefix));
    if (s.message) parts.push("--message", q(s.message));
  }
  if (a.via === "none") parts.push("--no-event");
  else {
    if (a.event !== "deploy") parts.push("--event", q(a.event));
    if (a.via === "serf") {
      parts.push("--via", "serf");
      if (a.serfRpcAddr) parts.push("--serf-rpc-addr", q(a.serfRpcAddr));
    }
    if (a.node) parts.push("--node", q(a.node));
    if (a.service) parts.push("--service", q(a.service));
    if (a.tag) parts.push("--tag", q(a.tag));
  }
  if (s.consulFlags?.addr && (a.via === "consul" || (s.kv && s.record && !opts.kvDone))) parts.push("--consul-addr", q(s.consulFlags.addr));
  return parts.join(" ");
}

function shellQuote(s: string): string {
  return /^[A-Za-z0-9_./:@%+=,-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

function dryRunReport(o: PublishOptions, plan: TreePlan, archive: PackResult, archiveUrl: string, manifestUrl: string, manifestText: string, record: ReleaseRecord, consul: ConsulConfig | undefined): string {
  const lines = [
    "dry run: nothing was uploaded, written or fired",
    `pack      ${o.dir}: ${plan.files} files, ${plan.entries.length} entries, ${formatBytes(plan.bytes)} → ${formatBytes(archive.size)} tar.gz, ${archive.algorithm} ${archive.checksum}`,
    `upload    ${redact(archiveUrl)}`,
    ...(o.signKey ? [`upload    ${redact(manifestUrl)}${SIGNATURE_SUFFIX}`] : []),
    `upload    ${redact(manifestUrl)}:`,
    ...manifestText.trimEnd().split("\n").map((l) => `            ${l}`),
  ];
  const at = consul ? ` (consul ${consul.address})` : "";
  if (o.kv) {
    const body = renderReleaseRecord(record);
    lines.push(`kv put    ${kvKeys.release(o.kvPrefix, o.role, record.id)}${at} = ${body}`);
    lines.push(`kv put    ${kvKeys.latest(o.kvPrefix, o.role)}${at} = ${body}`);
  } else lines.push("kv        nothing (--no-kv)");
  const a = o.announce;
  if (a.via === "none") lines.push("event     nothing (--no-event)");
  else if (a.via === "consul") lines.push(`fire      consul event ${a.event}${describeFilters(a)}${at}: ${redact(manifestUrl)}`);
  else lines.push(`fire      serf event ${a.event}${a.serfRpcAddr ? ` (rpc ${a.serfRpcAddr})` : ""}: ${redact(manifestUrl)}`);
  return `${lines.join("\n")}\n`;
}


/** `user@host`, the default publisher. */
export function defaultPublisher(env: Env): string {
  return `${env.USER || env.LOGNAME || "unknown"}@${hostname()}`;
}

// ------------------------------------------------------------------ progress

export interface Progress {
  start(totalBytes: number): void;
  /** Uncompressed bytes packed. */
  packed(n: number): void;
  /** Compressed bytes stored. */
  sent(n: number): void;
  finish(): void;
}

/**
 * A bar redrawn in place on a terminal (bytes, rate, ETA), or a plain log line every `intervalMs`
 * otherwise. The rate and ETA follow the packed (uncompressed) bytes, which the upload keeps pace with.
 */
export function createProgress(opts: { tty: boolean; write: (s: string) => void; log: Logger; intervalMs?: number; now?: () => number }): Progress {
  const now = opts.now ?? (() => performance.now());
  const interval = opts.intervalMs ?? (opts.tty ? 100 : 5000);
  let total = 0;
  let packed = 0;
  let sent = 0;
  let t0 = 0;
  let last = 0;
  let drawn = false;
  const render = () => {
    const elapsed = (now() - t0) / 1000;
    const rate = elapsed > 0 ? packed / elapsed : 0;
    const pct = total > 0 ? Math.min(100, (packed / total) * 100) : 100;
    const eta = rate > 0 ? Math.max(0, (total - packed) / rate) : undefined;
    const etaText = eta === undefined ? "--" : `${Math.ceil(eta)}s`;
    if (opts.tty) {
      const width = 24;
      const filled = Math.round((pct / 100) * width);
      opts.write(`\r\x1b[K[${"#".repeat(filled)}${"-".repeat(width - filled)}] ${pct.toFixed(0).padStart(3)}% ${formatBytes(packed)}/${formatBytes(total)} ${formatBytes(rate)}/s ETA ${etaText} · ${formatBytes(sent)} sent`);
      drawn = true;
    } else {
      opts.log.info(`progress: ${pct.toFixed(0)}% (${formatBytes(packed)} of ${formatBytes(total)} packed, ${formatBytes(sent)} sent, ${formatBytes(rate)}/s, ETA ${etaText})`);
    }
  };
  const tick = () => {
    const t = now();
    if (t - last >= interval) {
      last = t;
      render();
    }
  };
  return {
    start(n) {
      total = n;
      t0 = now();
      last = t0;
    },
    packed(n) {
      packed += n;
      tick();
    },
    sent(n) {
      sent += n;
      tick();
    },
    finish() {
      if (drawn) opts.write("\r\x1b[K");
      drawn = false;
    },
  };
}
