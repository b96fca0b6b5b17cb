/**
 * The agent's fleet state through the compiled binary, against the Consul stand-in: exactly-once
 * events, one deploy at a time per host, reports in KV, --from-kv, --follow.
 */
import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { appRelease, BINARY, run, tempDir, waitFor } from "../support/helpers.ts";
import { startConsulStandin } from "../support/consul-standin.ts";
import { freePort } from "../support/serf.ts";

const consulEvent = (id: string, url: string) =>
  `[${JSON.stringify({ ID: id, Name: "deploy", Payload: Buffer.from(url).toString("base64"), NodeFilter: "", ServiceFilter: "", TagFilter: "", Version: 1, LTime: 7 })}]\n`;
const countLines = (f: string) =>
  fs.existsSync(f) ? fs.readFileSync(f, "utf8").trim().split("\n").filter(Boolean).length : 0;

function release(dir: string, name: string, version: string, extra = "") {
  const store = join(dir, `store-${name}`);
  fs.mkdirSync(store, { recursive: true });
  return appRelease(
    store,
    { VERSION: version },
    (a) =>
      `src: file://${a.path}\nchecksum: ${a.sha256}\ndest: ${dir}/dest\nrelease_id: ${name}\ncommands:\n  ` +
      `success: ["echo ${name} >> ${dir}/deploys.log"]\n${extra}`,
  );
}

/** What publish records as a role's latest release. */
const record = (id: string, manifestUrl: string, checksum: string) =>
  JSON.stringify({
    id,
    role: "web",
    manifest_url: manifestUrl,
    archive_url: "",
    algorithm: "sha256",
    checksum,
    size: null,
    files: null,
    created_at: new Date().toISOString(),
    publisher: "test@host",
    message: "",
  });

describe("exactly once", () => {
  test("a replayed consul event (watch restart, watch-5 style) deploys nothing; --force deploys", async () => {
    await using d = tempDir();
    const state = join(d.path, "state");
    const rel = release(d.path, "r1", "1");
    const env = { CONSUL_INDEX: "42", PULLDEPLOY_STATE_DIR: state };
    expect((await run(["agent"], { stdin: consulEvent("ev-1", rel.manifestUrl), env })).code).toBe(0);
    expect(countLines(join(d.path, "deploys.log"))).toBe(1);
    // consul watch restarts and hands over every buffered event again.
    const replay = await run(["agent"], { stdin: consulEvent("ev-1", rel.manifestUrl), env });
    expect(replay.code).toBe(0);
    expect(replay.stderr).toContain("skip: consul event ev-1 was handled already");
    expect(countLines(join(d.path, "deploys.log"))).toBe(1);
    const forced = await run(["agent", "--force"], { stdin: consulEvent("ev-1", rel.manifestUrl), env });
    expect(forced.code).toBe(0);
    expect(countLines(join(d.path, "deploys.log"))).toBe(2);
  });

  test("a corrupt state file is survived and rewritten", async () => {
    await using d = tempDir();
    const state = join(d.path, "state");
    fs.mkdirSync(state);
    fs.writeFileSync(join(state, "state.json"), "{not json");
    const rel = release(d.path, "r1", "1");
    const r = await run(["agent"], {
      stdin: consulEvent("ev-9", rel.manifestUrl),
      env: { CONSUL_INDEX: "1", PULLDEPLOY_STATE_DIR: state },
    });
    expect(r.stderr).toContain("is corrupt; starting fresh");
    expect(countLines(join(d.path, "deploys.log"))).toBe(1);
    expect(JSON.parse(fs.readFileSync(join(state, "state.json"), "utf8"))).toMatchObject({
      last_event_id: "ev-9",
      release_id: "r1",
      status: "success",
    });
  });

  test("two agents started together on one host deploy once, in turn", async () => {
    await using d = tempDir();
    const state = join(d.path, "state");
    const rel = release(d.path, "r1", "1", `  pre: ["sleep 0.5"]\n`);
    const env = { CONSUL_INDEX: "5", PULLDEPLOY_STATE_DIR: state };
    const [a, b] = await Promise.all([
      run(["agent"], { stdin: consulEvent("ev-2", rel.manifestUrl), env }),
      run(["agent"], { stdin: consulEvent("ev-2", rel.manifestUrl), env }),
    ]);
    expect([a.code, b.code]).toEqual([0, 0]);
    expect(countLines(join(d.path, "deploys.log"))).toBe(1);
    const waited = [a, b].find((r) => r.stderr.includes("skip: consul event ev-2 was handled already"))!;
    expect(waited.stderr).toMatch(/lock: another agent \(pid \d+\) is deploying on this host; waiting/);
  });

  test("--lock-wait 0 gives up at once with a clear message", async () => {
    await using d = tempDir();
    const state = join(d.path, "state");
    fs.mkdirSync(state);
    // The lock is flock(2)ed: a holder (util-linux flock) that says when it has it.
    const holder = Bun.spawn(["flock", join(state, "lock"), "sh", "-c", "echo locked; exec sleep 30"], {
      stdout: "pipe",
    });
    fs.writeFileSync(join(state, "lock"), `${holder.pid}\n`);
    try {
      const reader = holder.stdout.getReader();
      expect(new TextDecoder().decode((await reader.read()).value)).toBe("locked\n");
      const r = await run(["agent", "--lock-wait", "0", "--manifest", "file:///x.yml"], {
        env: { PULLDEPLOY_STATE_DIR: state },
      });
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`another pulldeploy agent (pid ${holder.pid}) is deploying on this host`);
    } finally {
      holder.kill();
    }
  });
});

