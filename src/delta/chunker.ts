/**
 * Content-defined chunking (FastCDC's gear hash with normalised chunking): a cut falls where the
 * rolling hash of the last 32 bytes has enough zero bits, so an insertion or change moves only the
 * cuts near it and the chunks after it are the same as before. Chunks are 16 KiB to 256 KiB, 64 KiB
 * on average; a smaller file is one chunk.
 *
 * A format contract: publish and every agent must cut at the same places (the agent re-chunks a
 * local file that changed to find the chunks it still holds). The table, masks and sizes are part
 * of `pulldeploy-delta/1`; changing any of them needs a new format version.
 */
import * as fs from "node:fs";

export const MIN_CHUNK = 16 * 1024;
export const AVG_CHUNK = 64 * 1024;
export const MAX_CHUNK = 256 * 1024;

/** Before the average size a cut needs 18 zero bits (rarer), after it 14 (likelier): sizes bunch near 64 KiB. */
const MASK_SMALL = 0xffffc000 | 0;
const MASK_LARGE = 0xfffc0000 | 0;

/** 256 pseudo-random words from a fixed seed (splitmix32). */
const GEAR = (() => {
  const t = new Int32Array(256);
  let s = 0x9e3779b9;
  for (let i = 0; i < 256; i++) {
    s = (s + 0x9e3779b9) | 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    t[i] = z ^ (z >>> 16);
  }
  return t;
})();

/**
 * The length of the chunk starting at `buf[start]`, given that `buf[start..end)` holds all the bytes that may follow
 * (up to MAX_CHUNK of them, or the rest of the file).
 */
export function cutPoint(buf: Uint8Array, start: number, end: number): number {
  const n = end - start;
  if (n <= MIN_CHUNK) return n;
  const limit = Math.min(n, MAX_CHUNK);
  const normal = Math.min(limit, AVG_CHUNK);
  let h = 0;
  let i = MIN_CHUNK;
  for (; i < normal; i++) {
    h = ((h << 1) + GEAR[buf[start + i]!]!) | 0;
    if ((h & MASK_SMALL) === 0) return i + 1;
  }
  for (; i < limit; i++) {
    h = ((h << 1) + GEAR[buf[start + i]!]!) | 0;
    if ((h & MASK_LARGE) === 0) return i + 1;
  }
  return limit;
}

const READ_BUF = 4 * MAX_CHUNK;

/** The buffer `fileChunks` reads into: one per caller, reused for every file. */
export function chunkBuffer(): Uint8Array {
  return new Uint8Array(READ_BUF);
}

/**
 * The chunks of the open file `fd` of `size` bytes, in order: each a view into `buffer` (from
 * `chunkBuffer`), valid until the next step. Throws if the file is shorter than `size`.
 */
export function* fileChunks(
  fd: number,
  size: number,
  buffer: Uint8Array,
): Generator<{ bytes: Uint8Array; offset: number }> {
  const buf = buffer.subarray(0, Math.min(READ_BUF, Math.max(size, 1)));
  let filled = 0;
  let pos = 0; // file offset of buf[0]
  let read = 0; // bytes read from the file so far
  while (pos < size) {
    while (filled < buf.length && read < size) {
      const got = fs.readSync(fd, buf, filled, Math.min(buf.length - filled, size - read), read);
      if (got === 0) throw new Error(`file shrank while reading (expected ${size} bytes, got ${read})`);
      filled += got;
      read += got;
    }
    let start = 0;
    // Cut while a whole maximum chunk is in the buffer, or up to the end of the file.
    while (start < filled && (filled - start >= MAX_CHUNK || read === size)) {
      const len = cutPoint(buf, start, filled);
      yield { bytes: buf.subarray(start, start + len), offset: pos + start };
      start += len;
    }
    buf.copyWithin(0, start, filled);
    filled -= start;
    pos += start;
  }
}

/**
 * The same cuts as `fileChunks`, for a file whose bytes arrive in pieces of any size (publish reads
 * each file once, into the archive's tar chunks). Bytes are copied only when a chunk spans two
 * pieces; one instance per caller, reused for every file.
 */
export class ChunkStream {
  private readonly win = new Uint8Array(MAX_CHUNK);
  private filled = 0;

  /**
   * The next piece of the current file, `buf[start..end)`; `last`: the file ends with it. `emit` gets
   * each chunk in order, a view valid only during the call.
   */
  push(buf: Uint8Array, start: number, end: number, last: boolean, emit: (bytes: Uint8Array) => void): void {
    const win = this.win;
    const piece = buf;
    let p = start;
    if (this.filled > 0) {
      // A chunk started in an earlier piece: gather it (a maximum chunk, or up to the file's end).
      for (;;) {
        const take = Math.min(end - p, MAX_CHUNK - this.filled);
        win.set(piece.subarray(p, p + take), this.filled);
        this.filled += take;
        p += take;
        const ends = last && p === end;
        if (this.filled < MAX_CHUNK && !ends) return;
        const len = cutPoint(win, 0, this.filled);
        emit(win.subarray(0, len));
        const left = this.filled - len;
        this.filled = 0;
        if (left <= take) {
          p -= left; // the rest is in this piece: cut it there
          break;
        }
        win.copyWithin(0, len, len + left);
        this.filled = left;
      }
    }
    while (p < end) {
      const rest = end - p;
      if (rest < MAX_CHUNK && !last) {
        win.set(piece.subarray(p, end));
        this.filled = rest;
        return;
      }
      const len = cutPoint(piece, p, end);
      emit(piece.subarray(p, p + len));
      p += len;
    }
  }
}

/** The hex sha256 of `bytes`: a chunk's name. */
export function chunkHash(bytes: Uint8Array): string {
  return new Bun.CryptoHasher("sha256").update(bytes).digest("hex");
}
