/**
 * `pulldeploy status --role web`: one row per node of the role (Consul's catalog), with what each agent
 * last reported (KV) against the role's latest release. Only turns flags into options.
 * Exit code: 1 when any node's last deploy failed (or Consul could not be read), 0 otherwise, 2 usage.
 */
import { defineCommand, type ArgsDef } from "citty";
import type { CommandEnv } from "./context.ts";
import { ConsulClient, consulConfig } from "../consul/client.ts";
import { UsageError } from "../errors.ts";
import { readFleet, renderFleet } from "../fleet/view.ts";
import { readRolloutView, renderRollout } from "../fleet/rollout.ts";
import { checkRole, DEFAULT_KV_PREFIX } from "../records/release.ts";
import { consulArgs, kvPrefixFlag } from "./_shared.ts";

export const statusArgs = {
  role: { type: "string", description: "The role to show (required)", valueHint: "role" },
  service: {
    type: "string",
    description: "The Consul service whose nodes make the role (default: the role's name)",
    valueHint: "name",
  },
  json: {
    type: "boolean",
    description: "Print the view as JSON (latest release, counts, one object per node under rows)",
  },
  "kv-prefix": { type: "string", description: `Consul KV prefix (default ${DEFAULT_KV_PREFIX})`, valueHint: "prefix" },
  ...consulArgs,
} as const satisfies ArgsDef;

export default defineCommand({
  meta: {
    name: "status",
    description: "Show each node of a role: its release, status, phase and age, against the latest release",
  },
  args: statusArgs,
  async run({ args, data }) {
    const { env } = data as CommandEnv;
    const a = args as Record<string, string | boolean | undefined>;
    const str = (k: string) => (typeof a[k] === "string" && a[k] !== "" ? (a[k] as string) : undefined);
    const role = str("role");
    if (role === undefined) throw new UsageError("--role is required: the role whose nodes to show");
    const bad = checkRole(role);
    if (bad) throw new UsageError(`--role: ${bad}`);
    const prefix = kvPrefixFlag(str("kv-prefix"));
    const consul = new ConsulClient(consulConfig(env, { addr: str("consul-addr"), token: str("consul-token") }), {
      timeoutMs: 10_000,
    });

    const view = await readFleet({ consul, prefix, role, service: str("service") });
    const rollout = view.latest ? await readRolloutView(consul, prefix, role, view.latest.id) : null;
    if (a.json === true) process.stdout.write(`${JSON.stringify(rollout ? { ...view, rollout } : view, null, 2)}\n`);
    else
      process.stdout.write(
        renderFleet(view, { color: process.stdout.isTTY === true && !env.NO_COLOR }) +
          (rollout ? `${renderRollout(rollout).join("\n")}\n` : ""),
      );
    return view.counts.failure > 0 ? 1 : 0;
  },
});
