/**
 * One pass over the archive's bytes: download → (rate cap) → hash → gunzip → extract into a fresh
 * directory, all streaming, with no temporary copy of the archive. The checksum is compared at the
 * end; an extraction error is kept aside (the download is still drained and hashed) so that the
 * caller can report a checksum mismatch first, exactly as a sequential fetch-then-extract would.
 */
import { createHasher, type Checksum } from "../checksum.ts";
import { ChecksumError, ExtractError, FetchError } from "../errors.ts";
import * as fs from "node:fs";
import { redact } from "../log.ts";
import { sleep } from "../time.ts";
import { formatBytes } from "../units.ts";
import { openUrl } from "../store/sources/index.ts";
import type { Env } from "../env.ts";
import { detectCompression, type ExtractedTree, TarExtractor, type ExtractLimits } from "../archive/extract.ts";

export interface UnpackOptions {
  url: string;
  checksum: Checksum;
  /** An empty directory to extract into. */
  tree: string;
  env: Env;
  userAgent: string;
  signal?: AbortSignal;
  /** Bytes per second; absent: no cap. */
  maxBandwidth?: number;
  limits: ExtractLimits;
  /** A previous release (or dest, for rsync) to hard-link unchanged files from. */
  linkFrom?: string;
  /** Where files may legitimately share an inode with `linkFrom`'s (see `TarExtractor`). */
  linkPeers?: string[];
  /** A broken body is resumed with a Range request up to this many times (when the store allows). */
  resumes?: number;
  /** Told when a broken download is resumed. */
  onResume?: (offset: number, err: FetchError) => void;
}

export type UnpackResult = ExtractedTree;

export async function fetchAndExtract(opts: UnpackOptions): Promise<UnpackResult> {
  const { url, signal } = opts;
  const shown = redact(url);
  let opened = await openUrl(url, { env: opts.env, signal, userAgent: opts.userAgent });
  checkFreeSpace(opts.tree, opened.size);
  let resumesLeft = opts.resumes ?? 0;
  const hasher = createHasher(opts.checksum.algorithm);
  const extractor = new TarExtractor(opts.tree, opts.limits, opts.linkFrom, opts.linkPeers);
  const throttle = opts.maxBandwidth ? createThrottle(opts.maxBandwidth) : undefined;
  let extractError: ExtractError | undefined;
  const fail = (err: unknown) => {
    if (extractError) return;
    extractError =
      err instanceof ExtractError
        ? err
        : new ExtractError(`corrupt archive (${(err as Error).message})`, undefined, { cause: err });
    extractor.abort();
  };

  let gunzip: ReturnType<typeof startGunzip> | undefined;
  let started = false;
  let bytes = 0;
  let reader = opened.body.getReader();
  try {
    for (;;) {
      let chunk: Awaited<ReturnType<typeof reader.read>>;
      try {
        chunk = await reader.read();
      } catch (err) {
        const broken = bodyError(shown, err, signal);
        if (!broken.retryable || resumesLeft <= 0 || signal?.aborted || bytes === 0) throw broken;
        // Resume where the bytes stopped: hashing and extraction simply continue.
        resumesLeft--;
        opts.onResume?.(bytes, broken);
        reader.releaseLock();
        try {
          opened = await openUrl(url, { env: opts.env, signal, userAgent: opts.userAgent, offset: bytes });
        } catch {
          throw broken; // no Range support: the caller restarts from scratch
        }
        reader = opened.body.getReader();
        continue;
      }
      if (chunk.done) break;
      const value = chunk.value;
      bytes += value.byteLength;
      if (throttle) await throttle(value.byteLength, signal);
      hasher.update(value);
      if (!extractError && !started) {
        started = true;
        const kind = detectCompression(value);
        if (kind === "gzip") gunzip = startGunzip(extractor, fail);
        else if (kind !== "none") fail(new ExtractError(kind));
      }
      if (extractError) {
        // Only hashed from here on.
      } else if (gunzip) {
        for (let off = 0; off < value.byteLength && !extractError; off += GUNZIP_PIECE) {
          await gunzip.writer.write(value.subarray(off, off + GUNZIP_PIECE) as Uint8Array<ArrayBuffer>).catch(fail);
        }
      } else {
        try {
          extractor.write(value);
        } catch (err) {
          fail(err);
        }
      }
      // Hashed, and inflated or extracted (each gunzip write resolves once its piece is consumed).
      free(value);
    }
  } finally {
    try {
      reader.releaseLock();
    } catch {}
  }
  if (signal?.aborted) throw bodyError(shown, signal.reason, signal);

  if (gunzip) {
    await gunzip.writer.close().catch(fail);
    await gunzip.drained;
  }
  if (!extractError) {
    try {
      if (!started) throw new ExtractError("empty archive", undefined);
      extractor.end();
    } catch (err) {
      fail(err);
    }
  }
  const actual = hasher.hex();
  if (actual !== opts.checksum.hex) throw new ChecksumError(opts.checksum.algorithm, opts.checksum.hex, actual);
  const changedLink = extractor.linked > 0 ? (each: boolean) => extractor.changedLink(each) : undefined;
  return {
    bytes,
    entries: extractor.entries,
    linked: extractor.linked,
    hardLinks: extractor.hardLinkEntries,
    changedLink,
    extractError,
  };
}

