/** The contract every source implements; `sources/index.ts` keys them by URL scheme. */

import type { Env } from "../../env.ts";

export interface OpenOptions {
  /** The process environment (credentials, endpoints, proxies), passed in, never read globally. */
  env: Env;
  signal?: AbortSignal;
  /** Start at this byte (HTTP Range / S3 Range); 0 or absent: from the start. */
  offset?: number;
  /**
   * Read at most this many bytes from `offset` (a closed Range `bytes=offset-(offset+length-1)`); the store must honour
   * it.
   */
  length?: number;
  userAgent: string;
  /**
   * http(s): fail (retryable) when no response headers, or no body bytes, arrive for this long, even
   * without a deadline on the whole fetch: a server that hangs can't hold the agent. Default 60 s.
   */
  stallMs?: number;
}

export interface Opened {
  body: ReadableStream<Uint8Array>;
  /** Total size in bytes when the store says it. */
  size?: number;
}

export interface Source {
  /**
   * Open `url` for reading. Throws `FetchError` (retryable for 5xx and network errors) with a
   * one-line message naming the URL (credentials scrubbed) and the status.
   */
  open(url: string, opts: OpenOptions): Promise<Opened>;
}
