/**
 * Recording and announcing, through the compiled binary, against the Consul stand-in (which answers
 * like the captured Consul 1.10): the KV writes in order (history create-only, then latest), the
 * event with its filters and the token; `--no-event`, `--dry-run` (nothing changes), the payload limit
 * (404 bytes for `deploy`, checked before anything is uploaded), Consul refusing the token or
 * unreachable after the upload (the printed `pulldeploy fire` command finishes the job), and `fire`.
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { parseReleaseRecord, type ReleaseRecord } from "../../src/records/release.ts";
import { freePort } from "../support/serf.ts";
import { BINARY, listTree, run, tempDir, writeTree, type RunResult } from "../support/helpers.ts";
import { startConsulStandin, type ConsulStandin } from "../support/consul-standin.ts";

const TOKEN = "b1gs3cr3t-t0k3n";
const ID = /\d{8}T\d{6}Z-[0-9a-f]{12}/;

let consul: ConsulStandin;
let dir: { path: string; [Symbol.asyncDispose](): Promise<void> };
let app: string;
let store: string;

beforeEach(async () => {
  consul = await startConsulStandin({ requireToken: TOKEN });
  dir = tempDir("pd-publish-consul-");
  app = join(dir.path, "app");
  store = join(dir.path, "store");
  writeTree(app, { "index.html": "v1\n", "lib/app.js": "x()\n" });
});

afterEach(async () => {
  await consul.stop();
  await dir[Symbol.asyncDispose]();
});

function publish(args: string[], env: Record<string, string | undefined> = consul.env): Promise<RunResult> {
  return run(
    ["publish", app, "--to", `file://${store}`, "--role", "web", "--dest", "/srv/web", "--no-delta", ...args],
    { env: { USER: "tester", ...env } },
  );
}

/** Run a printed `pulldeploy fire …` command line through sh, with the binary first on PATH. */
async function runPrinted(cmd: string, env: Record<string, string>): Promise<RunResult> {
  const bin = join(dir.path, "bin");
  fs.mkdirSync(bin, { recursive: true });
  if (!fs.existsSync(join(bin, "pulldeploy"))) fs.symlinkSync(BINARY, join(bin, "pulldeploy"));
  const p = Bun.spawn(["sh", "-c", cmd], {
    env: { ...env, PATH: `${bin}:${process.env.PATH}` },
    stdout: "pipe",
    stderr: "pipe",
  });
  const [stdout, stderr, code] = await Promise.all([
    new Response(p.stdout).text(),
    new Response(p.stderr).text(),
    p.exited,
  ]);
  return { code, stdout, stderr };
}

function kvRecord(key: string): ReleaseRecord {
  const e = consul.kvEntry(key);
  expect(e).toBeDefined();
  const r = parseReleaseRecord(new TextDecoder().decode(e!.value));
  if (typeof r === "string") throw new Error(r);
  return r;
}

function writes() {
  return consul.requests.filter((r) => r.method === "PUT").map((r) => `${r.path}${r.search ? `?${r.search}` : ""}`);
}

