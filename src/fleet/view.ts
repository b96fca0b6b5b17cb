/**
 * `src/fleet/`: seeing the fleet: this view, `--wait`, the dashboard (server and page). May
 * import consul/, records/ and the shared modules; never agent/ or publish/.
 *
 * The fleet as an operator sees it: one row per node of a role, from three sources that each know
 * part of the truth. Consul's catalog says which nodes the role has (the service named after the role,
 * unless told otherwise); `<prefix>/roles/<role>/latest` says which release they should run; each
 * agent's report (`<prefix>/roles/<role>/nodes/<node>`, see report.ts) says what it did last.
 *
 * `fleetView` is pure (the clock is passed in); `readFleet` does the reads. `status`, `publish --wait`
 * (through wait.ts) and the dashboard all show this same view.
 */
import type { ConsulClient, KvEntry } from "../consul/client.ts";
import { kvKeys, parseReleaseRecord, type ReleaseRecord } from "../records/release.ts";
import { parseReport, type NodeReport, type NodeStatus } from "../records/report.ts";
import { attention, formatAge, statusText, type Attention } from "./format.ts";

// The words for rows and ages live in format.ts, which the dashboard page runs too.
export { attention, formatAge, statusText, type Attention };

/** A report's status, or `never-reported` for a catalog node with no report. */
export type RowStatus = NodeStatus | "never-reported";

/** One node. snake_case: this is also the JSON of `status --json` and the dashboard's API. */
export interface FleetRow {
  node: string;
  status: RowStatus;
  /** The release the node's last report is about (null: never reported, or failed before knowing). */
  release_id: string | null;
  /** Runs the role's latest release: its last report is a success (or skip) for it. */
  on_latest: boolean;
  /** Runs another release than the latest: a success (or skip) for an older one (false when there is no latest). */
  behind: boolean;
  /** Registered in the catalog under the role's service; false for a report from a node the catalog doesn't list. */
  in_catalog: boolean;
  phase: string | null;
  error: string | null;
  /** When the last report's deploy started / finished (ISO 8601). */
  started_at: string | null;
  finished_at: string | null;
  /** Milliseconds since finished_at, or since started_at while deploying; null when never reported. */
  age_ms: number | null;
  duration_ms: number | null;
  rolled_back_to: string | null;
  agent_version: string | null;
  /** The last 2 KB of the deploy's log ("" when none). */
  log_tail: string;
}

export interface FleetCounts {
  /** Rows shown (catalog nodes plus reports from nodes not in the catalog). */
  nodes: number;
  on_latest: number;
  success: number;
  failure: number;
  deploying: number;
  skipped: number;
  never_reported: number;
  /** Nodes that run another release than the latest (see FleetRow.behind). */
  behind: number;
  not_in_catalog: number;
}

export interface FleetView {
  /** The KV prefix the view was read under. */
  prefix: string;
  role: string;
  /** The Consul service whose nodes make the role. */
  service: string;
  latest: ReleaseRecord | null;
  rows: FleetRow[];
  counts: FleetCounts;
  /** Keys under the nodes prefix whose value is not a report, and a `latest` that does not parse. */
  unreadable: string[];
  /** The clock the ages were computed against (ISO 8601). */
  generated_at: string;
}

export interface FleetInput {
  prefix: string;
  role: string;
  service?: string;
  latest: ReleaseRecord | null;
  /** Node names registered for the role's service (duplicates are fine). */
  catalog: readonly string[];
  /** Reports by node name (the last segment of the KV key). */
  reports: ReadonlyMap<string, NodeReport>;
  unreadable?: string[];
  now: Date;
}

const NATURAL = new Intl.Collator("en", { numeric: true, sensitivity: "base" });

/** Human order: `web-2` before `web-10`; catalog nodes first, then reports from nodes not in the catalog. */
export function compareRows(
  a: Pick<FleetRow, "node" | "in_catalog">,
  b: Pick<FleetRow, "node" | "in_catalog">,
): number {
  if (a.in_catalog !== b.in_catalog) return a.in_catalog ? -1 : 1;
  return NATURAL.compare(a.node, b.node) || (a.node < b.node ? -1 : a.node > b.node ? 1 : 0);
}

