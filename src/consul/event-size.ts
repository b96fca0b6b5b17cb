/** The size of a Consul user event as serf counts it against its limit. Pure. */

/** Serf's default limit for a user event, name and payload, after encoding. */
export const USER_EVENT_SIZE_LIMIT = 512;

/**
 * The size serf checks against USER_EVENT_SIZE_LIMIT when Consul fires event `name` with `payload`:
 * Consul's msgpack-encoded event (UUID, name, payload, filters, version) wrapped in serf's message under
 * the name `consul:event:<name>`. With the name `deploy` and no filters a 404-byte payload is the most
 * that fits. `ltime` is the cluster's event clock (small on a fresh cluster; above 127 it costs 1–4 bytes
 * more), so leave a few bytes of room when the clock is unknown.
 */
export function userEventSize(
  name: string,
  payload: string | Uint8Array,
  filters: { node?: string; service?: string; tag?: string } = {},
  ltime = 0,
): number {
  const len = (s: string) => Buffer.byteLength(s);
  // Consul's handle writes the new msgpack spec (str8, bin); serf's writes the old one (raw16).
  const str = (n: number) => (n < 32 ? 1 : n < 256 ? 2 : n < 65536 ? 3 : 5) + n;
  const bin = (n: number) => (n < 256 ? 2 : n < 65536 ? 3 : 5) + n;
  const raw = (n: number) => (n < 32 ? 1 : n < 65536 ? 3 : 5) + n;
  const uint = (n: number) => (n < 128 ? 1 : n < 256 ? 2 : n < 65536 ? 3 : n < 2 ** 32 ? 5 : 9);
  const p = typeof payload === "string" ? len(payload) : payload.length;
  let inner = 1 + str(2) + str(36) + str(1) + str(len(name)) + str(1) + 1; // map, ID, n, v
  if (p > 0) inner += str(1) + bin(p);
  for (const f of [filters.node, filters.service, filters.tag]) if (f) inner += str(2) + str(len(f));
  const serfName = len(`consul:event:${name}`);
  return 1 + 1 + raw(5) + uint(ltime) + raw(4) + raw(serfName) + raw(7) + raw(inner) + raw(2) + 1;
}

/** Serf's encoding of a user event (type byte + msgpack map with LTime, Name, Payload, CC), old msgpack spec. */
export function serfEventSize(name: string, payload: string, ltime = 0): number {
  const raw = (n: number) => (n < 32 ? 1 : n < 65536 ? 3 : 5) + n;
  const uint = (n: number) => (n < 128 ? 1 : n < 256 ? 2 : n < 65536 ? 3 : n < 2 ** 32 ? 5 : 9);
  return (
    1 +
    1 +
    raw(5) +
    uint(ltime) +
    raw(4) +
    raw(Buffer.byteLength(name)) +
    raw(7) +
    raw(Buffer.byteLength(payload)) +
    raw(2) +
    1
  );
}
