/**
 * `src/manifest/`: the manifest's parse and validation, its templates, and (for publish) its
 * rendering. Pure; may import store/schemes.ts and the shared modules only.
 *
 * The manifest: stretcher's YAML, parsed with YAML 1.1 rules (go-yaml v2) into a typed value.
 * Pure: text and environment in, `Manifest` out, or a `ManifestError` listing every problem.
 */
import { posix } from "node:path";
import { isAlias, isMap, isScalar, isSeq, parseDocument, type Document, type Node } from "yaml";
import { parseChecksum, type Checksum } from "../checksum.ts";
import type { Env } from "../env.ts";
import { ManifestError, oneLine } from "../errors.ts";
import { isSourceScheme, schemeOf, SOURCE_SCHEMES } from "../store/schemes.ts";
import { renderTemplate } from "./template.ts";

export const SYNC_STRATEGIES = ["rsync", "mv", "release"] as const;
export type SyncStrategyName = (typeof SYNC_STRATEGIES)[number];

/** `validate` is pulldeploy's own: it runs after a `release` switch and reverts it on failure. */
export const COMMAND_PHASES = ["pre", "post", "validate", "success", "failure"] as const;
export type CommandPhase = (typeof COMMAND_PHASES)[number];

export interface Commands {
  pre: string[];
  post: string[];
  validate: string[];
  success: string[];
  failure: string[];
  /** Extra environment for every command. */
  env: Record<string, string>;
}

export interface Manifest {
  /** Absent: commands-only mode. */
  src?: string;
  checksum?: Checksum;
  dest?: string;
  destMode: number;
  syncStrategy: SyncStrategyName;
  commands: Commands;
  excludes: string[];
  excludeFrom?: string;
  /** The release's name (publish writes it): reports use it, and the `release` strategy names its directory by it. */
  releaseId?: string;
  /** `release` strategy: how many releases to keep (never pruning current or previous). */
  keepReleases: number;
  /** `release` strategy: paths linked from `<dest>/shared/` into each release. */
  sharedPaths: string[];
  /**
   * When the manifest was issued (signed), ISO 8601 UTC; publish and a signing rollback write it. With
   * trust keys the agent refuses a manifest issued before the last one it deployed to the same dest.
   */
  issuedAt?: string;
  /** The release's content index for delta transfers (pulldeploy's own; stretcher ignores it). */
  deltaIndex?: { url: string; sha256: string };
  /** The servers' role (publish writes it): agents without --role report and take part in rollouts under it. */
  role?: string;
}

export interface ParsedManifest {
  manifest: Manifest;
  /** Non-fatal notes, e.g. unknown keys. */
  warnings: string[];
}

const KNOWN_KEYS = [
  "src",
  "checksum",
  "dest",
  "dest_mode",
  "sync_strategy",
  "commands",
  "excludes",
  "exclude_from",
  "release_id",
  "keep_releases",
  "shared_paths",
  "issued_at",
  "delta_index",
  "delta_index_checksum",
  "role",
];
const DEFAULT_DEST_MODE = 0o755;
export const DEFAULT_KEEP_RELEASES = 5;

/**
 * Parse and validate. Throws `ManifestError` with every problem; `fatal` is set when the YAML itself or
 * the `commands` section is unusable, so that no command may run.
 */