export function fleetView(input: FleetInput): FleetView {
  const now = input.now.getTime();
  const latestId = input.latest?.id ?? null;
  const catalog = new Set(input.catalog);
  const names = new Set([...catalog, ...input.reports.keys()]);
  const rows: FleetRow[] = [...names].map((node) => {
    const r = input.reports.get(node);
    const inCatalog = catalog.has(node);
    if (!r) {
      return {
        node,
        status: "never-reported",
        release_id: null,
        on_latest: false,
        behind: false,
        in_catalog: inCatalog,
        phase: null,
        error: null,
        started_at: null,
        finished_at: null,
        age_ms: null,
        duration_ms: null,
        rolled_back_to: null,
        agent_version: null,
        log_tail: "",
      };
    }
    const since = r.status === "deploying" ? r.started_at : (r.finished_at ?? r.started_at);
    const at = Date.parse(since);
    const done = r.status === "success" || r.status === "skipped";
    return {
      node,
      status: r.status,
      release_id: r.release_id ?? null,
      on_latest: done && latestId !== null && r.release_id === latestId,
      behind: done && latestId !== null && r.release_id !== latestId,
      in_catalog: inCatalog,
      phase: r.phase ?? null,
      error: r.error ?? null,
      started_at: r.started_at,
      finished_at: r.finished_at ?? null,
      age_ms: Number.isNaN(at) ? null : Math.max(0, now - at),
      duration_ms: r.duration_ms ?? null,
      rolled_back_to: r.rolled_back_to ?? null,
      agent_version: r.agent_version ?? null,
      log_tail: typeof r.log_tail === "string" ? r.log_tail : "",
    };
  });
  rows.sort(compareRows);
  return {
    prefix: input.prefix,
    role: input.role,
    service: input.service ?? input.role,
    latest: input.latest,
    rows,
    counts: countRows(rows),
    unreadable: input.unreadable ?? [],
    generated_at: input.now.toISOString(),
  };
}

function countRows(rows: FleetRow[]): FleetCounts {
  const c: FleetCounts = {
    nodes: rows.length,
    on_latest: 0,
    success: 0,
    failure: 0,
    deploying: 0,
    skipped: 0,
    never_reported: 0,
    behind: 0,
    not_in_catalog: 0,
  };
  for (const r of rows) {
    if (r.on_latest) c.on_latest++;
    if (r.behind) c.behind++;
    if (r.status === "never-reported") c.never_reported++;
    else c[r.status]++;
    if (!r.in_catalog) c.not_in_catalog++;
  }
  return c;
}

// ------------------------------------------------------------------ reading from Consul

/** Reports under a nodes prefix, by node (the key's last segment); values that are not reports are listed apart. */
export function reportsOf(
  entries: readonly KvEntry[],
  nodesPrefix: string,
): { reports: Map<string, NodeReport>; unreadable: string[] } {
  const reports = new Map<string, NodeReport>();
  const unreadable: string[] = [];
  for (const e of entries) {
    const node = e.key.slice(nodesPrefix.length);
    if (node === "" || node.includes("/")) continue;
    let report: NodeReport | undefined;
    try {
      report = parseReport(JSON.parse(new TextDecoder().decode(e.value ?? new Uint8Array())));
    } catch {
      report = undefined;
    }
    if (report) reports.set(node, report);
    else unreadable.push(e.key);
  }
  return { reports, unreadable };
}

/** `latest`'s value, or null; a value that does not parse is named in `unreadable`. */
export function latestOf(entry: KvEntry | null, unreadable: string[]): ReleaseRecord | null {
  if (!entry) return null;
  const parsed = parseReleaseRecord(new TextDecoder().decode(entry.value ?? new Uint8Array()));
  if (typeof parsed === "string") {
    unreadable.push(entry.key);
    return null;
  }
  return parsed;
}

/** The distinct node names of a service's catalog instances. */
export async function catalogNodesOf(consul: ConsulClient, service: string): Promise<string[]> {
  return [...new Set((await consul.catalogService(service)).map((i) => i.node))];
}

/** Read the role's latest release, its catalog nodes and their reports, and build the view. */
export async function readFleet(o: {
  consul: ConsulClient;
  prefix: string;
  role: string;
  service?: string;
  now?: () => Date;
}): Promise<FleetView> {
  const service = o.service ?? o.role;
  const nodesPrefix = `${kvKeys.role(o.prefix, o.role)}/nodes/`;
  const [latest, catalog, list] = await Promise.all([
    o.consul.kvGet(kvKeys.latest(o.prefix, o.role)),
    catalogNodesOf(o.consul, service),
    o.consul.kvList(nodesPrefix),
  ]);
  const { reports, unreadable } = reportsOf(list.entries, nodesPrefix);
  return fleetView({
    prefix: o.prefix,
    role: o.role,
    service,
    latest: latestOf(latest.entry, unreadable),
    catalog,
    reports,
    unreadable,
    now: (o.now ?? (() => new Date()))(),
  });
}

// ------------------------------------------------------------------ the text form (`pulldeploy status`)

const MARKERS: Record<Attention, string> = { failed: "!", "never-reported": "?", behind: "~", "not-in-catalog": "*" };
const ANSI = { red: 31, green: 32, yellow: 33, cyan: 36, dim: 2, bold: 1 } as const;
type Paint = keyof typeof ANSI | undefined;

