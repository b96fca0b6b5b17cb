/**
 * An S3-compatible server on 127.0.0.1, port 0, for tests: s3rver (in this process) behind a
 * Signature V4 check. s3rver itself only checks that the access key id exists, so a wrong secret
 * would pass; the check here recomputes each request's signature with the one known secret and
 * answers 403 SignatureDoesNotMatch (or InvalidAccessKeyId, or AccessDenied for an unsigned
 * request) the way S3 does. The payload hash is taken from `x-amz-content-sha256` as signed; the
 * body is not re-hashed.
 *
 *   await using s3 = await startS3Server();
 *   await s3.createBucket("b");
 *   await s3.put("b", "app.tar.gz", bytes);
 *   // point the code under test at s3.endpoint with s3.accessKeyId / s3.secretAccessKey
 */
import { createHmac, createHash, timingSafeEqual } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { S3Client } from "@aws-sdk/client-s3";

export interface S3TestServer extends AsyncDisposable {
  /** `http://127.0.0.1:PORT`, for `AWS_ENDPOINT_URL_S3`. */
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  region: string;
  /** The environment that points the SDK at this server with static credentials. */
  env: Record<string, string>;
  createBucket(name: string): Promise<void>;
  put(bucket: string, key: string, bytes: Uint8Array | string): Promise<void>;
  get(bucket: string, key: string): Promise<Uint8Array>;
  stop(): Promise<void>;
}

// s3rver hard-codes one account; its key id is the only one it knows.
const ACCESS_KEY_ID = "S3RVER";
const SECRET_ACCESS_KEY = "S3RVER";
const REGION = "us-east-1";

interface KoaContext {
  method: string;
  originalUrl: string;
  headers: Record<string, string | string[] | undefined>;
  status: number;
  type: string;
  body: unknown;
}
type Middleware = (ctx: KoaContext, next: () => Promise<void>) => Promise<void>;
interface S3rverApp {
  middleware: Middleware[];
  run(): Promise<{ address: string; port: number }>;
  close(): Promise<void>;
}
type S3rverClass = new (options: Record<string, unknown>) => S3rverApp;

export async function startS3Server(): Promise<S3TestServer> {
  const S3rver = createRequire(import.meta.url)("s3rver") as S3rverClass;
  const directory = await mkdtemp(join(tmpdir(), "pulldeploy-s3rver-"));
  const server = new S3rver({ address: "127.0.0.1", port: 0, directory, silent: true });
  // Koa composes `middleware` when the server starts listening: the check runs before any route.
  server.middleware.unshift(verifySignatureV4(SECRET_ACCESS_KEY));
  let client: S3Client | undefined;
  let stopped = false;
  try {
    const { port } = await server.run();
    const endpoint = `http://127.0.0.1:${port}`;
    const { S3Client, CreateBucketCommand, GetObjectCommand, PutObjectCommand } = await import("@aws-sdk/client-s3");
    // Explicit credentials: the helper must not depend on the environment the tests manipulate.
    client = new S3Client({
      endpoint,
      region: REGION,
      forcePathStyle: true,
      credentials: { accessKeyId: ACCESS_KEY_ID, secretAccessKey: SECRET_ACCESS_KEY },
      requestChecksumCalculation: "WHEN_REQUIRED",
      responseChecksumValidation: "WHEN_REQUIRED",
    });
    const admin = client;
    const stop = async () => {
      if (stopped) return;
      stopped = true;
      admin.destroy();
      try {
        await server.close();
      } finally {
        await rm(directory, { recursive: true, force: true });
      }
    };
    return {
      endpoint,
      accessKeyId: ACCESS_KEY_ID,
      secretAccessKey: SECRET_ACCESS_KEY,
      region: REGION,
      env: {
        AWS_ENDPOINT_URL_S3: endpoint,
        AWS_ACCESS_KEY_ID: ACCESS_KEY_ID,
        AWS_SECRET_ACCESS_KEY: SECRET_ACCESS_KEY,
        AWS_REGION: REGION,
      },
      async createBucket(name) {
        await admin.send(new CreateBucketCommand({ Bucket: name }));
      },
      async put(bucket, key, bytes) {
        await admin.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: bytes }));
      },
      async get(bucket, key) {
        return (await admin.send(new GetObjectCommand({ Bucket: bucket, Key: key }))).Body!.transformToByteArray();
      },
      stop,
      [Symbol.asyncDispose]: stop,
    };
  } catch (err) {
    client?.destroy();
    await server.close().catch(() => {});
    await rm(directory, { recursive: true, force: true });
    throw err;
  }
}

/** Koa middleware: refuse any request whose AWS Signature V4 does not match `secret`. */
function verifySignatureV4(secret: string): Middleware {
  return async (ctx, next) => {
    const header = headerValue(ctx.headers.authorization);
    if (header === undefined) return deny(ctx, "AccessDenied", "Access Denied");
    const m =
      /^AWS4-HMAC-SHA256 Credential=([^/,]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request,\s*SignedHeaders=([^,]+),\s*Signature=([0-9a-f]{64})$/.exec(
        header,
      );
    if (!m) return deny(ctx, "AccessDenied", "unsupported Authorization header");
    const [, keyId, date, region, service, signedHeaders, signature] = m as unknown as string[];
    if (keyId !== ACCESS_KEY_ID) {
      return deny(ctx, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records.");
    }
    const amzDate = headerValue(ctx.headers["x-amz-date"]) ?? "";
    const payloadHash = headerValue(ctx.headers["x-amz-content-sha256"]) ?? "UNSIGNED-PAYLOAD";
    const [path = "/", query = ""] = ctx.originalUrl.split("?", 2) as [string, string?];
    const names = signedHeaders!.split(";");
    const canonicalRequest = [
      ctx.method,
      path,
      canonicalQuery(query),
      names.map((n) => `${n}:${(headerValue(ctx.headers[n]) ?? "").trim().replace(/ +/g, " ")}\n`).join(""),
      signedHeaders,
      payloadHash,
    ].join("\n");
    const scope = `${date}/${region}/${service}/aws4_request`;
    const stringToSign = ["AWS4-HMAC-SHA256", amzDate, scope, sha256hex(canonicalRequest)].join("\n");
    let key: Buffer = hmac(`AWS4${secret}`, date!);
    for (const part of [region!, service!, "aws4_request"]) key = hmac(key, part);
    const expected = hmac(key, stringToSign);
    if (!timingSafeEqual(expected, Buffer.from(signature!, "hex"))) {
      return deny(
        ctx,
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided. Check your key and " +
          "signing method.",
      );
    }
    await next();
  };
}

function canonicalQuery(query: string): string {
  if (query === "") return "";
  return query
    .split("&")
    .map((pair) => {
      const i = pair.indexOf("=");
      const [k, v] = i < 0 ? [pair, ""] : [pair.slice(0, i), pair.slice(i + 1)];
      return [rfc3986(decodeURIComponent(k)), rfc3986(decodeURIComponent(v))] as const;
    })
    .sort(([a, av], [b, bv]) => (a < b ? -1 : a > b ? 1 : av < bv ? -1 : av > bv ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join("&");
}

function rfc3986(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

function headerValue(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v.join(",") : v;
}

function hmac(key: string | Buffer, data: string): Buffer {
  return createHmac("sha256", key).update(data, "utf8").digest();
}

function sha256hex(s: string): string {
  return createHash("sha256").update(s, "utf8").digest("hex");
}

function deny(ctx: KoaContext, code: string, message: string): void {
  ctx.status = 403;
  ctx.type = "application/xml";
  ctx.body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message></Error>`;
}