export function parseManifest(text: string, env: Env = {}): ParsedManifest {
  const rendered = renderTemplate(text, env);
  // Duplicate keys are fatal (go-yaml v2 silently took the last one: a second `commands:` or `dest:`
  // further down would replace what a reviewer read). `<<` merge keys may repeat.
  // logLevel "error": the yaml package would print its warnings (a mapping key that is itself a
  // collection) straight to stderr, as lines of their own; what matters of them is reported below.
  const doc = parseDocument(rendered.text, {
    version: "1.1",
    merge: true,
    uniqueKeys: sameKey,
    prettyErrors: false,
    logLevel: "error",
  });
  if (doc.errors.length > 0) {
    throw new ManifestError(
      doc.errors.map((e) => yamlProblem(e, rendered.text)),
      true,
    );
  }
  const root = doc.contents as Node | null;
  if (root === null || !isMap(root)) {
    throw new ManifestError(
      [`YAML: expected a mapping of fields (src, checksum, dest, commands…), got ${describe(root)}`],
      true,
    );
  }
  let data: Record<string, unknown>;
  try {
    data = doc.toJS({ maxAliasCount: 1000 }) as Record<string, unknown>;
  } catch (err) {
    // A bad merge (`<<: *x` of a scalar) or an alias bomb: the yaml package throws a plain Error.
    throw new ManifestError([`YAML: ${firstLine((err as Error).message)}`], true);
  }
  const problems: string[] = rendered.missing.map((name) => `must_env: environment variable ${name} is not set`);
  const warnings: string[] = [];

  const unknown = Object.keys(data).filter((k) => !KNOWN_KEYS.includes(k));
  // A key may hold any text (a collection key is stringified over several lines): one line each.
  if (unknown.length > 0) warnings.push(`manifest: ignoring unknown keys: ${unknown.map(oneLine).join(", ")}`);

  // commands first: a malformed commands section is fatal (no failure command can be trusted).
  const cmdProblems: string[] = [];
  const deref = (n: unknown): Node | null => resolveAlias(doc, n);
  const commands = readCommands(lookup(root, "commands", deref), cmdProblems, deref);
  if (cmdProblems.length > 0) throw new ManifestError([...cmdProblems, ...problems], true);

  const field = (key: string) => lookup(root, key, deref);
  const src = optionalString(field("src"), "src", problems);
  if (src !== undefined) {
    const scheme = schemeOf(src);
    if (CONTROL.test(src)) {
      problems.push(`src: a URL holds no control characters, got ${JSON.stringify(src)}`);
    } else if (!isSourceScheme(scheme)) {
      problems.push(
        scheme === undefined
          ? `src: "${src}" is not a URL: a scheme is required (${SOURCE_SCHEMES.join(", ")})`
          : `src: unknown scheme "${scheme}" (valid: ${SOURCE_SCHEMES.join(", ")})`,
      );
    }
  }

  let checksum: Checksum | undefined;
  const rawChecksum = optionalString(field("checksum"), "checksum", problems);
  if (rawChecksum !== undefined) {
    const c = parseChecksum(rawChecksum);
    if (typeof c === "string") problems.push(`checksum: ${c}`);
    else checksum = c;
  } else if (src !== undefined && field("checksum") === null) {
    problems.push("checksum: required when src is set");
  }

  const dest = optionalString(field("dest"), "dest", problems);
  if (dest !== undefined) {
    const bad = destProblem(dest);
    if (bad) problems.push(`dest: ${bad}`);
  } else if (src !== undefined) {
    problems.push("dest: required when src is set");
  }

  let destMode = DEFAULT_DEST_MODE;
  if (data.dest_mode !== undefined && data.dest_mode !== null) {
    const m = data.dest_mode;
    const text = scalarText(field("dest_mode"));
    if (text !== undefined && !/^0[0-7]{3,4}$/.test(text) && !(typeof m === "string" && /^[0-7]{3,4}$/.test(m))) {
      // go-yaml v2 reads an unquoted `755` as decimal (mode 01363), and `0o755` is YAML 1.2 only.
      warnings.push(
        `dest_mode: ${JSON.stringify(text)} is not a 3–4 digit octal mode; write it with a leading zero, e.g. 0755`,
      );
    }
    const n = typeof m === "number" ? m : typeof m === "string" && /^0?[0-7]{1,4}$/.test(m) ? parseInt(m, 8) : NaN;
    if (!Number.isInteger(n) || n < 0 || n > 0o7777)
      problems.push(`dest_mode: expected an octal mode like 0755, got ${JSON.stringify(m)}`);
    else destMode = n;
  }

  let syncStrategy: SyncStrategyName = "rsync";
  if (data.sync_strategy !== undefined && data.sync_strategy !== null) {
    const s = String(data.sync_strategy);
    if ((SYNC_STRATEGIES as readonly string[]).includes(s)) syncStrategy = s as SyncStrategyName;
    else problems.push(`sync_strategy: unknown strategy "${s}" (valid: ${SYNC_STRATEGIES.join(", ")})`);
  }

  const excludes: string[] = [];
  const rawExcludes = lookup(root, "excludes", deref);
  if (rawExcludes !== undefined && rawExcludes !== null && !(isScalar(rawExcludes) && rawExcludes.value === null)) {
    if (!isSeq(rawExcludes)) problems.push(`excludes: expected a list of patterns, got ${describe(rawExcludes)}`);
    else
      rawExcludes.items.forEach((item, i) => {
        const s = scalarText(deref(item));
        if (s === undefined) problems.push(`excludes[${i}]: expected a pattern string, got ${describe(item as Node)}`);
        else if (s !== "") excludes.push(s);
      });
  }

  const excludeFrom = optionalString(field("exclude_from"), "exclude_from", problems);
  if (excludeFrom !== undefined && (excludeFrom.startsWith("/") || excludeFrom.split("/").includes(".."))) {
    problems.push(`exclude_from: must be a relative path inside the archive, got "${excludeFrom}"`);
  }

  const releaseId = optionalString(field("release_id"), "release_id", problems);
  if (releaseId !== undefined && !/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(releaseId)) {
    problems.push(`release_id: use letters, digits, ".", "_" and "-" only (max 128), got "${releaseId}"`);
  }
  // Not a problem when unusable: stretcher ignored this key, so a manifest that has one must still deploy.
  let role = optionalString(field("role"), "role", warnings);
  if (role !== undefined && !/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(role)) {
    warnings.push(`manifest: ignoring role "${role}": use letters, digits, ".", "_" and "-" only (max 128)`);
    role = undefined;
  }
  let keepReleases = DEFAULT_KEEP_RELEASES;
  const rawKeep = field("keep_releases");
  if (rawKeep !== null && !(isScalar(rawKeep) && rawKeep.value === null)) {
    const k = scalarText(rawKeep);
    if (k === undefined || !/^\d+$/.test(k) || Number(k) < 2)
      problems.push(
        `keep_releases: expected a whole number ≥ 2 (current and previous are always kept), got ${describe(rawKeep)}`,
      );
    else keepReleases = Number(k);
  }
  const sharedPaths: string[] = [];
  const rawShared = field("shared_paths");
  if (rawShared !== null && !(isScalar(rawShared) && rawShared.value === null)) {
    if (!isSeq(rawShared)) problems.push(`shared_paths: expected a list of relative paths, got ${describe(rawShared)}`);
    else
      rawShared.items.forEach((item, i) => {
        const p = scalarText(deref(item));
        const norm = p === undefined ? "" : posix.normalize(p).replace(/\/+$/, "");
        // "." or "shared/.." would link the release directory itself, "" is no path at all.
        if (
          p === undefined ||
          p === "" ||
          p.startsWith("/") ||
          p.split("/").includes("..") ||
          norm === "." ||
          norm === "" ||
          CONTROL.test(p)
        ) {
          problems.push(
            `shared_paths[${i}]: expected a relative path inside the release, got ${describe(deref(item))}`,
          );
        } else sharedPaths.push(norm);
      });
  }
  const issuedText = optionalString(field("issued_at"), "issued_at", problems);
  let issuedAt: string | undefined;
  if (issuedText !== undefined) {
    const ms = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$/.test(issuedText)
      ? Date.parse(issuedText)
      : Number.NaN;
    // Round-trip the date and time: 2026-02-30 must not roll over into March.
    if (Number.isFinite(ms) && new Date(ms).toISOString().slice(0, 19) === issuedText.slice(0, 19))
      issuedAt = new Date(ms).toISOString();
    else problems.push(`issued_at: expected an ISO 8601 UTC time like 2026-01-31T12:00:00Z, got "${issuedText}"`);
  }
  let deltaIndex: Manifest["deltaIndex"];
  const rawIndex = optionalString(field("delta_index"), "delta_index", problems);
  const rawIndexSum = optionalString(field("delta_index_checksum"), "delta_index_checksum", problems);
  if (rawIndex !== undefined || rawIndexSum !== undefined) {
    const sum = rawIndexSum === undefined ? undefined : parseChecksum(rawIndexSum.replace(/^sha256:/i, ""));
    if (rawIndex === undefined) problems.push("delta_index: required when delta_index_checksum is set");
    else if (!isSourceScheme(schemeOf(rawIndex)))
      problems.push(`delta_index: "${rawIndex}" is not a URL the agent can fetch (${SOURCE_SCHEMES.join(", ")})`);
    if (sum === undefined)
      problems.push("delta_index_checksum: required when delta_index is set (the index's sha256, 64 hex)");
    else if (typeof sum === "string" || sum.algorithm !== "sha256")
      problems.push(`delta_index_checksum: expected the index's sha256 (64 hex), got "${rawIndexSum}"`);
    else if (rawIndex !== undefined) deltaIndex = { url: rawIndex, sha256: sum.hex };
  }
  const releaseOnly = { validate: commands.validate.length > 0, shared_paths: sharedPaths.length > 0 };
  if (syncStrategy !== "release") {
    for (const [key, used] of Object.entries(releaseOnly)) {
      if (used)
        problems.push(`${key === "validate" ? "commands.validate" : key}: only used with sync_strategy: release`);
    }
  }

  if (problems.length > 0) throw new ManifestError(problems, false, { failure: commands.failure, env: commands.env });
  return {
    manifest: {
      src,
      checksum,
      dest,
      destMode,
      syncStrategy,
      commands,
      excludes,
      excludeFrom,
      releaseId,
      keepReleases,
      sharedPaths,
      issuedAt,
      ...(deltaIndex ? { deltaIndex } : {}),
      ...(role !== undefined ? { role } : {}),
    },
    warnings,
  };
}

