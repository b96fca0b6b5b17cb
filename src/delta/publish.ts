/**
 * Publish's side of the delta: cut every file of the packed tree into chunks, append the chunks the
 * store does not hold yet to one new pack (`<role>/delta/packs/<sha256>.pack`, named by its own
 * hash once written, so never overwritten), then store the index `<role>/delta/<id>.idx`.
 *
 * `startDelta` does it as a tap on the archive's packing (archive/pack.ts `TarTap`): every file is
 * read once, for both, and the pack is uploaded while the archive is; `publishDelta` does it alone,
 * for a tree packed elsewhere. Both write the same index and pack.
 *
 * What the store holds is read from the role's newest index (release ids sort by time); an http(s)
 * store cannot be listed, so there every chunk is uploaded again. Nothing is ever deleted here.
 */
import { type FileSpan, freeBytes, type PackEntry, type TarTap, type TreePlan } from "../archive/pack.ts";
import { TarWriter } from "../archive/tar-writer.ts";
import { messageOf } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { Env } from "../env.ts";
import type { Target } from "../store/targets/index.ts";
import { fetchBytes } from "../store/sources/index.ts";
import { ChunkStream } from "./chunker.ts";
import { ChunkTable, IntList, readStoredChunks } from "./chunk-table.ts";
import { deltaNames, FORMAT } from "./format.ts";
import { MAX_INDEX_BYTES } from "./read.ts";
import { newestLast, openStoreDir } from "./storeio.ts";

export interface DeltaStartOptions {
  plan: TreePlan;
  target: Target;
  role: string;
  env: Env;
  log: Logger;
  signal?: AbortSignal;
  userAgent: string;
}

export interface DeltaPublishOptions extends DeltaStartOptions {
  id: string;
  /** The release's .tar.gz size, for the agents' fall-back rule. */
  archiveSize: number;
}

export interface DeltaPublished {
  indexUrl: string;
  /** Hex sha256 of the stored index. */
  sha256: string;
  chunks: number;
  /** Chunks this publish stored, and their bytes in the new pack (0: no pack written). */
  newChunks: number;
  packBytes: number;
  indexBytes: number;
}

/** A delta being built beside the archive. */
export interface DeltaSession {
  /** Give to `packTree`. It never fails the archive: a failed pack upload only stops the delta. */
  tap: TarTap;
  /** Once the archive is packed (every tar byte tapped): finish the pack and store the index. */
  finish(id: string, archiveSize: number): Promise<DeltaPublished>;
  /** The archive failed: stop the pack's upload (which leaves nothing under a final name). */
  abort(reason: unknown): Promise<void>;
}

/**
 * Chunks compress with libdeflate at a cheaper level than the archive's: a first publish deflates
 * every byte a second time, a 1%-changed one a few chunks, and the packs are only a little larger.
 */
const LEVEL = 2;
const DEFLATE = { level: LEVEL, library: "libdeflate" } as Bun.LibdeflateCompressionOptions;
/** The pack is handed to the upload in pieces of about this size… */
const PIECE = 64 * 1024;
/** …and packing waits while this much is queued for it. */
const QUEUE_LIMIT = 4 * PIECE;

/** Tar chunks (of about 1 MiB) between two collections while the tap cuts chunks. */
const GC_EVERY = 8;
/** The index's JSON is gzip'd in members of about this size (a multi-member gzip file). */
const INDEX_MEMBER = 1 << 20;
/** The most an index may inflate to (read.ts allows as much to agents). */
const MAX_INDEX_JSON = 512 * 2 ** 20;

