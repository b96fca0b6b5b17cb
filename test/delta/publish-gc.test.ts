/**
 * Publish's side of the delta (what is uploaded) and `gc` (what is kept), against a file store;
 * then the compiled binary end to end against the S3-compatible test server, with ranged GETs.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { gc } from "../../src/delta/gc.ts";
import { coalesce } from "../../src/delta/fetch.ts";
import { cutPoint, MAX_CHUNK, MIN_CHUNK } from "../../src/delta/chunker.ts";
import { createLogger } from "../../src/log.ts";
import { parseManifest } from "../../src/manifest/parse.ts";
import { BINARY, deployWithLog, run, tempDir, waitFor } from "../support/helpers.ts";
import { startS3Server, type S3TestServer } from "../support/s3-server.ts";
import { manifestFor, noise, publishRelease } from "./support.ts";

const packsIn = (store: string) => fs.readdirSync(join(store, "web/delta/packs")).sort();

describe("chunks and ranges", () => {
  test("content-defined cuts: a change in the middle of a 4 MB file leaves all but the chunks around it as they were", () => {
    const a = noise(5, 4 * 2 ** 20);
    const b = new Uint8Array(a.length + 1000);
    b.set(a.subarray(0, 2 * 2 ** 20));
    b.set(noise(6, 1000), 2 * 2 ** 20); // 1000 bytes inserted: every later offset moves
    b.set(a.subarray(2 * 2 ** 20), 2 * 2 ** 20 + 1000);
    const cuts = (x: Uint8Array) => {
      const out: string[] = [];
      for (let at = 0; at < x.length; ) {
        const n = cutPoint(x, at, Math.min(x.length, at + MAX_CHUNK));
        expect(n >= MIN_CHUNK || at + n === x.length).toBe(true);
        expect(n).toBeLessThanOrEqual(MAX_CHUNK);
        out.push(new Bun.CryptoHasher("sha256").update(x.subarray(at, at + n)).digest("hex"));
        at += n;
      }
      return out;
    };
    const ca = cuts(a);
    const cb = new Set(cuts(b));
    const lost = ca.filter((h) => !cb.has(h)).length;
    expect(ca.length).toBeGreaterThan(30); // ~64 KiB average
    expect(lost).toBeGreaterThanOrEqual(1);
    expect(lost).toBeLessThanOrEqual(3);
  });

  test("coalesce: adjacent and nearby chunks of a pack share a request, far ones and other packs do not", () => {
    const c = (pack: number, offset: number, stored: number) => ({
      hash: `${pack}-${offset}`,
      pack,
      offset,
      stored,
      size: stored,
    });
    const ranges = coalesce([
      c(0, 1000, 100),
      c(0, 0, 1000),
      c(0, 1100 + 60_000, 10),
      c(0, 10_000_000, 5),
      c(1, 0, 7),
      c(0, 1100 + 60_010 + 70_000, 1),
    ]);
    expect(ranges.map((r) => [r.pack, r.start, r.end, r.chunks.length])).toEqual([
      [0, 0, 61_110, 3],
      [0, 131_110, 131_111, 1],
      [0, 10_000_000, 10_000_005, 1],
      [1, 0, 7, 1],
    ]);
  });
});

describe("publish's delta", () => {
  test("publishing the same tree twice uploads no new chunk and no pack; a 1 MB change in an 8 MB file uploads about that", async () => {
    await using d = tempDir();
    const src = join(d.path, "src");
    fs.mkdirSync(join(src, "lib"), { recursive: true });
    const big = noise(1, 8 * 2 ** 20);
    fs.writeFileSync(join(src, "big.bin"), big);
    for (let i = 0; i < 50; i++) fs.writeFileSync(join(src, `lib/f${i}.js`), `export const x${i} = ${i};\n`);
    const store = join(d.path, "store");
    const r1 = await publishRelease(store, src, "r1");
    expect(r1.delta.newChunks).toBe(r1.delta.chunks);
    expect(packsIn(store).length).toBe(1);
    const r2 = await publishRelease(store, src, "r2");
    expect(r2.delta).toMatchObject({ newChunks: 0, packBytes: 0 });
    expect(packsIn(store).length).toBe(1);
    expect(fs.existsSync(join(store, "web/delta/r2.idx"))).toBe(true);

    big.set(noise(2, 2 ** 20), 4 * 2 ** 20);
    fs.writeFileSync(join(src, "big.bin"), big);
    const r3 = await publishRelease(store, src, "r3");
    expect(packsIn(store).length).toBe(2);
    expect(r3.delta.packBytes).toBeGreaterThan(2 ** 20);
    expect(r3.delta.packBytes).toBeLessThan(2 ** 20 + 2 * MAX_CHUNK + 4096);
  });

  test("gc keeps every pack a kept release references (whole) and, with --apply only, removes the rest and older indexes", async () => {
    await using d = tempDir();
    const src = join(d.path, "src");
    fs.mkdirSync(src);
    const store = join(d.path, "store");
    const publish = async (id: string, seed: number) => {
      fs.writeFileSync(join(src, "shared.bin"), noise(100, 200_000));
      fs.writeFileSync(join(src, "own.bin"), noise(seed, 200_000));
      return publishRelease(store, src, id);
    };
    const r1 = await publish("r1", 1);
    const before = packsIn(store);
    await publish("r2", 2);
    const r3 = await publish("r3", 3);
    expect(packsIn(store).length).toBe(3);
    const lines: string[] = [];
    const log = createLogger({ write: (l) => void lines.push(l) });
    const opts = { to: `file://${store}`, role: "web", keep: 2, minAgeMs: 0, env: {}, log, userAgent: "test" };
    const dry = await gc({ ...opts, apply: false });
    // r1's pack holds shared.bin's chunks, which r2 and r3 still use: kept whole, and said so.
    expect(dry.removedPacks).toEqual([]);
    expect(dry.removedIndexes).toEqual(["r1.idx"]);
    expect(dry.partlyUsed.map((p) => p.pack)).toEqual(before);
    expect(lines.join("")).toMatch(
      /gc: 1 kept packs are only partly referenced .*: a pack is kept whole while any chunk in it is needed/,
    );
    expect(lines.join("")).toMatch(/would remove \(dry run; --apply to delete\) 0 packs/);
    expect(fs.existsSync(join(store, "web/delta/r1.idx"))).toBe(true);

    // Keep only r3: r2's pack (own.bin of r2) is needed by nobody; r1's still is (shared.bin).
    const applied = await gc({ ...opts, keep: 1, apply: true });
    expect(applied.removedPacks.length).toBe(1);
    expect(packsIn(store).length).toBe(2);
    expect(fs.readdirSync(join(store, "web/delta")).sort()).toEqual(["packs", "r3.idx"]);
    // Every chunk r3 names is still there: a delta deploy of r3 over r1 works without the archive.
    const dest = join(d.path, "dest");
    expect((await deployWithLog(manifestFor(r1, dest, { delta: false }))).result.ok).toBe(true);
    const { result, log: out } = await deployWithLog(manifestFor(r3, dest));
    expect(result.ok).toBe(true);
    expect(out).toMatch(/delta: fetched .* in 2 requests: 3 of 6 chunks/);
  });

  test("a young unreferenced pack is kept (a publish may be writing its index)", async () => {
    await using d = tempDir();
    const src = join(d.path, "src");
    fs.mkdirSync(src);
    const store = join(d.path, "store");
    fs.writeFileSync(join(src, "a.bin"), noise(1, 100_000));
    await publishRelease(store, src, "r1");
    fs.writeFileSync(join(src, "a.bin"), noise(2, 100_000));
    await publishRelease(store, src, "r2");
    const plan = await gc({
      to: `file://${store}`,
      role: "web",
      keep: 1,
      apply: true,
      env: {},
      log: createLogger({ write() {} }),
      userAgent: "test",
    });
    expect(plan.young.length).toBe(1);
    expect(plan.removedPacks).toEqual([]);
    expect(packsIn(store).length).toBe(2);
  });
});

describe("the compiled binary: publish to S3 and delta deploys with ranged GETs", () => {
  let s3: S3TestServer;
  beforeAll(async () => {
    if (!fs.existsSync(BINARY)) throw new Error(`${BINARY} is missing: run \`make build\` first`);
    s3 = await startS3Server();
    await s3.createBucket("rel");
  });
  afterAll(async () => {
    await s3?.stop();
  });

  test("publish stores index and pack in S3; the agent deploys r2 by delta and gc --apply cleans up", async () => {
    await using d = tempDir();
    const src = join(d.path, "src");
    fs.mkdirSync(join(src, "assets"), { recursive: true });
    fs.writeFileSync(join(src, "assets/big.bin"), noise(1, 3 * 2 ** 20));
    fs.writeFileSync(join(src, "index.html"), "<h1>1</h1>\n");
    const dest = join(d.path, "dest");
    const env = { ...s3.env, HOME: d.path, AWS_EC2_METADATA_DISABLED: "true" };
    const publish = async () => {
      const r = await run(
        [
          "publish",
          src,
          "--to",
          "s3://rel/apps",
          "--role",
          "web",
          "--dest",
          dest,
          "--sync-strategy",
          "release",
          "--no-kv",
          "--no-event",
        ],
        { env },
      );
      if (r.code !== 0) console.error(r.stderr);
      expect(r.code).toBe(0);
      return { url: r.stdout.trim(), log: r.stderr };
    };
    const p1 = await publish();
    expect(p1.log).toMatch(
      /delta: uploaded \d+ new of \d+ chunks .* and the index s3:\/\/rel\/apps\/web\/delta\/.*\.idx/,
    );
    const d1 = await run(["agent"], { stdin: `${p1.url}\n`, env });
    expect(d1.code).toBe(0);
    expect(d1.stderr).toContain("delta: no previous release on this host: fetching the full archive");

    // Release ids name the second: let it tick, so that r2 is unambiguously the newest (a condition, not a fixed
    // sleep).
    const second = Math.floor(Date.now() / 1000);
    await waitFor(() => Math.floor(Date.now() / 1000) > second, "the next second");
    const big = fs.readFileSync(join(src, "assets/big.bin"));
    big.set(noise(2, 50_000), 1_500_000);
    fs.writeFileSync(join(src, "assets/big.bin"), big);
    fs.writeFileSync(join(src, "index.html"), "<h1>2</h1>\n");
    const p2 = await publish();
    const d2 = await run(["agent"], { stdin: `${p2.url}\n`, env });
    if (d2.code !== 0) console.error(d2.stderr);
    expect(d2.code).toBe(0);
    const m = /delta: fetched (\S+ \S+) \((\d+\.\d)% of the .* archive\) in (\d+) requests/.exec(d2.stderr);
    expect(m).not.toBeNull();
    expect(Number(m![2])).toBeLessThan(30);
    expect(Number(m![3])).toBeLessThanOrEqual(3);
    expect(fs.readFileSync(join(dest, "current/index.html"), "utf8")).toBe("<h1>2</h1>\n");
    expect(fs.readFileSync(join(dest, "current/assets/big.bin")).equals(big)).toBe(true);

    const dry = await run(["gc", "--to", "s3://rel/apps", "--role", "web", "--keep", "1", "--min-age", "0s"], { env });
    expect(dry.code).toBe(0);
    expect(dry.stderr).toMatch(/would remove \(dry run; --apply to delete\) 0 packs .* and 1 indexes/);
    const applied = await run(
      ["gc", "--to", "s3://rel/apps", "--role", "web", "--keep", "1", "--min-age", "0s", "--apply"],
      { env },
    );
    expect(applied.code).toBe(0);
    expect(applied.stderr).toMatch(/removing 0 packs .* and 1 indexes/);
  });
});

test("the manifest parser: delta keys both or neither, a fetchable URL, a sha256", () => {
  const base = `src: file:///a.tar.gz\nchecksum: ${"a".repeat(64)}\ndest: /srv/app\n`;
  const problems = (extra: string) => {
    try {
      parseManifest(base + extra);
      return [];
    } catch (err) {
      return (err as { problems: string[] }).problems;
    }
  };
  expect(
    parseManifest(`${base}delta_index: s3://b/web/delta/r.idx\ndelta_index_checksum: ${"b".repeat(64)}\n`).manifest
      .deltaIndex,
  ).toEqual({ url: "s3://b/web/delta/r.idx", sha256: "b".repeat(64) });
  expect(problems("delta_index: s3://b/r.idx\n")).toEqual([
    "delta_index_checksum: required when delta_index is set (the index's sha256, 64 hex)",
  ]);
  expect(problems(`delta_index_checksum: ${"b".repeat(64)}\n`)).toEqual([
    "delta_index: required when delta_index_checksum is set",
  ]);
  expect(problems(`delta_index: ftp://x/r.idx\ndelta_index_checksum: ${"b".repeat(40)}\n`)).toEqual([
    'delta_index: "ftp://x/r.idx" is not a URL the agent can fetch (file, http, https, s3, gs)',
    `delta_index_checksum: expected the index's sha256 (64 hex), got "${"b".repeat(40)}"`,
  ]);
});
