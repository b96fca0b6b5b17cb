/**
 * `src/delta/`: delta transfers (issue 11). It owns the content index format (`format.ts`; the
 * agent reads it into typed arrays, `compact.ts`), the content-defined chunker (`chunker.ts`),
 * publish's chunk upload (`publish.ts`), the agent's tree built from local chunks plus ranged GETs
 * (`fetch.ts`), and `gc` of packs no kept release needs (`gc.ts`). May import archive/, store/,
 * manifest/ and the shared modules; never agent/, publish/ or fleet/ (those call into it).
 *
 * Layout in the store, beside the archives (never overwritten; only `gc` deletes):
 *
 *   <to>/<role>/delta/<release-id>.idx            the release's content index (gzip'd JSON)
 *   <to>/<role>/delta/packs/<sha256>.pack         chunks, raw DEFLATE, concatenated; one pack per publish
 *
 * The manifest names the index and its sha256 (`delta_index`, `delta_index_checksum`); the index
 * names every chunk's sha256 and the rebuilt tar stream's: a signed manifest covers every byte.
 */
export { DeltaError, deltaNames, FORMAT } from "./format.ts";
export { fetchTree, type DeltaFetchOptions, type TreeResult } from "./fetch.ts";
export { recordPath } from "./record.ts";
export {
  publishDelta,
  startDelta,
  type DeltaPublished,
  type DeltaPublishOptions,
  type DeltaSession,
} from "./publish.ts";
