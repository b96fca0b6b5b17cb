/**
 * `src/archive/`: tar and gzip, both ways. May import the shared modules only. The folder:
 * - pack.ts (this file): a directory into a tar.gz stream, hashed in the same pass;
 * - walk.ts: the directory into a sorted plan (`scanTree`), every unpackable entry in one error;
 * - tar-header.ts: the ustar/pax header codec (the writer's side); tar-writer.ts: the tar stream;
 * - gzip.ts: libdeflate compression on a worker thread;
 * - extract.ts: safe extraction of a tar stream into a fresh directory (the agent's side).
 *
 * `scanTree` walks the tree first; `packTree` then streams ustar blocks (pax records for long names,
 * big sizes, odd times) through Bun's gzip and the hasher: the same tree always gives the same bytes
 * (uid/gid 0, no user names, sorted entries, integer mtimes, gzip header without a time). A fixed set
 * of 1 MiB buffers circulates: memory stays flat.
 */
import { createHasher, type HashAlgorithm } from "../checksum.ts";
import { inlineCompressor, workerCompressor, type Compressed } from "./gzip.ts";
import { CHUNK, type FileSpan, TarWriter } from "./tar-writer.ts";
import type { TreePlan } from "./walk.ts";

// What publish uses with packTree, importable from here with it.
export type { FileSpan } from "./tar-writer.ts";
export { PackError } from "./pack-error.ts";
export { scanTree, type PackEntry, type ScanOptions, type TreePlan } from "./walk.ts";

export interface PackOptions {
  algorithm: HashAlgorithm;
  /** libdeflate level, 1–12; 6 is gzip's default. */
  gzipLevel: number;
  /** Uncompressed file bytes read so far (called often). */
  onBytes?: (n: number) => void;
  /** Compress on the main thread (no worker). */
  inline?: boolean;
  /** Sees the uncompressed tar stream as it is packed: the files are read once for both. */
  tap?: TarTap;
  /**
   * The reader is done with each chunk once it asks for the next (publish's targets write or copy it
   * first): its memory is freed then, rather than whenever the collector gets to it.
   */
  freeRead?: boolean;
}

/**
 * A reader of the uncompressed tar stream beside the compressor (the delta's chunker). `chunk` gets
 * each raw chunk before it is compressed, in order, with the spans of it that are file contents; both
 * are valid only during the call. A returned promise holds back the next chunk (backpressure); a throw
 * fails the pack.
 */
export interface TarTap {
  chunk(raw: Uint8Array, spans: readonly FileSpan[]): void | Promise<void>;
}

export interface PackResult {
  algorithm: HashAlgorithm;
  /** Hex digest of the compressed bytes. */
  checksum: string;
  /** Compressed bytes. */
  size: number;
}

export interface Packed {
  /** The tar.gz bytes; read it to the end exactly once. */
  stream: ReadableStream<Uint8Array>;
  /** Settles once `stream` has been read to its end (or fails with it). */
  result: Promise<PackResult>;
  /** The result, synchronously, once the last byte has been read (for names that hold the checksum). */
  readonly final: PackResult | undefined;
}

/**
 * Stream `plan` as tar.gz, hashing the compressed bytes as they are produced.
 *
 * Each ~1 MiB tar chunk becomes one gzip member compressed by Bun's libdeflate (`Bun.gzipSync`),
 * and the members are concatenated: a multi-member gzip file (RFC 1952 §2.2) that gzip, GNU tar,
 * Go, Python's gzip module and the agent's `DecompressionStream` read as one stream. libdeflate is
 * the fastest of the compressors Bun offers, for an archive a few percent larger than zlib's.
 *
 * Compression runs on a worker thread (three chunks read ahead), so that reading files, hashing and
 * the upload's HTTP work on the main thread can use another core; same bytes as inline.
 */
export function packTree(plan: TreePlan, opts: PackOptions): Packed {
  const hasher = createHasher(opts.algorithm);
  const tar = new TarWriter(plan, opts.onBytes);
  const compressor = opts.inline
    ? inlineCompressor(opts.gzipLevel)
    : (workerCompressor(opts.gzipLevel) ?? inlineCompressor(opts.gzipLevel));
  // Chunks read ahead while the compressor works on earlier ones; buffers circulate, none is allocated per chunk.
  // With a tap the main thread is the slower side: one chunk fewer ahead costs no time and a MiB.
  const depth = opts.tap ? DEPTH - 1 : DEPTH;
  const free: ArrayBuffer[] = Array.from({ length: depth + 1 }, () => new ArrayBuffer(CHUNK));
  const pending: Promise<Compressed>[] = [];
  const spans: FileSpan[] = [];
  let tapped: void | Promise<void>;
  let handedOut: Uint8Array | undefined;
  let eof = false;
  let final: PackResult | undefined;
  let size = 0;
  let resolve!: (r: PackResult) => void;
  let reject!: (e: unknown) => void;
  const result = new Promise<PackResult>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  result.catch(() => {});
  const fail = (err: unknown) => {
    tar.close();
    compressor.close();
    reject(err);
  };
  const stream = new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        // Packing is synchronous work: let the consumer's network I/O run between chunks (a
        // ready stream otherwise resolves reads with microtasks only, and uploads stall).
        await new Promise((resolve) => setImmediate(resolve));
        if (handedOut) freeBytes(handedOut);
        handedOut = undefined;
        try {
          while (!eof && pending.length < depth) {
            if (tapped) await tapped;
            tapped = undefined;
            const buffer = free.pop()!;
            const raw = tar.next(new Uint8Array(buffer), opts.tap && spans);
            if (raw === null) {
              eof = true;
              free.push(buffer);
            } else {
              tapped = opts.tap?.chunk(raw, spans);
              tapped?.catch(() => {}); // awaited before the next chunk; after a cancel, nobody will
              const job = compressor.compress(buffer, raw.byteLength);
              job.catch(() => {}); // awaited in order below; after a cancel, nobody will
              pending.push(job);
            }
          }
          const next = pending.shift();
          if (next === undefined) {
            if (tapped) await tapped;
            compressor.close();
            final = { algorithm: opts.algorithm, checksum: hasher.hex(), size };
            resolve(final);
            controller.close();
            return;
          }
          const { gz, buffer } = await next;
          free.push(buffer);
          hasher.update(gz);
          size += gz.byteLength;
          if (opts.freeRead) handedOut = gz;
          controller.enqueue(gz);
        } catch (err) {
          fail(err);
          controller.error(err);
        }
      },
      cancel(reason) {
        fail(reason ?? new Error("pack cancelled"));
      },
    },
    { highWaterMark: 0 },
  );
  return {
    stream,
    result,
    get final() {
      return final;
    },
  };
}

/**
 * Free the memory of `bytes` now (detaching its buffer) if it owns all of it; any other view of that
 * buffer sees it empty. The collector frees large buffers late: publish's peak memory was mostly these.
 */
export function freeBytes(bytes: Uint8Array): void {
  if (bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength && bytes.buffer instanceof ArrayBuffer)
    bytes.buffer.transfer(0);
}

/** Raw chunks read ahead of the compressor. */
const DEPTH = 3;
