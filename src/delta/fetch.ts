/**
 * The agent's side of the delta: build the release's tree from what this host already holds plus
 * the chunks it lacks, fetched with a few coalesced ranged GETs, instead of downloading the archive.
 *
 *   index   fetch the index named by the manifest, check its sha256 (covered by a signed manifest)
 *   plan    with the record of the previous tree (`record.ts`), as root: a file recorded at the same
 *           path with the same chunks is to be linked, no system call yet. The other files' chunks are
 *           looked for in recorded files (read later, checked then) and in the previous tree's file
 *           of the same path, cut at the new index's boundaries or by content, each piece hashed now.
 *           The chunks found nowhere are fetched; more than `maxShare` of the archive: use the archive
 *   fetch   ranges of the packs, nearby ones merged, each chunk inflated (capped) and hashed into a
 *           private spool file
 *   build   in the archive's order, one pass: a file to link is linked from `linkFrom`, then its new
 *           name lstat-ed and checked against the record and the index (`DirectLinker`); anything
 *           else (or a file that fails that check) goes as the archive's own tar stream, rebuilt from
 *           the index and the verified chunks (each re-hashed as read, unless its file is as
 *           recorded), to the archive's `TarExtractor`: the same path checks, limits, modes, mtimes,
 *           symlinks and hard links as extraction. A chunk that is not as planned is fetched then.
 *           The stream's size must equal the index's, and its sha256 too when nothing was taken on
 *           the record's word
 *
 * Any failure but an abort is a `DeltaError`; `fetchTree` then empties the tree and fetches the full
 * archive, saying why. The spool is removed on every path.
 */
import * as fs from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { type ExtractedTree, TarExtractor, type ExtractLimits } from "../archive/extract.ts";
import { entryHeaders, headerSize, type TarEntry } from "../archive/tar-header.ts";
import { FetchError, messageOf } from "../errors.ts";
import { redact, type Logger } from "../log.ts";
import { openUrl } from "../store/sources/index.ts";
import type { Env } from "../env.ts";
import { pidAlive } from "../pid.ts";
import { formatBytes } from "../units.ts";
import { chunkBuffer, chunkHash, fileChunks } from "./chunker.ts";
import { type CompactIndex, DIR, FILE } from "./compact.ts";
import { DeltaError, packUrl, type ChunkRef } from "./format.ts";
import { inflateCapped } from "./inflate.ts";
import { fetchCompactIndex } from "./read.ts";
import { type DeltaRecord, pruneRecords, type RecordStat, readRecord, unchanged, writeRecord } from "./record.ts";

export interface DeltaFetchOptions {
  indexUrl: string;
  /** Hex sha256 of the stored index, from the manifest. */
  indexSha256: string;
  /** An empty directory to build the tree in. */
  tree: string;
  /** The previous tree to read unchanged chunks from (never written). */
  seedFrom?: string;
  /** Hard-link unchanged files from here, as extraction does (`Workspace.linkFrom`). */
  linkFrom?: string;
  /** Where else a file of the same path may share an inode with `linkFrom`'s (`Workspace.linkPeers`). */
  linkPeers?: string[];
  env: Env;
  userAgent: string;
  signal?: AbortSignal;
  maxBandwidth?: number;
  limits: ExtractLimits;
  /** Extra attempts of a ranged GET after a retryable failure, `retryWaitMs` apart. */
  retries: number;
  retryWaitMs: number;
  log: Logger;
  /** Fall back to the archive when the chunks to fetch exceed this share of its size (default 0.5). */
  maxShare?: number;
  /** The record of the previous tree (`record.ts`): its unchanged files need no hashing. */
  recordFrom?: string;
  /** Where to record the tree built now (either path), for the next deploy. */
  recordAs?: string;
}

/** A fetched tree, as the archive path (`fetchAndExtract`) returns it too. */
export interface TreeResult extends ExtractedTree {
  /** Set when the tree was built from the delta: what was verified, for the log. */
  delta?: string;
}

/** Ranges closer than this are merged into one request (the gap is downloaded and skipped). */
const GAP = 64 * 1024;
/** One request reads at most this much (it is held in memory, and retried whole). */
const MAX_RANGE = 8 * 2 ** 20;
const BLOCK = 512;
const ZEROS = new Uint8Array(2 * BLOCK);

/**
 * The tree by the delta when `o` is given and there is a previous tree, else (or when the delta
 * fails) by `full`, the archive path.
 */
