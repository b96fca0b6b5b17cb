/**
 * `--log-format json` (publish and agent, success and failure), the agent's `--metrics-file` and the
 * dashboard's `/metrics`, through the compiled binary against the Consul stand-in. The exposition
 * text is checked by `lintExposition` (promtool's rules that matter here; Debian's prometheus
 * package, which ships promtool, is ~96 MB installed) and read back sample by sample.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { lintExposition, parseSample } from "../../src/prometheus.ts";
import { kvKeys } from "../../src/records/release.ts";
import { startConsulStandin, type ConsulStandin } from "../support/consul-standin.ts";
import { appRelease, BINARY, run, tempDir, waitFor, writeTree } from "../support/helpers.ts";

const TS = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z /;

/** Every stderr line as JSON; throws (failing the test) on a line that is not an object with time, level, msg. */
function jsonLines(stderr: string): Record<string, string>[] {
  return stderr
    .trimEnd()
    .split("\n")
    .map((line) => {
      const o = JSON.parse(line) as Record<string, string>;
      expect(Object.keys(o).slice(0, 3)).toEqual(["time", "level", "msg"]);
      expect(o.time).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      expect(["info", "error"]).toContain(o.level);
      return o;
    });
}

/** The samples of a metrics file, by `name{labels}` (labels sorted), after checking the whole text. */
function samples(text: string): Map<string, number> {
  expect(lintExposition(text)).toEqual([]);
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    const s = parseSample(line);
    if (!s) continue;
    const labels = Object.entries(s.labels)
      .sort()
      .map(([k, v]) => `${k}=${v}`)
      .join(",");
    out.set(labels ? `${s.name}{${labels}}` : s.name, s.value);
  }
  return out;
}

let consul: ConsulStandin;
let dir: ReturnType<typeof tempDir>;

beforeAll(async () => {
  if (!fs.existsSync(BINARY)) throw new Error(`${BINARY} is missing: run make build`);
  consul = await startConsulStandin();
  dir = tempDir("pd-obs-");
});
afterAll(async () => {
  await consul?.stop();
  await dir?.[Symbol.asyncDispose]();
});

