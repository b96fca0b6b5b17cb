/**
 * A command's run, for every invocation but a bare `--version` (`main.ts` answers that alone): the only
 * place that reads `process.env`, stdin and signals and decides the exit code. Subcommands live in
 * `cli/` (the table in `cli/index.ts`), one file each, imported lazily so that the agent stays fast.
 *
 * Start-up time (`consul watch` starts the agent with `[]` at every start and reload): the build
 * splits the bundle into chunks (`--splitting`, see the Makefile), so a run loads only the chunks it
 * imports. This file's static imports are the cost of every command: keep them to small modules of our
 * own. `node:fs` is imported once a command runs, citty (it loads `node:util`, ~7 ms) only for commands
 * without `fastStart`. Measured first-use costs to stay clear of on these paths: `process.stdout` /
 * `process.stderr` (~25 ms: a Node stream; `--version` and `--help` print with `console.log`),
 * `process.stdin` (~30 ms), `Bun.stdin.text()` (~5 ms), `node:crypto` (~15 ms).
 */
import { messageOf, PulldeployError, UsageError } from "../errors.ts";
import { createLogger } from "../log.ts";
import { COMMIT, VERSION } from "../version.ts";
import { normalizeArgv, takeLogFormat } from "./argv.ts";
import type { CommandEnv } from "./context.ts";
import { COMMANDS, help, parseFlags, plainFlags, usage } from "./index.ts";

/** Runs the command `argv` names (argv without the executable and script); resolves to the exit code. */
export async function run(argv: string[]): Promise<number> {
  const global = takeLogFormat(argv);
  const [name, ...rest] = global.rest;
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
    process.stderr.write(
      `pulldeploy: unknown command "${name}" (commands: ${Object.keys(COMMANDS).join(", ")}; see pulldeploy --help)\n`,
    );
    return 2;
  }
  if (global.error !== undefined) {
    process.stderr.write(`pulldeploy ${name}: ${global.error}\n`);
    return entry.alwaysZero?.(process.env) ? 0 : 2;
  }
  const [cmd, fs] = await Promise.all([entry.load(), import("node:fs")]);
  if (rest.includes("--help") || rest.includes("-h")) {
    printLines(await usage(name, cmd));
    return 0;
  }
  const log = createLogger({ format: global.format, ...(entry.fastStart ? { write: directStderr(fs) } : {}) });
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
    readStdin: (limits) => readStdin(fs, limits),
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
    log.error(`pulldeploy ${name}: ${messageOf(err)}`);
    code = err instanceof UsageError ? 2 : 1;
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
  return entry.alwaysZero?.(ctx.env) ? 0 : code;
}

/**
 * Text ending in a newline on stdout. `console.log` writes it as is (one argument: no format directives) and adds the
 * newline.
 */
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
 * stdin's text as `Bun.stdin.text()` gives it (UTF-8; a BOM dropped, bad bytes as U+FFFD), at most
 * `maxBytes`, ending within `timeoutMs`: a trigger is written at once and closed by `consul watch`
 * and serf, so a writer that holds stdin open without writing, or trickles, must not hold the host's
 * deploys hostage. The fast path (a file, or a pipe already written and closed) is `readSync` on a
 * non-blocking descriptor of the same pipe (`/proc/self/fd/0`), ~free; when the pipe is empty but still
 * open the reader naps and reads again (`napUntilRetry`). A socket (no such reopening) is read blocking,
 * each read after `poll(2)` (through `bun:ffi`) in slices of at most 250 ms so that SIGINT/SIGTERM are
 * handled between them.
 */
async function readStdin(fs: typeof import("node:fs"), opts: { timeoutMs: number; maxBytes: number }): Promise<string> {
  const deadline = performance.now() + opts.timeoutMs;
  const chunks: Uint8Array[] = [];
  let total = 0;
  let fd = 0;
  let waitReadable: ((fd: number, ms: number) => boolean) | undefined;
  let naps = 0;
  try {
    if (!fs.fstatSync(0).isFile()) fd = fs.openSync("/proc/self/fd/0", fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch {
    fd = 0; // a socket (ENXIO) or no /proc: blocking reads, the deadline enforced by poll before each
    waitReadable = await pollerFor();
  }
  try {
    for (;;) {
      if (waitReadable) await waitUntilReadable(waitReadable, fd, deadline, opts.timeoutMs);
      const buf = new Uint8Array(64 * 1024);
      let n: number;
      try {
        n = fs.readSync(fd, buf, 0, buf.length, null);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EAGAIN") throw err;
        await napUntilRetry(naps++, deadline, opts.timeoutMs);
        continue;
      }
      naps = 0;
      if (n === 0) break;
      total += n;
      if (total > opts.maxBytes) {
        throw new PulldeployError(
          `stdin: more than ${opts.maxBytes} bytes; a trigger is one consul event array or one URL line`,
          "trigger",
        );
      }
      chunks.push(buf.subarray(0, n));
    }
  } finally {
    if (fd !== 0) fs.closeSync(fd);
  }
  // A SIGINT/SIGTERM that came during a read is handled now, before the trigger is acted on.
  await new Promise((resolve) => setImmediate(resolve));
  return new TextDecoder().decode(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks));
}

/**
 * The pipe was empty but still open: sleep 1, 2, 4… up to 32 ms (`nap` is how many times in a row)
 * before reading again, so that a writer a moment late costs a millisecond, and one that never writes
 * a few hundred wakeups until the deadline. Sleeping yields to signal handlers. Not `poll(2)`: that is
 * `bun:ffi`, whose loading costs more than the usual one or two naps.
 */
async function napUntilRetry(nap: number, deadline: number, timeoutMs: number): Promise<void> {
  const left = deadline - performance.now();
  if (left <= 0) throw triggerTimeout(timeoutMs);
  await Bun.sleep(Math.min(2 ** Math.min(nap, 5), Math.ceil(left)));
}

function triggerTimeout(timeoutMs: number): PulldeployError {
  return new PulldeployError(
    `stdin: no complete trigger within ${timeoutMs / 1000}s (consul watch and serf write it and close ` +
      "stdin at once; --trigger-timeout)",
    "trigger",
  );
}

/** Wait until `fd` is readable (data, EOF or an error), yielding to signal handlers every 250 ms. */
async function waitUntilReadable(
  wait: (fd: number, ms: number) => boolean,
  fd: number,
  deadline: number,
  timeoutMs: number,
): Promise<void> {
  for (;;) {
    const left = deadline - performance.now();
    if (left <= 0) throw triggerTimeout(timeoutMs);
    const ready = wait(fd, Math.min(250, Math.ceil(left)));
    await new Promise((resolve) => setImmediate(resolve));
    if (ready) return;
  }
}

/** `poll(2)` on one descriptor for POLLIN, blocking up to `ms`; true when it is readable (or at EOF or in error). */
async function pollerFor(): Promise<(fd: number, ms: number) => boolean> {
  const { dlopen, FFIType, ptr } = await import("bun:ffi");
  const libc = dlopen(process.platform === "darwin" ? "libc.dylib" : "libc.so.6", {
    poll: { args: [FFIType.ptr, FFIType.u64, FFIType.i32], returns: FFIType.i32 },
  });
  const pollfd = new Int32Array(2); // struct pollfd { int fd; short events; short revents; }
  const shorts = new Int16Array(pollfd.buffer);
  return (fd, ms) => {
    pollfd[0] = fd;
    shorts[2] = 1; // POLLIN
    shorts[3] = 0;
    return libc.symbols.poll(ptr(pollfd), 1, ms) > 0 && shorts[3] !== 0;
  };
}
