/**
 * The few error classes callers branch on. Every message is one line: context first, data last.
 * `phase` says where in the deploy the error happened; the CLI prints `phase: message`.
 */

export type Phase =
  | "trigger"
  | "manifest"
  | "signature"
  | "fetch"
  | "checksum"
  | "pre"
  | "extract"
  | "sync"
  | "post"
  | "validate"
  | "success"
  | "failure"
  | "publish"
  | "consul";

export class PulldeployError extends Error {
  override name = "PulldeployError";
  constructor(
    message: string,
    readonly phase?: Phase,
    options?: { cause?: unknown },
  ) {
    super(oneLine(message), options);
  }
}

/** Bad flag or flag value: exit code 2. */
export class UsageError extends PulldeployError {
  override name = "UsageError";
}

/** Every problem of a manifest at once, each `field: what is wrong`. */
export class ManifestError extends PulldeployError {
  override name = "ManifestError";
  constructor(
    readonly problems: string[],
    /** Syntax-level problems (YAML, malformed commands) mean no hook may run. */
    readonly fatal: boolean,
    /** For a non-fatal error: the commands that did parse, so that `failure` can still run. */
    readonly partial?: { failure: string[]; env: Record<string, string> },
  ) {
    super(`manifest: ${problems.join("; ")}`, "manifest");
  }
}

/** Fetching a URL failed. `retryable` is true for 5xx, network and body errors. */
export class FetchError extends PulldeployError {
  override name = "FetchError";
  constructor(
    message: string,
    readonly retryable: boolean,
    options?: { cause?: unknown; status?: number },
  ) {
    super(message, "fetch", options);
    this.status = options?.status;
  }
  readonly status?: number;
}

export class ChecksumError extends PulldeployError {
  override name = "ChecksumError";
  constructor(
    readonly algorithm: string,
    readonly expected: string,
    readonly actual: string,
  ) {
    super(`checksum mismatch: expected ${algorithm} ${expected}, got ${actual}`, "checksum");
  }
}

/** A refused or broken archive entry; `entry` names it when known. */
export class ExtractError extends PulldeployError {
  override name = "ExtractError";
  constructor(message: string, readonly entry?: string, options?: { cause?: unknown }) {
    super(entry === undefined ? message : `${message}: ${entry}`, "extract", options);
  }
}

/** A spawned command failed: short message, full output kept on the error. */
export class CommandError extends PulldeployError {
  override name = "CommandError";
  constructor(
    message: string,
    phase: Phase,
    readonly exitCode: number | null,
    readonly output = "",
  ) {
    super(message, phase);
  }
}

/** Collapse any message to one line so logs and Consul reports stay greppable. */
export function oneLine(s: string): string {
  return s.replace(/\s*[\r\n]+\s*/g, " ").trim();
}

/** The message of anything thrown, for logs. */
export function messageOf(err: unknown): string {
  if (err instanceof Error) return oneLine(err.message);
  return oneLine(String(err));
}
