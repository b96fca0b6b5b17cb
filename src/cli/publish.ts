/**
 * `pulldeploy publish DIR --to URL --role ROLE --dest PATH`: pack, upload, record, announce.
 * Only turns flags into options and calls `publish`; stdout gets the manifest URL (or the dry run's
 * report), stderr the log and the progress bar. With `--wait`, then watch the nodes' reports until the
 * rollout is done (fleet/wait-for-nodes.ts). Exit code: 0, 1 failed (or, with --wait, any node failed, the wait
 * timed out or the role has no nodes), 2 usage.
 */
import * as fs from "node:fs";
import { defineCommand, type ArgsDef } from "citty";
import { isHashAlgorithm, type HashAlgorithm } from "../checksum.ts";
import type { CommandEnv } from "./context.ts";
import { UsageError } from "../errors.ts";
import { createLogger, type Logger } from "../log.ts";
import { SYNC_STRATEGIES, type SyncStrategyName } from "../manifest/parse.ts";
import type { AnnounceOptions } from "../publish/announce.ts";
import { createProgress } from "../publish/progress.ts";
import { defaultPublisher, publish } from "../publish/publish.ts";
import { checkTargetUrl } from "../store/targets/index.ts";
import { waitForNodes as waitForNodesOf } from "../fleet/wait-for-nodes.ts";
import {
  announceArgs,
  durationFlag,
  intFlag,
  kvPrefixFlag,
  rolloutArgs,
  rolloutFlagArgs,
  waitArgs,
} from "./_shared.ts";
import { rolloutHook, rolloutSettings } from "./rollout.ts";

/** JavaScriptCore tier-up thresholds times this, for publish (see below). */
const JIT_RELUCTANCE = 100;

export const publishArgs = {
  dir: { type: "positional", description: "The built app's directory", required: false },
  to: {
    type: "string",
    description: "Where releases are stored: s3://bucket/prefix, file:///dir, http(s)://host/dav",
    valueHint: "url",
  },
  role: {
    type: "string",
    description: "The servers' role: releases go under <to>/<role>/ and KV <prefix>/roles/<role>/",
    valueHint: "role",
  },
  dest: { type: "string", description: "Manifest dest: where agents deploy (absolute path)", valueHint: "path" },
  "dest-mode": { type: "string", description: "Manifest dest_mode, octal (default 0755)", valueHint: "0755" },
  "sync-strategy": {
    type: "string",
    description: `Manifest sync_strategy: ${SYNC_STRATEGIES.join(", ")} (default rsync)`,
    valueHint: "name",
  },
  "exclude-on-dest": {
    type: "string",
    description: "Manifest excludes: patterns kept in dest (repeatable or comma-separated)",
    valueHint: "pattern",
  },
  hooks: {
    type: "string",
    description: "A stretcher-style YAML file with the hooks (commands:), excludes, … merged under the flags",
    valueHint: "file",
  },
  manifest: { type: "string", description: "The old name of --hooks", valueHint: "file" },
  exclude: {
    type: "string",
    description:
      "Leave out of the archive: a glob on names, or on paths if it has a /; dir/ for directories (repeatable)",
    valueHint: "glob",
  },
  "include-git": { type: "boolean", description: "Pack .git directories too (ignored by default)" },
  delta: {
    type: "boolean",
    description:
      "Also store a content index and the chunks the store lacks, so agents fetch only what changed (default; " +
      "--no-delta: archive only)",
  },
  "gzip-level": {
    type: "string",
    description: "gzip level 1–12 (default 6; above 9 is slower for a few % less)",
    valueHint: "n",
  },
  "checksum-algorithm": { type: "string", description: "md5, sha1, sha256 (default) or sha512", valueHint: "alg" },
  "sign-key": {
    type: "string",
    description: "Ed25519 private key (pulldeploy keygen): upload a signature next to the manifest",
    valueHint: "file",
  },
  retry: { type: "string", description: "Extra attempts of a failed upload request (default 3)", valueHint: "n" },
  "retry-wait": {
    type: "string",
    description: "Wait before the first retry, doubled each time (default 1s)",
    valueHint: "duration",
  },
  "dry-run": {
    type: "boolean",
    description: "Pack and print what would be uploaded, written and fired; change nothing",
  },
  quiet: {
    type: "boolean",
    alias: ["q"],
    description: "No progress and no log lines; errors and the manifest URL only",
  },
  ...waitArgs,
  ...rolloutArgs,
  ...announceArgs,
} as const satisfies ArgsDef;

