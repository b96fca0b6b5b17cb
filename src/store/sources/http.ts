/**
 * `http(s)://`: a GET that checks the status (stretcher did not). 5xx, 429 and network errors are
 * retryable; proxies come from HTTP_PROXY / HTTPS_PROXY / NO_PROXY in the passed environment.
 */
import { FetchError } from "../../errors.ts";
import { redact } from "../../log.ts";
import type { Env } from "../../env.ts";
import { isAbort, isTimeout, networkMessage } from "../network.ts";
import type { Source } from "./types.ts";

export const httpSource: Source = {
  async open(url, opts) {
    const headers: Record<string, string> = { "User-Agent": opts.userAgent };
    const offset = opts.offset ?? 0;
    const ranged = offset > 0 || opts.length !== undefined;
    if (ranged) headers.Range = `bytes=${offset}-${opts.length === undefined ? "" : offset + opts.length - 1}`;
    const stallMs = opts.stallMs ?? DEFAULT_STALL_MS;
    const stall = new AbortController();
    const signal = opts.signal ? AbortSignal.any([opts.signal, stall.signal]) : stall.signal;
    let timer = setTimeout(() => stall.abort(), stallMs);
    const why = (err: unknown): { message: string; retryable: boolean } => {
      // Our own stall timer or the caller's per-attempt deadline: try again; the agent being stopped: don't.
      if (stall.signal.aborted) return { message: `stalled: no data for ${stallMs / 1000}s`, retryable: true };
      if (opts.signal?.aborted) {
        const reason = opts.signal.reason as { message?: unknown } | undefined;
        if (isTimeout(reason) || typeof reason?.message !== "string")
          return { message: "timed out", retryable: isTimeout(reason) };
        return { message: reason.message, retryable: false };
      }
      if (isAbort(err)) return { message: "timed out", retryable: false };
      return { message: networkMessage(err), retryable: true };
    };
    let res: Response;
    try {
      res = await fetch(url, {
        headers,
        signal,
        proxy: proxyFor(url, opts.env),
        redirect: "follow",
        decompress: false,
      } as RequestInit);
    } catch (err) {
      clearTimeout(timer);
      const w = why(err);
      throw new FetchError(`fetch ${redact(url)}: ${w.message}`, w.retryable, { cause: err });
    }
    clearTimeout(timer);
    if (!res.ok) {
      await res.body?.cancel().catch(() => {});
      const retryable = res.status >= 500 || res.status === 429;
      throw new FetchError(`fetch ${redact(url)}: ${res.status} ${res.statusText || "error"}`, retryable, {
        status: res.status,
      });
    }
    if (ranged && res.status !== 206) {
      await res.body?.cancel().catch(() => {});
      throw new FetchError(`fetch ${redact(url)}: server ignored the Range request (status ${res.status})`, false, {
        status: res.status,
      });
    }
    const len = res.headers.get("content-length");
    const size = len === null || opts.length !== undefined ? undefined : Number(len) + offset;
    if (!res.body) return { body: new ReadableStream({ start: (c) => c.close() }), size };
    const reader = res.body.getReader();
    // The body, with the stall timer re-armed at each chunk (pull-based: a slow consumer is not a stall).
    const body = new ReadableStream<Uint8Array>(
      {
        async pull(controller) {
          timer = setTimeout(() => stall.abort(), stallMs);
          try {
            const { done, value } = await reader.read();
            if (done) controller.close();
            else controller.enqueue(value);
          } catch (err) {
            const w = why(err);
            controller.error(new FetchError(`fetch ${redact(url)}: ${w.message}`, w.retryable, { cause: err }));
          } finally {
            clearTimeout(timer);
          }
        },
        async cancel(reason) {
          clearTimeout(timer);
          await reader.cancel(reason).catch(() => {});
        },
      },
      { highWaterMark: 0 },
    );
    return { body, size };
  },
};

/** Without `--timeout`, an http(s) source fails after this long without a byte (headers or body). */
export const DEFAULT_STALL_MS = 60_000;

/** The proxy for a URL, following the usual curl conventions. */
export function proxyFor(url: string, env: Env): string | undefined {
  const u = new URL(url);
  const noProxy = env.NO_PROXY ?? env.no_proxy ?? "";
  const host = u.hostname.toLowerCase();
  for (const raw of noProxy.split(",")) {
    const entry = raw
      .trim()
      .toLowerCase()
      .replace(/^\*?\./, "");
    if (entry === "") continue;
    if (entry === "*" || host === entry || host.endsWith(`.${entry}`)) return undefined;
  }
  const proxy = u.protocol === "https:" ? (env.HTTPS_PROXY ?? env.https_proxy) : (env.HTTP_PROXY ?? env.http_proxy);
  return proxy && proxy !== "" ? proxy : undefined;
}
