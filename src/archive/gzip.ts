/**
 * gzip compression of tar chunks with Bun's libdeflate, on a worker thread (or inline): each chunk
 * becomes one gzip member, handed back in call order with its buffer for reuse.
 */
import { PackError } from "./pack-error.ts";

export interface Compressed {
  gz: Uint8Array;
  /** The raw chunk's buffer, back for reuse. */
  buffer: ArrayBuffer;
}

export interface Compressor {
  /**
   * Compress the first `length` bytes of `buffer` (which is handed over until the promise settles). Results come in
   * call order.
   */
  compress(buffer: ArrayBuffer, length: number): Promise<Compressed>;
  close(): void;
}

export function inlineCompressor(level: number): Compressor {
  const options: Bun.LibdeflateCompressionOptions = {
    level: level as Bun.LibdeflateCompressionOptions["level"],
    library: "libdeflate",
  };
  return {
    compress: async (buffer, length) => ({ gz: Bun.gzipSync(new Uint8Array(buffer, 0, length), options), buffer }),
    close() {},
  };
}

/** The worker's whole program: compress each chunk it is sent, and hand the chunk back. */
const WORKER_SOURCE = `self.onmessage = (e) => {
  const { buffer, length, level } = e.data;
  try {
    const gz = Bun.gzipSync(new Uint8Array(buffer, 0, length), { level, library: "libdeflate" });
    self.postMessage({ gz, buffer }, [gz.buffer, buffer]);
  } catch (err) {
    self.postMessage({ error: String(err && err.message || err) });
  }
};`;

/**
 * Compression on a worker thread, so that reading files, hashing and uploading on the main thread
 * overlap with it. A Blob URL, so the compiled executable needs no extra file. Undefined when workers
 * are unavailable.
 */
export function workerCompressor(level: number): Compressor | undefined {
  let worker: Worker;
  try {
    worker = new Worker(URL.createObjectURL(new Blob([WORKER_SOURCE], { type: "application/javascript" })));
  } catch {
    return undefined;
  }
  const waiting: { resolve: (c: Compressed) => void; reject: (e: unknown) => void }[] = [];
  let closed = false;
  const failAll = (err: unknown) => {
    for (const w of waiting.splice(0)) w.reject(err);
  };
  worker.onmessage = (e: MessageEvent) => {
    const w = waiting.shift();
    if (!w) return;
    if (e.data.error) w.reject(new PackError(`gzip: ${e.data.error}`));
    else w.resolve({ gz: e.data.gz as Uint8Array, buffer: e.data.buffer as ArrayBuffer });
  };
  worker.onerror = (e: ErrorEvent) => failAll(new PackError(`gzip worker: ${e.message}`));
  return {
    compress(buffer, length) {
      if (closed) return Promise.reject(new PackError("gzip worker: closed"));
      return new Promise<Compressed>((resolve, reject) => {
        waiting.push({ resolve, reject });
        worker.postMessage({ buffer, length, level }, [buffer]);
      });
    },
    close() {
      if (closed) return;
      closed = true;
      failAll(new PackError("gzip worker: closed"));
      worker.terminate();
    },
  };
}
