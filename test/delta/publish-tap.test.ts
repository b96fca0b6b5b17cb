/**
 * Publish's one read of every file: the delta's chunker as a tap on the archive's packing. It must cut
 * where `fileChunks` cuts, write the same index and pack as `publishDelta` alone, leave the archive's
 * bytes as they are without it, hold packing back while the pack's upload is behind, and never fail
 * the archive when the pack cannot be stored.
 */
import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { packTree, scanTree, type FileSpan } from "../../src/archive/pack.ts";
import { TarWriter } from "../../src/archive/tar-writer.ts";
import { ChunkStream, chunkBuffer, fileChunks, MAX_CHUNK, MIN_CHUNK } from "../../src/delta/chunker.ts";
import { encodeIndex, parseIndex } from "../../src/delta/format.ts";
import { publishDelta, startDelta } from "../../src/delta/publish.ts";
import { fetchIndex } from "../../src/delta/read.ts";
import { createLogger } from "../../src/log.ts";
import { fileTarget } from "../../src/store/targets/file.ts";
import type { Target } from "../../src/store/targets/index.ts";
import { tempDir } from "../support/helpers.ts";
import { noise } from "./support.ts";

const sha = (b: Uint8Array) => new Bun.CryptoHasher("sha256").update(b).digest("hex");
const LIMITS = { maxEntries: 1e6, maxBytes: 2 ** 40 };

/** Half noise, half text: cuts fall by content and at the maximum size. */
function sample(seed: number, size: number): Uint8Array {
  const out = new Uint8Array(size);
  out.set(noise(seed, Math.ceil(size / 2)).subarray(0, Math.ceil(size / 2)));
  for (let i = Math.ceil(size / 2); i < size; i++) out[i] = 97 + (i % 7);
  return out;
}

describe("ChunkStream", () => {
  const sizes = [1, MIN_CHUNK - 1, MIN_CHUNK, MIN_CHUNK + 1, MAX_CHUNK - 1, MAX_CHUNK, MAX_CHUNK + 1, 3 * 2 ** 20 + 77];
  const pieceSizes = [1, 4096, MAX_CHUNK - 1, MAX_CHUNK + 1, 2 ** 20];
  test.each(sizes)("a %d-byte file cut in pieces of every size gives fileChunks' cuts", async (size) => {
    await using dir = tempDir();
    const data = sample(size, size);
    const path = join(dir.path, "f");
    fs.writeFileSync(path, data);
    const fd = fs.openSync(path, "r");
    const expected: string[] = [];
    try {
      for (const { bytes } of fileChunks(fd, size, chunkBuffer())) expected.push(sha(bytes));
    } finally {
      fs.closeSync(fd);
    }
    const cutter = new ChunkStream();
    for (const piece of pieceSizes) {
      const got: string[] = [];
      for (let at = 0; at < size; at += piece) {
        const end = Math.min(size, at + piece);
        cutter.push(data, at, end, end === size, (b) => void got.push(sha(b)));
      }
      expect(got).toEqual(expected);
    }
  });
});

function tree(root: string): void {
  fs.mkdirSync(join(root, "a/b"), { recursive: true });
  fs.writeFileSync(join(root, "a/big.bin"), sample(1, 3 * 2 ** 20 + 5));
  fs.writeFileSync(join(root, "a/b/copy.bin"), sample(1, 3 * 2 ** 20 + 5)); // every chunk again
  fs.writeFileSync(join(root, "a/empty"), "");
  for (let i = 0; i < 40; i++) fs.writeFileSync(join(root, `a/b/f${i}.txt`), `file ${i}\n`.repeat(i * 50 + 1));
  fs.symlinkSync("big.bin", join(root, "a/link"));
  fs.writeFileSync(join(root, 'a/ünï "quoted"\\name.txt'), "names JSON must escape");
}

const quiet = createLogger({ write: () => {} });
async function targetAt(store: string): Promise<Target> {
  const target = await fileTarget(`file://${store}`, { env: {}, log: quiet, retries: 0, retryWaitMs: 1 });
  await target.preflight();
  return target;
}
const packs = (store: string) => {
  const dir = join(store, "web/delta/packs");
  return fs.existsSync(dir) ? fs.readdirSync(dir).map((n) => sha(fs.readFileSync(join(dir, n)))) : [];
};