describe("publish records the release, then fires the event", () => {
  test("KV history (create-only), then latest, then the event; every request carries the token", async () => {
    const r = await publish(["--message", "first release", "--publisher", "ci@build-7"]);
    expect(r.stderr).not.toContain("pulldeploy publish:");
    expect(r.code).toBe(0);
    const manifestUrl = r.stdout.trim();
    const id = ID.exec(manifestUrl)![0];
    expect(writes()).toEqual([
      `/v1/kv/pulldeploy/roles/web/releases/${id}?cas=0`,
      "/v1/kv/pulldeploy/roles/web/latest",
      "/v1/event/fire/deploy",
    ]);
    for (const req of consul.requests) expect(req.headers["x-consul-token"]).toBe(TOKEN);
    expect(consul.requests.map((q) => q.search).join("&")).not.toContain(TOKEN);
    expect(r.stderr).not.toContain(TOKEN);

    const archive = fs.readFileSync(join(store, "web", `${id}.tar.gz`));
    const record = kvRecord(`pulldeploy/roles/web/releases/${id}`);
    expect(record).toEqual({
      id,
      role: "web",
      manifest_url: manifestUrl,
      archive_url: `file://${store}/web/${id}.tar.gz`,
      algorithm: "sha256",
      checksum: new Bun.CryptoHasher("sha256").update(archive).digest("hex"),
      size: archive.length,
      files: 2,
      created_at: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/),
      publisher: "ci@build-7",
      message: "first release",
    });
    expect(record.created_at.replace(/[-:]/g, "")).toBe(id.slice(0, 16));
    expect(consul.kvEntry("pulldeploy/roles/web/latest")!.value).toEqual(
      consul.kvEntry(`pulldeploy/roles/web/releases/${id}`)!.value,
    );
    expect(
      consul.fired.map((e) => [
        e.name,
        new TextDecoder().decode(e.payload!),
        e.nodeFilter,
        e.serviceFilter,
        e.tagFilter,
      ]),
    ).toEqual([["deploy", manifestUrl, "", "", ""]]);
  });

  test("--event, --node, --service, --tag and --kv-prefix; the default publisher is $USER@host", async () => {
    const r = await publish([
      "--event",
      "ship",
      "--node",
      "^web-",
      "--service",
      "web",
      "--tag",
      "blue",
      "--kv-prefix",
      "/teams/a/",
    ]);
    expect(r.code).toBe(0);
    const id = ID.exec(r.stdout)![0];
    const fire = consul.requests.find((q) => q.path.startsWith("/v1/event/fire/"))!;
    expect(fire.path).toBe("/v1/event/fire/ship");
    expect(fire.query).toEqual({ node: "^web-", service: "web", tag: "blue" });
    expect(consul.fired[0]).toMatchObject({
      name: "ship",
      nodeFilter: "^web-",
      serviceFilter: "web",
      tagFilter: "blue",
    });
    expect(kvRecord("teams/a/roles/web/latest")).toMatchObject({
      id,
      publisher: expect.stringMatching(/^tester@\S+$/),
      message: "",
    });
  });

  test("--no-event records the release and fires nothing", async () => {
    const r = await publish(["--no-event"]);
    expect(r.code).toBe(0);
    expect(writes()).toEqual([
      expect.stringMatching(/^\/v1\/kv\/pulldeploy\/roles\/web\/releases\/.*\?cas=0$/),
      "/v1/kv/pulldeploy/roles/web/latest",
    ]);
    expect(consul.fired).toEqual([]);
  });

  test("--dry-run packs and prints everything it would do, and changes nothing", async () => {
    const r = await publish(["--dry-run", "--message", "try", "--service", "web"]);
    expect(r.stderr).not.toContain("pulldeploy publish:");
    expect(r.code).toBe(0);
    expect(fs.existsSync(store)).toBe(false);
    expect(consul.requests).toEqual([]);
    const id = ID.exec(r.stdout)![0];
    const lines = r.stdout.split("\n");
    expect(lines[0]).toBe("dry run: nothing was uploaded, written or fired");
    expect(r.stdout).toContain(`upload    file://${store}/web/${id}.tar.gz\n`);
    expect(r.stdout).toContain(
      `upload    file://${store}/web/${id}.yml:\n            src: file://${store}/web/${id}.tar.gz\n           ` +
        " checksum: ",
    );
    expect(r.stdout).toContain(`kv put    pulldeploy/roles/web/releases/${id} (consul ${consul.addr}) = {"id":"${id}"`);
    expect(r.stdout).toContain(`kv put    pulldeploy/roles/web/latest (consul ${consul.addr}) = {"id":"${id}"`);
    expect(r.stdout).toContain(
      `fire      consul event deploy (service=web) (consul ${consul.addr}): file://${store}/web/${id}.yml\n`,
    );
  });
});

