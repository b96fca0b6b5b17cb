/**
 * The executable's entry: the only place that reads `process.env`, stdin and signals and sets the
 * exit code. Subcommands live in `commands/`, one file each, imported lazily so that `--version`
 * and the agent stay fast.
 *
 * Start-up time (`consul watch` starts the agent with `[]` at every start and reload): the build
 * splits the bundle into chunks (`--splitting`, see the Makefile), so a run loads only the chunks it
 * imports. This file's static imports are the cost of every run, `--version` included: keep them to
 * small modules of our own. `node:fs` is imported once a command runs, citty (it loads `node:util`,
 * ~7 ms) only for commands without `fastStart`. Measured first-use costs to stay clear of on these
 * paths: `process.stdout` / `process.stderr` (~25 ms: a Node stream; `--version` and `--help` print
 * with `console.log`), `process.stdin` (~30 ms), `Bun.stdin.text()` (~5 ms), `node:crypto` (~15 ms).
 */
import type { ArgsDef, CommandDef, ParsedArgs } from "citty";
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
const COMMANDS: Record<
  string,
  {
    description: string;
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
    load: async () => (await import("./commands/agent.ts")).default,
    // consul watch stops for good when its handler exits non-zero, even for a bad flag.
    alwaysZero: (env) => env.CONSUL_INDEX !== undefined,
    fastStart: true,
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
    printLines(help());
    return name === undefined ? 2 : 0;
  }
  if (name === "--version" || name === "-v" || name === "version") {
    printLines(`pulldeploy ${VERSION}\n`);
    return 0;
  }
  const entry = COMMANDS[name];
  if (!entry) {
    process.stderr.write(`pulldeploy: unknown command "${name}" (commands: ${Object.keys(COMMANDS).join(", ")}; see pulldeploy --help)\n`);
    return 2;
  }
  const [cmd, fs] = await Promise.all([entry.load(), import("node:fs")]);
  if (rest.includes("--help") || rest.includes("-h")) {
    printLines(await usage(name, cmd));
    return 0;
  }
  const log = createLogger(entry.fastStart ? { write: directStderr(fs) } : {});
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
    get stdinIsTTY() {
      return stdinIsTTY(fs);
    },
    readStdin: () => readStdin(fs),
  };
  let code: number;
  try {
    const args = await (typeof cmd.args === "function" ? cmd.args() : cmd.args);
    const rawArgs = normalizeArgv(rest, args ?? {});
    let result: unknown;
    if (entry.fastStart && plainFlags(cmd, args ?? {})) {
      result = await cmd.run!({ rawArgs, args: parseFlags(rawArgs), cmd, data: ctx });
    } else {
      const { runCommand } = await import("citty"); // it loads node:util (~7 ms)
      ({ result } = await runCommand(cmd, { rawArgs, data: ctx }));
    }
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

/** A command `parseFlags` can run as citty would: flags only, no defaults, nothing but `run`. */
function plainFlags(cmd: CommandDef<any>, args: ArgsDef): boolean {
  const simple = Object.values(args).every((d) => (d.type === "string" || d.type === "boolean") && d.default === undefined && !d.required);
  return simple && typeof cmd.run === "function" && !cmd.setup && !cmd.cleanup && !cmd.subCommands && !cmd.plugins;
}

/**
 * citty's parse of what `normalizeArgv` returns for a command with flags only: `--name=value`,
 * `--name` (true), `--no-name` (false, whatever its place, as citty does). The result holds the
 * main names only (citty adds each alias and camelCase spelling too).
 */
function parseFlags(rawArgs: string[]): ParsedArgs<ArgsDef> {
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

/** Text ending in a newline on stdout. `console.log` writes it as is (one argument: no format directives) and adds the newline. */
function printLines(text: string): void {
  console.log(text.endsWith("\n") ? text.slice(0, -1) : text);
}

/**
 * A log writer that writes each line to fd 2 at once (`writeSync`), as `process.stderr` does for
 * pipes and files, without building `process.stderr` (~25 ms of start-up). On any error (EAGAIN
 * from a non-blocking pipe that is full, a partial write, EPIPE) the rest of the line and every
 * later line go through `process.stderr.write` as before, so the order stays and errors surface as
 * they did.
 */
function directStderr(fs: typeof import("node:fs")): (line: string) => void {
  let viaStream = false;
  return (line) => {
    if (viaStream) {
      process.stderr.write(line);
      return;
    }
    const bytes = Buffer.from(line);
    let done = 0;
    try {
      while (done < bytes.length) done += fs.writeSync(2, bytes, done);
    } catch {
      viaStream = true;
      process.stderr.write(bytes.subarray(done));
    }
  };
}

/**
 * `process.stdin.isTTY`, without building `process.stdin` (~30 ms) when stdin is a pipe or a file,
 * as it is under `consul watch` or serf: a terminal is always a character device.
 */
function stdinIsTTY(fs: typeof import("node:fs")): boolean {
  try {
    if (!fs.fstatSync(0).isCharacterDevice()) return false;
  } catch {
    // fd 0 closed or unreadable: let process.stdin decide, as before.
  }
  return process.stdin.isTTY === true;
}

/**
 * stdin's text as `Bun.stdin.text()` gives it (UTF-8; a BOM dropped, bad bytes as U+FFFD), without
 * its first-use cost (~5 ms): `readSync` until EOF, which under `consul watch` and serf (a blocking
 * pipe, written at once and closed) or from a file returns at once. On any error (EAGAIN: a
 * non-blocking pipe with nothing in it yet; EBADF) the rest is read by `Bun.stdin` as before.
 */
async function readStdin(fs: typeof import("node:fs")): Promise<string> {
  const chunks: Uint8Array[] = [];
  try {
    for (;;) {
      const buf = new Uint8Array(64 * 1024);
      const n = fs.readSync(0, buf, 0, buf.length, null);
      if (n === 0) break;
      chunks.push(buf.subarray(0, n));
    }
  } catch {
    chunks.push(await Bun.stdin.bytes());
  }
  // A SIGINT/SIGTERM that came during a blocking read is handled now, before the trigger is acted on.
  await new Promise((resolve) => setImmediate(resolve));
  return new TextDecoder().decode(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks));
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
      return [[flag, ...aliases].map((f) => (f.length === 1 ? `-${f}` : `--${f}`)).join(", ") + value, d.description ?? ""] as const;
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
  // No top-level await: importing this module (tests do) must not run or wait for anything.
  void main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
