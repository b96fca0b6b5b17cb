/**
 * `agent --follow`: watch the role's latest release in Consul KV with blocking queries and converge
 * whenever it changes, so that missed events don't matter. Reconnects with backoff when Consul is
 * away; stops between deploys when `stop` aborts (a deploy in progress finishes first).
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
  /** Deploy `record` if this host doesn't have it yet. */
  converge: (record: ReleaseRecord) => Promise<void>;
  /** Blocking query wait in ms (default 60 s): the latest release is re-read at least this often. */
  waitMs?: number;
  /** Backoff bounds in ms (default 1 s … 30 s). */
  backoffMs?: [number, number];
}

export async function follow(o: FollowOptions): Promise<void> {
  const key = kvKeys.latest(o.prefix, o.role);
  const [minBackoff, maxBackoff] = o.backoffMs ?? [1000, 30_000];
  let index = 0;
  let backoff = minBackoff;
  let lastSeen: string | undefined;
  let away = false;
  o.log.info(`follow: watching ${key} on ${o.consul.address}`);
  while (!o.stop.aborted) {
    let record: ReleaseRecord | null;
    try {
      const answer = await o.consul.kvGetJson<ReleaseRecord>(key, { index, wait: `${Math.max(1, Math.round((o.waitMs ?? 60_000) / 1000))}s`, signal: o.stop });
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
    if (record.id === lastSeen) continue;
    lastSeen = record.id;
    o.log.info(`follow: latest release of ${o.role} is ${record.id}`);
    try {
      await o.converge(record);
    } catch (err) {
      o.log.info(`follow: ${messageOf(err)}`);
    }
  }
  o.log.info("follow: stopped");
}
