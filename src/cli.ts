/**
 * The executable's entry: the only place that reads `process.env`, stdin and signals and sets the
 * exit code. Subcommands live in `commands/`, one file each, imported lazily so that `--version`
 * and the agent stay fast.
 */
import { runCommand, type ArgsDef, type CommandDef } from "citty";
import { messageOf, UsageError } from "./errors.ts";
import { createLogger, type Logger } from "./log.ts";
import { VERSION } from "./version.ts";
import { normalizeArgv } from "./commands/_shared.ts";

/** The world, handed to every command. */
export interface CommandEnv {
  env: Record<string, string | undefined>;
  log: Logger;
  /** Aborted by the first SIGINT/SIGTERM. */
  signal: AbortSignal;
  /** Aborted by a second SIGINT/SIGTERM (long-running modes finish their work on the first). */
  forceSignal: AbortSignal;
  stdinIsTTY: boolean;
  readStdin(): Promise<string>;
}

/** Subcommands by name, in the order `--help` lists them. */
const COMMANDS: Record<string, { description: string; load: () => Promise<CommandDef<any>>; alwaysZero?: (env: CommandEnv["env"]) => boolean }> = {
  agent: {
    description: "Deploy one release from a trigger on stdin (consul watch, serf, or a URL)",
    load: async () => (await import("./commands/agent.ts")).default,
    // consul watch stops for good when its handler exits non-zero, even for a bad flag.
    alwaysZero: (env) => env.CONSUL_INDEX !== undefined,
  },
  publish: { description: "Pack a directory, upload it with a manifest, record it in Consul KV and fire the deploy event", load: async () => (await import("./commands/publish.ts")).default },
  fire: { description: "Fire the deploy event for an existing manifest URL (re-deploy or roll back by hand)", load: async () => (await import("./commands/fire.ts")).default },
  rollback: { description: "Switch current back to an earlier release (sync_strategy: release), without downloading", load: async () => (await import("./commands/rollback.ts")).default },
  keygen: { description: "Make an Ed25519 key pair for signed manifests", load: async () => (await import("./commands/keygen.ts")).default },
  status: { description: "Show each node of a role: release, status, phase and age, against the latest release", load: async () => (await import("./commands/status.ts")).default },
  dashboard: { description: "Serve a live web page of every role's nodes and releases (from Consul)", load: async () => (await import("./commands/dashboard.ts")).default },
};

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    process.stdout.write(help());
    return name === undefined ? 2 : 0;
  }
  if (name === "--version" || name === "-v" || name === "version") {
    process.stdout.write(`pulldeploy ${VERSION}\n`);
    return 0;
  }
  const entry = COMMANDS[name];
  if (!entry) {
    process.stderr.write(`pulldeploy: unknown command "${name}" (commands: ${Object.keys(COMMANDS).join(", ")}; see pulldeploy --help)\n`);
    return 2;
  }
  const cmd = await entry.load();
  if (rest.includes("--help") || rest.includes("-h")) {
    process.stdout.write(await usage(name, cmd));
    return 0;
  }
  const log = createLogger();
  const controller = new AbortController();
  const force = new AbortController();
  const onSignal = (sig: NodeJS.Signals) => {
    if (controller.signal.aborted) {
      log.info(`received ${sig} again: stopping now`);
      force.abort(new Error(`interrupted by ${sig}`));
      return;
    }
    log.info(`received ${sig}: stopping`);
    controller.abort(new Error(`interrupted by ${sig}`));
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  const ctx: CommandEnv = {
    env: process.env,
    log,
    signal: controller.signal,
    forceSignal: force.signal,
    stdinIsTTY: process.stdin.isTTY === true,
    readStdin: () => Bun.stdin.text(),
  };
  let code: number;
  try {
    const args = await (typeof cmd.args === "function" ? cmd.args() : cmd.args);
    const rawArgs = normalizeArgv(rest, args ?? {});
    const { result } = await runCommand(cmd, { rawArgs, data: ctx });
    code = typeof result === "number" ? result : 0;
  } catch (err) {
    log.info(`pulldeploy ${name}: ${messageOf(err)}`);
    code = err instanceof UsageError ? 2 : 1;
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
  return entry.alwaysZero?.(ctx.env) ? 0 : code;
}

/** A command's flags, plain text: both spellings of each flag, its value and its meaning. */
async function usage(name: string, cmd: CommandDef<any>): Promise<string> {
  const meta = await (typeof cmd.meta === "function" ? cmd.meta() : cmd.meta);
  const args: ArgsDef = (await (typeof cmd.args === "function" ? cmd.args() : cmd.args)) ?? {};
  const positionals = Object.entries(args).filter(([, d]) => d.type === "positional");
  const rows = Object.entries(args)
    .filter(([, d]) => d.type !== "positional")
    .map(([flag, d]) => {
      const aliases = "alias" in d && d.alias ? (Array.isArray(d.alias) ? d.alias : [d.alias]) : [];
      const value = d.type === "boolean" ? "" : ` <${d.valueHint ?? "value"}>`;
      return [[flag, ...aliases].map((f) => `--${f}`).join(", ") + value, d.description ?? ""] as const;
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
  ].join("\n");
}

function help(): string {
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
    "",
  ].join("\n");
}

if (import.meta.main) {
  // No top-level await: the bytecode build is CommonJS.
  void main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
