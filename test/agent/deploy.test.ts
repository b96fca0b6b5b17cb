/**
 * The deploy pipeline against real tar archives, rsync, sh and loopback HTTP servers.
 */
import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as net from "node:net";
import { join } from "node:path";
import { DEFAULT_LIMITS } from "../../src/archive/extract.ts";
import { deploy, type DeployOptions } from "../../src/agent/deploy.ts";
import { createLogger } from "../../src/log.ts";
import { appRelease, httpServer, listTree, sha, tempDir, waitFor } from "../support/helpers.ts";
import { rawTarGz, type RawEntry } from "../support/tarball.ts";

function agent(manifestUrl: string, over: Partial<DeployOptions> = {}) {
  const lines: string[] = [];
  const log = createLogger({ write: (l) => void lines.push(l), quiet: false });
  const opts: DeployOptions = {
    manifestUrl,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, TMPDIR: process.env.TMPDIR },
    log,
    fetch: { retry: 0, retryWaitMs: 10 },
    rsyncVerbose: "",
    limits: DEFAULT_LIMITS,
    ...over,
  };
  return deploy(opts).then((result) => ({ result, log: lines.join("") }));
}

const hooks = (dir: string) => `
commands:
  pre: ["echo pre >> ${dir}/hooks.log"]
  post: ["echo post >> ${dir}/hooks.log"]
  success: ["echo success >> ${dir}/hooks.log"]
  failure: ["echo failure >> ${dir}/hooks.log", "cat > ${dir}/failure.stdin"]
`;
const hookLog = (dir: string) =>
  fs.existsSync(join(dir, "hooks.log")) ? fs.readFileSync(join(dir, "hooks.log"), "utf8").trim().split("\n") : [];

const APP = {
  "index.html": "<h1>v1</h1>",
  "lib/app.js": "console.log(1)",
  "bin/run": { mode: 0o755, content: "#!/bin/sh\necho run\n" },
  current: { symlink: "lib/app.js" },
};

