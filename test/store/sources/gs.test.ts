/**
 * The gs source against a loopback Bun.serve that plays Google: the Cloud Storage JSON API, the
 * OAuth token endpoint (which verifies the service account's JWT with the public half of a freshly
 * generated RSA key) and the GCE metadata server. Each test passes its own env; none touches
 * process.env or the network beyond 127.0.0.1.
 */
import { beforeAll, describe, expect, test } from "bun:test";
import { generateKeyPairSync, randomBytes, randomUUID, verify, type KeyObject } from "node:crypto";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FetchError } from "../../../src/errors.ts";
import { makeGsSource, parseGsUrl } from "../../../src/store/sources/gs.ts";
import type { Env } from "../../../src/env.ts";
import type { OpenOptions } from "../../../src/store/sources/types.ts";

const CLIENT_EMAIL = "deployer@example-project.iam.gserviceaccount.com";
const KEY_ID = "0123456789abcdef";
const READ_ONLY = "https://www.googleapis.com/auth/devstorage.read_only";
const USER = { client_id: "client-id.apps.example", client_secret: "client-secret", refresh_token: "1//refresh-token" };
const OBJECT = randomBytes(256 * 1024 + 7);

let keys: { privateKey: KeyObject; publicKey: KeyObject };
let otherKeys: { privateKey: KeyObject; publicKey: KeyObject };

beforeAll(() => {
  keys = generateKeyPairSync("rsa", { modulusLength: 2048 });
  otherKeys = generateKeyPairSync("rsa", { modulusLength: 2048 });
});

interface Seen {
  path: string;
  authorization: string | null;
  range: string | null;
  metadataFlavor: string | null;
}

/** A loopback stand-in for Google's storage, OAuth and metadata endpoints. */
function startFakeGoogle() {
  const issued = new Set<string>();
  const seen: Seen[] = [];
  const objects = new Map<string, Uint8Array>([
    ["builds/app/app 1.tar.gz", OBJECT],
    ["builds/manifest.yml", new TextEncoder().encode("src: gs://builds/app.tar.gz\n")],
  ]);
  const buckets = new Set(["builds", "flaky"]);
  const state = { acceptTokens: true, emulator: false };

  const issue = () => {
    const token = `ya29.${randomUUID()}`;
    issued.add(token);
    return Response.json({ access_token: token, expires_in: 3599, token_type: "Bearer" });
  };
  const googleError = (status: number, message: string) =>
    Response.json({ error: { code: status, message } }, { status });
  const oauthError = (description: string) =>
    Response.json({ error: "invalid_grant", error_description: description }, { status: 400 });

  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(req) {
      const url = new URL(req.url);
      seen.push({
        path: url.pathname,
        authorization: req.headers.get("authorization"),
        range: req.headers.get("range"),
        metadataFlavor: req.headers.get("metadata-flavor"),
      });

      if (req.method === "POST" && url.pathname === "/token") {
        const form = new URLSearchParams(await req.text());
        if (form.get("grant_type") === "urn:ietf:params:oauth:grant-type:jwt-bearer") {
          const problem = checkJwt(form.get("assertion") ?? "", `${url.origin}/token`);
          return problem ? oauthError(problem) : issue();
        }
        if (form.get("grant_type") === "refresh_token") {
          const ok =
            form.get("client_id") === USER.client_id &&
            form.get("client_secret") === USER.client_secret &&
            form.get("refresh_token") === USER.refresh_token;
          return ok ? issue() : oauthError("Bad Request");
        }
        return oauthError(`unsupported grant_type ${form.get("grant_type")}`);
      }

      if (req.method === "GET" && url.pathname === "/computeMetadata/v1/instance/service-accounts/default/token") {
        if (req.headers.get("metadata-flavor") !== "Google")
          return new Response("Missing Metadata-Flavor:Google header.", { status: 403 });
        return issue();
      }

      const m = /^\/storage\/v1\/b\/([^/]+)\/o\/([^/]+)$/.exec(url.pathname);
      if (req.method === "GET" && m && url.searchParams.get("alt") === "media") {
        const token = /^Bearer (.+)$/.exec(req.headers.get("authorization") ?? "")?.[1];
        if (!state.emulator && (!state.acceptTokens || token === undefined || !issued.has(token)))
          return googleError(401, "Invalid Credentials");
        const bucket = decodeURIComponent(m[1]!);
        const name = decodeURIComponent(m[2]!);
        if (bucket === "flaky") return googleError(503, "Backend Error");
        if (!buckets.has(bucket)) return googleError(404, "The specified bucket does not exist.");
        const body = objects.get(`${bucket}/${name}`);
        if (!body) return googleError(404, `No such object: ${bucket}/${name}`);
        const range = /^bytes=(\d+)-$/.exec(req.headers.get("range") ?? "");
        if (!range) return new Response(body, { headers: { "Content-Type": "application/octet-stream" } });
        const start = Number(range[1]);
        if (start >= body.length) return googleError(416, "The requested range cannot be satisfied.");
        return new Response(body.subarray(start), {
          status: 206,
          headers: { "Content-Range": `bytes ${start}-${body.length - 1}/${body.length}` },
        });
      }
      return new Response("not found", { status: 404 });
    },
  });

  return {
    origin: server.url.origin,
    host: `127.0.0.1:${server.port}`,
    seen,
    issued,
    state,
    storageRequests: () => seen.filter((s) => s.path.startsWith("/storage/")),
    async [Symbol.asyncDispose]() {
      await server.stop(true);
    },
  };
}