describe("the delta as a tap on packing", () => {
  test("same archive bytes as without it, and the same index and pack as publishDelta alone", async () => {
    await using dir = tempDir();
    const src = join(dir.path, "src");
    tree(src);
    const plain = packTree(scanTree(src, { excludes: [] }), { algorithm: "sha256", gzipLevel: 6 });
    const plainBytes = await new Response(plain.stream).bytes();

    const tapped = join(dir.path, "tapped");
    const plan = scanTree(src, { excludes: [] });
    const session = await startDelta({
      plan,
      target: await targetAt(tapped),
      role: "web",
      env: {},
      log: quiet,
      userAgent: "t",
    });
    const packed = packTree(plan, { algorithm: "sha256", gzipLevel: 6, tap: session.tap });
    const bytes = await new Response(packed.stream).bytes();
    const { size } = await packed.result;
    const d = await session.finish("r1", size);
    expect(sha(bytes)).toBe(sha(plainBytes));

    const alone = join(dir.path, "alone");
    const a = await publishDelta({
      plan: scanTree(src, { excludes: [] }),
      target: await targetAt(alone),
      role: "web",
      id: "r1",
      archiveSize: size,
      env: {},
      log: quiet,
      userAgent: "t",
    });
    expect(d.sha256).toBe(a.sha256);
    expect(packs(tapped)).toEqual(packs(alone));
    expect(d.newChunks).toBe(d.chunks); // an empty store: every chunk is new

    const text = new TextDecoder().decode(Bun.gunzipSync(fs.readFileSync(join(tapped, "web/delta/r1.idx"))));
    const index = parseIndex(text, LIMITS);
    expect(encodeIndex(index)).toBe(text); // written as bytes, the same JSON as encodeIndex's
    const tar = gunzipSync(bytes);
    expect(index.tar).toEqual({ sha256: sha(tar), size: tar.byteLength });
    expect(index.archiveSize).toBe(bytes.byteLength);
    const refs = index.entries.reduce((n, e) => n + e.chunks.length, 0);
    const big = index.entries.find((e) => e.path === "a/big.bin")!.chunks;
    expect(big.length).toBeGreaterThan(12);
    expect(refs - index.chunks.length).toBe(big.length); // the copy's chunks are stored once
  });

  test("packing waits while the pack's upload is behind, and goes on once it reads", async () => {
    await using dir = tempDir();
    const src = join(dir.path, "src");
    fs.mkdirSync(src);
    fs.writeFileSync(join(src, "noise.bin"), noise(9, 8 * 2 ** 20));
    const inner = await targetAt(join(dir.path, "store"));
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    let started!: () => void;
    const reading = new Promise<void>((r) => {
      started = r;
    });
    const target: Target = {
      ...inner,
      async putStream(body, name, type) {
        started();
        await gate; // the pack's upload does not read until released
        return inner.putStream(body, name, type);
      },
    };
    const plan = scanTree(src, { excludes: [] });
    const session = await startDelta({ plan, target, role: "web", env: {}, log: quiet, userAgent: "t" });
    const writer = new TarWriter(plan);
    const buf = new Uint8Array(2 ** 20);
    const spans: FileSpan[] = [];
    let held: Promise<void> | undefined;
    let fed = 0;
    for (let raw = writer.next(buf, spans); raw !== null && !held; raw = writer.next(buf, spans)) {
      held = session.tap.chunk(raw, spans) ?? undefined;
      fed++;
    }
    writer.close();
    await reading;
    expect(held).toBeInstanceOf(Promise); // held back after a few MiB, not the whole 8 MiB file
    expect(fed).toBeLessThan(8);
    release();
    await held;
  });

  test("a pack that cannot be stored stops the delta, not the archive", async () => {
    await using dir = tempDir();
    const src = join(dir.path, "src");
    tree(src);
    const inner = await targetAt(join(dir.path, "store"));
    const target: Target = {
      ...inner,
      async putStream(body) {
        await body.cancel();
        throw new Error("store refused the pack");
      },
    };
    const plan = scanTree(src, { excludes: [] });
    const session = await startDelta({ plan, target, role: "web", env: {}, log: quiet, userAgent: "t" });
    const packed = packTree(plan, { algorithm: "sha256", gzipLevel: 6, tap: session.tap });
    const bytes = await new Response(packed.stream).bytes();
    const { size } = await packed.result;
    expect(bytes.byteLength).toBe(size);
    expect(gunzipSync(bytes).byteLength).toBeGreaterThan(6 * 2 ** 20);
    await expect(session.finish("r1", size)).rejects.toThrow("store refused the pack");
    expect(fs.existsSync(join(dir.path, "store/web/delta/r1.idx"))).toBe(false);
  });
});

test("an index of more than a MiB of JSON is several gzip members; the agents' reader (fetchIndex, also gc's) and the next publish read it whole", async () => {
  await using dir = tempDir();
  const src = join(dir.path, "src");
  fs.mkdirSync(src);
  const long = "n".repeat(200);
  for (let i = 0; i < 3600; i++) fs.writeFileSync(join(src, `${long}-${i}`), `file ${i}\n`);
  const store = join(dir.path, "store");
  const publishOnce = async (id: string) =>
    publishDelta({
      plan: scanTree(src, { excludes: [] }),
      target: await targetAt(store),
      role: "web",
      id,
      archiveSize: 1,
      env: {},
      log: quiet,
      userAgent: "t",
    });
  const first = await publishOnce("r1");
  const gz = fs.readFileSync(join(store, "web/delta/r1.idx"));
  const text = gunzipSync(gz).toString();
  expect(text.length).toBeGreaterThan(2 ** 20);
  expect(Bun.gunzipSync(gz).byteLength).toBeLessThan(text.length); // the first member is not all of it
  const { index } = await fetchIndex(
    `file://${join(store, "web/delta/r1.idx")}`,
    { env: {}, userAgent: "t" },
    LIMITS,
    first.sha256,
  );
  expect(encodeIndex(index)).toBe(text);
  expect(index.entries.length).toBe(3600);

  const second = await publishOnce("r2");
  expect(second.newChunks).toBe(0); // what the store holds was read from the multi-member index
  expect(second.chunks).toBe(first.chunks);
});