/**
 * A full disk before extraction: the tree needs at least the compressed size (and usually several
 * times more), so refuse at once when not even that is free.
 */
function checkFreeSpace(tree: string, size: number | undefined): void {
  if (size === undefined) return;
  let free: number;
  try {
    const st = fs.statfsSync(tree);
    free = st.bavail * st.bsize;
  } catch {
    return;
  }
  if (free < size) {
    throw new ExtractError(
      `not enough disk space: the archive alone is ${formatBytes(size)} but ${tree} has ${formatBytes(free)} free`,
    );
  }
}

/**
 * Download chunks reach gunzip in pieces of at most this size. Bun inflates a piece this small on
 * the JS thread; larger ones (the HTTP client hands over up to 512 KiB when extraction falls behind)
 * go to its thread pool, which does not overlap with extraction anyway and holds bigger buffers:
 * measured on 240 MB, the same speed and a peak RSS ~10 MB lower and steadier.
 */
const GUNZIP_PIECE = 64 * 1024;

/**
 * Give a chunk's memory back now rather than at the next GC, once it has been used: neither the
 * hasher nor the extractor keeps a reference. Gunzip hands out a new 64 KiB buffer per chunk (272 MB
 * of them for a 240 MB app) and the download comes in chunks of up to 512 KiB; waiting for the GC,
 * 10-15 MB of them were alive at a time. Detaching (`transfer(0)`) frees the memory at once in JSC.
 * A view into a larger buffer (which may hold other chunks) is left alone.
 */
function free(chunk: Uint8Array): void {
  const buffer = chunk.buffer;
  if (buffer instanceof ArrayBuffer && chunk.byteOffset === 0 && chunk.byteLength === buffer.byteLength)
    buffer.transfer(0);
}

/** Bun's own gzip as a stream; decompressed chunks go straight into the extractor. */
function startGunzip(extractor: TarExtractor, fail: (err: unknown) => void) {
  const ds = new DecompressionStream("gzip");
  const writer = ds.writable.getWriter();
  const drained = (async () => {
    const reader = ds.readable.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return;
        // Record an extraction error before tearing the stream down, so that it wins over the
        // "stream cancelled" errors the teardown causes on the writing side.
        extractor.write(value);
        free(value);
      }
    } catch (err) {
      fail(err);
      await reader.cancel(err).catch(() => {});
    }
  })();
  return { writer, drained };
}

function bodyError(url: string, err: unknown, signal?: AbortSignal): FetchError {
  if (signal?.aborted) {
    const reason = signal.reason as Error | undefined;
    const timedOut = reason?.name === "TimeoutError";
    return new FetchError(`fetch ${url}: ${timedOut ? "timed out" : "interrupted"}`, timedOut, { cause: err });
  }
  if (err instanceof FetchError) return err;
  return new FetchError(`fetch ${url}: connection broken while reading: ${(err as Error)?.message ?? err}`, true, {
    cause: err,
  });
}

/** A token-bucket-free rate cap: sleep whenever we're ahead of `bytesPerSec`. */
export function createThrottle(bytesPerSec: number) {
  const start = performance.now();
  let total = 0;
  return async (n: number, signal?: AbortSignal) => {
    total += n;
    const due = (total / bytesPerSec) * 1000;
    const ahead = due - (performance.now() - start);
    if (ahead > 5) await sleep(ahead, signal);
  };
}
