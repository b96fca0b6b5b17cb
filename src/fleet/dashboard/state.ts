/**
 * What the dashboard shows, built from one recursive read of `<prefix>/roles/` (every role's latest
 * release, release records and node reports) and each role's catalog nodes. Pure: the server does the
 * reads. This is also the JSON of `/api/state`.
 */
import type { KvEntry } from "../../consul/client.ts";
import { fleetView, latestOf, reportsOf, type FleetView } from "../view.ts";
import { checkRole, parseReleaseRecord, type ReleaseRecord } from "../../records/release.ts";
import { formatBytes } from "../../units.ts";
import { parseRolloutRecord, rolloutKeys } from "../../records/rollout.ts";
import { renderRollout, rolloutView } from "../rollout.ts";

/** How many recent releases each role lists under its latest. */
export const RECENT_RELEASES = 5;

export type ReleaseSummary = Pick<ReleaseRecord, "id" | "created_at" | "publisher" | "message">;

export interface DashboardRole extends FleetView {
  /** The newest release records first (the latest included), at most RECENT_RELEASES. */
  recent_releases: ReleaseSummary[];
  /** Release records under `releases/` (all of them, for "n releases"). */
  release_count: number;
  /** The latest release's archive size in words (`2.1 MB`), as the CLI writes sizes; null when unknown. */
  latest_size_text: string | null;
  /** The latest release's staged rollout as `pulldeploy status` prints it (state, who is where); null without one. */
  rollout_lines: string[] | null;
}

export interface DashboardState {
  /** Bumped whenever anything but the clock changes; `/api/state?index=` waits for it to move. */
  index: number;
  generated_at: string;
  prefix: string;
  consul: { address: string; ok: boolean; error: string | null };
  roles: DashboardRole[];
}

/** The role names under `<prefix>/roles/`, from the keys of a recursive read. */
export function rolesOf(entries: readonly KvEntry[], prefix: string): string[] {
  const base = `${prefix}/roles/`;
  const roles = new Set<string>();
  for (const e of entries) {
    if (!e.key.startsWith(base)) continue;
    const role = e.key.slice(base.length).split("/")[0]!;
    if (role !== "" && checkRole(role) === undefined) roles.add(role);
  }
  return [...roles].sort();
}

/**
 * One role's view from the entries of a recursive read of `<prefix>/roles/` and its catalog nodes.
 * `only` limits the roles shown (--role); a role named there but absent from KV is shown empty.
 */
export function dashboardRoles(o: {
  entries: readonly KvEntry[];
  prefix: string;
  catalogs: ReadonlyMap<string, readonly string[]>;
  only?: readonly string[];
  now: Date;
}): DashboardRole[] {
  const roles = o.only && o.only.length > 0 ? [...new Set(o.only)].sort() : rolesOf(o.entries, o.prefix);
  return roles.map((role) => {
    const base = `${o.prefix}/roles/${role}/`;
    const mine = o.entries.filter((e) => e.key.startsWith(base));
    const unreadable: string[] = [];
    const latest = latestOf(mine.find((e) => e.key === `${base}latest`) ?? null, unreadable);
    const nodesPrefix = `${base}nodes/`;
    const { reports, unreadable: badReports } = reportsOf(
      mine.filter((e) => e.key.startsWith(nodesPrefix)),
      nodesPrefix,
    );
    const releases: ReleaseRecord[] = [];
    for (const e of mine) {
      if (!e.key.startsWith(`${base}releases/`)) continue;
      const r = parseReleaseRecord(new TextDecoder().decode(e.value ?? new Uint8Array()));
      if (typeof r === "string") unreadable.push(e.key);
      else releases.push(r);
    }
    // Release ids start with their UTC time: newest first is reverse id order.
    releases.sort((a, b) => (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
    const view = fleetView({
      prefix: o.prefix,
      role,
      latest,
      catalog: o.catalogs.get(role) ?? [],
      reports,
      unreadable: [...unreadable, ...badReports],
      now: o.now,
    });
    return {
      ...view,
      recent_releases: releases
        .slice(0, RECENT_RELEASES)
        .map(({ id, created_at, publisher, message }) => ({ id, created_at, publisher, message })),
      release_count: releases.length,
      latest_size_text: latest?.size !== null && latest?.size !== undefined ? formatBytes(latest.size) : null,
      rollout_lines: latest ? rolloutLines(mine, o.prefix, role, latest.id) : null,
    };
  });
}

function rolloutLines(entries: readonly KvEntry[], prefix: string, role: string, id: string): string[] | null {
  const key = rolloutKeys.record(prefix, role, id);
  const entry = entries.find((e) => e.key === key);
  if (!entry) return null;
  const record = parseRolloutRecord(new TextDecoder().decode(entry.value ?? new Uint8Array()));
  if (typeof record === "string") return [`${key}: unreadable rollout record (${record})`];
  const slots = rolloutKeys.slots(prefix, role, id);
  return renderRollout(
    rolloutView(
      record,
      entries.filter((e) => e.key.startsWith(`${slots}/`)),
      slots,
    ),
  );
}

/** The state without what only the clock changes, to tell a real change from a re-read. */
export function stateKey(roles: readonly DashboardRole[], consul: DashboardState["consul"]): string {
  return JSON.stringify({ consul, roles }, (k, v) => (k === "age_ms" || k === "generated_at" ? undefined : v));
}
