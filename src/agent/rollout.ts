/**
 * The agent's side of a rollout (the record: records/rollout.ts), in three calls around the deploy:
 *
 *   prepared  the release is fetched, verified and extracted: wait (blocking queries on the record and
 *             its slots) until this node may switch: not halted/aborted (then refuse: this node keeps
 *             its release), not paused, a canary place or the canaries done, and a slot of the
 *             semaphore (a session tied to serfHealth + a renewed TTL, so a dead node frees it)
 *   settled   after post/validate, still holding the slot: the health gate, the node's checks (the
 *             role's service's, else all of them) passing for `health_grace` within `health_deadline`
 *   finish    the outcome into the record (healthy, or failed: past the budget the rollout halts,
 *             and with auto_rollback the halting node makes the previous release the latest and fires
 *             it), then the slot is given back
 *
 * A release without a rollout record passes straight through. Coordination is Consul's alone: no
 * process has to stay up but the agents doing the work.
 */
import type { ConsulClient, KvEntry } from "../consul/client.ts";
import { ConsulError } from "../consul/client.ts";
import { nextIndex } from "../consul/blocking.ts";
import { Semaphore } from "../consul/semaphore.ts";
import { openSession, type OpenSession } from "../consul/session.ts";
import { messageOf, PulldeployError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { Manifest } from "../manifest/parse.ts";
import { kvKeys, parseReleaseRecord, releaseIdOfUrl, type ReleaseRecord } from "../records/release.ts";
import {
  activeCanaries,
  allPrepared,
  isFinal,
  markFailed,
  markHealthy,
  parseRolloutRecord,
  renderRolloutRecord,
  rolloutKeys,
  type RolloutRecord,
} from "../records/rollout.ts";
import type { DeployResult } from "./deploy.ts";

export interface RolloutGateOptions {
  consul: ConsulClient;
  prefix: string;
  role: string;
  node: string;
  log: Logger;
  signal?: AbortSignal;
  /** Longest wait of one blocking query (Consul syntax, default "60s"). */
  blockingWait?: string;
  now?: () => Date;
}

/** The session name the agent's slots use: leftovers with this name on this node are stale. */
export const SLOT_SESSION_NAME = "pulldeploy rollout slot";

export interface RolloutGate {
  prepared(manifest: Manifest, manifestUrl: string): Promise<void>;
  settled(manifest: Manifest): Promise<void>;
  finish(result: DeployResult | undefined, manifestUrl: string): Promise<void>;
}

export function rolloutGate(o: RolloutGateOptions): RolloutGate {
  const { consul, log } = o;
  const now = o.now ?? (() => new Date());
  const wait = o.blockingWait ?? "60s";
  let record: RolloutRecord | undefined;
  let key: string | undefined;
  let session: OpenSession | undefined;
  let sem: Semaphore | undefined;

  const idOf = (m: Manifest | undefined, url: string) => m?.releaseId ?? releaseIdOfUrl(url);

  async function prepared(manifest: Manifest, manifestUrl: string): Promise<void> {
    const id = idOf(manifest, manifestUrl);
    if (id === undefined) return;
    key = rolloutKeys.record(o.prefix, o.role, id);
    const slots = rolloutKeys.slots(o.prefix, o.role, id);
    let entries: KvEntry[];
    let index: number;
    try {
      ({ entries, index } = await consul.kvList(key, { signal: o.signal }));
    } catch (err) {
      // As for reports, Consul being away never fails a deploy: without the record there is no rollout.
      if (!(err instanceof ConsulError) || err.status !== undefined) throw err;
      log.info(`rollout: cannot read ${key} (${err.message}): deploying without a rollout`);
      return;
    }
    let said = "";
    const say = (line: string) => {
      if (line !== said) log.info(`rollout: ${line}`);
      said = line;
    };
    for (;;) {
      const entry = entries.find((e) => e.key === key);
      if (!entry) {
        if (record === undefined) return; // no rollout: deploy as before
        throw new PulldeployError(
          `rollout of ${id}: its record ${key} was deleted while this node waited; this node keeps its current release`,
          "rollout",
        );
      }
      const parsed = parseRolloutRecord(new TextDecoder().decode(entry.value ?? new Uint8Array()));
      if (typeof parsed === "string")
        throw new PulldeployError(
          `rollout of ${id}: ${key} is unreadable (${parsed}); this node keeps its current release`,
          "rollout",
        );
      record = parsed;
      let again = false;
      let waitFor = wait;
      if (isFinal(record.state)) {
        throw new PulldeployError(
          `rollout of ${id} is ${record.state}${record.reason ? ` (${record.reason})` : ""}: this node keeps ` +
            "its current release",
          "rollout",
        );
      } else if (!record.prepared.includes(o.node)) {
        const next = { ...record, prepared: [...record.prepared, o.node], updated_at: now().toISOString() };
        await consul.kvPut(key, renderRolloutRecord(next), { cas: entry.modifyIndex });
        again = true;
      } else if (record.state === "paused") {
        say(`${id} is paused${record.reason ? ` (${record.reason})` : ""}: waiting (prepared)`);
      } else if (!allPrepared(record, now())) {
        const left = Date.parse(record.created_at) + record.prepare_deadline_ms - now().getTime();
        waitFor = `${Math.max(1, Math.min(left, 60_000))}ms`;
        say(
          `${id}: waiting for every node to prepare before switching together ` +
            `(${record.prepared.length}/${record.nodes_total ?? "?"} prepared)`,
        );
      } else if (record.state === "canary" && !record.canaries.includes(o.node)) {
        if (activeCanaries(record).length < record.canary) {
          const next = { ...record, canaries: [...record.canaries, o.node], updated_at: now().toISOString() };
          if (await consul.kvPut(key, renderRolloutRecord(next), { cas: entry.modifyIndex }))
            log.info(`rollout: ${o.node} is a canary of ${id}`);
          again = true;
        } else {
          say(`${id}: waiting for the canaries (${record.canaries.join(", ")}) to be healthy (prepared)`);
        }
      } else if (record.max_parallel === null) {
        return; // no slot limit: canaries and the budget only
      } else {
        if (!session) {
          session = await openSession(consul, {
            name: SLOT_SESSION_NAME,
            node: o.node,
            ttlMs: record.slot_ttl_ms,
            log: (m) => log.info(m),
          });
          sem = new Semaphore(consul, slots, session.id, record.limit);
          if (!(await sem.contend(o.node)))
            throw new PulldeployError(
              `rollout of ${id}: could not queue for a slot (session ${session.id} no longer valid)`,
              "rollout",
            );
          again = true;
        } else {
          const r = await sem!.tryTake(entries);
          if (!r.queued) {
            if (session.lost || !(await sem!.contend(o.node)))
              throw new PulldeployError(
                `rollout of ${id}: lost the place in the queue for a slot (session ${session.id} invalidated: ` +
                  "is this node's Consul agent healthy?)",
                "rollout",
              );
            r.retry = true;
          } else if (r.taken) {
            log.info(`rollout: ${o.node} took a slot of ${id} (${r.holders.length}/${record.limit} in use)`);
            return;
          }
          again = r.retry;
          if (!again) say(`${id}: waiting for a slot (${r.holders.length}/${record.limit} in use; prepared)`);
        }
      }
      const read = await consul.kvList(key, again ? { signal: o.signal } : { index, wait: waitFor, signal: o.signal });
      entries = read.entries;
      index = nextIndex(index, read.index);
    }
  }

  async function settled(): Promise<void> {
    if (!record || record.health_grace_ms <= 0) return;
    await healthGate(o, record.health_grace_ms, record.health_deadline_ms, now);
  }

  async function finish(result: DeployResult | undefined, manifestUrl: string): Promise<void> {
    try {
      if (!result || (!result.ok && result.phase === "rollout")) return;
      if (key === undefined) {
        // Failed before it was prepared (fetch, checksum…): that counts against the budget too.
        const id = idOf(result.manifest, manifestUrl);
        if (id === undefined || result.ok) return;
        key = rolloutKeys.record(o.prefix, o.role, id);
      }
      const changed = await updateRecord(consul, key, (r) =>
        result.ok ? markHealthy(r, o.node, now()) : markFailed(r, o.node, result.phase, result.error, now()),
      );
      if (!changed) return;
      const { before, after } = changed;
      if (after.state !== before.state)
        log.info(`rollout: ${after.release_id} is ${after.state}${after.reason ? ` (${after.reason})` : ""}`);
      if (before.state !== "halted" && after.state === "halted" && after.auto_rollback) await autoRollback(o, after);
    } catch (err) {
      log.info(`rollout: could not record this node's outcome: ${messageOf(err)}`);
    } finally {
      await release();
    }
  }

  async function release(): Promise<void> {
    try {
      if (sem && session && !session.lost) await sem.release();
    } catch (err) {
      log.info(`rollout: giving the slot back: ${messageOf(err)} (the session's end frees it)`);
    }
    await session?.close();
    session = undefined;
    sem = undefined;
  }

  return { prepared, settled, finish };
}

/**
 * A gate for an agent run without --role: the manifest's `role:` picks the gate through `open`
 * (undefined: no role or no Consul, no rollout), called from `accepted`, i.e. once the deploy has
 * read the manifest and, with trust keys, verified it: before the fetch, so that a failed fetch,
 * checksum or extract counts against the rollout's budget as it does with --role.
 */
export function lazyRolloutGate(
  open: (role: string) => Promise<RolloutGate | undefined>,
): RolloutGate & { accepted(manifest: Manifest): Promise<void> } {
  let inner: RolloutGate | undefined;
  return {
    async accepted(manifest) {
      if (manifest.role !== undefined) inner = await open(manifest.role);
    },
    async prepared(manifest, manifestUrl) {
      await inner?.prepared(manifest, manifestUrl);
    },
    async settled(manifest) {
      await inner?.settled(manifest);
    },
    async finish(result, manifestUrl) {
      await inner?.finish(result, manifestUrl);
    },
  };
}

/** Read-modify-write by CAS; undefined when there is no record or nothing changed. */
async function updateRecord(
  consul: ConsulClient,
  key: string,
  fn: (r: RolloutRecord) => RolloutRecord,
): Promise<{ before: RolloutRecord; after: RolloutRecord } | undefined> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const { entry } = await consul.kvGet(key);
    if (!entry) return undefined;
    const before = parseRolloutRecord(new TextDecoder().decode(entry.value ?? new Uint8Array()));
    if (typeof before === "string") throw new PulldeployError(`${key}: ${before}`, "rollout");
    const after = fn(before);
    if (await consul.kvPut(key, renderRolloutRecord(after), { cas: entry.modifyIndex })) return { before, after };
  }
  throw new PulldeployError(`${key}: too many concurrent updates`, "rollout");
}

