/**
 * The agent's reading of a content index (`format.ts`): what `parseIndex` accepts and refuses, with
 * the same checks in the same order, read from the inflated bytes into typed arrays (per chunk its
 * binary sha256 and four numbers, per entry a few numbers and its path's bytes in one buffer, paths
 * found by a hash table over those bytes) instead of an object, an array and strings per entry and
 * chunk: a 20,000-file index is a few flat arrays, not ~90,000 objects for the agent to hold and the
 * collector to walk.
 *
 * An element in the exact shape publish writes (no whitespace, plain digits, ASCII strings without
 * escapes) is read straight from the bytes; anything else (escapes, non-ASCII, whitespace, other
 * number forms) and any element a check would refuse is parsed by `JSON.parse` and checked as
 * `parseIndex` checks it, so a refusal's message is `parseIndex`'s. Strings are read as UTF-8 (as
 * the `TextDecoder` before `parseIndex` reads them).
 */
import { safeRelative } from "../archive/extract.ts";
import type { ExtractError } from "../errors.ts";
import { MAX_CHUNK } from "./chunker.ts";
import { type ChunkRef, DeltaError, type IndexEntry, indexHead } from "./format.ts";

export const FILE = 0;
export const DIR = 1;
export const SYMLINK = 2;

const HEX64 = /^[0-9a-f]{64}$/;
const isCount = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
const decoder = new TextDecoder();
const encoder = new TextEncoder();

export class CompactIndex {
  tar = { sha256: "", size: 0 };
  archiveSize: number | undefined;
  packs: string[] = [];

  /** Chunks: `hashes` holds each one's sha256 (32 bytes at 32 × k). */
  chunkCount = 0;
  hashes = new Uint8Array(0);
  pack = new Int32Array(0);
  offset = new Float64Array(0);
  stored = new Int32Array(0);
  size = new Int32Array(0);

  /** Entries, in archive order: entry `i`'s path is `pathBytes[pathStart[i], pathStart[i + 1])` (UTF-8). */
  count = 0;
  kind = new Uint8Array(0);
  mode = new Uint16Array(0);
  mtime = new Float64Array(0);
  /** A file's size (0 for the others). */
  fileSize = new Float64Array(0);
  pathBytes = new Uint8Array(0);
  pathStart = new Int32Array(1);
  /** A file's chunks are `refs[refStart[i], refStart[i + 1])`. */
  refStart = new Int32Array(1);
  refs = new Int32Array(0);
  linknames = new Map<number, string>();
  /** Open addressing by `pathHash`: entry + 1, 0 for empty. */
  private table = new Int32Array(0);

  /** Entry `i`'s path. */
  path(i: number): string {
    return decoder.decode(this.pathBytes.subarray(this.pathStart[i]!, this.pathStart[i + 1]!));
  }
  /** Entry `i` as the tar writer takes it. */
  entry(i: number): IndexEntry {
    const k = this.kind[i]!;
    return {
      path: this.path(i),
      type: k === FILE ? "file" : k === DIR ? "dir" : "symlink",
      mode: this.mode[i]!,
      mtime: this.mtime[i]!,
      size: this.fileSize[i]!,
      linkname: this.linknames.get(i) ?? "",
      chunks: Array.from(this.refs.subarray(this.refStart[i]!, this.refStart[i + 1]!)),
    };
  }
  chunk(k: number): ChunkRef {
    return {
      hash: this.hashHex(k),
      pack: this.pack[k]!,
      offset: this.offset[k]!,
      stored: this.stored[k]!,
      size: this.size[k]!,
    };
  }
  hashHex(k: number): string {
    return Buffer.from(this.hashes.buffer, this.hashes.byteOffset + k * 32, 32).toString("hex");
  }
  /** The entry whose path is `bytes[start, end)`, or -1. */
  find(bytes: Uint8Array, start: number, end: number): number {
    const table = this.table;
    if (table.length === 0) return -1;
    const mask = table.length - 1;
    for (let at = pathHash(bytes, start, end) & mask; ; at = (at + 1) & mask) {
      const slot = table[at]!;
      if (slot === 0) return -1;
      if (this.samePath(slot - 1, bytes, start, end)) return slot - 1;
    }
  }