describe("reports in Consul KV", () => {
  test("success and failure are reported under the node's name from the Consul agent", async () => {
    await using d = tempDir();
    await using consul = await startConsulStandin({ nodeName: "web-1" });
    const ok = release(d.path, "r1", "1");
    const r = await run(["agent", "--role", "web", "--manifest", ok.manifestUrl], { env: consul.env });
    expect(r.code).toBe(0);
    const report = JSON.parse(new TextDecoder().decode(consul.kvEntry("pulldeploy/roles/web/nodes/web-1")!.value!));
    expect(report).toMatchObject({
      node: "web-1",
      role: "web",
      status: "success",
      phase: "done",
      release_id: "r1",
      checksum: ok.sha256,
      error: null,
      agent_version: "0.1.0",
    });
    expect(report.duration_ms).toBeGreaterThanOrEqual(0);
    expect(report.log_tail).toContain("deploy succeeded");
    // The report went through each phase on the way.
    const phases = consul.requests
      .filter((q) => q.method === "PUT" && q.path.endsWith("/nodes/web-1"))
      .map((q) => JSON.parse(q.text).phase);
    expect(phases).toEqual(expect.arrayContaining(["manifest", "fetch", "pre", "sync", "post", "done"]));

    fs.writeFileSync(ok.manifestPath, "src: [broken\n");
    expect((await run(["agent", "--role", "web", "--manifest", ok.manifestUrl], { env: consul.env })).code).toBe(1);
    const failed = JSON.parse(new TextDecoder().decode(consul.kvEntry("pulldeploy/roles/web/nodes/web-1")!.value!));
    expect(failed).toMatchObject({ status: "failure", phase: "manifest" });
    expect(failed.error).toStartWith("manifest: YAML syntax:");
  });

  test("Consul down never fails a deploy; the report waits in the state file and the next run sends it", async () => {
    await using d = tempDir();
    const state = join(d.path, "state");
    const port = await freePort();
    const rel = release(d.path, "r1", "1");
    const down = await run(["agent", "--role", "web", "--node", "web-9", "--manifest", rel.manifestUrl], {
      env: { CONSUL_HTTP_ADDR: `127.0.0.1:${port}`, PULLDEPLOY_STATE_DIR: state },
    });
    expect(down.code).toBe(0);
    expect(down.stderr).toContain("the deploy goes on, the report is sent when Consul answers");
    expect(JSON.parse(fs.readFileSync(join(state, "state.json"), "utf8")).pending_report).toMatchObject({
      node: "web-9",
      status: "success",
    });
    await using consul = await startConsulStandin({ port });
    const later = await run(["agent", "--role", "web", "--node", "web-9", "--manifest", rel.manifestUrl], {
      env: { ...consul.env, PULLDEPLOY_STATE_DIR: state },
    });
    expect(later.stderr).toContain("report: sent the report Consul missed earlier (success, release r1)");
    expect(JSON.parse(fs.readFileSync(join(state, "state.json"), "utf8")).pending_report).toBeUndefined();
  });
});

