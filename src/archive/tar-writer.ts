/**
 * The tar stream of a plan: headers from tar-header.ts and the files' bytes read straight into
 * reused ~1 MiB chunks, synchronously, one chunk per call.
 */
import * as fs from "node:fs";
import { join } from "node:path";
import { BLOCK, entryHeaders, padded } from "./tar-header.ts";
import { PackError } from "./pack-error.ts";
import type { TreePlan } from "./walk.ts";

/** The size of one tar chunk, and of each gzip member made from one. */
export const CHUNK = 1 << 20;

/** Bytes `[start, end)` of a chunk are contents of `plan.entries[entry]`; `last`: its final bytes. */
export interface FileSpan {
  entry: number;
  start: number;
  end: number;
  last: boolean;
}

/**
 * The uncompressed tar bytes of `plan`, one chunk of about 1 MiB per `next()` (null at the end).
 * Files are read synchronously straight into the chunk; a file that shrank since the scan is an
 * error (its header already says its size). `onBytes` counts the files' bytes as they are read.
 * The chunk is one reused buffer: it is valid until the next call (packing compresses it at once).
 * `spans`, when given, is emptied and filled with where the chunk holds file contents (objects the
 * writer reuses: valid until the next call, like the chunk).
 */
export class TarWriter {
  private readonly buf = Buffer.allocUnsafe(CHUNK);
  private index = 0;
  private fd: number | null = null;
  private left = 0;
  private pad = 0;
  private finished = false;
  private readonly spanPool: FileSpan[] = [];

  constructor(
    private readonly plan: TreePlan,
    private readonly onBytes?: (n: number) => void,
  ) {}

  next(into: Uint8Array = this.buf, spans?: FileSpan[]): Uint8Array | null {
    if (this.finished) return null;
    const buf = into;
    let n = 0;
    if (spans) spans.length = 0;
    try {
      while (n < CHUNK) {
        if (this.fd !== null) {
          if (this.left > 0) {
            const got = fs.readSync(this.fd, buf, n, Math.min(this.left, CHUNK - n), null);
            if (got === 0) {
              const e = this.plan.entries[this.index - 1]!;
              throw new PackError(`pack ${this.plan.root}: ${e.path} shrank while packing (expected ${e.size} bytes)`);
            }
            this.left -= got;
            if (spans) {
              const span = (this.spanPool[spans.length] ??= { entry: 0, start: 0, end: 0, last: false });
              span.entry = this.index - 1;
              span.start = n;
              span.end = n + got;
              span.last = this.left === 0;
              spans.push(span);
            }
            n += got;
            this.onBytes?.(got);
          } else if (this.pad > 0) {
            const z = Math.min(this.pad, CHUNK - n);
            buf.fill(0, n, n + z);
            n += z;
            this.pad -= z;
          } else this.close();
          continue;
        }
        if (this.index < this.plan.entries.length) {
          const e = this.plan.entries[this.index]!;
          const h = entryHeaders(e);
          if (CHUNK - n < h.length) break;
          if (e.type === "file") {
            try {
              this.fd = fs.openSync(join(this.plan.root, e.path), fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
            } catch (err) {
              throw new PackError(
                `pack ${this.plan.root}: ${e.path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
              );
            }
            this.left = e.size;
            this.pad = padded(e.size) - e.size;
          }
          this.index++;
          buf.set(h, n);
          n += h.length;
          continue;
        }
        // The end-of-archive marker: two zero blocks.
        if (CHUNK - n < 2 * BLOCK) break;
        buf.fill(0, n, n + 2 * BLOCK);
        n += 2 * BLOCK;
        this.finished = true;
        break;
      }
    } catch (err) {
      this.close();
      throw err;
    }
    return buf.subarray(0, n);
  }

  close(): void {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
  }
}
