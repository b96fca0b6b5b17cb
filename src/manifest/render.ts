/**
 * What `publish` writes: the manifest rendered from its flags over a stretcher-style hooks file, then
 * parsed again by the agent's own parser (`parse.ts`), so that publish never uploads a manifest an
 * agent would refuse. Pure.
 */
import { Document, isMap, isScalar, parseDocument, type Scalar } from "yaml";
import { parseChecksum } from "../checksum.ts";
import { ManifestError } from "../errors.ts";
import { parseManifest, type SyncStrategyName } from "./parse.ts";
import type { Env } from "../env.ts";

export interface ManifestFields {
  dest?: string;
  /** Octal text as typed, e.g. `0755`. */
  destMode?: string;
  syncStrategy?: SyncStrategyName;
  /** `--exclude-on-dest`: replaces the hooks file's `excludes` when given. */
  excludes?: string[];
  /** A stretcher-style YAML file (commands, excludes, …). */
  /** The hooks file; `flag` is how the user named it (`--hooks`, or its old name `--manifest`), for errors. */
  hooks?: { path: string; text: string; flag?: string };
  /** `role:` in the manifest, for agents run without --role (stretcher ignores unknown keys). */
  role?: string;
}

// ------------------------------------------------------------------ the manifest

/** The hooks file's fields, read once, and what is already wrong with them. */
export interface Hooks {
  fields: Record<string, unknown>;
  problems: string[];
  /** How problems name the source: `--hooks hooks.yml` (or `--manifest hooks.yml`, as the user typed it). */
  where: string;
}

/**
 * Parse the hooks file (`--hooks FILE`, stretcher-style YAML 1.1). Syntax errors stop here; other problems wait to be
 * listed with the rest.
 */
/** Manifest fields publish writes itself: a hooks file that sets them is an error, not a silent override. */
const SET_BY_PUBLISH = {
  src: "the uploaded archive's URL",
  checksum: "the uploaded archive's",
  release_id: "the release id that KV and the agents' reports use",
};

export function readHooks(hooks: ManifestFields["hooks"]): Hooks {
  if (!hooks) return { fields: {}, problems: [], where: "manifest" };
  const where = `${hooks.flag ?? "--manifest"} ${hooks.path}`;
  const doc = parseDocument(hooks.text, {
    version: "1.1",
    merge: true,
    uniqueKeys: false,
    prettyErrors: false,
    logLevel: "error", // as parseManifest: no warnings of the yaml package's own on stderr
  });
  if (doc.errors.length > 0)
    throw new ManifestError(
      doc.errors.map((e) => `${where}: YAML syntax: ${e.message.split("\n")[0]!.trim()}`),
      true,
    );
  const root = doc.contents;
  const empty = root === null || (isScalar(root) && root.value === null);
  if (!empty && !isMap(root))
    throw new ManifestError([`${where}: expected a mapping of fields (commands, excludes, …)`], true);
  const fields = empty ? {} : (doc.toJS({ maxAliasCount: 1000 }) as Record<string, unknown>);
  const problems = Object.entries(SET_BY_PUBLISH)
    .filter(([k]) => k in fields)
    .map(([k, what]) => `${k}: set by publish (${what}); remove it from the file`);
  return { fields, problems, where };
}

/**
 * The manifest's YAML: `src`, `checksum`, `dest`, `dest_mode`, `sync_strategy`, `excludes` from the
 * flags over the hooks file's fields, then parsed again with the agent's `parseManifest`. Throws one
 * `ManifestError` with every problem, including keys the agent would ignore (a typo such as
 * `comands:`). Templates (`{{ env "A" }}`) are kept for each agent to render.
 */
