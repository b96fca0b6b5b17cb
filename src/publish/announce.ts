/**
 * Record and announce: the release into Consul KV (history, then `latest`), then the event (Consul or
 * Serf) carrying the manifest URL; the checks that run before anything is uploaded (event name,
 * filters, the payload's size); and, when either step fails after the upload, the exact
 * `pulldeploy fire …` that finishes the job.
 */
import { ConsulClient, ConsulError, type ConsulConfig } from "../consul/client.ts";
import { USER_EVENT_SIZE_LIMIT, userEventSize } from "../consul/event-size.ts";
import { messageOf, PulldeployError, UsageError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { redact } from "../log.ts";
import { kvKeys, renderReleaseRecord, type ReleaseRecord } from "../records/release.ts";
import type { Env } from "../env.ts";
import { serfEventSize } from "../consul/event-size.ts";

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
export interface ConsulSettings {
  /** `--consul-addr`, `--consul-token` (the environment fills in the rest). */
  addr?: string;
  token?: string;
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

// ------------------------------------------------------------------ record + announce

export interface AnnounceStep {
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
  /**
   * The rollout flags given (`--canary 1`…, as typed), for that command: until `latest` is written no
   * agent has begun, and a `fire` without them would switch every node at once.
   */
  rolloutFlags?: string[];
  env: Env;
  log: Logger;
  signal?: AbortSignal;
  stage: "publish" | "fire";
  message?: string;
  /** Before the KV writes and the event (rollouts: publish/rollout.ts writes its record here). */
  beforeRecord?: (consul: ConsulClient, record: ReleaseRecord) => Promise<void>;
}

export async function recordAndAnnounce(s: AnnounceStep): Promise<void> {
  const { log, record } = s;
  const client = s.consul ? new ConsulClient(s.consul) : undefined;
  let kvDone = false;
  try {
    if (s.beforeRecord && client && record) await s.beforeRecord(client, record);
    if (s.kv && record) {
      const releaseKey = kvKeys.release(s.kvPrefix, record.role, record.id);
      const body = renderReleaseRecord(record);
      // Create-only: a release's history entry never changes (an identical one is fine).
      if (!s.recorded && !(await client!.kvPut(releaseKey, body, { cas: 0 }))) {
        const { value } = await client!.kvGetText(releaseKey, { signal: s.signal });
        if (value !== body && s.stage === "publish")
          throw new ConsulError(`consul kv ${releaseKey}: a different record already exists`);
      }
      await client!.kvPut(kvKeys.latest(s.kvPrefix, record.role), body);
      kvDone = true;
      log.info(`kv ${kvKeys.latest(s.kvPrefix, record.role)} → ${record.id} (history: ${releaseKey})`);
    }
    await announce(s, client);
  } catch (err) {
    if (s.signal?.aborted && !(err instanceof PulldeployError)) throw err;
    const cmd = fireCommand(s, { kvDone });
    const what =
      s.stage === "publish"
        ? `release ${record?.id ?? ""} is uploaded (${redact(s.manifestUrl)}) but not announced`
        : `fire ${redact(s.manifestUrl)}: not announced`;
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
    s.log.set({ event_id: ev.id });
    s.log.info(`fired consul event ${a.event} ${ev.id}${describeFilters(a)}: ${redact(s.manifestUrl)}`);
    return;
  }
  await serfEvent(a, s.manifestUrl, s.env, s.signal);
  s.log.info(
    `fired serf user event ${a.event}${a.serfRpcAddr ? ` via ${a.serfRpcAddr}` : ""}: ${redact(s.manifestUrl)}`,
  );
}

/** `serf event [-rpc-addr=…] <name> <payload>` through the local agent; its own RPC auth comes from SERF_RPC_AUTH. */
async function serfEvent(a: AnnounceOptions, payload: string, env: Env, signal?: AbortSignal): Promise<void> {
  const args = ["serf", "event", ...(a.serfRpcAddr ? [`-rpc-addr=${a.serfRpcAddr}`] : []), a.event, payload];
  let proc: ReturnType<typeof Bun.spawn>;
  try {
    proc = Bun.spawn(args, {
      env: env as Record<string, string>,
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
      signal,
    });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new PulldeployError(
      code === "ENOENT"
        ? "serf event: the serf command was not found in PATH (install serf, or announce through Consul)"
        : `serf event: ${messageOf(err)}`,
      "consul",
      { cause: err },
    );
  }
  const [out, errText, code] = await Promise.all([
    new Response(proc.stdout as ReadableStream).text(),
    new Response(proc.stderr as ReadableStream).text(),
    proc.exited,
  ]);
  if (code !== 0) {
    const detail = (errText.trim() || out.trim())
      .split("\n")
      .filter((l) => l.trim() !== "")
      .join("; ");
    throw new PulldeployError(
      `serf event ${a.event} failed with exit code ${code}${detail ? `: ${detail}` : ""}`,
      "consul",
    );
  }
}

// ------------------------------------------------------------------ checks

const MAX_EVENT_NAME = 256;

export function checkAnnounce(a: AnnounceOptions): void {
  if (a.via === "none") return;
  if (a.event === "" || a.event.length > MAX_EVENT_NAME || /[\s/]/.test(a.event))
    throw new UsageError(`--event: "${a.event}" is not a usable event name (no spaces or slashes)`);
  if (a.via === "serf" && (a.node || a.service || a.tag))
    throw new UsageError(
      "--node, --service and --tag are Consul event filters: Serf user events have none (drop them, or fire " +
        "through Consul)",
    );
  if (a.tag && !a.service) throw new UsageError("--tag needs --service (Consul filters tags of a service)");
}

/** The largest payload (bytes) that fits an event with this name and filters, and the payload's size. */
export function eventPayloadLimit(a: AnnounceOptions, payload: string): { max: number; size: number; fits: boolean } {
  const size = (n: number) => {
    const p = "x".repeat(n);
    return a.via === "serf"
      ? serfEventSize(a.event, p)
      : userEventSize(a.event, p, { node: a.node, service: a.service, tag: a.tag });
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
export function checkEventSize(a: AnnounceOptions, manifestUrl: string): void {
  if (a.via === "none") return;
  const { max, size, fits } = eventPayloadLimit(a, manifestUrl);
  if (fits) return;
  const kind = a.via === "serf" ? "a Serf user event" : `a Consul event${describeFilters(a)}`;
  throw new PulldeployError(
    `event payload too long: the manifest URL ${redact(manifestUrl)} is ${size} bytes, ${size - max} more than ` +
      `the ${max} that fit in ${kind} named "${a.event}" (512 bytes after encoding); use a shorter --to, --role ` +
      "or --event",
    "publish",
  );
}

export function describeFilters(a: AnnounceOptions): string {
  const f = [a.node && `node=${a.node}`, a.service && `service=${a.service}`, a.tag && `tag=${a.tag}`].filter(Boolean);
  return f.length > 0 ? ` (${f.join(", ")})` : "";
}

// ------------------------------------------------------------------ output

/** `pulldeploy fire …` that repeats the announce flags of this run (never the token). */
export function fireCommand(
  s: Pick<
    AnnounceStep,
    "manifestUrl" | "record" | "kv" | "kvPrefix" | "announce" | "consulFlags" | "message" | "rolloutFlags"
  >,
  opts: { kvDone: boolean },
): string {
  const q = shellQuote;
  const a = s.announce;
  const parts = ["pulldeploy", "fire", q(s.manifestUrl)];
  if (s.kv && s.record && !opts.kvDone) {
    parts.push("--role", q(s.record.role));
    if (s.kvPrefix !== "pulldeploy") parts.push("--kv-prefix", q(s.kvPrefix));
    if (s.message) parts.push("--message", q(s.message));
    // Once `latest` is written the rollout record is there (written first) and agents may have begun:
    // `fire` then only sends the event, and the agents go on with the record as it is.
    parts.push(...(s.rolloutFlags ?? []).map(q));
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
  if (s.consulFlags?.addr && (a.via === "consul" || (s.kv && s.record && !opts.kvDone)))
    parts.push("--consul-addr", q(s.consulFlags.addr));
  return parts.join(" ");
}

function shellQuote(s: string): string {
  return /^[A-Za-z0-9_./:@%+=,-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}
