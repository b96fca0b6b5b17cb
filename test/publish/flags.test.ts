/**
 * Each `publish` flag not covered elsewhere changes what it should, through the compiled binary:
 * --include-git, --gzip-level, --checksum-algorithm, --sync-strategy, --sign-key (the agent with
 * --trust-key accepts the release), --consul-addr/--consul-token, and the progress bar on a terminal.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { parseManifest } from "../../src/manifest/parse.ts";
import { createLogger } from "../../src/log.ts";
import { createProgress } from "../../src/publish/progress.ts";
import { generateKeys } from "../../src/signature.ts";
import { startConsulStandin } from "../support/consul-standin.ts";
import { BINARY, listTree, run, writeTree } from "../support/helpers.ts";

let work: string;
let app: string;
let n = 0;

beforeAll(() => {
  work = fs.mkdtempSync("/tmp/pd-publish-flags-");
  app = join(work, "app");
  writeTree(app, {
    "index.html": "hello ".repeat(2000),
    ".git/HEAD": "ref: refs/heads/main\n",
    "lib/.git": "gitdir: x",
  });
});

afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

/** Publish `app` into a fresh file:// store; returns the manifest's text, the archive's path and the run. */
async function publish(args: string[], env: Record<string, string> = {}) {
  const store = join(work, `store${++n}`);
  const r = await run(
    [
      "publish",
      app,
      "--to",
      `file://${store}`,
      "--role",
      "web",
      "--dest",
      join(work, `dest${n}`),
      "--no-kv",
      "--no-event",
      ...args,
    ],
    { env },
  );
  expect(r.stderr).not.toContain("pulldeploy publish:");
  expect(r.code).toBe(0);
  const manifestPath = new URL(r.stdout.trim()).pathname;
  return {
    r,
    manifestPath,
    manifest: fs.readFileSync(manifestPath, "utf8"),
    archive: manifestPath.replace(/\.yml$/, ".tar.gz"),
    url: r.stdout.trim(),
  };
}

function members(archive: string): string[] {
  return Bun.spawnSync(["tar", "tzf", archive], { stdout: "pipe" }).stdout.toString().trim().split("\n");
}

describe("packing flags", () => {
  test("--include-git packs .git, which is left out by default", async () => {
    expect(members((await publish([])).archive)).toEqual(["index.html", "lib/"]);
    expect(members((await publish(["--include-git"])).archive)).toEqual([
      ".git/",
      ".git/HEAD",
      "index.html",
      "lib/",
      "lib/.git",
    ]);
  });

  test("--gzip-level changes the bytes, not the contents", async () => {
    const fast = await publish(["--gzip-level", "1"]);
    const best = await publish(["--gzip-level", "12"]);
    expect(fs.statSync(best.archive).size).toBeLessThan(fs.statSync(fast.archive).size);
    expect(members(fast.archive)).toEqual(members(best.archive));
  });

  test.each(["md5", "sha1", "sha512"] as const)(
    "--checksum-algorithm %s: the manifest's checksum and the id use it",
    async (alg) => {
      const p = await publish(["--checksum-algorithm", alg]);
      const sum = new Bun.CryptoHasher(alg).update(fs.readFileSync(p.archive)).digest("hex");
      expect(parseManifest(p.manifest).manifest.checksum).toEqual({ algorithm: alg, hex: sum });
      expect(p.archive.endsWith(`-${sum.slice(0, 12)}.tar.gz`)).toBe(true);
    },
  );
});

