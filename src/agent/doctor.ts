/**
 * `pulldeploy doctor`: whether this host can deploy, before the first release does. Two halves:
 * `gatherFacts` (the I/O shell: every probe, each caught, never throwing) and `CHECKS` (a pure table:
 * facts → one row each of ok / warn / fail / skip, a detail and one line of advice).
 *
 * The probes that write are harmless by construction: with `--role`, a check-and-set write of the
 * node's own report key (`<prefix>/roles/<role>/nodes/<node>`, the key the agent writes, so that a
 * token scoped to the role is judged by what it must do) at an index no key can have: Consul checks
 * the token's `key:write` first and then refuses the write, changing nothing; without a role, a key
 * `<prefix>/doctor/<node>` written and deleted; a session created and destroyed at once, and a user
 * event whose node filter (`^$`) matches no node, so that no agent anywhere hands it to a watch
 * (Consul still checks the token's `event:write` on its name when it is fired).
 */
import * as fs from "node:fs";
import type { ConsulClient } from "../consul/client.ts";
import type { Env } from "../env.ts";
import { messageOf } from "../errors.ts";
import { parseManifest } from "../manifest/parse.ts";
import { kvKeys, parseReleaseRecord, type ReleaseRecord } from "../records/release.ts";
import { loadPublicKey } from "../signature.ts";
import { fetchText } from "../store/sources/index.ts";
import { checkDest, writableByOthers } from "../sync/nofollow.ts";
import { formatBytes } from "../units.ts";
import { USER_AGENT, VERSION } from "../version.ts";

export type CheckStatus = "ok" | "warn" | "fail" | "skip";

export interface CheckRow {
  check: string;
  status: CheckStatus;
  detail: string;
  /** What to do about it (for ok rows: what was checked). */
  advice: string;
}

/** A probe's outcome: done, refused by Consul (`denied`: 401/403), failed otherwise, or not tried and why. */
export type Probe = { ok: true } | { ok: false; denied: boolean; error: string } | { skipped: string };

export interface StatFacts {
  uid: number;
  mode: number;
  isDir: boolean;
}

export interface HostFacts {
  uid: number;
  prefix: string;
  role?: string;
  consulAddress: string;
  /** The Consul agent answered (any HTTP answer), or why not. */
  consul: { ok: true } | { ok: false; error: string };
  node: { name: string; from: "flag" | "consul" | "hostname"; error?: string };
  kvRead: Probe;
  kvWrite: Probe;
  event: Probe & { name?: string };
  session: Probe;
  skewMs?: number;
  latest?: { record: ReleaseRecord } | { none: true } | { error: string };
  stateDir: { path: string; stat?: StatFacts; error?: string; freeBytes?: number };
  tools: Record<"rsync" | "tar", { path?: string; version?: string; error?: string }>;
  dest?: {
    path: string;
    from: "flag" | "manifest";
    stat?: StatFacts;
    error?: string;
    othersCanWrite?: string;
    refused?: string;
  };
  destError?: string;
  trustKeys: { file: string; error?: string }[];
}

const SKEW_WARN_MS = 5_000;
/** S3 refuses SigV4 requests signed more than 15 minutes off its clock. */
const SKEW_FAIL_MS = 15 * 60_000;

const denyAdvice = (f: HostFacts, what: string) =>
  f.consul.ok
    ? `give the agent's token (--consul-token or $CONSUL_HTTP_TOKEN) ${what}`
    : `make Consul at ${f.consulAddress} reachable first (--consul-addr or $CONSUL_HTTP_ADDR)`;

function probeRow(
  check: string,
  p: Probe,
  okDetail: string,
  advice: string,
  failStatus: CheckStatus = "fail",
): CheckRow {
  if ("skipped" in p) return { check, status: "skip", detail: `not checked: ${p.skipped}`, advice };
  if (p.ok) return { check, status: "ok", detail: okDetail, advice };
  return { check, status: failStatus, detail: p.error, advice };
}