export async function fetchTree(
  o: DeltaFetchOptions | undefined,
  full: () => Promise<TreeResult>,
): Promise<TreeResult> {
  if (o === undefined) return full();
  if (o.seedFrom === undefined || !fs.existsSync(o.seedFrom)) {
    o.log.info("delta: no previous release on this host: fetching the full archive");
    return recordAfter(o, await full());
  }
  try {
    // The build runs each per-entry function thousands of times and then never again: compiling them
    // in the optimising tiers costs more CPU (the JIT worker's) and memory (the compilers' own, kept
    // by the allocator) than it saves. Higher thresholds leave most of it in the faster-to-compile tiers.
    Bun.unsafe.setJITPolicy(30);
    try {
      return await fetchDelta(o);
    } finally {
      Bun.unsafe.setJITPolicy(1);
    }
  } catch (err) {
    if (o.signal?.aborted) throw err;
    o.log.info(`delta: ${messageOf(err)}; fetching the full archive`);
    // Emptied, not replaced: the strategy may have pinned this very directory.
    for (const name of fs.readdirSync(o.tree)) fs.rmSync(join(o.tree, name), { recursive: true, force: true });
    return recordAfter(o, await full());
  }
}

/**
 * After an archive deploy: record the tree against the index (fetched now, ~1 MB for 20,000 files),
 * so that the next delta deploy need not hash it. The archive's checksum verified the bytes; that the
 * index describes the same tree is the publisher's word (both come from one pack of one directory).
 */
async function recordAfter(o: DeltaFetchOptions, result: TreeResult): Promise<TreeResult> {
  if (o.recordAs === undefined || result.extractError) return result;
  try {
    const { index } = await fetchCompactIndex(
      o.indexUrl,
      { env: o.env, signal: o.signal, userAgent: o.userAgent },
      o.limits,
      o.indexSha256,
    );
    writeRecord(o.recordAs, o.tree, index);
    pruneRecords(dirname(o.recordAs), o.recordAs);
  } catch (err) {
    o.log.info(`delta: not recorded for the next deploy (${messageOf(err)})`);
  }
  return result;
}

/** A place on this host where a chunk can be read: `rel` under `seedFrom`, at `offset`. */
interface Seed {
  rel: string;
  offset: number;
  /** Its file's part in the record, when the record says it holds the chunk. */
  recorded?: number;
}