describe("deploy via file://", () => {
  test("files, modes, symlinks and mtimes arrive; hooks run in order", async () => {
    await using d = tempDir();
    const dest = join(d.path, "dest");
    const rel = appRelease(
      d.path,
      APP,
      (a) => `src: file://${a.path}\nchecksum: ${a.sha256}\ndest: ${dest}\n${hooks(d.path)}`,
    );
    const { result } = await agent(rel.manifestUrl);
    expect(result.ok).toBe(true);
    expect(listTree(dest)).toEqual(["bin/", "bin/run", "current", "index.html", "lib/", "lib/app.js"]);
    expect(fs.readFileSync(join(dest, "index.html"), "utf8")).toBe("<h1>v1</h1>");
    expect(fs.statSync(join(dest, "bin/run")).mode & 0o777).toBe(0o755);
    expect(fs.readlinkSync(join(dest, "current"))).toBe("lib/app.js");
    const srcMtime = fs.statSync(join(d.path, "app-src/lib/app.js")).mtimeMs;
    expect(Math.floor(fs.statSync(join(dest, "lib/app.js")).mtimeMs / 1000)).toBe(Math.floor(srcMtime / 1000));
    expect(hookLog(d.path)).toEqual(["pre", "post", "success"]);
  });

  test("excluded files in dest survive --delete, stale ones go (stretcher's test.pid case)", async () => {
    await using d = tempDir();
    const dest = join(d.path, "dest");
    fs.mkdirSync(dest);
    fs.writeFileSync(join(dest, "test.pid"), "123");
    fs.writeFileSync(join(dest, "stale.txt"), "old");
    const rel = appRelease(
      d.path,
      APP,
      (a) => `src: file://${a.path}\nchecksum: ${a.sha256}\ndest: ${dest}\nexcludes: ["*.pid"]\n`,
    );
    expect((await agent(rel.manifestUrl)).result.ok).toBe(true);
    expect(fs.readFileSync(join(dest, "test.pid"), "utf8")).toBe("123");
    expect(fs.existsSync(join(dest, "stale.txt"))).toBe(false);
  });

  test("without excludes --delete removes test.pid", async () => {
    await using d = tempDir();
    const dest = join(d.path, "dest");
    fs.mkdirSync(dest);
    fs.writeFileSync(join(dest, "test.pid"), "123");
    const rel = appRelease(d.path, APP, (a) => `src: file://${a.path}\nchecksum: ${a.sha256}\ndest: ${dest}\n`);
    expect((await agent(rel.manifestUrl)).result.ok).toBe(true);
    expect(fs.existsSync(join(dest, "test.pid"))).toBe(false);
  });

  test("exclude_from: a file inside the archive", async () => {
    await using d = tempDir();
    const dest = join(d.path, "dest");
    fs.mkdirSync(dest);
    fs.writeFileSync(join(dest, "keep.sock"), "s");
    const rel = appRelease(
      d.path,
      { ...APP, "exclude.list": "*.sock\n" },
      (a) => `src: file://${a.path}\nchecksum: ${a.sha256}\ndest: ${dest}\nexclude_from: exclude.list\n`,
    );
    expect((await agent(rel.manifestUrl)).result.ok).toBe(true);
    expect(fs.existsSync(join(dest, "keep.sock"))).toBe(true);
  });

  test("a missing exclude_from file fails the sync phase naming it, failure runs, dest untouched", async () => {
    await using d = tempDir();
    const dest = join(d.path, "dest");
    fs.mkdirSync(dest);
    fs.writeFileSync(join(dest, "old.txt"), "old");
    const rel = appRelease(
      d.path,
      APP,
      (a) => `src: file://${a.path}\nchecksum: ${a.sha256}\ndest: ${dest}\nexclude_from: nope.list\n${hooks(d.path)}`,
    );
    const { result } = await agent(rel.manifestUrl);
    expect(result).toMatchObject({ ok: false, phase: "sync", error: "exclude_from: nope.list is not in the archive" });
    expect(listTree(dest)).toEqual(["old.txt"]);
    expect(hookLog(d.path)).toEqual(["pre", "failure"]);
  });

  test.each([
    [0o711, "0711"],
    [0o750, "0750"],
  ])("dest_mode %s is applied to dest", async (mode, raw) => {
    await using d = tempDir();
    const dest = join(d.path, "dest");
    const rel = appRelease(
      d.path,
      APP,
      (a) => `src: file://${a.path}\nchecksum: ${a.sha256}\ndest: ${dest}\ndest_mode: ${raw}\n`,
    );
    expect((await agent(rel.manifestUrl)).result.ok).toBe(true);
    expect(fs.statSync(dest).mode & 0o777).toBe(mode);
  });

  test("sync_strategy mv into a missing dest", async () => {
    await using d = tempDir();
    const dest = join(d.path, "dest");
    const rel = appRelease(
      d.path,
      APP,
      (a) => `src: file://${a.path}\nchecksum: ${a.sha256}\ndest: ${dest}\nsync_strategy: mv\n`,
    );
    // Same file system for the rename: the temp dir lives next to dest.
    const { result } = await agent(rel.manifestUrl, { env: { PATH: process.env.PATH, TMPDIR: d.path } });
    expect(result.ok).toBe(true);
    expect(listTree(dest)).toEqual(["bin/", "bin/run", "current", "index.html", "lib/", "lib/app.js"]);
  });

  test("sync_strategy mv into an existing dest is a sync error, dest untouched", async () => {
    await using d = tempDir();
    const dest = join(d.path, "dest");
    fs.mkdirSync(dest);
    fs.writeFileSync(join(dest, "old.txt"), "old");
    const rel = appRelease(
      d.path,
      APP,
      (a) => `src: file://${a.path}\nchecksum: ${a.sha256}\ndest: ${dest}\nsync_strategy: mv\n`,
    );
    const { result } = await agent(rel.manifestUrl, { env: { PATH: process.env.PATH, TMPDIR: d.path } });
    expect(result).toMatchObject({ ok: false, phase: "sync" });
    expect((result as { error: string }).error).toContain("mv needs a dest that does not exist");
    expect(listTree(dest)).toEqual(["old.txt"]);
  });

  test("commands-only: no src, pre then post then success", async () => {
    await using d = tempDir();
    fs.writeFileSync(join(d.path, "m.yml"), hooks(d.path));
    const { result } = await agent(`file://${d.path}/m.yml`);
    expect(result.ok).toBe(true);
    expect(hookLog(d.path)).toEqual(["pre", "post", "success"]);
  });

  test("rsync not installed: a clear sync error, dest untouched", async () => {
    await using d = tempDir();
    const dest = join(d.path, "dest");
    fs.mkdirSync(dest);
    fs.writeFileSync(join(dest, "old.txt"), "old");
    const rel = appRelease(d.path, APP, (a) => `src: file://${a.path}\nchecksum: ${a.sha256}\ndest: ${dest}\n`);
    const { result } = await agent(rel.manifestUrl, { env: { PATH: "/nonexistent" } });
    expect(result).toMatchObject({
      ok: false,
      phase: "sync",
      error: "sync: rsync is not installed (apt-get install rsync, or use sync_strategy: mv)",
    });
    expect(listTree(dest)).toEqual(["old.txt"]);
  });

  test("a first deploy into a missing dest renames the verified tree: the same tree rsync -a makes, no second copy", async () => {
    await using d = tempDir();
    const dest = join(d.path, "dest");
    const viaRsync = join(d.path, "via-rsync");
    fs.mkdirSync(viaRsync);
    fs.writeFileSync(join(viaRsync, "stale.txt"), "not empty: rsync, which deletes this");
    const tmp = join(d.path, "tmp");
    fs.mkdirSync(tmp);
    const env = { PATH: process.env.PATH, TMPDIR: tmp };
    const rel = appRelease(
      d.path,
      APP,
      (a) => `src: file://${a.path}\nchecksum: ${a.sha256}\ndest: DEST\ndest_mode: 0750\n`,
    );
    const manifest = fs.readFileSync(rel.manifestPath, "utf8");
    fs.writeFileSync(join(d.path, "a.yml"), manifest.replace("DEST", dest));
    fs.writeFileSync(join(d.path, "b.yml"), manifest.replace("DEST", viaRsync));
    const renamed = await agent(`file://${d.path}/a.yml`, { env });
    expect(renamed.result.ok).toBe(true);
    expect(renamed.log).toContain(`sync: ${dest} did not exist: renamed`);
    const copied = await agent(`file://${d.path}/b.yml`, { env });
    expect(copied.log).toContain("sync: rsync -a --delete");
    expect(fs.readdirSync(tmp)).toEqual([]);
    expect(fs.statSync(dest).mode & 0o7777).toBe(0o750);
    // rsync itself finds nothing to change between the two: contents, modes, mtimes, owners, links.
    const diff = Bun.spawnSync(["rsync", "-ani", "--delete", `${viaRsync}/`, `${dest}/`]);
    expect(diff.exitCode).toBe(0);
    expect(diff.stdout.toString()).toBe("");
    expect(listTree(dest)).toEqual(["bin/", "bin/run", "current", "index.html", "lib/", "lib/app.js"]);
  });

  test("an empty dest directory is renamed over; a symlink to an empty directory is not (rsync fills its target)", async () => {
    await using d = tempDir();
    const empty = join(d.path, "empty");
    fs.mkdirSync(empty);
    const target = join(d.path, "target");
    fs.mkdirSync(target);
    const link = join(d.path, "link");
    fs.symlinkSync(target, link);
    for (const [dest, expected] of [
      [empty, `sync: ${empty} was an empty directory: renamed`],
      [link, "sync: rsync -a --delete"],
    ] as const) {
      const rel = appRelease(
        d.path,
        APP,
        (a) => `src: file://${a.path}\nchecksum: ${a.sha256}\ndest: ${dest}\n`,
        dest.endsWith("link") ? "l" : "e",
      );
      const { result, log } = await agent(rel.manifestUrl);
      expect(result.ok).toBe(true);
      expect(log).toContain(expected);
      expect(listTree(dest)).toEqual(["bin/", "bin/run", "current", "index.html", "lib/", "lib/app.js"]);
    }
    expect(fs.lstatSync(link).isSymbolicLink()).toBe(true);
    expect(listTree(target)).toEqual(["bin/", "bin/run", "current", "index.html", "lib/", "lib/app.js"]);
  });

  test("excludes, -v, or hard links in the archive: rsync even into a missing dest (the rename would differ)", async () => {
    await using d = tempDir();
    const cases = [
      { name: "excludes", extra: 'excludes: ["*.pid"]\n', over: {} },
      { name: "verbose", extra: "", over: { rsyncVerbose: "-v" } },
    ];
    for (const c of cases) {
      const rel = appRelease(
        d.path,
        APP,
        (a) => `src: file://${a.path}\nchecksum: ${a.sha256}\ndest: ${d.path}/${c.name}\n${c.extra}`,
        c.name,
      );
      const { result, log } = await agent(rel.manifestUrl, c.over);
      expect(result.ok).toBe(true);
      expect(log).toContain("sync: rsync -a --delete");
      expect(log).not.toContain("renamed");
    }
    const archive = join(d.path, "links.tar.gz");
    fs.writeFileSync(
      archive,
      rawTarGz([
        { name: "a.txt", content: "same" },
        { name: "b.txt", type: "1", linkname: "a.txt" },
      ]),
    );
    fs.writeFileSync(
      join(d.path, "links.yml"),
      `src: file://${archive}\nchecksum: ${sha(archive)}\ndest: ${d.path}/links\n`,
    );
    const { result, log } = await agent(`file://${d.path}/links.yml`);
    expect(result.ok).toBe(true);
    expect(log).toContain("sync: rsync -a --delete");
    // rsync -a (no -H) copies hard links apart, and so does the agent.
    expect(fs.statSync(join(d.path, "links/a.txt")).ino).not.toBe(fs.statSync(join(d.path, "links/b.txt")).ino);
  });
});