/** The checks, in the order they are shown: each reads the facts only. */
export const CHECKS: ((f: HostFacts) => CheckRow)[] = [
  (f) =>
    f.consul.ok
      ? {
          check: "consul",
          status: "ok",
          detail: `${f.consulAddress} answers`,
          advice: "the agent reports to it and reads releases from it",
        }
      : {
          check: "consul",
          status: "fail",
          detail: f.consul.error,
          advice: "start the local Consul agent or point --consul-addr / $CONSUL_HTTP_ADDR at it",
        },
  (f) => {
    if (f.node.from === "consul")
      return {
        check: "node name",
        status: "ok",
        detail: `${f.node.name} (the Consul agent's)`,
        advice: "reports go under nodes/<this name>",
      };
    if (f.node.from === "flag")
      return {
        check: "node name",
        status: "ok",
        detail: `${f.node.name} (--node)`,
        advice: "pass the same --node to the agent",
      };
    return {
      check: "node name",
      status: "warn",
      detail:
        `${f.node.name} (the host name: the Consul agent's node name is ` +
        `unknown${f.node.error ? `: ${f.node.error}` : ""})`,
      advice: 'give the token agent:read (node_prefix "" read), or pass --node NAME to the agent',
    };
  },
  (f) =>
    probeRow(
      "kv read",
      f.kvRead,
      `read ${f.role ? `${f.prefix}/roles/${f.role}/latest` : `${f.prefix}/doctor/${f.node.name}`}`,
      denyAdvice(f, `key_prefix "${f.prefix}/" read`),
    ),
  (f) =>
    probeRow(
      "kv write",
      f.kvWrite,
      f.role
        ? `may write ${kvKeys.node(f.prefix, f.role, f.node.name)} ` +
            "(a check-and-set write Consul refused, after the ACL check)"
        : `wrote and deleted ${f.prefix}/doctor/${f.node.name}`,
      denyAdvice(f, `key_prefix "${f.prefix}/" write (the agent writes ${f.prefix}/roles/<role>/nodes/<node>)`),
    ),
  (f) =>
    probeRow(
      "event fire",
      f.event,
      `fired ${f.event.name} to no node (filter ^$)`,
      denyAdvice(f, `event_prefix "" write, if this host also publishes (the agent itself fires no events)`),
      "warn",
    ),
  (f) =>
    probeRow(
      "sessions",
      f.session,
      "created and destroyed one",
      denyAdvice(f, `session_prefix "" write (for locks)`),
      "warn",
    ),
  (f) => {
    const check = "clock";
    if (f.skewMs === undefined)
      return {
        check,
        status: "skip",
        detail: "not checked: Consul did not answer",
        advice: "run doctor again once Consul answers",
      };
    const s = Math.abs(f.skewMs);
    const detail =
      `${f.skewMs >= 0 ? "behind" : "ahead of"} Consul by ${(s / 1000).toFixed(1)}s (±1s: Consul's Date header ` +
      "has whole seconds)";
    const advice =
      "sync the clock (systemd-timesyncd, chrony): S3 refuses requests signed 15 min off, and release ages read wrong";
    if (s > SKEW_FAIL_MS) return { check, status: "fail", detail, advice };
    if (s > SKEW_WARN_MS) return { check, status: "warn", detail, advice };
    return { check, status: "ok", detail, advice };
  },
  (f) => {
    const check = "latest release";
    if (!f.role)
      return {
        check,
        status: "skip",
        detail: "not checked: no --role",
        advice: "pass --role to check the role's latest release, its dest and its size",
      };
    if (!f.latest) {
      const why = f.consul.ok ? "the KV read failed (see kv read)" : "Consul did not answer";
      return {
        check,
        status: "skip",
        detail: `not checked: ${why}`,
        advice: "run doctor again once the kv read is ok",
      };
    }
    if ("error" in f.latest)
      return {
        check,
        status: "fail",
        detail: f.latest.error,
        advice: `publish again, or fix the record at ${f.prefix}/roles/${f.role}/latest`,
      };
    if ("none" in f.latest)
      return {
        check,
        status: "warn",
        detail: `none recorded for ${f.role} yet`,
        advice: `pulldeploy publish --role ${f.role} records one; or check --kv-prefix`,
      };
    const r = f.latest.record;
    return {
      check,
      status: "ok",
      detail: `${r.id}${r.size !== null ? `, ${formatBytes(r.size)}` : ""}`,
      advice: "what --from-kv and --follow deploy",
    };
  },
  (f) => {
    const check = "state dir";
    const d = f.stateDir;
    if (d.error !== undefined || d.stat === undefined) {
      return {
        check,
        status: "warn",
        detail: `${d.path}: ${d.error ?? "missing"}`,
        advice:
          `create it (mkdir -m 0700 ${d.path}) or pass --state-dir; without it the agent has no lock and no ` +
          "duplicate detection",
      };
    }
    const mode = (d.stat.mode & 0o7777).toString(8).padStart(4, "0");
    if (!d.stat.isDir)
      return { check, status: "fail", detail: `${d.path} is not a directory`, advice: "remove it or pass --state-dir" };
    if (d.stat.uid !== f.uid)
      return {
        check,
        status: "fail",
        detail: `${d.path} is owned by uid ${d.stat.uid}, not the agent's uid ${f.uid}`,
        advice: `chown ${f.uid} ${d.path}: its owner can forge the agent's state and lock`,
      };
    if ((d.stat.mode & 0o022) !== 0)
      return {
        check,
        status: "fail",
        detail: `${d.path} is writable by its group or others (mode ${mode})`,
        advice: `chmod 0700 ${d.path}`,
      };
    const size = f.latest && "record" in f.latest ? f.latest.record.size : null;
    const free = d.freeBytes;
    const freeText = free !== undefined ? `, ${formatBytes(free)} free` : "";
    const detail = `${d.path}, uid ${d.stat.uid}, mode ${mode}${freeText}`;
    if (free !== undefined && size !== null && free < size) {
      return {
        check,
        status: "fail",
        detail: `${detail}, less than the latest release's ${formatBytes(size)}`,
        advice: "free disk space on that file system before the next deploy",
      };
    }
    return {
      check,
      status: "ok",
      detail: size !== null ? `${detail} (latest release ${formatBytes(size)})` : detail,
      advice: "the agent's lock, state and pending report",
    };
  },
  (f) =>
    toolRow("rsync", f, "fail", "install rsync (apt-get install rsync): the rsync sync strategy (the default) runs it"),
  (f) =>
    toolRow(
      "tar",
      f,
      "warn",
      "install tar (apt-get install tar): hooks and operators expect it; the agent extracts archives itself",
    ),
  (f) => {
    const check = "dest";
    if (!f.dest)
      return {
        check,
        status: "skip",
        detail: `not checked: ${f.destError ?? "no --dest and no --role"}`,
        advice: "pass --dest PATH, or --role to read dest from the latest manifest",
      };
    const d = f.dest;
    const from = d.from === "flag" ? "--dest" : "latest manifest";
    if (d.refused)
      return {
        check,
        status: "fail",
        detail: d.refused,
        advice: "set dest to the real path, or make the link root's in a directory only root can write",
      };
    if (d.error !== undefined)
      return {
        check,
        status: "fail",
        detail: `${d.path} (${from}): ${d.error}`,
        advice: "fix dest's path or permissions",
      };
    if (!d.stat)
      return {
        check,
        status: "warn",
        detail: `${d.path} (${from}) does not exist yet`,
        advice: "the first deploy creates it; create it now to choose its owner",
      };
    if (!d.stat.isDir)
      return {
        check,
        status: "fail",
        detail: `${d.path} (${from}) is not a directory`,
        advice: "remove it or change dest in the manifest",
      };
    const mode = (d.stat.mode & 0o7777).toString(8).padStart(4, "0");
    const detail = `${d.path} (${from}), uid ${d.stat.uid}, mode ${mode}`;
    if (d.othersCanWrite !== undefined && worldWritable(d.othersCanWrite)) {
      return {
        check,
        status: "fail",
        detail: `${detail}: ${d.othersCanWrite}`,
        advice: `chmod o-w (or the sticky bit) on that directory: any local user can change what the agent deploys`,
      };
    }
    if (d.othersCanWrite !== undefined) {
      return {
        check,
        status: "warn",
        detail: `${detail}: ${d.othersCanWrite}`,
        advice:
          "allowed (the agent walks dest without following links), but that user can change the live app " +
          "between deploys",
      };
    }
    return { check, status: "ok", detail, advice: "only root can change it" };
  },
  (f) => {
    const check = "trust keys";
    if (f.trustKeys.length === 0)
      return {
        check,
        status: "skip",
        detail: "not checked: no --trust-key",
        advice: "unsigned manifests are deployed; pass the agent's --trust-key here to check the files",
      };
    const bad = f.trustKeys.filter((k) => k.error !== undefined);
    if (bad.length > 0)
      return {
        check,
        status: "fail",
        detail: bad.map((k) => k.error!).join("; "),
        advice: "point --trust-key at the Ed25519 public key(s) from pulldeploy keygen, readable by the agent",
      };
    return {
      check,
      status: "ok",
      detail: `${f.trustKeys.length} Ed25519 key(s): ${f.trustKeys.map((k) => k.file).join(", ")}`,
      advice: "manifests must be signed by one of them",
    };
  },
];

