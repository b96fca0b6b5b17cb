/**
 * The content index, format `pulldeploy-delta/1`: a release as the tar stream `publish` packs, with
 * each regular file's bytes replaced by a list of content-addressed chunks stored in pack files.
 * Stored gzip'd JSON, compact arrays:
 *
 *   { "format": "pulldeploy-delta/1",
 *     "tar": { "sha256": hex, "size": n },          the uncompressed tar stream the entries rebuild
 *     "archive": { "size": n },                     the release's .tar.gz bytes (for the fall-back rule)
 *     "packs": [ sha256 hex, … ],                   `packs/<hex>.pack` next to the index
 *     "chunks": [ [sha256 hex, pack, offset, stored length, size], … ]   stored = raw DEFLATE
 *     "entries": [ [path, "f", mode, mtime, size, [chunk, …]] | [path, "d", mode, mtime]
 *                  | [path, "l", mode, mtime, target], … ] }             archive order
 *
 * Parsing is pure and refuses anything malformed with one `DeltaError` naming the first problem: the
 * index is as hostile as a tar header until its checksum (from a possibly signed manifest) matched,
 * and is still checked after. Paths go through the extractor's own `safeRelative`.
 */
import { safeRelative } from "../archive/extract.ts";
import type { PackEntry } from "../archive/pack.ts";
import { type ExtractError, PulldeployError } from "../errors.ts";
import { MAX_CHUNK } from "./chunker.ts";

export const FORMAT = "pulldeploy-delta/1";

export interface ChunkRef {
  hash: string;
  pack: number;
  offset: number;
  /** Stored (compressed) bytes in the pack. */
  stored: number;
  /** Raw bytes. */
  size: number;
}

export interface IndexEntry extends PackEntry {
  /** Files: indexes into `chunks`, in order. */
  chunks: number[];
}

export interface DeltaIndex {
  tar: { sha256: string; size: number };
  archiveSize?: number;
  packs: string[];
  chunks: ChunkRef[];
  entries: IndexEntry[];
}

/** The delta cannot be used: the caller falls back to the full archive (and says why). */
export class DeltaError extends PulldeployError {
  override name = "DeltaError";
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, "fetch", options);
  }
}

const HEX64 = /^[0-9a-f]{64}$/;

export function encodeIndex(ix: DeltaIndex): string {
  const entries = ix.entries.map((e) =>
    e.type === "file"
      ? [e.path, "f", e.mode, e.mtime, e.size, e.chunks]
      : e.type === "dir"
        ? [e.path, "d", e.mode, e.mtime]
        : [e.path, "l", e.mode, e.mtime, e.linkname],
  );
  return JSON.stringify({
    format: FORMAT,
    tar: ix.tar,
    ...(ix.archiveSize !== undefined ? { archive: { size: ix.archiveSize } } : {}),
    packs: ix.packs,
    chunks: ix.chunks.map((c) => [c.hash, c.pack, c.offset, c.stored, c.size]),
    entries,
  });
}

const isCount = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;

