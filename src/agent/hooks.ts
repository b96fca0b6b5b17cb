/**
 * The manifest's commands: each item is `sh -c ITEM`, in order, stopping at the first failure.
 * Each runs in its own process group so that a timeout or a signal kills everything it started.
 * pre/post get an empty stdin; success/failure get the log so far (a command that ignores it is fine).
 * With a tracker, each group is recorded while its `sh` runs, so that a run after a killed agent kills
 * a hook still running (a daemon a finished hook started in the background is left alone).
 */
import { CommandError, type DeployPhase } from "../errors.ts";
import { redact, type Logger } from "../log.ts";
import type { ChildTracker } from "../pid.ts";

export interface RunCommandsOptions {
  phase: DeployPhase;
  env: Record<string, string>;
  /** Text written to each command's stdin; empty stdin when absent. */
  stdin?: string;
  /** Per-command timeout in ms; 0 or absent: none. */
  timeoutMs?: number;
  signal?: AbortSignal;
  log: Logger;
  track?: ChildTracker;
}

/** Run `commands` in order; throws `CommandError` naming the phase and the failing command. */
export async function runCommands(commands: string[], opts: RunCommandsOptions): Promise<void> {
  for (const command of commands) {
    await runOne(command, opts);
  }
}

async function runOne(command: string, opts: RunCommandsOptions): Promise<void> {
  const { log, phase } = opts;
  if (opts.signal?.aborted) throw new CommandError(`${phase}: not started, interrupted: ${command}`, phase, null);
  log.info(`${phase}: run: ${command}`);
  const proc = Bun.spawn(["sh", "-c", command], {
    stdin: opts.stdin === undefined ? "ignore" : "pipe",
    stdout: "pipe",
    stderr: "pipe",
    env: commandEnv(opts.env),
    detached: true,
  });
  opts.track?.started(proc.pid, `${phase}: ${command}`);
  let reason: string | null = null;
  const killGroup = (why: string) => {
    if (reason !== null) return;
    reason = why;
    try {
      process.kill(-proc.pid, "SIGKILL");
    } catch {
      proc.kill("SIGKILL");
    }
  };
  const timer = opts.timeoutMs
    ? setTimeout(() => killGroup(`timed out after ${opts.timeoutMs! / 1000}s`), opts.timeoutMs)
    : undefined;
  const onAbort = () => killGroup("interrupted");
  opts.signal?.addEventListener("abort", onAbort, { once: true });
  try {
    if (opts.stdin !== undefined) void feed(proc.stdin as import("bun").FileSink, opts.stdin);
    const output: string[] = [];
    await Promise.all([pipeLines(proc.stdout, log, output), pipeLines(proc.stderr, log, output)]);
    const code = await proc.exited;
    if (reason !== null) {
      throw new CommandError(`${phase} command ${reason}: ${command}`, phase, code, output.join("\n"));
    }
    if (code !== 0) {
      throw new CommandError(
        `${phase} command failed with exit code ${code}: ${command}`,
        phase,
        code,
        output.join("\n"),
      );
    }
  } finally {
    opts.track?.ended(proc.pid);
    clearTimeout(timer);
    opts.signal?.removeEventListener("abort", onAbort);
    // Orphans left in the group (e.g. `sleep 100 &`) must not outlive a failed deploy.
    if (reason !== null) {
      try {
        process.kill(-proc.pid, "SIGKILL");
      } catch {}
    }
  }
}

/**
 * The command's environment: the agent's own variables as they are (the host's, passed on on purpose),
 * and every `PULLDEPLOY_*` value (the manifest URL, src, the failure's error) with URL credentials
 * redacted: a hook may log or forward them.
 */
export function commandEnv(env: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) out[k] = k.startsWith("PULLDEPLOY_") ? redact(v) : v;
  return out;
}

/** Write the whole stdin; a command that exits without reading it (EPIPE) is fine. */
async function feed(sink: import("bun").FileSink, text: string): Promise<void> {
  try {
    // write() returns a promise when the pipe is full; it rejects with EPIPE when the command exits first.
    await sink.write(text);
    await sink.end();
  } catch {
    // EPIPE / closed: the command chose not to read its stdin.
  }
}

/** Log a stream's output line by line as it comes; keep it for the error. */
async function pipeLines(stream: ReadableStream<Uint8Array>, log: Logger, keep: string[]): Promise<void> {
  const decoder = new TextDecoder();
  let pending = "";
  for await (const chunk of stream) {
    pending += decoder.decode(chunk, { stream: true });
    let nl: number;
    while ((nl = pending.indexOf("\n")) !== -1) {
      const line = pending.slice(0, nl).replace(/\r$/, "");
      pending = pending.slice(nl + 1);
      log.info(line);
      if (keep.length < 200) keep.push(line);
    }
  }
  pending += decoder.decode();
  if (pending !== "") {
    log.info(pending);
    keep.push(pending);
  }
}
