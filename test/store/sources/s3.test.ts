/**
 * The s3 source against a real S3-compatible server on loopback (s3rver behind a Signature V4
 * check). The SDK reads credentials from `process.env` itself, so every test sets the variables it
 * needs, clears the others, and restores them afterwards; the compiled binary is tested in e2e.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FetchError } from "../../../src/errors.ts";
import { s3Source } from "../../../src/store/sources/s3.ts";
import type { Env } from "../../../src/env.ts";
import { startS3Server, type S3TestServer } from "../../support/s3-server.ts";

/** Every variable that could steer the SDK's credential chain, region or endpoint. */
const AWS_VARS = [
  "AWS_ACCESS_KEY_ID",
  "AWS_SECRET_ACCESS_KEY",
  "AWS_SESSION_TOKEN",
  "AWS_PROFILE",
  "AWS_DEFAULT_PROFILE",
  "AWS_SHARED_CREDENTIALS_FILE",
  "AWS_CONFIG_FILE",
  "AWS_REGION",
  "AWS_DEFAULT_REGION",
  "AWS_ENDPOINT_URL",
  "AWS_ENDPOINT_URL_S3",
  "AWS_EC2_METADATA_DISABLED",
  "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
  "AWS_CONTAINER_CREDENTIALS_FULL_URI",
  "AWS_WEB_IDENTITY_TOKEN_FILE",
  "AWS_ROLE_ARN",
];

const BUCKET = "deploys";
const BIG = randomBytes(5 * 1024 * 1024 + 123);

let s3: S3TestServer;
let dir: string;

beforeAll(async () => {
  s3 = await startS3Server();
  dir = await mkdtemp(join(tmpdir(), "pulldeploy-s3-source-"));
  await s3.createBucket(BUCKET);
  await s3.put(BUCKET, "app.tar.gz", BIG);
  await s3.put(BUCKET, "dir/my app+1.txt", "spaces and plus");
});

