/**
 * The agent's side of the delta: build the release's tree from what this host already holds plus
 * the chunks it lacks, fetched with a few coalesced ranged GETs, instead of downloading the archive.
 *
 *   index   fetch the index named by the manifest, check its sha256 (covered by a signed manifest)
 *   seed    read the previous tree (`seedFrom`: the previous release, or dest): a file is cut at
 *           the new index's boundaries and each piece hashed; a file that differs is cut by content
 *           (the chunker) to find the chunks it still holds. Nothing local is trusted unhashed.
 *   plan    the chunks no local file holds; more than `maxShare` of the archive: use the archive
 *   fetch   ranges of the packs, nearby ones merged, each chunk inflated (capped) and hashed into a
 *           private spool file
 *   build   the archive's own tar stream, rebuilt from the index's entries and the verified chunks
 *           (each re-hashed as it is read), fed to the archive's `TarExtractor`: the same path
 *           checks, limits, modes, mtimes, symlinks and hard links from `linkFrom` as extraction;
 *           the stream's sha256 and size must equal the index's
 *
 * Any failure but an abort is a `DeltaError`; `fetchTree` then empties the tree and fetches the full
 * archive, saying why. The spool is removed on every path.
 */
import * as fs from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { type ExtractedTree, TarExtractor, type ExtractLimits } from "../archive/extract.ts";
import { entryHeaders } from "../archive/tar-header.ts";
import { FetchError, messageOf } from "../errors.ts";
import { redact, type Logger } from "../log.ts";
import { openUrl } from "../store/sources/index.ts";
import type { Env } from "../env.ts";
import { pidAlive } from "../pid.ts";
import { formatBytes } from "../units.ts";
import { chunkBuffer, chunkHash, fileChunks } from "./chunker.ts";
import { DeltaError, packUrl, type ChunkRef, type DeltaIndex } from "./format.ts";
import { inflateCapped } from "./inflate.ts";
import { fetchIndex } from "./read.ts";
import { pruneRecords, readRecord, unchanged, writeRecord, type RecordedFile } from "./record.ts";

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
    return await fetchDelta(o);
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
    const { index } = await fetchIndex(
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

interface Seed {
  path: string;
  offset: number;
  /** Unchanged (inode, ctime) since recorded: its bytes are read without hashing. */
  trusted?: boolean;
}

export async function fetchDelta(o: DeltaFetchOptions): Promise<TreeResult> {
  const started = performance.now();
  const opened = { env: o.env, signal: o.signal, userAgent: o.userAgent };
  const { index, bytes: indexBytes } = await fetchIndex(o.indexUrl, opened, o.limits, o.indexSha256);

  // seed
  const record = o.recordFrom === undefined ? new Map() : readRecord(o.recordFrom);
  const trustedFiles = new Set<string>();
  const seeds = seedsFrom(o.seedFrom!, index, record, o.linkPeers, trustedFiles);
  const missing: ChunkRef[] = [];
  const wanted = new Set<string>();
  let total = 0;
  for (const e of index.entries) {
    for (const i of e.chunks) {
      const c = index.chunks[i]!;
      if (wanted.has(c.hash)) continue;
      wanted.add(c.hash);
      total += c.stored;
      if (!seeds.has(c.hash)) missing.push(c);
    }
  }

  // plan
  const archiveSize = index.archiveSize ?? total;
  const toFetch = missing.reduce((n, c) => n + c.stored, 0);
  const maxShare = o.maxShare ?? 0.5;
  if (toFetch > archiveSize * maxShare) {
    throw new DeltaError(
      `${missing.length} of ${wanted.size} chunks are missing here (${formatBytes(toFetch)}, more than ` +
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
    const direct =
      o.linkFrom === undefined || o.linkFrom !== o.seedFrom
        ? new Map<string, string>()
        : linkable(o.linkFrom, index, record, trustedFiles);
    const directLinks: { rel: string; st: fs.Stats }[] = [];
    /** Paths of the index's symlinks and files so far: nothing is linked through them. */
    const notDirs = new Set<string>();
    // With trusted files (unchanged since recorded) the stream is not hashed whole: every other byte
    // is hashed chunk by chunk, and the headers come from the verified index.
    const trusting = [...seeds.values()].some((s) => s.trusted);
    const tar = trusting ? undefined : new Bun.CryptoHasher("sha256");
    let tarSize = 0;
    const feed = (b: Uint8Array) => {
      tar?.update(b);
      tarSize += b.byteLength;
      extractor.write(b);
    };
    let reused = 0;
    let trusted = 0;
    let refetched = 0;
    try {
      let n = 0;
      for (const e of index.entries) {
        // Each entry leaves a little garbage (headers, stats, buffers); collected as it goes, the
        // peak RSS of a 4,000-file redeploy was 77 MB instead of 85-93 MB, and no slower.
        if (++n % 256 === 0) Bun.gc(false);
        const header = entryHeaders(e);
        const from = direct.get(e.path);
        if (from !== undefined && !throughNotDir(e.path, notDirs)) {
          // Unchanged since recorded, and as the archive describes it: link it, read nothing (what
          // the extractor does for it after comparing every byte). Its parent came from the index.
          const to = join(o.tree, e.path);
          try {
            fs.linkSync(from, to);
            const st = fs.lstatSync(to);
            directLinks.push({ rel: e.path, st });
            notDirs.add(e.path);
            tarSize += header.byteLength + e.size + ((BLOCK - (e.size % BLOCK)) % BLOCK);
            reused += e.size;
            trusted += e.size;
            continue;
          } catch {
            fs.rmSync(to, { force: true });
            // (EXDEV, a missing parent…): through the extractor instead.
          }
        }
        if (e.type !== "dir") notDirs.add(e.path);
        feed(header);
        if (e.type !== "file") continue;
        for (const i of e.chunks) {
          const c = index.chunks[i]!;
          let at = spooled.get(c.hash);
          const seed = at === undefined ? seeds.get(c.hash) : undefined;
          let bytes = at !== undefined ? readAt(spool, at, c.size) : seed ? readSeed(seed, c.size) : undefined;
          const ok = bytes !== undefined && ((seed?.trusted ?? false) || chunkHash(bytes) === c.hash);
          if (!ok && at === undefined) {
            // The local copy changed since it was planned (or never held it): fetch this one chunk.
            seeds.delete(c.hash);
            await fetchRanges(coalesce([c]));
            refetched++;
            at = spooled.get(c.hash)!;
            bytes = readAt(spool, at, c.size);
            if (bytes === undefined || chunkHash(bytes) !== c.hash)
              throw new DeltaError(
                `${e.path}: the spooled chunk ${c.hash.slice(0, 12)} changed while the tree was built`,
              );
          } else if (!ok)
            throw new DeltaError(
              `${e.path}: the spooled chunk ${c.hash.slice(0, 12)} changed while the tree was built`,
            );
          if (at === undefined) {
            reused += c.size;
            if (seed?.trusted) trusted += c.size;
          }
          feed(bytes!);
        }
        const pad = (BLOCK - (e.size % BLOCK)) % BLOCK;
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
      writeRecord(o.recordAs, o.tree, index);
      pruneRecords(dirname(o.recordAs), o.recordAs);
    }
    const secs = (performance.now() - started) / 1000;
    const share =
      archiveSize > 0
        ? ` (${((100 * fetched) / archiveSize).toFixed(1)}% of the ${formatBytes(archiveSize)} archive)`
        : "";
    o.log.info(
      `delta: fetched ${formatBytes(fetched)}${share} in ${requests} requests: ${missing.length + refetched} ` +
        `of ${wanted.size} chunks; ${formatBytes(reused)} reused from ${o.seedFrom}` +
        (trusted > 0 ? ` (${formatBytes(trusted)} of it unchanged since recorded, not re-hashed)` : "") +
        ` (${secs.toFixed(2)}s)`,
    );
    // A file linked here shares its inode with the previous tree: whoever writes it in place from now
    // on changes this tree too; the deploy asks before the sync, as for the extractor's links.
    const changedDirect = (each: boolean) => {
      if (!each) return undefined;
      for (const { rel, st } of directLinks) {
        const now = fs.lstatSync(join(o.tree, rel), { throwIfNoEntry: false });
        if (now === undefined) continue;
        if (now.ino !== st.ino) continue;
        if (
          now.size !== st.size ||
          now.mtimeMs !== st.mtimeMs ||
          now.mode !== st.mode ||
          now.uid !== st.uid ||
          now.gid !== st.gid
        )
          return rel;
      }
      return undefined;
    };
    const linkedAll = extractor.linked + directLinks.length;
    const changedLink =
      linkedAll > 0 ? (each: boolean) => extractor.changedLink(each) ?? changedDirect(each) : undefined;
    return {
      bytes: fetched,
      entries: extractor.entries + directLinks.length,
      linked: linkedAll,
      hardLinks: extractor.hardLinkEntries,
      changedLink,
      delta:
        `delta index sha256 ${o.indexSha256} ok, ${wanted.size} chunks ` +
        `${tar ? "and the tar stream's sha256 " : ""}verified (${fetched} bytes fetched, ` +
        `${extractor.entries + directLinks.length} ` +
        `entries${linkedAll > 0 ? `, ${linkedAll} unchanged files hard-linked` : ""}, ${secs.toFixed(2)}s)`,
    };
  } finally {
    fs.closeSync(spool);
    fs.rmSync(spoolDir, { recursive: true, force: true });
  }
}

/**
 * Where each chunk of the new index can be read on this host, by hash. A file at the same path and
 * size is first cut where the index cuts it; a file that differs is cut by content. Every piece is
 * hashed: a file the app changed yields nothing it no longer holds.
 */
function seedsFrom(
  root: string,
  index: DeltaIndex,
  record: Map<string, RecordedFile>,
  peers: string[] | undefined,
  trustedFiles: Set<string>,
): Map<string, Seed> {
  const seeds = new Map<string, Seed>();
  const wanted = new Set(index.chunks.map((c) => c.hash));
  const sizeOf = new Map(index.chunks.map((c) => [c.hash, c.size]));
  const buffer = chunkBuffer();
  // Files unchanged since the last deploy recorded them: their chunks are known without reading.
  const realDirs = new Map<string, boolean>();
  for (const [rel, f] of record) {
    const st = fs.lstatSync(join(root, rel), { throwIfNoEntry: false });
    // As the extractor demands of a file it links: reached through real directories, and no name of
    // its inode unaccounted for (an owner who kept another link could write through it later).
    if (
      st === undefined ||
      !unchanged(st, f) ||
      !throughRealDirs(root, rel, realDirs) ||
      !accounted(root, rel, st, peers)
    )
      continue;
    trustedFiles.add(rel);
    let offset = 0;
    for (const [hash, size] of f.chunks) {
      // The size must agree too: the recorded chunk is read as the new index's chunk of that hash.
      if (wanted.has(hash) && sizeOf.get(hash) === size && !seeds.get(hash)?.trusted)
        seeds.set(hash, { path: join(root, rel), offset, trusted: true });
      offset += size;
    }
  }
  for (const e of index.entries) {
    if (e.type !== "file" || e.size === 0) continue;
    if (e.chunks.every((i) => seeds.has(index.chunks[i]!.hash))) continue;
    const path = join(root, e.path);
    let fd: number;
    try {
      fd = fs.openSync(path, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
    } catch {
      continue; // absent, a symlink, unreadable: nothing to reuse
    }
    try {
      const st = fs.fstatSync(fd);
      if (!st.isFile()) continue;
      let whole = st.size === e.size;
      if (whole) {
        let offset = 0;
        for (const i of e.chunks) {
          const c = index.chunks[i]!;
          if (seeds.has(c.hash)) {
            offset += c.size;
            continue;
          }
          const bytes = readAt(fd, offset, c.size);
          if (bytes !== undefined && chunkHash(bytes) === c.hash) seeds.set(c.hash, { path, offset });
          else whole = false;
          offset += c.size;
        }
      }
      if (!whole && st.size > 0) {
        for (const { bytes, offset } of fileChunks(fd, st.size, buffer)) {
          const hash = chunkHash(bytes);
          if (wanted.has(hash) && !seeds.has(hash)) seeds.set(hash, { path, offset });
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
 * Files of the new index that may be hard-linked from `linkFrom` without reading them: same path and
 * chunks as recorded, unchanged since (`record.ts`), and with the size, mtime, mode and owner (root's,
 * as extraction as root gives) that extracting the archive would give. Only as root.
 */
function linkable(
  linkFrom: string,
  index: DeltaIndex,
  record: Map<string, RecordedFile>,
  trustedFiles: Set<string>,
): Map<string, string> {
  const out = new Map<string, string>();
  if (typeof process.getuid !== "function" || process.getuid() !== 0) return out;
  for (const e of index.entries) {
    if (e.type !== "file") continue;
    const f = record.get(e.path);
    if (
      f === undefined ||
      !trustedFiles.has(e.path) ||
      f.chunks.length !== e.chunks.length ||
      !f.chunks.every(([h, n], k) => index.chunks[e.chunks[k]!]!.hash === h && index.chunks[e.chunks[k]!]!.size === n)
    )
      continue;
    const path = join(linkFrom, e.path);
    const st = fs.lstatSync(path, { throwIfNoEntry: false });
    if (st === undefined || !unchanged(st, f)) continue;
    if (
      st.size !== e.size ||
      st.mtimeMs !== e.mtime * 1000 ||
      (st.mode & 0o7777) !== e.mode ||
      st.uid !== 0 ||
      st.gid !== 0
    )
      continue;
    out.set(e.path, path);
  }
  return out;
}

/** Every directory between `root` and `rel` is a real one (no symlink followed); cached per directory. */
function throughRealDirs(root: string, rel: string, cache: Map<string, boolean>): boolean {
  for (let i = rel.indexOf("/"); i !== -1; i = rel.indexOf("/", i + 1)) {
    const dir = rel.slice(0, i);
    let ok = cache.get(dir);
    if (ok === undefined) {
      ok = fs.lstatSync(join(root, dir), { throwIfNoEntry: false })?.isDirectory() === true;
      cache.set(dir, ok);
    }
    if (!ok) return false;
  }
  return true;
}

/**
 * Every name of `st`'s inode (the file `root/rel`) is `rel` in `root` or in one of `peers` (the other
 * releases, where earlier deploys linked it): the extractor's rule before it links a file.
 */
function accounted(root: string, rel: string, st: fs.Stats, peers: string[] | undefined): boolean {
  if (st.nlink === 1) return true;
  if (peers === undefined) return false;
  const dir = rel.includes("/") ? rel.slice(0, rel.lastIndexOf("/")) : "";
  const holder = (base: string) =>
    dir === ""
      ? fs.statSync(base, { throwIfNoEntry: false })
      : fs.lstatSync(join(base, dir), { throwIfNoEntry: false });
  const seen = new Set<number>();
  const own = holder(root);
  if (own === undefined) return false;
  seen.add(own.ino);
  for (const peer of peers) {
    const p = fs.lstatSync(join(peer, rel), { throwIfNoEntry: false });
    if (p === undefined || p.ino !== st.ino || p.dev !== st.dev) continue;
    const h = holder(peer);
    if (h === undefined || !h.isDirectory() || seen.has(h.ino)) continue;
    seen.add(h.ino);
  }
  return seen.size === st.nlink;
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

function readSeed(seed: Seed, size: number): Uint8Array | undefined {
  let fd: number;
  try {
    fd = fs.openSync(seed.path, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  } catch {
    return undefined;
  }
  try {
    return readAt(fd, seed.offset, size);
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
