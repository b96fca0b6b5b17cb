/**
 * The few error classes callers branch on. Every message is one line: context first, data last.
 * `phase` says where the error happened (a deploy phase on the agent, a stage of publish); the CLI
 * prints `phase: message`.
 */

/** Where an agent's deploy can fail (a node report's `phase` is one of these, or "done"). */
export const DEPLOY_PHASES = [
  "trigger",
  "manifest",
  "signature",
  "fetch",
  "checksum",
  "pre",
  "extract",
  "sync",
  "post",
  "validate",
  "rollout",
  "health",
  "success",
  "failure",
] as const;
export type DeployPhase = (typeof DEPLOY_PHASES)[number];

/** The publisher's stages: storing the release, then recording and announcing it through Consul (or Serf). */
export type PublishStage = "publish" | "consul";

/** A deploy reports only deploy phases: an error from elsewhere takes the phase the deploy was in. */
export function isDeployPhase(p: DeployPhase | PublishStage | undefined): p is DeployPhase {
  return (DEPLOY_PHASES as readonly string[]).includes(p as string);
}

export class PulldeployError extends Error {
  override name = "PulldeployError";
  constructor(
    message: string,
    readonly phase?: DeployPhase | PublishStage,
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
  constructor(
    message: string,
    readonly entry?: string,
    options?: { cause?: unknown },
  ) {
    super(entry === undefined ? message : `${message}: ${entry}`, "extract", options);
  }
}

/** A spawned command failed: short message, full output kept on the error. */
export class CommandError extends PulldeployError {
  override name = "CommandError";
  constructor(
    message: string,
    phase: DeployPhase,
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
