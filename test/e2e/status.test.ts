/**
 * `pulldeploy status` through the compiled binary against the Consul stand-in: catalog nodes
 * registered, the latest release and agents' reports in KV.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { kvKeys, renderReleaseRecord, type ReleaseRecord } from "../../src/records/release.ts";
import type { NodeReport } from "../../src/records/report.ts";
import { startConsulStandin, type ConsulStandin } from "../support/consul-standin.ts";
import { BINARY, run } from "../support/helpers.ts";

const NEW = "20260301T115000Z-0123456789ab";
const OLD = "20260228T090000Z-aaaaaaaaaaaa";
const ERROR = "post: command failed with exit code 1: ./restart.sh";

function record(role: string, id: string): string {
  const r: ReleaseRecord = {
    id,
    role,
    manifest_url: `file:///store/${role}/${id}.yml`,
    archive_url: `file:///store/${role}/${id}.tar.gz`,
    algorithm: "sha256",
    checksum: id.slice(-12).padEnd(64, "0"),
    size: 2048,
    files: 3,
    created_at: new Date(Date.now() - 10 * 60_000).toISOString(),
    publisher: "ci@build-1",
    message: "fix the login page",
  };
  return renderReleaseRecord(r);
}

function report(role: string, node: string, patch: Partial<NodeReport> = {}): string {
  const r: NodeReport = {
    node,
    role,
    status: "success",
    phase: "done",
    release_id: NEW,
    manifest_url: `file:///store/${role}/${NEW}.yml`,
    checksum: null,
    error: null,
    rolled_back_to: null,
    event_id: null,
    started_at: new Date(Date.now() - 5 * 60_000).toISOString(),
    finished_at: new Date(Date.now() - 4 * 60_000).toISOString(),
    duration_ms: 60_000,
    agent_version: "0.1.0",
    log_tail: "deployed\n",
    ...patch,
  };
  return JSON.stringify(r);
}

let consul: ConsulStandin;
let env: Record<string, string>;

beforeAll(async () => {
  consul = await startConsulStandin();
  env = consul.env;
  for (const n of ["web-1", "web-2", "web-3", "web-4"]) consul.addNode(n, { services: ["web"] });
  consul.addNode("api-1", { services: ["api-svc"] });
  consul.addNode("api-2", { services: ["api-svc"] });
  consul.kvPut(kvKeys.latest("pulldeploy", "web"), record("web", NEW));
  consul.kvPut(kvKeys.node("pulldeploy", "web", "web-1"), report("web", "web-1"));
  consul.kvPut(
    kvKeys.node("pulldeploy", "web", "web-2"),
    report("web", "web-2", { status: "failure", phase: "post", error: ERROR }),
  );
  consul.kvPut(kvKeys.node("pulldeploy", "web", "web-3"), report("web", "web-3", { release_id: OLD }));
  // web-4 never reported; web-9 reports but is not in the catalog (decommissioned).
  consul.kvPut(kvKeys.node("pulldeploy", "web", "web-9"), report("web", "web-9"));
  // Role "api" runs under service "api-svc", under another KV prefix: all on the latest.
  consul.kvPut(kvKeys.latest("deploys", "api"), record("api", NEW));
  for (const n of ["api-1", "api-2"]) consul.kvPut(kvKeys.node("deploys", "api", n), report("api", n));
});
afterAll(() => consul.stop());

describe("pulldeploy status", () => {
  test("a failed node, a node on an old release, one that never reported: a table with markers, exit 1", async () => {
    const r = await run(["status", "--role", "web"], { env });
    expect(r.code).toBe(1);
    expect(r.stdout).not.toContain("\x1b["); // not a TTY: no colour
    const lines = r.stdout.split("\n");
    expect(lines[0]).toBe(`web: latest release ${NEW}, published 10m ago by ci@build-1: fix the login page`);
    expect(lines[1]).toBe(
      "5 nodes: 2 on latest, 1 failed, 1 on an older release, 1 never reported, 1 not in the catalog",
    );
    expect(lines[3]).toMatch(/^ {3}NODE +STATUS +RELEASE +PHASE +AGE +ERROR$/);
    const row = (node: string) => lines.find((l) => l.slice(3).startsWith(`${node} `))!;
    expect(row("web-1")).toMatch(new RegExp(`^   web-1  success +${NEW}  done +4m$`));
    expect(row("web-2")).toMatch(new RegExp(`^!  web-2  failure +${NEW}  post +4m +${ERROR.replaceAll(".", "\\.")}$`));
    expect(row("web-3")).toMatch(new RegExp(`^~  web-3  success +${OLD}  done +4m$`));
    expect(row("web-4")).toMatch(/^\? {2}web-4 {2}never reported +- +- +-$/);
    expect(row("web-9")).toMatch(/^\* {2}web-9 {2}success .*\(not in catalog\)$/);
    expect(lines.map((l) => l.slice(3, 8)).filter((n) => n.startsWith("web-"))).toEqual([
      "web-1",
      "web-2",
      "web-3",
      "web-4",
      "web-9",
    ]);
    expect(r.stdout).toContain(
      `! failed   ? never reported   ~ runs an older release   * not in the catalog of service "web"`,
    );
    expect(r.stderr).toBe("");
  });

  test("on a terminal: colours (failure red, success green, markers), none with NO_COLOR", async () => {
    // util-linux `script` gives the binary a pseudo-terminal as stdout.
    const onTty = async (extra: Record<string, string> = {}) => {
      const p = Bun.spawn(["script", "-qec", `${BINARY} status --role web`, "/dev/null"], {
        env: { PATH: process.env.PATH, ...env, ...extra },
        stdin: "ignore",
        stdout: "pipe",
        stderr: "pipe",
        timeout: 30_000,
      });
      const [stdout, code] = await Promise.all([new Response(p.stdout).text(), p.exited]);
      return { stdout, code };
    };
    const colored = await onTty();
    expect(colored.code).toBe(1);
    expect(colored.stdout).toContain("\x1b[31mfailure\x1b[0m");
    expect(colored.stdout).toContain("\x1b[32msuccess\x1b[0m");
    expect(colored.stdout).toContain("\x1b[31m!\x1b[0m");
    expect(colored.stdout).toContain(`\x1b[33m${OLD}\x1b[0m`);
    const plain = await onTty({ NO_COLOR: "1" });
    expect(plain.stdout).toContain("failure");
    expect(plain.stdout).not.toContain("\x1b[");
  });

  test("--json prints the view: latest, counts and one object per node", async () => {
    const r = await run(["status", "--role", "web", "--json"], { env });
    expect(r.code).toBe(1);
    const view = JSON.parse(r.stdout);
    expect(view.latest.id).toBe(NEW);
    expect(view.counts).toEqual({
      nodes: 5,
      on_latest: 2,
      success: 3,
      failure: 1,
      deploying: 0,
      skipped: 0,
      never_reported: 1,
      behind: 1,
      not_in_catalog: 1,
    });
    expect(
      view.rows.map(
        (x: { node: string; status: string; release_id: string | null; on_latest: boolean; in_catalog: boolean }) => [
          x.node,
          x.status,
          x.release_id,
          x.on_latest,
          x.in_catalog,
        ],
      ),
    ).toEqual([
      ["web-1", "success", NEW, true, true],
      ["web-2", "failure", NEW, false, true],
      ["web-3", "success", OLD, false, true],
      ["web-4", "never-reported", null, false, true],
      ["web-9", "success", NEW, true, false],
    ]);
    expect(view.rows[1].error).toBe(ERROR);
    expect(view.rows[1].log_tail).toBe("deployed\n");
    expect(view.rows[0].age_ms).toBeGreaterThanOrEqual(4 * 60_000);
  });

  test("every node on the latest: exit 0 (--service and --kv-prefix)", async () => {
    const r = await run(["status", "--role", "api", "--service", "api-svc", "--kv-prefix", "deploys"], { env });
    expect(r.code).toBe(0);
    expect(r.stdout.split("\n")[1]).toBe("2 nodes: 2 on latest");
    expect(r.stdout).not.toContain("!");
    // Without --service the catalog has no "api" service: the reports show, marked.
    const wrong = await run(["status", "--role", "api", "--kv-prefix", "/deploys/"], { env });
    expect(wrong.code).toBe(0);
    expect(wrong.stdout).toContain(`* not in the catalog of service "api"`);
  });

  test("an empty role says so clearly", async () => {
    const r = await run(["status", "--role", "db"], { env });
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(
      'db: no release recorded yet (pulldeploy/roles/db/latest is empty)\nno nodes: service "db" has no ' +
        "instances in Consul's catalog and no agent has reported under pulldeploy/roles/db/nodes/\n",
    );
    const json = await run(["status", "--role", "db", "--json"], { env });
    expect(JSON.parse(json.stdout)).toMatchObject({ role: "db", latest: null, rows: [] });
  });

  test.each([
    [[], "--role is required"],
    [["--role", "../etc"], '--role: role "../etc" must be'],
    [["--role", "web", "--bogus"], "unknown flag --bogus"],
    [["--role", "web", "--kv-prefix", "/"], "--kv-prefix: the KV prefix must not be empty"],
  ])("usage error %j: exit 2", async (args, message) => {
    const r = await run(["status", ...args], { env });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(message);
    expect(r.stdout).toBe("");
  });

  test("Consul unreachable: one clear line, exit 1", async () => {
    const r = await run(["status", "--role", "web", "--consul-addr", "127.0.0.1:1"]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toMatch(/pulldeploy status: consul 127\.0\.0\.1:1 unreachable: ECONNREFUSED\n$/);
  });
});
