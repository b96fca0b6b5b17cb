/**
 * `src/archive/`: the tar.gz formats: guarded streaming extraction (agent) and the
 * deterministic packer (publish). May import the shared modules only.
 *
 * Streaming tar extraction into a fresh directory, guarded like go-getter: entries with `..`,
 * absolute paths, paths through a symlink of the archive, hard links out of the tree, device files
 * and more than `maxEntries` entries are refused, naming the entry. Bytes are written as they arrive
 * (no copy of the archive), with synchronous writes so that memory stays flat.
 *
 * Three parts, one per concern: `TarReader` (tar-reader.ts) frames the stream into entries and holds
 * the limits, parsing each header strictly with the codec (tar-header.ts, shared with the packer's
 * writer); `Materialiser` (materialise.ts) makes the entries real under the root behind the path
 * guards; `LinkDest` (link-dest.ts) hard-links files equal to the previous release's.
 */
import { dfgOnly } from "../jit.ts";
import { ExtractError } from "../errors.ts";
import { Materialiser } from "./materialise.ts";
import { DEFAULT_LIMITS, type ExtractLimits } from "./limits.ts";
import { TarReader } from "./tar-reader.ts";

export { DEFAULT_LIMITS, type ExtractLimits } from "./limits.ts";
export { MAX_META_SIZE, parseHeader, parsePax, printable } from "./tar-header.ts";
export { safeRelative } from "./materialise.ts";

/** Feed it the decompressed tar stream with `write`, then `end`. Throws `ExtractError`. */
export class TarExtractor {
  private readonly reader: TarReader;
  private readonly tree: Materialiser;

  /**
   * @param linkFrom a previous release (or, for the rsync strategy, dest itself): a regular file whose
   *   size, mtime, mode and owner match is hard-linked from it instead of written again (as
   *   `rsync --link-dest` does), once its bytes are found equal. Nothing under `linkFrom` is ever
   *   written, truncated, chmod-ed or chown-ed: a later entry of the same name replaces the link.
   *   Its owner may be hostile (SECURITY.md, class 2): a file is linked only when reached through
   *   real directories (no symlink followed) and when every other name of its inode is accounted for.
   * @param linkPeers directories where a file of the same path may share that inode legitimately (the
   *   other releases, where it was linked before); by default `linkFrom` alone.
   */
  constructor(
    root: string,
    private readonly limits: ExtractLimits = DEFAULT_LIMITS,
    linkFrom?: string,
    linkPeers?: string[],
  ) {
    this.tree = new Materialiser(root, linkFrom, linkPeers, (dirs, name) => this.reader.countImplied(dirs, name));
    this.reader = new TarReader(limits, this.tree);
  }

  /** Entries other than meta entries (pax, long names), the root's included. */
  get entries(): number {
    return this.reader.entries;
  }
  /** Bytes the entries declare, meta entries included. */
  get bytes(): number {
    return this.reader.bytes;
  }
  /** Files hard-linked from `linkFrom` instead of written. */
  get linked(): number {
    return this.tree.links.linked;
  }
  /** The archive's own hard-link entries (type 1). */
  get hardLinkEntries(): number {
    return this.tree.hardLinkEntries;
  }

  write(chunk: Uint8Array): void {
    this.reader.write(chunk);
  }

  /** The stream ended: a partial entry means a truncated archive. Sets directory modes and times. */
  end(): void {
    try {
      this.reader.end();
    } catch (err) {
      this.abort();
      throw err;
    }
    if (this.tree.content === 0 && !this.limits.allowEmpty) {
      this.abort();
      throw new ExtractError(
        "empty archive: no entry besides its root; deploying it would empty dest (pass --allow-empty-archive " +
          "if that is what you want)",
      );
    }
    this.tree.end();
  }

  /**
   * The first linked file that is no longer as extracted, or undefined. A linked file shares its inode
   * with `linkFrom`, so whoever writes to or chmods that file in place after extraction (a `pre`
   * command, the running app) changes this tree too, and the archive's bytes are gone: the caller
   * must extract again without links. A write shows as a new mtime (or size), a chmod/chown as such.
   * Without `each`, only a file seen changing while it was compared.
   */
  changedLink(each = true): string | undefined {
    return this.tree.links.changedLink(each);
  }

  /** Close any open file; used on every failure path. */
  abort(): void {
    this.tree.abort();
  }
}

/** Compression by magic bytes: what `tar xf` would detect. */
/** A tree fetched and extracted (from the archive, or rebuilt from a delta): what the deploy needs of it. */
export interface ExtractedTree {
  /** Compressed bytes downloaded. */
  bytes: number;
  entries: number;
  /** Files hard-linked from `linkFrom`. */
  linked: number;
  /** The archive's own hard-link entries. */
  hardLinks: number;
  /**
   * With linked files: the first one changed in place since (under `linkFrom`, which shares its
   * inode), or undefined; see `TarExtractor.changedLink`. Ask right before the sync; if it names one,
   * extract again without links.
   */
  changedLink?: (each: boolean) => string | undefined;
  /** An extraction failure found while streaming; raise it after `pre`, as the phase order demands. */
  extractError?: ExtractError;
}

export type Compression = "gzip" | "none";

export function detectCompression(head: Uint8Array): Compression | string {
  if (head[0] === 0x1f && head[1] === 0x8b) return "gzip";
  if (head[0] === 0x42 && head[1] === 0x5a && head[2] === 0x68) return "bzip2 archives are not supported: use tar.gz";
  if (head[0] === 0xfd && head[1] === 0x37 && head[2] === 0x7a) return "xz archives are not supported: use tar.gz";
  if (head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f && head[3] === 0xfd)
    return "zstd archives are not supported: use tar.gz";
  return "none";
}

dfgOnly(TarExtractor);