/** Why the JWT bearer assertion is not acceptable, or undefined when it is. */
function checkJwt(jwt: string, audience: string): string | undefined {
  const [h, c, s] = jwt.split(".");
  if (!h || !c || !s) return "malformed JWT";
  if (!verify("RSA-SHA256", Buffer.from(`${h}.${c}`), keys.publicKey, Buffer.from(s, "base64url")))
    return "Invalid JWT Signature.";
  const header = JSON.parse(Buffer.from(h, "base64url").toString());
  const claims = JSON.parse(Buffer.from(c, "base64url").toString());
  const now = Math.floor(Date.now() / 1000);
  if (header.alg !== "RS256" || header.typ !== "JWT" || header.kid !== KEY_ID)
    return `bad JWT header ${JSON.stringify(header)}`;
  if (claims.iss !== CLIENT_EMAIL) return `bad iss ${claims.iss}`;
  if (claims.aud !== audience) return `bad aud ${claims.aud}`;
  if (claims.scope !== READ_ONLY) return `bad scope ${claims.scope}`;
  if (Math.abs(claims.iat - now) > 60 || claims.exp - claims.iat !== 3600)
    return "Invalid JWT: Token must be a short-lived token";
  return undefined;
}

async function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), "pulldeploy-gs-"));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function serviceAccountFile(dir: string, tokenUri: string, privateKey = keys.privateKey): Promise<string> {
  const file = join(dir, "sa.json");
  const key = {
    type: "service_account",
    project_id: "example-project",
    private_key_id: KEY_ID,
    private_key: privateKey.export({ type: "pkcs8", format: "pem" }),
    client_email: CLIENT_EMAIL,
    client_id: "1234567890",
    token_uri: tokenUri,
  };
  await writeFile(file, JSON.stringify(key, null, 2), { mode: 0o600 });
  return file;
}

/** An env with nothing Google-related, a HOME without gcloud files, and no reachable metadata server. */
function baseEnv(dir: string, extra: Env = {}): Env {
  return { HOME: dir, GCE_METADATA_HOST: "127.0.0.1:9", ...extra };
}

function options(env: Env, extra: Partial<OpenOptions> = {}): OpenOptions {
  return { env, userAgent: "pulldeploy/test", ...extra };
}

async function readAll(body: ReadableStream<Uint8Array>): Promise<Buffer> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of body) chunks.push(chunk);
  return Buffer.concat(chunks);
}

async function openError(p: Promise<unknown>): Promise<FetchError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(FetchError);
    return err as FetchError;
  }
  throw new Error("expected the open to fail");
}

const URL_ = "gs://builds/app/app%201.tar.gz";

describe("parseGsUrl", () => {
  test.each([
    ["gs://b/o", { bucket: "b", object: "o" }],
    ["gs://builds/app/v1/app.tar.gz", { bucket: "builds", object: "app/v1/app.tar.gz" }],
    ["gs://b/with%20space", { bucket: "b", object: "with space" }],
    ["gs://b/100%", { bucket: "b", object: "100%" }],
  ])("%s", (url, want) => {
    expect(parseGsUrl(url)).toEqual(want);
  });

  test.each(["gs://bucket-only", "gs://bucket/", "gs:///object"])("%s is refused", (url) => {
    expect(() => parseGsUrl(url)).toThrow(FetchError);
  });
});