describe("the payload limit is checked before anything is uploaded", () => {
  /** A --to whose manifest URLs are exactly `n` bytes long. */
  function storeFor(n: number): string {
    let left = n - (`file://${dir.path}`.length + "/web/".length + 29 + ".yml".length);
    const parts: string[] = [];
    while (left > 0) {
      let take = Math.min(101, left);
      if (left - take === 1) take--;
      parts.push("p".repeat(take - 1));
      left -= take;
    }
    const path = join(dir.path, ...parts);
    expect(`file://${path}/web/20260101T000000Z-0123456789ab.yml`.length).toBe(n);
    return path;
  }

  test("404 bytes fit a Consul event named deploy (the stand-in agrees)", async () => {
    const r = await run(["publish", app, "--to", `file://${storeFor(404)}`, "--role", "web", "--dest", "/srv/web"], {
      env: consul.env,
    });
    expect(r.stderr).not.toContain("pulldeploy publish:");
    expect(r.code).toBe(0);
    expect(consul.fired).toHaveLength(1);
    expect(consul.fired[0]!.payload!.length).toBe(404);
  });

  test("405 bytes: one line, exit 1, nothing stored or sent", async () => {
    const to = storeFor(405);
    const r = await run(["publish", app, "--to", `file://${to}`, "--role", "web", "--dest", "/srv/web"], {
      env: consul.env,
    });
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toContain(
      "pulldeploy publish: event payload too long: the manifest URL " +
        `file://${to}/web/${ID.exec(r.stderr)![0]}.yml is 405 bytes, 1 more than the 404 that fit in a Consul ` +
        `event named "deploy" (512 bytes after encoding); use a shorter --to, --role or --event`,
    );
    expect(fs.existsSync(join(to, "web"))).toBe(false);
    expect(consul.requests).toEqual([]);
  });

  test("filters take room too", async () => {
    const r = await run(
      ["publish", app, "--to", `file://${storeFor(404)}`, "--role", "web", "--dest", "/srv/web", "--service", "web"],
      { env: consul.env },
    );
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("is 404 bytes, 7 more than the 397 that fit in a Consul event (service=web) named");
  });
});

describe("after the upload, nothing is lost", () => {
  test("Consul refusing the token: uploaded but not announced; the printed fire command finishes the job", async () => {
    const r = await publish([], { CONSUL_HTTP_ADDR: consul.addr, CONSUL_HTTP_TOKEN: "wrong" });
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    const line = r.stderr.trim().split("\n").at(-1)!;
    const id = ID.exec(line)![0];
    const url = `file://${store}/web/${id}.yml`;
    expect(line).toContain(
      `pulldeploy publish: release ${id} is uploaded (${url}) but not announced: consul PUT ` +
        `/v1/kv/pulldeploy/roles/web/releases/${id}: 403 ACL not found; finish with: pulldeploy fire ${url} ` +
        "--role web",
    );
    expect(listTree(store)).toEqual(["web/", `web/${id}.tar.gz`, `web/${id}.yml`]);
    expect(consul.fired).toEqual([]);

    const cmd = line.slice(line.indexOf("finish with: ") + "finish with: ".length);
    const fixed = await runPrinted(cmd, consul.env);
    expect(fixed.stderr).not.toContain("pulldeploy fire:");
    expect(fixed.code).toBe(0);
    const record = kvRecord("pulldeploy/roles/web/latest");
    expect(record).toMatchObject({
      id,
      manifest_url: url,
      archive_url: `file://${store}/web/${id}.tar.gz`,
      files: null,
    });
    expect(record.size).toBe(fs.statSync(join(store, "web", `${id}.tar.gz`)).size);
    expect(kvRecord(`pulldeploy/roles/web/releases/${id}`)).toEqual(record);
    expect(consul.fired.map((e) => new TextDecoder().decode(e.payload!))).toEqual([url]);
  });

  test("Consul unreachable: the same, and the command repeats the announce flags", async () => {
    const port = await freePort();
    const r = await publish(["--kv-prefix", "pd", "--event", "ship", "--service", "web", "--message", "it's late"], {
      CONSUL_HTTP_ADDR: `127.0.0.1:${port}`,
    });
    expect(r.code).toBe(1);
    const line = r.stderr.trim().split("\n").at(-1)!;
    const id = ID.exec(line)![0];
    expect(line).toContain(
      `but not announced: consul 127.0.0.1:${port} unreachable: ECONNREFUSED; finish with: pulldeploy fire ` +
        `file://${store}/web/${id}.yml --role web --kv-prefix pd --message 'it'\\''s late' --event ship ` +
        "--service web",
    );
    const fixed = await runPrinted(line.slice(line.indexOf("finish with: ") + 13), consul.env);
    expect(fixed.code).toBe(0);
    expect(kvRecord("pd/roles/web/latest")).toMatchObject({ id, message: "it's late" });
    expect(consul.fired).toMatchObject([{ name: "ship", serviceFilter: "web" }]);
  });

  test("a staged rollout refused before KV: the command repeats the rollout flags, and running it stages it", async () => {
    const r = await publish(["--canary", "1", "--max-parallel", "50%", "--canary-wait"], {
      CONSUL_HTTP_ADDR: consul.addr,
      CONSUL_HTTP_TOKEN: "wrong",
    });
    expect(r.code).toBe(1);
    const line = r.stderr.trim().split("\n").at(-1)!;
    const id = ID.exec(line)![0];
    expect(line).toMatch(/; finish with: pulldeploy fire \S+ --role web --max-parallel 50% --canary 1 --canary-wait$/);
    expect(consul.kvEntry(`pulldeploy/roles/web/rollouts/${id}`)).toBeUndefined();
    const fixed = await runPrinted(line.slice(line.indexOf("finish with: ") + 13), consul.env);
    expect(fixed.code).toBe(0);
    const rollout = JSON.parse(new TextDecoder().decode(consul.kvEntry(`pulldeploy/roles/web/rollouts/${id}`)!.value));
    expect(rollout).toMatchObject({
      release_id: id,
      state: "canary",
      canary: 1,
      canary_wait: true,
      max_parallel: "50%",
    });
    expect(kvRecord("pulldeploy/roles/web/latest").id).toBe(id);
  });

  test("the event refused after the KV writes: the command only re-fires", async () => {
    const r = await publish(["--node", "["]);
    expect(r.code).toBe(1);
    const line = r.stderr.trim().split("\n").at(-1)!;
    const id = ID.exec(line)![0];
    expect(line).toContain(
      "but not announced (KV is up to date; the event was not sent): consul PUT /v1/event/fire/deploy: 500 " +
        "Invalid node filter",
    );
    expect(line).toMatch(new RegExp(`finish with: pulldeploy fire file://\\S+/web/${id}\\.yml --node '\\['$`));
    expect(kvRecord("pulldeploy/roles/web/latest").id).toBe(id);
  });
});

