/**
 * `pulldeploy publish --wait` (and `fire --role … --wait`) through the compiled binary, against the
 * Consul stand-in: publish fires the event and waits; real `pulldeploy agent --role web --node nX`
 * runs get the event as `consul watch` hands it over, deploy, and report to Consul KV; publish ends
 * when every catalog node of the role has reported the new release, or at --wait-timeout.
 */
import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { startConsulStandin, type ConsulStandin, type StoredEvent } from "../support/consul-standin.ts";
import { BINARY, run, tempDir, waitFor, writeTree, type RunResult } from "../support/helpers.ts";

const ID = /^\d{8}T\d{6}Z-[0-9a-f]{12}$/;

/**
 * A fleet: the stand-in with nodes n1, n2 (service "web"), an app, and a hooks file whose `pre` fails where FAIL_PRE=1.
 */
async function fleet(nodes = ["n1", "n2"], service = "web") {
  const consul = await startConsulStandin();
  for (const n of nodes) consul.addNode(n, { services: [service] });
  const dir = tempDir("pd-wait-");
  writeTree(dir.path, { "app/index.html": "v1\n", "app/lib/app.js": "x()\n" });
  fs.writeFileSync(
    join(dir.path, "hooks.yml"),
    `commands:\n  pre:\n    - 'if [ "$FAIL_PRE" = 1 ]; then echo "no disk" >&2; exit 3; fi'\n`,
  );
  return {
    consul,
    dir,
    /** `publish app … --wait` flags, plus `extra`. */
    args: (extra: string[]) => [
      "publish",
      join(dir.path, "app"),
      "--to",
      `file://${dir.path}/store`,
      "--role",
      "web",
      "--dest",
      '{{ must_env "APP_DEST" }}',
      "--manifest",
      join(dir.path, "hooks.yml"),
      ...extra,
    ],
    async [Symbol.asyncDispose]() {
      await consul.stop();
      await dir[Symbol.asyncDispose]();
    },
  };
}

/** Start the binary in the background; `done` resolves with its exit code and output. */
function start(args: string[], env: Record<string, string>) {
  const proc = Bun.spawn([BINARY, ...args], {
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
    env: { PATH: process.env.PATH!, HOME: process.env.HOME ?? "/tmp", ...env },
    timeout: 60_000,
  });
  let exited = false;
  const done: Promise<RunResult> = Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]).then(([stdout, stderr, code]) => {
    exited = true;
    return { stdout, stderr, code };
  });
  return { proc, done, exited: () => exited };
}

/** The event publish fired, once it is there. */
async function firedEvent(consul: ConsulStandin, n = 1): Promise<StoredEvent> {
  await waitFor(() => consul.fired.length >= n, "publish to fire the event", 30_000);
  return consul.fired[n - 1]!;
}

/** `pulldeploy agent --role web --node NODE` handed the event as `consul watch` hands it over. */
function agent(consul: ConsulStandin, ev: StoredEvent, node: string, dir: string, env: Record<string, string> = {}) {
  const stdin = `${JSON.stringify([{ ID: ev.id, Name: ev.name, Payload: Buffer.from(ev.payload!).toString("base64"), NodeFilter: ev.nodeFilter, ServiceFilter: ev.serviceFilter, TagFilter: ev.tagFilter, Version: 1, LTime: ev.ltime }])}\n`;
  return run(["agent", "--role", "web", "--node", node], {
    stdin,
    env: { ...consul.env, CONSUL_INDEX: "7", APP_DEST: join(dir, `dest-${node}`), ...env },
  });
}

const reportOf = (consul: ConsulStandin, node: string) =>
  JSON.parse(new TextDecoder().decode(consul.kvEntry(`pulldeploy/roles/web/nodes/${node}`)!.value!));