function toolRow(tool: "rsync" | "tar", f: HostFacts, missing: CheckStatus, advice: string): CheckRow {
  const t = f.tools[tool];
  if (t.path === undefined) return { check: tool, status: missing, detail: `not found on PATH`, advice };
  if (t.version === undefined)
    return { check: tool, status: missing, detail: `${t.path}: ${t.error ?? "no version"}`, advice };
  return { check: tool, status: "ok", detail: `${t.path}: ${t.version}`, advice: `${tool} is present` };
}

/** `writableByOthers`' reason names a mode with the "others" write bit and no sticky bit. */
function worldWritable(why: string): boolean {
  const m = /\(mode ([0-7]+)\)/.exec(why);
  if (!m) return false;
  const mode = parseInt(m[1]!, 8);
  return (mode & 0o002) !== 0 && (mode & 0o1000) === 0;
}

export function runChecks(f: HostFacts): CheckRow[] {
  return CHECKS.map((c) => c(f));
}

/** The table: status, check, detail; advice under every row that is not ok. */
export function renderChecks(rows: CheckRow[]): string {
  const width = Math.max(...rows.map((r) => r.check.length));
  const lines: string[] = [];
  for (const r of rows) {
    lines.push(`${r.status.padEnd(4)}  ${r.check.padEnd(width)}  ${r.detail}`);
    if (r.status !== "ok") lines.push(`${"".padEnd(4)}  ${"".padEnd(width)}  → ${r.advice}`);
  }
  const count = (s: CheckStatus) => rows.filter((r) => r.status === s).length;
  lines.push("", `${count("ok")} ok, ${count("warn")} warn, ${count("fail")} fail, ${count("skip")} not checked`);
  return `${lines.join("\n")}\n`;
}