describe("the failure matrix", () => {
  test("checksum mismatch: no pre, failure runs with the log on stdin, dest untouched", async () => {
    await using d = tempDir();
    const dest = join(d.path, "dest");
    fs.mkdirSync(dest);
    fs.writeFileSync(join(dest, "old.txt"), "old");
    const rel = appRelease(
      d.path,
      APP,
      () => `src: file://${d.path}/app.tar.gz\nchecksum: ${"0".repeat(64)}\ndest: ${dest}\n${hooks(d.path)}`,
    );
    const { result } = await agent(rel.manifestUrl);
    expect(result).toMatchObject({
      ok: false,
      phase: "checksum",
      error: `checksum mismatch: expected sha256 ${"0".repeat(64)}, got ${rel.sha256}`,
    });
    expect(hookLog(d.path)).toEqual(["failure"]);
    expect(listTree(dest)).toEqual(["old.txt"]);
    expect(fs.readFileSync(join(d.path, "failure.stdin"), "utf8")).toContain("checksum mismatch");
  });

  test("manifest problems (non-fatal): all listed, failure runs, nothing else", async () => {
    await using d = tempDir();
    fs.writeFileSync(join(d.path, "m.yml"), `src: file:///x.tgz\nchecksum: 123\ndest: rel\n${hooks(d.path)}`);
    const { result } = await agent(`file://${d.path}/m.yml`);
    expect(result).toMatchObject({ ok: false, phase: "manifest" });
    expect((result as { error: string }).error).toContain("checksum: length 3");
    expect((result as { error: string }).error).toContain('dest: must be an absolute path, got "rel"');
    expect(hookLog(d.path)).toEqual(["failure"]);
  });

  test("YAML syntax error: no command runs at all", async () => {
    await using d = tempDir();
    fs.writeFileSync(join(d.path, "m.yml"), `src: [oops\n${hooks(d.path)}`);
    const { result } = await agent(`file://${d.path}/m.yml`);
    expect(result).toMatchObject({ ok: false, phase: "manifest" });
    expect(hookLog(d.path)).toEqual([]);
  });

  test("pre fails: post does not run, failure runs, dest untouched", async () => {
    await using d = tempDir();
    const dest = join(d.path, "dest");
    fs.mkdirSync(dest);
    fs.writeFileSync(join(dest, "old.txt"), "old");
    const rel = appRelease(
      d.path,
      APP,
      (a) =>
        `src: file://${a.path}\nchecksum: ${a.sha256}\ndest: ${dest}\ncommands:\n  pre: ["echo pre >> ` +
        `${d.path}/hooks.log", "exit 3", "echo never >> ${d.path}/hooks.log"]\n  post: ["echo post >> ` +
        `${d.path}/hooks.log"]\n  failure: ["echo failure $PULLDEPLOY_FAILED_PHASE >> ${d.path}/hooks.log"]\n`,
    );
    const { result } = await agent(rel.manifestUrl);
    expect(result).toMatchObject({ ok: false, phase: "pre", error: "pre command failed with exit code 3: exit 3" });
    expect(hookLog(d.path)).toEqual(["pre", "failure pre"]);
    expect(listTree(dest)).toEqual(["old.txt"]);
  });

  test("post fails: new files in place, failure runs, not success", async () => {
    await using d = tempDir();
    const dest = join(d.path, "dest");
    const rel = appRelease(
      d.path,
      APP,
      (a) =>
        `src: file://${a.path}\nchecksum: ${a.sha256}\ndest: ${dest}\ncommands:\n  post: ["false"]\n  success: ` +
        `["echo success >> ${d.path}/hooks.log"]\n  failure: ["echo failure $PULLDEPLOY_FAILED_PHASE >> ` +
        `${d.path}/hooks.log"]\n`,
    );
    const { result } = await agent(rel.manifestUrl);
    expect(result).toMatchObject({ ok: false, phase: "post" });
    expect(fs.existsSync(join(dest, "index.html"))).toBe(true);
    expect(hookLog(d.path)).toEqual(["failure post"]);
  });

  test("a failing success command is logged and the deploy stays a success", async () => {
    await using d = tempDir();
    const rel = appRelease(
      d.path,
      APP,
      (a) => `src: file://${a.path}\nchecksum: ${a.sha256}\ndest: ${d.path}/dest\ncommands:\n  success: ["exit 4"]\n`,
    );
    const { result, log } = await agent(rel.manifestUrl);
    expect(result.ok).toBe(true);
    expect(log).toContain("success command failed (the deploy still succeeded)");
  });
});

