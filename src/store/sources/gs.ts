/**
 * `gs://bucket/object`: a download through the Cloud Storage JSON API
 * (`GET /storage/v1/b/{bucket}/o/{object}?alt=media`) with a bearer token from Google application
 * default credentials:
 *   1. `GOOGLE_APPLICATION_CREDENTIALS`, else gcloud's application_default_credentials.json:
 *      a service-account key (a JWT signed RS256, exchanged at its `token_uri`) or an authorized
 *      user (a refresh token, exchanged the same way);
 *   2. the GCE metadata server (`GCE_METADATA_HOST` overrides its host).
 * With `STORAGE_EMULATOR_HOST` set, requests go there without any token.
 * Errors name the status and Google's message; 5xx, 429 and network errors are retryable.
 */
import { sign } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { FetchError } from "../../errors.ts";
import { redact } from "../../log.ts";
import { isAbort, isTimeout, networkMessage } from "../network.ts";
import { proxyFor } from "./http.ts";
import type { Env } from "../../env.ts";
import type { OpenOptions, Source } from "./types.ts";

const STORAGE_API = "https://storage.googleapis.com";
const DEFAULT_TOKEN_URI = "https://oauth2.googleapis.com/token";
const SCOPE = "https://www.googleapis.com/auth/devstorage.read_only";
const METADATA_TOKEN_PATH = "/computeMetadata/v1/instance/service-accounts/default/token";
/** Off GCE the metadata host does not resolve; on it, it answers in milliseconds. */
const METADATA_TIMEOUT_MS = 3000;

/** A `gs://` source talking to `storageApi`; tests pass a loopback server, users get Google's. */
export function makeGsSource(storageApi = STORAGE_API): Source {
  return {
    async open(url, opts) {
      const { bucket, object } = parseGsUrl(url);
      const where = `fetch ${redact(url)}`;
      const emulator = emulatorBase(opts.env.STORAGE_EMULATOR_HOST);
      const base = emulator ?? storageApi;
      const offset = opts.offset ?? 0;
      const headers: Record<string, string> = { "User-Agent": opts.userAgent };
      if (emulator === undefined) headers.Authorization = `Bearer ${await accessToken(where, opts)}`;
      const ranged = offset > 0 || opts.length !== undefined;
      if (ranged) headers.Range = `bytes=${offset}-${opts.length === undefined ? "" : offset + opts.length - 1}`;
      const api = `${base}/storage/v1/b/${encodeURIComponent(bucket)}/o/${encodeURIComponent(object)}?alt=media`;
      // Stored bytes as they are: a gzip-encoded object must not be transcoded, its checksum is of the gzip.
      const res = await request(where, api, {
        headers,
        signal: opts.signal,
        proxy: proxyFor(api, opts.env),
        decompress: false,
      });
      if (!res.ok) throw await statusError(where, res);
      if (ranged && res.status !== 206) {
        await res.body?.cancel().catch(() => {});
        throw new FetchError(`${where}: the store ignored the Range request (status ${res.status})`, false, {
          status: res.status,
        });
      }
      const len = res.headers.get("content-length");
      return {
        body: res.body ?? new ReadableStream({ start: (c) => c.close() }),
        size: len === null || opts.length !== undefined ? undefined : Number(len) + offset,
      };
    },
  };
}

export const gsSource: Source = makeGsSource();

/** `gs://bucket/path/to/object` → bucket and object name (percent-escapes decoded, like s3://). */
export function parseGsUrl(url: string): { bucket: string; object: string } {
  const m = /^gs:\/\/([^/]+)\/(.+)$/i.exec(url);
  if (!m) throw new FetchError(`fetch ${redact(url)}: not a Cloud Storage URL (expected gs://bucket/object)`, false);
  let object = m[2]!;
  try {
    object = decodeURIComponent(object);
  } catch {
    // A stray `%` is part of the name.
  }
  return { bucket: m[1]!, object };
}