describe("publish --wait", () => {
  test("both nodes deploy: progress lines on stderr, 2/2 succeeded, exit 0, only the manifest URL on stdout", async () => {
    await using f = await fleet();
    const publish = start(f.args(["--wait", "--wait-timeout", "30s"]), f.consul.env);
    const ev = await firedEvent(f.consul);
    const url = new TextDecoder().decode(ev.payload!);
    const id = url.replace(/^.*\/(.*)\.yml$/, "$1");
    expect(id).toMatch(ID);
    // Publish is waiting now: the event is out, no node has reported.
    await Bun.sleep(300);
    expect(publish.exited()).toBe(false);

    const agents = await Promise.all([agent(f.consul, ev, "n1", f.dir.path), agent(f.consul, ev, "n2", f.dir.path)]);
    for (const a of agents) expect(a.stderr).toContain("deploy succeeded");
    const r = await publish.done;
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`${url}\n`);
    expect(r.stderr).toContain(`wait: for every node of service "web" to report release ${id} (timeout 30s)`);
    expect(r.stderr).toMatch(/wait: n[12]: success \(1\/2\)\n/);
    expect(r.stderr).toMatch(/wait: n[12]: success \(2\/2\)\n/);
    expect(r.stderr).toContain(`rollout of ${id} to web: 2/2 succeeded\n`);
    for (const n of ["n1", "n2"]) {
      expect(fs.readFileSync(join(f.dir.path, `dest-${n}`, "index.html"), "utf8")).toBe("v1\n");
      expect(reportOf(f.consul, n)).toMatchObject({ node: n, status: "success", release_id: id });
    }
  });

  test("--quiet: no progress lines, still waits; exit 0", async () => {
    await using f = await fleet(["n1"]);
    const publish = start(f.args(["--wait", "--quiet"]), f.consul.env);
    const ev = await firedEvent(f.consul);
    await Bun.sleep(300);
    expect(publish.exited()).toBe(false);
    expect((await agent(f.consul, ev, "n1", f.dir.path)).code).toBe(0);
    const r = await publish.done;
    expect(r.code).toBe(0);
    expect(r.stderr).toBe("");
    expect(r.stdout).toBe(`${new TextDecoder().decode(ev.payload!)}\n`);
  });

  test("one node's pre command fails: exit 1, the failed node and its error named", async () => {
    await using f = await fleet();
    const publish = start(f.args(["--wait", "--wait-timeout", "30s"]), f.consul.env);
    const ev = await firedEvent(f.consul);
    const id = new TextDecoder().decode(ev.payload!).replace(/^.*\/(.*)\.yml$/, "$1");
    const [ok, bad] = await Promise.all([
      agent(f.consul, ev, "n1", f.dir.path),
      agent(f.consul, ev, "n2", f.dir.path, { FAIL_PRE: "1" }),
    ]);
    expect(ok.stderr).toContain("deploy succeeded");
    expect(bad.stderr).toContain("deploy failed in phase pre");
    const r = await publish.done;
    expect(r.code).toBe(1);
    const error = reportOf(f.consul, "n2").error as string;
    expect(error).toContain("exit code 3");
    expect(r.stderr).toContain(`rollout of ${id} to web: 1/2 succeeded, 1 failed (n2)\n`);
    expect(r.stderr).toContain(`  n2: failed in pre: ${error}\n`);
    expect(r.stderr).toContain(`wait: n2: failure in pre: ${error} (`);
    expect(r.stderr).not.toMatch(/n1: failed/);
    // The release itself was published: the URL is still printed.
    expect(r.stdout.trim()).toBe(new TextDecoder().decode(ev.payload!));
  });

  test("a node that never reports: --wait-timeout 2s ends it, exit 1, the node named as not done", async () => {
    await using f = await fleet();
    const started = Date.now();
    const publish = start(f.args(["--wait", "--wait-timeout", "2s"]), f.consul.env);
    const ev = await firedEvent(f.consul);
    const id = new TextDecoder().decode(ev.payload!).replace(/^.*\/(.*)\.yml$/, "$1");
    expect((await agent(f.consul, ev, "n1", f.dir.path)).code).toBe(0);
    const r = await publish.done;
    expect(r.code).toBe(1);
    expect(Date.now() - started).toBeGreaterThanOrEqual(2000);
    expect(Date.now() - started).toBeLessThan(20_000);
    expect(r.stderr).toContain(`rollout of ${id} to web: timed out after 2s: 1/2 succeeded, 1 not done (n2)\n`);
    expect(r.stderr).toContain("  n2: never reported\n");
  });

  test("--service is the catalog service waited on; a role with no nodes there fails at once", async () => {
    await using f = await fleet(["f1"], "frontend");
    // Without --service the role's name is the service: "web" has no nodes.
    const none = await run(f.args(["--wait", "--wait-timeout", "30s"]), { env: f.consul.env });
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(
      /rollout of \S+ to web: no nodes of service "web" in Consul's catalog: nothing to wait for\n/,
    );
    expect(f.consul.fired).toHaveLength(1);

    await Bun.sleep(1000 - (Date.now() % 1000)); // another second, another release id
    const publish = start(f.args(["--wait", "--service", "frontend"]), f.consul.env);
    const ev = await firedEvent(f.consul, 2);
    expect(ev.serviceFilter).toBe("frontend");
    expect((await agent(f.consul, ev, "f1", f.dir.path)).code).toBe(0);
    const r = await publish.done;
    expect(r.code).toBe(0);
    expect(r.stderr).toContain('wait: for every node of service "frontend"');
    expect(r.stderr).toMatch(/rollout of \S+ to web: 1\/1 succeeded\n/);
  });

  test("SIGINT stops the wait with a clear message, exit 1", async () => {
    await using f = await fleet(["n1"]);
    const publish = start(f.args(["--wait"]), f.consul.env);
    await firedEvent(f.consul);
    // Parked on the blocking query for the nodes' reports.
    await f.consul.waitFor(() => f.consul.blocked >= 1, "publish to block on the reports");
    publish.proc.kill("SIGINT");
    const r = await publish.done;
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /wait: stopped waiting \(interrupted by SIGINT\), no node done yet; release \S+ is published and announced, the rollout goes on: pulldeploy status --role web\n/,
    );
  });

  test.each([
    [["--wait", "--no-event"], "--wait cannot go with --no-event"],
    [["--wait", "--dry-run"], "--wait cannot go with --dry-run"],
    [["--wait", "--no-kv"], "--wait cannot go with --no-kv"],
    [["--wait", "--node", "n1"], "--wait cannot go with --node"],
    [["--wait-timeout", "5s"], "--wait-timeout only applies with --wait"],
    [["--wait", "--wait-timeout", "soon"], '--wait-timeout: not a duration: "soon"'],
    [["--wait", "--wait-timeout", "0"], "--wait-timeout: must be more than 0"],
  ])("usage error %j: exit 2, one line, nothing uploaded or fired", async (extra, message) => {
    await using f = await fleet();
    const r = await run(f.args(extra), { env: f.consul.env });
    expect(r.code).toBe(2);
    expect(r.stdout).toBe("");
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toContain(`pulldeploy publish: ${message}`);
    expect(fs.existsSync(join(f.dir.path, "store"))).toBe(false);
    expect(f.consul.fired).toHaveLength(0);
    expect(f.consul.kvEntry("pulldeploy/roles/web/latest")).toBeUndefined();
  });
});

