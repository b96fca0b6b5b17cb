/**
 * What a deploy remembers of the tree it built, so that the next delta deploy need not hash the
 * files that did not change since: per regular file its path, inode, size, mtime, mode, owner, ctime
 * and chunk hashes, taken right after the tree was built and verified. A file is taken as still
 * holding those chunks only when all of them are as recorded, ctime included, or (ctime aside) when
 * root owns it: any write moves the mtime, and only the owner or root may set an mtime back, while
 * ctime also moves for reasons that change no byte (each release that hard-links the file, each
 * pruned release that unlinks it). Anything else is hashed, as without a record.
 *
 * Stored binary (format `pulldeploy-delta-record/2`), mode 0600, written to a temp name and renamed;
 * read only when it is a regular file owned by this user and writable by no one else. Read into one
 * buffer, looked up by the index's entries (`align`): memory of its size, not an object per file
 * and chunk. A stale, missing, older-format or malformed record only costs hashing.
 *
 *   "pulldeploy-delta-record/2\n", then per file:
 *     u32 path length, path (UTF-8), f64 ino, ctimeMs, size, mtimeMs, u32 mode, uid, gid, chunk count,
 *     then per chunk: sha256 (32 bytes), u32 size            (little-endian)
 */
import * as fs from "node:fs";
import { basename, dirname, join } from "node:path";
import { pidAlive } from "../pid.ts";
import { type CompactIndex, FILE } from "./compact.ts";

/** A file as recorded: its stat fields, and where its chunks are in the record (`DeltaRecord.hash`, `chunkSize`). */
export interface RecordedFile extends RecordStat {
  chunkCount: number;
  /** Offset of its first chunk in the record. */
  chunks: number;
}

/** The stat fields a record keeps. */
export interface RecordStat {
  ino: number;
  ctimeMs: number;
  size: number;
  mtimeMs: number;
  mode: number;
  uid: number;
  gid: number;
}

const MAGIC = "pulldeploy-delta-record/2\n";
const MAX_RECORD = 64 * 2 ** 20;
const FIXED = 4 * 8 + 4 * 4;