/** `STORAGE_EMULATOR_HOST` as a base URL: `host:port` or a URL, without a trailing `/storage/v1`. */
function emulatorBase(value: string | undefined): string | undefined {
  if (value === undefined || value.trim() === "") return undefined;
  const v = value.trim();
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(v) ? v : `http://${v}`;
  return withScheme.replace(/\/+$/, "").replace(/\/storage\/v1$/, "");
}

// ---- credentials ---------------------------------------------------------------------------

interface ServiceAccountKey {
  type: "service_account";
  client_email: string;
  private_key: string;
  private_key_id?: string;
  token_uri?: string;
}

interface AuthorizedUser {
  type: "authorized_user";
  client_id: string;
  client_secret: string;
  refresh_token: string;
  token_uri?: string;
}

/** An OAuth access token for reading Cloud Storage, from application default credentials. */
async function accessToken(where: string, opts: OpenOptions): Promise<string> {
  const file = credentialsFile(opts.env);
  if (file === undefined) return metadataToken(where, opts);
  const creds = readCredentials(where, file);
  const tokenUri = creds.token_uri ?? DEFAULT_TOKEN_URI;
  const form: Record<string, string> =
    creds.type === "service_account"
      ? {
          grant_type: "urn:ietf:params:oauth:grant-type:jwt-bearer",
          assertion: signedJwt(where, file, creds, tokenUri),
        }
      : {
          grant_type: "refresh_token",
          client_id: creds.client_id,
          client_secret: creds.client_secret,
          refresh_token: creds.refresh_token,
        };
  const res = await request(`${where}: token endpoint ${tokenUri}`, tokenUri, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded", "User-Agent": opts.userAgent },
    body: new URLSearchParams(form).toString(),
    signal: opts.signal,
    proxy: proxyFor(tokenUri, opts.env),
  });
  return tokenFrom(`${where}: token endpoint ${tokenUri}`, res);
}

/** The explicit key file, else gcloud's application default credentials when present. */
function credentialsFile(env: Env): string | undefined {
  if (env.GOOGLE_APPLICATION_CREDENTIALS) return env.GOOGLE_APPLICATION_CREDENTIALS;
  const dir = env.CLOUDSDK_CONFIG || (env.HOME ? join(env.HOME, ".config", "gcloud") : undefined);
  const file = dir === undefined ? undefined : join(dir, "application_default_credentials.json");
  return file !== undefined && existsSync(file) ? file : undefined;
}

function readCredentials(where: string, file: string): ServiceAccountKey | AuthorizedUser {
  let parsed: Record<string, unknown>;
  try {
    parsed = JSON.parse(readFileSync(file, "utf8"));
  } catch (err) {
    const e = err as { code?: string; message?: string };
    throw new FetchError(`${where}: Google credentials ${file}: ${e.code ?? e.message}`, false, { cause: err });
  }
  const need = (keys: string[]) => {
    const missing = keys.filter((k) => typeof parsed[k] !== "string" || parsed[k] === "");
    if (missing.length > 0)
      throw new FetchError(`${where}: Google credentials ${file}: missing ${missing.join(", ")}`, false);
  };
  if (parsed.type === "service_account") {
    need(["client_email", "private_key"]);
    return parsed as unknown as ServiceAccountKey;
  }
  if (parsed.type === "authorized_user") {
    need(["client_id", "client_secret", "refresh_token"]);
    return parsed as unknown as AuthorizedUser;
  }
  throw new FetchError(
    `${where}: Google credentials ${file}: unsupported type ${JSON.stringify(parsed.type)} (valid: ` +
      "service_account, authorized_user)",
    false,
  );
}

