/**
 * The dashboard's `/metrics`: the fleet as Prometheus sees it, from the same state as the page (pure:
 * the server hands in its last KV read). Per role: nodes per status, nodes on / behind the latest
 * release, the latest release's time and age, and the state of its newest rollout when a rollout
 * record (`<prefix>/roles/<role>/rollouts/<id>`, JSON with a `state` field) exists.
 */
import type { KvEntry } from "../consul/client.ts";
import { exposition, family, type Sample } from "../prometheus.ts";
import type { DashboardState } from "./dashboard/state.ts";
import type { RowStatus } from "./view.ts";

const STATUSES: RowStatus[] = ["success", "failure", "deploying", "skipped", "never-reported"];

/** The newest rollout record of each role (highest ModifyIndex) that has a string `state`. */
export function rolloutsOf(entries: readonly KvEntry[], prefix: string): Map<string, { id: string; state: string }> {
  const out = new Map<string, { id: string; state: string; index: number }>();
  const base = `${prefix}/roles/`;
  for (const e of entries) {
    if (!e.key.startsWith(base)) continue;
    const [role, folder, id, ...more] = e.key.slice(base.length).split("/");
    if (folder !== "rollouts" || !role || !id || more.length > 0) continue;
    let state: unknown;
    try {
      state = (JSON.parse(new TextDecoder().decode(e.value ?? new Uint8Array())) as { state?: unknown })?.state;
    } catch {
      continue;
    }
    if (typeof state !== "string") continue;
    const seen = out.get(role);
    if (!seen || e.modifyIndex > seen.index) out.set(role, { id, state, index: e.modifyIndex });
  }
  return new Map([...out].map(([role, { id, state }]) => [role, { id, state }]));
}

export function fleetMetrics(state: DashboardState, entries: readonly KvEntry[], now: Date): string {
  const rollouts = rolloutsOf(entries, state.prefix);
  const per = (pick: (r: DashboardState["roles"][number]) => Sample[]) => state.roles.flatMap(pick);
  return exposition([
    family("pulldeploy_consul_up", "gauge", "1 if the dashboard's last read of Consul succeeded.", [
      { value: state.consul.ok ? 1 : 0 },
    ]),
    family(
      "pulldeploy_fleet_nodes",
      "gauge",
      "Nodes of a role by the status of their last report (never-reported: in the catalog, no report).",
      per((r) =>
        STATUSES.map((status) => ({
          labels: { role: r.role, status },
          value: r.rows.filter((row) => row.status === status).length,
        })),
      ),
    ),
    family(
      "pulldeploy_fleet_nodes_on_latest",
      "gauge",
      "Nodes of a role that run its latest release.",
      per((r) => [{ labels: { role: r.role }, value: r.counts.on_latest }]),
    ),
    family(
      "pulldeploy_fleet_nodes_behind",
      "gauge",
      "Nodes of a role that run another release than its latest.",
      per((r) => [{ labels: { role: r.role }, value: r.counts.behind }]),
    ),
    family(
      "pulldeploy_latest_release_timestamp_seconds",
      "gauge",
      "Unix time the role's latest release was published.",
      per((r) => latestSample(r, (t) => t / 1000)),
    ),
    family(
      "pulldeploy_latest_release_age_seconds",
      "gauge",
      "Seconds since the role's latest release was published.",
      per((r) => latestSample(r, (t) => Math.max(0, (now.getTime() - t) / 1000))),
    ),
    family(
      "pulldeploy_rollout_info",
      "gauge",
      "The state of the role's newest rollout record; always 1.",
      per((r) => {
        const ro = rollouts.get(r.role);
        return ro ? [{ labels: { role: r.role, rollout_id: ro.id, state: ro.state }, value: 1 }] : [];
      }),
    ),
  ]);
}

function latestSample(r: DashboardState["roles"][number], value: (createdMs: number) => number): Sample[] {
  const t = r.latest ? Date.parse(r.latest.created_at) : NaN;
  return Number.isNaN(t) ? [] : [{ labels: { role: r.role, release_id: r.latest!.id }, value: value(t) }];
}
