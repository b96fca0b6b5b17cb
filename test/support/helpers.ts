/** Shared test helpers: temp dirs, real `tar` archives, loopback HTTP servers, running the binary. */
import * as fs from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { DEFAULT_LIMITS } from "../../src/archive/extract.ts";
import { deploy, type DeployOptions } from "../../src/agent/deploy.ts";
import { createLogger } from "../../src/log.ts";

export const ROOT = resolve(import.meta.dir, "../..");
export const BINARY = join(ROOT, "dist/pulldeploy");
/**
 * What real Consul and Serf send and answer, captured (the spec's `shared/fixtures`): a copy kept in the
 * repo so that a clone alone can run the tests; test/unit/fixtures.test.ts checks it against the
 * original whenever that sits beside the clone.
 */
export const FIXTURES = join(ROOT, "test/fixtures");
export const SHARED_FIXTURES = resolve(ROOT, "../shared/fixtures");

/** A temp dir removed at the end of the scope (`await using dir = tempDir()`). */
export function tempDir(prefix = "pd-test-"): { path: string; [Symbol.asyncDispose](): Promise<void> } {
  const path = fs.mkdtempSync(join(tmpdir(), prefix));
  return {
    path,
    async [Symbol.asyncDispose]() {
      fs.rmSync(path, { recursive: true, force: true });
    },
  };
}

/** Write a tree: `{ "a/b.txt": "text", "link": { symlink: "a/b.txt" } }`. */
export function writeTree(
  root: string,
  files: Record<string, string | Uint8Array | { symlink: string } | { mode: number; content: string }>,
): void {
  for (const [rel, v] of Object.entries(files)) {
    const p = join(root, rel);
    fs.mkdirSync(join(p, ".."), { recursive: true });
    if (typeof v === "object" && "symlink" in v) fs.symlinkSync(v.symlink, p);
    else if (typeof v === "object" && "mode" in v) {
      fs.writeFileSync(p, v.content);
      fs.chmodSync(p, v.mode);
    } else fs.writeFileSync(p, v);
  }
}

/** Pack `dir` with the real GNU tar; extra args go before the member list. */
export function tarGz(dir: string, out: string, members: string[] = ["."], extra: string[] = []): string {
  const r = Bun.spawnSync(["tar", "czf", out, ...extra, "-C", dir, ...members]);
  if (r.exitCode !== 0) throw new Error(`tar failed: ${r.stderr.toString()}`);
  return out;
}

export function sha(path: string, algorithm: "md5" | "sha1" | "sha256" | "sha512" = "sha256"): string {
  const h = new Bun.CryptoHasher(algorithm);
  h.update(fs.readFileSync(path));
  return h.digest("hex");
}

/** Build an app archive and a manifest for it; returns the manifest's file:// URL. */
export function appRelease(
  dir: string,
  files: Parameters<typeof writeTree>[1],
  manifest: (archive: { path: string; sha256: string }) => string,
  name = "app",
): { manifestUrl: string; archive: string; sha256: string; manifestPath: string } {
  const src = join(dir, `${name}-src`);
  fs.mkdirSync(src, { recursive: true });
  writeTree(src, files);
  const archive = tarGz(src, join(dir, `${name}.tar.gz`));
  const sha256 = sha(archive);
  const manifestPath = join(dir, `${name}.yml`);
  fs.writeFileSync(manifestPath, manifest({ path: archive, sha256 }));
  return { manifestUrl: `file://${manifestPath}`, archive, sha256, manifestPath };
}

