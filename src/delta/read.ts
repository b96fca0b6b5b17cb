/** Reading a stored index: size-capped, checked against its sha256 when known, gunzip'd with a cap, parsed. */
import { redact } from "../log.ts";
import { fetchBytes } from "../store/sources/index.ts";
import type { OpenOptions } from "../store/sources/types.ts";
import { type CompactIndex, parseCompactIndex } from "./compact.ts";
import { inflateCapped, inflateText } from "./inflate.ts";
import { DeltaError, parseIndex, type DeltaIndex } from "./format.ts";

/** A stored index larger than this is refused (a 20,000-file release's is ~1 MB). */
export const MAX_INDEX_BYTES = 64 * 2 ** 20;
const MAX_INDEX_JSON = 512 * 2 ** 20;

export async function fetchIndex(
  url: string,
  opts: OpenOptions,
  limits: { maxEntries: number; maxBytes: number },
  sha256?: string,
): Promise<{ index: DeltaIndex; bytes: number }> {
  // The stored bytes and the inflated ones are out of scope (garbage) while the text is parsed.
  const { text, bytes } = await indexText(url, opts, sha256);
  try {
    return { index: parseIndex(text, limits), bytes };
  } catch (err) {
    if (err instanceof DeltaError) throw new DeltaError(`${redact(url)}: ${err.message}`);
    throw err;
  }
}

/** The same, read by the agent into a `CompactIndex` (from the inflated bytes, never a string). */
export async function fetchCompactIndex(
  url: string,
  opts: OpenOptions,
  limits: { maxEntries: number; maxBytes: number },
  sha256: string,
): Promise<{ index: CompactIndex; bytes: number }> {
  const gz = await fetchChecked(url, opts, sha256);
  let json: Uint8Array;
  try {
    json = await inflateCapped(gz, "gzip", MAX_INDEX_JSON);
  } catch (err) {
    throw new DeltaError(`index ${redact(url)}: not a gzip'd index (${(err as Error).message})`, { cause: err });
  }
  try {
    return { index: parseCompactIndex(json, limits), bytes: gz.byteLength };
  } catch (err) {
    if (err instanceof DeltaError) throw new DeltaError(`${redact(url)}: ${err.message}`);
    throw err;
  }
}

async function fetchChecked(url: string, opts: OpenOptions, sha256?: string): Promise<Uint8Array> {
  const gz = await fetchBytes(url, opts, MAX_INDEX_BYTES);
  if (sha256 !== undefined) {
    const actual = new Bun.CryptoHasher("sha256").update(gz).digest("hex");
    if (actual !== sha256)
      throw new DeltaError(`index ${redact(url)}: checksum mismatch: expected sha256 ${sha256}, got ${actual}`);
  }
  return gz;
}

async function indexText(url: string, opts: OpenOptions, sha256?: string): Promise<{ text: string; bytes: number }> {
  const gz = await fetchChecked(url, opts, sha256);
  try {
    return { text: await inflateText(gz, "gzip", MAX_INDEX_JSON), bytes: gz.byteLength };
  } catch (err) {
    throw new DeltaError(`index ${redact(url)}: not a gzip'd index (${(err as Error).message})`, { cause: err });
  }
}
