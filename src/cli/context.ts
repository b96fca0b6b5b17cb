/**
 * What every command is handed: the world (environment, log, signals, stdin), so that commands never
 * read `process.env`, stdin or signals themselves. Built by `run.ts`, the only place that does.
 */
import type { Env } from "../env.ts";
import type { Logger } from "../log.ts";

/** The world, handed to every command. */
export interface CommandEnv {
  env: Env;
  log: Logger;
  /** Aborted by the first SIGINT/SIGTERM. */
  signal: AbortSignal;
  /** Aborted by a second SIGINT/SIGTERM (long-running modes finish their work on the first). */
  forceSignal: AbortSignal;
  stdinIsTTY: boolean;
  /** stdin's text; throws when it is larger than `maxBytes` or not closed within `timeoutMs`. */
  readStdin(limits: { timeoutMs: number; maxBytes: number }): Promise<string>;
}
