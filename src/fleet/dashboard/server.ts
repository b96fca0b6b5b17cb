/**
 * The dashboard's server: one loop keeps a blocking query on `<prefix>/roles/?recurse` (and re-reads
 * each role's catalog nodes after a change, at most every few seconds, and whenever a query's wait ran
 * out), and pushes every real change to the page over Server-Sent Events.
 *
 *   GET /                 the page (assets.js: page.html, page.css, page.js and format.js embedded,
 *                         nothing from the internet)
 *   GET /api/state        DashboardState as JSON; `?index=N` waits (up to `wait`, 30s by default)
 *                         until the state's index is not N
 *   GET /api/events       text/event-stream: an `event: state` with the whole state now and on each change
 *   GET /metrics          Prometheus text (../metrics.ts): nodes per role per status, latest release age, rollout state
 *
 * Consul going away keeps the last state on the page with `consul.ok: false` and the error; the loop
 * retries with backoff until Consul answers again.
 */
import { hostname } from "node:os";
import type { ConsulClient, KvEntry } from "../../consul/client.ts";
import { nextIndex } from "../../consul/blocking.ts";
import { messageOf } from "../../errors.ts";
import { catalogNodesOf } from "../view.ts";
import { fleetMetrics } from "../metrics.ts";
import type { Logger } from "../../log.ts";
import { sleep } from "../../time.ts";
import { parseDuration } from "../../units.ts";
import { APP_CSS, APP_JS, FORMAT_JS, PAGE_HTML } from "./assets.js";
import { dashboardRoles, rolesOf, stateKey, type DashboardState } from "./state.ts";

export interface DashboardOptions {
  consul: ConsulClient;
  prefix: string;
  /** Show only these roles (empty: every role under `<prefix>/roles/`). */
  roles?: string[];
  hostname: string;
  /** 0 picks a free port. */
  port: number;
  log: Logger;
  /** Consul blocking-query wait (default "30s"): the catalog is re-read at least this often. */
  wait?: string;
  /** Least time between two catalog reads after KV changes (default 3 s). */
  catalogEveryMs?: number;
  /** Waits between attempts while Consul is away (default 1 s doubling to 10 s). */
  retryMs?: [number, number];
  /** Names the page may be opened by besides IP addresses, `localhost` and `hostname` (e.g. the machine's name). */
  allowedHosts?: string[];
}

export interface Dashboard {
  /** `http://127.0.0.1:PORT` */
  url: string;
  state(): DashboardState;
  stop(): Promise<void>;
}

/** `127.0.0.1:8080`, `localhost:0`, `[::1]:8080`, `:8080` (every interface). */
export function parseListen(value: string): { hostname: string; port: number } | string {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(value.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) return `expected host:port (127.0.0.1:8080, [::1]:8080, :8080), got "${value}"`;
  const hostname = m[1] ?? m[2]!;
  return { hostname: hostname === "" ? "0.0.0.0" : hostname, port };
}