/** A status word as people read it. */
/**
 * The view as a table for a terminal: the latest release, a one-line count, then one row per node with
 * a marker column (`!` failed, `~` runs an older release, `?` never reported, `*` not in the catalog)
 * and a legend for the markers used. `color` adds ANSI colours (status words, markers, old releases).
 */
export function renderFleet(view: FleetView, opts: { color: boolean }): string {
  const paint = (text: string, p: Paint) => (opts.color && p && text !== "" ? `\x1b[${ANSI[p]}m${text}\x1b[0m` : text);
  const now = Date.parse(view.generated_at);
  const out: string[] = [];
  const latestKey = kvKeys.latest(view.prefix, view.role);
  if (view.latest) {
    const l = view.latest;
    const age = Date.parse(l.created_at);
    const by = [
      Number.isNaN(age) ? "" : `${formatAge(Math.max(0, now - age))} ago`,
      l.publisher ? `by ${l.publisher}` : "",
    ]
      .filter(Boolean)
      .join(" ");
    out.push(
      `${paint(view.role, "bold")}: latest release ` +
        `${paint(l.id, "bold")}${by ? `, published ${by}` : ""}${l.message ? `: ${l.message}` : ""}`,
    );
  } else {
    out.push(`${paint(view.role, "bold")}: no release recorded yet (${latestKey} is empty)`);
  }
  if (view.rows.length === 0) {
    out.push(
      `no nodes: service "${view.service}" has no instances in Consul's catalog and no agent has reported ` +
        `under ${kvKeys.role(view.prefix, view.role)}/nodes/`,
    );
    return `${out.join("\n")}\n`;
  }
  const c = view.counts;
  const parts = [`${c.nodes} node${c.nodes === 1 ? "" : "s"}`];
  const tally: [number, string, Paint][] = [
    [c.on_latest, "on latest", "green"],
    [c.deploying, "deploying", "cyan"],
    [c.failure, "failed", "red"],
    [c.behind, "on an older release", "yellow"],
    [c.never_reported, "never reported", "yellow"],
    [c.not_in_catalog, "not in the catalog", "yellow"],
  ];
  const counted = tally.filter(([n]) => n > 0).map(([n, what, p]) => paint(`${n} ${what}`, p));
  out.push(`${parts[0]}${counted.length ? `: ${counted.join(", ")}` : ""}`);
  out.push("");

  const header = ["", "NODE", "STATUS", "RELEASE", "PHASE", "AGE", "ERROR"];
  const cells = view.rows.map((r) => {
    const why = attention(r);
    const statusPaint: Paint =
      r.status === "success"
        ? "green"
        : r.status === "failure"
          ? "red"
          : r.status === "deploying"
            ? "cyan"
            : r.status === "never-reported"
              ? "yellow"
              : "dim";
    const release = r.release_id ?? "-";
    const notes = [
      r.in_catalog ? "" : "not in catalog",
      r.rolled_back_to ? `rolled back to ${r.rolled_back_to}` : "",
    ].filter(Boolean);
    return [
      [why ? MARKERS[why] : "", why === "failed" ? "red" : why ? "yellow" : undefined],
      [r.node, undefined],
      [statusText(r.status), statusPaint],
      [release, r.behind ? "yellow" : undefined],
      [r.phase ?? "-", undefined],
      [formatAge(r.age_ms), undefined],
      [[r.error ?? "", ...notes.map((n) => `(${n})`)].filter(Boolean).join(" "), r.error ? "red" : "dim"],
    ] as [string, Paint][];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((row) => row[i]![0].length)));
  const line = (row: [string, Paint][]) =>
    row
      .map(([text, p], i) =>
        i === row.length - 1 ? paint(text, p) : paint(text, p) + " ".repeat(widths[i]! - text.length),
      )
      .join("  ")
      .trimEnd();
  out.push(line(header.map((h) => [h, undefined] as [string, Paint])));
  for (const row of cells) out.push(line(row));

  const used = new Set(view.rows.map(attention).filter((a): a is Attention => a !== null));
  if (used.size > 0) {
    const legend: Record<Attention, string> = {
      failed: "failed",
      "never-reported": "never reported",
      behind: "runs an older release",
      "not-in-catalog": `not in the catalog of service "${view.service}"`,
    };
    out.push("");
    out.push(
      (Object.keys(MARKERS) as Attention[])
        .filter((a) => used.has(a))
        .map((a) => `${MARKERS[a]} ${legend[a]}`)
        .join("   "),
    );
  }
  if (view.unreadable.length > 0) out.push(`not readable as reports or release records: ${view.unreadable.join(", ")}`);
  return `${out.join("\n")}\n`;
}