export async function fetchDelta(o: DeltaFetchOptions): Promise<TreeResult> {
  const started = performance.now();
  const opened = { env: o.env, signal: o.signal, userAgent: o.userAgent };
  const { index, bytes: indexBytes } = await fetchCompactIndex(o.indexUrl, opened, o.limits, o.indexSha256);
  const seedFrom = o.seedFrom!;

  // plan
  const record = o.recordFrom === undefined ? undefined : readRecord(o.recordFrom);
  const recorded = record !== undefined && record.size > 0;
  const linker =
    recorded && o.linkFrom !== undefined && o.linkFrom === seedFrom && process.getuid?.() === 0
      ? new DirectLinker(o.tree, o.linkFrom, o.linkPeers, record, index)
      : undefined;
  const at = linker ? record!.align(index) : undefined;
  const { candidate, wanted, need, total } = planEntries(index, record, at, linker !== undefined);
  const seeds = seedsFor(seedFrom, index, record, candidate, need);
  // A full collection after each phase that leaves garbage (the plan's reads of changed files, the
  // build): the next phase reuses that memory instead of growing the heap. (The index's inflated
  // bytes are freed by `fetchCompactIndex` itself.)
  Bun.gc(true);
  const missing: ChunkRef[] = [];
  for (const [hash, k] of need) if (!seeds.has(hash)) missing.push(index.chunk(k));

  const archiveSize = index.archiveSize ?? total;
  const toFetch = missing.reduce((n, c) => n + c.stored, 0);
  const maxShare = o.maxShare ?? 0.5;
  if (toFetch > archiveSize * maxShare) {
    throw new DeltaError(
      `${missing.length} of ${wanted} chunks are missing here (${formatBytes(toFetch)}, more than ` +
        `${Math.round(maxShare * 100)}% of the ${formatBytes(archiveSize)} archive)`,
    );
  }
  const ranges = coalesce(missing);

  const tmp = o.env.TMPDIR || tmpdir();
  sweepSpools(tmp);
  const spoolDir = fs.mkdtempSync(join(tmp, `pulldeploy-delta-${process.pid}-`));
  const spoolPath = join(spoolDir, "chunks");
  const spool = fs.openSync(spoolPath, "w+", 0o600);
  try {
    // fetch
    const spooled = new Map<string, number>();
    let spoolSize = 0;
    let fetched = indexBytes;
    let requests = 1;
    const throttle = o.maxBandwidth ? createThrottle(o.maxBandwidth) : undefined;
    const fetchRanges = async (list: Range[]) => {
      for (const r of list) {
        const url = packUrl(o.indexUrl, index.packs[r.pack]!);
        const body = await readRange(url, r.start, r.end - r.start, o, throttle);
        fetched += body.byteLength;
        requests++;
        for (const c of r.chunks) {
          const where = `chunk ${c.hash.slice(0, 12)} (${redact(url)} bytes ${c.offset}-${c.offset + c.stored - 1})`;
          let raw: Uint8Array;
          try {
            raw = await inflateCapped(
              body.subarray(c.offset - r.start, c.offset - r.start + c.stored),
              "deflate-raw",
              c.size,
            );
          } catch (err) {
            throw new DeltaError(`${where}: does not inflate to ${c.size} bytes (${messageOf(err)})`, { cause: err });
          }
          const actual = chunkHash(raw);
          if (raw.byteLength !== c.size || actual !== c.hash)
            throw new DeltaError(`${where}: checksum mismatch: expected sha256 ${c.hash}, got ${actual}`);
          writeAll(spool, raw, spoolSize);
          spooled.set(c.hash, spoolSize);
          spoolSize += raw.byteLength;
        }
      }
    };
    await fetchRanges(ranges);

    // build
    const extractor = new TarExtractor(o.tree, o.limits, o.linkFrom);
    /**
     * Paths of the symlinks and files the extractor made so far: nothing is linked through them (a
     * link through a file the linker made fails by itself, ENOTDIR). `clear`: directories checked
     * since the last one was added.
     */
    const notDirs = new Set<string>();
    const clear = new Set<string>();
    const dirClear = (dir: string) => {
      if (dir === "" || clear.has(dir)) return true;
      if (throughNotDir(dir, notDirs)) return false;
      clear.add(dir);
      return true;
    };
    // With a record (files trusted unchanged since recorded, or linked without reading) the stream is
    // not hashed whole: every other byte is hashed chunk by chunk, and the headers come from the
    // verified index.
    const tar = recorded ? undefined : new Bun.CryptoHasher("sha256");
    let tarSize = 0;
    const feed = (b: Uint8Array) => {
      tar?.update(b);
      tarSize += b.byteLength;
      extractor.write(b);
    };
    let reused = 0;
    let trusted = 0;
    let refetched = 0;
    let seedDev: number | undefined;
    /** A linked file as the tar writer takes it, for its header's size: one object, rewritten per file. */
    const header: TarEntry = { path: "", type: "file", mode: 0, mtime: 0, size: 0, linkname: "" };
    /** The chunk's bytes, verified: from the spool, a local copy, or fetched now. */
    const chunkBytes = async (c: ChunkRef, path: string): Promise<Uint8Array> => {
      let at = spooled.get(c.hash);
      if (at === undefined) {
        const seed = seeds.get(c.hash);
        const got =
          seed === undefined
            ? undefined
            : readSeed(seedFrom, (seedDev ??= fs.statSync(seedFrom).dev), seed, c.size, record);
        if (got !== undefined && (got.trusted || chunkHash(got.bytes) === c.hash)) {
          reused += c.size;
          if (got.trusted) trusted += c.size;
          return got.bytes;
        }
        // The local copy changed since it was planned (or never held it): fetch this one chunk.
        seeds.delete(c.hash);
        await fetchRanges(coalesce([c]));
        refetched++;
        at = spooled.get(c.hash)!;
      }
      const bytes = readAt(spool, at, c.size);
      if (bytes === undefined || chunkHash(bytes) !== c.hash)
        throw new DeltaError(`${path}: the spooled chunk ${c.hash.slice(0, 12)} changed while the tree was built`);
      return bytes;
    };
    try {
      const { kind, refStart, refs, fileSize } = index;
      for (let i = 0; i < index.count; i++) {
        // Each entry leaves a little garbage (its path, a stat, headers): collected as it goes.
        if ((i & 1023) === 1023) Bun.gc(false);
        const path = index.path(i);
        const size = fileSize[i]!;
        const slash = candidate[i] === 1 ? path.lastIndexOf("/") : -1;
        const parent = slash === -1 ? "" : path.slice(0, slash);
        if (candidate[i] === 1 && dirClear(parent)) {
          // Unchanged since recorded, and as the archive describes it: linked, nothing read (what the
          // extractor does for it after comparing every byte). Its parent came from the index.
          if (linker!.link(i, path, parent, at![i]!)) {
            header.path = path;
            header.mode = index.mode[i]!;
            header.size = size;
            header.mtime = index.mtime[i]!;
            tarSize += headerSize(header) + size + ((BLOCK - (size % BLOCK)) % BLOCK);
            reused += size;
            trusted += size;
            continue;
          }
          // Not as recorded after all (or EXDEV, a missing parent…): through the extractor, from
          // whatever of it still holds the chunks (hashed) or fetched.
          let offset = 0;
          for (let r = refStart[i]!; r < refStart[i + 1]!; r++) {
            const k = refs[r]!;
            const hash = index.hashHex(k);
            if (!seeds.has(hash)) seeds.set(hash, { rel: path, offset, recorded: at![i]! });
            offset += index.size[k]!;
          }
        }
        if (kind[i] !== DIR) {
          notDirs.add(path);
          clear.clear();
        }
        feed(entryHeaders(index.entry(i)));
        if (kind[i] !== FILE) continue;
        for (let r = refStart[i]!; r < refStart[i + 1]!; r++) feed(await chunkBytes(index.chunk(refs[r]!), path));
        const pad = (BLOCK - (size % BLOCK)) % BLOCK;
        if (pad > 0) feed(ZEROS.subarray(0, pad));
      }
      feed(ZEROS);
      extractor.end();
    } catch (err) {
      extractor.abort();
      if (err instanceof DeltaError) throw err;
      throw new DeltaError(`building the tree: ${messageOf(err)}`, { cause: err });
    }
    const tarHex = tar?.digest("hex") as string | undefined;
    if (tarSize !== index.tar.size || (tarHex !== undefined && tarHex !== index.tar.sha256)) {
      throw new DeltaError(
        `the rebuilt tar stream does not match the index: expected sha256 ${index.tar.sha256} ` +
          `(${index.tar.size} bytes), got ${tarHex ?? "(not hashed)"} (${tarSize} bytes)`,
      );
    }
    if (o.recordAs !== undefined) {
      Bun.gc(true);
      writeRecord(o.recordAs, o.tree, index, linker ? (i) => linker.statOf(i) : undefined);
      pruneRecords(dirname(o.recordAs), o.recordAs);
    }
    const secs = (performance.now() - started) / 1000;
    const share =
      archiveSize > 0
        ? ` (${((100 * fetched) / archiveSize).toFixed(1)}% of the ${formatBytes(archiveSize)} archive)`
        : "";
    o.log.info(
      `delta: fetched ${formatBytes(fetched)}${share} in ${requests} requests: ${missing.length + refetched} ` +
        `of ${wanted} chunks; ${formatBytes(reused)} reused from ${seedFrom}` +
        (trusted > 0 ? ` (${formatBytes(trusted)} of it unchanged since recorded, not re-hashed)` : "") +
        ` (${secs.toFixed(2)}s)`,
    );
    const direct = linker?.linked ?? 0;
    const linkedAll = extractor.linked + direct;
    const changedLink =
      linkedAll > 0
        ? (each: boolean) => extractor.changedLink(each) ?? (each ? linker?.changed() : undefined)
        : undefined;
    return {
      bytes: fetched,
      entries: extractor.entries + direct,
      linked: linkedAll,
      hardLinks: extractor.hardLinkEntries,
      changedLink,
      delta:
        `delta index sha256 ${o.indexSha256} ok, ${wanted} chunks ` +
        `${tar ? "and the tar stream's sha256 " : ""}verified (${fetched} bytes fetched, ` +
        `${extractor.entries + direct} ` +
        `entries${linkedAll > 0 ? `, ${linkedAll} unchanged files hard-linked` : ""}, ${secs.toFixed(2)}s)`,
    };
  } finally {
    linker?.close();
    fs.closeSync(spool);
    fs.rmSync(spoolDir, { recursive: true, force: true });
  }
}