describe("--log-format json and --metrics-file", () => {
  test("publish, then the agent's success and failure: JSON lines with their fields; the metrics file after each", async () => {
    const dest = join(dir.path, "dest");
    writeTree(dir.path, { "app/index.html": "v1\n", "app/lib/app.js": "x()\n" });
    const pub = await run(
      [
        "publish",
        join(dir.path, "app"),
        "--to",
        `file://${dir.path}/store`,
        "--role",
        "web",
        "--dest",
        dest,
        "--log-format",
        "json",
      ],
      { env: consul.env },
    );
    expect(pub.code).toBe(0);
    const plines = jsonLines(pub.stderr);
    expect(plines.every((l) => l.role === "web")).toBe(true);
    const fired = plines.find((l) => l.msg.startsWith("fired consul event deploy "))!;
    const ev = consul.fired[0]!;
    const latest = JSON.parse(new TextDecoder().decode(consul.kvEntry(kvKeys.latest("pulldeploy", "web"))!.value!));
    expect(fired).toMatchObject({ level: "info", role: "web", release_id: latest.id, event_id: ev.id });
    // fire (and so rollback --role, which fires) carries the role and the release too.
    const refire = await run(["fire", latest.manifest_url, "--role", "web", "--log-format", "json"], {
      env: consul.env,
    });
    expect(refire.code).toBe(0);
    const refired = jsonLines(refire.stderr).find((l) => l.msg.startsWith("fired consul event deploy "))!;
    expect(refired).toMatchObject({ role: "web", release_id: latest.id, event_id: consul.fired[1]!.id });

    // The agent, as consul watch runs it.
    const metrics = join(dir.path, "textfile", "pulldeploy.prom");
    fs.mkdirSync(join(dir.path, "textfile"));
    const stdin = `${JSON.stringify([{ ID: ev.id, Name: ev.name, Payload: Buffer.from(ev.payload!).toString("base64"), NodeFilter: "", ServiceFilter: "", TagFilter: "", Version: 1, LTime: ev.ltime }])}\n`;
    const state = join(dir.path, "state");
    const ok = await run(["--log-format=json", "agent", "--role", "web", "--node", "n1", "--metrics-file", metrics], {
      stdin,
      env: { ...consul.env, CONSUL_INDEX: "5", PULLDEPLOY_STATE_DIR: state },
    });
    expect(ok.code).toBe(0);
    expect(fs.readFileSync(join(dest, "index.html"), "utf8")).toBe("v1\n");
    const alines = jsonLines(ok.stderr);
    const done = alines.find((l) => l.msg === "deploy succeeded")!;
    expect(done).toMatchObject({
      level: "info",
      node: "n1",
      role: "web",
      event_id: ev.id,
      release_id: latest.id,
      phase: expect.any(String),
    });
    expect(alines.find((l) => l.msg.startsWith("fetch: "))).toMatchObject({ phase: "fetch", node: "n1" });
    // The node report's log tail stays text.
    const report = JSON.parse(new TextDecoder().decode(consul.kvEntry(kvKeys.node("pulldeploy", "web", "n1"))!.value!));
    expect(report.status).toBe("success");
    for (const line of report.log_tail.trimEnd().split("\n")) expect(line).toMatch(TS);

    const st = fs.statSync(metrics);
    expect(st.mode & 0o777).toBe(0o644);
    expect(fs.readdirSync(join(dir.path, "textfile"))).toEqual(["pulldeploy.prom"]); // no temp file left
    const archiveSize = latest.size as number;
    const m1 = samples(fs.readFileSync(metrics, "utf8"));
    expect(m1.get("pulldeploy_last_deploy_success")).toBe(1);
    expect(m1.get("pulldeploy_deploys_total{result=success}")).toBe(1);
    expect(m1.get("pulldeploy_deploys_total{result=failure}")).toBe(0);
    expect(m1.get("pulldeploy_bytes_fetched_total")).toBe(archiveSize);
    expect(Math.abs(m1.get("pulldeploy_last_deploy_timestamp_seconds")! - Date.now() / 1000)).toBeLessThan(60);
    expect(m1.get("pulldeploy_last_deploy_duration_seconds")).toBeGreaterThanOrEqual(0);
    const sha = latest.checksum as string;
    expect(
      m1.get(
        `pulldeploy_release_info{checksum=${sha},dest=${dest},node=n1,release_id=${latest.id},role=web,strategy=rsync}`,
      ),
    ).toBe(1);

    // A failing deploy (its pre command exits 3) after the archive is fetched: counters go on, the live release stays.
    const bad = appRelease(
      dir.path,
      { "index.html": "v2\n" },
      (a) =>
        `src: file://${a.path}\nchecksum: ${a.sha256}\ndest: ${dest}\ncommands:\n  pre: ["echo 'no disk' >&2; ` +
        `exit 3"]\n`,
      "bad",
    );
    const fail = await run(
      [
        "agent",
        "--log-format",
        "json",
        "--role",
        "web",
        "--node",
        "n1",
        "--metrics-file",
        metrics,
        "--manifest",
        bad.manifestUrl,
      ],
      { env: { ...consul.env, PULLDEPLOY_STATE_DIR: state } },
    );
    expect(fail.code).toBe(1);
    const flines = jsonLines(fail.stderr);
    const failed = flines.find((l) => l.msg.startsWith("deploy failed in phase pre: "))!;
    expect(failed).toMatchObject({ level: "error", phase: "pre", node: "n1", role: "web" });
    expect(failed.event_id).toBeUndefined(); // --manifest: no event
    expect(flines.find((l) => l.msg.includes("no disk"))).toMatchObject({ phase: "pre" });
    const m2 = samples(fs.readFileSync(metrics, "utf8"));
    expect(m2.get("pulldeploy_last_deploy_success")).toBe(0);
    expect(m2.get("pulldeploy_deploys_total{result=success}")).toBe(1);
    expect(m2.get("pulldeploy_deploys_total{result=failure}")).toBe(1);
    expect(m2.get("pulldeploy_bytes_fetched_total")).toBe(archiveSize + fs.statSync(bad.archive).size);
    expect(
      m2.get(
        `pulldeploy_release_info{checksum=${sha},dest=${dest},node=n1,release_id=${latest.id},role=web,strategy=rsync}`,
      ),
    ).toBe(1);
    expect(fs.statSync(metrics).mode & 0o777).toBe(0o644);
  });

  test("a skipped run (the event handled already) leaves the metrics file alone; a garbled file restarts the counters", async () => {
    await using d = tempDir();
    const rel = appRelease(
      d.path,
      { "a.txt": "a\n" },
      (a) => `src: file://${a.path}\nchecksum: ${a.sha256}\ndest: ${d.path}/dest\n`,
    );
    const metrics = join(d.path, "m.prom");
    fs.writeFileSync(metrics, 'pulldeploy_deploys_total{result="success" 7\ngarbage\n');
    const env = { PULLDEPLOY_STATE_DIR: join(d.path, "state") };
    expect((await run(["agent", "--metrics-file", metrics], { stdin: `${rel.manifestUrl}\n`, env })).code).toBe(0);
    const m = samples(fs.readFileSync(metrics, "utf8"));
    expect(m.get("pulldeploy_deploys_total{result=success}")).toBe(1);
    const stdin = `[{"ID":"e1","Payload":"${Buffer.from(rel.manifestUrl).toString("base64")}","LTime":9}]\n`;
    expect((await run(["agent", "--metrics-file", metrics], { stdin, env: { ...env, CONSUL_INDEX: "3" } })).code).toBe(
      0,
    );
    const before = fs.readFileSync(metrics, "utf8");
    const again = await run(["agent", "--metrics-file", metrics], { stdin, env: { ...env, CONSUL_INDEX: "4" } });
    expect(again.stderr).toContain("skip: ");
    expect(fs.readFileSync(metrics, "utf8")).toBe(before);
    expect(samples(before).get("pulldeploy_deploys_total{result=success}")).toBe(2);
  });

  test("the default text log is unchanged; a bad --log-format is a usage error (exit 0 under consul watch)", async () => {
    await using d = tempDir();
    fs.writeFileSync(join(d.path, "m.yml"), 'commands:\n  pre: ["echo hello"]\n');
    const r = await run(["agent", "--manifest", `file://${d.path}/m.yml`]);
    expect(r.code).toBe(0);
    const lines = r.stderr.trimEnd().split("\n");
    for (const line of lines) expect(line).toMatch(TS);
    expect(lines.map((l) => l.replace(TS, ""))).toContain("deploy succeeded");
    const same = await run(["agent", "--log-format", "text", "--manifest", `file://${d.path}/m.yml`]);
    expect(same.stderr.replace(/^\S+ /gm, "")).toBe(r.stderr.replace(/^\S+ /gm, ""));

    const bad = await run(["agent", "--log-format", "xml"], { stdin: "" });
    expect(bad).toMatchObject({
      code: 2,
      stderr: 'pulldeploy agent: --log-format: expected text or json, got "xml"\n',
    });
    expect((await run(["agent", "--log-format", "xml"], { stdin: "[]", env: { CONSUL_INDEX: "1" } })).code).toBe(0);
    expect((await run(["status", "--log-format"])).stderr).toBe(
      "pulldeploy status: --log-format needs a value: text or json\n",
    );
    const empty = await run(["agent", "--metrics-file", ""], { stdin: "" });
    expect(empty.code).toBe(2);
    expect(empty.stderr).toContain("--metrics-file: empty;");
    // A usage error under json: the error line is JSON too.
    const j = await run(["agent", "--log-format", "json", "--bogus"], { stdin: "" });
    expect(jsonLines(j.stderr)).toEqual([
      expect.objectContaining({
        level: "error",
        msg: expect.stringMatching(/^pulldeploy agent: unknown flag --bogus /),
      }),
    ]);
  });
});