/** The OAuth 2.0 JWT bearer assertion for a service account (RFC 7523), valid for an hour. */
function signedJwt(where: string, file: string, key: ServiceAccountKey, tokenUri: string): string {
  const now = Math.floor(Date.now() / 1000);
  const header = { alg: "RS256", typ: "JWT", ...(key.private_key_id ? { kid: key.private_key_id } : {}) };
  const claims = { iss: key.client_email, scope: SCOPE, aud: tokenUri, iat: now, exp: now + 3600 };
  const input = `${base64url(JSON.stringify(header))}.${base64url(JSON.stringify(claims))}`;
  try {
    return `${input}.${sign("RSA-SHA256", Buffer.from(input), key.private_key).toString("base64url")}`;
  } catch (err) {
    throw new FetchError(
      `${where}: Google credentials ${file}: cannot sign with private_key: ${(err as Error).message}`,
      false,
      { cause: err },
    );
  }
}

function base64url(s: string): string {
  return Buffer.from(s, "utf8").toString("base64url");
}

/** The default service account's token from the GCE metadata server. */
async function metadataToken(where: string, opts: OpenOptions): Promise<string> {
  const host = opts.env.GCE_METADATA_HOST || "metadata.google.internal";
  const url = `http://${host}${METADATA_TOKEN_PATH}`;
  const timeout = AbortSignal.timeout(METADATA_TIMEOUT_MS);
  let res: Response;
  try {
    res = await fetch(url, {
      headers: { "Metadata-Flavor": "Google", "User-Agent": opts.userAgent },
      signal: opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout,
    });
  } catch (err) {
    if (opts.signal?.aborted) throw new FetchError(`${where}: timed out`, false, { cause: err });
    throw new FetchError(
      `${where}: no Google credentials found: set GOOGLE_APPLICATION_CREDENTIALS to a service-account key ` +
        `file, or run on GCE (metadata server ${host}: ${networkMessage(err)})`,
      false,
      { cause: err },
    );
  }
  return tokenFrom(`${where}: metadata server ${host}`, res);
}

/** The `access_token` of a token response, or a one-line error without any secret in it. */
async function tokenFrom(where: string, res: Response): Promise<string> {
  if (!res.ok) throw await statusError(where, res);
  let body: { access_token?: unknown };
  try {
    body = (await res.json()) as { access_token?: unknown };
  } catch (err) {
    throw new FetchError(`${where}: the token response is not JSON`, true, { cause: err });
  }
  if (typeof body.access_token !== "string" || body.access_token === "") {
    throw new FetchError(`${where}: the token response has no access_token`, false);
  }
  return body.access_token;
}

// ---- HTTP ------------------------------------------------------------------------------------

type BunRequestInit = RequestInit & { proxy?: string; decompress?: boolean };

async function request(where: string, url: string, init: BunRequestInit): Promise<Response> {
  try {
    return await fetch(url, init as RequestInit);
  } catch (err) {
    const aborted = isAbort(err) || init.signal?.aborted === true;
    // A per-attempt deadline (--timeout) is worth another attempt; the agent being stopped is not.
    const retryable = !aborted || isTimeout(init.signal?.reason);
    throw new FetchError(`${where}: ${aborted ? "timed out" : networkMessage(err)}`, retryable, { cause: err });
  }
}

/**
 * A non-2xx answer as a `FetchError`: the status, then Google's own words when the body has them
 * (`{"error": {"message": …}}` from the JSON API, `{"error": …, "error_description": …}` from OAuth).
 */
async function statusError(where: string, res: Response): Promise<FetchError> {
  const text = await res.text().catch(() => "");
  let detail = res.statusText || "error";
  try {
    const body = JSON.parse(text) as { error?: string | { message?: string }; error_description?: string };
    if (typeof body.error === "object" && body.error?.message) detail = body.error.message;
    else if (typeof body.error === "string")
      detail = body.error_description ? `${body.error}: ${body.error_description}` : body.error;
  } catch {
    // Not JSON: keep the status text.
  }
  if (detail.length > 300) detail = `${detail.slice(0, 300)}…`;
  const retryable = res.status >= 500 || res.status === 429;
  return new FetchError(`${where}: ${res.status} ${detail}`, retryable, { status: res.status });
}
