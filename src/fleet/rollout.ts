/**
 * The fleet's view of a rollout (records/rollout.ts): who is a canary, prepared, switching (holds a
 * slot now), healthy, failed, still waiting, and why it halted. A pure view and its I/O shell, as
 * view.ts does it; `pulldeploy status` and `--wait` print it.
 */
import type { ConsulClient, KvEntry } from "../consul/client.ts";
import {
  describeRolloutRecord,
  isFinal,
  parseRolloutRecord,
  rolloutKeys,
  type RolloutRecord,
} from "../records/rollout.ts";

export interface RolloutView {
  record: RolloutRecord;
  /** Nodes holding a slot now (between "starting to switch" and "healthy"). */
  switching: string[];
  /** Prepared, not switching, not yet healthy or failed. */
  waiting: string[];
}

/** The view from the record and the keys under its slots prefix (contender keys hold node names). */
export function rolloutView(record: RolloutRecord, slotEntries: readonly KvEntry[], slotsPrefix: string): RolloutView {
  const lock = slotEntries.find((e) => e.key === `${slotsPrefix}/.lock`);
  let holders: string[] = [];
  try {
    holders = Object.keys(
      (JSON.parse(new TextDecoder().decode(lock?.value ?? new Uint8Array())) as { Holders?: Record<string, boolean> })
        .Holders ?? {},
    );
  } catch {}
  const nodeOf = new Map(
    slotEntries
      .filter((e) => e.session !== undefined)
      .map((e) => [e.session!, new TextDecoder().decode(e.value ?? new Uint8Array())]),
  );
  const switching = holders.flatMap((h) => (nodeOf.has(h) ? [nodeOf.get(h)!] : [])).sort();
  const done = new Set([...record.healthy, ...record.failed.map((f) => f.node), ...switching]);
  return { record, switching, waiting: record.prepared.filter((n) => !done.has(n)).sort() };
}

export async function readRolloutView(
  consul: ConsulClient,
  prefix: string,
  role: string,
  releaseId: string,
): Promise<RolloutView | null> {
  const key = rolloutKeys.record(prefix, role, releaseId);
  const { entries } = await consul.kvList(key);
  const entry = entries.find((e) => e.key === key);
  if (!entry) return null;
  const record = parseRolloutRecord(new TextDecoder().decode(entry.value ?? new Uint8Array()));
  if (typeof record === "string") return null;
  const slots = rolloutKeys.slots(prefix, role, releaseId);
  return rolloutView(
    record,
    entries.filter((e) => e.key.startsWith(`${slots}/`)),
    slots,
  );
}

/** Lines for people: the summary, then who is where. */
export function renderRollout(v: RolloutView): string[] {
  const lines = [describeRolloutRecord(v.record)];
  const list = (label: string, nodes: string[]) => {
    if (nodes.length > 0) lines.push(`  ${label}: ${nodes.join(", ")}`);
  };
  list("switching", v.switching);
  list(isFinal(v.record.state) ? "held back (kept their release)" : "waiting", v.waiting);
  for (const f of v.record.failed) lines.push(`  failed: ${f.node} in ${f.phase}: ${f.error}`);
  return lines;
}
