/**
 * What the commands share: flag value parsers and common flag sets (argv itself is read in `argv.ts`).
 */
import type { ArgsDef } from "citty";
import { UsageError } from "../errors.ts";
import { DEFAULT_KV_PREFIX, normalizeKvPrefix } from "../records/release.ts";
import { parseDuration, parseSize } from "../units.ts";

/** Duration flag: bare number = seconds (stretcher v1), or `30s`, `500ms`, `2m`. */
export function durationFlag(name: string, value: string | undefined): number | undefined {
  if (value === undefined || value === "") return undefined;
  const ms = parseDuration(value);
  if (typeof ms === "string") throw new UsageError(`--${name}: ${ms}`);
  return ms;
}

/** Size flag: `10M`, `10MB`, `1MiB`, `500k`, bytes. */
export function sizeFlag(name: string, value: string | undefined): number | undefined {
  if (value === undefined || value === "") return undefined;
  const n = parseSize(value);
  if (typeof n === "string") throw new UsageError(`--${name}: ${n}`);
  return n;
}

export function intFlag(name: string, value: string | undefined, min = 0): number | undefined {
  if (value === undefined || value === "") return undefined;
  if (!/^\d+$/.test(value.trim()) || Number(value) < min)
    throw new UsageError(`--${name}: expected a whole number ≥ ${min}, got "${value}"`);
  return Number(value);
}

/**
 * `--kv-prefix` as every command reads it (agent, publish, fire, status, dashboard): surrounding
 * slashes dropped (`/custom/` is `custom`), the default when absent, a UsageError when nothing is left.
 * One reading, so the agent reports where publish records and status looks.
 */
export function kvPrefixFlag(value: string | undefined): string {
  const prefix = normalizeKvPrefix(value ?? DEFAULT_KV_PREFIX);
  if (typeof prefix !== "string") throw new UsageError(`--kv-prefix: ${prefix.error}`);
  return prefix;
}

/** Consul connection flags shared by agent, publish, fire, status and dashboard. */
export const consulArgs = {
  "consul-addr": {
    type: "string",
    description: "Consul HTTP address (default $CONSUL_HTTP_ADDR or 127.0.0.1:8500)",
    valueHint: "addr",
  },
  "consul-token": { type: "string", description: "Consul ACL token (default $CONSUL_HTTP_TOKEN)", valueHint: "token" },
} as const satisfies ArgsDef;

/** A list flag's values (comma-separated or repeated), blanks dropped. */
export function listFlag(value: string | undefined): string[] {
  return (value ?? "")
    .split(",")
    .map((v) => v.trim())
    .filter((v) => v !== "");
}

/** Flags shared with `fire`: where the release is recorded and how it is announced. */
export const announceArgs = {
  event: { type: "string", description: 'Event name (default "deploy")', valueHint: "name" },
  "no-event": {
    type: "boolean",
    description: "Record the release but fire no event (for servers that follow KV or boot later)",
  },
  via: {
    type: "string",
    description: "Announce through consul (default) or serf (`serf event` via the local agent)",
    valueHint: "consul|serf",
  },
  node: { type: "string", description: "Consul event filter: node names matching this regexp", valueHint: "regexp" },
  service: { type: "string", description: "Consul event filter: nodes running this service", valueHint: "name" },
  tag: {
    type: "string",
    description: "Consul event filter: with --service, instances with this tag",
    valueHint: "tag",
  },
  "serf-rpc-addr": {
    type: "string",
    description: "Serf agent RPC address (default $SERF_RPC_ADDR, else serf's 127.0.0.1:7373)",
    valueHint: "addr",
  },
  "kv-prefix": {
    type: "string",
    description: `Consul KV prefix (default "${DEFAULT_KV_PREFIX}")`,
    valueHint: "prefix",
  },
  kv: { type: "boolean", description: "Record the release in Consul KV (default; --no-kv skips it)", default: true },
  publisher: {
    type: "string",
    description: "Who publishes, for the record (default $USER@hostname)",
    valueHint: "name",
  },
  message: { type: "string", alias: ["m"], description: "A note for the record", valueHint: "text" },
  ...consulArgs,
} as const satisfies ArgsDef;

/** `--wait`, shared with `fire --role` and `rollback --role`: after the event, follow the rollout. */
export const waitArgs = {
  wait: {
    type: "boolean",
    description:
      "After the event, wait until every node of the role (catalog service: --service, else the role) reports " +
      "the new release; exit 1 if any fails, on timeout or with no nodes",
  },
  "wait-timeout": {
    type: "string",
    description: "With --wait: give up after this long (default 10m)",
    valueHint: "duration",
  },
} as const satisfies ArgsDef;

/**
 * The rollout flags present in `a`, spelled as typed (`--canary`, `1`, `--canary-wait`), to be repeated
 * in a `pulldeploy fire` hint.
 */
export function rolloutFlagArgs(a: Record<string, string | boolean | undefined>): string[] {
  const out: string[] = [];
  for (const name of Object.keys(rolloutArgs)) {
    const v = a[name];
    if (v === true) out.push(`--${name}`);
    else if (typeof v === "string" && v !== "") out.push(`--${name}`, v);
  }
  return out;
}

/** The rollout flags of `publish` and `fire`. None given: every node switches at once, as before. */
export const rolloutArgs = {
  "max-parallel": {
    type: "string",
    description: "Rollout: at most this many nodes (or % of the role's nodes) switching at once (default: all)",
    valueHint: "N|P%",
  },
  canary: {
    type: "string",
    description: "Rollout: the first N nodes go alone; the rest wait until they are healthy",
    valueHint: "n",
  },
  "canary-wait": {
    type: "boolean",
    description: "Rollout: after the canaries, hold until `pulldeploy rollout promote`",
  },
  "max-failures": {
    type: "string",
    description: "Rollout: failure budget; past it the rollout halts (waiting nodes keep their release)",
    valueHint: "N|P%",
  },
  "auto-rollback": {
    type: "boolean",
    description: "Rollout: when it halts, make the previous release the latest again and fire it",
  },
  "health-grace": {
    type: "string",
    description: "Rollout: after post/validate, the node's Consul checks must pass this long (default: no health gate)",
    valueHint: "duration",
  },
  "health-deadline": {
    type: "string",
    description: "Rollout: … within this long, else the node failed (default 5m)",
    valueHint: "duration",
  },
  "switch-together": {
    type: "boolean",
    description:
      "Rollout: no node switches until every node of the role has prepared (fetched and extracted) or " +
      "--prepare-deadline passes",
  },
  "prepare-deadline": {
    type: "string",
    description: "With --switch-together: switch anyway this long after publishing (default 10m)",
    valueHint: "duration",
  },
  "slot-ttl": {
    type: "string",
    description:
      "Rollout: TTL of each slot's Consul session; a killed agent frees its slot about 2× this later (default " +
      "10s, Consul's session_ttl_min)",
    valueHint: "duration",
  },
} as const satisfies ArgsDef;
