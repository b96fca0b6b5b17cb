/** The one error the Consul client throws (phase "consul"); its messages are one line, context first. */
import { PulldeployError } from "../errors.ts";

export class ConsulError extends PulldeployError {
  override name = "ConsulError";
  /** The HTTP status, when Consul answered. */
  readonly status?: number;
  /** The whole answer body, when Consul answered. */
  readonly body?: string;
  constructor(message: string, options: { status?: number; body?: string; cause?: unknown } = {}) {
    super(message, "consul", { cause: options.cause });
    this.status = options.status;
    this.body = options.body;
  }
}

/** An answer Consul would not give: `consul GET /v1/x: unexpected answer (expected a list of nodes)`. */
export function unexpected(method: string, path: string, what: string): ConsulError {
  return new ConsulError(`consul ${method} ${path}: unexpected answer (expected ${what})`);
}