/** Read what the store holds, then return the tap that chunks the tree as the archive is packed. */
export async function startDelta(o: DeltaStartOptions): Promise<DeltaSession> {
  const stored = new ChunkTable();
  const storedPacks = await storedChunks(o, stored);
  Bun.gc(true); // reading the index left its garbage: before packing, not beside it
  /** This release's chunks, first seen first; `pack` -1 is the new pack, else a position in `storedPacks`. */
  const chunks = new ChunkTable();
  /** Each file's chunks are consecutive in `refs`: entry i has `refCount[i]` from `refStart[i]`. */
  const refs = new IntList();
  const refStart = new Int32Array(o.plan.entries.length);
  const refCount = new Int32Array(o.plan.entries.length);
  const hash = new Uint8Array(32);
  const tar = new Bun.CryptoHasher("sha256");
  let tarSize = 0;
  let newChunks = 0;
  const cutter = new ChunkStream();
  const pack = new PackUpload(o);

  let current = -1;
  let rawChunks = 0;
  const emit = (bytes: Uint8Array) => {
    Bun.SHA256.hash(bytes, hash);
    let i = chunks.find(hash);
    if (i < 0) {
      const old = stored.find(hash);
      if (old >= 0)
        i = chunks.add(hash, 0, stored.pack[old]!, stored.offset[old]!, stored.stored[old]!, stored.size[old]!);
      else {
        const deflated = Bun.deflateSync(bytes as Uint8Array<ArrayBuffer>, DEFLATE);
        i = chunks.add(hash, 0, -1, pack.bytes, deflated.byteLength, bytes.byteLength);
        newChunks++;
        pack.push(deflated);
      }
    }
    if (refCount[current]++ === 0) refStart[current] = refs.length;
    refs.push(i);
  };

  const tap: TarTap = {
    chunk(raw: Uint8Array, spans: readonly FileSpan[]) {
      tar.update(raw);
      tarSize += raw.byteLength;
      // The chunks' small garbage (views, wrappers) piles up at the collector's own pace.
      if (++rawChunks % GC_EVERY === 0) Bun.gc(true);
      if (pack.failed) return;
      for (const s of spans) {
        current = s.entry;
        cutter.push(raw, s.start, s.end, s.last, emit);
      }
      return pack.room();
    },
  };

  return {
    tap,
    async finish(id, archiveSize) {
      const packName = await pack.end();
      // Packs in the order the chunks first name them.
      const packs: string[] = [];
      const packOf = new Map<number, number>();
      const chunkPack = new Int32Array(chunks.count);
      for (let i = 0; i < chunks.count; i++) {
        const p = chunks.pack[i]!;
        let n = packOf.get(p);
        if (n === undefined) {
          n = packs.length;
          packs.push(p < 0 ? packName! : storedPacks[p]!);
          packOf.set(p, n);
        }
        chunkPack[i] = n;
      }
      // What packing left to the collector goes before the index is written.
      Bun.gc(true);
      const gz = gzippedIndex(
        { sha256: tar.digest("hex") as string, size: tarSize },
        archiveSize,
        packs,
        chunks,
        chunkPack,
        o.plan.entries,
        (i, w) => {
          for (let k = 0; k < refCount[i]!; k++) {
            if (k > 0) w.byte(0x2c);
            w.num(refs.items[refStart[i]! + k]!);
          }
        },
      );
      const sha256 = new Bun.CryptoHasher("sha256").update(gz).digest("hex");
      const name = deltaNames.index(o.role, id);
      await o.target.putBytes(name, gz, "application/gzip");
      return {
        indexUrl: o.target.urlOf(name),
        sha256,
        chunks: chunks.count,
        newChunks,
        packBytes: pack.bytes,
        indexBytes: gz.byteLength,
      };
    },
    abort: (reason) => pack.abort(reason),
  };
}

/**
 * The index: its JSON exactly as `encodeIndex` writes it, gzip'd. Written as bytes (tens of thousands
 * of rows as strings and arrays were garbage the collector returned late), and compressed a member
 * at a time: gzip readers (gunzip, the agent's DecompressionStream) read the members as one stream,
 * and the JSON is never whole in memory.
 */
