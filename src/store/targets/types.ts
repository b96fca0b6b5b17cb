/** The contract every upload target implements; `targets/index.ts` keys them by URL scheme. */
import type { Env } from "../../env.ts";
import { PulldeployError } from "../../errors.ts";
import type { Logger } from "../../log.ts";
import { formatDuration, sleep } from "../../time.ts";

export interface TargetOptions {
  env: Env;
  log: Logger;
  signal?: AbortSignal;
  /** Extra attempts of a failed request (a part, a PUT) after a retryable failure. */
  retries: number;
  /** Wait before the first retry; doubled for each further one. */
  retryWaitMs: number;
  /** Compressed bytes stored so far, for progress. */
  onSent?: (n: number) => void;
}

export interface Target {
  /** What the user typed, credentials removed. */
  readonly base: string;
  /** The URL an agent fetches `name` (a `/`-separated path under the base) from. */
  urlOf(name: string): string;
  /** Read-only checks worth failing on before packing (missing bucket, unwritable directory). */
  preflight(): Promise<void>;
  /**
   * Store a stream whose name is known only once it has ended (the name holds its checksum):
   * `name()` is called after the last byte. Never overwrites; throws `UploadError` (with `exists`)
   * when the name is taken, and leaves nothing behind on failure. Each chunk of `body` is written or
   * copied before the next is read: the producer may free it then.
   */
  putStream(body: ReadableStream<Uint8Array>, name: () => string, contentType: string): Promise<void>;
  /** Store small bytes under `name`, never overwriting. */
  putBytes(name: string, bytes: Uint8Array, contentType: string): Promise<void>;
  close(): void;
}

/** Storing failed. `exists`: the name was already taken (nothing was overwritten). */
export class UploadError extends PulldeployError {
  override name = "UploadError";
  readonly retryable: boolean;
  readonly exists: boolean;
  readonly status?: number;
  constructor(message: string, opts: { retryable?: boolean; exists?: boolean; status?: number; cause?: unknown } = {}) {
    super(message, "publish", { cause: opts.cause });
    this.retryable = opts.retryable ?? false;
    this.exists = opts.exists ?? false;
    this.status = opts.status;
  }
}

/** Run `attempt` until it succeeds, fails for good, or `retries` retries were spent. */
export async function withRetries<T>(_what: string, opts: TargetOptions, attempt: () => Promise<T>): Promise<T> {
  for (let i = 0; ; i++) {
    try {
      return await attempt();
    } catch (err) {
      const retryable = err instanceof UploadError ? err.retryable : false;
      if (!retryable || i >= opts.retries || opts.signal?.aborted) {
        if (retryable && i > 0 && err instanceof UploadError) {
          throw new UploadError(`${err.message} (after ${i + 1} attempts)`, {
            retryable: false,
            status: err.status,
            cause: err.cause ?? err,
          });
        }
        throw err;
      }
      const wait = opts.retryWaitMs * 2 ** i;
      opts.log.info(`${(err as Error).message}; retrying in ${formatDuration(wait)} (${i + 1}/${opts.retries})`);
      await sleep(wait, opts.signal);
    }
  }
}

/** Encode each segment of a `/`-separated path for a URL. */
export function encodePath(path: string): string {
  return path.split("/").map(encodeURIComponent).join("/");
}
