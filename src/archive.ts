/**
 * Streaming tar extraction into a fresh directory, guarded like go-getter: entries with `..`,
 * absolute paths, paths through a symlink of the archive, hard links out of the tree, device files
 * and more than `maxEntries` entries are refused, naming the entry. Bytes are written as they arrive
 * (no copy of the archive), with synchronous writes so that memory stays flat.
 *
 * Formats: ustar, GNU (long names `L`/`K`, base-256 sizes) and pax (`x`, `g`) headers; gzip or plain.
 */
import * as fs from "node:fs";
import { join } from "node:path";
import { ExtractError } from "./errors.ts";

export interface ExtractLimits {
  /** Refuse archives with more entries than this (a tar bomb). */
  maxEntries: number;
  /** Refuse archives whose files add up to more bytes than this. */
  maxBytes: number;
}

export const DEFAULT_LIMITS: ExtractLimits = { maxEntries: 1_000_000, maxBytes: 64 * 2 ** 30 };

interface Header {
  name: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  type: string;
  linkname: string;
}

const BLOCK = 512;
const decoder = new TextDecoder();

/** Feed it the decompressed tar stream with `write`, then `end`. Throws `ExtractError`. */
export class TarExtractor {
  private buf = new Uint8Array(BLOCK);
  private bufLen = 0;
  /** Bytes left in the current entry's data (excluding padding). */
  private remaining = 0;
  private padding = 0;
  private fd: number | null = null;
  private entry: Header | null = null;
  /** Collected data of a meta entry (pax or GNU long name). */
  private meta: Uint8Array[] | null = null;
  private pax: Record<string, string> = {};
  private longName: string | null = null;
  private longLink: string | null = null;
  private symlinks = new Set<string>();
  private dirs: { path: string; mode: number; mtime: number }[] = [];
  private zeroBlocks = 0;
  private done = false;
  private readonly chown: boolean;
  /** The owner every new entry gets anyway; unknown (chown everything) under a setgid root. */
  private readonly newOwner: { uid: number; gid: number } | undefined;
  /** The open file was made by this entry (not an earlier entry of the same name, truncated). */
  private fresh = true;
  entries = 0;
  bytes = 0;

  /** Files hard-linked from `linkFrom` instead of written. */
  linked = 0;

