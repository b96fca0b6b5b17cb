/**
 * The agent's CLI contract, through the compiled binary: flags (both stretcher spellings), exit codes,
 * the captured consul watch inputs, bad input, signals.
 */
import { beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import {
  appRelease,
  BINARY,
  FIXTURES,
  httpServer,
  listTree,
  run,
  sha,
  tarGz,
  tempDir,
  waitFor,
  writeTree,
} from "../support/helpers.ts";
import { startS3Server } from "../support/s3-server.ts";

beforeAll(() => {
  if (!fs.existsSync(BINARY)) throw new Error(`${BINARY} is missing: run make build`);
});

const APP = { "index.html": "v1", "lib/a.js": "a" };
/** Every stderr line is a timestamped log line: errors are one line each, never a stack trace. */
const TS = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z /;
const lastLine = (s: string) => s.trim().split("\n").at(-1)!.replace(TS, "");

describe("the executable", () => {
  test("--version", async () => {
    const r = await run(["--version"]);
    expect(r).toMatchObject({
      code: 0,
      stdout: expect.stringMatching(/^pulldeploy 0\.1\.0 \(commit ([0-9a-f]{7,}(-dirty)?|unknown)\)\n$/),
    });
  });
  test("--help lists the subcommands", async () => {
    const r = await run(["--help"]);
    expect(r.code).toBe(0);
    for (const c of ["agent", "publish", "fire", "rollback", "keygen"])
      expect(r.stdout).toMatch(new RegExp(`^  ${c} `, "m"));
  });
  test("agent --help lists both spellings of the bandwidth flag", async () => {
    const r = await run(["agent", "--help"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("--max-bandwidth");
    expect(r.stdout).toContain("--max-band-width");
  });
  test("a .env or bunfig.toml in the working directory is not read (built with --no-compile-autoload-dotenv and -bunfig)", async () => {
    await using d = tempDir();
    fs.writeFileSync(join(d.path, ".env"), "FOO=from-dotenv\n");
    fs.writeFileSync(join(d.path, "bunfig.toml"), 'preload = ["./nope.ts"]\n');
    fs.writeFileSync(join(d.path, "m.yml"), 'commands:\n  pre: ["echo FOO=[$FOO]"]\n');
    const r = await run(["agent", "--manifest", `file://${d.path}/m.yml`], { cwd: d.path });
    expect(r.code).toBe(0);
    expect(r.stderr).toContain("FOO=[]");
  });
  test("an unknown command: exit 2 with the list", async () => {
    const r = await run(["deploy"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toStartWith('pulldeploy: unknown command "deploy" (commands: agent, publish, fire, ');
    expect(r.stderr).toEndWith("; see pulldeploy --help)\n");
  });
  test("an unknown flag: exit 2, one line; exit 0 under consul watch", async () => {
    const r = await run(["agent", "--bogus"], { stdin: "" });
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(lastLine(r.stderr)).toStartWith("pulldeploy agent: unknown flag --bogus (valid: --manifest,");
    expect((await run(["agent", "--bogus"], { stdin: "[]", env: { CONSUL_INDEX: "1" } })).code).toBe(0);
  });
  test.each([
    [["--timeout", "soon"], '--timeout: not a duration: "soon" (use e.g. 30, 30s, 500ms, 2m)'],
    [["--max-bandwidth", "fast"], '--max-bandwidth: not a size: "fast"'],
    [["--retry", "-1"], '--retry: expected a whole number ≥ 0, got "-1"'],
    [["--rsync-verbose", "-x"], '--rsync-verbose: expected one of "", -v, -vv, -vvv; got "-x"'],
  ])("bad value %j: exit 2", async (args, msg) => {
    const r = await run(["agent", ...args], { stdin: "file:///x.yml\n" });
    expect(r.code).toBe(2);
    expect(lastLine(r.stderr)).toStartWith(`pulldeploy agent: ${msg}`);
  });
});

describe("consul watch input (captured stdin, CONSUL_INDEX set): always exit 0", () => {
  const stdin = (n: string) => fs.readFileSync(join(FIXTURES, "consul-1.10", n), "utf8");

  test("watch-1: [] logs 'no events' and exits 0 (stretcher failed here)", async () => {
    const r = await run(["agent"], {
      stdin: stdin("watch-1-startup-no-events.stdin.json"),
      env: { CONSUL_INDEX: "1" },
    });
    expect(r.code).toBe(0);
    expect(lastLine(r.stderr)).toStartWith("consul event: no events");
  });

  test("watch-2: s3://bucket/app.yml deploys from a loopback S3 store", async () => {
    await using d = tempDir();
    await using s3 = await startS3Server();
    await s3.createBucket("bucket");
    const rel = appRelease(
      d.path,
      APP,
      (a) => `src: s3://bucket/app.tar.gz\nchecksum: ${a.sha256}\ndest: ${d.path}/dest\n`,
    );
    await s3.put("bucket", "app.tar.gz", fs.readFileSync(rel.archive));
    await s3.put("bucket", "app.yml", fs.readFileSync(rel.manifestPath));
    const r = await run(["agent"], {
      stdin: stdin("watch-2-after-cli-event.stdin.json"),
      env: { CONSUL_INDEX: "15811143543160204488", ...s3.env, AWS_EC2_METADATA_DISABLED: "true" },
    });
    expect(r.code).toBe(0);
    expect(r.stderr).toContain("consul event 4c4dfaad-2a88-5a22-9721-8de5244e36ea (LTime 2): s3://bucket/app.yml");
    expect(listTree(join(d.path, "dest"))).toEqual(["index.html", "lib/", "lib/a.js"]);
  });

  test("watch-3: http://x/app2.yml through HTTP_PROXY (a loopback proxy) deploys", async () => {
    await using d = tempDir();
    const rel = appRelease(
      d.path,
      APP,
      (a) => `src: http://x/app2.tar.gz\nchecksum: ${a.sha256}\ndest: ${d.path}/dest\n`,
    );
    await using proxy = httpServer((req) => {
      const u = new URL(req.url);
      if (u.host !== "x") return new Response("wrong host", { status: 502 });
      return new Response(
        u.pathname === "/app2.yml" ? fs.readFileSync(rel.manifestPath) : fs.readFileSync(rel.archive),
      );
    });
    const r = await run(["agent"], {
      stdin: stdin("watch-3-after-http-event.stdin.json"),
      env: { CONSUL_INDEX: "1", HTTP_PROXY: proxy.url },
    });
    expect(r.code).toBe(0);
    expect(proxy.requests.map((q) => q.path)).toEqual(["/app2.yml", "/app2.tar.gz"]);
    expect(listTree(join(d.path, "dest"))).toEqual(["index.html", "lib/", "lib/a.js"]);
  });

  test.each([["watch-4-after-node-filter-event.stdin.json"], ["watch-5-restart-with-existing-events.stdin.json"]])(
    "%s: a payload that is not a URL fails, exit 0, one clear line",
    async (name) => {
      const r = await run(["agent"], { stdin: stdin(name), env: { CONSUL_INDEX: "2837288600266478106" } });
      expect(r.code).toBe(0);
      expect(lastLine(r.stderr)).toBe(
        'pulldeploy agent: consul event f4e50f41-d645-b52c-d385-1db2de63a736: "filtered-to-dev" is not a URL: ' +
          "a scheme is required (s3://, gs://, http://, https://, file://)",
      );
    },
  );

  test("a failed deploy under consul watch still exits 0", async () => {
    await using d = tempDir();
    fs.writeFileSync(join(d.path, "m.yml"), "src: [broken\n");
    const payload = Buffer.from(`file://${d.path}/m.yml`).toString("base64");
    const r = await run(["agent"], {
      stdin: `[{"ID":"e","Payload":"${payload}","LTime":9}]\n`,
      env: { CONSUL_INDEX: "7" },
    });
    expect(r.code).toBe(0);
    expect(r.stderr).toContain("deploy failed in phase manifest");
  });
});

describe("bad input: one line that says what to fix, exit 1, nothing lost", () => {
  const manifests: [string, string, string][] = [
    ["a YAML syntax error", "src: [oops\n", "manifest: YAML syntax:"],
    [
      "every field wrong at once",
      "src: ftp://x/a\nchecksum: 12\ndest: rel\ndest_mode: 99999\nsync_strategy: scp\n",
      'manifest: src: unknown scheme "ftp" (valid: file, http, https, s3, gs); checksum: length 2',
    ],
    [
      "a wrong checksum length",
      `src: file:///a.tgz\nchecksum: ${"a".repeat(50)}\ndest: /srv/x\n`,
      "manifest: checksum: length 50 matches no algorithm",
    ],
    [
      "a relative dest",
      `src: file:///a.tgz\nchecksum: ${"a".repeat(40)}\ndest: srv/x\n`,
      'manifest: dest: must be an absolute path, got "srv/x"',
    ],
  ];
  test.each(manifests)("%s", async (_n, yaml, msg) => {
    await using d = tempDir();
    fs.writeFileSync(join(d.path, "m.yml"), yaml);
    const r = await run(["agent"], { stdin: `file://${d.path}/m.yml\n` });
    expect(r.code).toBe(1);
    expect(lastLine(r.stderr)).toStartWith(`deploy failed in phase manifest: ${msg}`);
    for (const line of r.stderr.trim().split("\n")) expect(line).toMatch(TS);
  });

  test.each([
    ["empty stdin", "", "pulldeploy agent: stdin: no manifest URL (expected e.g. s3://bucket/app.yml)"],
    ["junk JSON", "[{junk", "pulldeploy agent: consul event: stdin is not JSON:"],
    ["a null payload", '[{"ID":"ev","Payload":null}]', "pulldeploy agent: consul event ev: payload is empty"],
    [
      "a bare path",
      "/srv/app.yml\n",
      'pulldeploy agent: stdin: "/srv/app.yml" is not a URL: a scheme is required (s3://, gs://, http://, ' +
        "https://, file://) (did you mean file:///srv/app.yml?)",
    ],
    [
      "an unknown scheme",
      "ftp://host/app.yml\n",
      'deploy failed in phase manifest: fetch ftp://host/app.yml: unknown scheme "ftp" (valid: file, http, ' +
        "https, s3, gs)",
    ],
    [
      "a file URL with a host",
      "file://host/app.yml\n",
      'deploy failed in phase manifest: fetch file://host/app.yml: file URLs take no host ("host"); use ' +
        "file:///absolute/path",
    ],
  ])("%s", async (_n, stdin, msg) => {
    const r = await run(["agent"], { stdin });
    expect(r.code).toBe(1);
    expect(lastLine(r.stderr)).toStartWith(msg);
  });

  test("a CRLF line works (stretcher trimmed only \\n)", async () => {
    await using d = tempDir();
    const rel = appRelease(d.path, APP, (a) => `src: file://${a.path}\nchecksum: ${a.sha256}\ndest: ${d.path}/dest\n`);
    const r = await run(["agent"], { stdin: `${rel.manifestUrl}\r\n` });
    expect(r.code).toBe(0);
    expect(listTree(join(d.path, "dest"))).toEqual(["index.html", "lib/", "lib/a.js"]);
  });

  test("--manifest needs no stdin", async () => {
    await using d = tempDir();
    const rel = appRelease(d.path, APP, (a) => `src: file://${a.path}\nchecksum: ${a.sha256}\ndest: ${d.path}/dest\n`);
    const r = await run(["agent", "--manifest", rel.manifestUrl]);
    expect(r.code).toBe(0);
    expect(r.stderr).toContain(`--manifest: ${rel.manifestUrl}`);
  });
});

describe("every flag changes behaviour (through the binary)", () => {
  async function flaky(dir: string, failures: number) {
    const rel = appRelease(dir, APP, (a) => `src: SRC\nchecksum: ${a.sha256}\ndest: ${dir}/dest\n`);
    const bytes = fs.readFileSync(rel.archive);
    const srv = httpServer((req, n) =>
      new URL(req.url).pathname.endsWith(".yml")
        ? new Response(fs.readFileSync(rel.manifestPath))
        : n <= failures + 1
          ? new Response("busy", { status: 503 })
          : new Response(bytes),
    );
    fs.writeFileSync(
      rel.manifestPath,
      fs.readFileSync(rel.manifestPath, "utf8").replace("SRC", `${srv.url}/app.tar.gz`),
    );
    return { srv, url: `${srv.url}/app.yml` };
  }

  test("-retry N / -retry-wait (v1 spelling) and --retry / --retry-wait 0.1s (v2)", async () => {
    await using d = tempDir();
    const f = await flaky(d.path, 1);
    await using _s = f.srv;
    const without = await run(["agent"], { stdin: f.url });
    expect(without.code).toBe(1);
    expect(lastLine(without.stderr)).toBe(
      `deploy failed in phase fetch: fetch ${f.srv.url}/app.tar.gz: 503 Service Unavailable`,
    );
    f.srv.requests.length = 0;
    const v1 = await run(["agent", "-retry", "1", "-retry-wait", "0.1"], { stdin: f.url });
    expect(v1.code).toBe(0);
    expect(v1.stderr).toContain("retrying in 0.1s (attempt 2 of 2)");
    f.srv.requests.length = 0;
    const v2 = await run(["agent", "--retry", "2", "--retry-wait", "200ms"], { stdin: f.url });
    expect(v2.code).toBe(0);
    expect(v2.stderr).toContain("retrying in 0.2s (attempt 2 of 3)");
  });

  test("-timeout 1 (seconds) and --timeout 300ms cut a slow download", async () => {
    await using d = tempDir();
    await using srv = httpServer((req) => {
      if (req.url.endsWith(".yml"))
        return new Response(`src: ${srv.url}/slow.tgz\nchecksum: ${"a".repeat(64)}\ndest: ${d.path}/dest\n`);
      return new Response(
        new ReadableStream({
          async pull(c) {
            await Bun.sleep(50);
            c.enqueue(new Uint8Array(8));
          },
        }),
      );
    });
    for (const args of [
      ["-timeout", "1"],
      ["--timeout", "300ms"],
    ]) {
      const r = await run(["agent", ...args], { stdin: `${srv.url}/m.yml` });
      expect(r.code).toBe(1);
      expect(lastLine(r.stderr)).toBe(`deploy failed in phase fetch: fetch ${srv.url}/slow.tgz: timed out`);
    }
  });

  test("-max-bandwidth / --max-band-width slow the download to the cap", async () => {
    await using d = tempDir();
    const blob = new Uint8Array(600_000);
    for (let i = 0; i < blob.length; i += 65536)
      crypto.getRandomValues(blob.subarray(i, Math.min(i + 65536, blob.length)));
    const rel = appRelease(d.path, { "r.bin": blob }, (a) => `src: SRC\nchecksum: ${a.sha256}\ndest: ${d.path}/dest\n`);
    const size = fs.statSync(rel.archive).size;
    await using srv = httpServer(
      (req) =>
        new Response(
          req.url.endsWith(".yml")
            ? fs.readFileSync(rel.manifestPath, "utf8").replace("SRC", `${srv.url}/a.tgz`)
            : fs.readFileSync(rel.archive),
        ),
    );
    for (const args of [
      ["-max-bandwidth", "1M"],
      ["--max-band-width", "1MB"],
    ]) {
      const t0 = performance.now();
      const r = await run(["agent", ...args], { stdin: `${srv.url}/m.yml` });
      const secs = (performance.now() - t0) / 1000;
      expect(r.code).toBe(0);
      expect(secs).toBeGreaterThan((size / 1e6) * 0.9);
    }
  });

  test("--random-delay sleeps before reading stdin, and says so", async () => {
    const r = await run(["agent", "--random-delay", "0.2"], { stdin: "[]", env: { CONSUL_INDEX: "1" } });
    expect(r.stderr).toMatch(/random delay: sleeping 0\.[01]\d\ds/);
    expect((await run(["agent"], { stdin: "[]", env: { CONSUL_INDEX: "1" } })).stderr).not.toContain("random delay");
  });

  test("-rsync-verbose -vv reaches rsync; the default adds no -v", async () => {
    await using d = tempDir();
    const rel = appRelease(d.path, APP, (a) => `src: file://${a.path}\nchecksum: ${a.sha256}\ndest: ${d.path}/dest\n`);
    const vv = await run(["agent", "-rsync-verbose", "-vv"], { stdin: rel.manifestUrl });
    expect(vv.code).toBe(0);
    expect(vv.stderr).toMatch(/sync: rsync -a --delete -vv /);
    expect(vv.stderr).toContain("index.html");
    const quiet = await run(["agent", "--rsync-verbose", ""], { stdin: rel.manifestUrl });
    expect(quiet.stderr).toMatch(/sync: rsync -a --delete \/\S+\/ /);
  });

  test("--no-hardlinks writes every file: no inode shared with dest (rsync) or the previous release", async () => {
    await using d = tempDir();
    // One source tree, only VERSION changing between archives, as a build would give.
    const src = join(d.path, "src");
    writeTree(src, { "lib/a.js": "a", "lib/b.js": "b", VERSION: "0" });
    for (const strategy of ["rsync", "release"]) {
      const dest = join(d.path, `dest-${strategy}`);
      const manifests = [1, 2, 3].map((n) => {
        fs.writeFileSync(join(src, "VERSION"), String(n));
        const archive = tarGz(src, join(d.path, `${strategy}-${n}.tar.gz`));
        const manifest = join(d.path, `${strategy}-${n}.yml`);
        fs.writeFileSync(
          manifest,
          `src: file://${archive}\nchecksum: ${sha(archive)}\ndest: ${dest}\nsync_strategy: ` +
            `${strategy}\nrelease_id: r${n}\n`,
        );
        return `file://${manifest}`;
      });
      const agentLog = async (i: number, flags: string[]) => {
        const r = await run(["agent", ...flags], { stdin: manifests[i]! });
        expect(r.code).toBe(0);
        return r.stderr;
      };
      const ino = () => fs.statSync(join(dest, strategy === "release" ? "current/lib/a.js" : "lib/a.js")).ino;
      await agentLog(0, []);
      const first = ino();
      expect(await agentLog(1, ["--no-hardlinks"])).not.toContain("hard-linked");
      const written = ino();
      const linked = await agentLog(2, []);
      expect(linked).toMatch(/ 2 unchanged files hard-linked/);
      if (strategy === "release") {
        expect(written).not.toBe(first); // a copy in releases/r2
        expect(ino()).toBe(written); // releases/r3 shares r2's inode
      } else {
        expect(linked).toContain("sync: rsync -a --delete");
        expect(ino()).toBe(written); // rsync's quick check skipped the linked, unchanged file
      }
    }
  });

  test("--command-timeout kills a hung command", async () => {
    await using d = tempDir();
    fs.writeFileSync(join(d.path, "m.yml"), 'commands:\n  pre: ["sleep 20"]\n');
    const r = await run(["agent", "--command-timeout", "200ms"], { stdin: `file://${d.path}/m.yml` });
    expect(r.code).toBe(1);
    expect(lastLine(r.stderr)).toBe("deploy failed in phase pre: pre command timed out after 0.2s: sleep 20");
  });

  test("--max-files and --max-extract-size refuse large archives", async () => {
    await using d = tempDir();
    const rel = appRelease(
      d.path,
      { a: "1", b: "2", c: "x".repeat(5000) },
      (a) => `src: file://${a.path}\nchecksum: ${a.sha256}\ndest: ${d.path}/dest\n`,
    );
    const files = await run(["agent", "--max-files", "2"], { stdin: rel.manifestUrl });
    expect(files.code).toBe(1);
    expect(lastLine(files.stderr)).toMatch(/^deploy failed in phase extract: too many entries \(limit 2\): /);
    const size = await run(["agent", "--max-extract-size", "1k"], { stdin: rel.manifestUrl });
    expect(lastLine(size.stderr)).toBe("deploy failed in phase extract: archive expands beyond 1000 bytes: ./c");
    expect(fs.existsSync(join(d.path, "dest"))).toBe(false);
  });
});

describe("signals", () => {
  test("SIGTERM during pre: the command group is killed, failure runs, temp dir removed, exit 1", async () => {
    await using d = tempDir();
    const tmp = join(d.path, "tmp");
    fs.mkdirSync(tmp);
    const rel = appRelease(
      d.path,
      APP,
      (a) =>
        `src: file://${a.path}\nchecksum: ${a.sha256}\ndest: ${d.path}/dest\ncommands:\n  pre: ["touch ` +
        `${d.path}/started; sleep 30"]\n  failure: ["echo failed > ${d.path}/failure.txt"]\n`,
    );
    const proc = Bun.spawn([BINARY, "agent"], {
      stdin: new TextEncoder().encode(rel.manifestUrl),
      stderr: "pipe",
      env: { PATH: process.env.PATH!, TMPDIR: tmp, PULLDEPLOY_STATE_DIR: join(d.path, "state") },
    });
    await waitFor(() => fs.existsSync(join(d.path, "started")), "pre to start");
    proc.kill("SIGTERM");
    const code = await proc.exited;
    const stderr = await new Response(proc.stderr).text();
    expect(code).toBe(1);
    expect(stderr).toContain("received SIGTERM");
    expect(fs.readFileSync(join(d.path, "failure.txt"), "utf8")).toBe("failed\n");
    expect(fs.readdirSync(tmp)).toEqual([]);
    expect(fs.existsSync(join(d.path, "dest"))).toBe(false);
  });
});