export function renderManifest(
  fields: ManifestFields,
  hooks: Hooks,
  release: {
    src: string;
    checksum: string;
    releaseId: string;
    issuedAt?: string;
    deltaIndex?: { url: string; sha256: string };
  },
): string {
  const base = hooks.fields;
  const problems = [...hooks.problems];
  const strategy = fields.syncStrategy ?? base.sync_strategy;
  const merged: Record<string, unknown> = {
    src: release.src,
    checksum: release.checksum,
    dest: fields.dest ?? base.dest,
    dest_mode: fields.destMode !== undefined ? parseInt(fields.destMode, 8) : base.dest_mode,
    sync_strategy: strategy,
    // The `release` strategy names each release's directory: by its id.
    release_id: strategy === "release" ? release.releaseId : undefined,
    excludes: fields.excludes !== undefined && fields.excludes.length > 0 ? fields.excludes : base.excludes,
    issued_at: release.issuedAt,
    // Delta transfers (src/delta): set by publish only, never taken from the hooks file.
    delta_index: release.deltaIndex?.url,
    delta_index_checksum: release.deltaIndex?.sha256,
    role: fields.role ?? base.role,
  };
  for (const [k, v] of Object.entries(base)) if (!(k in merged)) merged[k] = v;
  for (const k of Object.keys(merged)) if (merged[k] === undefined) delete merged[k];
  const noDest = merged.dest === undefined || merged.dest === null;
  if (noDest)
    problems.push(
      `dest: required: pass --dest /abs/path${hooks.where === "manifest" ? "" : " or set dest in the file"}`,
    );

  const doc = new Document(merged, { version: "1.1" });
  if (typeof merged.dest_mode === "number") (doc.get("dest_mode", true) as Scalar).format = "OCT";
  const text = doc.toString({ lineWidth: 0 });
  try {
    const { manifest, warnings } = parseManifest(text, placeholderEnv());
    problems.push(...warnings.map((w) => w.replace(/^manifest: /, "")));
    if (manifest.src !== release.src) problems.push(`src: reads back as "${manifest.src}", not "${release.src}"`);
    const want = parseChecksum(release.checksum);
    if (typeof want === "string" || manifest.checksum?.hex !== want.hex)
      problems.push("checksum: does not read back as written");
  } catch (err) {
    if (!(err instanceof ManifestError)) throw err;
    problems.push(...unknownKeys(merged), ...err.problems);
    // A malformed `commands` stops the agent's parser early: ask again without it for the rest.
    if (err.fatal && "commands" in merged) {
      const { commands: _, ...rest } = merged;
      try {
        parseManifest(new Document(rest, { version: "1.1" }).toString({ lineWidth: 0 }), placeholderEnv());
      } catch (again) {
        if (again instanceof ManifestError) problems.push(...again.problems.filter((p) => !problems.includes(p)));
      }
    }
  }
  const listed = noDest ? problems.filter((p) => !p.startsWith("dest: required when")) : problems;
  if (listed.length > 0)
    throw new ManifestError(
      listed.map((p) => `${hooks.where}: ${p}`),
      true,
    );
  return text;
}

/**
 * The agent's warning about keys it would ignore, even when other problems stop its parser: asked of
 * a skeleton manifest holding every key of `fields` with no value.
 */
function unknownKeys(fields: Record<string, unknown>): string[] {
  const skeleton: Record<string, unknown> = { src: "file:///x", checksum: "0".repeat(64), dest: "/x" };
  for (const k of Object.keys(fields)) if (!(k in skeleton)) skeleton[k] = null;
  try {
    return parseManifest(new Document(skeleton, { version: "1.1" }).toString()).warnings.map((w) =>
      w.replace(/^manifest: /, ""),
    );
  } catch {
    return [];
  }
}

/**
 * Templates are rendered by each agent with its own environment. To check the structure here, every
 * variable is taken as set, to `/NAME` (so `dest: '{{ must_env "APP_DEST" }}'` still reads as absolute).
 */
export function placeholderEnv(): Env {
  return new Proxy({} as Env, { get: (_t, name) => (typeof name === "string" ? `/${name}` : undefined) });
}
