/**
 * `--via serf` through the compiled binary against two real Serf agents on loopback (Debian's `serf`):
 * the user event reaches both members' handlers; the RPC address comes from the flag or SERF_RPC_ADDR;
 * the 476-byte payload limit for `deploy` is the one real serf enforces; a dead agent leaves the
 * release uploaded with a `pulldeploy fire … --via serf` command to finish.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { parseReleaseRecord } from "../../src/records/release.ts";
import { startConsulStandin } from "../support/consul-standin.ts";
import { run, waitFor, writeTree } from "../support/helpers.ts";
import { freePort, startSerfCluster } from "../support/serf.ts";

let work: string;
let app: string;
let cluster: Awaited<ReturnType<typeof startSerfCluster>>;

const received = (node: string): string[] => {
  const f = join(work, `got-${node}`);
  return fs.existsSync(f)
    ? fs
        .readFileSync(f, "utf8")
        .split("\n")
        .filter((l) => l !== "")
    : [];
};

beforeAll(async () => {
  work = fs.mkdtempSync("/tmp/pd-publish-serf-");
  app = join(work, "app");
  writeTree(app, { "index.html": "hello\n" });
  // Each member appends the payload it receives (stdin: payload + "\n") to its own file.
  const handler = `user:deploy=cat >> ${work}/got-$SERF_SELF_NAME`;
  cluster = await startSerfCluster(work, [
    { name: "a", handler },
    { name: "b", handler },
  ]);
});

afterAll(async () => {
  await cluster?.[Symbol.asyncDispose]();
  fs.rmSync(work, { recursive: true, force: true });
});

describe("--via serf", () => {
  test("the user event reaches every member (RPC address from --serf-rpc-addr)", async () => {
    const r = await run([
      "publish",
      app,
      "--to",
      `file://${work}/store`,
      "--role",
      "web",
      "--dest",
      "/srv/web",
      "--via",
      "serf",
      "--serf-rpc-addr",
      cluster.agents[1]!.rpc,
      "--no-kv",
    ]);
    expect(r.stderr).not.toContain("pulldeploy publish:");
    expect(r.code).toBe(0);
    const url = r.stdout.trim();
    expect(r.stderr).toContain(`fired serf user event deploy via ${cluster.agents[1]!.rpc}: ${url}`);
    await waitFor(
      () => received("a").includes(url) && received("b").includes(url),
      "both serf members ran the handler",
    );
  });

  test("SERF_RPC_ADDR works too; the release is recorded in KV first", async () => {
    await using consul = await startConsulStandin();
    const r = await run(["fire", `file://${work}/store/web/20260101T000000Z-0123456789ab.yml`, "--via", "serf"], {
      env: { ...consul.env, SERF_RPC_ADDR: cluster.agents[0]!.rpc },
    });
    expect(r.code).toBe(0);
    await waitFor(
      () => received("b").includes(`file://${work}/store/web/20260101T000000Z-0123456789ab.yml`),
      "serf event via SERF_RPC_ADDR",
    );

    const p = await run(
      ["publish", app, "--to", `file://${work}/store2`, "--role", "api", "--dest", "/srv/api", "--via", "serf"],
      {
        env: { ...consul.env, SERF_RPC_ADDR: cluster.agents[0]!.rpc },
      },
    );
    expect(p.code).toBe(0);
    const url = p.stdout.trim();
    const latest = parseReleaseRecord(new TextDecoder().decode(consul.kvEntry("pulldeploy/roles/api/latest")!.value));
    expect(typeof latest !== "string" && latest.manifest_url).toBe(url);
    expect(consul.fired).toEqual([]); // the event went through Serf, not Consul
    await waitFor(() => received("a").includes(url), "serf event after the KV writes");
  });

  test("476 bytes is the most real serf takes for deploy, and publish checks it first", async () => {
    expect(() => cluster.event("deploy", "x".repeat(476))).not.toThrow();
    expect(() => cluster.event("deploy", "x".repeat(477))).toThrow(
      "exceeds configured limit of 512 bytes after encoding",
    );

    const fixed = `file://${work}/`.length + "/web/".length + 29 + ".yml".length;
    const to = join(work, "s".repeat(477 - fixed));
    const r = await run([
      "publish",
      app,
      "--to",
      `file://${to}`,
      "--role",
      "web",
      "--dest",
      "/srv/web",
      "--via",
      "serf",
      "--serf-rpc-addr",
      cluster.agents[0]!.rpc,
      "--no-kv",
    ]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('is 477 bytes, 1 more than the 476 that fit in a Serf user event named "deploy"');
    expect(fs.existsSync(to)).toBe(false);
  });

  test("a Serf agent that does not answer: uploaded, not announced, and the fire command to run", async () => {
    const port = await freePort();
    const r = await run([
      "publish",
      app,
      "--to",
      `file://${work}/store3`,
      "--role",
      "web",
      "--dest",
      "/srv/web",
      "--via",
      "serf",
      "--serf-rpc-addr",
      `127.0.0.1:${port}`,
      "--no-kv",
      "--no-delta",
    ]);
    expect(r.code).toBe(1);
    const line = r.stderr.trim().split("\n").at(-1)!;
    expect(line).toMatch(
      /release \S+ is uploaded \(file:\/\/\S+\.yml\) but not announced: serf event deploy failed with exit code 1: Error connecting to Serf agent: .*connection refused; finish with: pulldeploy fire file:\/\/\S+\.yml --via serf --serf-rpc-addr 127\.0\.0\.1:\d+$/,
    );
    expect(fs.readdirSync(join(work, "store3/web")).length).toBe(2);
  });
});
