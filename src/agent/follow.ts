/**
 * `agent --follow`: watch the role's latest release in Consul KV with blocking queries and converge
 * whenever it changes, so that missed events don't matter. Reconnects with backoff when Consul is
 * away; stops between deploys when `stop` aborts (a deploy in progress finishes first).
 * A release whose deploy failed is retried with jittered exponential backoff (default 10 s doubling to
 * 10 min) until it succeeds or a newer release replaces it: a transient failure (a store down, a full
 * disk) does not leave the host behind until the next publish.
 */
import type { ConsulClient } from "../consul/client.ts";
import { nextIndex } from "../consul/blocking.ts";
import { messageOf } from "../errors.ts";
import type { Logger } from "../log.ts";
import { kvKeys, type ReleaseRecord } from "../records/release.ts";
import { sleep } from "../time.ts";

export interface FollowOptions {
  consul: ConsulClient;
  prefix: string;
  role: string;
  log: Logger;
  /** Aborted: stop after the current deploy. */
  stop: AbortSignal;
  /** Deploy `record` if this host doesn't have it yet; false when the deploy failed (it is retried). */
  converge: (record: ReleaseRecord) => Promise<boolean>;
  /** Blocking query wait in ms (default 60 s): the latest release is re-read at least this often. */
  waitMs?: number;
  /** Backoff bounds in ms (default 1 s … 30 s). */
  backoffMs?: [number, number];
  /** Retry bounds of a failed deploy in ms (default 10 s … 10 min), each wait jittered by ±20%. */
  retryMs?: [number, number];
  /** Tests: the jitter's random source (default Math.random). */
  random?: () => number;
}

export async function follow(o: FollowOptions): Promise<void> {
  const key = kvKeys.latest(o.prefix, o.role);
  const [minBackoff, maxBackoff] = o.backoffMs ?? [1000, 30_000];
  let index = 0;
  let backoff = minBackoff;
  let lastSeen: string | undefined;
  let away = false;
  const [minRetry, maxRetry] = o.retryMs ?? [10_000, 600_000];
  const random = o.random ?? Math.random;
  let retryWait = minRetry;
  /** When the failed `lastSeen` is due for another attempt; undefined: it did not fail. */
  let retryAt: number | undefined;
  o.log.info(`follow: watching ${key} on ${o.consul.address}`);
  while (!o.stop.aborted) {
    let record: ReleaseRecord | null;
    try {
      const waitS = Math.max(1, Math.round((o.waitMs ?? 60_000) / 1000));
      // A retry due sooner ends the blocking query then (Consul reads the wait as a Go duration).
      const untilRetry = retryAt === undefined ? undefined : Math.max(1, Math.ceil(retryAt - Date.now()));
      const wait = untilRetry !== undefined && untilRetry < waitS * 1000 ? `${untilRetry}ms` : `${waitS}s`;
      const answer = await o.consul.kvGetJson<ReleaseRecord>(key, { index, wait, signal: o.stop });
      // A wait that ends with no change starts the next one from 0: if Consul came back with lower
      // indices (a dev-mode restart, a snapshot restore) while no query was open, blocking on the old
      // index would miss every update for good.
      index = answer.index === index ? 0 : nextIndex(index, answer.index);
      record = answer.value;
      if (away) o.log.info("follow: Consul is back");
      away = false;
      backoff = minBackoff;
    } catch (err) {
      if (o.stop.aborted) break;
      if (!away) o.log.info(`follow: ${messageOf(err)}; retrying with backoff`);
      away = true;
      index = 0;
      await sleep(backoff, o.stop);
      backoff = Math.min(backoff * 2, maxBackoff);
      continue;
    }
    if (record === null) {
      if (lastSeen !== "") o.log.info(`follow: no release recorded for role ${o.role} yet (${key})`);
      lastSeen = "";
      continue;
    }
    if (record.id === lastSeen) {
      if (retryAt === undefined || Date.now() < retryAt) continue;
      o.log.info(`follow: retrying release ${record.id}`);
    } else {
      lastSeen = record.id;
      retryWait = minRetry;
      o.log.info(`follow: latest release of ${o.role} is ${record.id}`);
    }
    let ok: boolean;
    try {
      ok = await o.converge(record);
    } catch (err) {
      o.log.info(`follow: ${messageOf(err)}`);
      ok = false;
    }
    if (ok) {
      retryAt = undefined;
    } else {
      const wait = Math.round(retryWait * (0.8 + 0.4 * random()));
      retryAt = Date.now() + wait;
      o.log.info(
        `follow: release ${record.id} failed; retrying in ${(wait / 1000).toFixed(1)}s unless a newer release ` +
          "comes first",
      );
      retryWait = Math.min(retryWait * 2, maxRetry);
    }
  }
  o.log.info("follow: stopped");
}