const CONTROL = /[\u0000-\u001f\u007f]/;

/**
 * Directories a deploy must never own: `rsync --delete` or `mv` into them would wipe the system.
 * Compared after normalising `..`, `//` and a trailing slash.
 */
const SYSTEM_DIRS = new Set([
  "/",
  "/bin",
  "/boot",
  "/dev",
  "/etc",
  "/home",
  "/lib",
  "/lib32",
  "/lib64",
  "/libx32",
  "/media",
  "/mnt",
  "/opt",
  "/proc",
  "/root",
  "/run",
  "/sbin",
  "/snap",
  "/srv",
  "/sys",
  "/tmp",
  "/usr",
  "/usr/bin",
  "/usr/include",
  "/usr/lib",
  "/usr/lib32",
  "/usr/lib64",
  "/usr/libexec",
  "/usr/local",
  "/usr/local/bin",
  "/usr/local/lib",
  "/usr/local/sbin",
  "/usr/sbin",
  "/usr/share",
  "/usr/src",
  "/var",
  "/var/cache",
  "/var/lib",
  "/var/log",
  "/var/mail",
  "/var/run",
  "/var/spool",
  "/var/tmp",
  "/nix",
  "/nix/store",
]);

/** Why `dest` is unusable, or undefined. */
function destProblem(dest: string): string | undefined {
  if (!dest.startsWith("/")) return `must be an absolute path, got "${dest}"`;
  if (CONTROL.test(dest)) return `contains a control character: ${JSON.stringify(dest)}`;
  const norm = posix.normalize(dest).replace(/(.)\/+$/, "$1");
  if (SYSTEM_DIRS.has(norm)) {
    const shown = norm === dest ? `"${dest}"` : `"${dest}" (${norm})`;
    return (
      `${shown} is a system directory: a deploy replaces its contents; use a directory of the app's own, e.g. ` +
      "/srv/app"
    );
  }
  return undefined;
}

