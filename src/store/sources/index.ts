/**
 * `src/store/`: where releases live: sources (read, by URL scheme; the agent) and targets (write;
 * publish), and the shared S3 client. May import the shared modules only.
 *
 * Sources by URL scheme. Implementations are imported lazily so that a plain `file://` deploy
 * never loads the AWS SDK.
 */
import { FetchError } from "../../errors.ts";
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

/** Fetch a small document (a manifest, a signature) whole. */
export async function fetchBytes(url: string, opts: OpenOptions, maxBytes = 1 << 20): Promise<Uint8Array> {
  const { body } = await openUrl(url, opts);
  const chunks: Uint8Array[] = [];
  let n = 0;
  try {
    for await (const chunk of body) {
      n += chunk.byteLength;
      if (n > maxBytes) throw new FetchError(`fetch ${url}: larger than ${maxBytes} bytes; is this really a manifest?`, false);
      chunks.push(chunk);
    }
  } catch (err) {
    if (err instanceof FetchError) throw err;
    throw new FetchError(`fetch ${url}: ${(err as Error).message}`, true, { cause: err });
  }
  return Buffer.concat(chunks);
}

export async function fetchText(url: string, opts: OpenOptions, maxBytes = 1 << 20): Promise<string> {
  return new TextDecoder().decode(await fetchBytes(url, opts, maxBytes));
}

export type { OpenOptions, Opened, Source } from "./types.ts";