export default defineCommand({
  meta: {
    name: "publish",
    description: "Pack a directory, upload it with a manifest, record it in Consul KV and fire the deploy event",
  },
  args: publishArgs,
  async run({ args, rawArgs, data }) {
    const ctx = data as CommandEnv;
    const a = args as Record<string, string | boolean | undefined>;
    const str = (k: string) => (typeof a[k] === "string" ? (a[k] as string) : undefined);
    const dir = str("dir");
    if (dir === undefined || dir === "")
      throw new UsageError("missing the directory to publish: pulldeploy publish DIR --to URL --role ROLE --dest PATH");
    const to = required(str("to"), "--to", "where releases are stored, e.g. s3://bucket/app or file:///srv/releases");
    const toProblem = checkTargetUrl(to);
    if (toProblem) throw new UsageError(toProblem);
    const role = required(str("role"), "--role", "the servers' role, e.g. web");

    const dest = str("dest");
    if (dest !== undefined && !dest.startsWith("/") && !dest.includes("{{"))
      throw new UsageError(`--dest must be an absolute path, got "${dest}"`);
    const destMode = str("dest-mode");
    if (destMode !== undefined && !/^0?[0-7]{3,4}$/.test(destMode))
      throw new UsageError(`--dest-mode: expected an octal mode like 0755, got "${destMode}"`);
    const strategy = str("sync-strategy");
    if (strategy !== undefined && !(SYNC_STRATEGIES as readonly string[]).includes(strategy)) {
      throw new UsageError(`--sync-strategy: unknown strategy "${strategy}" (valid: ${SYNC_STRATEGIES.join(", ")})`);
    }
    // --hooks is the clearer name (the agent's --manifest is a URL); --manifest stays for old scripts.
    if (str("hooks") !== undefined && str("manifest") !== undefined)
      throw new UsageError("--hooks and --manifest are the same flag (--manifest is its old name): pass one");
    const hooksFlag = str("hooks") !== undefined ? "--hooks" : "--manifest";
    const hooksPath = str("hooks") ?? str("manifest");
    let hooks: { path: string; text: string; flag: string } | undefined;
    if (hooksPath !== undefined) {
      try {
        hooks = { path: hooksPath, text: fs.readFileSync(hooksPath, "utf8"), flag: hooksFlag };
      } catch (err) {
        throw new UsageError(
          `${hooksFlag} ${hooksPath}: ` +
            `${(err as NodeJS.ErrnoException).code === "ENOENT" ? "no such file" : (err as Error).message}`,
        );
      }
    }
    const algorithm = str("checksum-algorithm") ?? "sha256";
    if (!isHashAlgorithm(algorithm))
      throw new UsageError(`--checksum-algorithm: unknown algorithm "${algorithm}" (valid: md5, sha1, sha256, sha512)`);
    const gzipLevel = intFlag("gzip-level", str("gzip-level"), 1) ?? 6;
    if (gzipLevel > 12) throw new UsageError(`--gzip-level: expected 1–12, got ${gzipLevel}`);

    const quiet = a.quiet === true;
    const log = quiet ? createLogger({ quiet: true }) : ctx.log;
    const common = announceOptions(a, ctx);
    const dryRun = a["dry-run"] === true;
    const wait = waitOptions(a, common, dryRun ? "--dry-run" : undefined);
    const beforeRecord = dryRun
      ? undefined
      : rolloutHook(rolloutSettings(a), {
          role,
          kv: common.kv,
          prefix: common.kvPrefix,
          announce: common.announce,
          ctx,
        });
    const progress = quiet
      ? undefined
      : createProgress({ tty: process.stderr.isTTY === true, write: (s) => process.stderr.write(s), log });

    // Publish's heavy work is native (gzip, deflate, SHA-256) and its JavaScript runs a few passes:
    // the optimizing compilers' memory (code and compilation) bought no measurable time, and their
    // peak was what kept a large publish above its memory budget. They still compile the hottest loops.
    Bun.unsafe.setJITPolicy(JIT_RELUCTANCE);
    const result = await publish({
      dir,
      to,
      role,
      manifest: {
        dest,
        destMode,
        syncStrategy: strategy as SyncStrategyName | undefined,
        excludes: repeated(rawArgs, "exclude-on-dest", true),
        hooks,
        role,
      },
      pack: {
        excludes: repeated(rawArgs, "exclude", false),
        includeGit: a["include-git"] === true,
        gzipLevel,
        algorithm: algorithm as HashAlgorithm,
      },
      ...common,
      signKey: str("sign-key"),
      delta: a.delta !== false,
      dryRun,
      retries: intFlag("retry", str("retry")) ?? 3,
      retryWaitMs: durationFlag("retry-wait", str("retry-wait")) ?? 1000,
      env: ctx.env,
      log,
      signal: ctx.signal,
      progress,
      print: (text) => process.stdout.write(text),
      beforeRecord,
    });
    if (dryRun) return 0;
    process.stdout.write(`${result.manifestUrl}\n`);
    if (!wait) return 0;
    return waitForNodes({ ...wait, role, releaseId: result.id, common, ctx, log });
  },
});

