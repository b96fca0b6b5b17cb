/**
 * `pulldeploy doctor` through the compiled binary, against the Consul stand-in: a healthy host,
 * Consul down, a token without rights (the stand-in's ACL answers), a world-writable and an
 * app-owned dest, rsync missing from PATH, broken trust keys; and that its probes leave nothing
 * behind (the KV key deleted, the session destroyed, the event reaching no node).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { kvKeys } from "../../src/records/release.ts";
import { appUser } from "../support/app-user.ts";
import { startConsulStandin, type ConsulStandin } from "../support/consul-standin.ts";
import { BINARY, run, tempDir } from "../support/helpers.ts";

interface Row {
  check: string;
  status: "ok" | "warn" | "fail" | "skip";
  detail: string;
  advice: string;
}

let consul: ConsulStandin;
let dir: ReturnType<typeof tempDir>;
let stateDir: string;
let dest: string;
let pub: string;

beforeAll(async () => {
  if (!fs.existsSync(BINARY)) throw new Error(`${BINARY} is missing: run make build`);
  dir = tempDir("pd-doctor-");
  stateDir = join(dir.path, "state");
  fs.mkdirSync(stateDir, { mode: 0o700 });
  dest = join(dir.path, "app");
  fs.mkdirSync(dest, { mode: 0o755 });
  fs.writeFileSync(
    join(dir.path, "app.yml"),
    `src: file://${dir.path}/app.tar.gz\nchecksum: ${"0".repeat(64)}\ndest: ${dest}\n`,
  );
  expect((await run(["keygen", "--out", join(dir.path, "k")])).code).toBe(0);
  pub = join(dir.path, "k.pub");
  consul = await startConsulStandin();
  const id = "20261204T101010Z-0123456789ab";
  consul.kvPut(
    kvKeys.latest("pulldeploy", "web"),
    JSON.stringify({
      id,
      role: "web",
      manifest_url: `file://${dir.path}/app.yml`,
      archive_url: `file://${dir.path}/app.tar.gz`,
      algorithm: "sha256",
      checksum: "0".repeat(64),
      size: 2048,
      files: 2,
      created_at: "2026-12-04T10:10:10Z",
      publisher: "ci@build",
      message: "",
    }),
  );
});

afterAll(async () => {
  await consul?.stop();
  await dir?.[Symbol.asyncDispose]();
});

async function doctor(extra: string[], env: Record<string, string | undefined> = consul.env) {
  const r = await run(["doctor", "--json", "--role", "web", "--state-dir", stateDir, ...extra], { env });
  let parsed: { ok: boolean; checks: Row[] };
  try {
    parsed = JSON.parse(r.stdout);
  } catch {
    throw new Error(`doctor --json printed no JSON (exit ${r.code}): ${r.stdout}${r.stderr}`);
  }
  const byName = Object.fromEntries(parsed.checks.map((c) => [c.check, c]));
  return {
    ...r,
    ...parsed,
    row: (name: string): Row =>
      byName[name] ??
      (() => {
        throw new Error(`no row ${name}: ${r.stdout}`);
      })(),
  };
}

describe("pulldeploy doctor", () => {
  test("a healthy host: every check ok, exit 0; dest read from the latest manifest; the probes leave nothing behind", async () => {
    const before = consul.fired.length;
    const r = await doctor(["--trust-key", pub]);
    expect(r.checks.filter((c) => c.status !== "ok").map((c) => `${c.check}: ${c.detail}`)).toEqual([]);
    expect(r.code).toBe(0);
    expect(r.ok).toBe(true);
    expect(r.row("node name").detail).toBe("dev (the Consul agent's)");
    expect(r.row("dest").detail).toStartWith(`${dest} (latest manifest), uid 0, mode 0755`);
    expect(r.row("latest release").detail).toMatch(/^20261204T101010Z-0123456789ab, 2\.0 kB$/);
    expect(r.row("state dir").detail).toMatch(/, uid 0, mode 0700, .* free \(latest release /);
    expect(r.row("rsync").detail).toMatch(/^\/\S*rsync: rsync +version \d/);
    expect(r.row("tar").detail).toMatch(/^\/\S*tar: tar \(GNU tar\) \d/);
    expect(r.row("clock").detail).toMatch(/Consul by [0-1]\.\ds/);
    // The probes: the node's report key written to with a check-and-set Consul refused (the key the
    // agent writes, so a token scoped to the role is judged by it) and not created; the session
    // destroyed, the event reached no node.
    const report = kvKeys.node("pulldeploy", "web", "dev");
    const cas = consul.requests.filter((q) => q.method === "PUT" && q.path === `/v1/kv/${report}`);
    expect(cas.map((q) => q.query.cas)).toEqual([String(Number.MAX_SAFE_INTEGER)]);
    expect(consul.kvEntry(report)).toBeUndefined();
    expect(r.row("kv write").detail).toStartWith(`may write ${report} (a check-and-set write Consul refused`);
    expect(consul.kvEntry("pulldeploy/doctor/dev")).toBeUndefined();
    expect(consul.requests.filter((q) => q.path.startsWith("/v1/session/destroy/")).length).toBeGreaterThan(0);
    const ev = consul.fired[before]!;
    expect(ev).toMatchObject({ name: "deploy", nodeFilter: "^$" });
    expect(consul.receivers(ev)).toEqual([]);
  });

  test("the text table: one row per check, advice under what is not ok, a summary line", async () => {
    const r = await run(["doctor", "--role", "web", "--state-dir", stateDir, "--dest", join(dir.path, "nope")], {
      env: consul.env,
    });
    expect(r.code).toBe(0);
    const lines = r.stdout.split("\n");
    expect(lines[0]).toMatch(/^ok {4}consul +127\.0\.0\.1:\d+ answers$/);
    const i = lines.findIndex((l) => /^warn {2}dest +.*\/nope \(--dest\) does not exist yet$/.test(l));
    expect(i).toBeGreaterThan(0);
    expect(lines[i + 1]).toMatch(/^ +→ the first deploy creates it/);
    expect(r.stdout).toMatch(/\n\d+ ok, 1 warn, 0 fail, 1 not checked\n$/);
  });

  test("Consul down: consul fails, the rights are 'not checked', exit 1", async () => {
    const gone = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("") });
    const addr = `127.0.0.1:${gone.port}`;
    gone.stop(true);
    const r = await doctor(["--consul-addr", addr], { CONSUL_HTTP_ADDR: undefined });
    expect(r.code).toBe(1);
    expect(r.ok).toBe(false);
    expect(r.row("consul")).toMatchObject({ status: "fail", detail: `consul ${addr} unreachable: ECONNREFUSED` });
    for (const c of ["kv read", "kv write", "event fire", "sessions", "clock", "latest release"])
      expect(r.row(c).status).toBe("skip");
    expect(r.row("kv write").detail).toBe("not checked: Consul did not answer");
    expect(r.row("state dir").status).toBe("ok"); // the host's own checks still run
  });

  test("a token without rights: KV read and write fail, events and sessions warn, the node name falls back; exit 1", async () => {
    await using acl = await (async () => {
      const c = await startConsulStandin({ requireToken: "right-token" });
      return { c, [Symbol.asyncDispose]: () => c.stop() };
    })();
    const r = await doctor(["--dest", dest], { ...acl.c.env, CONSUL_HTTP_TOKEN: "wrong-token" });
    expect(r.code).toBe(1);
    expect(r.row("consul").status).toBe("ok");
    expect(r.row("kv read")).toMatchObject({
      status: "fail",
      detail: "consul GET /v1/kv/pulldeploy/roles/web/latest: 403 ACL not found",
    });
    expect(r.row("kv write").status).toBe("fail");
    expect(r.row("kv write").advice).toContain('key_prefix "pulldeploy/" write');
    expect(r.row("event fire")).toMatchObject({
      status: "warn",
      detail: "consul PUT /v1/event/fire/deploy: 403 ACL not found",
    });
    expect(r.row("sessions")).toMatchObject({
      status: "warn",
      detail: "consul PUT /v1/session/create: 403 ACL not found",
    });
    expect(r.row("node name").status).toBe("warn");
    expect(r.row("clock").status).toBe("ok"); // a 403 still carries Consul's Date
    expect(acl.c.fired).toEqual([]);
    // No token at all: Consul's "Permission denied".
    const none = await doctor(["--dest", dest], { ...acl.c.env, CONSUL_HTTP_TOKEN: undefined });
    expect(none.row("kv write").detail).toMatch(
      /^consul PUT \/v1\/kv\/pulldeploy\/roles\/web\/nodes\/[^/]+: 403 Permission denied$/,
    );
    // The right token: every Consul row ok.
    const good = await doctor(["--dest", dest], { ...acl.c.env });
    for (const c of ["kv read", "kv write", "event fire", "sessions", "node name"])
      expect(good.row(c).status).toBe("ok");
    // Without --role: a key of doctor's own, written and deleted.
    const plain = await run(["doctor", "--json", "--state-dir", stateDir, "--dest", dest], { env: acl.c.env });
    const row = (JSON.parse(plain.stdout) as { checks: Row[] }).checks.find((c) => c.check === "kv write")!;
    expect(row).toMatchObject({ status: "ok" });
    expect(row.detail).toMatch(/^wrote and deleted pulldeploy\/doctor\/[^/]+$/);
    expect(acl.c.kvEntry(row.detail.slice("wrote and deleted ".length))).toBeUndefined();
    expect(acl.c.requests.some((q) => q.method === "DELETE" && q.path.startsWith("/v1/kv/pulldeploy/doctor/"))).toBe(
      true,
    );
  });

  test("a world-writable dest fails; an app-owned dest warns", async () => {
    await using d = tempDir();
    const open = join(d.path, "open");
    fs.mkdirSync(open);
    fs.chmodSync(open, 0o777);
    const r = await doctor(["--dest", open]);
    expect(r.code).toBe(1);
    expect(r.row("dest")).toMatchObject({
      status: "fail",
      detail: `${open} (--dest), uid 0, mode 0777: ${open} is writable by its group or others (mode 777)`,
    });
    expect(r.row("dest").advice).toContain("any local user can change what the agent deploys");
    // Under a world-writable parent too.
    const under = join(open, "app");
    fs.mkdirSync(under, { mode: 0o755 });
    expect((await doctor(["--dest", under])).row("dest").status).toBe("fail");

    const app = appUser();
    if (process.getuid?.() === 0 && !app) throw new Error("the pulldeploy-app user is missing: run scripts/setup.sh");
    const owned = join(d.path, "owned");
    fs.mkdirSync(owned, { mode: 0o755 });
    fs.chownSync(owned, app!.uid, app!.gid);
    const w = await doctor(["--dest", owned]);
    expect(w.code).toBe(0);
    expect(w.row("dest")).toMatchObject({
      status: "warn",
      detail: `${owned} (--dest), uid ${app!.uid}, mode 0755: ${owned} is owned by uid ${app!.uid}`,
    });
  });

  test("rsync missing from PATH fails (tar missing only warns); a bad state dir and bad trust keys fail", async () => {
    await using d = tempDir();
    const bin = join(d.path, "bin");
    fs.mkdirSync(bin);
    fs.symlinkSync(Bun.which("tar")!, join(bin, "tar"));
    const r = await doctor(["--dest", dest], { ...consul.env, PATH: bin });
    expect(r.code).toBe(1);
    expect(r.row("rsync")).toMatchObject({ status: "fail", detail: "not found on PATH" });
    expect(r.row("rsync").advice).toContain("apt-get install rsync");
    expect(r.row("tar").status).toBe("ok");
    fs.rmSync(join(bin, "tar"));
    fs.symlinkSync(Bun.which("rsync")!, join(bin, "rsync"));
    const noTar = await doctor(["--dest", dest], { ...consul.env, PATH: bin });
    expect(noTar.row("tar")).toMatchObject({ status: "warn", detail: "not found on PATH" });
    expect(noTar.row("rsync").status).toBe("ok");

    const loose = join(d.path, "state");
    fs.mkdirSync(loose);
    fs.chmodSync(loose, 0o777);
    fs.writeFileSync(join(d.path, "junk.pub"), "not a key\n");
    const bad = await run(
      [
        "doctor",
        "--json",
        "--state-dir",
        loose,
        "--dest",
        dest,
        "--trust-key",
        `${join(d.path, "junk.pub")},${join(d.path, "missing.pub")}`,
      ],
      { env: consul.env },
    );
    const rows: Row[] = JSON.parse(bad.stdout).checks;
    const row = (n: string) => rows.find((c) => c.check === n)!;
    expect(bad.code).toBe(1);
    expect(row("state dir")).toMatchObject({
      status: "fail",
      detail: `${loose} is writable by its group or others (mode 0777)`,
    });
    expect(row("trust keys").status).toBe("fail");
    expect(row("trust keys").detail).toContain("junk.pub");
    expect(row("trust keys").detail).toContain("missing.pub");
    expect(row("latest release").status).toBe("skip"); // no --role
  });

  test("bad flags: exit 2, one line", async () => {
    const r = await run(["doctor", "--role", "../x"], { env: consul.env });
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toContain("pulldeploy doctor: --role: ");
  });
});