/**
 * One pass over the index, no system call: which files are candidates for a direct link (`link`:
 * recorded at the same path with the same chunks), how many distinct chunks it names and their
 * stored bytes, and the chunks the other files need (by hash: their first position).
 */
function planEntries(index: CompactIndex, record: DeltaRecord | undefined, at: Int32Array | undefined, link: boolean) {
  const candidate = new Uint8Array(index.count);
  const need = new Map<string, number>();
  // Distinct chunks by position; publish lists each hash once, so only a forged index repeats one (and
  // then only the counts in the log are off).
  const named = new Uint8Array(index.chunkCount);
  const { refStart, refs } = index;
  let wanted = 0;
  let total = 0;
  for (let i = 0; i < index.count; i++) {
    if (index.kind[i] !== FILE) continue;
    const from = refStart[i]!;
    const to = refStart[i + 1]!;
    const same = link && at![i]! !== -1 && record!.sameChunks(at![i]!, index, from, to, index.fileSize[i]!);
    if (same) candidate[i] = 1;
    for (let r = from; r < to; r++) {
      const k = refs[r]!;
      if (named[k] === 0) {
        named[k] = 1;
        wanted++;
        total += index.stored[k]!;
      }
      if (!same) {
        const hash = index.hashHex(k);
        if (!need.has(hash)) need.set(hash, k);
      }
    }
  }
  return { candidate, wanted, need, total };
}