/** The record/announce options `publish` and `fire` share. */
export function announceOptions(a: Record<string, string | boolean | undefined>, ctx: CommandEnv) {
  const str = (k: string) => (typeof a[k] === "string" ? (a[k] as string) : undefined);
  // citty reads `--no-event` as `event: false`.
  const noEvent = a.event === false || a["no-event"] === true;
  const via = str("via") ?? "consul";
  if (via !== "consul" && via !== "serf") throw new UsageError(`--via: expected consul or serf, got "${via}"`);
  const announce: AnnounceOptions = {
    via: noEvent ? "none" : via,
    event: str("event") ?? "deploy",
    node: str("node"),
    service: str("service"),
    tag: str("tag"),
    serfRpcAddr: str("serf-rpc-addr") || ctx.env.SERF_RPC_ADDR || undefined,
  };
  const prefix = kvPrefixFlag(str("kv-prefix"));
  return {
    announce,
    kv: a.kv !== false,
    kvPrefix: prefix,
    consul: { addr: str("consul-addr"), token: str("consul-token") },
    publisher: str("publisher") ?? defaultPublisher(ctx.env),
    message: str("message") ?? "",
    rolloutFlags: rolloutFlagArgs(a),
  };
}

/** What `--wait` needs, read and checked before anything is published or fired. */
export interface WaitSettings {
  timeoutMs: number;
  /** The catalog service whose nodes make the role: `--service` (the event's filter), else the role. */
  service?: string;
}

const DEFAULT_WAIT_TIMEOUT_MS = 10 * 60_000;

/**
 * `--wait` and `--wait-timeout`, or undefined without `--wait`. Usage errors for what cannot be waited
 * for: no event (`--no-event`, `--dry-run`, or `notAnnounced` naming why), no Consul KV (`--no-kv`), or an
 * event filtered to part of the service's nodes (`--node`, `--tag`: the others would never report).
 */
export function waitOptions(
  a: Record<string, string | boolean | undefined>,
  common: ReturnType<typeof announceOptions>,
  notAnnounced?: string,
): WaitSettings | undefined {
  const timeoutText = typeof a["wait-timeout"] === "string" ? a["wait-timeout"] : undefined;
  const timeoutMs = durationFlag("wait-timeout", timeoutText);
  if (a.wait !== true) {
    if (timeoutText !== undefined)
      throw new UsageError("--wait-timeout only applies with --wait: add --wait, or drop --wait-timeout");
    return undefined;
  }
  if (notAnnounced)
    throw new UsageError(
      `--wait cannot go with ${notAnnounced}: it fires no event, so there is no rollout to wait for (drop one of them)`,
    );
  if (common.announce.via === "none")
    throw new UsageError(
      "--wait cannot go with --no-event: no event, no rollout to wait for (drop one of them; pulldeploy status " +
        "--role ROLE shows the nodes)",
    );
  if (!common.kv)
    throw new UsageError(
      "--wait cannot go with --no-kv: it reads the nodes' reports from Consul KV (drop one of them)",
    );
  if (common.announce.node !== undefined || common.announce.tag !== undefined) {
    throw new UsageError(
      `--wait cannot go with ${common.announce.node !== undefined ? "--node" : "--tag"}: it waits for every ` +
        "node of the service, and nodes the event skips would never report (drop one of them)",
    );
  }
  if (timeoutMs === 0) throw new UsageError("--wait-timeout: must be more than 0");
  return { timeoutMs: timeoutMs ?? DEFAULT_WAIT_TIMEOUT_MS, service: common.announce.service };
}

/** `--wait` after the event, as an exit code: 0 when every node succeeded, else 1. */
export async function waitForNodes(
  o: WaitSettings & {
    role: string;
    releaseId: string;
    common: ReturnType<typeof announceOptions>;
    ctx: CommandEnv;
    log: Logger;
  },
): Promise<number> {
  const { ctx } = o;
  const ok = await waitForNodesOf({
    ...o,
    env: ctx.env,
    consul: o.common.consul,
    prefix: o.common.kvPrefix,
    signal: ctx.signal,
    errLog: ctx.log,
  });
  return ok ? 0 : 1;
}

/** Every value of a repeatable flag (citty keeps only the last), optionally comma-separated. */
function repeated(rawArgs: string[], name: string, commas: boolean): string[] {
  const out: string[] = [];
  for (const arg of rawArgs) {
    if (!arg.startsWith(`--${name}=`)) continue;
    const v = arg.slice(name.length + 3);
    out.push(...(commas ? v.split(",") : [v]).map((s) => s.trim()).filter((s) => s !== ""));
  }
  return out;
}

function required(v: string | undefined, flag: string, what: string): string {
  if (v === undefined || v === "") throw new UsageError(`${flag} is required: ${what}`);
  return v;
}
