/**
 * What a deploy remembers of the tree it built, so that the next delta deploy need not hash the
 * files that did not change since: per regular file its path, inode, size, mtime, mode, owner, ctime
 * and chunk hashes, taken right after the tree was built and verified. A file is taken as still
 * holding those chunks only when all of them are as recorded, ctime included, or (ctime aside) when
 * root owns it: any write moves the mtime, and only the owner or root may set an mtime back, while
 * ctime also moves for reasons that change no byte (each release that hard-links the file, each
 * pruned release that unlinks it). Anything else is hashed, as without a record.
 *
 * Stored as gzip'd JSON, mode 0600, written to a temp name and renamed; read only when it is a
 * regular file owned by this user and writable by no one else. A stale or missing record only costs
 * hashing.
 */
import * as fs from "node:fs";
import { basename, dirname, join } from "node:path";
import { pidAlive } from "../pid.ts";
import type { DeltaIndex } from "./format.ts";

export interface RecordedFile {
  ino: number;
  ctimeMs: number;
  size: number;
  mtimeMs: number;
  mode: number;
  uid: number;
  gid: number;
  /** [sha256, size] of each chunk, in order. */
  chunks: [string, number][];
}

const FORMAT = "pulldeploy-delta-record/1";
const MAX_RECORD = 256 * 2 ** 20;

/**
 * Record `tree` as built from `index` into `path` (replacing it). Best effort: a failure only costs hashing next time.
 */
export function writeRecord(path: string, tree: string, index: DeltaIndex): void {
  const files: [string, number, number, number, [string, number][], number, number, number, number][] = [];
  for (const e of index.entries) {
    if (e.type !== "file") continue;
    const st = fs.lstatSync(join(tree, e.path), { throwIfNoEntry: false });
    if (!st?.isFile() || st.size !== e.size) continue;
    files.push([
      e.path,
      st.ino,
      st.ctimeMs,
      st.size,
      e.chunks.map((i) => [index.chunks[i]!.hash, index.chunks[i]!.size]),
      st.mtimeMs,
      st.mode,
      st.uid,
      st.gid,
    ]);
  }
  const tmp = join(dirname(path), `.${basename(path)}.tmp-${process.pid}`);
  try {
    fs.writeFileSync(
      tmp,
      Bun.gzipSync(new TextEncoder().encode(JSON.stringify({ format: FORMAT, files })), { level: 1 }),
      { mode: 0o600 },
    );
    fs.renameSync(tmp, path);
  } catch {
    fs.rmSync(tmp, { force: true });
  }
}

/** The record at `path` by file path, or an empty map when there is none or it is not trustworthy. */
export function readRecord(path: string): Map<string, RecordedFile> {
  const out = new Map<string, RecordedFile>();
  try {
    const st = fs.lstatSync(path, { throwIfNoEntry: false });
    const uid = typeof process.getuid === "function" ? process.getuid() : -1;
    if (!st?.isFile() || st.uid !== uid || (st.mode & 0o022) !== 0) return out;
    // Ours (root's, 0600): not hostile, but a size cap all the same.
    if (st.size > MAX_RECORD / 8) return out;
    const raw = JSON.parse(new TextDecoder().decode(Bun.gunzipSync(fs.readFileSync(path))));
    if (raw?.format !== FORMAT || !Array.isArray(raw.files)) return out;
    for (const f of raw.files) {
      if (!Array.isArray(f) || f.length !== 9 || typeof f[0] !== "string" || !Array.isArray(f[4])) continue;
      const chunks = (f[4] as unknown[]).filter(
        (c): c is [string, number] => Array.isArray(c) && typeof c[0] === "string" && Number.isSafeInteger(c[1]),
      );
      if (chunks.length !== f[4].length) continue;
      out.set(f[0], {
        ino: Number(f[1]),
        ctimeMs: Number(f[2]),
        size: Number(f[3]),
        chunks,
        mtimeMs: Number(f[5]),
        mode: Number(f[6]),
        uid: Number(f[7]),
        gid: Number(f[8]),
      });
    }
  } catch {
    out.clear();
  }
  return out;
}

/** `st` is the file recorded as `f`, unchanged since (see the header). */
export function unchanged(st: fs.Stats, f: RecordedFile): boolean {
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
 * of writers that died (a `kill -9` between write and rename).
 */
export function pruneRecords(dir: string, keep: string): void {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return;
  }
  for (const name of names) {
    const tmp = /^\.\.delta-.+\.json\.gz\.tmp-(\d+)$/.exec(name);
    if (tmp && !pidAlive(Number(tmp[1]))) fs.rmSync(join(dir, name), { force: true });
    const m = /^\.delta-(.+)\.json\.gz$/.exec(name);
    if (!m || name === basename(keep) || fs.existsSync(join(dir, m[1]!))) continue;
    fs.rmSync(join(dir, name), { force: true });
  }
}

/** Where the `release` strategy keeps the record of release `id`: beside it, a dot file as `.order` is. */
export function recordPath(releasesDir: string, id: string): string {
  return join(releasesDir, `.delta-${id}.json.gz`);
}
