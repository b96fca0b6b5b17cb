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
  /** Set by `parseIndex`: each entry's position by its path. */
  byPath?: Map<string, number>;
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

/**
 * The index's head (`format`, `tar`, `archive`, `packs`; `member` gives each top-level value parsed),
 * checked: read first by both parsers, this one and the agent's (compact.ts).
 */
export function indexHead(
  member: (key: string) => unknown,
  bad: (what: string) => never,
): { tar: { sha256: string; size: number }; archiveSize: number | undefined; packs: string[] } {
  // biome-ignore lint/suspicious/noExplicitAny: JSON from the store, checked field by field below
  const raw: any = { format: member("format"), tar: member("tar"), archive: member("archive"), packs: member("packs") };
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
  return { tar: raw.tar, archiveSize, packs: raw.packs };
}

/**
 * Parse and check an index (limits are the extractor's: entries and expanded bytes). The top-level
 * members are found by a scan (`members`), and each element of `chunks` and `entries` is parsed and
 * checked on its own: the whole document is never one tree of arrays (for 20,000 files that tree and
 * its garbage were most of the agent's peak RSS). Every value still goes through `JSON.parse`.
 */
export function parseIndex(text: string, limits: { maxEntries: number; maxBytes: number }): DeltaIndex {
  const notJson = (err: unknown): never => {
    throw new DeltaError(`index: not JSON (${(err as Error).message})`);
  };
  let top: Map<string, [number, number]>;
  try {
    top = members(text);
  } catch (err) {
    return notJson(err);
  }
  const json = (start: number, end: number) => {
    try {
      return JSON.parse(text.slice(start, end));
    } catch (err) {
      return notJson(err);
    }
  };
  const member = (key: string) => {
    const span = top.get(key);
    return span === undefined ? undefined : json(span[0], span[1]);
  };
  const bad = (what: string): never => {
    throw new DeltaError(`index: ${what}`);
  };
  const { tar, archiveSize, packs } = indexHead(member, bad);
  const chunkSpan = top.get("chunks");
  if (chunkSpan === undefined || text.charCodeAt(chunkSpan[0]) !== 0x5b) bad("chunks: expected a list");
  const chunks: ChunkRef[] = [];
  forElements(text, chunkSpan![0], notJson, (start, end, i) => {
    const c: unknown = json(start, end);
    if (!Array.isArray(c) || c.length !== 5) bad(`chunks[${i}]: expected [hash, pack, offset, stored, size]`);
    const [hash, pack, offset, stored, size] = c as unknown[] as [string, number, number, number, number];
    if (typeof hash !== "string" || !HEX64.test(hash)) bad(`chunks[${i}]: bad hash`);
    if (!isCount(pack) || pack >= packs.length) bad(`chunks[${i}]: no pack ${pack}`);
    if (
      !isCount(offset) ||
      !isCount(stored) ||
      !isCount(size) ||
      size === 0 ||
      size > MAX_CHUNK ||
      stored > MAX_CHUNK + 1024
    )
      bad(`chunks[${i}]: bad offset or size`);
    chunks.push({ hash, pack, offset, stored, size });
  });
  const entrySpan = top.get("entries");
  if (entrySpan === undefined || text.charCodeAt(entrySpan[0]) !== 0x5b) bad("entries: expected a list");
  let bytes = 0;
  const paths = new Map<string, number>();
  const entries: IndexEntry[] = [];
  forElements(text, entrySpan![0], notJson, (start, end, i) => {
    if (i >= limits.maxEntries) bad(`more than ${limits.maxEntries} entries, the limit`);
    const e: unknown = json(start, end);
    entries.push(entry(e, i));
  });
  return { tar, archiveSize, packs, chunks, entries, byPath: paths };

  function entry(e: unknown, i: number): IndexEntry {
    if (!Array.isArray(e) || typeof e[0] !== "string" || !isCount(e[2]) || e[2] > 0o7777 || !Number.isSafeInteger(e[3]))
      return bad(`entries[${i}]: expected [path, type, mode, mtime, …]`);
    const [path, type, mode, mtime] = e as [string, string, number, number];
    if (!canonical(path)) {
      let rel: string | null;
      try {
        rel = safeRelative(path);
      } catch (err) {
        return bad(`entries[${i}]: ${(err as ExtractError).message}`);
      }
      if (rel !== path) bad(`entries[${i}]: path ${JSON.stringify(path)} is not in canonical form`);
    }
    // publish lists each path once; a second entry of a path would replace the first.
    if (paths.has(path)) bad(`entries[${i}]: ${path} is listed twice`);
    paths.set(path, i);
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
  }
}