export interface DoctorOptions {
  consul: ConsulClient;
  env: Env;
  prefix: string;
  role?: string;
  node?: string;
  hostname: string;
  dest?: string;
  stateDir: string;
  trustKeys: string[];
  /** The event name whose `event:write` to probe (publish's default: "deploy"). */
  event: string;
  /** Where rsync and tar are looked up. */
  path: string;
}

/** Every probe, in order; none throws. */
export async function gatherFacts(o: DoctorOptions): Promise<HostFacts> {
  const uid = process.getuid?.() ?? 0;
  const c = o.consul;
  let consul: HostFacts["consul"];
  let skewMs: number | undefined;
  try {
    skewMs = await c.clockSkewMs();
    consul = { ok: true };
  } catch (err) {
    consul = { ok: false, error: messageOf(err) };
  }
  const unreachable = { skipped: "Consul did not answer" } as const;
  let node: HostFacts["node"] = { name: o.hostname, from: "hostname" };
  if (o.node) node = { name: o.node, from: "flag" };
  else if (consul.ok) {
    try {
      node = { name: (await c.agentSelf()).nodeName, from: "consul" };
    } catch (err) {
      node = { name: o.hostname, from: "hostname", error: messageOf(err) };
    }
  }
  const probe = async (fn: () => Promise<unknown>): Promise<Probe> => {
    if (!consul.ok) return unreachable;
    try {
      await fn();
      return { ok: true };
    } catch (err) {
      const status = (err as { status?: number }).status;
      return { ok: false, denied: status === 401 || status === 403, error: messageOf(err) };
    }
  };
  const doctorKey = `${o.prefix}/doctor/${node.name}`;
  let latest: HostFacts["latest"];
  let kvRead: Probe;
  if (o.role) {
    kvRead = await probe(async () => {
      const key = kvKeys.latest(o.prefix, o.role!);
      const { value } = await c.kvGetText(key);
      if (value === null) latest = { none: true };
      else {
        const r = parseReleaseRecord(value);
        latest = typeof r === "string" ? { error: `${key}: ${r}` } : { record: r };
      }
    });
  } else {
    kvRead = await probe(() => c.kvGetText(doctorKey));
  }
  /** A ModifyIndex no key reaches (Consul's indexes count writes from 1): the write is refused. */
  const NO_INDEX = Number.MAX_SAFE_INTEGER;
  const kvWrite = await probe(async () => {
    if (o.role) {
      if (await c.kvPut(kvKeys.node(o.prefix, o.role, node.name), "", { cas: NO_INDEX }))
        throw new Error("the check-and-set probe was written (a Consul that ignores cas?)");
      return;
    }
    await c.kvPut(
      doctorKey,
      JSON.stringify({
        at: new Date().toISOString(),
        version: VERSION,
        note: "pulldeploy doctor's probe; deleted at once",
      }),
    );
    await c.kvDelete(doctorKey);
  });
  const event = { ...(await probe(() => c.eventFire(o.event, "", { node: "^$" }))), name: o.event };
  const session = await probe(async () => {
    const id = await c.sessionCreate({ name: "pulldeploy-doctor", ttl: "10s", behavior: "delete" });
    await c.sessionDestroy(id);
  });

  const stateDir: HostFacts["stateDir"] = { path: o.stateDir };
  try {
    stateDir.stat = statFacts(fs.statSync(o.stateDir));
    stateDir.freeBytes = freeBytes(o.stateDir);
  } catch (err) {
    stateDir.error = (err as NodeJS.ErrnoException).code ?? messageOf(err);
  }

  const tools = { rsync: toolFacts("rsync", o.path), tar: toolFacts("tar", o.path) };

  let dest: HostFacts["dest"];
  let destError: string | undefined;
  let destPath = o.dest;
  if (destPath === undefined && latest && "record" in latest) {
    try {
      const text = await fetchText(latest.record.manifest_url, { env: o.env, userAgent: USER_AGENT });
      destPath = parseManifest(text, o.env).manifest.dest;
      if (destPath === undefined) destError = "the latest manifest has no dest (commands only)";
    } catch (err) {
      destError = `cannot read the latest manifest: ${messageOf(err)}`;
    }
  } else if (destPath === undefined && o.role) {
    destError = "no latest release to read dest from; pass --dest";
  }
  if (destPath !== undefined) {
    dest = { path: destPath, from: o.dest !== undefined ? "flag" : "manifest" };
    try {
      try {
        checkDest(destPath);
      } catch (err) {
        dest.refused = messageOf(err);
      }
      dest.othersCanWrite = writableByOthers(destPath);
      const st = fs.statSync(destPath, { throwIfNoEntry: false });
      if (st) dest.stat = statFacts(st);
    } catch (err) {
      dest.error = (err as NodeJS.ErrnoException).code ?? messageOf(err);
    }
  }

  const trustKeys = o.trustKeys.map((file) => {
    try {
      loadPublicKey(file);
      return { file };
    } catch (err) {
      return { file, error: messageOf(err) };
    }
  });

  return {
    uid,
    prefix: o.prefix,
    role: o.role,
    consulAddress: c.address,
    consul,
    node,
    kvRead,
    kvWrite,
    event,
    session,
    skewMs,
    latest,
    stateDir,
    tools,
    dest,
    destError,
    trustKeys,
  };
}

function statFacts(st: fs.Stats): StatFacts {
  return { uid: st.uid, mode: st.mode, isDir: st.isDirectory() };
}

function freeBytes(dir: string): number | undefined {
  try {
    const s = fs.statfsSync(dir);
    return s.bavail * s.bsize;
  } catch {
    return undefined;
  }
}

/** Where `tool` is on `path`, and the first line of its `--version`. */
function toolFacts(tool: string, path: string): { path?: string; version?: string; error?: string } {
  const found = Bun.which(tool, { PATH: path });
  if (!found) return {};
  try {
    const r = Bun.spawnSync({
      cmd: [found, "--version"],
      stdout: "pipe",
      stderr: "pipe",
      env: { PATH: path, LC_ALL: "C" },
    });
    const first = new TextDecoder().decode(r.stdout).split("\n")[0]!.replace(/\s+/g, " ").trim();
    if (r.exitCode !== 0 || first === "") return { path: found, error: `--version exited ${r.exitCode}` };
    return { path: found, version: first };
  } catch (err) {
    return { path: found, error: messageOf(err) };
  }
}
