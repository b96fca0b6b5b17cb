/**
 * `pulldeploy publish` (the compiled binary) into each target: a directory (`file://`), the loopback
 * S3 server (multipart, downloaded back and compared byte for byte with an in-process pack of the same
 * tree), and a WebDAV-style HTTP PUT server. Plus the target failures: missing bucket, 403, the
 * network going down mid-upload (retried, then a clear error, no manifest), a taken name.
 * KV and events are off here (`--no-kv --no-event`); publish-consul/serf test those.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import { createServer as createNetServer, connect, type AddressInfo, type Socket } from "node:net";
import { join } from "node:path";
import { parseManifest } from "../../src/manifest/parse.ts";
import { packTree, scanTree } from "../../src/archive/pack.ts";
import { silentLogger } from "../../src/log.ts";
import { fileTarget } from "../../src/store/targets/file.ts";
import { s3Target } from "../../src/store/targets/s3.ts";
import { UploadError, type TargetOptions } from "../../src/store/targets/types.ts";
import { listTree, run, tempDir, writeTree, type RunResult } from "../support/helpers.ts";
import { startS3Server, type S3TestServer } from "../support/s3-server.ts";

const BUCKET = "releases";
const ID = /^\d{8}T\d{6}Z-[0-9a-f]{12}$/;
const QUIET: Pick<TargetOptions, "log" | "retries" | "retryWaitMs"> = { log: silentLogger, retries: 0, retryWaitMs: 1 };

let s3: S3TestServer;
let work: string;
/** A tree whose archive is > 8 MiB: three parts. */
let bigApp: string;
let smallApp: string;

beforeAll(async () => {
  s3 = await startS3Server();
  await s3.createBucket(BUCKET);
  work = fs.mkdtempSync("/tmp/pd-publish-targets-");
  bigApp = join(work, "big");
  writeTree(bigApp, { "bin/app": randomBytes(18 * 2 ** 20), README: "big app\n", "conf/app.yml": "port: 8080\n" });
  fs.mkdirSync(join(bigApp, "log"));
  smallApp = join(work, "small");
  writeTree(smallApp, {
    "index.html": "<h1>hi</h1>\n",
    "static/app.js": "console.log(1)\n",
    current: { symlink: "index.html" },
  });
});

afterAll(async () => {
  await s3?.stop();
  fs.rmSync(work, { recursive: true, force: true });
});

function publish(args: string[], env: Record<string, string | undefined> = {}): Promise<RunResult> {
  return run(["publish", ...args, "--no-kv", "--no-event", "--no-delta", "--retry-wait", "20ms"], { env: { ...env } });
}

/** The archive bytes `publish` must have produced for `dir` (packing is reproducible). */
async function expectedArchive(dir: string): Promise<Uint8Array> {
  return new Response(packTree(scanTree(dir, { excludes: [] }), { algorithm: "sha256", gzipLevel: 6 }).stream).bytes();
}

function sha256(b: Uint8Array): string {
  return new Bun.CryptoHasher("sha256").update(b).digest("hex");
}

async function s3Admin() {
  const sdk = await import("@aws-sdk/client-s3");
  const client = new sdk.S3Client({
    endpoint: s3.endpoint,
    region: s3.region,
    forcePathStyle: true,
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
  });
  return {
    async keys(prefix: string): Promise<string[]> {
      const r = await client.send(new sdk.ListObjectsV2Command({ Bucket: BUCKET, Prefix: prefix }));
      return (r.Contents ?? []).map((o) => o.Key!).sort();
    },
    async get(key: string): Promise<Uint8Array> {
      const r = await client.send(new sdk.GetObjectCommand({ Bucket: BUCKET, Key: key }));
      return r.Body!.transformToByteArray();
    },
    async uploads(): Promise<string[]> {
      const r = await client
        .send(new sdk.ListMultipartUploadsCommand({ Bucket: BUCKET }))
        .catch(() => ({ Uploads: [] as { Key?: string }[] }));
      return (r.Uploads ?? []).map((u) => u.Key!);
    },
    [Symbol.dispose]: () => client.destroy(),
  };
}

