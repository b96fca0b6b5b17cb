/**
 * Consul's documented semaphore recipe, as `consul lock -n N` does it, so that the CLI and other
 * tools read our slots as theirs:
 *
 *   <prefix>/<session>   a contender key, acquired with the session (Value: the holder's name)
 *   <prefix>/.lock       {"Limit":N,"Holders":{"<session>":true,...}}, changed only by check-and-set
 *
 * Every key carries the api's SemaphoreFlagValue. A holder whose contender key is gone or unlocked
 * (its session died with its node, or expired) no longer counts and is pruned by the next writer.
 *
 * `tryTake(entries)` decides from one read of the prefix (the caller's blocking query, which may
 * cover more keys than the semaphore's), so that one blocking query can wait for a slot and for other
 * news at once: no polling. A lost CAS race answers false with `retry: true`: read again at once.
 */
import type { ConsulClient, KvEntry } from "./client.ts";

/** The api package's SemaphoreFlagValue (0xe0f69a2baa414de0), as captured on every semaphore key. */
export const SEMAPHORE_FLAGS = 16210313421097356768n;

export interface LockValue {
  Limit: number;
  Holders: Record<string, boolean>;
}

export class Semaphore {
  readonly lockKey: string;
  readonly contenderKey: string;

  constructor(
    private readonly consul: ConsulClient,
    readonly prefix: string,
    readonly session: string,
    readonly limit: number,
  ) {
    this.lockKey = `${prefix}/.lock`;
    this.contenderKey = `${prefix}/${session}`;
  }

  /** Enter the queue: acquire the contender key. False when the session is no longer valid. */
  async contend(holder: string): Promise<boolean> {
    return this.consul.kvPut(this.contenderKey, holder, { acquire: this.session, flags: SEMAPHORE_FLAGS });
  }

  /**
   * Take a slot if one is free according to `entries` (every key under the prefix, from one read).
   * `taken`: we hold a slot now; `retry`: the .lock changed under us, read again before waiting;
   * `queued: false`: our contender key is not held (any more): `contend` again.
   */
  async tryTake(entries: KvEntry[]): Promise<{ taken: boolean; retry: boolean; holders: string[]; queued: boolean }> {
    const { lock, live } = this.view(entries);
    const holders = Object.keys(lock?.value.Holders ?? {}).filter((h) => live.has(h));
    // Our contender key is gone (the session was invalidated, or the key deleted): the others would
    // prune us from .lock, so a slot taken now would not count. Queue again first.
    if (!live.has(this.session)) return { taken: false, retry: false, holders, queued: false };
    if (holders.includes(this.session)) return { taken: true, retry: false, holders, queued: true };
    if (holders.length >= this.limit) return { taken: false, retry: false, holders, queued: true };
    const next: LockValue = {
      Limit: this.limit,
      Holders: Object.fromEntries([...holders, this.session].sort().map((h) => [h, true])),
    };
    const ok = await this.consul.kvPut(this.lockKey, JSON.stringify(next), {
      cas: lock?.modifyIndex ?? 0,
      flags: SEMAPHORE_FLAGS,
    });
    return { taken: ok, retry: !ok, holders: ok ? Object.keys(next.Holders) : holders, queued: true };
  }

  /** Give the slot back (CAS, retried on races), then drop the contender key. */
  async release(): Promise<void> {
    for (let attempt = 0; attempt < 20; attempt++) {
      const { entries } = await this.consul.kvList(this.prefix);
      const { lock, live } = this.view(entries);
      if (!lock || !(this.session in lock.value.Holders)) break;
      const holders = Object.keys(lock.value.Holders).filter((h) => h !== this.session && live.has(h));
      if (
        await this.consul.kvPut(
          this.lockKey,
          JSON.stringify({ Limit: lock.value.Limit, Holders: Object.fromEntries(holders.map((h) => [h, true])) }),
          { cas: lock.modifyIndex, flags: SEMAPHORE_FLAGS },
        )
      )
        break;
    }
    await this.consul.kvDelete(this.contenderKey);
  }

  /** The .lock (if readable) and the sessions whose contender keys are held. */
  view(entries: KvEntry[]): { lock?: { value: LockValue; modifyIndex: number }; live: Set<string> } {
    const live = new Set<string>();
    let lock: { value: LockValue; modifyIndex: number } | undefined;
    for (const e of entries) {
      if (e.key === this.lockKey) {
        lock = { value: parseLock(e.value), modifyIndex: e.modifyIndex };
      } else if (
        e.key.startsWith(`${this.prefix}/`) &&
        e.session !== undefined &&
        e.key === `${this.prefix}/${e.session}`
      ) {
        live.add(e.session);
      }
    }
    return { lock, live };
  }
}

/** A .lock value; an unreadable one counts as empty (a contender rewrites it by CAS). */
export function parseLock(value: Uint8Array | null): LockValue {
  try {
    const v = JSON.parse(new TextDecoder().decode(value ?? new Uint8Array())) as Partial<LockValue>;
    const holders = v && typeof v.Holders === "object" && v.Holders !== null ? v.Holders : {};
    return {
      Limit: typeof v.Limit === "number" ? v.Limit : 0,
      Holders: Object.fromEntries(Object.keys(holders).map((h) => [h, true])),
    };
  } catch {
    return { Limit: 0, Holders: {} };
  }
}