/** Every file under `root` (relative paths, sorted), for comparing trees. */
export function listTree(root: string): string[] {
  const out: string[] = [];
  const walk = (d: string, rel: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      out.push(e.isDirectory() ? `${r}/` : r);
      if (e.isDirectory()) walk(join(d, e.name), r);
    }
  };
  if (fs.existsSync(root)) walk(root, "");
  return out.sort();
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run the compiled binary (or the source with `useSource`) with stdin and env. */
export async function run(
  args: string[],
  opts: {
    stdin?: string;
    env?: Record<string, string | undefined>;
    cwd?: string;
    useSource?: boolean;
    timeoutMs?: number;
  } = {},
): Promise<RunResult> {
  const cmd = opts.useSource ? [process.execPath, join(ROOT, "src/main.ts"), ...args] : [BINARY, ...args];
  const env: Record<string, string> = {};
  // Each run gets its own agent state (duplicate detection, lock) unless the test shares one on purpose.
  const stateDir =
    opts.env && "PULLDEPLOY_STATE_DIR" in opts.env ? undefined : fs.mkdtempSync(join(tmpdir(), "pd-state-"));
  for (const [k, v] of Object.entries({
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    TMPDIR: process.env.TMPDIR,
    PULLDEPLOY_STATE_DIR: stateDir,
    ...opts.env,
  })) {
    if (v !== undefined) env[k] = v;
  }
  const proc = Bun.spawn(cmd, {
    stdin: opts.stdin === undefined ? "ignore" : new TextEncoder().encode(opts.stdin),
    stdout: "pipe",
    stderr: "pipe",
    env,
    cwd: opts.cwd,
    timeout: opts.timeoutMs ?? 30_000,
  });
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  if (stateDir) fs.rmSync(stateDir, { recursive: true, force: true });
  return { code, stdout, stderr };
}

/** Poll `cond` until it is true (no fixed sleeps as synchronisation). */
export async function waitFor(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 15_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await cond()) return;
    await Bun.sleep(25);
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** A loopback HTTP server on port 0, with a request log; `await using`. */
export function httpServer(handler: (req: Request, n: number) => Response | Promise<Response>) {
  const requests: { method: string; path: string; headers: Headers }[] = [];
  const server = Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    async fetch(req) {
      const url = new URL(req.url);
      requests.push({ method: req.method, path: url.pathname, headers: req.headers });
      return handler(req, requests.length);
    },
  });
  return {
    url: `http://127.0.0.1:${server.port}`,
    requests,
    server,
    async [Symbol.asyncDispose]() {
      server.stop(true);
    },
  };
}

/** The deploy pipeline in-process, its log collected: `env` is just PATH (plus `env` in `over`), no retries. */
export function deployWithLog(manifestUrl: string, over: Partial<DeployOptions> = {}) {
  const lines: string[] = [];
  return deploy({
    manifestUrl,
    env: { PATH: process.env.PATH },
    log: createLogger({ write: (l) => void lines.push(l) }),
    fetch: { retry: 0, retryWaitMs: 10 },
    rsyncVerbose: "",
    limits: DEFAULT_LIMITS,
    ...over,
  }).then((result) => ({ result, log: lines.join(""), lines })); // lines: live, for what is logged later
}

/** A raw TCP server on loopback port 0: `onOpen` decides what a client gets (perhaps nothing). */
export function tcpServer(onOpen: (socket: import("bun").Socket<undefined>) => void = () => {}) {
  const sockets: import("bun").Socket<undefined>[] = [];
  const server = Bun.listen<undefined>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(s) {
        sockets.push(s);
        onOpen(s);
      },
      data() {},
    },
  });
  return {
    url: `http://127.0.0.1:${server.port}`,
    connections: () => sockets.length,
    [Symbol.dispose]() {
      for (const s of sockets) s.end();
      server.stop(true);
    },
  };
}

/**
 * Incompressible bytes (xorshift32 words, seeded) so chunk and range arithmetic is not hidden by
 * compression: the benchmarks' generator (scripts/bench-lib.ts imports nothing but node:fs and path).
 */
export { randomBytes as noise } from "../../scripts/bench-lib.ts";

/** Alive and not a zombie (a killed agent's children are reparented; a zombie is dead but unreaped). */
export function running(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}
