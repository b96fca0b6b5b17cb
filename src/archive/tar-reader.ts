/**
 * Tar framing: bytes in, entries out. A state machine that cuts the stream into 512-byte headers and
 * entry data, reads meta entries (pax `x`/`g`, GNU `L`/`K`) whole into the next entry's header, and
 * hands each real entry to its sink: `entry(header)`, then the file's data in pieces, then `finish()`.
 * It touches no file. It enforces the limits that do not depend on the file system: entries (meta
 * entries and the directories the sink reports it had to imply count too), declared bytes, meta
 * entries capped at `MAX_META_SIZE` before a byte of them is held, and bytes after the end marker.
 */
import { ExtractError } from "../errors.ts";
import { dfgOnly } from "../jit.ts";
import {
  BLOCK,
  checksumOk,
  FIELD,
  field,
  longName,
  MAX_META_SIZE,
  META_KIND,
  numeric,
  type Overrides,
  pad,
  parseHeader,
  parsePax,
  printable,
  type TarHeader,
  typeOf,
} from "./tar-header.ts";
import type { ExtractLimits } from "./limits.ts";

/** Bytes tolerated after the end-of-archive marker: padding to a record (GNU tar's largest is 1 MiB). */
const MAX_TRAILING = 16 * 2 ** 20;

/** Where the entries go. A throw from it stops the stream. */
export interface EntrySink {
  /** A header (not a meta entry). A file's `size` bytes of data follow; other types' data is skipped. */
  entry(h: TarHeader): void;
  /** The next piece of the current file's data. */
  data(bytes: Uint8Array): void;
  /** The current file's data is complete (right after `entry` for every other type, and empty files). */
  finish(h: TarHeader): void;
}

export class TarReader {
  private buf = new Uint8Array(BLOCK);
  private bufLen = 0;
  /** Bytes left in the current entry's data (excluding padding). */
  private remaining = 0;
  private padding = 0;
  /** The current entry (a meta entry while one is read). */
  entry: TarHeader | null = null;
  /** Collected data of a meta entry (pax or GNU long name). */
  private meta: Uint8Array[] | null = null;
  private pax: Overrides = {};
  private longName: string | null = null;
  private longLink: string | null = null;
  /** Meta entries (pax, long names): they count against `maxEntries` too. */
  private metaEntries = 0;
  /** Directories the sink made that the archive implies but does not list. */
  private impliedDirs = 0;
  private zeroBlocks = 0;
  private done = false;
  private trailing = 0;
  /** Entries other than meta entries. */
  entries = 0;
  /** Bytes declared by all entries, meta entries included. */
  bytes = 0;

  constructor(
    private readonly limits: ExtractLimits,
    private readonly sink: EntrySink,
  ) {}

  write(chunk: Uint8Array): void {
    let off = 0;
    while (off < chunk.length && !this.done) {
      if (this.remaining > 0) {
        const n = Math.min(this.remaining, chunk.length - off);
        this.data(chunk.subarray(off, off + n));
        this.remaining -= n;
        off += n;
        if (this.remaining === 0) this.finishEntry();
        continue;
      }
      if (this.padding > 0) {
        const n = Math.min(this.padding, chunk.length - off);
        this.padding -= n;
        off += n;
        continue;
      }
      // Accumulate one header block.
      const n = Math.min(BLOCK - this.bufLen, chunk.length - off);
      this.buf.set(chunk.subarray(off, off + n), this.bufLen);
      this.bufLen += n;
      off += n;
      if (this.bufLen === BLOCK) {
        this.bufLen = 0;
        this.header(this.buf);
      }
    }
    // After the end marker the bytes are ignored (as tar does), but not without bound: else a gzip
    // stream of zeros after it would be inflated for as long as it lasts, counted by no limit.
    if (this.done && off < chunk.length) {
      this.trailing += chunk.length - off;
      if (this.trailing > MAX_TRAILING)
        throw new ExtractError(
          `more than ${MAX_TRAILING} bytes after the end-of-archive marker (concatenated archives are not supported)`,
          this.entry?.name,
        );
    }
  }

