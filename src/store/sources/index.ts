/**
 * `src/store/`: where releases live: sources (read, by URL scheme; the agent) and targets (write;
 * publish), and the shared S3 client. May import the shared modules only.
 *
 * Sources by URL scheme. Implementations are imported lazily so that a plain `file://` deploy
 * never loads the AWS SDK.
 */
import { sleep } from "../../time.ts";
import { FetchError } from "../../errors.ts";
import { redact } from "../../log.ts";
import { schemeOf, SOURCE_SCHEMES, type SourceScheme } from "../schemes.ts";
import type { OpenOptions, Opened, Source } from "./types.ts";

const SOURCES: Record<SourceScheme, () => Promise<Source>> = {
  file: async () => (await import("./file.ts")).fileSource,
  http: async () => (await import("./http.ts")).httpSource,
  https: async () => (await import("./http.ts")).httpSource,
  s3: async () => (await import("./s3.ts")).s3Source,
  gs: async () => (await import("./gs.ts")).gsSource,
};

export async function sourceFor(url: string): Promise<Source> {
  const scheme = schemeOf(url);
  const load = scheme === undefined ? undefined : SOURCES[scheme as SourceScheme];
  if (!load) {
    throw new FetchError(
      scheme === undefined
        ? `fetch ${url}: not a URL: a scheme is required (${SOURCE_SCHEMES.join(", ")})`
        : `fetch ${url}: unknown scheme "${scheme}" (valid: ${SOURCE_SCHEMES.join(", ")})`,
      false,
    );
  }
  return load();
}

export async function openUrl(url: string, opts: OpenOptions): Promise<Opened> {
  return (await sourceFor(url)).open(url, opts);
}

/** Largest manifest read whole; about what Go's archive/tar allows a pax header. */
export const MAX_DOCUMENT_BYTES = 1 << 20;
/** Per-attempt deadline on a manifest or signature when the agent has no `--timeout`. */
export const DEFAULT_DOCUMENT_TIMEOUT_MS = 60_000;

/** How a small document is fetched: a deadline per attempt, and retries after retryable failures. */
export interface DocumentPolicy {
  /** Deadline of one attempt, covering the answer and the whole body; absent: `DEFAULT_DOCUMENT_TIMEOUT_MS`. */
  timeoutMs?: number;
  /** Extra attempts after a 5xx, 429, network error, deadline or broken body. */
  retry?: number;
  retryWaitMs?: number;
  /** Told before each retry. */
  onRetry?: (err: FetchError, attempt: number, of: number) => void;
}

/**
 * Fetch a small document (a manifest, a signature) whole, at most `maxBytes`: a larger declared size
 * is refused before the body is read, a larger body as soon as it passes the cap (never buffered).
 * Each attempt has a deadline that holds even against a server that answers and then trickles bytes
 * forever; `opts.signal` (the agent being stopped) ends it at once and is never retried.
 */
export async function fetchBytes(
  url: string,
  opts: OpenOptions,
  maxBytes = MAX_DOCUMENT_BYTES,
  policy: DocumentPolicy = {},
): Promise<Uint8Array> {
  const retry = policy.retry ?? 0;
  for (let attempt = 0; ; attempt++) {
    try {
      return await fetchOnce(url, opts, maxBytes, policy.timeoutMs ?? DEFAULT_DOCUMENT_TIMEOUT_MS);
    } catch (err) {
      const fe =
        err instanceof FetchError
          ? err
          : new FetchError(`fetch ${redact(url)}: ${(err as Error).message}`, false, { cause: err });
      if (!fe.retryable || opts.signal?.aborted) throw fe;
      if (attempt >= retry)
        throw retry > 0
          ? new FetchError(`${fe.message} (after ${attempt + 1} attempts)`, false, { cause: fe, status: fe.status })
          : fe;
      policy.onRetry?.(fe, attempt + 2, retry + 1);
      await sleep(policy.retryWaitMs ?? 0, opts.signal);
    }
  }
}

async function fetchOnce(url: string, opts: OpenOptions, maxBytes: number, timeoutMs: number): Promise<Uint8Array> {
  const deadline = new AbortController();
  const timer = setTimeout(() => deadline.abort(new Error("deadline")), timeoutMs);
  const signal = opts.signal ? AbortSignal.any([opts.signal, deadline.signal]) : deadline.signal;
  const where = `fetch ${redact(url)}`;
  const late = () => new FetchError(`${where}: no complete answer within ${timeoutMs / 1000}s (--timeout)`, true);
  // Sources honour the signal; racing every step against it bounds one that does not (a FIFO, a stuck SDK).
  const expired = new Promise<never>((_, reject) => {
    const fail = () => reject(opts.signal?.aborted ? new FetchError(`${where}: interrupted`, false) : late());
    if (signal.aborted) fail();
    else signal.addEventListener("abort", fail, { once: true });
  });
  expired.catch(() => {});
  let reader: { cancel(): Promise<void> } | undefined;
  try {
    const opened = await Promise.race([openUrl(url, { ...opts, signal }), expired]).catch((err) => {
      throw deadline.signal.aborted && !opts.signal?.aborted ? late() : err;
    });
    if (opened.size !== undefined && opened.size > maxBytes) {
      await opened.body.cancel().catch(() => {});
      throw tooLarge(where, maxBytes, opened.size);
    }
    const r = opened.body.getReader();
    reader = r;
    const chunks: Uint8Array[] = [];
    let n = 0;
    for (;;) {
      const { done, value } = await Promise.race([r.read(), expired]).catch((err) => {
        if (err instanceof FetchError) throw err;
        throw deadline.signal.aborted && !opts.signal?.aborted
          ? late()
          : new FetchError(`${where}: ${(err as Error).message}`, true, { cause: err });
      });
      if (done) break;
      n += value.byteLength;
      if (n > maxBytes) throw tooLarge(where, maxBytes);
      chunks.push(value);
    }
    reader = undefined;
    return Buffer.concat(chunks);
  } finally {
    clearTimeout(timer);
    if (reader) void reader.cancel().catch(() => {});
    deadline.abort(new Error("done")); // releases a connection still open
  }
}

function tooLarge(where: string, max: number, size?: number): FetchError {
  const got = size === undefined ? "" : ` (${size} bytes)`;
  return new FetchError(
    `${where}: larger than ${max} bytes${got}; a manifest or signature is never that big: check the URL`,
    false,
  );
}

export async function fetchText(
  url: string,
  opts: OpenOptions,
  maxBytes = MAX_DOCUMENT_BYTES,
  policy: DocumentPolicy = {},
): Promise<string> {
  return new TextDecoder().decode(await fetchBytes(url, opts, maxBytes, policy));
}

export type { OpenOptions, Opened, Source } from "./types.ts";