function readCommands(node: Node | null, problems: string[], deref: (n: unknown) => Node | null): Commands {
  const commands: Commands = { pre: [], post: [], validate: [], success: [], failure: [], env: {} };
  if (node === undefined || node === null || (isScalar(node) && node.value === null)) return commands;
  if (!isMap(node)) {
    problems.push(`commands: expected a mapping with pre, post, success, failure, env; got ${describe(node)}`);
    return commands;
  }
  for (const pair of node.items) {
    const key = isScalar(pair.key) ? String(pair.key.value) : String(pair.key);
    const value = deref(pair.value);
    if (key === "env") {
      if (value === null || (isScalar(value) && value.value === null)) continue;
      if (!isMap(value)) {
        problems.push(`commands.env: expected a mapping of NAME: value, got ${describe(value)}`);
        continue;
      }
      for (const p of value.items) {
        const name = isScalar(p.key) ? String(p.key.value) : "";
        const pv = deref(p.value);
        const v = pv === null ? "" : scalarText(pv);
        if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name))
          problems.push(`commands.env: "${name}" is not a valid variable name`);
        else if (v === undefined) problems.push(`commands.env.${name}: expected a scalar value, got ${describe(pv)}`);
        else commands.env[name] = v;
      }
      continue;
    }
    if (!(COMMAND_PHASES as readonly string[]).includes(key)) continue; // unknown phases ignored, as stretcher
    const list = commands[key as CommandPhase];
    if (value === null || (isScalar(value) && value.value === null)) continue;
    if (!isSeq(value)) {
      problems.push(`commands.${key}: expected a list of shell commands, got ${describe(value)}`);
      continue;
    }
    value.items.forEach((raw, i) => {
      const item = deref(raw);
      if (item === null || (isScalar(item) && item.value === null)) return; // `- ` is a no-op
      const s = scalarText(item as Node);
      if (s === undefined) {
        const hint = isMap(item) ? ' (quote items that contain ": ")' : "";
        problems.push(`commands.${key}[${i}]: expected a string, got ${describe(item as Node)}${hint}`);
      } else list.push(s);
    });
  }
  return commands;
}