/**
 * Where each chunk in `need` can be read on this host, by hash: any recorded file said to hold it
 * (checked when read: trusted if unchanged since recorded, else hashed), else a file of the new
 * index's path, cut where the index cuts it or, when it differs, by content, every piece hashed now:
 * a file the app changed yields nothing it no longer holds.
 */
function seedsFor(
  root: string,
  index: CompactIndex,
  record: DeltaRecord | undefined,
  candidate: Uint8Array,
  need: Map<string, number>,
): Map<string, Seed> {
  const seeds = new Map<string, Seed>();
  if (need.size === 0) return seeds;
  if (record !== undefined) {
    // Looked up by the hash's first 4 bytes first: no string is made for the many recorded chunks not needed.
    const byPrefix = new Set<number>();
    for (const hash of need.keys()) byPrefix.add(Number.parseInt(hash.slice(0, 8), 16));
    for (const start of record.all) {
      const f = record.file(start);
      let offset = 0;
      for (let k = 0; k < f.chunkCount; k++) {
        const size = record.chunkSize(f, k);
        if (byPrefix.has(record.hashPrefix(f, k))) {
          const hash = record.hash(f, k);
          const want = need.get(hash);
          // The size must agree too: the recorded chunk is read as the new index's chunk of that hash.
          if (want !== undefined && index.size[want]! === size && !seeds.has(hash))
            seeds.set(hash, { rel: record.pathAt(start), offset, recorded: start });
        }
        offset += size;
      }
      if (seeds.size === need.size) return seeds;
    }
  }
  const buffer = chunkBuffer();
  const { refStart, refs } = index;
  for (let i = 0; i < index.count; i++) {
    if (index.kind[i] !== FILE || index.fileSize[i] === 0 || candidate[i] === 1) continue;
    let all = true;
    for (let r = refStart[i]!; r < refStart[i + 1]! && all; r++) all = seeds.has(index.hashHex(refs[r]!));
    if (all) continue;
    const rel = index.path(i);
    const path = join(root, rel);
    let fd: number;
    try {
      fd = fs.openSync(path, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
    } catch {
      continue; // absent, a symlink, unreadable: nothing to reuse
    }
    try {
      const st = fs.fstatSync(fd);
      if (!st.isFile()) continue;
      let whole = st.size === index.fileSize[i];
      if (whole) {
        let offset = 0;
        for (let r = refStart[i]!; r < refStart[i + 1]!; r++) {
          const k = refs[r]!;
          const hash = index.hashHex(k);
          const size = index.size[k]!;
          if (seeds.has(hash)) {
            offset += size;
            continue;
          }
          const bytes = readAt(fd, offset, size);
          if (bytes !== undefined && chunkHash(bytes) === hash) seeds.set(hash, { rel, offset });
          else whole = false;
          offset += size;
        }
      }
      if (!whole && st.size > 0) {
        for (const { bytes, offset } of fileChunks(fd, st.size, buffer)) {
          const hash = chunkHash(bytes);
          if (need.has(hash) && !seeds.has(hash)) seeds.set(hash, { rel, offset });
        }
      }
    } catch {
      // Changed under us while read: what was hashed so far stands, the rest is fetched.
    } finally {
      fs.closeSync(fd);
    }
  }
  return seeds;
}

/**
 * Hard-links the files of the new index that are unchanged since recorded from `linkFrom` (the
 * previous release) into the tree, without reading them: the name is linked first, then the new name
 * (in the tree, which no one else can change) is lstat-ed, so what is kept is exactly what was
 * checked: the recorded inode, unchanged (`record.ts`), with the size, mtime, mode and owner (root's,
 * as extraction as root gives) that extracting the archive would give. Only as root. As the
 * extractor's link-dest demands, the name linked from is reached through real directories of
 * `linkFrom` (lstat-ed once each; re-checked after the link unless only root can change them), and
 * every other name of the inode is the same path in a peer release (where an earlier deploy linked
 * it): an owner who kept another link could write through it later. One link and one lstat per file
 * when it has no other names; per peer directory one lstat, per name found one more.
 */
class DirectLinker {
  linked = 0;
  /** Per entry linked: ino, ctime, size, mtime, mode, uid, gid (as lstat-ed after the link). */
  private readonly stats: Float64Array;
  private readonly done: Uint8Array;
  private linkedAt: number[] = [];
  private dirs = new Map<string, { ino: number; safe: boolean } | null>();
  private peers: { root: string; dirs: Map<string, number | null> }[] | undefined;
  private readonly uid = process.getuid?.() ?? 0;

  private readonly tree: string;
  private readonly from: string;
  constructor(
    tree: string,
    from: string,
    private readonly peerRoots: string[] | undefined,
    private readonly record: DeltaRecord,
    /** The index (`link`'s `i` is an entry's position). */
    private readonly index: CompactIndex,
  ) {
    this.tree = tree.replace(/\/+$/, "");
    this.from = from.replace(/\/+$/, "");
    this.stats = new Float64Array(index.count * 7);
    this.done = new Uint8Array(index.count);
  }

  /** Link entry `i` (`path`, in directory `dir`), recorded at `recorded` in `record`; false: not linked. */
  link(i: number, path: string, dir: string, recorded: number): boolean {
    const holder = this.dir(dir);
    if (holder === null) return false;
    // Paths as strings (the index's are canonical): `join` costs more than the lstat here.
    const to = `${this.tree}/${path}`;
    try {
      fs.linkSync(`${this.from}/${path}`, to);
    } catch {
      return false; // EXDEV, EMLINK, gone…: written by the extractor instead
    }
    const st = fs.lstatSync(to);
    if (
      st.isFile() &&
      this.record.unchangedAt(st, recorded) &&
      st.size === this.index.fileSize[i] &&
      st.mtimeMs === this.index.mtime[i]! * 1000 &&
      (st.mode & 0o7777) === this.index.mode[i] &&
      st.uid === 0 &&
      st.gid === 0 &&
      (holder.safe || fs.lstatSync(join(this.from, dir), { throwIfNoEntry: false })?.ino === holder.ino) &&
      this.accounted(path, dir, holder.ino, st)
    ) {
      const s = i * 7;
      const stats = this.stats;
      stats[s] = st.ino;
      stats[s + 1] = st.ctimeMs;
      stats[s + 2] = st.size;
      stats[s + 3] = st.mtimeMs;
      stats[s + 4] = st.mode;
      stats[s + 5] = st.uid;
      stats[s + 6] = st.gid;
      this.done[i] = 1;
      this.linkedAt.push(i);
      this.linked++;
      return true;
    }
    fs.unlinkSync(to);
    return false;
  }

  /**
   * The stat taken right after entry `i` was linked, or undefined when it was not linked here. One
   * object, overwritten by the next call (20,000 files: no object each).
   */
  statOf(i: number): RecordStat | undefined {
    if (this.done[i] !== 1) return undefined;
    const s = this.stats;
    const o = this.stat;
    const at = i * 7;
    o.ino = s[at]!;
    o.ctimeMs = s[at + 1]!;
    o.size = s[at + 2]!;
    o.mtimeMs = s[at + 3]!;
    o.mode = s[at + 4]!;
    o.uid = s[at + 5]!;
    o.gid = s[at + 6]!;
    return o;
  }
  private stat: RecordStat = { ino: 0, ctimeMs: 0, size: 0, mtimeMs: 0, mode: 0, uid: 0, gid: 0 };

  /**
   * The first linked file no longer as linked (its inode is shared with the previous release: whoever
   * writes it in place from now on changes this tree too; the deploy asks after `pre`, as for the
   * extractor's links), or undefined.
   */
  changed(): string | undefined {
    for (let n = 0; n < this.linkedAt.length; n++) {
      const rel = this.index.path(this.linkedAt[n]!);
      const now = fs.lstatSync(join(this.tree, rel), { throwIfNoEntry: false });
      const s = this.statOf(this.linkedAt[n]!)!;
      if (now === undefined || now.ino !== s.ino) continue; // replaced by a later entry
      if (
        now.size !== s.size ||
        now.mtimeMs !== s.mtimeMs ||
        now.mode !== s.mode ||
        now.uid !== s.uid ||
        now.gid !== s.gid
      )
        return rel;
    }
    return undefined;
  }

  close(): void {
    for (const fd of this.fds) fs.closeSync(fd);
    this.fds = [];
    this.dirs.clear();
    this.peers = undefined;
  }
  private fds: number[] = [];

  /**
   * `dir` of `linkFrom` when it and every directory above are real ones, with its inode and whether
   * only root can change it (then and every directory above), else null. Looked up once each.
   */
  private dir(dir: string): { ino: number; safe: boolean } | null {
    let known = this.dirs.get(dir);
    if (known !== undefined) return known;
    if (dir === "") {
      const st = fs.statSync(this.from); // the root itself is given (pinned by the caller)
      known = { ino: st.ino, safe: this.onlyOurs(st) };
    } else {
      const slash = dir.lastIndexOf("/");
      const parent = this.dir(slash === -1 ? "" : dir.slice(0, slash));
      const st = parent === null ? undefined : fs.lstatSync(join(this.from, dir), { throwIfNoEntry: false });
      known = st?.isDirectory() ? { ino: st.ino, safe: parent!.safe && this.onlyOurs(st) } : null;
    }
    this.dirs.set(dir, known);
    return known;
  }

  private onlyOurs(st: fs.Stats): boolean {
    return st.uid === this.uid && (st.mode & 0o022) === 0;
  }

  /**
   * Every name of `st`'s inode is ours, `linkFrom`'s (proven by the link through real directories),
   * or `rel` in a distinct directory of a peer release reached through directories only root can
   * change (where no one else can have added or replaced a name). Stops at the last name.
   */
  private accounted(rel: string, dir: string, fromDir: number, st: fs.Stats): boolean {
    if (st.nlink === 2) return true;
    if (this.peerRoots === undefined) return false;
    if (this.peers === undefined) {
      // Newest first (a file changed a few releases ago has its names there); each opened once and
      // looked into through its descriptor, so a release swapped in `releases/` meanwhile is not.
      const from = fs.statSync(this.from);
      this.peers = [];
      for (const root of [...this.peerRoots].reverse()) {
        let fd: number;
        try {
          fd = fs.openSync(root, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY | fs.constants.O_NOFOLLOW);
        } catch {
          continue; // pruned meanwhile, or not a directory: holds no name
        }
        this.fds.push(fd);
        const p = fs.fstatSync(fd);
        if (p.ino === from.ino && p.dev === from.dev) continue;
        this.peers.push({ root: `/proc/self/fd/${fd}`, dirs: new Map([["", this.onlyOurs(p) ? p.ino : null]]) });
      }
    }
    const seen = new Set([fromDir]);
    for (const peer of this.peers) {
      const holder = this.peerDir(peer, dir);
      if (holder === null || seen.has(holder)) continue;
      const p = fs.lstatSync(join(peer.root, rel), { throwIfNoEntry: false });
      if (p === undefined || p.ino !== st.ino || p.dev !== st.dev) continue;
      seen.add(holder);
      if (seen.size === st.nlink - 1) return true;
    }
    return false;
  }

  /** The inode of `dir` in a peer when it and every directory above are real and only root's, else null. */
  private peerDir(peer: { root: string; dirs: Map<string, number | null> }, dir: string): number | null {
    let known = peer.dirs.get(dir);
    if (known !== undefined) return known;
    const slash = dir.lastIndexOf("/");
    const parent = this.peerDir(peer, slash === -1 ? "" : dir.slice(0, slash));
    const st = parent === null ? undefined : fs.lstatSync(join(peer.root, dir), { throwIfNoEntry: false });
    known = st?.isDirectory() && this.onlyOurs(st) ? st.ino : null;
    peer.dirs.set(dir, known);
    return known;
  }
}

/** `rel` lies under a path that is not a directory of the tree (a symlink or file of the index). */
function throughNotDir(rel: string, notDirs: Set<string>): boolean {
  for (let i = rel.indexOf("/"); i !== -1; i = rel.indexOf("/", i + 1)) if (notDirs.has(rel.slice(0, i))) return true;
  return notDirs.has(rel);
}

interface Range {
  pack: number;
  start: number;
  end: number;
  chunks: ChunkRef[];
}

/** The missing chunks as byte ranges of their packs: sorted, nearby ones merged, each at most MAX_RANGE. */
export function coalesce(chunks: ChunkRef[]): Range[] {
  const sorted = [...chunks].sort((a, b) => a.pack - b.pack || a.offset - b.offset);
  const out: Range[] = [];
  for (const c of sorted) {
    const last = out.at(-1);
    const end = c.offset + c.stored;
    if (
      last &&
      last.pack === c.pack &&
      c.offset >= last.end &&
      c.offset - last.end <= GAP &&
      end - last.start <= MAX_RANGE
    ) {
      last.end = end;
      last.chunks.push(c);
    } else out.push({ pack: c.pack, start: c.offset, end, chunks: [c] });
  }
  return out;
}

/** One ranged GET read whole, retried on retryable failures; a store that ignores Range is a `DeltaError`. */
async function readRange(
  url: string,
  offset: number,
  length: number,
  o: DeltaFetchOptions,
  throttle?: (n: number, s?: AbortSignal) => Promise<void>,
): Promise<Uint8Array> {
  for (let attempt = 0; ; attempt++) {
    try {
      const { body } = await openUrl(url, { env: o.env, signal: o.signal, userAgent: o.userAgent, offset, length });
      const buf = new Uint8Array(length);
      let n = 0;
      for await (const piece of body as unknown as AsyncIterable<Uint8Array>) {
        if (n + piece.byteLength > length)
          throw new DeltaError(
            `${redact(url)}: the store sent more than the ${length} bytes asked for (Range ignored?)`,
          );
        buf.set(piece, n);
        n += piece.byteLength;
        if (throttle) await throttle(piece.byteLength, o.signal);
      }
      if (n !== length) throw new FetchError(`fetch ${redact(url)}: range ended after ${n} of ${length} bytes`, true);
      return buf;
    } catch (err) {
      if (err instanceof DeltaError || o.signal?.aborted) throw err;
      const retryable = err instanceof FetchError ? err.retryable : true;
      if (!retryable || attempt >= o.retries) throw new DeltaError(`ranged GET: ${messageOf(err)}`, { cause: err });
      o.log.info(`delta: ${messageOf(err)}; retrying in ${o.retryWaitMs / 1000}s`);
      await Bun.sleep(o.retryWaitMs);
    }
  }
}

/** Remove the spools of delta runs that died (a `kill -9` skips the `finally` that removes them). */
function sweepSpools(tmp: string): void {
  let names: string[];
  try {
    names = fs.readdirSync(tmp);
  } catch {
    return;
  }
  for (const name of names) {
    const m = /^pulldeploy-delta-(\d+)-/.exec(name);
    if (m && !pidAlive(Number(m[1]))) fs.rmSync(join(tmp, name), { recursive: true, force: true });
  }
}

function readAt(fd: number, offset: number, size: number): Uint8Array | undefined {
  const buf = new Uint8Array(size);
  let n = 0;
  while (n < size) {
    const got = fs.readSync(fd, buf, n, size - n, offset + n);
    if (got === 0) return undefined;
    n += got;
  }
  return buf;
}

/**
 * Read a seed's bytes: trusted (not to be hashed) when its file is the one recorded, unchanged since
 * (`record.ts`) and on `root`'s file system (`rootDev`: an inode number names one file there).
 */
function readSeed(
  root: string,
  rootDev: number,
  seed: Seed,
  size: number,
  record: DeltaRecord | undefined,
): { bytes: Uint8Array; trusted: boolean } | undefined {
  let fd: number;
  try {
    fd = fs.openSync(join(root, seed.rel), fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  } catch {
    return undefined;
  }
  try {
    const f = seed.recorded === undefined ? undefined : record?.file(seed.recorded);
    const st = f === undefined ? undefined : fs.fstatSync(fd);
    const bytes = readAt(fd, seed.offset, size);
    if (bytes === undefined) return undefined;
    const trusted = st !== undefined && unchanged(st, f!) && st.dev === rootDev && unchanged(fs.fstatSync(fd), f!);
    return { bytes, trusted };
  } catch {
    return undefined;
  } finally {
    fs.closeSync(fd);
  }
}

function writeAll(fd: number, b: Uint8Array, at: number): void {
  let n = 0;
  while (n < b.byteLength) n += fs.writeSync(fd, b, n, b.byteLength - n, at + n);
}

/** Sleep whenever the download is ahead of `bytesPerSec` (the archive path's cap, here per ranged GET). */
function createThrottle(bytesPerSec: number) {
  const start = performance.now();
  let total = 0;
  return async (n: number, signal?: AbortSignal) => {
    total += n;
    const ahead = (total / bytesPerSec) * 1000 - (performance.now() - start);
    if (ahead > 5 && !signal?.aborted) await Bun.sleep(ahead);
  };
}
