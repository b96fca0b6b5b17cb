/** Reading a stored index: size-capped, checked against its sha256 when known, gunzip'd with a cap, parsed. */
import { redact } from "../log.ts";
import { fetchBytes } from "../store/sources/index.ts";
import type { OpenOptions } from "../store/sources/types.ts";
import { type CompactIndex, parseCompactIndex } from "./compact.ts";
import { inflateInto, inflateText } from "./inflate.ts";
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
  const { json, bytes } = await indexBytes(url, opts, sha256);
  try {
    return { index: parseCompactIndex(json, limits), bytes };
  } catch (err) {
    if (err instanceof DeltaError) throw new DeltaError(`${redact(url)}: ${err.message}`);
    throw err;
  } finally {
    // Nothing refers to the inflated bytes (the index copied what it keeps): their memory back now,
    // not at the next full collection.
    if (json.buffer instanceof ArrayBuffer) json.buffer.transfer(0);
  }
}

async function indexBytes(
  url: string,
  opts: OpenOptions,
  sha256: string,
): Promise<{ json: Uint8Array; bytes: number }> {
  const gz = await fetchChecked(url, opts, sha256);
  // gzip's trailer: the inflated size mod 2^32 (a hint only: a wrong one costs a copy, the cap still holds).
  const hint = gz.byteLength >= 4 ? new DataView(gz.buffer, gz.byteOffset + gz.byteLength - 4).getUint32(0, true) : 0;
  try {
    return { json: await inflateInto(gz, "gzip", MAX_INDEX_JSON, hint), bytes: gz.byteLength };
  } catch (err) {
    throw new DeltaError(`index ${redact(url)}: not a gzip'd index (${(err as Error).message})`, { cause: err });
  } finally {
    // The same for the stored bytes, when this view is the whole of its buffer (fetchBytes' own).
    if (gz.buffer instanceof ArrayBuffer && gz.byteOffset === 0 && gz.byteLength === gz.buffer.byteLength)
      gz.buffer.transfer(0);
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
