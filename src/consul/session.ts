/**
 * Consul sessions for pulldeploy's own locks (rollout slots): tied to the node's `serfHealth` (the
 * Consul agent dies → invalidated about 5–6.5 s later, measured) AND given a TTL that the holder
 * renews (pulldeploy dies or hangs while its Consul agent lives → invalidated at about 2 × TTL).
 * The TTL's lower bound is the Consul servers' `session_ttl_min` (10 s unless set lower): Consul
 * refuses a shorter one, so it is not clamped here.
 * Behavior "delete": the holder's keys go with the session, as `consul lock` does it.
 *
 * Contracts:
 * - `openSession` clears this node's leftover sessions of the same name first (a pulldeploy killed
 *   earlier): one host runs one deploy at a time (the host lock), so any such session is stale.
 * - The renewal runs every TTL/3 until `close()`; a renewal that finds the session gone calls
 *   `onLost` once (its locks are gone too). `close()` destroys the session; errors there are only
 *   logged (the TTL frees it anyway).
 */
import type { ConsulClient } from "./client.ts";
import { ConsulError } from "./client.ts";

/** Consul's default `session_ttl_min`: shorter is refused ("Invalid Session TTL … must be between [10s=24h0m0s]"). */
export const DEFAULT_SESSION_TTL_MS = 10_000;

export interface NodeSession {
  id: string;
  name: string;
  node: string;
}

export interface OpenSession {
  id: string;
  /** Stop renewing and destroy the session (releases and deletes its keys). */
  close(): Promise<void>;
  /** Whether a renewal found the session gone. */
  readonly lost: boolean;
}

/** The sessions of `node`, from GET /v1/session/node/<node>. */
export async function nodeSessions(consul: ConsulClient, node: string, signal?: AbortSignal): Promise<NodeSession[]> {
  const path = `/v1/session/node/${encodeURIComponent(node)}`;
  const { json } = await consul.request("GET", path, { signal });
  if (json === null) return [];
  if (!Array.isArray(json))
    throw new ConsulError(`consul GET ${path}: unexpected answer (expected a list of sessions)`);
  return json.flatMap((s) =>
    s && typeof s === "object" && typeof s.ID === "string"
      ? [{ id: s.ID as string, name: String(s.Name ?? ""), node: String(s.Node ?? "") }]
      : [],
  );
}

export async function openSession(
  consul: ConsulClient,
  o: { name: string; node: string; ttlMs?: number; checks?: string[]; log?: (m: string) => void; onLost?: () => void },
): Promise<OpenSession> {
  const log = o.log ?? (() => {});
  for (const s of await nodeSessions(consul, o.node)) {
    if (s.name !== o.name) continue;
    await consul.sessionDestroy(s.id);
    log(`consul: destroyed a leftover session ${s.id} of this node (a pulldeploy that did not finish)`);
  }
  const ttl = o.ttlMs ?? DEFAULT_SESSION_TTL_MS;
  const body = JSON.stringify({
    Name: o.name,
    Behavior: "delete",
    TTL: goDuration(ttl),
    LockDelay: "0s",
    NodeChecks: ["serfHealth", ...(o.checks ?? [])],
  });
  const { json } = await consul.request("PUT", "/v1/session/create", { body });
  if (!json || typeof json !== "object" || typeof (json as { ID?: unknown }).ID !== "string") {
    throw new ConsulError("consul PUT /v1/session/create: unexpected answer (expected a session ID)");
  }
  const id = (json as { ID: string }).ID;
  let lost = false;
  let closed = false;
  const timer = setInterval(async () => {
    if (closed || lost) return;
    try {
      if (!(await consul.sessionRenew(id))) {
        lost = true;
        log(`consul: session ${id} is gone (its node failed or it expired): its slot is no longer held`);
        o.onLost?.();
      }
    } catch (err) {
      log(`consul: renewing session ${id}: ${(err as Error).message} (retrying)`);
    }
  }, ttl / 3);
  return {
    id,
    get lost() {
      return lost;
    },
    async close() {
      closed = true;
      clearInterval(timer);
      try {
        await consul.sessionDestroy(id);
      } catch (err) {
        log(`consul: destroying session ${id}: ${(err as Error).message} (it expires by itself)`);
      }
    },
  };
}

/** A duration in ms as Consul reads it (and echoes it back): "10s", "1500ms". */
export function goDuration(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}
