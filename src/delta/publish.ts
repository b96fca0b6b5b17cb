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
import { DEFAULT_LIMITS } from "../archive/extract.ts";
import type { FileSpan, TarTap, TreePlan } from "../archive/pack.ts";
import { TarWriter } from "../archive/tar-writer.ts";
import { messageOf } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { Env } from "../env.ts";
import type { Target } from "../store/targets/index.ts";
import { ChunkStream } from "./chunker.ts";
import { deltaNames, encodeIndex, type ChunkRef, type DeltaIndex } from "./format.ts";
import { fetchIndex } from "./read.ts";
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

/** Chunks compress with libdeflate at gzip's default level, as the archive does. */
const LEVEL = 6;
const DEFLATE = { level: LEVEL, library: "libdeflate" } as Bun.LibdeflateCompressionOptions;
/** The pack is handed to the upload in pieces of about this size… */
const PIECE = 256 * 1024;
/** …and packing waits while this much is queued for it. */
const QUEUE_LIMIT = 4 * PIECE;

interface Loc {
  pack: string;
  offset: number;
  stored: number;
  size: number;
}

/** Read what the store holds, then return the tap that chunks the tree as the archive is packed. */
export async function startDelta(o: DeltaStartOptions): Promise<DeltaSession> {
  const known = await storedChunks(o);
  const NEW = ""; // the pack being written, named once it is complete
  const chunks: (Loc & { hash: string })[] = [];
  const byHash = new Map<string, number>();
  /** Per plan entry, its chunks (files with contents only). */
  const refs: number[][] = [];
  const tar = new Bun.CryptoHasher("sha256");
  let tarSize = 0;
  let newChunks = 0;
  const cutter = new ChunkStream();
  const pack = new PackUpload(o);

  const onChunk = (entry: number) => (bytes: Uint8Array) => {
    const hash = new Bun.CryptoHasher("sha256").update(bytes).digest("hex") as string;
    let i = byHash.get(hash);
    if (i === undefined) {
      i = chunks.length;
      byHash.set(hash, i);
      const old = known.get(hash);
      if (old) chunks.push({ hash, ...old });
      else {
        const stored = Bun.deflateSync(bytes as Uint8Array<ArrayBuffer>, DEFLATE);
        chunks.push({ hash, pack: NEW, offset: pack.bytes, stored: stored.byteLength, size: bytes.byteLength });
        newChunks++;
        pack.push(stored);
      }
    }
    (refs[entry] ??= []).push(i);
  };
  let current = -1;
  let emit = onChunk(-1);

  const tap: TarTap = {
    chunk(raw: Uint8Array, spans: readonly FileSpan[]) {
      tar.update(raw);
      tarSize += raw.byteLength;
      if (pack.failed) return;
      for (const s of spans) {
        if (s.entry !== current) {
          current = s.entry;
          emit = onChunk(current);
        }
        cutter.push(raw.subarray(s.start, s.end), s.last, emit);
      }
      return pack.room();
    },
  };

  return {
    tap,
    async finish(id, archiveSize) {
      const packName = await pack.end();
      const packs: string[] = [];
      const packIndex = new Map<string, number>();
      const chunkRefs: ChunkRef[] = chunks.map((c) => {
        const name = c.pack === NEW ? packName! : c.pack;
        let p = packIndex.get(name);
        if (p === undefined) {
          p = packs.length;
          packs.push(name);
          packIndex.set(name, p);
        }
        return { hash: c.hash, pack: p, offset: c.offset, stored: c.stored, size: c.size };
      });
      const index: DeltaIndex = {
        tar: { sha256: tar.digest("hex") as string, size: tarSize },
        archiveSize,
        packs,
        chunks: chunkRefs,
        entries: o.plan.entries.map((e, i) => ({ ...e, chunks: refs[i] ?? [] })),
      };
      // libdeflate's level 6 makes a smaller index than zlib's 9, and faster.
      const gz = Bun.gzipSync(new TextEncoder().encode(encodeIndex(index)), {
        level: 6,
        library: "libdeflate",
      } as Bun.LibdeflateCompressionOptions);
      const sha256 = new Bun.CryptoHasher("sha256").update(gz).digest("hex");
      const name = deltaNames.index(o.role, id);
      await o.target.putBytes(name, gz, "application/gzip");
      return {
        indexUrl: o.target.urlOf(name),
        sha256,
        chunks: chunks.length,
        newChunks,
        packBytes: pack.bytes,
        indexBytes: gz.byteLength,
      };
    },
    abort: (reason) => pack.abort(reason),
  };
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
          this.parts = [];
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

/** The chunks the role's newest stored index names, by hash; empty when there is none or it is unreadable. */
async function storedChunks(o: DeltaStartOptions): Promise<Map<string, Loc>> {
  const out = new Map<string, Loc>();
  const dir = await openStoreDir(o.target.base, o.env).catch(() => undefined);
  if (!dir) {
    o.log.info(`delta: ${o.target.base} cannot be listed: every chunk is uploaded`);
    return out;
  }
  try {
    const names = newestLast((await dir.stat(deltaNames.dir(o.role))).filter((l) => l.name.endsWith(".idx")));
    const newest = names.at(-1);
    if (newest === undefined) return out;
    const url = o.target.urlOf(`${deltaNames.dir(o.role)}/${newest}`);
    const { index } = await fetchIndex(url, { env: o.env, signal: o.signal, userAgent: o.userAgent }, DEFAULT_LIMITS);
    for (const c of index.chunks)
      out.set(c.hash, { pack: index.packs[c.pack]!, offset: c.offset, stored: c.stored, size: c.size });
  } catch (err) {
    o.log.info(`delta: cannot read what the store holds (${messageOf(err)}): every chunk is uploaded`);
    out.clear();
  } finally {
    dir.close();
  }
  return out;
}