export class DeltaRecord {
  private readonly view: DataView;
  /**
   * @param buf the record file, checked by `readRecord`
   * @param starts where each file's part begins (its path's length)
   */
  constructor(
    private readonly buf: Buffer,
    private readonly starts: number[],
  ) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }
  get size(): number {
    return this.starts.length;
  }
  /**
   * Per entry of an index, where its path's record is (for `file`), or -1: one pass over the record,
   * paths compared as bytes (no string made).
   */
  align(index: CompactIndex): Int32Array {
    const out = new Int32Array(index.count).fill(-1);
    for (const start of this.starts) {
      const i = index.find(this.buf, start + 4, start + 4 + this.view.getUint32(start, true));
      if (i !== -1) out[i] = start;
    }
    return out;
  }
  /** Where each recorded file's part begins, in record order (for `file` and `pathAt`). */
  get all(): readonly number[] {
    return this.starts;
  }
  pathAt(start: number): string {
    return this.buf.toString("utf8", start + 4, start + 4 + this.view.getUint32(start, true));
  }
  file(start: number): RecordedFile {
    const off = start + 4 + this.view.getUint32(start, true);
    const v = this.view;
    return {
      ino: v.getFloat64(off, true),
      ctimeMs: v.getFloat64(off + 8, true),
      size: v.getFloat64(off + 16, true),
      mtimeMs: v.getFloat64(off + 24, true),
      mode: v.getUint32(off + 32, true),
      uid: v.getUint32(off + 36, true),
      gid: v.getUint32(off + 40, true),
      chunkCount: v.getUint32(off + 44, true),
      chunks: off + FIXED,
    };
  }
  /** `unchanged(st, file(start))` without the object. */
  unchangedAt(st: fs.Stats, start: number): boolean {
    const v = this.view;
    const off = start + 4 + v.getUint32(start, true);
    if (
      !st.isFile() ||
      st.ino !== v.getFloat64(off, true) ||
      st.size !== v.getFloat64(off + 16, true) ||
      st.mtimeMs !== v.getFloat64(off + 24, true) ||
      st.mode !== v.getUint32(off + 32, true) ||
      st.uid !== v.getUint32(off + 36, true) ||
      st.gid !== v.getUint32(off + 40, true)
    )
      return false;
    return st.ctimeMs === v.getFloat64(off + 8, true) || st.uid === 0;
  }

  /** Hex sha256 of chunk `k` of `f`. */
  hash(f: RecordedFile, k: number): string {
    return this.buf.toString("hex", f.chunks + k * 36, f.chunks + k * 36 + 32);
  }
  /** The first 4 bytes of chunk `k`'s sha256, big-endian (the first 8 hex digits). */
  hashPrefix(f: RecordedFile, k: number): number {
    return this.view.getUint32(f.chunks + k * 36, false);
  }
  /** Raw size of chunk `k` of `f`. */
  chunkSize(f: RecordedFile, k: number): number {
    return this.view.getUint32(f.chunks + k * 36 + 32, true);
  }
  /**
   * The file recorded at `start` has `size` bytes in the chunks `index.refs[from, to)`, by size and
   * sha256 (compared in place).
   */
  sameChunks(start: number, index: CompactIndex, from: number, to: number, size: number): boolean {
    const v = this.view;
    const off = start + 4 + v.getUint32(start, true);
    if (v.getFloat64(off + 16, true) !== size || v.getUint32(off + 44, true) !== to - from) return false;
    const buf = this.buf;
    const hashes = index.hashes;
    for (let n = 0, at = off + FIXED; n < to - from; n++, at += 36) {
      const k = index.refs[from + n]!;
      if (v.getUint32(at + 32, true) !== index.size[k]) return false;
      for (let j = 0, h = 32 * k; j < 32; j++) if (buf[at + j] !== hashes[h + j]) return false;
    }
    return true;
  }
}

const EMPTY = new DeltaRecord(Buffer.alloc(0), []);

/**
 * Record the tree built from `index` into `path` (replacing it): `statOf(i)` gives entry `i`'s stat
 * when the caller already has it (a file it just linked), else the file under `tree` is lstat-ed.
 * Best effort: a failure only costs hashing next time.
 */
export function writeRecord(
  path: string,
  tree: string,
  index: CompactIndex,
  statOf?: (i: number) => RecordStat | undefined,
): void {
  const tmp = join(dirname(path), `.${basename(path)}.tmp-${process.pid}`);
  let fd: number | undefined;
  try {
    fd = fs.openSync(tmp, "w", 0o600);
    let buf = Buffer.alloc(256 * 1024);
    let n = 0;
    const room = (k: number) => {
      if (n + k <= buf.length) return;
      fs.writeSync(fd!, buf, 0, n);
      n = 0;
      if (k > buf.length) buf = Buffer.alloc(k);
    };
    room(MAGIC.length);
    n += buf.write(MAGIC, n, "latin1");
    const { pathBytes, pathStart, refStart, refs, hashes } = index;
    for (let i = 0; i < index.count; i++) {
      if (index.kind[i] !== FILE) continue;
      // An lstat per file (after a full-archive deploy) makes a path string and a Stats object each: young
      // garbage, collected as it goes rather than at the end, on top of everything else.
      if (statOf === undefined && (i & 1023) === 1023) Bun.gc(false);
      const st: RecordStat | undefined = statOf?.(i) ?? stat(join(tree, index.path(i)), index.fileSize[i]!);
      if (st === undefined) continue;
      const p0 = pathStart[i]!;
      const name = pathStart[i + 1]! - p0;
      const r0 = refStart[i]!;
      const count = refStart[i + 1]! - r0;
      room(4 + name + FIXED + count * 36);
      n = buf.writeUInt32LE(name, n);
      buf.set(pathBytes.subarray(p0, p0 + name), n);
      n += name;
      n = buf.writeDoubleLE(st.ino, n);
      n = buf.writeDoubleLE(st.ctimeMs, n);
      n = buf.writeDoubleLE(st.size, n);
      n = buf.writeDoubleLE(st.mtimeMs, n);
      n = buf.writeUInt32LE(st.mode, n);
      n = buf.writeUInt32LE(st.uid, n);
      n = buf.writeUInt32LE(st.gid, n);
      n = buf.writeUInt32LE(count, n);
      for (let r = r0; r < r0 + count; r++) {
        const k = refs[r]!;
        buf.set(hashes.subarray(32 * k, 32 * k + 32), n);
        n = buf.writeUInt32LE(index.size[k]!, n + 32);
      }
    }
    fs.writeSync(fd, buf, 0, n);
    fs.closeSync(fd);
    fd = undefined;
    fs.renameSync(tmp, path);
  } catch {
    if (fd !== undefined) fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
  }
}