  private samePath(i: number, bytes: Uint8Array, start: number, end: number): boolean {
    const s = this.pathStart[i]!;
    if (this.pathStart[i + 1]! - s !== end - start) return false;
    const p = this.pathBytes;
    for (let n = 0; n < end - start; n++) if (p[s + n] !== bytes[start + n]) return false;
    return true;
  }

  /** Room in the table for `n` paths without growing it. */
  reserve(n: number): void {
    let size = 1024;
    while (size < 2 * n) size *= 2;
    if (size > this.table.length) this.table = new Int32Array(size);
  }
  /** Add entry `i`'s path to the table; false when another entry has the same path. */
  addPath(i: number, hash?: number): boolean {
    if (2 * (i + 1) > this.table.length) {
      const old = this.table;
      this.table = new Int32Array(Math.max(1024, old.length * 2));
      for (const slot of old) if (slot !== 0) this.place(slot - 1);
    }
    return this.place(i, hash);
  }
  /** `hash`: the path's `pathHash`, when the caller has it. */
  private place(i: number, hash?: number): boolean {
    const s = this.pathStart[i]!;
    const e = this.pathStart[i + 1]!;
    const mask = this.table.length - 1;
    for (let at = (hash ?? pathHash(this.pathBytes, s, e)) & mask; ; at = (at + 1) & mask) {
      const slot = this.table[at]!;
      if (slot === 0) {
        this.table[at] = i + 1;
        return true;
      }
      if (this.samePath(slot - 1, this.pathBytes, s, e)) return false;
    }
  }
}

const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

/** FNV-1a over the bytes. */
function pathHash(b: Uint8Array, start: number, end: number): number {
  let h = FNV_OFFSET;
  for (let i = start; i < end; i++) h = Math.imul(h ^ b[i]!, FNV_PRIME);
  return h >>> 0;
}

