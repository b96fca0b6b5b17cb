/**
 * `rollback --role`: the fleet's side. Which recorded release to go back to, and, with a signing key,
 * a new signed statement of it: agents with `--trust-key` refuse a manifest issued before the one
 * they run (replay protection), so an intentional rollback re-signs the earlier release's manifest
 * with a fresh `issued_at` and stores it under a new URL next to the original:
 *
 *   <base>/<role>/<id>.yml  →  <base>/<role>/resigned-<UTC stamp>/<id>.yml (+ .sig)
 *
 * The release id (and so the agents' `releases/<id>` and reports) stays the same; only the
 * statement is new. Never overwrites the original manifest or signature.
 */
import { parseDocument } from "yaml";
import type { ConsulClient } from "../consul/client.ts";
import { PulldeployError, UsageError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { redact } from "../log.ts";
import { parseManifest } from "../manifest/parse.ts";
import { kvKeys, parseReleaseRecord, type ReleaseRecord } from "../records/release.ts";
import { loadPrivateKey, SIGNATURE_SUFFIX, signBytes } from "../signature.ts";
import { fetchBytes, fetchText } from "../store/sources/index.ts";
import type { Env } from "../env.ts";
import { openTarget } from "../store/targets/index.ts";
import { USER_AGENT } from "../version.ts";
import { placeholderEnv } from "../manifest/render.ts";

/** The role's recorded releases, oldest first, and its latest. */
export async function roleReleases(
  consul: ConsulClient,
  prefix: string,
  role: string,
  signal?: AbortSignal,
): Promise<{ records: ReleaseRecord[]; latest: ReleaseRecord | null }> {
  const { entries } = await consul.kvList(kvKeys.releases(prefix, role), { signal });
  const records = entries
    .map((e) => parseReleaseRecord(new TextDecoder().decode(e.value ?? new Uint8Array())))
    .filter((r): r is ReleaseRecord => typeof r !== "string")
    .sort((x, y) => x.created_at.localeCompare(y.created_at) || x.id.localeCompare(y.id));
  const { value: latest } = await consul.kvGetJson<ReleaseRecord>(kvKeys.latest(prefix, role), { signal });
  return { records, latest };
}

/** The release to roll back to: `to`, else the one before the latest. Throws a one-line error otherwise. */
export function pickRollback(
  records: ReleaseRecord[],
  latest: ReleaseRecord | null,
  to: string | undefined,
  role: string,
  prefix: string,
): ReleaseRecord {
  if (records.length === 0)
    throw new PulldeployError(`no releases recorded for role ${role} (${kvKeys.releases(prefix, role)})`);
  const ids = records.map((r) => r.id);
  if (to !== undefined) {
    const target = records.find((r) => r.id === to);
    if (!target)
      throw new UsageError(`--to: no release "${to}" recorded for role ${role} (releases: ${ids.join(", ")})`);
    return target;
  }
  const i = latest ? ids.indexOf(latest.id) : -1;
  const target = i > 0 ? records[i - 1] : undefined;
  if (!target)
    throw new PulldeployError(
      `no release before ${latest?.id ?? "the latest"} to roll back to (releases: ${ids.join(", ")})`,
    );
  return target;
}

export interface ResignOptions {
  manifestUrl: string;
  /** The Ed25519 private key file. */
  signKey: string;
  env: Env;
  log: Logger;
  signal?: AbortSignal;
  now?: () => Date;
}

/** Store `manifestUrl`'s manifest again, with `issued_at` now and a new signature; returns its URL. */
export async function resignManifest(o: ResignOptions): Promise<string> {
  const key = loadPrivateKey(o.signKey);
  const now = (o.now ?? (() => new Date()))();
  const where = `re-sign ${redact(o.manifestUrl)}`;
  const clean = o.manifestUrl.replace(/[?#].*$/, "");
  const slash = clean.lastIndexOf("/");
  const name = clean.slice(slash + 1);
  if (slash < 0 || !name.endsWith(".yml"))
    throw new PulldeployError(`${where}: expected a manifest URL ending in <id>.yml`, "publish");
  // A manifest re-signed before sits in its own resigned-… folder: the new one goes beside it.
  const base = clean.slice(0, slash).replace(/\/resigned-\d{8}T\d{9}Z$/, "");

  const original = new TextDecoder().decode(
    await fetchBytes(o.manifestUrl, { env: o.env, signal: o.signal, userAgent: USER_AGENT }),
  );
  const doc = parseDocument(original, { version: "1.1", uniqueKeys: true, logLevel: "error" });
  if (doc.errors.length > 0)
    throw new PulldeployError(
      `${where}: not a readable manifest: ${doc.errors[0]!.message.split("\n")[0]}`,
      "manifest",
    );
  doc.set("issued_at", now.toISOString());
  const text = doc.toString({ lineWidth: 0 });
  // The new statement must say exactly what the old one said, but for its issue time.
  const before = parseManifest(original, placeholderEnv()).manifest;
  const after = parseManifest(text, placeholderEnv()).manifest;
  if (JSON.stringify({ ...before, issuedAt: undefined }) !== JSON.stringify({ ...after, issuedAt: undefined })) {
    throw new PulldeployError(`${where}: the manifest does not read back the same once issued_at is set`, "manifest");
  }
  const bytes = new TextEncoder().encode(text);

  const stamp = now.toISOString().replace(/[-:.]/g, "");
  const stored = `resigned-${stamp}/${name}`;
  const target = await openTarget(base, { env: o.env, log: o.log, signal: o.signal, retries: 2, retryWaitMs: 1000 });
  try {
    await target.putBytes(
      `${stored}${SIGNATURE_SUFFIX}`,
      new TextEncoder().encode(signBytes(bytes, key)),
      "text/plain",
    );
    await target.putBytes(stored, bytes, "application/x-yaml");
    const url = target.urlOf(stored);
    o.log.info(`rollback: re-signed the manifest, issued ${now.toISOString()}: ${redact(url)}`);
    return url;
  } finally {
    target.close();
  }
}

/**
 * Whether `manifestUrl` has a signature beside it (a rollback to it without `--sign-key` would be
 * refused as a downgrade by agents with `--trust-key`). Unknown (unreadable) counts as no.
 */
export async function isSigned(manifestUrl: string, env: Env, signal?: AbortSignal): Promise<boolean> {
  try {
    await fetchText(
      `${manifestUrl}${SIGNATURE_SUFFIX}`,
      {
        env,
        signal: signal ? AbortSignal.any([signal, AbortSignal.timeout(10_000)]) : AbortSignal.timeout(10_000),
        userAgent: USER_AGENT,
      },
      4096,
    );
    return true;
  } catch {
    return false;
  }
}
