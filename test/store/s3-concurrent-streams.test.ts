/**
 * The S3 target's part budget is shared by every stream of the target (publish uploads the delta's
 * pack beside the archive): two multipart uploads at once through one target, with fewer parts in
 * flight than streams could want, both arrive byte for byte, and a later stream reuses the pool.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { createLogger } from "../../src/log.ts";
import { s3Target } from "../../src/store/targets/s3.ts";
import { noise } from "../support/helpers.ts";
import { startS3Server, type S3TestServer } from "../support/s3-server.ts";

const BUCKET = "concurrent";
const MiB = 2 ** 20;
let s3: S3TestServer;

beforeAll(async () => {
  s3 = await startS3Server();
  await s3.createBucket(BUCKET);
});
afterAll(async () => {
  await s3?.stop();
});

/** `data` in pieces of 1 MiB (fresh copies: the target may be handed its pieces' memory). */
function streamOf(data: Uint8Array): ReadableStream<Uint8Array> {
  let at = 0;
  return new ReadableStream<Uint8Array>(
    {
      pull(c) {
        if (at >= data.length) return c.close();
        c.enqueue(data.slice(at, at + MiB));
        at += MiB;
      },
    },
    { highWaterMark: 0 },
  );
}

const sha = (b: Uint8Array) => new Bun.CryptoHasher("sha256").update(b).digest("hex");

test("two multipart streams at once share one target's parts in flight and arrive whole", async () => {
  // The SDK's credential chain reads the process's environment, in process.
  const saved = { ...process.env };
  Object.assign(process.env, s3.env);
  const target = await s3Target(
    `s3://${BUCKET}/p`,
    { env: s3.env, log: createLogger({ write: () => {} }), retries: 0, retryWaitMs: 1 },
    { partSize: 5 * MiB, concurrency: 2, copyLimit: 5 * 2 ** 30 },
  );
  try {
    const a = noise(1, 13 * MiB + 5);
    const b = noise(2, 11 * MiB + 7);
    await Promise.all([
      target.putStream(streamOf(a), () => "a.bin", "application/octet-stream"),
      target.putStream(streamOf(b), () => "b.bin", "application/octet-stream"),
    ]);
    const c = noise(3, 6 * MiB);
    await target.putStream(streamOf(c), () => "c.bin", "application/octet-stream");

    // Distinct bytes per object, so a part landing in the wrong object shows.
    expect(sha(await s3.get(BUCKET, "p/a.bin"))).toBe(sha(a));
    expect(sha(await s3.get(BUCKET, "p/b.bin"))).toBe(sha(b));
    expect(sha(await s3.get(BUCKET, "p/c.bin"))).toBe(sha(c));
  } finally {
    target.close();
    for (const k of Object.keys(s3.env)) if (!(k in saved)) delete process.env[k];
    Object.assign(process.env, saved);
  }
});