function gzippedIndex(
  tar: { sha256: string; size: number },
  archiveSize: number,
  packs: string[],
  chunks: ChunkTable,
  chunkPack: Int32Array,
  entries: readonly PackEntry[],
  chunksOf: (i: number, w: JsonWriter) => void,
): Uint8Array {
  const w = new JsonWriter(INDEX_MEMBER);
  w.str(
    `{"format":${JSON.stringify(FORMAT)},"tar":${JSON.stringify(tar)},` +
      `"archive":${JSON.stringify({ size: archiveSize })},"packs":${JSON.stringify(packs)},"chunks":[`,
  );
  for (let i = 0; i < chunks.count; i++) {
    w.str(i === 0 ? '["' : ',["');
    w.hex(chunks.hashes, i * 32, 32);
    w.str('",');
    w.num(chunkPack[i]!);
    w.byte(0x2c);
    w.num(chunks.offset[i]!);
    w.byte(0x2c);
    w.num(chunks.stored[i]!);
    w.byte(0x2c);
    w.num(chunks.size[i]!);
    w.byte(0x5d);
    w.member();
  }
  w.str('],"entries":[');
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i]!;
    if (i > 0) w.byte(0x2c);
    w.byte(0x5b);
    w.str(JSON.stringify(e.path));
    w.str(e.type === "file" ? ',"f",' : e.type === "dir" ? ',"d",' : ',"l",');
    w.num(e.mode);
    w.byte(0x2c);
    w.num(e.mtime);
    if (e.type === "file") {
      w.byte(0x2c);
      w.num(e.size);
      w.str(",[");
      chunksOf(i, w);
      w.byte(0x5d);
    } else if (e.type === "symlink") {
      w.byte(0x2c);
      w.str(JSON.stringify(e.linkname));
    }
    w.byte(0x5d);
    w.member();
  }
  w.str("]}");
  return w.end();
}

const HEX = new TextEncoder().encode("0123456789abcdef");

/** UTF-8 into a buffer, gzip'd (libdeflate) into one member each time it holds `memberSize` bytes. */
class JsonWriter {
  private buf: Uint8Array<ArrayBuffer>;
  private n = 0;
  private readonly encoder = new TextEncoder();
  private readonly members: Uint8Array[] = [];

  constructor(private readonly memberSize: number) {
    this.buf = new Uint8Array(memberSize + 4096);
  }

  /** A place where the member may end: it does if it is full. */
  member(): void {
    if (this.n >= this.memberSize) this.compress();
  }

  /** The gzip'd text: every member. */
  end(): Uint8Array {
    if (this.n > 0 || this.members.length === 0) this.compress();
    freeBytes(this.buf);
    if (this.members.length === 1) return this.members[0]!;
    const out = Buffer.concat(this.members);
    for (const m of this.members) freeBytes(m);
    return out;
  }

  private compress(): void {
    // libdeflate's level 6 makes a smaller index than zlib's 9, and faster.
    const options = { level: 6, library: "libdeflate" } as Bun.LibdeflateCompressionOptions;
    this.members.push(Bun.gzipSync(this.buf.subarray(0, this.n), options));
    this.n = 0;
  }

  byte(b: number): void {
    if (this.n === this.buf.length) this.grow(1);
    this.buf[this.n++] = b;
  }