describe("gs source with a service-account key file", () => {
  test("signs a JWT, trades it for a token, and downloads the object byte for byte", async () => {
    await using google = startFakeGoogle();
    await withTempDir(async (dir) => {
      const env = baseEnv(dir, {
        GOOGLE_APPLICATION_CREDENTIALS: await serviceAccountFile(dir, `${google.origin}/token`),
      });
      const { body, size } = await makeGsSource(google.origin).open(URL_, options(env));
      expect(size).toBe(OBJECT.length);
      expect((await readAll(body)).equals(OBJECT)).toBe(true);
      // The object name travelled as one path segment, slash and space escaped.
      const [req] = google.storageRequests();
      expect(req!.path).toBe("/storage/v1/b/builds/o/app%2Fapp%201.tar.gz");
      expect(google.issued.size).toBe(1);
      expect(req!.authorization).toBe(`Bearer ${[...google.issued][0]}`);
    });
  });

  test("an offset becomes a Range request; the size is the whole object's", async () => {
    await using google = startFakeGoogle();
    await withTempDir(async (dir) => {
      const env = baseEnv(dir, {
        GOOGLE_APPLICATION_CREDENTIALS: await serviceAccountFile(dir, `${google.origin}/token`),
      });
      const offset = 100_001;
      const { body, size } = await makeGsSource(google.origin).open(URL_, options(env, { offset }));
      expect(size).toBe(OBJECT.length);
      expect((await readAll(body)).equals(OBJECT.subarray(offset))).toBe(true);
      expect(google.storageRequests()[0]!.range).toBe(`bytes=${offset}-`);
    });
  });

  test("a key the token endpoint does not know is refused there, not retried, and storage is never asked", async () => {
    await using google = startFakeGoogle();
    await withTempDir(async (dir) => {
      const tokenUri = `${google.origin}/token`;
      const env = baseEnv(dir, {
        GOOGLE_APPLICATION_CREDENTIALS: await serviceAccountFile(dir, tokenUri, otherKeys.privateKey),
      });
      const err = await openError(makeGsSource(google.origin).open(URL_, options(env)));
      expect(err.message).toBe(`fetch ${URL_}: token endpoint ${tokenUri}: 400 invalid_grant: Invalid JWT Signature.`);
      expect(err.retryable).toBe(false);
      expect(google.storageRequests()).toHaveLength(0);
    });
  });

  test("a token the store refuses is a 401, and the token is not in the message", async () => {
    await using google = startFakeGoogle();
    google.state.acceptTokens = false;
    await withTempDir(async (dir) => {
      const env = baseEnv(dir, {
        GOOGLE_APPLICATION_CREDENTIALS: await serviceAccountFile(dir, `${google.origin}/token`),
      });
      const err = await openError(makeGsSource(google.origin).open(URL_, options(env)));
      expect(err.message).toBe(`fetch ${URL_}: 401 Invalid Credentials`);
      expect(err.status).toBe(401);
      expect(err.retryable).toBe(false);
      for (const token of google.issued) expect(err.message).not.toContain(token);
    });
  });

  test.each([
    ["gs://builds/missing.tar.gz", "404 No such object: builds/missing.tar.gz", false],
    ["gs://no-such-bucket/app.tar.gz", "404 The specified bucket does not exist.", false],
    ["gs://flaky/app.tar.gz", "503 Backend Error", true],
  ])("%s: %s (retryable: %p)", async (url, want, retryable) => {
    await using google = startFakeGoogle();
    await withTempDir(async (dir) => {
      const env = baseEnv(dir, {
        GOOGLE_APPLICATION_CREDENTIALS: await serviceAccountFile(dir, `${google.origin}/token`),
      });
      const err = await openError(makeGsSource(google.origin).open(url, options(env)));
      expect(err.message).toBe(`fetch ${url}: ${want}`);
      expect(err.retryable).toBe(retryable);
    });
  });

  test("a missing key file is named in a non-retryable error", async () => {
    await using google = startFakeGoogle();
    await withTempDir(async (dir) => {
      const file = join(dir, "absent.json");
      const err = await openError(
        makeGsSource(google.origin).open(URL_, options(baseEnv(dir, { GOOGLE_APPLICATION_CREDENTIALS: file }))),
      );
      expect(err.message).toBe(`fetch ${URL_}: Google credentials ${file}: ENOENT`);
      expect(err.retryable).toBe(false);
    });
  });

  test("an unsupported credentials type lists the valid ones", async () => {
    await using google = startFakeGoogle();
    await withTempDir(async (dir) => {
      const file = join(dir, "external.json");
      await writeFile(file, JSON.stringify({ type: "external_account", audience: "x" }));
      const err = await openError(
        makeGsSource(google.origin).open(URL_, options(baseEnv(dir, { GOOGLE_APPLICATION_CREDENTIALS: file }))),
      );
      expect(err.message).toBe(
        `fetch ${URL_}: Google credentials ${file}: unsupported type "external_account" (valid: ` +
          "service_account, authorized_user)",
      );
    });
  });
});

