/**
 * The fleet view: catalog nodes × reports × the latest release → rows, counts, markers, ages, order;
 * and its text form.
 */
import { describe, expect, test } from "bun:test";
import type { KvEntry } from "../../src/consul/client.ts";
import {
  attention,
  compareRows,
  fleetView,
  formatAge,
  renderFleet,
  reportsOf,
  type FleetInput,
} from "../../src/fleet/view.ts";
import type { ReleaseRecord } from "../../src/records/release.ts";
import type { NodeReport } from "../../src/records/report.ts";

const NOW = new Date("2026-03-01T12:00:00.000Z");
const NEW = "20260301T115000Z-0123456789ab";
const OLD = "20260228T090000Z-aaaaaaaaaaaa";

const LATEST: ReleaseRecord = {
  id: NEW,
  role: "web",
  manifest_url: `file:///store/web/${NEW}.yml`,
  archive_url: `file:///store/web/${NEW}.tar.gz`,
  algorithm: "sha256",
  checksum: "0123456789ab".padEnd(64, "0"),
  size: 1234,
  files: 3,
  created_at: "2026-03-01T11:50:00.000Z",
  publisher: "ci@build-1",
  message: "fix the login page",
};

function report(node: string, patch: Partial<NodeReport> = {}): NodeReport {
  return {
    node,
    role: "web",
    status: "success",
    phase: "done",
    release_id: NEW,
    manifest_url: LATEST.manifest_url,
    checksum: LATEST.checksum,
    error: null,
    rolled_back_to: null,
    event_id: null,
    started_at: "2026-03-01T11:55:00.000Z",
    finished_at: "2026-03-01T11:55:30.000Z",
    duration_ms: 30_000,
    agent_version: "0.1.0",
    log_tail: "deployed\n",
    ...patch,
  };
}

function view(patch: Partial<FleetInput> & { reports?: Map<string, NodeReport> }) {
  return fleetView({
    prefix: "pulldeploy",
    role: "web",
    latest: LATEST,
    catalog: [],
    reports: new Map(),
    now: NOW,
    ...patch,
  });
}

const reports = (...rs: NodeReport[]) => new Map(rs.map((r) => [r.node, r]));

describe("fleetView: one row per node", () => {
  const v = view({
    catalog: ["web-10", "web-2", "web-1", "web-3", "web-4", "web-2"],
    reports: reports(
      report("web-1"),
      report("web-2", {
        status: "failure",
        phase: "post",
        error: "post: command failed with exit code 1: ./restart",
        finished_at: "2026-03-01T11:58:00.000Z",
      }),
      report("web-3", { release_id: OLD, finished_at: "2026-02-28T09:05:00.000Z" }),
      report("web-10", {
        status: "deploying",
        phase: "fetch",
        finished_at: null,
        duration_ms: null,
        started_at: "2026-03-01T11:59:50.000Z",
      }),
      report("web-old", { release_id: OLD }),
    ),
  });
  const row = (n: string) => v.rows.find((r) => r.node === n)!;

  test("natural order, catalog nodes first, duplicates in the catalog once", () => {
    expect(v.rows.map((r) => r.node)).toEqual(["web-1", "web-2", "web-3", "web-4", "web-10", "web-old"]);
  });

  test.each([
    // node, status, release, on_latest, behind, in_catalog, phase, age, attention
    ["web-1", "success", NEW, true, false, true, "done", 270_000, null],
    ["web-2", "failure", NEW, false, false, true, "post", 120_000, "failed"],
    ["web-3", "success", OLD, false, true, true, "done", 96_900_000, "behind"],
    ["web-4", "never-reported", null, false, false, true, null, null, "never-reported"],
    ["web-10", "deploying", NEW, false, false, true, "fetch", 10_000, null],
    ["web-old", "success", OLD, false, true, false, "done", 270_000, "behind"],
  ] as const)("%s: %s", (node, status, release, onLatest, behind, inCatalog, phase, age, why) => {
    const r = row(node);
    expect([r.status, r.release_id, r.on_latest, r.behind, r.in_catalog, r.phase, r.age_ms]).toEqual([
      status,
      release,
      onLatest,
      behind,
      inCatalog,
      phase,
      age,
    ]);
    expect(attention(r)).toBe(why);
  });

  test("a failed node keeps its error; a never-reported node has no log", () => {
    expect(row("web-2").error).toBe("post: command failed with exit code 1: ./restart");
    expect(row("web-4").log_tail).toBe("");
    expect(row("web-1").log_tail).toBe("deployed\n");
  });

  test("counts", () => {
    expect(v.counts).toEqual({
      nodes: 6,
      on_latest: 1,
      success: 3,
      failure: 1,
      deploying: 1,
      skipped: 0,
      never_reported: 1,
      behind: 2,
      not_in_catalog: 1,
    });
  });

  test("the view carries where it was read and when", () => {
    expect([v.prefix, v.role, v.service, v.latest?.id, v.generated_at]).toEqual([
      "pulldeploy",
      "web",
      "web",
      NEW,
      NOW.toISOString(),
    ]);
  });
});