describe("hooks: stdin, env, timeouts", () => {
  test("success gets the log on stdin; env has commands.env and PULLDEPLOY_*", async () => {
    await using d = tempDir();
    const dest = join(d.path, "dest");
    const rel = appRelease(
      d.path,
      APP,
      (a) => `src: file://${a.path}\nchecksum: ${a.sha256}\ndest: ${dest}
commands:
  env: {GREETING: hello}
  pre: ["echo \\"$GREETING $PULLDEPLOY_DEST $PULLDEPLOY_CHECKSUM $PULLDEPLOY_EVENT_ID\\" > ${d.path}/env.txt", "test -t 0 || test -z \\"$(cat)\\""]
  success: ["cat > ${d.path}/success.stdin"]
`,
    );
    const { result } = await agent(rel.manifestUrl, { eventId: "ev-1" });
    expect(result.ok).toBe(true);
    expect(fs.readFileSync(join(d.path, "env.txt"), "utf8").trim()).toBe(`hello ${dest} ${rel.sha256} ev-1`);
    const stdin = fs.readFileSync(join(d.path, "success.stdin"), "utf8");
    expect(stdin).toContain("checksum: sha256");
    expect(stdin).toContain("deploy succeeded");
  });

  test("a success/failure command that ignores a large stdin is fine (EPIPE)", async () => {
    await using d = tempDir();
    // A pre command that prints 200 KB makes the log larger than a pipe buffer.
    const rel = appRelease(
      d.path,
      APP,
      (a) =>
        `src: file://${a.path}\nchecksum: ${a.sha256}\ndest: ${d.path}/dest\ncommands:\n  pre: ["head -c ` +
        `200000 /dev/zero | tr '\\\\0' 'x' | fold -w 100"]\n  success: ["true", "echo after >> ` +
        `${d.path}/hooks.log"]\n`,
    );
    const { result } = await agent(rel.manifestUrl);
    expect(result.ok).toBe(true);
    expect(hookLog(d.path)).toEqual(["after"]);
  });

  test("a command timeout kills the whole process group", async () => {
    await using d = tempDir();
    fs.writeFileSync(join(d.path, "m.yml"), `commands:\n  pre: ["sleep 30 & echo $! > ${d.path}/bg.pid; sleep 30"]\n`);
    const { result } = await agent(`file://${d.path}/m.yml`, { commandTimeoutMs: 300 });
    expect(result).toMatchObject({ ok: false, phase: "pre" });
    expect((result as { error: string }).error).toContain("timed out after 0.3s");
    const pid = Number(fs.readFileSync(join(d.path, "bg.pid"), "utf8"));
    await waitFor(() => {
      try {
        process.kill(pid, 0);
        return false;
      } catch {
        return true;
      }
    }, "the background sleep to be killed");
  });

  test("an abort signal (SIGTERM) kills the running command and runs failure", async () => {
    await using d = tempDir();
    fs.writeFileSync(
      join(d.path, "m.yml"),
      `commands:\n  pre: ["touch ${d.path}/started; sleep 30"]\n  failure: ["echo failure >> ${d.path}/hooks.log"]\n`,
    );
    const controller = new AbortController();
    const pending = agent(`file://${d.path}/m.yml`, { signal: controller.signal });
    await waitFor(() => fs.existsSync(join(d.path, "started")), "pre to start");
    controller.abort(new Error("interrupted by SIGTERM"));
    const { result } = await pending;
    expect(result).toMatchObject({ ok: false, phase: "pre" });
    expect(hookLog(d.path)).toEqual(["failure"]);
  });
});

