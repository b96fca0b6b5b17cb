/**
 * The extraction limits (`--max-files`, `--max-extract-size`) and their defaults, on their own: the
 * agent's flag table reads the defaults at every start, without loading the extractor.
 */
export interface ExtractLimits {
  /** Refuse archives with more entries than this (a tar bomb). */
  maxEntries: number;
  /** Refuse archives whose entries declare more bytes than this in all (meta entries included). */
  maxBytes: number;
  /**
   * Accept an archive with no entry besides its root. Off by default: syncing an empty tree empties
   * `dest` (rsync --delete, mv, or an empty release), which is rarely what a publisher meant.
   */
  allowEmpty?: boolean;
}

export const DEFAULT_LIMITS: ExtractLimits = { maxEntries: 1_000_000, maxBytes: 64 * 2 ** 30 };