describe("file://", () => {
  test("archive and manifest appear under <dir>/<role>/, the manifest reads as the agent reads it", async () => {
    await using d = tempDir();
    const r = await publish([
      smallApp,
      "--to",
      `file://${d.path}/store`,
      "--role",
      "web",
      "--dest",
      "/srv/web",
      "--dest-mode",
      "0750",
      "--exclude-on-dest",
      "*.pid,tmp/",
      "--exclude-on-dest",
      "*.sock",
    ]);
    expect(r.stderr).not.toContain("pulldeploy publish:");
    expect(r.code).toBe(0);
    const manifestUrl = r.stdout.trim();
    const id = /\/web\/([^/]+)\.yml$/.exec(manifestUrl)![1]!;
    expect(id).toMatch(ID);
    expect(manifestUrl).toBe(`file://${d.path}/store/web/${id}.yml`);
    expect(listTree(`${d.path}/store`)).toEqual(["web/", `web/${id}.tar.gz`, `web/${id}.yml`]);

    const archive = fs.readFileSync(`${d.path}/store/web/${id}.tar.gz`);
    expect(Buffer.from(await expectedArchive(smallApp)).equals(archive)).toBe(true);
    const text = fs.readFileSync(`${d.path}/store/web/${id}.yml`, "utf8");
    const { manifest, warnings } = parseManifest(text);
    expect(warnings).toEqual([]);
    expect(manifest.src).toBe(`file://${d.path}/store/web/${id}.tar.gz`);
    expect(manifest.checksum).toEqual({ algorithm: "sha256", hex: sha256(archive) });
    expect(id.endsWith(sha256(archive).slice(0, 12))).toBe(true);
    expect(manifest.dest).toBe("/srv/web");
    expect(manifest.destMode).toBe(0o750);
    expect(manifest.excludes).toEqual(["*.pid", "tmp/", "*.sock"]);
    expect(text).toContain("dest_mode: 0750\n");
  });

  test("an unusable directory is one clear line, before packing", async () => {
    const r = await publish([smallApp, "--to", "file:///etc/hostname/releases", "--role", "web", "--dest", "/srv/web"]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toContain("pulldeploy publish: store file:///etc/hostname/releases: not a directory");
  });

  test("a taken name is never overwritten", async () => {
    await using d = tempDir();
    const target = await fileTarget(`file://${d.path}`, { env: {}, ...QUIET });
    await target.putBytes("web/x.yml", new TextEncoder().encode("first"), "application/x-yaml");
    const err = await target
      .putBytes("web/x.yml", new TextEncoder().encode("second"), "application/x-yaml")
      .catch((e) => e);
    expect(err).toBeInstanceOf(UploadError);
    expect((err as UploadError).exists).toBe(true);
    expect(err.message).toBe(`store file://${d.path}/web/x.yml: already exists (releases are never overwritten)`);
    const again = await target
      .putStream(new Blob(["third"]).stream(), () => "web/x.yml", "application/gzip")
      .catch((e) => e);
    expect(again).toBeInstanceOf(UploadError);
    expect(fs.readFileSync(join(d.path, "web/x.yml"), "utf8")).toBe("first");
    // No staging file is left behind.
    expect(listTree(d.path)).toEqual(["web/", "web/x.yml"]);
  });
});

describe("s3://", () => {
  test("a multi-part archive, downloaded back byte for byte; no staging object left", async () => {
    using admin = await s3Admin();
    const r = await publish([bigApp, "--to", `s3://${BUCKET}/multi`, "--role", "api", "--dest", "/srv/api"], s3.env);
    expect(r.stderr).not.toContain("pulldeploy publish:");
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/multipart upload of 3 parts done/);
    const manifestUrl = r.stdout.trim();
    const id = /\/api\/([^/]+)\.yml$/.exec(manifestUrl)![1]!;
    expect(manifestUrl).toBe(`s3://${BUCKET}/multi/api/${id}.yml`);
    expect(await admin.keys("multi/")).toEqual([`multi/api/${id}.tar.gz`, `multi/api/${id}.yml`]);
    expect(await admin.uploads()).toEqual([]);

    const archive = await admin.get(`multi/api/${id}.tar.gz`);
    expect(archive.length).toBeGreaterThan(16 * 2 ** 20);
    expect(Buffer.from(archive).equals(Buffer.from(await expectedArchive(bigApp)))).toBe(true);
    const { manifest } = parseManifest(new TextDecoder().decode(await admin.get(`multi/api/${id}.yml`)));
    expect(manifest.src).toBe(`s3://${BUCKET}/multi/api/${id}.tar.gz`);
    expect(manifest.checksum!.hex).toBe(sha256(archive));

    // And the real tar unpacks what came back.
    await using d = tempDir();
    fs.writeFileSync(join(d.path, "a.tgz"), archive);
    fs.mkdirSync(join(d.path, "x"));
    expect(Bun.spawnSync(["tar", "xzf", join(d.path, "a.tgz"), "-C", join(d.path, "x")]).exitCode).toBe(0);
    expect(listTree(join(d.path, "x"))).toEqual(listTree(bigApp));
  });

  test("a small archive is one PutObject; credentials from a shared credentials file and profile", async () => {
    using admin = await s3Admin();
    await using d = tempDir();
    const creds = join(d.path, "credentials");
    fs.writeFileSync(
      creds,
      `[deployer]\naws_access_key_id = ${s3.accessKeyId}\naws_secret_access_key = ${s3.secretAccessKey}\n`,
    );
    const r = await publish([smallApp, "--to", `s3://${BUCKET}/small/`, "--role", "web", "--dest", "/srv/web"], {
      AWS_ENDPOINT_URL_S3: s3.endpoint,
      AWS_REGION: s3.region,
      AWS_SHARED_CREDENTIALS_FILE: creds,
      AWS_CONFIG_FILE: join(d.path, "none"),
      AWS_PROFILE: "deployer",
    });
    expect(r.stderr).not.toContain("pulldeploy publish:");
    expect(r.code).toBe(0);
    expect(r.stderr).not.toContain("multipart");
    const id = /\/web\/([^/]+)\.yml$/.exec(r.stdout.trim())![1]!;
    expect(await admin.keys("small/")).toEqual([`small/web/${id}.tar.gz`, `small/web/${id}.yml`]);
    expect(
      Buffer.from(await admin.get(`small/web/${id}.tar.gz`)).equals(Buffer.from(await expectedArchive(smallApp))),
    ).toBe(true);
  });

  test("a missing bucket fails before packing, in one line", async () => {
    const r = await publish([smallApp, "--to", "s3://no-such-bucket/x", "--role", "web", "--dest", "/srv/web"], s3.env);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toContain(
      'pulldeploy publish: store s3://no-such-bucket/x: bucket "no-such-bucket" does not exist (404 NoSuchBucket)',
    );
  });

  test("403 (a wrong secret): not retried, a clear error, nothing stored", async () => {
    using admin = await s3Admin();
    const r = await publish([smallApp, "--to", `s3://${BUCKET}/denied`, "--role", "web", "--dest", "/srv/web"], {
      ...s3.env,
      AWS_SECRET_ACCESS_KEY: "wrong",
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /pulldeploy publish: store s3:\/\/releases\/denied\/web\/\d{8}T\d{6}Z-[0-9a-f]{12}\.tar\.gz: 403 SignatureDoesNotMatch\n$/,
    );
    expect(r.stderr).not.toContain("retrying");
    expect(await admin.keys("denied/")).toEqual([]);
  });

  test("the network going down mid-upload: parts retried, then one clear error, no manifest", async () => {
    using admin = await s3Admin();
    await using proxy = await cuttingProxy(Number(new URL(s3.endpoint).port), 6 * 2 ** 20);
    const r = await publish(
      [bigApp, "--to", `s3://${BUCKET}/cut`, "--role", "api", "--dest", "/srv/api", "--retry", "2"],
      {
        ...s3.env,
        AWS_ENDPOINT_URL_S3: `http://127.0.0.1:${proxy.port}`,
      },
    );
    expect(proxy.cut).toBe(true);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/retrying in 20ms \(1\/2\)/);
    expect(r.stderr).toMatch(/retrying in 40ms \(2\/2\)/);
    const last = r.stderr.trim().split("\n").at(-1)!;
    expect(last).toMatch(
      /pulldeploy publish: store s3:\/\/releases\/cut: archive part \d \(multipart upload\): connect ECONNREFUSED 127\.0\.0\.1:\d+ \(after 3 attempts\)$/,
    );
    expect(await admin.keys("cut/")).not.toContainEqual(expect.stringMatching(/\.yml$/));
    expect((await admin.keys("cut/")).filter((k) => !k.includes(".pulldeploy-staging"))).toEqual([]);
  });

  test("a taken name is never overwritten (HEAD first, If-None-Match on the write)", async () => {
    using admin = await s3Admin();
    const saved = { ...process.env };
    Object.assign(process.env, s3.env);
    try {
      const target = await s3Target(`s3://${BUCKET}/taken`, { env: s3.env, ...QUIET });
      await target.putBytes("web/x.yml", new TextEncoder().encode("first"), "application/x-yaml");
      const err = await target
        .putBytes("web/x.yml", new TextEncoder().encode("second"), "application/x-yaml")
        .catch((e) => e);
      expect(err).toBeInstanceOf(UploadError);
      expect(err.message).toBe(`store s3://${BUCKET}/taken/web/x.yml: already exists (releases are never overwritten)`);
      // A multipart upload too: the staging copy is removed, the taken name untouched.
      const big = randomBytes(9 * 2 ** 20);
      const err2 = await target
        .putStream(new Blob([big]).stream(), () => "web/x.yml", "application/gzip")
        .catch((e) => e);
      expect((err2 as UploadError).exists).toBe(true);
      expect(new TextDecoder().decode(await admin.get("taken/web/x.yml"))).toBe("first");
      expect(await admin.keys("taken/")).toEqual(["taken/web/x.yml"]);
      target.close();
    } finally {
      for (const k of Object.keys(s3.env)) if (saved[k] === undefined) delete process.env[k];
      Object.assign(process.env, saved);
    }
  });
});