/** Parse and check an index from its inflated bytes (see the header; `parseIndex` is the reference). */
export function parseCompactIndex(b: Uint8Array, limits: { maxEntries: number; maxBytes: number }): CompactIndex {
  const notJson = (err: unknown): never => {
    throw new DeltaError(`index: not JSON (${(err as Error).message})`);
  };
  const bad: (what: string) => never = (what) => {
    throw new DeltaError(`index: ${what}`);
  };
  const spanEnd = (start: number) => {
    try {
      return valueEnd(b, start);
    } catch (err) {
      return notJson(err);
    }
  };
  const json = (start: number, end: number) => {
    try {
      return JSON.parse(decoder.decode(b.subarray(start, end)));
    } catch (err) {
      return notJson(err);
    }
  };
  let top: Map<string, [number, number]>;
  try {
    top = members(b, json);
  } catch (err) {
    if (err instanceof DeltaError) throw err;
    return notJson(err);
  }
  const member = (key: string) => {
    const span = top.get(key);
    return span === undefined ? undefined : json(span[0], span[1]);
  };
  const head = indexHead(member, bad);
  const ix = new CompactIndex();
  ix.tar = { sha256: head.tar.sha256, size: head.tar.size };
  ix.archiveSize = head.archiveSize;
  ix.packs = head.packs;
  const packCount = ix.packs.length;

  // chunks
  const chunkSpan = top.get("chunks");
  if (chunkSpan === undefined || b[chunkSpan[0]] !== 0x5b) bad("chunks: expected a list");
  // Each chunk is at least `["<64>",0,0,0,1]` (75 bytes): arrays of that many, trimmed after.
  let cap = Math.ceil((chunkSpan![1] - chunkSpan![0]) / 75) + 1;
  let hashes = new Uint8Array(32 * cap);
  let pack = new Int32Array(cap);
  let offset = new Float64Array(cap);
  let stored = new Int32Array(cap);
  let size = new Int32Array(cap);
  let nChunks = 0;
  const num = new Float64Array(8);
  forElements(b, chunkSpan![0], notJson, (start, i) => {
    if (i >= cap) {
      // Not reached for JSON (each element is at least 75 bytes); kept for safety.
      cap *= 2;
      hashes = grow(hashes, 32 * cap);
      pack = grow(pack, cap);
      offset = grow(offset, cap);
      stored = grow(stored, cap);
      size = grow(size, cap);
    }
    const fast = fastChunk(b, start, hashes, 32 * i, num);
    if (fast !== -1) {
      const z = num[3]!;
      if (num[0]! < packCount && z > 0 && z <= MAX_CHUNK && num[2]! <= MAX_CHUNK + 1024) {
        pack[i] = num[0]!;
        offset[i] = num[1]!;
        stored[i] = num[2]!;
        size[i] = z;
        nChunks = i + 1;
        return fast;
      }
    }
    const end = spanEnd(start);
    const c: unknown = json(start, end);
    if (!Array.isArray(c) || c.length !== 5) bad(`chunks[${i}]: expected [hash, pack, offset, stored, size]`);
    const [hash, p, o, s, z] = c as unknown[] as [string, number, number, number, number];
    if (typeof hash !== "string" || !HEX64.test(hash)) bad(`chunks[${i}]: bad hash`);
    if (!isCount(p) || p >= packCount) bad(`chunks[${i}]: no pack ${p}`);
    if (!isCount(o) || !isCount(s) || !isCount(z) || z === 0 || z > MAX_CHUNK || s > MAX_CHUNK + 1024)
      bad(`chunks[${i}]: bad offset or size`);
    hashes.set(Buffer.from(hash, "hex"), 32 * i);
    pack[i] = p;
    offset[i] = o;
    stored[i] = s;
    size[i] = z;
    nChunks = i + 1;
    return end;
  });
  ix.chunkCount = nChunks;
  ix.hashes = hashes.slice(0, 32 * nChunks);
  ix.pack = pack.slice(0, nChunks);
  ix.offset = offset.slice(0, nChunks);
  ix.stored = stored.slice(0, nChunks);
  ix.size = size.slice(0, nChunks);

  // entries
  const entrySpan = top.get("entries");
  if (entrySpan === undefined || b[entrySpan[0]] !== 0x5b) bad("entries: expected a list");
  // Each entry is at least `["a","d",0,0]` (14 bytes).
  const entryCap = Math.min(Math.ceil((entrySpan![1] - entrySpan![0]) / 14) + 1, limits.maxEntries + 1);
  const kind = new Uint8Array(entryCap);
  const mode = new Uint16Array(entryCap);
  const mtime = new Float64Array(entryCap);
  const fileSize = new Float64Array(entryCap);
  const pathStart = new Int32Array(entryCap + 1);
  const refStart = new Int32Array(entryCap + 1);
  let pathBytes = new Uint8Array(Math.max(1024, (entrySpan![1] - entrySpan![0]) >> 1));
  let pathEnd = 0;
  let refs = new Int32Array(Math.max(1024, nChunks));
  let refEnd = 0;
  let bytes = 0;
  let nEntries = 0;
  ix.kind = kind;
  ix.mode = mode;
  ix.mtime = mtime;
  ix.fileSize = fileSize;
  ix.pathStart = pathStart;
  ix.refStart = refStart;
  // publish's entries are ~70 bytes each: the table sized for that many, grown if there are more.
  ix.reserve(Math.min(entryCap, Math.ceil((entrySpan![1] - entrySpan![0]) / 64)));
  const putPath = (from: Uint8Array, start: number, end: number) => {
    if (pathEnd + end - start > pathBytes.length) {
      pathBytes = grow(pathBytes, Math.max(2 * pathBytes.length, pathEnd + end - start));
      ix.pathBytes = pathBytes;
    }
    pathBytes.set(from.subarray(start, end), pathEnd);
    pathEnd += end - start;
  };
  const putRef = (k: number) => {
    if (refEnd === refs.length) refs = grow(refs, 2 * refs.length);
    refs[refEnd++] = k;
  };
  ix.pathBytes = pathBytes;
  forElements(b, entrySpan![0], notJson, (start, i) => {
    if (i >= limits.maxEntries) bad(`more than ${limits.maxEntries} entries, the limit`);
    const pathAt = pathEnd;
    const refAt = refEnd;
    let end = fastEntry(i, start);
    if (end === -1) {
      pathEnd = pathAt;
      refEnd = refAt;
      end = spanEnd(start);
      slowEntry(json(start, end), i);
    }
    nEntries = i + 1;
    return end;
  });
  // Sized for the most entries the span can hold: trimmed to the entries read.
  ix.count = nEntries;
  ix.kind = kind.slice(0, nEntries);
  ix.mode = mode.slice(0, nEntries);
  ix.mtime = mtime.slice(0, nEntries);
  ix.fileSize = fileSize.slice(0, nEntries);
  ix.pathStart = pathStart.slice(0, nEntries + 1);
  ix.refStart = refStart.slice(0, nEntries + 1);
  ix.refs = refs.slice(0, refEnd);
  ix.pathBytes = pathBytes.slice(0, pathEnd);
  return ix;

  /**
   * An element in publish's exact shape that passes every check, read from the bytes: where it ends;
   * -1: not that shape (or a check fails), for `slowEntry`.
   */
  function fastEntry(i: number, start: number): number {
    const n = b.length;
    if (b[start] !== 0x5b || b[start + 1] !== 0x22) return -1;
    // The path in one pass: printable ASCII without `\\`, copied, hashed, and each component checked
    // (not empty, `.` or `..`: `canonical`). Longer than the room left: the slow path grows it.
    let at = start + 2;
    let w = pathEnd;
    const room = pathBytes.length;
    let h = FNV_OFFSET;
    let component = w;
    for (; ; at++) {
      const c = b[at];
      if (c === 0x22 || c === 0x2f) {
        const len = w - component;
        if (
          len === 0 ||
          (pathBytes[component] === 0x2e && (len === 1 || (len === 2 && pathBytes[component + 1] === 0x2e)))
        )
          return -1;
        if (c === 0x22) break;
        component = w + 1;
      } else if (c === undefined || c < 0x20 || c > 0x7e || c === 0x5c) return -1;
      if (w === room) return -1;
      pathBytes[w++] = c;
      h = Math.imul(h ^ c, FNV_PRIME);
    }
    if (b[at + 1] !== 0x2c || b[at + 2] !== 0x22 || b[at + 4] !== 0x22 || b[at + 5] !== 0x2c) return -1;
    const t = b[at + 3];
    at = readInt(b, at + 6, num, 0);
    if (at < 0 || b[at] !== 0x2c) return -1;
    at = readInt(b, at + 1, num, 1);
    if (at < 0) return -1;
    const m = num[0]!;
    if (m > 0o7777) return -1;
    pathStart[i] = pathEnd;
    pathEnd = w;
    pathStart[i + 1] = pathEnd;
    refStart[i] = refEnd;
    let fsize = 0;
    if (t === 0x64 /* d */) {
      if (b[at++] !== 0x5d) return -1;
      kind[i] = DIR;
    } else if (t === 0x6c /* l */) {
      if (b[at] !== 0x2c || b[at + 1] !== 0x22) return -1;
      at += 2;
      const l0 = at;
      for (; at < n; at++) {
        const c = b[at]!;
        if (c === 0x22) break;
        if (c < 0x20 || c > 0x7e || c === 0x5c) return -1;
      }
      if (at === l0 || b[at + 1] !== 0x5d) return -1;
      ix.linknames.set(i, decoder.decode(b.subarray(l0, at)));
      at += 2;
      kind[i] = SYMLINK;
    } else if (t === 0x66 /* f */) {
      if (b[at] !== 0x2c) return -1;
      at = readInt(b, at + 1, num, 2);
      if (at < 0 || b[at] !== 0x2c || b[at + 1] !== 0x5b) return -1;
      at += 2;
      let sum = 0;
      if (b[at] === 0x5d) at++;
      else
        for (;;) {
          at = readInt(b, at, num, 3);
          if (at < 0) return -1;
          const k = num[3]!;
          if (k >= nChunks) return -1;
          putRef(k);
          sum += size[k]!;
          const c = b[at++];
          if (c === 0x5d) break;
          if (c !== 0x2c) return -1;
        }
      if (b[at++] !== 0x5d) return -1;
      fsize = num[2]!;
      if (sum !== fsize || bytes + fsize > limits.maxBytes) return -1;
      kind[i] = FILE;
    } else return -1;
    // Last: a path in the table is taken.
    if (!ix.addPath(i, h >>> 0)) {
      ix.linknames.delete(i);
      return -1;
    }
    bytes += fsize;
    fileSize[i] = fsize;
    refStart[i + 1] = refEnd;
    mode[i] = m;
    mtime[i] = num[1]!;
    return at;
  }

  /** `parseIndex`'s `entry`, into the arrays. */
  function slowEntry(e: unknown, i: number): void {
    if (!Array.isArray(e) || typeof e[0] !== "string" || !isCount(e[2]) || e[2] > 0o7777 || !Number.isSafeInteger(e[3]))
      bad(`entries[${i}]: expected [path, type, mode, mtime, …]`);
    const [path, type, m, t] = e as [string, string, number, number];
    if (!canonical(path)) {
      let rel: string | null;
      try {
        rel = safeRelative(path);
      } catch (err) {
        bad(`entries[${i}]: ${(err as ExtractError).message}`);
      }
      if (rel !== path) bad(`entries[${i}]: path ${JSON.stringify(path)} is not in canonical form`);
    }
    const utf8 = encoder.encode(path);
    pathStart[i] = pathEnd;
    putPath(utf8, 0, utf8.length);
    pathStart[i + 1] = pathEnd;
    if (!ix.addPath(i)) bad(`entries[${i}]: ${path} is listed twice`);
    mode[i] = m;
    mtime[i] = t;
    fileSize[i] = 0;
    refStart[i] = refStart[i + 1] = refEnd;
    if (type === "d" && e.length === 4) {
      kind[i] = DIR;
      return;
    }
    if (type === "l" && e.length === 5 && typeof e[4] === "string" && e[4] !== "" && !e[4].includes("\0")) {
      kind[i] = SYMLINK;
      ix.linknames.set(i, e[4]);
      return;
    }
    if (type === "f" && e.length === 6 && isCount(e[4]) && Array.isArray(e[5])) {
      const fsize = e[4] as number;
      let sum = 0;
      for (const r of e[5] as unknown[]) {
        if (!isCount(r) || r >= nChunks) bad(`entries[${i}]: no chunk ${String(r)}`);
        putRef(r as number);
        sum += size[r as number]!;
      }
      if (sum !== fsize) bad(`entries[${i}] ${path}: chunks add up to ${sum} bytes, not ${fsize}`);
      bytes += fsize;
      if (bytes > limits.maxBytes) bad(`files add up to more than the limit of ${limits.maxBytes} bytes`);
      kind[i] = FILE;
      fileSize[i] = fsize;
      refStart[i + 1] = refEnd;
      return;
    }
    bad(`entries[${i}] ${path}: malformed ${JSON.stringify(type)} entry`);
  }
}