/** The halting node's last act: the previous release becomes the role's latest and is fired again. */
async function autoRollback(o: RolloutGateOptions, r: RolloutRecord): Promise<void> {
  if (!r.previous) {
    o.log.info(`rollout: auto-rollback: ${r.role} had no release before ${r.release_id}; nothing to return to`);
    return;
  }
  const { value } = await o.consul.kvGetText(kvKeys.release(o.prefix, r.role, r.previous.id));
  if (value !== null) await o.consul.kvPut(kvKeys.latest(o.prefix, r.role), value);
  const ev = await o.consul.eventFire(r.event, r.previous.manifest_url, r.event_filters);
  o.log.info(`rollout: auto-rollback: ${r.role}'s latest is ${r.previous.id} again; fired ${r.event} ${ev.id}`);
}

interface HealthCheck {
  CheckID: string;
  Name: string;
  Status: string;
  Output: string;
  ServiceName: string;
}

/**
 * The health gate: this node's checks (those of the role's service, else all, serfHealth included)
 * passing continuously for `graceMs`, within `deadlineMs` of now. Waits with blocking reads of
 * /v1/health/node/<node>, which wake on status changes (not on Output-only ones).
 */
export async function healthGate(
  o: RolloutGateOptions,
  graceMs: number,
  deadlineMs: number,
  now: () => Date = () => new Date(),
): Promise<void> {
  const started = now().getTime();
  const deadline = started + Math.max(deadlineMs, graceMs);
  const path = `/v1/health/node/${encodeURIComponent(o.node)}`;
  let index = 0;
  let passingSince: number | undefined;
  let failing: HealthCheck[] = [];
  o.log.info(
    `health: waiting for ${o.node}'s checks to pass for ${graceMs / 1000}s (deadline ${(deadline - started) / 1000}s)`,
  );
  for (;;) {
    const t = now().getTime();
    const remaining = passingSince !== undefined ? passingSince + graceMs - t : deadline - t;
    const waitMs = Math.max(1, Math.min(remaining, deadline - t));
    const a = await o.consul.request(
      "GET",
      path,
      index ? { index, wait: `${Math.ceil(waitMs)}ms`, signal: o.signal } : { signal: o.signal },
    );
    index = nextIndex(index, a.index);
    const all = (Array.isArray(a.json) ? a.json : []) as HealthCheck[];
    const own = all.filter((c) => c.ServiceName === o.role);
    const checks = own.length > 0 ? own : all;
    failing = checks.filter((c) => c.Status !== "passing");
    const at = now().getTime();
    if (failing.length === 0 && checks.length > 0) {
      passingSince ??= at;
      if (at - passingSince >= graceMs) {
        o.log.info(`health: ${checks.map((c) => c.CheckID).join(", ")} passing for ${graceMs / 1000}s`);
        return;
      }
    } else {
      passingSince = undefined;
    }
    if (at >= deadline) {
      const what =
        failing.length > 0
          ? failing
              .map((c) => `${c.CheckID} ${c.Status}${c.Output ? `: ${c.Output.split("\n")[0]!.slice(0, 120)}` : ""}`)
              .join("; ")
          : checks.length === 0
            ? "no checks on this node"
            : "passing, but not for long enough";
      throw new PulldeployError(
        `health gate: ${o.node}'s checks did not pass for ${graceMs / 1000}s within ${deadlineMs / 1000}s (${what})`,
        "health",
      );
    }
  }
}

