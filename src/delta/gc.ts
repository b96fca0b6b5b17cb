/**
 * `gc`: remove the delta contents no kept release needs. The newest `keep` indexes of the role (by
 * release id, which sorts by time) are kept; every pack one of them references is kept whole, even if
 * only some of its chunks are still referenced (packs are never rewritten: an agent may be reading
 * one); the other packs and the older indexes are removed. A pack younger than `minAgeMs` is kept
 * too: a publish running now has uploaded it but not yet its index. Archives and manifests are left
 * alone. Dry run unless `apply`.
 */
import { DEFAULT_LIMITS } from "../archive/extract.ts";
import { PulldeployError, UsageError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { redact } from "../log.ts";
import type { Env } from "../env.ts";
import { formatBytes } from "../units.ts";
import { deltaNames } from "./format.ts";
import { fetchIndex } from "./read.ts";
import { newestLast, openStoreDir } from "./storeio.ts";

export interface GcOptions {
  to: string;
  role: string;
  keep: number;
  apply: boolean;
  /** Packs modified more recently than this are kept (default 1 hour). */
  minAgeMs?: number;
  env: Env;
  log: Logger;
  signal?: AbortSignal;
  userAgent: string;
  now?: () => number;
}

export interface GcPlan {
  keptIndexes: string[];
  removedIndexes: string[];
  keptPacks: number;
  /** Kept whole although only part of their bytes is referenced. */
  partlyUsed: { pack: string; unreferenced: number; size: number }[];
  young: string[];
  removedPacks: { name: string; size: number }[];
}

export async function gc(o: GcOptions): Promise<GcPlan> {
  if (!Number.isInteger(o.keep) || o.keep < 1)
    throw new UsageError(`--keep: expected a whole number ≥ 1, got ${o.keep}`);
  const base = o.to.replace(/\/+$/, "");
  const dir = await openStoreDir(base, o.env);
  if (!dir) throw new UsageError(`--to ${redact(o.to)}: gc needs a store it can list and delete in (file:// or s3://)`);
  try {
    const dirName = deltaNames.dir(o.role);
    const indexes = newestLast((await dir.stat(dirName)).filter((l) => l.name.endsWith(".idx")));
    let cut = Math.max(0, indexes.length - o.keep);
    // Release ids name the second: indexes of the same second as the oldest kept one are kept too.
    while (cut > 0 && indexes[cut - 1]!.slice(0, 16) === indexes[cut]!.slice(0, 16)) cut--;
    const kept = indexes.slice(cut);
    const removedIndexes = indexes.slice(0, cut);
    // Referenced bytes per pack, from the kept indexes only.
    const used = new Map<string, number>();
    const seen = new Set<string>();
    for (const name of kept) {
      const url = `${base}/${dirName}/${name}`;
      let index;
      try {
        ({ index } = await fetchIndex(url, { env: o.env, signal: o.signal, userAgent: o.userAgent }, DEFAULT_LIMITS));
      } catch (err) {
        // Without it, what it needs is unknown: delete nothing.
        throw new PulldeployError(
          `gc: cannot read kept index ${redact(url)} (${(err as Error).message}); nothing removed`,
          "publish",
          { cause: err },
        );
      }
      for (const c of index.chunks) {
        const pack = index.packs[c.pack]!;
        const key = `${pack}:${c.offset}`;
        if (seen.has(key)) continue;
        seen.add(key);
        used.set(pack, (used.get(pack) ?? 0) + c.stored);
      }
    }
    const packs = await dir.stat(`${dirName}/packs`);
    const now = (o.now ?? Date.now)();
    const minAge = o.minAgeMs ?? 3_600_000;
    const plan: GcPlan = {
      keptIndexes: kept,
      removedIndexes,
      keptPacks: 0,
      partlyUsed: [],
      young: [],
      removedPacks: [],
    };
    for (const p of packs) {
      const hash = p.name.replace(/\.pack$/, "");
      const u = used.get(hash);
      if (u !== undefined) {
        plan.keptPacks++;
        if (u < p.size) plan.partlyUsed.push({ pack: p.name, unreferenced: p.size - u, size: p.size });
      } else if (now - p.mtimeMs < minAge) plan.young.push(p.name);
      else plan.removedPacks.push({ name: p.name, size: p.size });
    }

    const verb = o.apply ? "removing" : "would remove (dry run; --apply to delete)";
    const freed = plan.removedPacks.reduce((n, p) => n + p.size, 0);
    o.log.info(
      `gc ${redact(base)}/${dirName}: keeping the newest ${kept.length} of ${indexes.length} indexes and the ` +
        `${plan.keptPacks} packs they reference`,
    );
    if (plan.partlyUsed.length > 0) {
      const waste = plan.partlyUsed.reduce((n, p) => n + p.unreferenced, 0);
      o.log.info(
        `gc: ${plan.partlyUsed.length} kept packs are only partly referenced (${formatBytes(waste)} ` +
          "unreferenced): a pack is kept whole while any chunk in it is needed",
      );
    }
    if (plan.young.length > 0)
      o.log.info(
        `gc: keeping ${plan.young.length} unreferenced packs younger than ${minAge / 1000}s (a publish may be ` +
          "writing its index)",
      );
    o.log.info(
      `gc: ${verb} ${plan.removedPacks.length} packs (${formatBytes(freed)}) and ${removedIndexes.length} indexes`,
    );
    if (o.apply) {
      // Indexes first: an index never names a pack that is gone.
      for (const name of removedIndexes) await dir.remove(`${dirName}/${name}`);
      for (const p of plan.removedPacks) await dir.remove(`${dirName}/packs/${p.name}`);
    }
    return plan;
  } finally {
    dir.close();
  }
}