describe("--from-kv and --follow", () => {
  test("--from-kv on an empty role says so and exits 1", async () => {
    await using consul = await startConsulStandin();
    const r = await run(["agent", "--role", "web", "--from-kv"], { env: consul.env });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(
      "no release recorded for role web yet (pulldeploy/roles/web/latest is empty): nothing to deploy",
    );
  });

  test("--from-kv deploys the latest release once; a failing one exits 1", async () => {
    await using d = tempDir();
    await using consul = await startConsulStandin();
    const state = join(d.path, "state");
    const rel = release(d.path, "r1", "1");
    consul.kvPut("pulldeploy/roles/web/latest", record("r1", rel.manifestUrl, rel.sha256));
    const env = { ...consul.env, PULLDEPLOY_STATE_DIR: state };
    expect((await run(["agent", "--role", "web", "--from-kv"], { env })).code).toBe(0);
    const again = await run(["agent", "--role", "web", "--from-kv"], { env });
    expect(again.code).toBe(0);
    expect(again.stderr).toContain("skip: release r1 is already deployed here");
    const bad = release(d.path, "r2", "2", `  pre: ["exit 7"]\n`);
    consul.kvPut("pulldeploy/roles/web/latest", record("r2", bad.manifestUrl, bad.sha256));
    expect((await run(["agent", "--role", "web", "--from-kv"], { env })).code).toBe(1);
  });

  test("--kv-prefix is normalised as publish and status normalise it: /custom/ is custom; / is refused", async () => {
    await using d = tempDir();
    await using consul = await startConsulStandin({ nodeName: "web-1" });
    const rel = release(d.path, "r1", "1");
    consul.kvPut("custom/roles/web/latest", record("r1", rel.manifestUrl, rel.sha256));
    const env = { ...consul.env, PULLDEPLOY_STATE_DIR: join(d.path, "state") };
    const r = await run(["agent", "--role", "web", "--from-kv", "--kv-prefix", "/custom/"], { env });
    expect(r.stderr).toContain("from-kv: latest release of web is r1");
    expect(r.code).toBe(0);
    // The report lands where publish --kv-prefix /custom/ and status --kv-prefix /custom/ look for it.
    expect(JSON.parse(new TextDecoder().decode(consul.kvEntry("custom/roles/web/nodes/web-1")!.value!))).toMatchObject({
      status: "success",
      release_id: "r1",
    });
    const reportKeys = consul.requests
      .filter((q) => q.method === "PUT" && q.path.includes("/nodes/"))
      .map((q) => q.path);
    expect(reportKeys.length).toBeGreaterThan(0);
    expect(reportKeys.every((k) => k === "/v1/kv/custom/roles/web/nodes/web-1")).toBe(true);

    const empty = await run(["agent", "--role", "web", "--from-kv", "--kv-prefix", "//"], { env });
    expect(empty.code).toBe(2);
    expect(empty.stderr.trim().split("\n").at(-1)).toEndWith(
      " pulldeploy agent: --kv-prefix: the KV prefix must not be empty",
    );
  });

  test("--follow converges after a KV change and after Consul restarts, and stops on SIGTERM", async () => {
    await using d = tempDir();
    await using consul = await startConsulStandin({ port: await freePort() });
    const r1 = release(d.path, "r1", "1");
    // (A different size: rsync's quick check would skip a same-size file written in the same second.)
    const r2 = release(d.path, "r2", "two");
    const proc = Bun.spawn([BINARY, "agent", "--role", "web", "--follow", "--follow-wait", "1s"], {
      stderr: "pipe",
      env: { PATH: process.env.PATH!, ...consul.env, PULLDEPLOY_STATE_DIR: join(d.path, "state") },
    });
    const version = () =>
      fs.existsSync(join(d.path, "dest/VERSION")) ? fs.readFileSync(join(d.path, "dest/VERSION"), "utf8") : "";
    try {
      consul.kvPut("pulldeploy/roles/web/latest", record("r1", r1.manifestUrl, r1.sha256));
      await waitFor(() => version() === "1", "follow to deploy r1");
      // Consul restarts in dev mode (indices go backwards, KV empty): the agent reconnects and converges.
      await consul.restart({ wipe: true });
      consul.kvPut("pulldeploy/roles/web/latest", record("r2", r2.manifestUrl, r2.sha256));
      await waitFor(() => version() === "two", "follow to deploy r2 after the restart", 20_000).catch(async (err) => {
        proc.kill("SIGKILL");
        throw new Error(`${err.message}; agent said: ${await new Response(proc.stderr).text()}`);
      });
      proc.kill("SIGTERM");
      expect(await proc.exited).toBe(0);
      const stderr = await new Response(proc.stderr).text();
      expect(stderr).toContain("follow: stopped");
      expect(countLines(join(d.path, "deploys.log"))).toBe(2);
    } finally {
      proc.kill("SIGKILL");
    }
  });
});