describe("gs source with other application default credentials", () => {
  test("gcloud's application_default_credentials.json under HOME (an authorized user) is used", async () => {
    await using google = startFakeGoogle();
    await withTempDir(async (dir) => {
      await mkdir(join(dir, ".config", "gcloud"), { recursive: true });
      await writeFile(
        join(dir, ".config", "gcloud", "application_default_credentials.json"),
        JSON.stringify({ type: "authorized_user", ...USER, token_uri: `${google.origin}/token` }),
      );
      const { body } = await makeGsSource(google.origin).open("gs://builds/manifest.yml", options(baseEnv(dir)));
      expect((await readAll(body)).toString()).toBe("src: gs://builds/app.tar.gz\n");
      expect(google.issued.size).toBe(1);
    });
  });

  test("without a key file, the metadata server's token is used, asked with Metadata-Flavor: Google", async () => {
    await using google = startFakeGoogle();
    await withTempDir(async (dir) => {
      const { body } = await makeGsSource(google.origin).open(
        URL_,
        options(baseEnv(dir, { GCE_METADATA_HOST: google.host })),
      );
      expect((await readAll(body)).equals(OBJECT)).toBe(true);
      const meta = google.seen.find((s) => s.path.startsWith("/computeMetadata/"));
      expect(meta?.metadataFlavor).toBe("Google");
      expect(google.storageRequests()[0]!.authorization).toBe(`Bearer ${[...google.issued][0]}`);
    });
  });

  test("no key file and no metadata server: one clear line, not retried", async () => {
    await using google = startFakeGoogle();
    const closed = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("") });
    const host = `127.0.0.1:${closed.port}`;
    await closed.stop(true);
    await withTempDir(async (dir) => {
      const err = await openError(
        makeGsSource(google.origin).open(URL_, options(baseEnv(dir, { GCE_METADATA_HOST: host }))),
      );
      expect(err.message).toStartWith(
        `fetch ${URL_}: no Google credentials found: set GOOGLE_APPLICATION_CREDENTIALS to a service-account ` +
          `key file, or run on GCE (metadata server ${host}: `,
      );
      expect(err.retryable).toBe(false);
      expect(google.storageRequests()).toHaveLength(0);
    });
  });
});

describe("gs source with STORAGE_EMULATOR_HOST", () => {
  test.each([["host:port"], ["http://host:port/"]])("as %s: no token is fetched or sent", async (form) => {
    await using google = startFakeGoogle();
    google.state.emulator = true; // serve like the storage emulator: no token required
    await withTempDir(async (dir) => {
      const value = form === "host:port" ? google.host : `${google.origin}/`;
      // The storage API given here must be ignored in favour of the emulator.
      const { body } = await makeGsSource("http://127.0.0.1:9").open(
        URL_,
        options(baseEnv(dir, { STORAGE_EMULATOR_HOST: value })),
      );
      expect((await readAll(body)).equals(OBJECT)).toBe(true);
      expect(google.storageRequests()).toHaveLength(1);
      expect(google.storageRequests()[0]!.authorization).toBeNull();
      expect(google.issued.size).toBe(0);
    });
  });

  test("an aborted signal stops the download and is not retried", async () => {
    await using google = startFakeGoogle();
    google.state.emulator = true; // serve like the storage emulator: no token required
    await withTempDir(async (dir) => {
      const env = baseEnv(dir, { STORAGE_EMULATOR_HOST: google.host });
      const err = await openError(
        makeGsSource(google.origin).open(URL_, options(env, { signal: AbortSignal.abort() })),
      );
      expect(err.message).toBe(`fetch ${URL_}: timed out`);
      expect(err.retryable).toBe(false);
    });
  });
});