describe("deploy via HTTP (loopback server on port 0)", () => {
  test("200: deploys, with our User-Agent", async () => {
    await using d = tempDir();
    const rel = appRelease(d.path, APP, (a) => `src: SRC\nchecksum: ${a.sha256}\ndest: ${d.path}/dest\n`);
    const bytes = fs.readFileSync(rel.archive);
    await using srv = httpServer((req) =>
      new URL(req.url).pathname === "/app.tar.gz"
        ? new Response(bytes)
        : new Response(fs.readFileSync(rel.manifestPath, "utf8").replace("SRC", `${srvUrl()}/app.tar.gz`)),
    );
    const srvUrl = () => srv.url;
    const { result } = await agent(`${srv.url}/app.yml`);
    expect(result.ok).toBe(true);
    expect(srv.requests.map((r) => r.headers.get("user-agent"))).toEqual(["pulldeploy/0.1.0", "pulldeploy/0.1.0"]);
    expect(fs.readFileSync(join(d.path, "dest/index.html"), "utf8")).toBe("<h1>v1</h1>");
  });

  test("404 is an error naming the status, not retried, failure runs, dest untouched", async () => {
    await using d = tempDir();
    await using srv = httpServer(() => new Response("not here", { status: 404 }));
    fs.writeFileSync(
      join(d.path, "m.yml"),
      `src: ${srv.url}/app.tar.gz\nchecksum: ${"a".repeat(64)}\ndest: ${d.path}/dest\n${hooks(d.path)}`,
    );
    const { result } = await agent(`file://${d.path}/m.yml`, { fetch: { retry: 3, retryWaitMs: 10 } });
    expect(result).toMatchObject({ ok: false, phase: "fetch", error: `fetch ${srv.url}/app.tar.gz: 404 Not Found` });
    expect(srv.requests).toHaveLength(1);
    expect(hookLog(d.path)).toEqual(["failure"]);
    expect(fs.existsSync(join(d.path, "dest"))).toBe(false);
  });

  test("500 then 200 with --retry 1: deploys on the second attempt", async () => {
    await using d = tempDir();
    const rel = appRelease(d.path, APP, (a) => `src: SRC\nchecksum: ${a.sha256}\ndest: ${d.path}/dest\n`);
    const bytes = fs.readFileSync(rel.archive);
    await using srv = httpServer((_req, n) => (n === 1 ? new Response("oops", { status: 500 }) : new Response(bytes)));
    fs.writeFileSync(
      rel.manifestPath,
      fs.readFileSync(rel.manifestPath, "utf8").replace("SRC", `${srv.url}/app.tar.gz`),
    );
    const { result, log } = await agent(rel.manifestUrl, { fetch: { retry: 1, retryWaitMs: 10 } });
    expect(result.ok).toBe(true);
    expect(srv.requests).toHaveLength(2);
    expect(log).toContain("500 Internal Server Error; retrying");
  });

  test("500 without --retry fails at once", async () => {
    await using d = tempDir();
    await using srv = httpServer(() => new Response("oops", { status: 500 }));
    fs.writeFileSync(
      join(d.path, "m.yml"),
      `src: ${srv.url}/a.tgz\nchecksum: ${"a".repeat(64)}\ndest: ${d.path}/dest\n`,
    );
    const { result } = await agent(`file://${d.path}/m.yml`);
    expect(result).toMatchObject({
      ok: false,
      phase: "fetch",
      error: `fetch ${srv.url}/a.tgz: 500 Internal Server Error`,
    });
    expect(srv.requests).toHaveLength(1);
  });

  /**
   * A raw TCP HTTP server: the first response promises the whole archive, sends half, and drops the
   * connection; later requests get a 206 for a Range (when `honourRange`) or the whole archive.
   */
  async function cutOnce(bytes: Uint8Array, honourRange: boolean) {
    const requests: { range: string | null }[] = [];
    const server = net.createServer((sock) => {
      let head = "";
      sock.on("data", (d) => {
        head += d.toString("latin1");
        if (!head.includes("\r\n\r\n")) return;
        const range = /\r\nrange: bytes=(\d+)-\r\n/i.exec(head);
        requests.push({ range: range ? `bytes=${range[1]}-` : null });
        const n = requests.length;
        if (n === 1) {
          sock.write(`HTTP/1.1 200 OK\r\nContent-Length: ${bytes.length}\r\nConnection: close\r\n\r\n`);
          sock.write(bytes.subarray(0, bytes.length >> 1), () => setTimeout(() => sock.destroy(), 50));
        } else if (range && honourRange) {
          const from = Number(range[1]);
          sock.end(
            Buffer.concat([
              Buffer.from(
                `HTTP/1.1 206 Partial Content\r\nContent-Length: ${bytes.length - from}\r\nContent-Range: ` +
                  `bytes ${from}-${bytes.length - 1}/${bytes.length}\r\nConnection: close\r\n\r\n`,
              ),
              bytes.subarray(from),
            ]),
          );
        } else {
          sock.end(
            Buffer.concat([
              Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${bytes.length}\r\nConnection: close\r\n\r\n`),
              bytes,
            ]),
          );
        }
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    return {
      url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
      requests,
      async [Symbol.asyncDispose]() {
        await new Promise((r) => server.close(r));
      },
    };
  }

  test("a dropped connection is resumed with a Range request; the checksum covers the whole archive", async () => {
    await using d = tempDir();
    const big = new Uint8Array(400_000);
    for (let i = 0; i < big.length; i += 65536)
      crypto.getRandomValues(big.subarray(i, Math.min(i + 65536, big.length)));
    const rel = appRelease(
      d.path,
      { "big.bin": big, ...APP },
      (a) => `src: SRC\nchecksum: ${a.sha256}\ndest: ${d.path}/dest\n`,
    );
    await using srv = await cutOnce(fs.readFileSync(rel.archive), true);
    fs.writeFileSync(
      rel.manifestPath,
      fs.readFileSync(rel.manifestPath, "utf8").replace("SRC", `${srv.url}/app.tar.gz`),
    );
    const { result, log } = await agent(rel.manifestUrl, { fetch: { retry: 1, retryWaitMs: 10 } });
    expect(result.ok).toBe(true);
    expect(srv.requests).toHaveLength(2);
    const offset = srv.requests[1]!.range;
    expect(offset).toMatch(/^bytes=[1-9]\d*-$/);
    expect(log).toContain(`resuming at byte ${offset!.slice(6, -1)} with a Range request`);
    expect(Buffer.compare(fs.readFileSync(join(d.path, "dest/big.bin")), Buffer.from(big))).toBe(0);
  });

  test("a body cut mid-stream on a server without Range support is fetched again whole", async () => {
    await using d = tempDir();
    const rel = appRelease(
      d.path,
      { big: "x".repeat(300_000), ...APP },
      (a) => `src: SRC\nchecksum: ${a.sha256}\ndest: ${d.path}/dest\n`,
    );
    await using srv = await cutOnce(fs.readFileSync(rel.archive), false);
    fs.writeFileSync(
      rel.manifestPath,
      fs.readFileSync(rel.manifestPath, "utf8").replace("SRC", `${srv.url}/app.tar.gz`),
    );
    const { result } = await agent(rel.manifestUrl, { fetch: { retry: 2, retryWaitMs: 10 } });
    expect(result.ok).toBe(true);
    // 1: cut; 2: Range refused (200); 3: whole again, from an empty tree.
    expect(srv.requests.map((r) => r.range)).toEqual([null, expect.stringMatching(/^bytes=/), null]);
  });

  test("a slow body hits --timeout", async () => {
    await using d = tempDir();
    await using srv = httpServer(() => {
      const stream = new ReadableStream({
        async pull(c) {
          await Bun.sleep(100);
          c.enqueue(new Uint8Array(10));
        },
      });
      return new Response(stream);
    });
    fs.writeFileSync(
      join(d.path, "m.yml"),
      `src: ${srv.url}/a.tgz\nchecksum: ${"a".repeat(64)}\ndest: ${d.path}/dest\n${hooks(d.path)}`,
    );
    const { result } = await agent(`file://${d.path}/m.yml`, { fetch: { retry: 0, retryWaitMs: 10, timeoutMs: 400 } });
    expect(result).toMatchObject({ ok: false, phase: "fetch", error: `fetch ${srv.url}/a.tgz: timed out` });
    expect(hookLog(d.path)).toEqual(["failure"]);
  });

  test("--max-bandwidth caps the download rate", async () => {
    await using d = tempDir();
    // 1 MB of incompressible bytes capped at 2 MB/s takes at least 0.5 s; uncapped it takes a few ms.
    const rel = appRelease(
      d.path,
      { "random.bin": crypto.getRandomValues(new Uint8Array(65536)).map((_, i, a) => a[i]!) },
      (a) => `src: SRC\nchecksum: ${a.sha256}\ndest: ${d.path}/dest\n`,
    );
    const blob = new Uint8Array(1_000_000);
    for (let i = 0; i < blob.length; i += 65536)
      crypto.getRandomValues(blob.subarray(i, Math.min(i + 65536, blob.length)));
    fs.writeFileSync(join(d.path, "app-src/random.bin"), blob);
    const archive = join(d.path, "capped.tar.gz");
    Bun.spawnSync(["tar", "czf", archive, "-C", join(d.path, "app-src"), "."]);
    const bytes = fs.readFileSync(archive);
    await using srv = httpServer(() => new Response(bytes));
    fs.writeFileSync(
      rel.manifestPath,
      `src: ${srv.url}/capped.tar.gz\nchecksum: ${sha(archive)}\ndest: ${d.path}/dest\n`,
    );
    const t0 = performance.now();
    expect((await agent(rel.manifestUrl)).result.ok).toBe(true);
    const uncapped = performance.now() - t0;
    const t1 = performance.now();
    expect(
      (await agent(rel.manifestUrl, { fetch: { retry: 0, retryWaitMs: 0, maxBandwidth: 2_000_000 } })).result.ok,
    ).toBe(true);
    const capped = performance.now() - t1;
    expect(capped).toBeGreaterThan((bytes.length / 2_000_000) * 1000 * 0.9);
    expect(capped).toBeGreaterThan(uncapped);
  });
});

describe("hostile archives: refused naming the entry, dest untouched, failure runs", () => {
  async function hostile(entries: RawEntry[] | Uint8Array, over: Partial<DeployOptions> = {}) {
    await using d = tempDir();
    const dest = join(d.path, "dest");
    fs.mkdirSync(dest);
    fs.writeFileSync(join(dest, "old.txt"), "old");
    const outside = join(d.path, "outside");
    fs.mkdirSync(outside);
    const bytes =
      entries instanceof Uint8Array
        ? entries
        : rawTarGz(entries.map((e) => ({ ...e, linkname: e.linkname?.replace("OUTSIDE", outside) })));
    fs.writeFileSync(join(d.path, "evil.tgz"), bytes);
    fs.writeFileSync(
      join(d.path, "m.yml"),
      `src: file://${d.path}/evil.tgz\nchecksum: ${sha(join(d.path, "evil.tgz"))}\ndest: ${dest}\n${hooks(d.path)}`,
    );
    const { result } = await agent(`file://${d.path}/m.yml`, over);
    return {
      result,
      dest: listTree(dest),
      outside: listTree(outside),
      hooks: hookLog(d.path),
      escaped: fs.existsSync("/tmp/pd-escaped"),
    };
  }

  test.each([
    [
      "../x",
      [
        { name: "ok.txt", content: "fine" },
        { name: "../x", content: "evil" },
      ],
      "unsafe entry: path contains ..: ../x",
    ],
    ["a/../../x", [{ name: "a/../../x", content: "evil" }], "unsafe entry: path contains ..: a/../../x"],
    ["/etc/x", [{ name: "/tmp/pd-escaped", content: "evil" }], "unsafe entry: absolute path: /tmp/pd-escaped"],
    [
      "a symlink out of the tree, then a file through it",
      [
        { name: "link", type: "2", linkname: "OUTSIDE" },
        { name: "link/pwned", content: "evil" },
      ],
      "unsafe entry: path goes through a symlink: link/pwned",
    ],
    [
      "a device file",
      [{ name: "dev", type: "3" }],
      'unsupported entry type "3" (only files, directories and links): dev',
    ],
  ] as [string, RawEntry[], string][])("%s", async (_name, entries, message) => {
    const r = await hostile(entries);
    expect(r.result).toMatchObject({ ok: false, phase: "extract", error: message });
    expect(r.dest).toEqual(["old.txt"]);
    expect(r.outside).toEqual([]);
    expect(r.escaped).toBe(false);
    // pre runs before the extract phase (the phase order holds even though extraction streams).
    expect(r.hooks).toEqual(["pre", "failure"]);
  });

  test("a truncated gzip", async () => {
    const full = rawTarGz([
      { name: "big.txt", content: "y".repeat(100_000) },
      { name: "b.txt", content: "b" },
    ]);
    const r = await hostile(full.subarray(0, full.length - 40));
    expect(r.result).toMatchObject({ ok: false, phase: "extract" });
    expect((r.result as { error: string }).error).toMatch(/corrupt archive|truncated archive/);
    expect(r.dest).toEqual(["old.txt"]);
    expect(r.hooks).toEqual(["pre", "failure"]);
  });

  test("a tar bomb of many files hits --max-files, naming the entry", async () => {
    const entries = Array.from({ length: 101 }, (_, i) => ({ name: `f${i}`, content: "x" }));
    const r = await hostile(entries, { limits: { ...DEFAULT_LIMITS, maxEntries: 100 } });
    expect(r.result).toMatchObject({ ok: false, phase: "extract", error: "too many entries (limit 100): f100" });
    expect(r.dest).toEqual(["old.txt"]);
  });

  test("an archive that expands past --max-extract-size", async () => {
    const r = await hostile([{ name: "zeros", content: "\0".repeat(2_000_000) }], {
      limits: { ...DEFAULT_LIMITS, maxBytes: 1_000_000 },
    });
    expect(r.result).toMatchObject({
      ok: false,
      phase: "extract",
      error: "archive expands beyond 1000000 bytes: zeros",
    });
  });

  const canMount =
    Bun.spawnSync(["sh", "-c", "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs $d && umount $d && rmdir $d"])
      .exitCode === 0;
  test.skipIf(!canMount)(
    "disk full before extract: refused at once when not even the archive's size is free",
    async () => {
      await using d = tempDir();
      const small = join(d.path, "small");
      fs.mkdirSync(small);
      expect(Bun.spawnSync(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", small]).exitCode).toBe(0);
      try {
        const rel = appRelease(
          d.path,
          {
            "random.bin": crypto.getRandomValues(new Uint8Array(65536)),
            "more.bin": crypto.getRandomValues(new Uint8Array(50000)),
          },
          (a) => `src: file://${a.path}\nchecksum: ${a.sha256}\ndest: ${d.path}/dest\n${hooks(d.path)}`,
        );
        const { result } = await agent(rel.manifestUrl, { env: { PATH: process.env.PATH, TMPDIR: small } });
        expect(result).toMatchObject({ ok: false, phase: "extract" });
        expect((result as { error: string }).error).toMatch(
          /^not enough disk space: the archive alone is 11\d\.\d kB but \S+ has \d+(\.\d)? kB free$/,
        );
        expect(hookLog(d.path)).toEqual(["failure"]);
        expect(fs.readdirSync(small)).toEqual([]);
      } finally {
        Bun.spawnSync(["umount", small]);
      }
    },
  );

  test.skipIf(!canMount)("disk full during extract: a clear error, dest untouched", async () => {
    await using d = tempDir();
    const small = join(d.path, "small");
    fs.mkdirSync(small);
    expect(Bun.spawnSync(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", small]).exitCode).toBe(0);
    try {
      const rel = appRelease(
        d.path,
        { "big.bin": crypto.getRandomValues(new Uint8Array(60000)), "big2.bin": "z".repeat(600_000) },
        (a) => `src: file://${a.path}\nchecksum: ${a.sha256}\ndest: ${d.path}/dest\n`,
      );
      const { result } = await agent(rel.manifestUrl, { env: { PATH: process.env.PATH, TMPDIR: small } });
      expect(result).toMatchObject({
        ok: false,
        phase: "extract",
        error: "no space left on device while extracting: ./big2.bin",
      });
      expect(fs.existsSync(join(d.path, "dest"))).toBe(false);
      expect(fs.readdirSync(small)).toEqual([]); // the temp dir was removed
    } finally {
      Bun.spawnSync(["umount", small]);
    }
  });
});