describe("http(s):// PUT", () => {
  test("archive then manifest PUT with If-None-Match; basic auth used, never written into the URLs", async () => {
    await using dav = davServer();
    const base = `http://deployer:s3cret@127.0.0.1:${dav.port}/dav/app`;
    const r = await publish([smallApp, "--to", base, "--role", "web", "--dest", "/srv/web"]);
    expect(r.stderr).not.toContain("pulldeploy publish:");
    expect(r.code).toBe(0);
    expect(r.stderr).not.toContain("s3cret");
    const manifestUrl = r.stdout.trim();
    const id = /\/web\/([^/]+)\.yml$/.exec(manifestUrl)![1]!;
    expect(manifestUrl).toBe(`http://127.0.0.1:${dav.port}/dav/app/web/${id}.yml`);
    const puts = dav.log.filter((l) => l.method === "PUT");
    expect(puts.map((p) => p.path)).toEqual([`/dav/app/web/${id}.tar.gz`, `/dav/app/web/${id}.yml`]);
    for (const p of puts) {
      expect(p.ifNoneMatch).toBe("*");
      expect(p.auth).toBe(`Basic ${btoa("deployer:s3cret")}`);
    }
    const archive = dav.files.get(`/dav/app/web/${id}.tar.gz`)!;
    expect(Buffer.from(archive).equals(Buffer.from(await expectedArchive(smallApp)))).toBe(true);
    const { manifest } = parseManifest(new TextDecoder().decode(dav.files.get(`/dav/app/web/${id}.yml`)!));
    expect(manifest.src).toBe(`http://127.0.0.1:${dav.port}/dav/app/web/${id}.tar.gz`);
    expect(manifest.checksum!.hex).toBe(sha256(archive));
  });

  test("a strict WebDAV server (409 for a missing collection) gets MKCOL first; 5xx answers are retried", async () => {
    await using dav = davServer({ strict: true, failFirstPuts: 2 });
    const r = await publish([
      smallApp,
      "--to",
      `http://127.0.0.1:${dav.port}/dav`,
      "--role",
      "web",
      "--dest",
      "/srv/web",
    ]);
    expect(r.stderr).not.toContain("pulldeploy publish:");
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/503 Service Unavailable; retrying in 20ms \(1\/3\)/);
    expect(dav.log.filter((l) => l.method === "MKCOL").map((l) => l.path)).toEqual(["/dav/web/"]);
    expect([...dav.files.keys()].filter((k) => !k.endsWith("/")).length).toBe(2);
  });

  test("a non-2xx answer is an error naming the status; the manifest is never sent", async () => {
    await using dav = davServer({ deny: true });
    const r = await publish([
      smallApp,
      "--to",
      `http://127.0.0.1:${dav.port}/dav`,
      "--role",
      "web",
      "--dest",
      "/srv/web",
    ]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /pulldeploy publish: store http:\/\/127\.0\.0\.1:\d+\/dav\/web\/\S+\.tar\.gz: 403 Forbidden\n$/,
    );
    expect(dav.log.filter((l) => l.method === "PUT").map((l) => l.path)).toEqual([expect.stringMatching(/\.tar\.gz$/)]);
  });
});

