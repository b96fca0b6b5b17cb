/**
 * Publish's chunk bookkeeping in typed arrays: chunks by binary sha256 (an open-addressing table)
 * with where each is stored, and what the store already holds, read from its newest index without
 * building that index's objects. A 20,000-file release is tens of thousands of chunks: as objects,
 * strings and maps they were most of a delta publish's memory.
 */

const HASH = 32;

/** Chunks in the order they were added: binary sha256, pack (an index the caller defines), offset, stored, size. */
export class ChunkTable {
  count = 0;
  hashes: Uint8Array;
  pack: Int32Array;
  offset: Float64Array;
  stored: Int32Array;
  size: Int32Array;
  private slots: Int32Array;

  constructor(capacity = 1024) {
    this.hashes = new Uint8Array(capacity * HASH);
    this.pack = new Int32Array(capacity);
    this.offset = new Float64Array(capacity);
    this.stored = new Int32Array(capacity);
    this.size = new Int32Array(capacity);
    this.slots = new Int32Array(capacity * 2);
  }

  /** The chunk whose sha256 is `hash[at..at+32)`, or -1. */
  find(hash: Uint8Array, at = 0): number {
    const mask = this.slots.length - 1;
    for (let s = key(hash, at) & mask; ; s = (s + 1) & mask) {
      const v = this.slots[s]!;
      if (v === 0) return -1;
      if (this.same(v - 1, hash, at)) return v - 1;
    }
  }

  /** Add a chunk (not already in the table); returns its number. */
  add(hash: Uint8Array, at: number, pack: number, offset: number, stored: number, size: number): number {
    if (this.count === this.pack.length) this.grow();
    const i = this.count++;
    this.hashes.set(hash.subarray(at, at + HASH), i * HASH);
    this.pack[i] = pack;
    this.offset[i] = offset;
    this.stored[i] = stored;
    this.size[i] = size;
    this.place(i);
    return i;
  }

  clear(): void {
    this.count = 0;
    this.slots.fill(0);
  }

  hex(i: number): string {
    return Buffer.from(this.hashes.buffer, this.hashes.byteOffset + i * HASH, HASH).toString("hex");
  }

  private same(i: number, hash: Uint8Array, at: number): boolean {
    const h = this.hashes;
    const base = i * HASH;
    for (let k = 0; k < HASH; k++) if (h[base + k] !== hash[at + k]) return false;
    return true;
  }

  private place(i: number): void {
    const mask = this.slots.length - 1;
    let s = key(this.hashes, i * HASH) & mask;
    while (this.slots[s] !== 0) s = (s + 1) & mask;
    this.slots[s] = i + 1;
  }

  private grow(): void {
    const cap = this.pack.length * 2;
    this.hashes = copyInto(new Uint8Array(cap * HASH), this.hashes);
    this.pack = copyInto(new Int32Array(cap), this.pack);
    this.offset = copyInto(new Float64Array(cap), this.offset);
    this.stored = copyInto(new Int32Array(cap), this.stored);
    this.size = copyInto(new Int32Array(cap), this.size);
    (this.slots.buffer as ArrayBuffer).transfer(0);
    this.slots = new Int32Array(cap * 2);
    for (let i = 0; i < this.count; i++) this.place(i);
  }
}

/** A sha256 is uniformly distributed: its first four bytes are a good slot. */
function key(h: Uint8Array, at: number): number {
  return (h[at]! | (h[at + 1]! << 8) | (h[at + 2]! << 16) | (h[at + 3]! << 24)) >>> 0;
}

/** Copy `from` into the larger `to`, and free `from` at once (it is garbage). */
function copyInto<T extends Uint8Array | Int32Array | Float64Array>(to: T, from: T): T {
  to.set(from);
  (from.buffer as ArrayBuffer).transfer(0);
  return to;
}

/** A growable list of int32. */
export class IntList {
  length = 0;
  items = new Int32Array(1024);

  push(v: number): void {
    if (this.length === this.items.length) this.items = copyInto(new Int32Array(this.items.length * 2), this.items);
    this.items[this.length++] = v;
  }
}

/**
 * The `packs` and `chunks` of an index's JSON as `encodeIndex` writes it (compact, packs before
 * chunks), into `table` with each chunk's pack as a position in the returned names. Anything else
 * throws: publish then stores every chunk anew, which costs bytes, never correctness (agents check
 * every chunk's sha256).
 */
export function readStoredChunks(json: Uint8Array, table: ChunkTable): string[] {
  const text = (from: number, to: number) => Buffer.from(json.buffer, json.byteOffset + from, to - from).toString();
  const find = (what: string) => {
    const at = Buffer.from(json.buffer, json.byteOffset, json.byteLength).indexOf(what);
    if (at < 0) throw new Error(`no ${what}`);
    return at + what.length;
  };
  const packsAt = find('"packs":[') - 1;
  const packsEnd = json.indexOf(0x5d, packsAt);
  const packs: unknown = JSON.parse(text(packsAt, packsEnd + 1));
  if (!Array.isArray(packs) || !packs.every((p) => typeof p === "string" && /^[0-9a-f]{64}$/.test(p)))
    throw new Error("packs: expected sha256 names");
  let p = find('"chunks":[');
  const expect = (c: number) => {
    if (json[p] !== c) throw new Error(`chunks: unexpected byte at ${p}`);
    p++;
  };
  const count = () => {
    let n = 0;
    const start = p;
    while (json[p]! >= 0x30 && json[p]! <= 0x39) n = n * 10 + json[p++]! - 0x30;
    if (p === start || p - start > 15) throw new Error(`chunks: bad number at ${start}`);
    return n;
  };
  const hash = new Uint8Array(HASH);
  if (json[p] === 0x5d) return packs as string[];
  for (;;) {
    expect(0x5b);
    expect(0x22);
    for (let k = 0; k < HASH; k++) hash[k] = (nibble(json[p++]!) << 4) | nibble(json[p++]!);
    expect(0x22);
    expect(0x2c);
    const pack = count();
    expect(0x2c);
    const offset = count();
    expect(0x2c);
    const stored = count();
    expect(0x2c);
    const size = count();
    expect(0x5d);
    if (pack >= packs.length) throw new Error(`chunks: no pack ${pack}`);
    if (table.find(hash) < 0) table.add(hash, 0, pack, offset, stored, size);
    if (json[p] === 0x5d) return packs as string[];
    expect(0x2c);
  }
}

function nibble(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  throw new Error("chunks: bad hash");
}