export function startDashboard(o: DashboardOptions): Dashboard {
  const wait = o.wait ?? "30s";
  const waitMs = parseDuration(wait);
  const longPollMs = typeof waitMs === "number" ? waitMs : 30_000;
  const [minRetry, maxRetry] = o.retryMs ?? [1000, 10_000];
  const stopping = new AbortController();
  const listeners = new Set<() => void>();

  let entries: readonly KvEntry[] = [];
  let catalogs = new Map<string, string[]>();
  let consulState: DashboardState["consul"] = { address: o.consul.address, ok: true, error: null };
  let index = 1;
  let lastKey = "";

  const state = (): DashboardState => {
    const now = new Date();
    return {
      index,
      generated_at: now.toISOString(),
      prefix: o.prefix,
      consul: consulState,
      roles: dashboardRoles({ entries, prefix: o.prefix, catalogs, only: o.roles, now }),
    };
  };
  const publish = () => {
    const key = stateKey(
      dashboardRoles({ entries, prefix: o.prefix, catalogs, only: o.roles, now: new Date(0) }),
      consulState,
    );
    if (key === lastKey) return;
    lastKey = key;
    index++;
    for (const l of [...listeners]) l();
  };

  const watching = (async () => {
    let kvIndex = 0;
    let catalogAt = 0;
    let retry = minRetry;
    let away = false;
    while (!stopping.signal.aborted) {
      try {
        const answer = await o.consul.kvList(
          `${o.prefix}/roles/`,
          kvIndex ? { index: kvIndex, wait, signal: stopping.signal } : { signal: stopping.signal },
        );
        const ranOut = kvIndex !== 0 && answer.index === kvIndex;
        kvIndex = nextIndex(kvIndex, answer.index);
        entries = answer.entries;
        const roles = o.roles && o.roles.length > 0 ? o.roles : rolesOf(entries, o.prefix);
        if (ranOut || Date.now() - catalogAt >= (o.catalogEveryMs ?? 3000) || roles.some((r) => !catalogs.has(r))) {
          const read = await Promise.all(roles.map(async (r) => [r, await catalogNodesOf(o.consul, r)] as const));
          catalogs = new Map(read);
          catalogAt = Date.now();
        }
        if (away) o.log.info(`dashboard: ${o.consul.address} answers again`);
        away = false;
        retry = minRetry;
        consulState = { address: o.consul.address, ok: true, error: null };
        publish();
      } catch (err) {
        if (stopping.signal.aborted) break;
        if (!away) o.log.info(`dashboard: ${messageOf(err)}; showing the last state, retrying`);
        away = true;
        kvIndex = 0;
        consulState = { address: o.consul.address, ok: false, error: messageOf(err) };
        publish();
        await sleep(retry, stopping.signal);
        retry = Math.min(retry * 2, maxRetry);
      }
    }
  })();

  /** Resolves when the state's index moves past `seen`, after `ms`, or when `signal` aborts. */
  const changed = (seen: number, ms: number, signal: AbortSignal) =>
    new Promise<void>((resolve) => {
      if (index !== seen || signal.aborted) return resolve();
      const done = () => {
        clearTimeout(timer);
        listeners.delete(done);
        signal.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      listeners.add(done);
      signal.addEventListener("abort", done, { once: true });
    });

  const allowed = new Set([
    "localhost",
    o.hostname.toLowerCase(),
    ...(o.allowedHosts ?? []).map((h) => h.toLowerCase()),
  ]);
  const server = Bun.serve({
    hostname: o.hostname,
    port: o.port,
    async fetch(req, srv) {
      if (!allowedHost(req.headers.get("host"), allowed)) {
        return new Response(
          `dashboard: Host ${JSON.stringify(req.headers.get("host") ?? "")} is not this dashboard's (DNS ` +
            `rebinding?); open it by IP address or as localhost\n`,
          {
            status: 421,
            headers: { ...SECURITY_HEADERS, "Content-Type": "text/plain; charset=utf-8" },
          },
        );
      }
      const url = new URL(req.url);
      if (req.method !== "GET" && req.method !== "HEAD")
        return new Response("method not allowed\n", { status: 405, headers: { Allow: "GET, HEAD" } });
      switch (url.pathname) {
        case "/":
          return asset(PAGE_HTML, "text/html; charset=utf-8");
        case "/app.css":
          return asset(APP_CSS, "text/css; charset=utf-8");
        case "/app.js":
          return asset(APP_JS, "text/javascript; charset=utf-8");
        case "/format.js":
          return asset(FORMAT_JS, "text/javascript; charset=utf-8");
        case "/api/state": {
          const seen = url.searchParams.get("index");
          if (seen !== null && /^\d+$/.test(seen)) {
            srv.timeout(req, 0);
            await changed(Number(seen), longPollMs, AbortSignal.any([req.signal, stopping.signal]));
          }
          return json(state());
        }
        case "/api/events":
          srv.timeout(req, 0);
          return events(req.signal);
        case "/metrics":
          return new Response(fleetMetrics(state(), entries, new Date()), {
            headers: {
              ...SECURITY_HEADERS,
              "Content-Type": "text/plain; version=0.0.4; charset=utf-8",
              "Cache-Control": "no-store",
            },
          });
        case "/favicon.ico":
          return new Response(null, { status: 204 });
        default:
          return new Response("not found\n", { status: 404, headers: { "Content-Type": "text/plain; charset=utf-8" } });
      }
    },
  });

  /** An SSE stream: the state now, then on each change; a comment every 15 s keeps proxies from closing it. */
  function events(signal: AbortSignal): Response {
    const enc = new TextEncoder();
    let cleanup = () => {};
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        const write = (text: string) => {
          try {
            controller.enqueue(enc.encode(text));
          } catch {
            cleanup(); // the client went away
          }
        };
        const send = () => {
          const s = state();
          write(`id: ${s.index}\nevent: state\ndata: ${JSON.stringify(s)}\n\n`);
        };
        const ping = setInterval(() => write(": ping\n\n"), 15_000);
        const close = () => {
          cleanup();
          try {
            controller.close();
          } catch {
            // already closed by the client
          }
        };
        cleanup = () => {
          clearInterval(ping);
          listeners.delete(send);
          signal.removeEventListener("abort", close);
          stopping.signal.removeEventListener("abort", close);
        };
        listeners.add(send);
        signal.addEventListener("abort", close, { once: true });
        stopping.signal.addEventListener("abort", close, { once: true });
        write("retry: 2000\n\n");
        send();
      },
      cancel() {
        cleanup();
      },
    });
    return new Response(body, {
      headers: { ...SECURITY_HEADERS, "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-store" },
    });
  }

  const host = o.hostname.includes(":") ? `[${o.hostname}]` : o.hostname;
  return {
    url: `http://${host}:${server.port}`,
    state,
    async stop() {
      stopping.abort(new Error("dashboard stopping"));
      await watching;
      await server.stop(true);
    },
  };
}