/**
 * What `--from-kv` and `--follow` deploy: the role's latest release, unless its rollout halted or was
 * aborted; then the release before it (the last good one), so that a node joining never starts a
 * release the fleet refused. `why` says which and why, for the log.
 */
export async function lastGoodRelease(
  consul: ConsulClient,
  prefix: string,
  latest: ReleaseRecord,
): Promise<{ release: ReleaseRecord; why?: string }> {
  const { value } = await consul.kvGetText(rolloutKeys.record(prefix, latest.role, latest.id));
  const r = value === null ? undefined : parseRolloutRecord(value);
  if (r === undefined || typeof r === "string" || !isFinal(r.state)) return { release: latest };
  if (!r.previous)
    throw new PulldeployError(
      `the rollout of ${latest.id} (latest of ${latest.role}) is ${r.state} and ${latest.role} had no release ` +
        "before it: nothing good to deploy",
      "rollout",
    );
  const prev = await consul.kvGetText(kvKeys.release(prefix, latest.role, r.previous.id));
  const rec = prev.value === null ? undefined : parseReleaseRecord(prev.value);
  if (rec === undefined || typeof rec === "string")
    throw new PulldeployError(
      `the rollout of ${latest.id} is ${r.state}, and the release before it (${r.previous.id}) has no readable ` +
        "record in KV",
      "rollout",
    );
  return {
    release: rec,
    why:
      `the rollout of ${latest.id} is ${r.state}${r.reason ? ` (${r.reason})` : ""}: deploying the last good ` +
      `release ${rec.id} instead`,
  };
}