/** A key of a mapping, following `<<` merge keys (YAML 1.1) like go-yaml does; explicit keys win. */
function lookup(map: Node, key: string, deref: (n: unknown) => Node | null, depth = 0): Node | null {
  if (!isMap(map) || depth > 20) return null;
  const merges: Node[] = [];
  for (const pair of map.items) {
    const raw = isScalar(pair.key) ? pair.key.value : pair.key;
    const k = typeof raw === "symbol" ? raw.description : String(raw);
    if (k === key) return deref(pair.value);
    if (k === "<<") {
      const v = deref(pair.value);
      if (v && isSeq(v)) for (const item of v.items) merges.push(deref(item)!);
      else if (v) merges.push(v);
    }
  }
  for (const m of merges) {
    const found = lookup(m, key, deref, depth + 1);
    if (found !== null) return found;
  }
  return null;
}

/** Follow `*anchor` references to the node they name. */
function resolveAlias(doc: Document, n: unknown): Node | null {
  let node = (n ?? null) as Node | null;
  for (let i = 0; i < 100 && node !== null && isAlias(node); i++) node = (node.resolve(doc) ?? null) as Node | null;
  return node;
}

/** A scalar as go-yaml v2 gives it to a string field: the source text, not the resolved bool or number. */
function scalarText(node: Node | null): string | undefined {
  if (node === null || !isScalar(node)) return undefined;
  if (node.value === null) return "";
  if (typeof node.value === "string") return node.value;
  return node.source ?? String(node.value);
}

/** A string field, read as go-yaml v2 would into a Go string: the scalar's source text (`0755`, `1e5`…). */
function optionalString(field: Node | null, key: string, problems: string[]): string | undefined {
  if (field === null || (isScalar(field) && field.value === null)) return undefined;
  const s = scalarText(field);
  if (s === undefined) {
    problems.push(`${key}: expected a string, got ${describe(field)}`);
    return undefined;
  }
  return s === "" ? undefined : s;
}

function describe(node: unknown): string {
  if (node === null || node === undefined) return "nothing";
  if (isMap(node)) return "a mapping";
  if (isSeq(node)) return "a list";
  if (isScalar(node)) return JSON.stringify(node.value);
  return typeof node;
}

/** Two mapping keys are the same key when their text is (`1` and `'1'` both read as "1" here). */
function sameKey(a: unknown, b: unknown): boolean {
  const text = (k: unknown) => {
    const v = isScalar(k) ? k.value : k;
    if (typeof v === "symbol" || v === "<<") return undefined; // merge keys
    return v !== null && typeof v === "object" ? undefined : String(v);
  };
  const ta = text(a);
  return ta === undefined ? a === b : ta === text(b);
}

function yamlProblem(e: { code: string; message: string; pos: [number, number] }, text: string): string {
  if (e.code !== "DUPLICATE_KEY") return `YAML syntax: ${firstLine(e.message)}`;
  const line = text.slice(0, e.pos[0]).split("\n").length;
  const rest = text.slice(e.pos[0]).split("\n")[0]!;
  const key = /^(["']?)(.*?)\1\s*:/.exec(rest)?.[2] ?? rest.trim();
  return (
    `YAML: duplicate key ${JSON.stringify(key)} (line ${line}): each key may appear once in a mapping; remove or ` +
    "merge the repeats"
  );
}

function firstLine(s: string): string {
  return s.split("\n")[0]!.trim();
}