  /** The stream ended: a partial entry means a truncated archive. */
  end(): void {
    if (this.remaining > 0 || this.bufLen > 0 || this.meta !== null) {
      const name = this.entry?.name ?? this.longName ?? "(header)";
      throw new ExtractError("truncated archive: stream ended inside entry", name);
    }
  }

  /** The sink made `n` directories the archive implies for `name`: they count as entries. */
  countImplied(n: number, name: string): void {
    this.impliedDirs += n;
    this.countEntry(name);
  }

  private header(block: Uint8Array): void {
    if (isZeroBlock(block)) {
      if (++this.zeroBlocks >= 2) this.done = true;
      return;
    }
    this.zeroBlocks = 0;
    if (!checksumOk(block))
      throw new ExtractError("corrupt archive: bad tar header checksum after entry", this.entry?.name ?? "(start)");
    const type = typeOf(block[FIELD.type[0]]!);
    if (type === "x" || type === "g" || type === "L" || type === "K") {
      // Held in memory until its end: refused at the cap before a byte of it is buffered.
      const label = printable(field(block, ...FIELD.name));
      this.metaEntries++;
      this.countEntry(label);
      const size = numeric(block, ...FIELD.size, "size", label);
      if (size > MAX_META_SIZE)
        throw new ExtractError(
          `${META_KIND[type]} of ${size} bytes is larger than the ${MAX_META_SIZE}-byte limit`,
          label,
        );
      this.countBytes(size, label);
      this.entry = { name: label, mode: 0, uid: 0, gid: 0, size, mtime: 0, type, linkname: "" };
      this.meta = [];
      this.remaining = size;
      this.padding = pad(size);
      if (size === 0) this.finishEntry();
      return;
    }
    // Overrides from preceding pax / GNU long-name entries; a GNU long name wins over pax.
    const over: Overrides = { ...this.pax };
    if (this.longName !== null) over.path = this.longName;
    if (this.longLink !== null) over.linkpath = this.longLink;
    this.pax = {};
    this.longName = null;
    this.longLink = null;
    const h = parseHeader(block, over);
    this.entry = h;
    this.countBytes(h.size, h.name);
    this.entries++;
    this.countEntry(h.name);
    this.sink.entry(h);
    this.remaining = h.type === "0" ? h.size : 0;
    this.padding = pad(h.size);
    // Data of non-file entries (rare) is skipped as padding.
    if (h.type !== "0") this.padding = pad(h.size) + h.size;
    if (this.remaining === 0) this.finishEntry();
  }

  private countEntry(name: string): void {
    if (this.entries + this.metaEntries + this.impliedDirs > this.limits.maxEntries) {
      const meta = this.metaEntries > 0 ? `, counting ${this.metaEntries} pax and long-name headers` : "";
      const implied = this.impliedDirs > 0 ? `, counting ${this.impliedDirs} directories the archive implies` : "";
      throw new ExtractError(`too many entries (limit ${this.limits.maxEntries}${meta}${implied})`, name);
    }
  }

  /** Every entry's declared size counts, whatever its type: nothing streams past `maxBytes`. */
  private countBytes(size: number, name: string): void {
    this.bytes += size;
    if (this.bytes > this.limits.maxBytes)
      throw new ExtractError(`archive expands beyond ${this.limits.maxBytes} bytes`, name);
  }

  private data(bytes: Uint8Array): void {
    if (this.meta !== null) this.meta.push(bytes.slice());
    else this.sink.data(bytes);
  }

  private finishEntry(): void {
    const h = this.entry!;
    if (this.meta === null) {
      this.sink.finish(h);
      return;
    }
    const bytes = Buffer.concat(this.meta);
    this.meta = null;
    // "g": global pax headers carry nothing we use, but are held to the same framing.
    if (h.type === "x" || h.type === "g") {
      const pax = parsePax(bytes, h.name);
      if (h.type === "x") this.pax = pax;
    } else {
      const name = longName(bytes, h.name);
      if (h.type === "L") this.longName = name;
      else this.longLink = name;
    }
  }
}

/** The end-of-archive marker's block: every byte zero (a header's first byte, its name, seldom is). */
function isZeroBlock(block: Uint8Array): boolean {
  for (let i = 0; i < block.length; i++) if (block[i] !== 0) return false;
  return true;
}

dfgOnly(TarReader, isZeroBlock);