describe("dashboard /metrics", () => {
  test("nodes per role per status, on latest and behind, the latest release's age, the newest rollout's state", async () => {
    const c = await startConsulStandin();
    let proc: ReturnType<typeof Bun.spawn> | undefined;
    try {
      const now = Date.now();
      const iso = (agoMs: number) => new Date(now - agoMs).toISOString();
      const id = (agoMs: number, hex: string) =>
        `${iso(agoMs)
          .replace(/[-:]/g, "")
          .replace(/\.\d{3}/, "")}-${hex.repeat(12)}`;
      const NEW = id(600_000, "a");
      const OLD = id(7_200_000, "b");
      const record = (rid: string, agoMs: number) =>
        JSON.stringify({
          id: rid,
          role: "web",
          manifest_url: "file:///m.yml",
          archive_url: "file:///a.tgz",
          algorithm: "sha256",
          checksum: "a".repeat(64),
          size: 10,
          files: 1,
          created_at: iso(agoMs),
          publisher: "ci",
          message: "",
        });
      c.kvPut(kvKeys.latest("pulldeploy", "web"), record(NEW, 600_000));
      const report = (node: string, status: string, rid: string) =>
        JSON.stringify({
          node,
          role: "web",
          status,
          phase: status === "failure" ? "pre" : "done",
          release_id: rid,
          manifest_url: "",
          checksum: null,
          error: null,
          rolled_back_to: null,
          event_id: null,
          started_at: iso(5000),
          finished_at: status === "deploying" ? null : iso(1000),
          duration_ms: 4000,
          agent_version: "0.1.0",
          log_tail: "",
        });
      for (const n of ["w1", "w2", "w3", "w4"]) c.addNode(n, { services: ["web"] });
      c.kvPut(kvKeys.node("pulldeploy", "web", "w1"), report("w1", "success", NEW));
      c.kvPut(kvKeys.node("pulldeploy", "web", "w2"), report("w2", "success", OLD));
      c.kvPut(kvKeys.node("pulldeploy", "web", "w3"), report("w3", "failure", NEW));
      c.kvPut("pulldeploy/roles/web/rollouts/r1", JSON.stringify({ state: "done" }));
      c.kvPut("pulldeploy/roles/web/rollouts/r2", JSON.stringify({ state: "paused", extra: 1 }));
      c.kvPut("pulldeploy/roles/web/rollouts/r3", "not json");
      proc = Bun.spawn([BINARY, "dashboard", "--listen", "127.0.0.1:0", "--log-format", "json"], {
        env: { PATH: process.env.PATH, ...c.env },
        stdout: "pipe",
        stderr: "pipe",
      });
      let stderr = "";
      void (async () => {
        for await (const chunk of proc!.stderr as ReadableStream<Uint8Array>) stderr += new TextDecoder().decode(chunk);
      })();
      await waitFor(
        () => /listening on http:\/\/127\.0\.0\.1:\d+/.test(stderr) || proc!.exitCode !== null,
        "the dashboard's address",
      );
      const url = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(stderr)![1]!;
      expect(JSON.parse(stderr.split("\n")[0]!)).toMatchObject({
        level: "info",
        msg: expect.stringContaining("listening on"),
      });
      let text = "";
      await waitFor(async () => {
        const res = await fetch(`${url}/metrics`);
        text = await res.text();
        expect(res.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
        return (
          text.includes('status="failure"} 1') &&
          text.includes('status="never-reported"} 1') &&
          text.includes("pulldeploy_rollout_info")
        ); // the catalog is read after KV
      }, "the dashboard to read Consul");
      const m = samples(text);
      expect(m.get("pulldeploy_consul_up")).toBe(1);
      expect(m.get("pulldeploy_fleet_nodes{role=web,status=success}")).toBe(2);
      expect(m.get("pulldeploy_fleet_nodes{role=web,status=failure}")).toBe(1);
      expect(m.get("pulldeploy_fleet_nodes{role=web,status=never-reported}")).toBe(1);
      expect(m.get("pulldeploy_fleet_nodes{role=web,status=deploying}")).toBe(0);
      expect(m.get("pulldeploy_fleet_nodes_on_latest{role=web}")).toBe(1);
      expect(m.get("pulldeploy_fleet_nodes_behind{role=web}")).toBe(1);
      const age = m.get(`pulldeploy_latest_release_age_seconds{release_id=${NEW},role=web}`)!;
      expect(age).toBeGreaterThanOrEqual(599);
      expect(age).toBeLessThan(700);
      expect(m.get(`pulldeploy_latest_release_timestamp_seconds{release_id=${NEW},role=web}`)).toBe(
        (now - 600_000) / 1000,
      );
      expect(m.get("pulldeploy_rollout_info{role=web,rollout_id=r2,state=paused}")).toBe(1);
      expect([...m.keys()].filter((k) => k.startsWith("pulldeploy_rollout_info"))).toHaveLength(1);
    } finally {
      proc?.kill("SIGTERM");
      await proc?.exited;
      await c.stop();
    }
  });
});
