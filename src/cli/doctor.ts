/**
 * `pulldeploy doctor --role web`: check whether this host can deploy (Consul and the token's rights,
 * the state dir, rsync and tar, dest, trust keys, the clock) and print a table, or `--json`.
 * Only turns flags into options. Exit code: 1 when any check fails, 0 otherwise, 2 usage.
 */
import type { ArgsDef, CommandDef } from "citty";
import { hostname } from "node:os";
import type { CommandEnv } from "./context.ts";
import { gatherFacts, renderChecks, runChecks } from "../agent/doctor.ts";
import { DEFAULT_STATE_DIR } from "../agent/state.ts";
import { ConsulClient, consulConfig } from "../consul/client.ts";
import { UsageError } from "../errors.ts";
import { checkNode, checkRole, DEFAULT_KV_PREFIX } from "../records/release.ts";
import { consulArgs, kvPrefixFlag, listFlag } from "./_shared.ts";

export const doctorArgs = {
  role: {
    type: "string",
    description: "This server's role: checks its KV, its latest release's size and (without --dest) its dest",
    valueHint: "role",
  },
  dest: {
    type: "string",
    description: "The deploy's dest to check (default: the role's latest manifest's dest)",
    valueHint: "path",
  },
  "state-dir": {
    type: "string",
    description: `The agent's state dir (default $PULLDEPLOY_STATE_DIR or ${DEFAULT_STATE_DIR})`,
    valueHint: "dir",
  },
  "trust-key": {
    type: "string",
    description: "The agent's trust keys, to check they load (repeat or comma-separate)",
    valueHint: "file...",
  },
  node: {
    type: "string",
    description: "Node name (default: the Consul agent's node name, else the host name)",
    valueHint: "name",
  },
  event: {
    type: "string",
    description: 'Event name whose event:write to probe (default "deploy", as publish)',
    valueHint: "name",
  },
  json: {
    type: "boolean",
    description: "Print the checks as JSON ({ ok, checks: [{ check, status, detail, advice }] })",
  },
  "kv-prefix": { type: "string", description: `Consul KV prefix (default ${DEFAULT_KV_PREFIX})`, valueHint: "prefix" },
  ...consulArgs,
} as const satisfies ArgsDef;

const doctorCommand: CommandDef<typeof doctorArgs> = {
  meta: {
    name: "doctor",
    description:
      "Check whether this host can deploy: Consul and the token's rights, state dir, rsync, tar, dest, trust " +
      "keys, clock",
  },
  args: doctorArgs,
  async run({ args, data }) {
    const { env } = data as CommandEnv;
    const a = args as Record<string, string | boolean | undefined>;
    const str = (k: string) => (typeof a[k] === "string" && a[k] !== "" ? (a[k] as string) : undefined);
    const role = str("role");
    if (role !== undefined && checkRole(role)) throw new UsageError(`--role: ${checkRole(role)}`);
    const node = str("node");
    if (node !== undefined && checkNode(node)) throw new UsageError(`--node: ${checkNode(node)}`);
    const consul = new ConsulClient(consulConfig(env, { addr: str("consul-addr"), token: str("consul-token") }), {
      timeoutMs: 5_000,
    });
    const facts = await gatherFacts({
      consul,
      env,
      prefix: kvPrefixFlag(str("kv-prefix")),
      role,
      node,
      hostname: hostname(),
      dest: str("dest"),
      stateDir: str("state-dir") ?? env.PULLDEPLOY_STATE_DIR ?? DEFAULT_STATE_DIR,
      trustKeys: listFlag(str("trust-key")),
      event: str("event") ?? "deploy",
      path: env.PATH ?? "/usr/local/bin:/usr/bin:/bin",
    });
    const rows = runChecks(facts);
    const failed = rows.some((r) => r.status === "fail");
    if (a.json === true) process.stdout.write(`${JSON.stringify({ ok: !failed, checks: rows }, null, 2)}\n`);
    else process.stdout.write(renderChecks(rows));
    return failed ? 1 : 0;
  },
};
export default doctorCommand;
