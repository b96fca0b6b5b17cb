/**
 * The dashboard's pure parts: roles and views from one recursive KV read, change detection, --listen.
 */
import { describe, expect, test } from "bun:test";
import type { KvEntry } from "../../src/consul/client.ts";
import { parseListen } from "../../src/fleet/dashboard/server.ts";
import { dashboardRoles, rolesOf, stateKey } from "../../src/fleet/dashboard/state.ts";
import { renderReleaseRecord, type ReleaseRecord } from "../../src/records/release.ts";
import { rolloutRecord } from "../support/records.ts";

const entry = (key: string, value: string): KvEntry => ({
  key,
  value: new TextEncoder().encode(value),
  flags: 0n,
  modifyIndex: 1,
  createIndex: 1,
  lockIndex: 0,
});

function record(role: string, id: string): string {
  const r: ReleaseRecord = {
    id,
    role,
    manifest_url: `file:///s/${id}.yml`,
    archive_url: `file:///s/${id}.tar.gz`,
    algorithm: "sha256",
    checksum: "0".repeat(64),
    size: null,
    files: null,
    created_at: "2026-03-01T00:00:00.000Z",
    publisher: "me@here",
    message: "",
  };
  return renderReleaseRecord(r);
}

const report = (node: string, release_id: string) =>
  JSON.stringify({
    node,
    role: "web",
    status: "success",
    phase: "done",
    release_id,
    started_at: "2026-03-01T00:00:00.000Z",
    finished_at: "2026-03-01T00:00:01.000Z",
    log_tail: "",
  });

const IDS = ["20260101T000000Z-000000000001", "20260201T000000Z-000000000002", "20260301T000000Z-000000000003"];
const ENTRIES = [
  entry("pulldeploy/roles/api/latest", record("api", IDS[0]!)),
  entry("pulldeploy/roles/web/latest", record("web", IDS[2]!)),
  ...IDS.map((id) => entry(`pulldeploy/roles/web/releases/${id}`, record("web", id))),
  entry("pulldeploy/roles/web/releases/junk", "{"),
  entry("pulldeploy/roles/web/nodes/web-1", report("web-1", IDS[2]!)),
  entry("pulldeploy/roles/web/nodes/web-2", report("web-2", IDS[1]!)),
  entry("pulldeploy/roles/../x", "not a role"),
  entry("pulldeploy/rolesx/other", "not under roles/"),
];

describe("rolesOf", () => {
  test("role names from keys, sorted; names that aren't roles ignored", () => {
    expect(rolesOf(ENTRIES, "pulldeploy")).toEqual(["api", "web"]);
    expect(rolesOf([], "pulldeploy")).toEqual([]);
  });
});

describe("dashboardRoles", () => {
  const now = new Date("2026-03-02T00:00:00.000Z");
  const roles = dashboardRoles({
    entries: ENTRIES,
    prefix: "pulldeploy",
    catalogs: new Map([["web", ["web-1", "web-2", "web-3"]]]),
    now,
  });
  const web = roles.find((r) => r.role === "web")!;

  test("one view per role: latest, rows, recent releases newest first, unreadable keys named", () => {
    expect(roles.map((r) => r.role)).toEqual(["api", "web"]);
    expect(web.latest?.id).toBe(IDS[2]);
    expect(web.rows.map((r) => [r.node, r.status, r.on_latest, r.behind])).toEqual([
      ["web-1", "success", true, false],
      ["web-2", "success", false, true],
      ["web-3", "never-reported", false, false],
    ]);
    expect(web.recent_releases.map((r) => r.id)).toEqual([...IDS].reverse());
    expect(web.release_count).toBe(3);
    expect(web.unreadable).toEqual(["pulldeploy/roles/web/releases/junk"]);
    expect(web.latest_size_text).toBeNull(); // the record does not know its size
  });

  test("the latest release's size comes in words, as the CLI writes sizes", () => {
    const sized = JSON.stringify({ ...JSON.parse(record("web", IDS[2]!)), size: 2_140_000 });
    const [role] = dashboardRoles({
      entries: [entry("pulldeploy/roles/web/latest", sized)],
      prefix: "pulldeploy",
      catalogs: new Map(),
      now,
    });
    expect(role!.latest_size_text).toBe("2.1 MB");
  });

  test("--role limits the roles; a role named but absent from KV is shown empty", () => {
    expect(
      dashboardRoles({ entries: ENTRIES, prefix: "pulldeploy", catalogs: new Map(), only: ["db", "web"], now }).map(
        (r) => [r.role, r.latest?.id ?? null, r.rows.length],
      ),
    ).toEqual([
      ["db", null, 0],
      ["web", IDS[2], 2],
    ]);
  });

  test("stateKey ignores the clock, not the data", () => {
    const later = dashboardRoles({
      entries: ENTRIES,
      prefix: "pulldeploy",
      catalogs: new Map([["web", ["web-1", "web-2", "web-3"]]]),
      now: new Date("2026-03-05T00:00:00.000Z"),
    });
    const ok = { address: "c:8500", ok: true, error: null };
    expect(stateKey(later, ok)).toBe(stateKey(roles, ok));
    expect(stateKey(roles, { ...ok, ok: false, error: "down" })).not.toBe(stateKey(roles, ok));
    const changed = dashboardRoles({
      entries: [...ENTRIES, entry("pulldeploy/roles/web/nodes/web-3", report("web-3", IDS[2]!))],
      prefix: "pulldeploy",
      catalogs: new Map(),
      now,
    });
    expect(stateKey(changed, ok)).not.toBe(stateKey(roles, ok));
  });
});

describe("parseListen", () => {
  test.each([
    ["127.0.0.1:8080", { hostname: "127.0.0.1", port: 8080 }],
    ["localhost:0", { hostname: "localhost", port: 0 }],
    [":9000", { hostname: "0.0.0.0", port: 9000 }],
    ["[::1]:8080", { hostname: "::1", port: 8080 }],
  ])("%s", (value, want) => expect(parseListen(value)).toEqual(want));

  test.each(["8080", "127.0.0.1", "127.0.0.1:99999", "::1:80", "host:port", ""])("%p is refused", (value) => {
    expect(parseListen(value)).toBe(`expected host:port (127.0.0.1:8080, [::1]:8080, :8080), got "${value}"`);
  });
});

describe("dashboardRoles: the latest release's staged rollout", () => {
  test("its lines as status prints them (switching from the slots' holders, waiting), none without a record", () => {
    const id = IDS[2]!;
    const base = `pulldeploy/roles/web/rollouts/${id}`;
    const at = "2026-03-01T00:00:00.000Z";
    const rollout = rolloutRecord({
      release_id: id,
      prepared: ["web-1", "web-2", "web-3"],
      healthy: ["web-1"],
      created_at: at,
      updated_at: at,
    });
    const held: KvEntry = { ...entry(`${base}/slots/s-2`, "web-2"), session: "s-2" };
    const entries = [
      ...ENTRIES,
      entry(base, JSON.stringify(rollout)),
      entry(`${base}/slots/.lock`, '{"Limit":1,"Holders":{"s-2":true}}'),
      held,
    ];
    const roles = dashboardRoles({ entries, prefix: "pulldeploy", catalogs: new Map(), now: new Date(at) });
    expect(roles.find((r) => r.role === "web")!.rollout_lines).toEqual([
      `rollout ${id}: running · 3 prepared, 1 healthy, 0 failed of 3 · 1 slot`,
      "  switching: web-2",
      "  waiting: web-3",
    ]);
    expect(roles.find((r) => r.role === "api")!.rollout_lines).toBeNull();
  });
});
