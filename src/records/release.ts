/**
 * `src/records/`: the contract the publisher, the agents and the fleet view share: release ids,
 * the KV layout, release records and node reports. Pure; may import the shared modules only.
 *
 * Releases: their ids, where they live, and how they are recorded in Consul KV. This layout is a
 * contract shared by `publish`, `fire`, the agents' reports and the fleet status: change it only
 * together with the README.
 *
 *   <prefix>/roles/<role>/latest            JSON ReleaseRecord of the role's current release
 *   <prefix>/roles/<role>/releases/<id>     JSON ReleaseRecord, one per release ever published
 *   <prefix>/roles/<role>/nodes/<node>      an agent's report (written by agents, not here)
 *
 * Stored files: `<to>/<role>/<id>.tar.gz` and `<to>/<role>/<id>.yml`, never overwritten.
 */
import type { HashAlgorithm } from "../checksum.ts";
import { isHashAlgorithm } from "../checksum.ts";

export const DEFAULT_KV_PREFIX = "pulldeploy";

/** What `latest` and `releases/<id>` hold (JSON, snake_case keys). */
export interface ReleaseRecord {
  /** `YYYYMMDDTHHMMSSZ-<first 12 hex of the checksum>`. */
  id: string;
  role: string;
  manifest_url: string;
  archive_url: string;
  algorithm: HashAlgorithm;
  /** Hex digest of the archive. */
  checksum: string;
  /** Archive bytes; null when unknown (a release recorded by `fire` from its manifest alone). */
  size: number | null;
  /** Regular files in the archive; null when unknown. */
  files: number | null;
  /** ISO 8601, UTC. */
  created_at: string;
  /** `user@host`. */
  publisher: string;
  message: string;
}

const ROLE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const ID = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z-([0-9a-f]{12})$/;

/**
 * A role names a KV directory and a path segment: letters, digits, `.`, `_`, `-`, starting with a
 * letter or digit (so never `.`, `..` or empty: an HTTP client resolves dot segments, and
 * `nodes/../latest` would be the role's `latest`).
 */
export function checkRole(role: string): string | undefined {
  return ROLE.test(role)
    ? undefined
    : `role ${printable(role)} must be 1–128 letters, digits, ".", "_" or "-", starting with a letter or digit`;
}

/** A node's name is the last segment of its report's key: the same rule as a role's. */
export function checkNode(node: string): string | undefined {
  return ROLE.test(node)
    ? undefined
    : `node name ${printable(node)} must be 1–128 letters, digits, ".", "_" or "-", starting with a letter or ` +
        "digit (it names a Consul KV key)";
}