const isWs = (c: number) => c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;

function skipWs(t: string, i: number): number {
  while (i < t.length && isWs(t.charCodeAt(i))) i++;
  return i;
}

/**
 * Where the JSON value starting at `t[i]` ends: a string to its closing quote, an array or object to
 * its matching bracket (strings inside skipped), anything else to the next delimiter. Only finds the
 * span: `JSON.parse` of the span checks it.
 */
function valueEnd(t: string, i: number): number {
  const c = t.charCodeAt(i);
  if (c === 0x22) {
    for (let j = i + 1; j < t.length; j++) {
      const d = t.charCodeAt(j);
      if (d === 0x5c) j++;
      else if (d === 0x22) return j + 1;
    }
    throw new Error("unterminated string");
  }
  if (c === 0x5b || c === 0x7b) {
    let depth = 0;
    for (let j = i; j < t.length; j++) {
      const d = t.charCodeAt(j);
      if (d === 0x22) j = valueEnd(t, j) - 1;
      else if (d === 0x5b || d === 0x7b) depth++;
      else if ((d === 0x5d || d === 0x7d) && --depth === 0) return j + 1;
    }
    throw new Error("unterminated array or object");
  }
  let j = i;
  for (; j < t.length; j++) {
    const d = t.charCodeAt(j);
    if (isWs(d) || d === 0x2c || d === 0x5d || d === 0x7d) break;
  }
  if (j === i) throw new Error(`unexpected ${JSON.stringify(t[i] ?? "end")} at ${i}`);
  return j;
}

/** The top-level object's members: each key's value as a span of `t`. A key given twice is refused. */
function members(t: string): Map<string, [number, number]> {
  const out = new Map<string, [number, number]>();
  let i = skipWs(t, 0);
  if (t.charCodeAt(i) !== 0x7b) throw new Error("expected an object");
  i = skipWs(t, i + 1);
  if (t.charCodeAt(i) === 0x7d) i++;
  else
    for (;;) {
      if (t.charCodeAt(i) !== 0x22) throw new Error(`expected a key at ${i}`);
      const keyEnd = valueEnd(t, i);
      const key = JSON.parse(t.slice(i, keyEnd)) as string;
      if (out.has(key)) throw new Error(`${JSON.stringify(key)} given twice`);
      i = skipWs(t, keyEnd);
      if (t.charCodeAt(i) !== 0x3a) throw new Error(`expected ':' at ${i}`);
      i = skipWs(t, i + 1);
      const end = valueEnd(t, i);
      out.set(key, [i, end]);
      i = skipWs(t, end);
      const c = t.charCodeAt(i++);
      if (c === 0x7d) break;
      if (c !== 0x2c) throw new Error(`expected ',' or '}' at ${i - 1}`);
      i = skipWs(t, i);
    }
  if (skipWs(t, i) !== t.length) throw new Error(`unexpected text after the object at ${i}`);
  return out;
}

/** Call `each` with the span and position of every element of the array starting at `t[i]`. */
function forElements(
  t: string,
  i: number,
  fail: (err: unknown) => never,
  each: (start: number, end: number, n: number) => void,
): void {
  try {
    i = skipWs(t, i + 1);
    if (t.charCodeAt(i) === 0x5d) return;
  } catch (err) {
    fail(err);
  }
  for (let n = 0; ; n++) {
    let end = i;
    try {
      end = valueEnd(t, i);
    } catch (err) {
      fail(err);
    }
    each(i, end, n);
    if ((n & 2047) === 2047) Bun.gc(false);
    i = skipWs(t, end);
    const c = t.charCodeAt(i);
    if (c === 0x5d) return;
    if (c !== 0x2c) fail(new Error(`expected ',' or ']' at ${i}`));
    i = skipWs(t, i + 1);
  }
}

/**
 * `path` is what `safeRelative` returns it as (relative, no empty, `.` or `..` component, no NUL),
 * checked without building the parts: 20,000 paths cost no garbage. Anything else goes through
 * `safeRelative` itself, for its error.
 */
function canonical(path: string): boolean {
  if (path === "" || path.includes("\0")) return false;
  let start = 0;
  for (;;) {
    const end = path.indexOf("/", start);
    const len = (end === -1 ? path.length : end) - start;
    if (len === 0) return false;
    if (path.charCodeAt(start) === 46 && (len === 1 || (len === 2 && path.charCodeAt(start + 1) === 46))) return false;
    if (end === -1) return true;
    start = end + 1;
  }
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