afterAll(async () => {
  await s3?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/**
 * Run `fn` with exactly `vars` as the AWS part of `process.env` (the rest untouched), never
 * reaching an instance metadata service and never reading the user's own ~/.aws files.
 */
async function withAwsEnv<T>(vars: Record<string, string>, fn: (env: Env) => Promise<T>): Promise<T> {
  const saved = new Map(AWS_VARS.map((k) => [k, process.env[k]]));
  const isolated: Record<string, string> = {
    AWS_EC2_METADATA_DISABLED: "true",
    AWS_CONFIG_FILE: join(dir, "no-such-config"),
    AWS_SHARED_CREDENTIALS_FILE: join(dir, "no-such-credentials"),
    ...vars,
  };
  for (const k of AWS_VARS) {
    if (k in isolated) process.env[k] = isolated[k];
    else delete process.env[k];
  }
  try {
    return await fn({ ...process.env });
  } finally {
    for (const [k, v] of saved) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

async function readAll(body: ReadableStream<Uint8Array>): Promise<Buffer> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of body) chunks.push(chunk);
  return Buffer.concat(chunks);
}

function sha256(b: Uint8Array): string {
  return createHash("sha256").update(b).digest("hex");
}

async function openError(url: string, env: Env, extra: { signal?: AbortSignal } = {}): Promise<FetchError> {
  try {
    const { body } = await s3Source.open(url, { env, userAgent: "pulldeploy/test", ...extra });
    await body.cancel();
  } catch (err) {
    expect(err).toBeInstanceOf(FetchError);
    return err as FetchError;
  }
  throw new Error(`expected opening ${url} to fail`);
}

describe("s3 source, credentials from environment variables", () => {
  test("a multi-MB object round-trips byte for byte, with its size", async () => {
    await withAwsEnv(s3.env, async (env) => {
      const { body, size } = await s3Source.open(`s3://${BUCKET}/app.tar.gz`, { env, userAgent: "pulldeploy/test" });
      expect(size).toBe(BIG.length);
      const got = await readAll(body);
      expect(got.length).toBe(BIG.length);
      expect(sha256(got)).toBe(sha256(BIG));
      expect(got.equals(BIG)).toBe(true);
    });
  });

  test("an offset reads the rest of the object and reports the total size", async () => {
    await withAwsEnv(s3.env, async (env) => {
      const offset = 3_000_001;
      const { body, size } = await s3Source.open(`s3://${BUCKET}/app.tar.gz`, {
        env,
        offset,
        userAgent: "pulldeploy/test",
      });
      expect(size).toBe(BIG.length);
      expect((await readAll(body)).equals(BIG.subarray(offset))).toBe(true);
    });
  });

  test("a percent-encoded key is decoded: spaces and plus signs reach the store as written", async () => {
    await withAwsEnv(s3.env, async (env) => {
      const { body } = await s3Source.open(`s3://${BUCKET}/dir/my%20app%2B1.txt`, {
        env,
        userAgent: "pulldeploy/test",
      });
      expect((await readAll(body)).toString()).toBe("spaces and plus");
    });
  });

  test("a missing key is a 404 NoSuchKey, not retried", async () => {
    await withAwsEnv(s3.env, async (env) => {
      const err = await openError(`s3://${BUCKET}/missing.tar.gz`, env);
      expect(err.message).toBe(`fetch s3://${BUCKET}/missing.tar.gz: 404 NoSuchKey`);
      expect(err.status).toBe(404);
      expect(err.retryable).toBe(false);
    });
  });

  test("a missing bucket is a 404 NoSuchBucket", async () => {
    await withAwsEnv(s3.env, async (env) => {
      const err = await openError("s3://no-such-bucket/app.tar.gz", env);
      expect(err.message).toBe("fetch s3://no-such-bucket/app.tar.gz: 404 NoSuchBucket");
      expect(err.retryable).toBe(false);
    });
  });

  test("a wrong secret is a 403 SignatureDoesNotMatch, not retried, and the secret is not printed", async () => {
    await withAwsEnv({ ...s3.env, AWS_SECRET_ACCESS_KEY: "wrong-secret-value" }, async (env) => {
      const err = await openError(`s3://${BUCKET}/app.tar.gz`, env);
      expect(err.message).toBe(`fetch s3://${BUCKET}/app.tar.gz: 403 SignatureDoesNotMatch`);
      expect(err.status).toBe(403);
      expect(err.retryable).toBe(false);
      expect(err.message).not.toContain("wrong-secret-value");
    });
  });

  test("an unknown access key id is a 403 InvalidAccessKeyId", async () => {
    await withAwsEnv({ ...s3.env, AWS_ACCESS_KEY_ID: "AKIDNOBODY" }, async (env) => {
      const err = await openError(`s3://${BUCKET}/app.tar.gz`, env);
      expect(err.message).toBe(`fetch s3://${BUCKET}/app.tar.gz: 403 InvalidAccessKeyId`);
      expect(err.retryable).toBe(false);
    });
  });

  test("an offset past the end is a 416 InvalidRange", async () => {
    await withAwsEnv(s3.env, async (env) => {
      let err: unknown;
      await s3Source
        .open(`s3://${BUCKET}/app.tar.gz`, { env, offset: BIG.length + 10, userAgent: "pulldeploy/test" })
        .catch((e) => (err = e));
      expect(err).toBeInstanceOf(FetchError);
      expect((err as FetchError).message).toBe(`fetch s3://${BUCKET}/app.tar.gz: 416 InvalidRange`);
      expect((err as FetchError).retryable).toBe(false);
    });
  });
});

describe("s3 source, credentials from a shared credentials file", () => {
  async function credentialsFile(name: string, text: string): Promise<string> {
    // A fresh path each time: the SDK caches shared files by path for the life of the process.
    const path = join(dir, `${name}-${crypto.randomUUID()}`);
    await writeFile(path, text, { mode: 0o600 });
    return path;
  }

  test("AWS_PROFILE picks a named profile; no credential variables are set", async () => {
    const file = await credentialsFile(
      "credentials",
      [
        "[default]",
        "aws_access_key_id = S3RVER",
        "aws_secret_access_key = not-the-default-secret",
        "",
        "[deployer]",
        `aws_access_key_id = ${s3.accessKeyId}`,
        `aws_secret_access_key = ${s3.secretAccessKey}`,
        "",
      ].join("\n"),
    );
    const vars = { AWS_ENDPOINT_URL_S3: s3.endpoint, AWS_REGION: s3.region, AWS_SHARED_CREDENTIALS_FILE: file };
    await withAwsEnv({ ...vars, AWS_PROFILE: "deployer" }, async (env) => {
      expect(env.AWS_ACCESS_KEY_ID).toBeUndefined();
      expect(env.AWS_SECRET_ACCESS_KEY).toBeUndefined();
      const { body, size } = await s3Source.open(`s3://${BUCKET}/app.tar.gz`, { env, userAgent: "pulldeploy/test" });
      expect(size).toBe(BIG.length);
      expect(sha256(await readAll(body))).toBe(sha256(BIG));
    });
    // The file's secrets really are used: its default profile holds a wrong one.
    await withAwsEnv(vars, async (env) => {
      const err = await openError(`s3://${BUCKET}/app.tar.gz`, env);
      expect(err.message).toBe(`fetch s3://${BUCKET}/app.tar.gz: 403 SignatureDoesNotMatch`);
    });
  });

  test("a profile missing from the file is a clear credentials error, not retried", async () => {
    const file = await credentialsFile("credentials", "[other]\naws_access_key_id = A\naws_secret_access_key = B\n");
    await withAwsEnv(
      {
        AWS_ENDPOINT_URL_S3: s3.endpoint,
        AWS_REGION: s3.region,
        AWS_SHARED_CREDENTIALS_FILE: file,
        AWS_PROFILE: "nope",
      },
      async (env) => {
        const err = await openError(`s3://${BUCKET}/app.tar.gz`, env);
        expect(err.message).toBe(
          `fetch s3://${BUCKET}/app.tar.gz: no AWS credentials found for AWS_PROFILE=nope: check that the ` +
            `profile exists in ${file} ` +
            `or ${join(dir, "no-such-config")}`,
        );
        expect(err.retryable).toBe(false);
      },
    );
  });
});

describe("s3 source, failures", () => {
  test("no credentials anywhere: one clear line, not retried", async () => {
    await withAwsEnv({ AWS_ENDPOINT_URL_S3: s3.endpoint, AWS_REGION: s3.region }, async (env) => {
      const err = await openError(`s3://${BUCKET}/app.tar.gz`, env);
      expect(err.message).toStartWith(
        `fetch s3://${BUCKET}/app.tar.gz: no AWS credentials found: set ` +
          "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE",
      );
      expect(err.message).not.toContain("\n");
      expect(err.retryable).toBe(false);
    });
  });

  test("no region for AWS itself is a clear error before any request", async () => {
    const { AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY } = s3.env;
    await withAwsEnv(
      { AWS_ACCESS_KEY_ID: AWS_ACCESS_KEY_ID!, AWS_SECRET_ACCESS_KEY: AWS_SECRET_ACCESS_KEY! },
      async (env) => {
        const err = await openError(`s3://${BUCKET}/app.tar.gz`, env);
        expect(err.message).toBe(
          `fetch s3://${BUCKET}/app.tar.gz: no AWS region: set AWS_REGION or a region in the profile`,
        );
        expect(err.retryable).toBe(false);
      },
    );
  });

  test("a 5xx from the store is retryable and names the status and code", async () => {
    await using failing = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch: () =>
        new Response('<?xml version="1.0"?><Error><Code>InternalError</Code><Message>boom</Message></Error>', {
          status: 500,
          headers: { "Content-Type": "application/xml" },
        }),
    });
    await withAwsEnv({ ...s3.env, AWS_ENDPOINT_URL_S3: failing.url.origin }, async (env) => {
      const err = await openError(`s3://${BUCKET}/app.tar.gz`, env);
      expect(err.message).toBe(`fetch s3://${BUCKET}/app.tar.gz: 500 InternalError`);
      expect(err.retryable).toBe(true);
    });
  });

  test("a refused connection is a retryable network error", async () => {
    const closed = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("") });
    const origin = closed.url.origin;
    await closed.stop(true);
    await withAwsEnv({ ...s3.env, AWS_ENDPOINT_URL_S3: origin }, async (env) => {
      const err = await openError(`s3://${BUCKET}/app.tar.gz`, env);
      expect(err.message).toStartWith(`fetch s3://${BUCKET}/app.tar.gz: `);
      expect(err.message).toMatch(/ECONNREFUSED|connect|refused/i);
      expect(err.retryable).toBe(true);
    });
  });

  test("an aborted signal stops the request and is not retried", async () => {
    await withAwsEnv(s3.env, async (env) => {
      const err = await openError(`s3://${BUCKET}/app.tar.gz`, env, { signal: AbortSignal.abort() });
      expect(err.message).toBe(`fetch s3://${BUCKET}/app.tar.gz: timed out`);
      expect(err.retryable).toBe(false);
    });
  });
});
