/**
 * The command table: every subcommand by name, its one-line description and how to load it (each
 * command is its own chunk, imported at first use), plus `--help` and a command's usage text.
 *
 * `src/cli/` owns turning argv into options: one thin file per command (flags → options → one call
 * into `agent/`, `publish/` or `fleet/`), shared flag definitions in `_shared.ts`. It may import any
 * subsystem; nothing below it imports `cli/`.
 */
import type { ArgsDef, CommandDef, ParsedArgs } from "citty";
import type { CommandEnv } from "./context.ts";
import { VERSION } from "../version.ts";

const LOG_FORMAT_HELP =
  "--log-format text|json  log lines as text (default) or one JSON object per line (time, level, msg, phase, " +
  "node, role, release_id, event_id)";

/** Subcommands by name, in the order `--help` lists them. */
export const COMMANDS: Record<
  string,
  {
    description: string;
    // biome-ignore lint/suspicious/noExplicitAny: a command of any flags (citty's CommandDef is invariant in its args)
    load: () => Promise<CommandDef<any>>;
    alwaysZero?: (env: CommandEnv["env"]) => boolean;
    /**
     * Start fast, for the agent (`consul watch` starts it with `[]` at every start and reload): its
     * flags are parsed without citty (`parseFlags`: the command reads its flags by their main names
     * only and has no positionals, defaults, setup or cleanup), and its log goes straight to fd 2
     * (`directStderr`: the command never writes to `process.stderr` itself).
     */
    fastStart?: boolean;
  }
> = {
  agent: {
    description: "Deploy one release from a trigger on stdin (consul watch, serf, or a URL)",
    load: async () => (await import("./agent.ts")).default,
    // consul watch stops for good when its handler exits non-zero, even for a bad flag.
    alwaysZero: (env) => env.CONSUL_INDEX !== undefined,
    fastStart: true,
  },
  publish: {
    description: "Pack a directory, upload it with a manifest, record it in Consul KV and fire the deploy event",
    load: async () => (await import("./publish.ts")).default,
  },
  fire: {
    description: "Fire the deploy event for an existing manifest URL (re-deploy or roll back by hand)",
    load: async () => (await import("./fire.ts")).default,
  },
  rollback: {
    description: "Switch current back to an earlier release (sync_strategy: release), without downloading",
    load: async () => (await import("./rollback.ts")).default,
  },
  gc: {
    description: "Remove delta packs and indexes no kept release references (dry run unless --apply)",
    load: async () => (await import("./gc.ts")).default,
  },
  keygen: {
    description: "Make an Ed25519 key pair for signed manifests",
    load: async () => (await import("./keygen.ts")).default,
  },
  rollout: {
    description: "Show or steer a staged rollout: status, pause, resume, promote, abort",
    load: async () => (await import("./rollout.ts")).default,
  },
  status: {
    description: "Show each node of a role: release, status, phase and age, against the latest release",
    load: async () => (await import("./status.ts")).default,
  },
  doctor: {
    description:
      "Check whether this host can deploy: Consul and the token's rights, state dir, rsync, tar, dest, trust " +
      "keys, clock",
    load: async () => (await import("./doctor.ts")).default,
  },
  dashboard: {
    description: "Serve a live web page of every role's nodes and releases (from Consul)",
    load: async () => (await import("./dashboard.ts")).default,
  },
};

/** A command `parseFlags` can run as citty would: flags only, no defaults, nothing but `run`. */
// biome-ignore lint/suspicious/noExplicitAny: any command of the table
export function plainFlags(cmd: CommandDef<any>, args: ArgsDef): boolean {
  const simple = Object.values(args).every(
    (d) => (d.type === "string" || d.type === "boolean") && d.default === undefined && !d.required,
  );
  return simple && typeof cmd.run === "function" && !cmd.setup && !cmd.cleanup && !cmd.subCommands && !cmd.plugins;
}

/**
 * citty's parse of what `normalizeArgv` returns for a command with flags only: `--name=value`,
 * `--name` (true), `--no-name` (false, whatever its place, as citty does). The result holds the
 * main names only (citty adds each alias and camelCase spelling too).
 */
export function parseFlags(rawArgs: string[]): ParsedArgs<ArgsDef> {
  const out: Record<string, string | boolean> = {};
  const negated: string[] = [];
  for (const arg of rawArgs) {
    if (arg.startsWith("--no-")) {
      negated.push(arg.slice(5));
      continue;
    }
    const eq = arg.indexOf("=");
    if (eq === -1) out[arg.slice(2)] = true;
    else out[arg.slice(2, eq)] = arg.slice(eq + 1);
  }
  for (const name of negated) out[name] = false;
  return { _: [], ...out } as unknown as ParsedArgs<ArgsDef>;
}

/** A command's flags, plain text: both spellings of each flag, its value and its meaning. */
// biome-ignore lint/suspicious/noExplicitAny: any command of the table
export async function usage(name: string, cmd: CommandDef<any>): Promise<string> {
  const meta = await (typeof cmd.meta === "function" ? cmd.meta() : cmd.meta);
  const args: ArgsDef = (await (typeof cmd.args === "function" ? cmd.args() : cmd.args)) ?? {};
  const positionals = Object.entries(args).filter(([, d]) => d.type === "positional");
  const rows = Object.entries(args)
    .filter(([, d]) => d.type !== "positional")
    .map(([flag, d]) => {
      const aliases = "alias" in d && d.alias ? (Array.isArray(d.alias) ? d.alias : [d.alias]) : [];
      const value = d.type === "boolean" ? "" : ` <${d.valueHint ?? "value"}>`;
      return [
        [flag, ...aliases].map((f) => (f.length === 1 ? `-${f}` : `--${f}`)).join(", ") + value,
        d.description ?? "",
      ] as const;
    });
  const width = Math.max(0, ...rows.map(([l]) => l.length));
  return [
    `${meta?.description ?? ""}`,
    "",
    `Usage: pulldeploy ${name} [flags]${positionals.map(([p]) => ` <${p}>`).join("")}`,
    "",
    ...positionals.map(([p, d]) => `  <${p}>  ${d.description ?? ""}`),
    ...(positionals.length ? [""] : []),
    "Flags (Go-style -flag value and --flag=value work too):",
    ...rows.map(([l, desc]) => `  ${l.padEnd(width)}  ${desc}`),
    "",
    `Global: ${LOG_FORMAT_HELP}`,
    "",
  ].join("\n");
}

export function help(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((n) => n.length));
  const lines = Object.entries(COMMANDS).map(([n, c]) => `  ${n.padEnd(width)}  ${c.description}`);
  return [
    `pulldeploy ${VERSION}: pull-based deploys for fleets of servers (a stretcher-compatible agent and a publisher)`,
    "",
    "Usage: pulldeploy <command> [flags]",
    "",
    "Commands:",
    ...lines,
    "",
    "Run `pulldeploy <command> --help` for a command's flags. `pulldeploy --version` prints the version.",
    `Global: ${LOG_FORMAT_HELP}`,
    "",
  ].join("\n");
}