  /**
   * @param linkFrom a previous release: a regular file whose size, mtime and mode match is hard-linked
   *   from it instead of written again (as `rsync --link-dest` does).
   */
  constructor(
    private readonly root: string,
    private readonly limits: ExtractLimits = DEFAULT_LIMITS,
    private readonly linkFrom?: string,
  ) {
    this.chown = typeof process.getuid === "function" && process.getuid() === 0;
    this.newOwner = this.chown ? newOwnerUnder(root) : undefined;
    this.umask = process.umask();
  }
  private readonly umask: number;

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
  }

  /** The stream ended: a partial entry means a truncated archive. Sets directory modes and times. */
  end(): void {
    if (this.remaining > 0 || this.bufLen > 0 || this.meta !== null) {
      const name = this.entry?.name ?? this.longName ?? "(header)";
      this.abort();
      throw new ExtractError("truncated archive: stream ended inside entry", name);
    }
    // Deepest first so that setting a parent's mtime is not undone by its children.
    for (const d of this.dirs.reverse()) {
      fs.chmodSync(d.path, d.mode);
      fs.utimesSync(d.path, d.mtime, d.mtime);
    }
  }

  /** Close any open file; used on every failure path. */
  abort(): void {
    if (this.fd !== null) {
      fs.closeSync(this.fd);
      this.fd = null;
    }
    if (this.compare !== null) {
      fs.closeSync(this.compare.prevFd);
      this.compare = null;
    }
  }

  private header(block: Uint8Array): void {
    if (block.every((b) => b === 0)) {
      if (++this.zeroBlocks >= 2) this.done = true;
      return;
    }
    this.zeroBlocks = 0;
    const h = parseHeader(block);
    if (h === null) throw new ExtractError("corrupt archive: bad tar header checksum after entry", this.entry?.name ?? "(start)");
    if (h.type === "x" || h.type === "g" || h.type === "L" || h.type === "K") {
      this.entry = h;
      this.meta = [];
      this.remaining = h.size;
      this.padding = pad(h.size);
      if (h.size === 0) this.finishEntry();
      return;
    }
    // Apply overrides from preceding pax / GNU long-name entries.
    if (this.pax.path !== undefined) h.name = this.pax.path;
    if (this.pax.linkpath !== undefined) h.linkname = this.pax.linkpath;
    if (this.pax.size !== undefined) h.size = Number(this.pax.size);
    if (this.pax.mtime !== undefined) h.mtime = Math.floor(Number(this.pax.mtime));
    if (this.longName !== null) h.name = this.longName;
    if (this.longLink !== null) h.linkname = this.longLink;
    this.pax = {};
    this.longName = null;
    this.longLink = null;
    this.entry = h;
    this.begin(h);
    this.remaining = h.type === "0" ? h.size : 0;
    this.padding = pad(h.size);
    // Data of non-file entries (rare) is skipped as padding.
    if (h.type !== "0") this.padding = pad(h.size) + h.size;
    if (this.remaining === 0) this.finishEntry();
  }

  private begin(h: Header): void {
    if (++this.entries > this.limits.maxEntries) {
      throw new ExtractError(`too many entries (limit ${this.limits.maxEntries})`, h.name);
    }
    const rel = safeRelative(h.name);
    if (rel === null) return; // "." or "./": the root itself
    const path = join(this.root, rel);
    this.checkParents(rel, h.name);
    this.replaceSymlink(rel, path);
    switch (h.type) {
      case "0": {
        this.bytes += h.size;
        if (this.bytes > this.limits.maxBytes) throw new ExtractError(`archive expands beyond ${this.limits.maxBytes} bytes`, h.name);
        if (this.linkFrom !== undefined && this.linkUnchanged(rel, path, h)) return;
        this.fd = this.openFile(path, h.mode, h.name);
        return;
      }
      case "5": {
        const made = fs.mkdirSync(path, { recursive: true, mode: 0o700 });
        this.dirs.push({ path, mode: h.mode, mtime: h.mtime });
        if (this.needsChown(h, made !== undefined)) fs.chownSync(path, h.uid, h.gid);
        return;
      }
      case "2":
        if (h.linkname === "") throw new ExtractError("symlink without target", h.name);
        rmIfExists(path);
        fs.symlinkSync(h.linkname, path);
        this.symlinks.add(rel);
        if (this.needsChown(h, true)) fs.lchownSync(path, h.uid, h.gid);
        return;
      case "1": {
        const target = safeRelative(h.linkname);
        if (target === null) throw new ExtractError("hard link to the archive root", h.name);
        this.checkParents(target, h.name);
        if (this.symlinks.has(target)) throw new ExtractError("hard link to a symlink", h.name);
        rmIfExists(path);
        try {
          fs.linkSync(join(this.root, target), path);
        } catch (err) {
          throw new ExtractError(`hard link to missing ${h.linkname}`, h.name, { cause: err });
        }
        return;
      }
      default:
        throw new ExtractError(`unsupported entry type "${h.type}" (only files, directories and links)`, h.name);
    }
  }

  /**
   * A file whose size, mtime, mode and owner match the previous release's is a candidate for a hard
   * link: its incoming bytes are compared with the old file as they stream (reads, not writes). If all
   * match, the old inode is linked; at the first difference the file is written after all, starting
   * with the equal prefix copied from the old file.
   */
  private linkUnchanged(rel: string, path: string, h: Header): boolean {
    const prev = join(this.linkFrom!, rel);
    let st: fs.Stats;
    try {
      st = fs.lstatSync(prev);
    } catch {
      return false;
    }
    if (!st.isFile() || st.size !== h.size || Math.floor(st.mtimeMs / 1000) !== h.mtime || (st.mode & 0o7777) !== (h.mode & 0o7777)) return false;
    if (this.chown && (st.uid !== h.uid || st.gid !== h.gid)) return false;
    let prevFd: number;
    try {
      prevFd = fs.openSync(prev, "r");
    } catch {
      return false;
    }
    this.compare = { prevFd, prev, path, offset: 0 };
    if (h.size === 0) this.finishCompare();
    return true;
  }

  private compare: { prevFd: number; prev: string; path: string; offset: number } | null = null;
  private scratch = Buffer.alloc(1 << 16);

  /** Compare incoming bytes with the old file; on the first difference, switch to writing. */
  private compareData(bytes: Uint8Array): void {
    const c = this.compare!;
    if (this.scratch.length < bytes.length) this.scratch = Buffer.alloc(bytes.length);
    const n = fs.readSync(c.prevFd, this.scratch, 0, bytes.length, c.offset);
    if (n === bytes.length && this.scratch.subarray(0, n).equals(bytes)) {
      c.offset += n;
      return;
    }
    // Different after all: write the file, beginning with the equal prefix from the old one.
    const h = this.entry!;
    this.compare = null;
    this.fd = this.openFile(c.path, h.mode, h.name);
    try {
      for (let off = 0; off < c.offset; ) {
        const len = fs.readSync(c.prevFd, this.scratch, 0, Math.min(this.scratch.length, c.offset - off), off);
        if (len <= 0) throw new ExtractError("previous release changed while linking from it", h.name);
        this.writeAll(this.scratch.subarray(0, len));
        off += len;
      }
    } finally {
      fs.closeSync(c.prevFd);
    }
    this.writeAll(bytes);
  }

  /** Every byte matched: link the old inode instead of writing a copy. */
  private finishCompare(): void {
    const c = this.compare!;
    this.compare = null;
    fs.closeSync(c.prevFd);
    try {
      fs.linkSync(c.prev, c.path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw fsError(err as NodeJS.ErrnoException, this.entry!.name);
      fs.mkdirSync(c.path.slice(0, c.path.lastIndexOf("/")), { recursive: true, mode: 0o755 });
      fs.linkSync(c.prev, c.path);
    }
    this.linked++;
  }

  private openFile(path: string, mode: number, name: string): number {
    this.fresh = true;
    try {
      return fs.openSync(path, "wx", mode & 0o7777);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      if (e.code === "EEXIST") {
        // An earlier entry of the same name: a later one replaces it.
        this.fresh = false;
        try {
          return fs.openSync(path, "w", mode & 0o7777);
        } catch (err) {
          throw fsError(err as NodeJS.ErrnoException, name);
        }
      }
      if (e.code === "ENOENT") {
        // Archives may omit parent directories.
        const parent = path.slice(0, path.lastIndexOf("/"));
        fs.mkdirSync(parent, { recursive: true, mode: 0o755 });
        return fs.openSync(path, "wx", mode & 0o7777);
      }
      throw fsError(e, name);
    }
  }

  private data(bytes: Uint8Array): void {
    if (this.meta !== null) {
      this.meta.push(bytes.slice());
      return;
    }
    if (this.compare !== null) return this.compareData(bytes);
    if (this.fd === null) return;
    this.writeAll(bytes);
  }

  private writeAll(bytes: Uint8Array): void {
    try {
      let off = 0;
      while (off < bytes.length) off += fs.writeSync(this.fd!, bytes, off, bytes.length - off);
    } catch (err) {
      throw fsError(err as NodeJS.ErrnoException, this.entry!.name);
    }
  }

  private finishEntry(): void {
    const h = this.entry!;
    if (this.meta !== null) {
      const text = decoder.decode(Buffer.concat(this.meta));
      this.meta = null;
      if (h.type === "x") this.pax = parsePax(text);
      else if (h.type === "L") this.longName = text.replace(/\0.*$/s, "");
      else if (h.type === "K") this.longLink = text.replace(/\0.*$/s, "");
      return; // "g": global pax headers carry nothing we use
    }
    if (this.compare !== null) return this.finishCompare();
    if (h.type !== "0" || this.fd === null) return;
    const fd = this.fd;
    this.fd = null;
    try {
      fs.futimesSync(fd, h.mtime, h.mtime);
      if (this.needsChown(h, this.fresh)) fs.fchownSync(fd, h.uid, h.gid);
      // open() applied the umask; restore the archive's mode when it stripped bits (or for setuid & co).
      if ((h.mode & 0o7777 & ~this.umask) !== (h.mode & 0o7777) || h.mode & 0o7000) fs.fchmodSync(fd, h.mode & 0o7777);
    } finally {
      fs.closeSync(fd);
    }
  }

  /** Root gives entries the archive's owner; one it just created already has `newOwner`. */
  private needsChown(h: Header, fresh: boolean): boolean {
    return this.chown && (!fresh || this.newOwner === undefined || h.uid !== this.newOwner.uid || h.gid !== this.newOwner.gid);
  }

  /** Refuse entries whose path goes through a symlink created by this archive. */
  private checkParents(rel: string, name: string): void {
    if (this.symlinks.size === 0) return;
    let i = rel.indexOf("/");
    while (i !== -1) {
      if (this.symlinks.has(rel.slice(0, i))) throw new ExtractError("unsafe entry: path goes through a symlink", name);
      i = rel.indexOf("/", i + 1);
    }
  }

  /** A later entry replaces an earlier symlink of the same name instead of writing through it. */
  private replaceSymlink(rel: string, path: string): void {
    if (this.symlinks.delete(rel)) fs.unlinkSync(path);
  }
}

