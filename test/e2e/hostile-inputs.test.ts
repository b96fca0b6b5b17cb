/**
 * The compiled agent against a hostile network, hostile configuration and a hostile browser page,
 * run as root with the unprivileged app user owning `dest` (threat classes 4, 5, 6 and 10 of the
 * hardening issue):
 *
 *   4  the network hangs or lies: servers on loopback port 0 that never answer, trickle, send
 *      endless or lying bodies, fail then recover; a trigger writer that never closes stdin
 *   5  secrets never leave the host: a credential planted in every URL appears in no sink (stderr,
 *      the KV report, the failure hook's environment and stdin, the state file, which is 0600)
 *   6  misconfiguration fails closed: one line, exit 2 for flags, nothing deployed and KV untouched
 *   10 the dashboard answers only to its own names (DNS rebinding) and warns off loopback
 */
import { beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { appUser, asApp } from "../support/app-user.ts";
import { startConsulStandin, type ConsulStandin } from "../support/consul-standin.ts";
import { appRelease, BINARY, httpServer, listTree, run, tempDir, waitFor, tcpServer } from "../support/helpers.ts";

const TS = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z /;
const lines = (stderr: string) =>
  stderr
    .trim()
    .split("\n")
    .map((l) => l.replace(TS, ""));
const failedLine = (stderr: string) => lines(stderr).find((l) => l.startsWith("deploy failed in phase ")) ?? "";

beforeAll(() => {
  if (!fs.existsSync(BINARY)) throw new Error(`${BINARY} is missing: run make build`);
  if (process.getuid?.() === 0 && appUser() === undefined) {
    throw new Error("running as root but the pulldeploy-app user is missing: run scripts/setup.sh (it runs useradd)");
  }
});

/** A dest owned by the app user, as in production (the app writes logs and pids there). */
function appDest(root: string): string {
  const dest = join(root, "dest");
  fs.mkdirSync(dest);
  const u = appUser();
  if (u) fs.chownSync(dest, u.uid, u.gid);
  return dest;
}

/** A KV dump of the stand-in: every value as text. */
async function kvDump(consul: ConsulStandin): Promise<string> {
  const res = await fetch(`${consul.url}/v1/kv/?recurse`);
  if (res.status === 404) return "";
  const entries = (await res.json()) as { Key: string; Value: string | null }[];
  return entries
    .map((e) => `${e.Key}=${e.Value === null ? "" : Buffer.from(e.Value, "base64").toString("utf8")}`)
    .join("\n");
}

describe("class 4: the network hangs or lies", () => {
  test("a manifest server that accepts and never answers: each attempt ends at --timeout, --retry honoured, one line", async () => {
    using srv = tcpServer();
    const started = performance.now();
    const r = await run([
      "agent",
      "--timeout",
      "300ms",
      "--retry",
      "1",
      "--retry-wait",
      "50ms",
      "--manifest",
      `${srv.url}/app.yml`,
    ]);
    expect(r.code).toBe(1);
    expect(failedLine(r.stderr)).toBe(
      `deploy failed in phase manifest: fetch ${srv.url}/app.yml: no complete answer within 0.3s (--timeout) ` +
        "(after 2 attempts)",
    );
    expect(lines(r.stderr)).toContain(
      `manifest: fetch ${srv.url}/app.yml: no complete answer within 0.3s (--timeout); retrying in 0.05s ` +
        "(attempt 2 of 2)",
    );
    expect(srv.connections()).toBe(2);
    expect(performance.now() - started).toBeLessThan(10_000);
  });

  test("a src server that accepts and never answers: each attempt ends at --timeout and is retried", async () => {
    await using d = tempDir();
    const dest = appDest(d.path);
    using srv = tcpServer();
    const rel = appRelease(
      d.path,
      { "index.html": "v1" },
      (a) => `src: ${srv.url}/app.tar.gz\nchecksum: ${a.sha256}\ndest: ${dest}\n`,
    );
    const r = await run([
      "agent",
      "--timeout",
      "300ms",
      "--retry",
      "1",
      "--retry-wait",
      "10ms",
      "--manifest",
      rel.manifestUrl,
    ]);
    expect(r.code).toBe(1);
    expect(failedLine(r.stderr)).toBe(
      `deploy failed in phase fetch: fetch ${srv.url}/app.tar.gz: timed out (after 2 attempts)`,
    );
    expect(srv.connections()).toBe(2);
    expect(listTree(dest)).toEqual([]);
  });

  test("an S3 endpoint that accepts and never answers: the manifest's attempts end at --timeout and are retried", async () => {
    using srv = tcpServer();
    const env = {
      AWS_ENDPOINT_URL_S3: srv.url,
      AWS_ACCESS_KEY_ID: "AKIAEXAMPLE",
      AWS_SECRET_ACCESS_KEY: "secret",
      AWS_REGION: "us-east-1",
      AWS_EC2_METADATA_DISABLED: "true",
    };
    const r = await run(
      ["agent", "--timeout", "300ms", "--retry", "1", "--retry-wait", "10ms", "--manifest", "s3://deploys/app.yml"],
      { env },
    );
    expect(r.code).toBe(1);
    expect(failedLine(r.stderr)).toBe(
      "deploy failed in phase manifest: fetch s3://deploys/app.yml: no complete answer within 0.3s (--timeout) " +
        "(after 2 attempts)",
    );
  });

  test("a manifest trickled a byte at a time: the deadline covers the body", async () => {
    let stop = false;
    await using srv = httpServer(
      () =>
        new Response(
          new ReadableStream({
            async pull(c) {
              if (stop) return c.close();
              await Bun.sleep(20); // the hostile server's pace
              c.enqueue(new TextEncoder().encode("#"));
            },
          }),
        ),
    );
    try {
      const r = await run(["agent", "--timeout", "400ms", "--manifest", `${srv.url}/app.yml`]);
      expect(r.code).toBe(1);
      expect(failedLine(r.stderr)).toBe(
        `deploy failed in phase manifest: fetch ${srv.url}/app.yml: no complete answer within 0.4s (--timeout)`,
      );
    } finally {
      stop = true;
    }
  });

  test("an endless manifest body and a lying 10 GB Content-Length are refused at the 1 MiB cap", async () => {
    await using endless = httpServer(
      () => new Response(new ReadableStream({ pull: (c) => c.enqueue(new Uint8Array(65536).fill(0x23)) })),
    );
    const a = await run(["agent", "--manifest", `${endless.url}/big.yml`]);
    expect(a.code).toBe(1);
    expect(failedLine(a.stderr)).toBe(
      `deploy failed in phase manifest: fetch ${endless.url}/big.yml: larger than 1048576 bytes; a manifest or ` +
        "signature is never that big: check the URL",
    );
    using liar = tcpServer((s) => void s.write("HTTP/1.1 200 OK\r\nContent-Length: 10737418240\r\n\r\nsrc: x\n"));
    const b = await run(["agent", "--timeout", "5s", "--manifest", `${liar.url}/big.yml`]);
    expect(failedLine(b.stderr)).toBe(
      `deploy failed in phase manifest: fetch ${liar.url}/big.yml: larger than 1048576 bytes (10737418240 ` +
        "bytes); a manifest or signature is never that big: check the URL",
    );
  });

  test("a manifest that fails with 503 then 502 is deployed on the third attempt (--retry 2)", async () => {
    await using d = tempDir();
    const dest = appDest(d.path);
    const rel = appRelease(
      d.path,
      { "index.html": "v1" },
      (a) => `src: file://${a.path}\nchecksum: ${a.sha256}\ndest: ${dest}\n`,
    );
    await using srv = httpServer((_req, n) =>
      n <= 2 ? new Response("busy", { status: 502 + n - 1 }) : new Response(fs.readFileSync(rel.manifestPath)),
    );
    const r = await run(["agent", "--retry", "2", "--retry-wait", "10ms", "--manifest", `${srv.url}/app.yml`]);
    expect(r.code).toBe(0);
    expect(srv.requests).toHaveLength(3);
    expect(fs.readFileSync(join(dest, "index.html"), "utf8")).toBe("v1");
  });

  test("with --trust-key, a .sig server that hangs fails the deploy in phase signature (not 'unsigned'), before src is fetched", async () => {
    await using d = tempDir();
    expect((await run(["keygen", "--out", join(d.path, "k")])).code).toBe(0);
    const dest = appDest(d.path);
    const rel = appRelease(
      d.path,
      { "index.html": "v1" },
      (a) => `src: file://${a.path}\nchecksum: ${a.sha256}\ndest: ${dest}\n`,
    );
    using hang = tcpServer();
    await using srv = httpServer(async (req) => {
      if (req.url.endsWith(".sig")) return fetch(`${hang.url}/x.sig`); // a backend that never answers
      return new Response(fs.readFileSync(rel.manifestPath));
    });
    const r = await run([
      "agent",
      "--trust-key",
      join(d.path, "k.pub"),
      "--timeout",
      "300ms",
      "--manifest",
      `${srv.url}/app.yml`,
    ]);
    expect(r.code).toBe(1);
    expect(failedLine(r.stderr)).toBe(
      `deploy failed in phase signature: cannot verify the manifest: fetch ${srv.url}/app.yml.sig: no complete ` +
        "answer within 0.3s (--timeout); refusing it because trust keys are configured",
    );
    expect(listTree(dest)).toEqual([]);
  });

  test("a trigger writer that never closes stdin: the agent gives up at --trigger-timeout (exit 1; 0 under consul watch, logged)", async () => {
    for (const consul of [false, true]) {
      await using d = tempDir();
      const proc = Bun.spawn([BINARY, "agent", "--trigger-timeout", "300ms"], {
        stdin: "pipe",
        stdout: "pipe",
        stderr: "pipe",
        env: { PATH: process.env.PATH!, PULLDEPLOY_STATE_DIR: d.path, ...(consul ? { CONSUL_INDEX: "1" } : {}) },
      });
      proc.stdin.write(consul ? "[" : "file:///x"); // a partial trigger, and the pipe held open
      proc.stdin.flush();
      try {
        const code = await proc.exited;
        const stderr = await new Response(proc.stderr).text();
        expect(code).toBe(consul ? 0 : 1);
        expect(lines(stderr)).toEqual([
          "pulldeploy agent: stdin: no complete trigger within 0.3s (consul watch and serf write it and close " +
            "stdin at once; --trigger-timeout)",
        ]);
      } finally {
        proc.stdin.end();
      }
    }
  });

  test("a trigger FIFO whose writer never closes it (a real pipe, not a socket): the same deadline", async () => {
    await using d = tempDir();
    const fifo = join(d.path, "trigger");
    expect(Bun.spawnSync(["mkfifo", fifo]).exitCode).toBe(0);
    const rw = fs.openSync(fifo, fs.constants.O_RDWR); // holds a writer open; never blocks
    fs.writeSync(rw, "file:///x.yml"); // no newline, never closed
    const rd = fs.openSync(fifo, fs.constants.O_RDONLY);
    try {
      const proc = Bun.spawn([BINARY, "agent", "--trigger-timeout", "300ms"], {
        stdin: rd,
        stdout: "ignore",
        stderr: "pipe",
        env: { PATH: process.env.PATH!, PULLDEPLOY_STATE_DIR: d.path },
      });
      expect(await proc.exited).toBe(1);
      expect(lines(await new Response(proc.stderr).text())).toEqual([
        "pulldeploy agent: stdin: no complete trigger within 0.3s (consul watch and serf write it and close " +
          "stdin at once; --trigger-timeout)",
      ]);
    } finally {
      fs.closeSync(rd);
      fs.closeSync(rw);
    }
  });

  test("a trigger written late and in pieces, then closed, within the deadline: read whole and acted on", async () => {
    await using d = tempDir();
    const fifo = join(d.path, "trigger");
    expect(Bun.spawnSync(["mkfifo", fifo]).exitCode).toBe(0);
    const rw = fs.openSync(fifo, fs.constants.O_RDWR);
    const rd = fs.openSync(fifo, fs.constants.O_RDONLY);
    try {
      const started = performance.now();
      const proc = Bun.spawn([BINARY, "agent", "--trigger-timeout", "5s"], {
        stdin: rd,
        stdout: "ignore",
        stderr: "pipe",
        env: { PATH: process.env.PATH!, PULLDEPLOY_STATE_DIR: d.path },
      });
      fs.closeSync(rd);
      await Bun.sleep(150);
      fs.writeSync(rw, "[");
      await Bun.sleep(150);
      fs.writeSync(rw, "]\n");
      fs.closeSync(rw);
      expect(await proc.exited).toBe(0);
      expect(performance.now() - started).toBeGreaterThanOrEqual(300);
      expect(await new Response(proc.stderr).text()).not.toContain("trigger");
    } finally {
      for (const fd of [rd, rw]) {
        try {
          fs.closeSync(fd);
        } catch {}
      }
    }
  });

  test("a trigger larger than 1 MiB is refused without reading on", async () => {
    const r = await run(["agent"], { stdin: `file:///x.yml${" ".repeat(2 << 20)}\n` });
    expect(r.code).toBe(1);
    expect(lines(r.stderr)).toEqual([
      "pulldeploy agent: stdin: more than 1048576 bytes; a trigger is one consul event array or one URL line",
    ]);
  });
});

describe("class 5: secrets never leave the host", () => {
  // One distinct secret per credential form, so a leak names its form.
  const SECRETS = {
    password: "hunter2-PW",
    passwordWithAt: "p@ss-AT",
    token: "ghp_TOKEN0123456789",
    amzSig: "AMZSIG0123abcdef",
    amzCred: "AKIAEXAMPLECRED",
    amzToken: "AMZSESSIONTOKEN",
    googSig: "GOOGSIG9876",
    googCred: "GOOGCRED-sa",
    sas: "AZURESAS-sig",
    accessToken: "OAUTH-access",
  };

  async function leakyDeploy(srcStatus: number) {
    const d = tempDir();
    const state = join(d.path, "state");
    const dest = appDest(d.path);
    await using consul = await startConsulStandin();
    const rel = appRelease(d.path, { "index.html": "v1" }, () => "");
    let srcUrl = "";
    await using srv = httpServer((req) => {
      const path = new URL(req.url).pathname;
      if (path === "/app.yml") {
        return new Response(
          `src: ${srcUrl}\nchecksum: ${rel.sha256}\ndest: ${dest}\ncommands:\n  failure:\n    - env > ` +
            `${d.path}/failure.env\n    - cat > ${d.path}/failure.stdin\n  success:\n    - env > ` +
            `${d.path}/success.env\n    - cat > ${d.path}/success.stdin\n`,
        );
      }
      if (path === "/app.tar.gz")
        return srcStatus === 200
          ? new Response(fs.readFileSync(rel.archive))
          : new Response("no", { status: srcStatus });
      return new Response("not found", { status: 404 });
    });
    const host = srv.url.replace("http://", "");
    srcUrl =
      `http://${SECRETS.token}@${host}/app.tar.gz?X-Amz-Signature=${SECRETS.amzSig}&X-Amz-Credential=${SECRETS.amzCred}` +
      `&X-Amz-Security-Token=${SECRETS.amzToken}&X-Goog-Signature=${SECRETS.googSig}&X-Goog-Credential=${SECRETS.googCred}&sig=${SECRETS.sas}&access_token=${SECRETS.accessToken}`;
    const manifestUrl = `http://deploy:${SECRETS.password}${SECRETS.passwordWithAt}@${host}/app.yml?X-Amz-Signature=${SECRETS.amzSig}`;
    // The state file an older agent left world-readable.
    fs.mkdirSync(state);
    fs.writeFileSync(join(state, "state.json"), "{}\n", { mode: 0o644 });
    const r = await run(["agent", "--role", "web", "--node", "web-1"], {
      stdin: `${manifestUrl}\n`,
      env: { ...consul.env, PULLDEPLOY_STATE_DIR: state },
    });
    const kv = await kvDump(consul);
    return { d, r, kv, state, dest, srv };
  }

  const read = (p: string) => (fs.existsSync(p) ? fs.readFileSync(p, "utf8") : "");

  function expectNoSecret(sinks: Record<string, string>) {
    for (const [sink, text] of Object.entries(sinks)) {
      for (const [form, secret] of Object.entries(SECRETS)) {
        expect({ sink, form, leaked: text.includes(secret) }).toEqual({ sink, form, leaked: false });
      }
    }
  }

  test("a failed deploy (src 403): no secret in stderr, the KV report, the failure hook's env and stdin, or the state file (0600)", async () => {
    const { d, r, kv, state } = await leakyDeploy(403);
    await using _ = d;
    expect(r.code).toBe(1);
    expect(failedLine(r.stderr)).toStartWith("deploy failed in phase fetch: fetch http://***@127.0.0.1:");
    const env = read(join(d.path, "failure.env"));
    expect(env).toContain("PULLDEPLOY_ERROR=fetch http://***@127.0.0.1:");
    expect(env).toContain("PULLDEPLOY_FAILED_PHASE=fetch");
    expect(kv).toContain('"status":"failure"');
    expect(kv).toContain("X-Amz-Signature=***");
    expectNoSecret({
      stderr: r.stderr,
      kv,
      env,
      stdin: read(join(d.path, "failure.stdin")),
      state: read(join(state, "state.json")),
    });
    expect(fs.statSync(join(state, "state.json")).mode & 0o777).toBe(0o600);
    if (appUser()) expect(() => asApp(`cat ${join(state, "state.json")}`)).toThrow("Permission denied");
  });

  test("a successful deploy: no secret in stderr, KV, the success hook's env and stdin, or the state file", async () => {
    const { d, r, kv, state, dest } = await leakyDeploy(200);
    await using _ = d;
    expect(r.code).toBe(0);
    expect(fs.readFileSync(join(dest, "index.html"), "utf8")).toBe("v1");
    const env = read(join(d.path, "success.env"));
    expect(env).toMatch(
      /^PULLDEPLOY_MANIFEST_URL=http:\/\/deploy:\*\*\*@127\.0\.0\.1:\d+\/app\.yml\?X-Amz-Signature=\*\*\*$/m,
    );
    expect(env).toMatch(
      /^PULLDEPLOY_SRC=http:\/\/\*\*\*@127\.0\.0\.1:\d+\/app\.tar\.gz\?X-Amz-Signature=\*\*\*&X-Amz-Credential=\*\*\*&/m,
    );
    expect(kv).toContain('"status":"success"');
    expectNoSecret({
      stderr: r.stderr,
      kv,
      env,
      stdin: read(join(d.path, "success.stdin")),
      state: read(join(state, "state.json")),
    });
    expect(fs.statSync(join(state, "state.json")).mode & 0o777).toBe(0o600);
  });

  test("a src file:// URL with credentials: one line naming it, redacted", async () => {
    await using d = tempDir();
    const dest = appDest(d.path);
    const src = `file://ci:${SECRETS.password}@files.internal/app.tar.gz?X-Goog-Signature=${SECRETS.googSig}`;
    const rel = appRelease(
      d.path,
      { "index.html": "v1" },
      () =>
        `src: ${src}\nchecksum: ${"0".repeat(64)}\ndest: ${dest}\ncommands:\n  failure: ["env > ` +
        `${d.path}/failure.env"]\n`,
    );
    const r = await run(["agent", "--manifest", rel.manifestUrl]);
    expect(r.code).toBe(1);
    expect(failedLine(r.stderr)).toBe(
      "deploy failed in phase fetch: fetch file://ci:***@files.internal/app.tar.gz?X-Goog-Signature=***: not a " +
        "valid file URL; use file:///absolute/path",
    );
    expectNoSecret({ stderr: r.stderr, env: read(join(d.path, "failure.env")) });
  });

  test.each([true, false])(
    "an error that quotes the manifest URL raw (unknown scheme), Consul up: %p: redacted in the KV report or " +
      "the state file's pending report",
    async (consulUp) => {
      await using d = tempDir();
      const state = join(d.path, "state");
      await using consul = await startConsulStandin();
      using down = tcpServer((s) => void s.end()); // a Consul that hangs up on every request
      const url = `ftp://ci:${SECRETS.password}@files.internal/app.yml?X-Goog-Signature=${SECRETS.googSig}`;
      const env = {
        CONSUL_HTTP_ADDR: consulUp ? consul.addr : down.url.replace("http://", ""),
        PULLDEPLOY_STATE_DIR: state,
      };
      const r = await run(["agent", "--role", "web", "--node", "web-1", "--manifest", url], { env });
      expect(r.code).toBe(1);
      expect(failedLine(r.stderr)).toBe(
        "deploy failed in phase manifest: fetch ftp://ci:***@files.internal/app.yml?X-Goog-Signature=***: " +
          'unknown scheme "ftp" (valid: file, http, https, s3, gs)',
      );
      const saved = read(join(state, "state.json"));
      const kv = await kvDump(consul);
      expect(consulUp ? kv : saved).toContain('unknown scheme \\"ftp\\"');
      expectNoSecret({ stderr: r.stderr, state: saved, kv });
    },
  );
});

describe("class 6: misconfiguration fails closed", () => {
  test.each([[["--trust-key="]], [["--trust-key", ""]], [["--trust-key", " , "]], [["-trust-key", ""]]])(
    "explicit empty %j: exit 2, one line",
    async (flag: string[]) => {
      const r = await run(["agent", ...flag, "--manifest", "file:///x.yml"]);
      expect(r.code).toBe(2);
      expect(lines(r.stderr)).toEqual([
        "pulldeploy agent: --trust-key: empty; give the public key file(s) to verify manifests with (e.g. " +
          "--trust-key /etc/pulldeploy/release.pub), or drop the flag",
      ]);
    },
  );

  test.each(["../latest", "..", ".", "", "/", "a/b", "web\n1", "%2e%2e"])(
    "--node %j that could escape its KV prefix: exit 2, KV untouched",
    async (node) => {
      await using consul = await startConsulStandin();
      consul.kvPut("pulldeploy/roles/web/latest", "KEEP");
      const r = await run(["agent", "--role", "web", "--node", node, "--manifest", "file:///x.yml"], {
        env: consul.env,
      });
      expect(r.code).toBe(2);
      expect(lines(r.stderr)).toHaveLength(1);
      expect(lines(r.stderr)[0]).toStartWith(
        `pulldeploy agent: --node: node name ${JSON.stringify(node)} must be 1–128 letters, digits`,
      );
      expect(new TextDecoder().decode(consul.kvEntry("pulldeploy/roles/web/latest")!.value)).toBe("KEEP");
      expect(consul.requests.filter((q) => q.method === "PUT")).toEqual([]);
    },
  );

  test.each([
    ["--kv-prefix", "../x"],
    ["--kv-prefix", "pd/../.."],
    ["--role", ".."],
    ["--role", "../web"],
  ])("%s %j: exit 2", async (flag, value) => {
    const r = await run(["agent", "--role", "web", flag, value, "--manifest", "file:///x.yml"], {
      env: { CONSUL_HTTP_ADDR: "127.0.0.1:1" },
    });
    expect(r.code).toBe(2);
    expect(lines(r.stderr)).toHaveLength(1);
    expect(lines(r.stderr)[0]).toStartWith(`pulldeploy agent: ${flag}: `);
  });

  test.each(["/", "/etc", "/usr/", "/srv/app/../../var", "//bin", "/tmp"])(
    "dest %j: the deploy fails in phase manifest, the failure hook runs, nothing is touched",
    async (dest) => {
      await using d = tempDir();
      const rel = appRelease(
        d.path,
        { "index.html": "v1" },
        (a) =>
          `src: file://${a.path}\nchecksum: ${a.sha256}\ndest: "${dest}"\ncommands:\n  pre: ["touch ` +
          `${d.path}/pre-ran"]\n  failure: ["echo \\"$PULLDEPLOY_ERROR\\" > ${d.path}/failure"]\n`,
      );
      const r = await run(["agent", "--manifest", rel.manifestUrl]);
      expect(r.code).toBe(1);
      expect(failedLine(r.stderr)).toMatch(
        /^deploy failed in phase manifest: manifest: dest: ".*"(?: \(\/[a-z]*\))? is a system directory: a deploy replaces its contents; use a directory of the app's own, e\.g\. \/srv\/app$/,
      );
      expect(fs.readFileSync(join(d.path, "failure"), "utf8")).toContain("is a system directory");
      expect(fs.existsSync(join(d.path, "pre-ran"))).toBe(false);
    },
  );

  test.each([
    [
      "duplicate dest (the second would win in go-yaml)",
      (dest: string) => `dest: ${dest}\ndest: /etc\n`,
      'YAML: duplicate key "dest"',
    ],
    [
      "duplicate commands",
      (dest: string) =>
        `dest: ${dest}\ncommands:\n  pre: ["true"]\ncommands:\n  pre: ["touch /tmp/pd-should-not-run"]\n`,
      'YAML: duplicate key "commands"',
    ],
    [
      'shared_paths: ["."]',
      (dest: string) => `dest: ${dest}\nsync_strategy: release\nshared_paths: ["."]\n`,
      'shared_paths[0]: expected a relative path inside the release, got "."',
    ],
    [
      'shared_paths: ["shared/.."]',
      (dest: string) => `dest: ${dest}\nsync_strategy: release\nshared_paths: ["shared/.."]\n`,
      'shared_paths[0]: expected a relative path inside the release, got "shared/.."',
    ],
  ])("%s: refused, nothing deployed, no command run", async (_name, body, msg) => {
    await using d = tempDir();
    const dest = appDest(d.path);
    const rel = appRelease(
      d.path,
      { "index.html": "v1" },
      (a) => `src: file://${a.path}\nchecksum: ${a.sha256}\n${body(dest)}`,
    );
    const r = await run(["agent", "--manifest", rel.manifestUrl]);
    expect(r.code).toBe(1);
    expect(failedLine(r.stderr)).toContain(msg);
    expect(listTree(dest)).toEqual([]);
    expect(fs.existsSync("/tmp/pd-should-not-run")).toBe(false);
  });

  test("a key that is a collection holding a forged log line: one warning line, no runtime warning, one 'deploy succeeded'", async () => {
    await using d = tempDir();
    const dest = appDest(d.path);
    const rel = appRelease(
      d.path,
      { "index.html": "v1" },
      (a) =>
        `src: file://${a.path}\nchecksum: ${a.sha256}\ndest: ${dest}\n` +
        `["a\\n2026-12-05T00:00:00.000Z deploy succeeded"]: 1\n`,
    );
    const r = await run(["agent", "--manifest", rel.manifestUrl]);
    expect(r.code).toBe(0);
    const out = r.stderr.trim().split("\n");
    // every line the agent printed is its own, time-stamped; the forged text stays inside one of them
    expect(out.filter((l) => !TS.test(l))).toEqual([]);
    expect(out.filter((l) => l.includes("deploy succeeded"))).toHaveLength(2); // the warning's quote and the real one
    expect(lines(r.stderr).filter((l) => l.startsWith("deploy succeeded"))).toHaveLength(1);
    const warning = lines(r.stderr).filter((l) => l.startsWith("manifest: ignoring unknown keys: "));
    expect(warning).toHaveLength(1);
    expect(warning[0]).toContain("2026-12-05T00:00:00.000Z deploy succeeded");
    expect(r.stderr).not.toContain("Keys with collection values");
    expect(fs.readFileSync(join(dest, "index.html"), "utf8")).toBe("v1");
  });

  test("dest_mode 755 (decimal to go-yaml) is warned about; the deploy goes on", async () => {
    await using d = tempDir();
    const dest = appDest(d.path);
    const rel = appRelease(
      d.path,
      { "index.html": "v1" },
      (a) => `src: file://${a.path}\nchecksum: ${a.sha256}\ndest: ${dest}\ndest_mode: 755\n`,
    );
    const r = await run(["agent", "--manifest", rel.manifestUrl]);
    expect(r.code).toBe(0);
    expect(lines(r.stderr)).toContain(
      'dest_mode: "755" is not a 3–4 digit octal mode; write it with a leading zero, e.g. 0755',
    );
  });
});

describe("class 10: the dashboard", () => {
  async function startDashboard(listen: string) {
    const consul = await startConsulStandin();
    const proc = Bun.spawn([BINARY, "dashboard", "--listen", listen], {
      env: { PATH: process.env.PATH!, ...consul.env },
      stdout: "pipe",
      stderr: "pipe",
    });
    let stderr = "";
    const reader = (async () => {
      for await (const chunk of proc.stderr) stderr += new TextDecoder().decode(chunk);
    })();
    await waitFor(() => /listening on http:\/\/\S+:\d+/.test(stderr), "the dashboard to listen");
    const port = Number(/listening on http:\/\/\S+:(\d+)/.exec(stderr)![1]);
    return {
      port,
      stderr: () => stderr,
      async [Symbol.asyncDispose]() {
        proc.kill("SIGTERM");
        await proc.exited;
        await reader;
        await consul.stop();
      },
    };
  }

  test("a request whose Host is not the dashboard's (DNS rebinding) gets 421 on every path; IPs and localhost get the page", async () => {
    await using dash = await startDashboard("127.0.0.1:0");
    const get = (path: string, host: string) =>
      fetch(`http://127.0.0.1:${dash.port}${path}`, { headers: { Host: host } });
    for (const host of [
      "evil.example",
      `evil.example:${dash.port}`,
      `localhost.evil.example:${dash.port}`,
      `127.0.0.1.nip.io:${dash.port}`,
      "",
      "a b",
    ]) {
      for (const path of ["/", "/api/state", "/api/events", "/app.js"]) {
        const res = await get(path, host);
        expect({ host, path, status: res.status }).toEqual({ host, path, status: 421 });
        expect(await res.text()).not.toContain("roles");
      }
    }
    for (const host of [`127.0.0.1:${dash.port}`, `localhost:${dash.port}`, "LOCALHOST", `[::1]:${dash.port}`]) {
      const res = await get("/api/state", host);
      expect({ host, status: res.status }).toEqual({ host, status: 200 });
      expect(await res.json()).toHaveProperty("roles");
    }
    expect(dash.stderr()).not.toContain("warning");
  });

  test("--listen on every interface is warned about at start; the Host check still holds", async () => {
    await using dash = await startDashboard("0.0.0.0:0");
    expect(lines(dash.stderr())).toContain(
      "dashboard: warning: listening on every interface, not loopback: anyone who can reach the port reads " +
        "every role's nodes, releases and errors (there is no login); prefer 127.0.0.1 behind an SSH tunnel or " +
        "an authenticating proxy",
    );
    expect(
      (await fetch(`http://127.0.0.1:${dash.port}/api/state`, { headers: { Host: "rebind.example" } })).status,
    ).toBe(421);
    expect((await fetch(`http://127.0.0.1:${dash.port}/api/state`)).status).toBe(200);
  });
});
