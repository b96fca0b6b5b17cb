/** How the stores (sources and targets) word a request that got no HTTP answer. Pure. */

/** An abort or a timeout of `fetch` (the caller's signal or an `AbortSignal.timeout`). */
export function isAbort(err: unknown): boolean {
  return err instanceof Error && (err.name === "AbortError" || err.name === "TimeoutError");
}

/** A per-attempt deadline (`AbortSignal.timeout`) rather than a stop. */
export function isTimeout(reason: unknown): boolean {
  return reason instanceof Error && reason.name === "TimeoutError";
}

/**
 * A network error as one line: `timed out` for an abort or timeout; else the message with the error's
 * code in front, once (`ConnectionRefused: Unable to connect…`, and `connect ECONNREFUSED 127.0.0.1:9`
 * as it is, since it already names its code). Callers that tell a user's interrupt from a timeout
 * check `isAbort` first.
 */
export function networkMessage(err: unknown): string {
  if (isAbort(err)) return "timed out";
  const e = err as { code?: string; message?: string } | null | undefined;
  const message = String(e?.message ?? err);
  return e?.code && !message.includes(e.code) ? `${e.code}: ${message}` : message;
}