/**
 * The entry's path relative to the root, or null for the root itself. Throws on absolute paths and
 * `..` components.
 */
export function safeRelative(name: string): string | null {
  if (name.startsWith("/")) throw new ExtractError("unsafe entry: absolute path", name);
  const parts = name.split("/").filter((p) => p !== "" && p !== ".");
  if (parts.includes("..")) throw new ExtractError("unsafe entry: path contains ..", name);
  if (name.includes("\0")) throw new ExtractError("unsafe entry: NUL in name", name);
  return parts.length === 0 ? null : parts.join("/");
}

export function parseHeader(b: Uint8Array): Header | null {
  // Header checksum: sum of all bytes with the checksum field read as spaces.
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : b[i]!;
  const stored = octal(b, 148, 8);
  if (stored !== sum) return null;
  const typeByte = b[156]!;
  let type = typeByte === 0 ? "0" : String.fromCharCode(typeByte);
  if (type === "7") type = "0"; // contiguous file
  let name = str(b, 0, 100);
  const magic = str(b, 257, 6);
  if (magic.startsWith("ustar")) {
    const prefix = str(b, 345, 155);
    if (prefix !== "" && magic === "ustar") name = `${prefix}/${name}`;
  }
  // Old-style archives mark directories with a trailing slash on a regular entry.
  if (type === "0" && name.endsWith("/")) type = "5";
  return {
    name,
    mode: octal(b, 100, 8),
    uid: octal(b, 108, 8),
    gid: octal(b, 116, 8),
    size: numeric(b, 124, 12),
    mtime: numeric(b, 136, 12),
    type,
    linkname: str(b, 157, 100),
  };
}