  str(s: string): void {
    if (this.buf.length - this.n < s.length * 3) this.grow(s.length * 3);
    const buf = this.buf;
    let n = this.n;
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c >= 0x80) {
        // Not ASCII: the encoder (a view per call is garbage, so only here).
        this.n += this.encoder.encodeInto(s, buf.subarray(this.n)).written;
        return;
      }
      buf[n++] = c;
    }
    this.n = n;
  }

  /** A JSON number as JSON.stringify writes an integer. */
  num(v: number): void {
    if (!Number.isSafeInteger(v)) {
      this.str(JSON.stringify(v));
      return;
    }
    if (this.buf.length - this.n < 17) this.grow(17);
    if (v < 0) {
      this.buf[this.n++] = 0x2d;
      v = -v;
    }
    let digits = 1;
    for (let x = v; x >= 10; x = Math.floor(x / 10)) digits++;
    for (let k = digits - 1; k >= 0; k--) {
      this.buf[this.n + k] = 0x30 + (v % 10);
      v = Math.floor(v / 10);
    }
    this.n += digits;
  }

  hex(bytes: Uint8Array, at: number, len: number): void {
    if (this.buf.length - this.n < 2 * len) this.grow(2 * len);
    for (let k = 0; k < len; k++) {
      const b = bytes[at + k]!;
      this.buf[this.n++] = HEX[b >> 4]!;
      this.buf[this.n++] = HEX[b & 15]!;
    }
  }

  private grow(need: number): void {
    const buf = new Uint8Array(Math.max(this.buf.length * 2, this.n + need));
    buf.set(this.buf.subarray(0, this.n));
    freeBytes(this.buf);
    this.buf = buf;
  }
}

/** The delta of a tree whose archive was packed elsewhere: the tree is read (not compressed) once more. */
export async function publishDelta(o: DeltaPublishOptions): Promise<DeltaPublished> {
  const session = await startDelta(o);
  const writer = new TarWriter(o.plan);
  const buf = new Uint8Array(new ArrayBuffer(1 << 20));
  const spans: FileSpan[] = [];
  try {
    for (let raw = writer.next(buf, spans); raw !== null; raw = writer.next(buf, spans))
      await session.tap.chunk(raw, spans);
  } catch (err) {
    writer.close();
    await session.abort(err);
    throw err;
  }
  return session.finish(o.id, o.archiveSize);
}

/**
 * The new pack, uploaded as it is written: started at its first chunk, named by its sha256 at the end.
 * Bounded: `room()` holds packing back while the upload is behind. A failed upload is kept in `failed`
 * (the delta is lost, the archive is not).
 */
class PackUpload {
  bytes = 0;
  failed: unknown;
  private parts: Uint8Array[] = [];
  private queued = 0;
  private ended = false;
  private readonly hash = new Bun.CryptoHasher("sha256");
  private upload?: Promise<void>;
  private wake?: () => void;
  private drained?: () => void;
  private name?: string;
  private cancelled = false;
  private handedOut?: Uint8Array;

  constructor(private readonly o: DeltaStartOptions) {}

  push(stored: Uint8Array): void {
    this.hash.update(stored);
    this.bytes += stored.byteLength;
    this.parts.push(stored);
    this.queued += stored.byteLength;
    this.upload ??= this.start();
    if (this.queued >= PIECE) this.wake?.();
  }

  /** Resolves once the upload has taken enough of the queue; undefined when there is room now. */
  room(): Promise<void> | undefined {
    if (this.queued < QUEUE_LIMIT || this.failed) return undefined;
    return new Promise((resolve) => {
      this.drained = resolve;
    });
  }

  /** No more chunks: wait for the upload; the pack's name, or undefined when it has no chunk. */
  async end(): Promise<string | undefined> {
    this.ended = true;
    this.wake?.();
    if (this.upload) await this.upload;
    if (this.failed) throw this.failed;
    return this.name;
  }

  async abort(reason: unknown): Promise<void> {
    this.fail(reason);
    await this.upload?.catch(() => {});
  }

  /** `err` is kept unless an earlier failure was kept; the upload's own error replaces a cancel's. */
  private fail(err: unknown, fromUpload = false): void {
    if (this.failed === undefined || (fromUpload && this.cancelled)) this.failed = err;
    this.parts = [];
    this.queued = 0;
    this.wake?.();
    this.drained?.();
  }