function stat(path: string, size: number): RecordStat | undefined {
  const st = fs.lstatSync(path, { throwIfNoEntry: false });
  return st?.isFile() && st.size === size ? st : undefined;
}

/** The record at `path`, or an empty one when there is none or it is not trustworthy. */
export function readRecord(path: string): DeltaRecord {
  try {
    const st = fs.lstatSync(path, { throwIfNoEntry: false });
    const uid = typeof process.getuid === "function" ? process.getuid() : -1;
    if (!st?.isFile() || st.uid !== uid || (st.mode & 0o022) !== 0) return EMPTY;
    // Ours (root's, 0600): not hostile, but a size cap all the same.
    if (st.size > MAX_RECORD) return EMPTY;
    const buf = fs.readFileSync(path);
    if (buf.toString("latin1", 0, MAGIC.length) !== MAGIC) return EMPTY;
    const starts: number[] = [];
    let off = MAGIC.length;
    while (off < buf.length) {
      if (off + 4 > buf.length) return EMPTY;
      const fixed = off + 4 + buf.readUInt32LE(off);
      if (fixed + FIXED > buf.length) return EMPTY;
      const end = fixed + FIXED + buf.readUInt32LE(fixed + 44) * 36;
      if (end > buf.length) return EMPTY;
      starts.push(off);
      off = end;
    }
    return new DeltaRecord(buf, starts);
  } catch {
    return EMPTY;
  }
}

/** `st` is the file recorded as `f`, unchanged since (see the header). */
export function unchanged(st: fs.Stats, f: RecordStat): boolean {
  if (
    !st.isFile() ||
    st.ino !== f.ino ||
    st.size !== f.size ||
    st.mtimeMs !== f.mtimeMs ||
    st.mode !== f.mode ||
    st.uid !== f.uid ||
    st.gid !== f.gid
  )
    return false;
  return st.ctimeMs === f.ctimeMs || st.uid === 0;
}

/**
 * Remove the records in `dir` whose release `dir/<id>` is gone, except `keep`, and the temp files
 * of writers that died (a `kill -9` between write and rename). Records of the older format
 * (`.delta-<id>.json.gz`) go the same way.
 */
export function pruneRecords(dir: string, keep: string): void {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return;
  }
  for (const name of names) {
    const tmp = /^\.\.delta-.+\.(?:json\.gz|rec)\.tmp-(\d+)$/.exec(name);
    if (tmp && !pidAlive(Number(tmp[1]))) fs.rmSync(join(dir, name), { force: true });
    const m = /^\.delta-(.+)\.(?:json\.gz|rec)$/.exec(name);
    if (!m || name === basename(keep) || fs.existsSync(join(dir, m[1]!))) continue;
    fs.rmSync(join(dir, name), { force: true });
  }
}

/** Where the `release` strategy keeps the record of release `id`: beside it, a dot file as `.order` is. */
export function recordPath(releasesDir: string, id: string): string {
  return join(releasesDir, `.delta-${id}.rec`);
}