/** A WebDAV-ish server: HEAD, GET, PUT (If-None-Match honoured), MKCOL. */
function davServer(opts: { strict?: boolean; failFirstPuts?: number; deny?: boolean } = {}) {
  const files = new Map<string, Uint8Array>();
  const log: { method: string; path: string; ifNoneMatch: string | null; auth: string | null }[] = [];
  let failures = opts.failFirstPuts ?? 0;
  const server = Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    async fetch(req) {
      const path = decodeURIComponent(new URL(req.url).pathname);
      log.push({
        method: req.method,
        path,
        ifNoneMatch: req.headers.get("if-none-match"),
        auth: req.headers.get("authorization"),
      });
      if (req.method === "HEAD" || req.method === "GET") {
        const f = files.get(path);
        return f
          ? new Response(req.method === "GET" ? f : null, { headers: { "Content-Length": String(f.length) } })
          : new Response(null, { status: 404 });
      }
      if (req.method === "MKCOL") {
        if (files.has(path)) return new Response(null, { status: 405 });
        files.set(path, new Uint8Array());
        return new Response(null, { status: 201 });
      }
      if (req.method === "PUT") {
        const body = new Uint8Array(await req.arrayBuffer());
        if (opts.deny) return new Response("no", { status: 403 });
        if (failures > 0) {
          failures--;
          return new Response("busy", { status: 503 });
        }
        if (req.headers.get("if-none-match") === "*" && files.has(path)) return new Response(null, { status: 412 });
        if (opts.strict && !files.has(path.slice(0, path.lastIndexOf("/") + 1)) && path.split("/").length > 3)
          return new Response(null, { status: 409 });
        files.set(path, body);
        return new Response(null, { status: 201 });
      }
      return new Response(null, { status: 405 });
    },
  });
  if (opts.strict) files.set("/dav/", new Uint8Array());
  return { port: server.port!, files, log, [Symbol.asyncDispose]: async () => void server.stop(true) };
}

/**
 * A TCP proxy to `port` that forwards bytes until `limit` bytes went upstream, then drops every
 * connection and stops listening: the network going down in the middle of an upload.
 */
async function cuttingProxy(port: number, limit: number) {
  let sent = 0;
  const state = { cut: false };
  const sockets = new Set<Socket>();
  const server = createNetServer((client) => {
    const upstream = connect(port, "127.0.0.1");
    sockets.add(client);
    sockets.add(upstream);
    for (const s of [client, upstream]) {
      s.on("error", () => {});
      s.on("close", () => sockets.delete(s));
    }
    upstream.pipe(client);
    client.on("data", (chunk: Buffer) => {
      if (state.cut) return;
      sent += chunk.length;
      if (sent > limit) {
        state.cut = true;
        server.close();
        for (const s of sockets) s.destroy();
        return;
      }
      if (!upstream.write(chunk)) {
        client.pause();
        upstream.once("drain", () => client.resume());
      }
    });
    client.on("end", () => upstream.end());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const listening = (server.address() as AddressInfo).port;
  return {
    port: listening,
    get cut() {
      return state.cut;
    },
    async [Symbol.asyncDispose]() {
      server.close();
      for (const s of sockets) s.destroy();
    },
  };
}