/** Parse and check an index (limits are the extractor's: entries and expanded bytes). */
export function parseIndex(text: string, limits: { maxEntries: number; maxBytes: number }): DeltaIndex {
  // biome-ignore lint/suspicious/noExplicitAny: JSON from the store, checked field by field below
  let raw: any;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new DeltaError(`index: not JSON (${(err as Error).message})`);
  }
  const bad = (what: string): never => {
    throw new DeltaError(`index: ${what}`);
  };
  if (raw === null || typeof raw !== "object") bad("expected an object");
  if (raw.format !== FORMAT) bad(`unknown format ${JSON.stringify(raw.format)} (this agent reads ${FORMAT})`);
  if (
    typeof raw.tar !== "object" ||
    raw.tar === null ||
    typeof raw.tar.sha256 !== "string" ||
    !HEX64.test(raw.tar.sha256) ||
    !isCount(raw.tar.size)
  )
    bad("tar: expected { sha256, size }");
  const archiveSize =
    raw.archive === undefined
      ? undefined
      : isCount(raw.archive?.size)
        ? raw.archive.size
        : bad("archive.size: expected a byte count");
  if (!Array.isArray(raw.packs) || !raw.packs.every((p: unknown) => typeof p === "string" && HEX64.test(p)))
    bad("packs: expected a list of sha256 names");
  if (!Array.isArray(raw.chunks)) bad("chunks: expected a list");
  const chunks: ChunkRef[] = raw.chunks.map((c: unknown, i: number) => {
    if (!Array.isArray(c) || c.length !== 5) return bad(`chunks[${i}]: expected [hash, pack, offset, stored, size]`);
    const [hash, pack, offset, stored, size] = c;
    if (typeof hash !== "string" || !HEX64.test(hash)) bad(`chunks[${i}]: bad hash`);
    if (!isCount(pack) || pack >= raw.packs.length) bad(`chunks[${i}]: no pack ${pack}`);
    if (
      !isCount(offset) ||
      !isCount(stored) ||
      !isCount(size) ||
      size === 0 ||
      size > MAX_CHUNK ||
      stored > MAX_CHUNK + 1024
    )
      bad(`chunks[${i}]: bad offset or size`);
    return { hash, pack, offset, stored, size };
  });
  if (!Array.isArray(raw.entries)) bad("entries: expected a list");
  if (raw.entries.length > limits.maxEntries)
    bad(`${raw.entries.length} entries, more than the limit of ${limits.maxEntries}`);
  let bytes = 0;
  const paths = new Set<string>();
  const entries: IndexEntry[] = raw.entries.map((e: unknown, i: number) => {
    if (!Array.isArray(e) || typeof e[0] !== "string" || !isCount(e[2]) || e[2] > 0o7777 || !Number.isSafeInteger(e[3]))
      return bad(`entries[${i}]: expected [path, type, mode, mtime, …]`);
    const [path, type, mode, mtime] = e as [string, string, number, number];
    let rel: string | null;
    try {
      rel = safeRelative(path);
    } catch (err) {
      return bad(`entries[${i}]: ${(err as ExtractError).message}`);
    }
    if (rel !== path) bad(`entries[${i}]: path ${JSON.stringify(path)} is not in canonical form`);
    // publish lists each path once; a second entry of a path would replace the first.
    if (paths.has(path)) bad(`entries[${i}]: ${path} is listed twice`);
    paths.add(path);
    if (type === "d" && e.length === 4) return { path, type: "dir", mode, mtime, size: 0, linkname: "", chunks: [] };
    if (type === "l" && e.length === 5 && typeof e[4] === "string" && e[4] !== "" && !e[4].includes("\0"))
      return { path, type: "symlink", mode, mtime, size: 0, linkname: e[4], chunks: [] };
    if (type === "f" && e.length === 6 && isCount(e[4]) && Array.isArray(e[5])) {
      const size = e[4] as number;
      const refs = e[5] as unknown[];
      let sum = 0;
      for (const r of refs) {
        if (!isCount(r) || r >= chunks.length) bad(`entries[${i}]: no chunk ${String(r)}`);
        sum += chunks[r as number]!.size;
      }
      if (sum !== size) bad(`entries[${i}] ${path}: chunks add up to ${sum} bytes, not ${size}`);
      bytes += size;
      if (bytes > limits.maxBytes) bad(`files add up to more than the limit of ${limits.maxBytes} bytes`);
      return { path, type: "file", mode, mtime, size, linkname: "", chunks: refs as number[] };
    }
    return bad(`entries[${i}] ${path}: malformed ${JSON.stringify(type)} entry`);
  });
  return { tar: raw.tar, archiveSize, packs: raw.packs, chunks, entries };
}

/** Where pack `name` lives: `packs/<name>.pack` beside the index. */
export function packUrl(indexUrl: string, name: string): string {
  return `${indexUrl.slice(0, indexUrl.lastIndexOf("/") + 1)}packs/${name}.pack`;
}

/** Stored names under `<to>`. */
export const deltaNames = {
  dir: (role: string) => `${role}/delta`,
  index: (role: string, id: string) => `${role}/delta/${id}.idx`,
  pack: (role: string, hash: string) => `${role}/delta/packs/${hash}.pack`,
};
