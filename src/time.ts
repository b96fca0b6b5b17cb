/**
 * Shared time helpers: an abortable sleep and the one way a duration is written in messages.
 * Pure (no clocks read here); imports nothing.
 */

/**
 * Wait `ms`, ending early when `signal` aborts. Never rejects: a caller that must stop on abort checks
 * `signal.aborted` afterwards, so a shutdown never surfaces as an error of its own.
 */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(t);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}

/**
 * A duration as a user would type it, exactly, so it can be pasted back into a flag (parseDuration
 * reads every form): whole minutes `10m`, else seconds `2s` / `1.5s` from one second up, else `400ms`.
 */
export function formatDuration(ms: number): string {
  if (ms >= 60_000 && ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms >= 1000) return `${ms / 1000}s`;
  return `${ms}ms`;
}