describe("fire", () => {
  async function publishVersion(content: string): Promise<string> {
    fs.writeFileSync(join(app, "index.html"), content);
    const r = await publish(["--message", content]);
    expect(r.code).toBe(0);
    return r.stdout.trim();
  }

  test("--role rolls back to a recorded release: latest gets its history record, then the event", async () => {
    const v1 = await publishVersion("v1");
    await Bun.sleep(1000 - (Date.now() % 1000)); // a different second: a different id
    const v2 = await publishVersion("v2");
    expect(kvRecord("pulldeploy/roles/web/latest").manifest_url).toBe(v2);
    const id1 = ID.exec(v1)![0];
    consul.requests.length = 0;
    const history = consul.kvEntry(`pulldeploy/roles/web/releases/${id1}`)!.value;

    const r = await run(["fire", v1, "--role", "web"], { env: consul.env });
    expect(r.stderr).not.toContain("pulldeploy fire:");
    expect(r.code).toBe(0);
    expect(consul.requests.map((q) => `${q.method} ${q.path}`)).toEqual([
      `GET /v1/kv/pulldeploy/roles/web/releases/${id1}`,
      "PUT /v1/kv/pulldeploy/roles/web/latest",
      "PUT /v1/event/fire/deploy",
    ]);
    expect(consul.kvEntry("pulldeploy/roles/web/latest")!.value).toEqual(history);
    expect(kvRecord("pulldeploy/roles/web/latest")).toMatchObject({ id: id1, message: "v1" });
    expect(new TextDecoder().decode(consul.fired.at(-1)!.payload!)).toBe(v1);
  });

  test("without --role (or with --no-kv) only the event is fired", async () => {
    const v1 = await publishVersion("v1");
    consul.requests.length = 0;
    for (const args of [[], ["--role", "web", "--no-kv"]]) {
      const r = await run(["fire", v1, "--service", "web", ...args], { env: consul.env });
      expect(r.code).toBe(0);
    }
    expect(consul.requests.map((q) => `${q.method} ${q.path}?${q.search}`)).toEqual([
      "PUT /v1/event/fire/deploy?service=web",
      "PUT /v1/event/fire/deploy?service=web",
    ]);
  });

  test("--via serf with Consul filters, or --tag without --service, are usage errors (exit 2)", async () => {
    for (const args of [["--via", "serf", "--node", "x"], ["--tag", "blue"], ["--via", "carrier-pigeon"], []]) {
      const r = await run(["fire", ...(args.length ? ["file:///x/web/a.yml", ...args] : [])], { env: consul.env });
      expect([args, r.code]).toEqual([args, 2]);
      expect(r.stderr.trim().split("\n")).toHaveLength(1);
    }
    expect(consul.requests).toEqual([]);
  });

  test("a manifest URL too long for the event is refused before any write", async () => {
    const r = await run(["fire", `file:///${"x".repeat(420)}.yml`, "--role", "web"], { env: consul.env });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("event payload too long: the manifest URL file:///xxx");
    expect(consul.requests).toEqual([]);
  });
});