function grow<T extends Uint8Array | Int32Array | Float64Array>(a: T, length: number): T {
  const out = new (a.constructor as new (n: number) => T)(length);
  out.set(a);
  return out;
}

/**
 * A plain non-negative integer (no sign, fraction, exponent or leading zero; at most 15 digits, so
 * exact) at `b[at]`, stored in `out[slot]`: where it ends, or -1.
 */
function readInt(b: Uint8Array, at: number, out: Float64Array, slot: number): number {
  let v = 0;
  const start = at;
  for (; at < b.length; at++) {
    const d = b[at]! - 0x30;
    if (d < 0 || d > 9) break;
    v = v * 10 + d;
  }
  const n = at - start;
  if (n === 0 || n > 15 || (n > 1 && b[start] === 0x30)) return -1;
  out[slot] = v;
  return at;
}

/**
 * `["<64 lowercase hex>",p,o,s,z]` exactly: the hash into `hashes` at `h`, the numbers into `num`;
 * where it ends, or -1.
 */
function fastChunk(b: Uint8Array, start: number, hashes: Uint8Array, h: number, num: Float64Array): number {
  if (b[start] !== 0x5b || b[start + 1] !== 0x22 || b[start + 66] !== 0x22 || b[start + 67] !== 0x2c) return -1;
  for (let j = 0, at = start + 2; j < 32; j++, at += 2) {
    const hi = HEX[b[at]!]!;
    const lo = HEX[b[at + 1]!]!;
    if ((hi | lo) < 0) return -1;
    hashes[h + j] = (hi << 4) | lo;
  }
  let at = start + 68;
  for (let n = 0; n < 4; n++) {
    at = readInt(b, at, num, n);
    if (at < 0 || b[at] !== (n === 3 ? 0x5d : 0x2c)) return -1;
    at++;
  }
  return at;
}

