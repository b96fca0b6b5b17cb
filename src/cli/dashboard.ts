/**
 * `pulldeploy dashboard --listen 127.0.0.1:8080`: serve a live web page of every role's nodes and
 * releases, read from Consul (KV and catalog). Only turns flags into options; runs until SIGINT/SIGTERM.
 * Exit code: 0 after a signal, 1 when the address can't be listened on, 2 usage.
 */
import { defineCommand, type ArgsDef } from "citty";
import type { CommandEnv } from "./context.ts";
import { ConsulClient, consulConfig } from "../consul/client.ts";
import { PulldeployError, UsageError } from "../errors.ts";
import { parseListen, serveDashboard } from "../fleet/dashboard/server.ts";
import { checkRole, DEFAULT_KV_PREFIX } from "../records/release.ts";
import { consulArgs, kvPrefixFlag, listFlag } from "./_shared.ts";

export const dashboardArgs = {
  listen: {
    type: "string",
    description: "Address to serve on (default 127.0.0.1:8080; port 0 picks a free one)",
    valueHint: "host:port",
  },
  "allow-host": {
    type: "string",
    description:
      "Names the page may be opened by besides IP addresses, localhost and this host's name (a proxy's name; " +
      "repeat or comma-separate); other Host headers get 421 (DNS rebinding)",
    valueHint: "name...",
  },
  role: {
    type: "string",
    description: "Show only these roles (repeat or comma-separate; default: every role in KV)",
    valueHint: "role...",
  },
  "kv-prefix": { type: "string", description: `Consul KV prefix (default ${DEFAULT_KV_PREFIX})`, valueHint: "prefix" },
  ...consulArgs,
} as const satisfies ArgsDef;

export default defineCommand({
  meta: { name: "dashboard", description: "Serve a live web page of every role's nodes and releases (from Consul)" },
  args: dashboardArgs,
  async run({ args, data }) {
    const { env, log, signal } = data as CommandEnv;
    const a = args as Record<string, string | boolean | undefined>;
    const str = (k: string) => (typeof a[k] === "string" && a[k] !== "" ? (a[k] as string) : undefined);
    const listen = parseListen(str("listen") ?? "127.0.0.1:8080");
    if (typeof listen === "string") throw new UsageError(`--listen: ${listen}`);
    const roles = listFlag(str("role"));
    const bad = roles.map(checkRole).filter((p): p is string => p !== undefined);
    if (bad.length > 0) throw new UsageError(`--role: ${bad.join("; ")}`);
    const prefix = kvPrefixFlag(str("kv-prefix"));
    const consul = new ConsulClient(consulConfig(env, { addr: str("consul-addr"), token: str("consul-token") }), {
      timeoutMs: 10_000,
    });
    try {
      await serveDashboard({
        consul,
        prefix,
        roles,
        ...listen,
        allowedHosts: listFlag(str("allow-host")),
        log,
        signal,
      });
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      if (typeof code === "string" && /EADDRINUSE|EACCES|EADDRNOTAVAIL/.test(code)) {
        throw new PulldeployError(
          `dashboard: cannot listen on ${str("listen") ?? "127.0.0.1:8080"}: ${code}`,
          undefined,
          { cause: err },
        );
      }
      throw err;
    }
    return 0;
  },
});
