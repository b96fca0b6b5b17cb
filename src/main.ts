/**
 * The executable's entry: the only place that reads `process.env`, stdin and signals and sets the
 * exit code. Subcommands live in `cli/` (the table in `cli/index.ts`), one file each, imported lazily so that `--version`
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
import { messageOf, UsageError } from "./errors.ts";
import { createLogger } from "./log.ts";
import { COMMIT, VERSION } from "./version.ts";
import { normalizeArgv } from "./cli/_shared.ts";
import type { CommandEnv } from "./cli/context.ts";
import { COMMANDS, help, parseFlags, plainFlags, usage } from "./cli/index.ts";

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    printLines(help());
    return name === undefined ? 2 : 0;
  }
  if (name === "--version" || name === "-v" || name === "version") {
    printLines(`pulldeploy ${VERSION} (commit ${COMMIT})\n`);
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

if (import.meta.main) {
  // No top-level await: importing this module (tests do) must not run or wait for anything.
  void main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