function str(b: Uint8Array, off: number, len: number): string {
  let end = off;
  while (end < off + len && b[end] !== 0) end++;
  return decoder.decode(b.subarray(off, end));
}

function octal(b: Uint8Array, off: number, len: number): number {
  const s = str(b, off, len).trim();
  return s === "" ? 0 : parseInt(s, 8);
}

/** Octal, or GNU base-256 when the high bit of the first byte is set (sizes ≥ 8 GiB). */
function numeric(b: Uint8Array, off: number, len: number): number {
  if (b[off]! & 0x80) {
    let n = b[off]! & 0x7f;
    for (let i = 1; i < len; i++) n = n * 256 + b[off + i]!;
    return n;
  }
  return octal(b, off, len);
}

function pad(size: number): number {
  return (BLOCK - (size % BLOCK)) % BLOCK;
}

export function parsePax(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  let i = 0;
  const bytes = new TextEncoder().encode(text);
  while (i < bytes.length) {
    let sp = i;
    while (sp < bytes.length && bytes[sp] !== 0x20) sp++;
    const len = parseInt(decoder.decode(bytes.subarray(i, sp)), 10);
    if (!Number.isFinite(len) || len <= 0) break;
    const record = decoder.decode(bytes.subarray(sp + 1, i + len - 1));
    const eq = record.indexOf("=");
    if (eq > 0) out[record.slice(0, eq)] = record.slice(eq + 1);
    i += len;
  }
  return out;
}

/**
 * Who owns what we create under `root`: us, with our group, as long as no directory hands down its
 * group. During extraction only `root` could (directory modes are set at the end), so a setgid `root`
 * means "unknown".
 */
function newOwnerUnder(root: string): { uid: number; gid: number } | undefined {
  if (fs.statSync(root).mode & 0o2000) return undefined;
  return { uid: process.geteuid!(), gid: process.getegid!() };
}

function rmIfExists(path: string): void {
  try {
    const st = fs.lstatSync(path);
    if (st.isDirectory()) fs.rmSync(path, { recursive: true });
    else fs.unlinkSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
}

function fsError(e: NodeJS.ErrnoException, name: string): ExtractError {
  if (e.code === "ENOSPC") return new ExtractError("no space left on device while extracting", name, { cause: e });
  if (e.code === "EDQUOT") return new ExtractError("disk quota exceeded while extracting", name, { cause: e });
  return new ExtractError(`cannot write (${e.code ?? e.message})`, name, { cause: e });
}

/** Compression by magic bytes: what `tar xf` would detect. */
export type Compression = "gzip" | "none";

export function detectCompression(head: Uint8Array): Compression | string {
  if (head[0] === 0x1f && head[1] === 0x8b) return "gzip";
  if (head[0] === 0x42 && head[1] === 0x5a && head[2] === 0x68) return "bzip2 archives are not supported: use tar.gz";
  if (head[0] === 0xfd && head[1] === 0x37 && head[2] === 0x7a) return "xz archives are not supported: use tar.gz";
  if (head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f && head[3] === 0xfd) return "zstd archives are not supported: use tar.gz";
  return "none";
}