  private start(): Promise<void> {
    const stream = new ReadableStream<Uint8Array>(
      {
        pull: async (controller) => {
          // The upload is done with the piece it had (the target's contract): free it now.
          if (this.handedOut) freeBytes(this.handedOut);
          this.handedOut = undefined;
          while (this.queued < PIECE && !this.ended && !this.failed)
            await new Promise<void>((resolve) => {
              this.wake = resolve;
            });
          this.wake = undefined;
          if (this.failed) {
            controller.error(this.failed);
            return;
          }
          if (this.queued === 0) {
            controller.close();
            return;
          }
          const piece = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.queued);
          if (this.parts.length > 1) for (const part of this.parts) freeBytes(part);
          this.parts = [];
          this.handedOut = piece;
          this.queued = 0;
          const drained = this.drained;
          this.drained = undefined;
          drained?.();
          controller.enqueue(piece);
        },
        cancel: (reason) => {
          this.cancelled = true;
          this.fail(reason ?? new Error("pack upload cancelled"));
        },
      },
      { highWaterMark: 0 },
    );
    return this.o.target
      .putStream(
        stream,
        () => {
          this.name = this.hash.digest("hex") as string;
          return deltaNames.pack(this.o.role, this.name);
        },
        "application/octet-stream",
      )
      .catch((err) => this.fail(err, true));
  }
}

/**
 * The chunks the role's newest stored index names, into `table`; the names of their packs. Empty when
 * there is none or it is unreadable.
 */
async function storedChunks(o: DeltaStartOptions, table: ChunkTable): Promise<string[]> {
  const dir = await openStoreDir(o.target.base, o.env).catch(() => undefined);
  if (!dir) {
    o.log.info(`delta: ${o.target.base} cannot be listed: every chunk is uploaded`);
    return [];
  }
  try {
    const names = newestLast((await dir.stat(deltaNames.dir(o.role))).filter((l) => l.name.endsWith(".idx")));
    const newest = names.at(-1);
    if (newest === undefined) return [];
    const url = o.target.urlOf(`${deltaNames.dir(o.role)}/${newest}`);
    const gz = await fetchBytes(url, { env: o.env, signal: o.signal, userAgent: o.userAgent }, MAX_INDEX_BYTES);
    const json = await inflateInto(gz, MAX_INDEX_JSON);
    freeBytes(gz);
    const packs = readStoredChunks(json, table);
    freeBytes(new Uint8Array(json.buffer as ArrayBuffer));
    return packs;
  } catch (err) {
    o.log.info(`delta: cannot read what the store holds (${messageOf(err)}): every chunk is uploaded`);
    table.clear();
    return [];
  } finally {
    dir.close();
  }
}

/**
 * gunzip `gz` (its members as one stream) into one buffer, each piece freed once copied: about the
 * text's size in memory rather than twice it. Refuses more than `max` bytes.
 */
async function inflateInto(gz: Uint8Array, max: number): Promise<Uint8Array> {
  const ds = new DecompressionStream("gzip");
  const writer = ds.writable.getWriter();
  void (async () => {
    for (let at = 0; at < gz.byteLength; at += 1 << 16)
      await writer.write(gz.subarray(at, at + (1 << 16)) as Uint8Array<ArrayBuffer>);
    await writer.close();
  })().catch(() => {});
  let buf = new Uint8Array(Math.min(max, Math.max(1 << 16, gz.byteLength * 3)));
  let n = 0;
  const reader = ds.readable.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (n + value.byteLength > max) {
      await reader.cancel().catch(() => {});
      throw new Error(`inflates to more than ${max} bytes`);
    }
    if (n + value.byteLength > buf.length) {
      const grown = new Uint8Array(Math.min(max, Math.max(buf.length * 2, n + value.byteLength)));
      grown.set(buf.subarray(0, n));
      freeBytes(buf);
      buf = grown;
    }
    buf.set(value, n);
    n += value.byteLength;
    freeBytes(value);
  }
  return buf.subarray(0, n);
}