/**
 * Whether a request's `Host` names this dashboard: an IP address (what a DNS-rebinding page can't
 * send: its Host is its own domain name), `localhost`, the listen name or an allowed name. A page on
 * evil.example whose name was rebound to 127.0.0.1 is refused, so it can't read the fleet's state.
 */
export function allowedHost(header: string | null, allowed: ReadonlySet<string>): boolean {
  if (header === null) return false;
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+))(?::\d{1,5})?$/.exec(header.trim());
  if (!m) return false;
  if (m[1] !== undefined) return true; // [IPv6]
  const host = m[2]!.toLowerCase().replace(/\.$/, "");
  return /^\d{1,3}(?:\.\d{1,3}){3}$/.test(host) || allowed.has(host);
}

/** Loopback addresses only: anything else serves the fleet's state, without authentication, to the network. */
export function isLoopback(hostname: string): boolean {
  const h = hostname.toLowerCase();
  return h === "localhost" || h === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/** Serve until `signal` aborts; prints `dashboard: listening on http://HOST:PORT` first. */
export async function serveDashboard(o: DashboardOptions & { signal: AbortSignal }): Promise<void> {
  const d = startDashboard({ ...o, allowedHosts: [...(o.allowedHosts ?? []), hostname()] });
  if (!isLoopback(o.hostname)) {
    o.log.info(
      "dashboard: warning: listening on " +
        `${o.hostname === "0.0.0.0" || o.hostname === "::" ? "every interface" : o.hostname}, not loopback: ` +
        "anyone who can reach the port reads every role's nodes, releases and errors (there is no login); prefer " +
        "127.0.0.1 behind an SSH tunnel or an authenticating proxy",
    );
  }
  o.log.info(`dashboard: listening on ${d.url}`);
  await new Promise<void>((resolve) => {
    if (o.signal.aborted) return resolve();
    o.signal.addEventListener("abort", () => resolve(), { once: true });
  });
  await d.stop();
  o.log.info("dashboard: stopped");
}

const SECURITY_HEADERS = {
  // Everything comes from this server; the page makes no other request.
  "Content-Security-Policy":
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; " +
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  "X-Content-Type-Options": "nosniff",
  "Referrer-Policy": "no-referrer",
};

function asset(body: string, type: string): Response {
  return new Response(body, { headers: { ...SECURITY_HEADERS, "Content-Type": type, "Cache-Control": "no-cache" } });
}

function json(value: unknown): Response {
  return new Response(`${JSON.stringify(value)}\n`, {
    headers: { ...SECURITY_HEADERS, "Content-Type": "application/json", "Cache-Control": "no-store" },
  });
}