describe("manifest flags", () => {
  test("--sync-strategy release writes the release id; the agent deploys it as a release", async () => {
    const p = await publish(["--sync-strategy", "release"]);
    const id = p.archive.split("/").at(-1)!.replace(".tar.gz", "");
    const { manifest } = parseManifest(p.manifest);
    expect(manifest).toMatchObject({ syncStrategy: "release", releaseId: id });
    const agent = await run(["agent", "--manifest", p.url], { env: { PULLDEPLOY_STATE_DIR: join(work, "state") } });
    expect(agent.stderr).toContain("deploy succeeded");
    expect(fs.readlinkSync(join(manifest.dest!, "current"))).toEndWith(id);
  });

  test("--sign-key uploads a signature before the manifest; an agent with --trust-key accepts it", async () => {
    const keys = generateKeys();
    fs.writeFileSync(join(work, "key.pem"), keys.privatePem);
    fs.writeFileSync(join(work, "key.pub"), keys.publicPem);
    const p = await publish(["--sign-key", join(work, "key.pem")]);
    expect(fs.existsSync(`${p.manifestPath}.sig`)).toBe(true);
    const agent = await run(["agent", "--manifest", p.url, "--trust-key", join(work, "key.pub")]);
    expect(agent.stderr).toContain("deploy succeeded");
    // Unsigned, the same agent refuses.
    const unsigned = await publish([]);
    const refused = await run(["agent", "--manifest", unsigned.url, "--trust-key", join(work, "key.pub")]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("manifest is not signed");
  });
});

describe("Consul flags", () => {
  test("--consul-addr and --consul-token win over the environment; the token never shows", async () => {
    await using consul = await startConsulStandin({ requireToken: "flag-token" });
    const store = join(work, "store-consul");
    const r = await run(
      [
        "publish",
        app,
        "--to",
        `file://${store}`,
        "--role",
        "web",
        "--dest",
        "/srv/web",
        "--consul-addr",
        consul.addr,
        "--consul-token",
        "flag-token",
      ],
      {
        env: { CONSUL_HTTP_ADDR: "127.0.0.1:1", CONSUL_HTTP_TOKEN: "env-token" },
      },
    );
    expect(r.code).toBe(0);
    expect(consul.requests.map((q) => q.headers["x-consul-token"])).toEqual(["flag-token", "flag-token", "flag-token"]);
    expect(consul.fired).toHaveLength(1);
    expect(r.stderr).not.toContain("flag-token");
  });
});

describe("progress", () => {
  test("a bar with bytes, rate and ETA on a terminal, erased at the end; none with --quiet", async () => {
    if (!Bun.which("script")) return;
    const big = join(work, "big");
    writeTree(big, { "a.bin": new Uint8Array(48 * 2 ** 20).map((_, i) => (i * 2654435761) >>> 24) });
    const cmd = (extra: string) =>
      `${BINARY} publish ${big} --to file://${work}/store-tty${extra ? "-q" : ""} --role web --dest /srv/web ` +
      `--no-kv --no-event --no-delta ${extra}`;
    const tty = Bun.spawnSync(["script", "-qec", cmd(""), "/dev/null"], {
      stdout: "pipe",
      env: { PATH: process.env.PATH!, TERM: "xterm" },
    });
    const out = tty.stdout.toString();
    expect(tty.exitCode).toBe(0);
    expect(out).toMatch(
      /\r\x1b\[K\[#*-*\] +\d+% [\d.]+ [kMG]?B\/50\.3 MB [\d.]+ [kMG]?B\/s ETA (\d+s|--) · [\d.]+ [kMG]?B sent/,
    );
    expect(out).toContain("\r\x1b[K2"); // erased before the next log line
    const quiet = Bun.spawnSync(["script", "-qec", cmd("--quiet"), "/dev/null"], {
      stdout: "pipe",
      env: { PATH: process.env.PATH!, TERM: "xterm" },
    });
    expect(quiet.stdout.toString().trim()).toMatch(/^file:\/\/\S+\.yml$/);
    expect(listTree(join(work, "store-tty-q", "web"))).toHaveLength(2);
  });

  test("otherwise a plain log line at most every interval, with the same figures", () => {
    const lines: string[] = [];
    let t = 0;
    const log = createLogger({ write: (l) => lines.push(l), now: () => new Date(0) });
    const written: string[] = [];
    const p = createProgress({ tty: false, write: (s) => written.push(s), log, intervalMs: 5000, now: () => t });
    p.start(100e6);
    t = 1000;
    p.packed(10e6);
    expect(lines).toEqual([]);
    t = 5000;
    p.packed(15e6);
    p.sent(8e6);
    t = 7000;
    p.packed(5e6);
    p.finish();
    expect(lines).toEqual([
      "1970-01-01T00:00:00.000Z progress: 25% (25.0 MB of 100.0 MB packed, 0 B sent, 5.0 MB/s, ETA 15s)\n",
    ]);
    expect(written).toEqual([]);
  });
});
