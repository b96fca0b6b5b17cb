/**
 * `http(s)://`: a GET that checks the status (stretcher did not). 5xx, 429 and network errors are
 * retryable; proxies come from HTTP_PROXY / HTTPS_PROXY / NO_PROXY in the passed environment.
 */
import { FetchError } from "../../errors.ts";
import { redact } from "../../log.ts";
import type { Env } from "../../env.ts";
import { isAbort, networkMessage } from "../network.ts";
import type { Source } from "./types.ts";

export const httpSource: Source = {
  async open(url, opts) {
    const headers: Record<string, string> = { "User-Agent": opts.userAgent };
    const offset = opts.offset ?? 0;
    if (offset > 0) headers.Range = `bytes=${offset}-`;
    let res: Response;
    try {
      res = await fetch(url, { headers, signal: opts.signal, proxy: proxyFor(url, opts.env), redirect: "follow", decompress: false } as RequestInit);
    } catch (err) {
      throw new FetchError(`fetch ${redact(url)}: ${networkMessage(err)}`, !isAbort(err), { cause: err });
    }
    if (!res.ok) {
      await res.body?.cancel().catch(() => {});
      const retryable = res.status >= 500 || res.status === 429;
      throw new FetchError(`fetch ${redact(url)}: ${res.status} ${res.statusText || "error"}`, retryable, { status: res.status });
    }
    if (offset > 0 && res.status !== 206) {
      await res.body?.cancel().catch(() => {});
      throw new FetchError(`fetch ${redact(url)}: server ignored the Range request (status ${res.status})`, false, { status: res.status });
    }
    const len = res.headers.get("content-length");
    const size = len === null ? undefined : Number(len) + offset;
    return { body: res.body ?? new ReadableStream({ start: (c) => c.close() }), size };
  },
};

/** The proxy for a URL, following the usual curl conventions. */
export function proxyFor(url: string, env: Env): string | undefined {
  const u = new URL(url);
  const noProxy = env.NO_PROXY ?? env.no_proxy ?? "";
  const host = u.hostname.toLowerCase();
  for (const raw of noProxy.split(",")) {
    const entry = raw.trim().toLowerCase().replace(/^\*?\./, "");
    if (entry === "") continue;
    if (entry === "*" || host === entry || host.endsWith(`.${entry}`)) return undefined;
  }
  const proxy = u.protocol === "https:" ? (env.HTTPS_PROXY ?? env.https_proxy) : (env.HTTP_PROXY ?? env.http_proxy);
  return proxy && proxy !== "" ? proxy : undefined;
}