/** Lower-case hex digits' values by byte, -1 for any other byte. */
const HEX = new Int8Array(256).fill(-1);
for (let c = 0; c < 16; c++) HEX["0123456789abcdef".charCodeAt(c)] = c;

/** `format.ts`'s `canonical`, for the paths `JSON.parse` read. */
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

const isWs = (c: number | undefined) => c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;

function skipWs(b: Uint8Array, i: number): number {
  while (i < b.length && isWs(b[i])) i++;
  return i;
}

/** `format.ts`'s `valueEnd` on the bytes (a string's bytes past 0x7f are never structure). */
function valueEnd(b: Uint8Array, i: number): number {
  const c = b[i];
  if (c === 0x22) {
    for (let j = i + 1; j < b.length; j++) {
      const d = b[j];
      if (d === 0x5c) j++;
      else if (d === 0x22) return j + 1;
    }
    throw new Error("unterminated string");
  }
  if (c === 0x5b || c === 0x7b) {
    let depth = 0;
    for (let j = i; j < b.length; j++) {
      let d = b[j];
      if (d === 0x22) {
        // A string, skipped here (not by a call per string: the arrays hold tens of thousands).
        for (j++; ; j++) {
          if (j >= b.length) throw new Error("unterminated string");
          d = b[j];
          if (d === 0x5c) j++;
          else if (d === 0x22) break;
        }
      } else if (d === 0x5b || d === 0x7b) depth++;
      else if ((d === 0x5d || d === 0x7d) && --depth === 0) return j + 1;
    }
    throw new Error("unterminated array or object");
  }
  let j = i;
  for (; j < b.length; j++) {
    const d = b[j];
    if (isWs(d) || d === 0x2c || d === 0x5d || d === 0x7d) break;
  }
  if (j === i)
    throw new Error(`unexpected ${JSON.stringify(c === undefined ? "end" : String.fromCharCode(c))} at ${i}`);
  return j;
}