describe("fleetView: edge cases", () => {
  test("no latest release: nobody is on it, nobody is behind", () => {
    const v = view({ latest: null, catalog: ["a"], reports: reports(report("a", { release_id: OLD })) });
    expect([v.rows[0]!.on_latest, v.rows[0]!.behind, attention(v.rows[0]!)]).toEqual([false, false, null]);
  });

  test("an empty role has no rows", () => {
    expect(view({ latest: null }).rows).toEqual([]);
  });

  test("a report that failed before knowing its release", () => {
    const v = view({
      catalog: ["a"],
      reports: reports(report("a", { status: "failure", release_id: null, phase: "manifest", error: "manifest: 404" })),
    });
    expect([v.rows[0]!.release_id, v.rows[0]!.behind, attention(v.rows[0]!)]).toEqual([null, false, "failed"]);
  });

  test("a skip on the latest counts as on latest", () => {
    expect(view({ catalog: ["a"], reports: reports(report("a", { status: "skipped" })) }).rows[0]!.on_latest).toBe(
      true,
    );
  });

  test("a start time that does not parse gives no age", () => {
    expect(
      view({ catalog: ["a"], reports: reports(report("a", { finished_at: null, started_at: "yesterday" })) }).rows[0]!
        .age_ms,
    ).toBeNull();
  });

  test("a clock behind the report's time gives age 0, not a negative one", () => {
    expect(
      view({ catalog: ["a"], reports: reports(report("a", { finished_at: "2026-03-01T12:00:05.000Z" })) }).rows[0]!
        .age_ms,
    ).toBe(0);
  });

  test("--service names the catalog service", () => {
    expect(view({ service: "web-frontend" }).service).toBe("web-frontend");
  });
});

describe("compareRows", () => {
  test.each([
    [
      ["b", "a", "C"],
      ["a", "b", "C"],
    ],
    [
      ["web-10", "web-9", "web-1"],
      ["web-1", "web-9", "web-10"],
    ],
    [
      ["n1.dc2", "n1.dc10", "n1.dc1"],
      ["n1.dc1", "n1.dc2", "n1.dc10"],
    ],
  ])("%j", (names, sorted) => {
    expect(
      names
        .map((node) => ({ node, in_catalog: true }))
        .sort(compareRows)
        .map((r) => r.node),
    ).toEqual(sorted);
  });
});

describe("formatAge", () => {
  test.each([
    [null, "-"],
    [0, "0s"],
    [59_999, "59s"],
    [60_000, "1m"],
    [3_599_999, "59m"],
    [3_600_000, "1h"],
    [47 * 3_600_000, "47h"],
    [48 * 3_600_000, "2d"],
    [400 * 86_400_000, "400d"],
  ])("%p → %s", (ms, text) => expect(formatAge(ms)).toBe(text));
});

describe("reportsOf: KV entries → reports by node", () => {
  const entry = (key: string, value: string | null): KvEntry => ({
    key,
    value: value === null ? null : new TextEncoder().encode(value),
    flags: 0n,
    modifyIndex: 1,
    createIndex: 1,
    lockIndex: 0,
  });
  const P = "pulldeploy/roles/web/nodes/";

  test("the key names the node; bad values are listed, nested keys ignored", () => {
    const { reports: rs, unreadable } = reportsOf(
      [
        entry(`${P}web-1`, JSON.stringify(report("web-1"))),
        entry(`${P}web-2`, "not json"),
        entry(`${P}web-3`, JSON.stringify({ hello: 1 })),
        entry(`${P}web-4`, null),
        entry(`${P}deep/x`, JSON.stringify(report("x"))),
        entry(P, ""),
      ],
      P,
    );
    expect([...rs.keys()]).toEqual(["web-1"]);
    expect(unreadable).toEqual([`${P}web-2`, `${P}web-3`, `${P}web-4`]);
  });
});

describe("renderFleet: the status table", () => {
  const v = view({
    catalog: ["web-1", "web-2", "web-3", "web-4"],
    reports: reports(
      report("web-1"),
      report("web-2", { status: "failure", phase: "post", error: "post: exit 1" }),
      report("web-3", { release_id: OLD }),
      report("web-9"),
    ),
  });

  test("latest release, counts, a row per node with markers, and a legend", () => {
    expect(renderFleet(v, { color: false })).toBe(
      [
        `web: latest release ${NEW}, published 10m ago by ci@build-1: fix the login page`,
        "5 nodes: 2 on latest, 1 failed, 1 on an older release, 1 never reported, 1 not in the catalog",
        "",
        `   NODE   STATUS          RELEASE                        PHASE  AGE  ERROR`,
        `   web-1  success         ${NEW}  done   4m`,
        `!  web-2  failure         ${NEW}  post   4m   post: exit 1`,
        `~  web-3  success         ${OLD}  done   4m`,
        `?  web-4  never reported  -                              -      -`,
        `*  web-9  success         ${NEW}  done   4m   (not in catalog)`,
        "",
        `! failed   ? never reported   ~ runs an older release   * not in the catalog of service "web"`,
        "",
      ].join("\n"),
    );
  });

  test("colour only when asked: status words and markers", () => {
    const plain = renderFleet(v, { color: false });
    const colored = renderFleet(v, { color: true });
    expect(plain).not.toContain("\x1b[");
    expect(colored).toContain("\x1b[31mfailure\x1b[0m");
    expect(colored).toContain("\x1b[32msuccess\x1b[0m");
    expect(colored).toContain("\x1b[33m?\x1b[0m");
    expect(colored.replace(/\x1b\[\d+m/g, "")).toBe(plain);
  });

  test("an empty role says what is missing", () => {
    expect(renderFleet(view({ latest: null }), { color: false })).toBe(
      [
        "web: no release recorded yet (pulldeploy/roles/web/latest is empty)",
        'no nodes: service "web" has no instances in Consul\'s catalog and no agent has reported under ' +
          "pulldeploy/roles/web/nodes/",
        "",
      ].join("\n"),
    );
  });
});