describe("fire --wait", () => {
  test("fire --role --wait re-announces a release and waits for the nodes; without --role it is a usage error", async () => {
    await using f = await fleet(["n1"]);
    const published = await run(f.args(["--no-event"]), { env: f.consul.env });
    expect(published.code).toBe(0);
    const url = published.stdout.trim();
    const id = url.replace(/^.*\/(.*)\.yml$/, "$1");

    const noRole = await run(["fire", url, "--wait"], { env: f.consul.env });
    expect(noRole.code).toBe(2);
    expect(noRole.stderr).toContain("--wait needs --role");
    expect(f.consul.fired).toHaveLength(0);

    const fire = start(["fire", url, "--role", "web", "--wait", "--wait-timeout", "30s"], f.consul.env);
    const ev = await firedEvent(f.consul);
    expect(new TextDecoder().decode(ev.payload!)).toBe(url);
    await Bun.sleep(300);
    expect(fire.exited()).toBe(false);
    expect((await agent(f.consul, ev, "n1", f.dir.path, { FAIL_PRE: "1" })).code).toBe(0); // CONSUL_INDEX: always 0
    const r = await fire.done;
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`rollout of ${id} to web: 0/1 succeeded, 1 failed (n1)\n`);
    expect(r.stderr).toMatch(/ {2}n1: failed in pre: .*exit code 3/);
  });
});

describe("rollback --wait", () => {
  test("rollback --role --wait fires the earlier release and waits for it; with --dest it is a usage error", async () => {
    await using f = await fleet(["n1"]);
    const v1 = (await run(f.args(["--no-event"]), { env: f.consul.env })).stdout.trim();
    await Bun.sleep(1000 - (Date.now() % 1000)); // another second, another release id
    const v2 = (await run(f.args(["--no-event"]), { env: f.consul.env })).stdout.trim();
    expect(v1).toMatch(/\.yml$/);
    expect(v2).toMatch(/\.yml$/);
    expect(v2).not.toBe(v1);
    const v1Id = v1.replace(/^.*\/(.*)\.yml$/, "$1");

    const local = await run(["rollback", "--dest", join(f.dir.path, "dest-n1"), "--wait"], { env: f.consul.env });
    expect(local.code).toBe(2);
    expect(local.stderr).toContain("--wait applies to a fleet rollback (--role ROLE), not to --dest");

    const rollback = start(["rollback", "--role", "web", "--wait", "--wait-timeout", "30s"], f.consul.env);
    const ev = await firedEvent(f.consul);
    expect(new TextDecoder().decode(ev.payload!)).toBe(v1);
    await Bun.sleep(300);
    expect(rollback.exited()).toBe(false);
    expect((await agent(f.consul, ev, "n1", f.dir.path)).stderr).toContain("deploy succeeded");
    const r = await rollback.done;
    expect(r.code).toBe(0);
    expect(r.stderr).toContain(`wait: n1: success (1/1)\n`);
    expect(r.stderr).toContain(`rollout of ${v1Id} to web: 1/1 succeeded\n`);
    expect(reportOf(f.consul, "n1")).toMatchObject({ status: "success", release_id: v1Id });
  });
});