/** The top-level object's members as spans; a key given twice is refused. */
function members(b: Uint8Array, json: (start: number, end: number) => unknown): Map<string, [number, number]> {
  const out = new Map<string, [number, number]>();
  let i = skipWs(b, 0);
  if (b[i] !== 0x7b) throw new Error("expected an object");
  i = skipWs(b, i + 1);
  if (b[i] === 0x7d) i++;
  else
    for (;;) {
      if (b[i] !== 0x22) throw new Error(`expected a key at ${i}`);
      const keyEnd = valueEnd(b, i);
      const key = json(i, keyEnd) as string;
      if (out.has(key)) throw new Error(`${JSON.stringify(key)} given twice`);
      i = skipWs(b, keyEnd);
      if (b[i] !== 0x3a) throw new Error(`expected ':' at ${i}`);
      i = skipWs(b, i + 1);
      const end = valueEnd(b, i);
      out.set(key, [i, end]);
      i = skipWs(b, end);
      const c = b[i++];
      if (c === 0x7d) break;
      if (c !== 0x2c) throw new Error(`expected ',' or '}' at ${i - 1}`);
      i = skipWs(b, i);
    }
  if (skipWs(b, i) !== b.length) throw new Error(`unexpected text after the object at ${i}`);
  return out;
}

/** Call `each` with the start and position of every element of the array starting at `b[i]`; it returns the end. */
function forElements(
  b: Uint8Array,
  i: number,
  fail: (err: unknown) => never,
  each: (start: number, n: number) => number,
): void {
  i = skipWs(b, i + 1);
  if (b[i] === 0x5d) return;
  for (let n = 0; ; n++) {
    i = skipWs(b, each(i, n));
    const c = b[i];
    if (c === 0x5d) return;
    if (c !== 0x2c) fail(new Error(`expected ',' or ']' at ${i}`));
    i = skipWs(b, i + 1);
  }
}