/** A name quoted for an error message, control characters (C0, DEL, C1) escaped so the message stays one safe line. */
function printable(s: string): string {
  return JSON.stringify(s).replace(/[\u007f-\u009f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

/** The release id for an archive created at `at` with this checksum. */
export function releaseId(at: Date, checksum: string): string {
  const stamp = at
    .toISOString()
    .replace(/\.\d{3}Z$/, "Z")
    .replace(/[-:]/g, "");
  return `${stamp}-${checksum.slice(0, 12).toLowerCase()}`;
}

/** The time and checksum prefix of an id, or undefined when `s` is not one. */
export function parseReleaseId(s: string): { createdAt: Date; checksumPrefix: string } | undefined {
  const m = ID.exec(s);
  if (!m) return undefined;
  const [, y, mo, d, h, mi, sec, prefix] = m;
  const createdAt = new Date(`${y}-${mo}-${d}T${h}:${mi}:${sec}Z`);
  return Number.isNaN(createdAt.getTime()) ? undefined : { createdAt, checksumPrefix: prefix! };
}

/** The release id a stored file's URL names (`…/<id>.yml` or `…/<id>.tar.gz`), if any. */
export function releaseIdOfUrl(url: string): string | undefined {
  const m = /([^/]+?)\.(?:yml|tar\.gz)$/.exec(url.replace(/[?#].*$/, ""));
  return m && parseReleaseId(m[1]!) ? m[1] : undefined;
}

/** File names under `<to>`. */
export const storedNames = {
  archive: (role: string, id: string) => `${role}/${id}.tar.gz`,
  manifest: (role: string, id: string) => `${role}/${id}.yml`,
};

/** Consul KV keys (no leading slash). */
export const kvKeys = {
  role: (prefix: string, role: string) => `${prefix}/roles/${role}`,
  latest: (prefix: string, role: string) => `${prefix}/roles/${role}/latest`,
  release: (prefix: string, role: string, id: string) => `${prefix}/roles/${role}/releases/${id}`,
  releases: (prefix: string, role: string) => `${prefix}/roles/${role}/releases/`,
  node: (prefix: string, role: string, node: string) => `${prefix}/roles/${role}/nodes/${node}`,
};

/**
 * `--kv-prefix` without surrounding slashes; an error string when empty or when a segment is empty,
 * `.`, `..` or holds anything but letters, digits, `.`, `_`, `-` (the keys under it must stay under it).
 */
export function normalizeKvPrefix(prefix: string): string | { error: string } {
  const p = prefix.replace(/^\/+|\/+$/g, "");
  if (p === "") return { error: "the KV prefix must not be empty" };
  const bad = p.split("/").find((seg) => !/^[A-Za-z0-9._-]+$/.test(seg) || /^\.+$/.test(seg));
  if (bad !== undefined)
    return {
      error:
        `${printable(prefix)}: each segment must be letters, digits, ".", "_" or "-", and not empty, "." or ".." ` +
        `(got ${printable(bad)})`,
    };
  return p;
}

/** Parse a stored record; a string lists what is wrong. Readers of `latest` use this. */
export function parseReleaseRecord(json: string): ReleaseRecord | string {
  const r = jsonObject(json);
  if (typeof r === "string") return r;
  const problems: string[] = [];
  for (const k of ["id", "role", "manifest_url", "archive_url", "checksum", "created_at", "publisher", "message"]) {
    if (typeof r[k] !== "string") problems.push(`${k}: expected a string`);
  }
  if (typeof r.algorithm !== "string" || !isHashAlgorithm(r.algorithm))
    problems.push("algorithm: expected md5, sha1, sha256 or sha512");
  for (const k of ["size", "files"]) {
    if (r[k] !== null && !(typeof r[k] === "number" && Number.isInteger(r[k]) && (r[k] as number) >= 0))
      problems.push(`${k}: expected a whole number or null`);
  }
  if (typeof r.id === "string" && !parseReleaseId(r.id)) problems.push(`id: "${r.id}" is not a release id`);
  if (problems.length > 0) return problems.join("; ");
  return {
    id: r.id as string,
    role: r.role as string,
    manifest_url: r.manifest_url as string,
    archive_url: r.archive_url as string,
    algorithm: r.algorithm as HashAlgorithm,
    checksum: r.checksum as string,
    size: r.size as number | null,
    files: r.files as number | null,
    created_at: r.created_at as string,
    publisher: r.publisher as string,
    message: r.message as string,
  };
}

/** The stored form: fixed key order, so an identical re-PUT changes nothing. */
export function renderReleaseRecord(r: ReleaseRecord): string {
  const ordered: ReleaseRecord = {
    id: r.id,
    role: r.role,
    manifest_url: r.manifest_url,
    archive_url: r.archive_url,
    algorithm: r.algorithm,
    checksum: r.checksum,
    size: r.size,
    files: r.files,
    created_at: r.created_at,
    publisher: r.publisher,
    message: r.message,
  };
  return JSON.stringify(ordered);
}

/** A stored record's JSON as an object, or a string saying why it is not one. Pure. */
export function jsonObject(json: string): Record<string, unknown> | string {
  let v: unknown;
  try {
    v = JSON.parse(json);
  } catch (err) {
    return `not JSON: ${(err as Error).message}`;
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) return "not a JSON object";
  return v as Record<string, unknown>;
}
