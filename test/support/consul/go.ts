/**
 * Go and Consul encodings the stand-in needs, with no state: Go's encoding/json (struct field order,
 * sorted maps, HTML escaping, exact uint64), time.ParseDuration, strconv errors, url.Values.Encode,
 * the msgpack sizes serf checks for user events, and Consul's plain-text error answer.
 */
import type { StoredEvent } from "./types.ts";

const MAX_QUERY_TIME_MS = 600_000;
const DEFAULT_QUERY_TIME_MS = 300_000;

export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** A plain-text answer as Go writes one (fmt.Fprint after WriteHeader: the Content-Type is sniffed). */
export function goText(status: number, text: string, aclPolicy: string, extra: [string, string][] = []): Response {
  return new Response(text, {
    status,
    headers: [
      ...extra,
      ["Vary", "Accept-Encoding"],
      ["X-Consul-Default-Acl-Policy", aclPolicy],
      ...(text === "" ? [] : [["Content-Type", "text/plain; charset=utf-8"] as [string, string]]),
    ],
  });
}

export function conflictingFlags(q: URLSearchParams, flags: string[]): ((aclPolicy: string) => Response) | undefined {
  if (flags.filter((f) => q.has(f)).length < 2) return undefined;
  return (aclPolicy) => goText(400, `Conflicting flags: ${goQueryEncode(q)}`, aclPolicy);
}

/** Go's url.Values.Encode: keys sorted, QueryEscape'd. */
export function goQueryEncode(q: URLSearchParams): string {
  const esc = (s: string) =>
    [...utf8(s)]
      .map((b) =>
        /[A-Za-z0-9\-_.~]/.test(String.fromCharCode(b))
          ? String.fromCharCode(b)
          : b === 0x20
            ? "+"
            : `%${b.toString(16).toUpperCase().padStart(2, "0")}`,
      )
      .join("");
  const keys = [...new Set(q.keys())].sort();
  return keys.flatMap((k) => q.getAll(k).map((v) => `${esc(k)}=${esc(v)}`)).join("&");
}

export function parseWait(q: URLSearchParams): { min: bigint; waitMs: number } {
  let min = 0n;
  const idx = q.get("index");
  if (idx !== null && idx !== "") {
    if (!/^[0-9]+$/.test(idx) || BigInt(idx) >= 1n << 64n) throw new HttpError(400, "Invalid index");
    min = BigInt(idx);
  }
  let waitMs = 0;
  const wait = q.get("wait");
  if (wait !== null && wait !== "") {
    const ns = parseGoDuration(wait);
    if (ns === undefined) throw new HttpError(400, "Invalid wait time");
    waitMs = ns / 1e6;
  }
  if (waitMs > MAX_QUERY_TIME_MS) waitMs = MAX_QUERY_TIME_MS;
  if (min > 0n && waitMs === 0) waitMs = DEFAULT_QUERY_TIME_MS;
  return { min, waitMs };
}

/** strconv.ParseUint(s, 10, 64), with Go's error text. */
export function parseUint64(s: string): bigint {
  if (!/^[0-9]+$/.test(s)) throw new HttpError(500, `strconv.ParseUint: parsing ${goQuote(s)}: invalid syntax`);
  const v = BigInt(s);
  if (v >= 1n << 64n) throw new HttpError(500, `strconv.ParseUint: parsing ${goQuote(s)}: value out of range`);
  return v;
}

/** time.ParseDuration → nanoseconds, or undefined when Go would refuse it. */
export function parseGoDuration(s: string): number | undefined {
  const units: Record<string, number> = { ns: 1, us: 1e3, µs: 1e3, μs: 1e3, ms: 1e6, s: 1e9, m: 60e9, h: 3600e9 };
  let rest = s;
  let sign = 1;
  if (rest.startsWith("-") || rest.startsWith("+")) {
    sign = rest.startsWith("-") ? -1 : 1;
    rest = rest.slice(1);
  }
  if (rest === "0") return 0;
  if (rest === "") return undefined;
  let total = 0;
  const re = /^(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)/;
  while (rest !== "") {
    const m = re.exec(rest);
    if (!m) return undefined;
    total += Number(m[1]) * units[m[2]!]!;
    rest = rest.slice(m[0].length);
  }
  return sign * total;
}

export function goQuote(s: string): string {
  return JSON.stringify(s);
}

export function atLeast1(n: number): number {
  return Math.max(n, 1);
}

export function bytes(v: string | Uint8Array): Uint8Array {
  return typeof v === "string" ? utf8(v) : v;
}

export function utf8(s: string): Uint8Array {
  return new TextEncoder().encode(s);
}

export function byteCompare(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

/** A stable node ID derived from the name (Consul's are random UUIDs). */
export function nodeIdFor(name: string): string {
  const h = new Bun.CryptoHasher("sha256").update(`node:${name}`).digest("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

/** Consul's uuidToUint64: the UUID's upper and lower 64 bits XORed, the event list's index. */
export function eventIndex(id: string): bigint {
  const hex = id.replaceAll("-", "");
  return BigInt(`0x${hex.slice(0, 16)}`) ^ BigInt(`0x${hex.slice(16, 32)}`);
}

// ------------------------------------------------------------------ Go's encoding/json

/** Objects are Go structs (fields in order); a Map is a Go map (keys sorted). */
export type Json = null | boolean | number | bigint | string | Json[] | Map<string, Json> | { [k: string]: Json };

/** json.Marshal, or json.MarshalIndent(v, "", "    ") plus "\n" as Consul's dev mode writes. */
export function goJson(v: Json, pretty: boolean): string {
  const enc = (v: Json, depth: number): string => {
    if (v === null) return "null";
    if (typeof v === "boolean" || typeof v === "bigint") return String(v);
    if (typeof v === "number") return String(v);
    if (typeof v === "string") return goString(v);
    const items: [string | undefined, Json][] = Array.isArray(v)
      ? v.map((x) => [undefined, x])
      : v instanceof Map
        ? [...v].sort(([a], [b]) => byteCompare(a, b))
        : Object.entries(v);
    const [open, close] = Array.isArray(v) ? ["[", "]"] : ["{", "}"];
    if (items.length === 0) return open + close;
    const nl = pretty ? `\n${"    ".repeat(depth + 1)}` : "";
    const parts = items.map(
      ([k, x]) => (k === undefined ? "" : `${goString(k)}:${pretty ? " " : ""}`) + enc(x, depth + 1),
    );
    return open + nl + parts.join(`,${nl}`) + (pretty ? `\n${"    ".repeat(depth)}` : "") + close;
  };
  return enc(v, 0) + (pretty ? "\n" : "");
}

/** Go's string encoding with HTML escaping (<, >, & and U+2028/2029 as \u escapes). */
export function goString(s: string): string {
  let out = '"';
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (ch === '"') out += '\\"';
    else if (ch === "\\") out += "\\\\";
    else if (ch === "\n") out += "\\n";
    else if (ch === "\r") out += "\\r";
    else if (ch === "\t") out += "\\t";
    else if (c < 0x20 || ch === "<" || ch === ">" || ch === "&" || c === 0x2028 || c === 0x2029)
      out += `\\u${c.toString(16).padStart(4, "0")}`;
    else if (c >= 0xd800 && c <= 0xdfff) out += "\\ufffd";
    else out += ch;
  }
  return `${out}"`;
}

// ------------------------------------------------------------------ msgpack sizes of a user event

/**
 * Go's ugorji codec. Consul's handle writes the new spec (WriteExt: str8, bin); serf's default
 * handle writes the old one (raw16 for strings and bytes of 32 bytes and more).
 */
export class Msgpack {
  readonly out: number[] = [];
  constructor(private readonly newSpec: boolean) {}
  private len(l: number, fix: number | undefined, b8: number | undefined, b16: number, b32: number): void {
    if (fix !== undefined && l < 32) this.out.push(fix | l);
    else if (b8 !== undefined && l < 256) this.out.push(b8, l);
    else if (l < 65536) this.out.push(b16, l >> 8, l & 0xff);
    else this.out.push(b32, (l >>> 24) & 0xff, (l >> 16) & 0xff, (l >> 8) & 0xff, l & 0xff);
  }
  str(s: string): this {
    const b = utf8(s);
    if (this.newSpec) this.len(b.length, 0xa0, 0xd9, 0xda, 0xdb);
    else this.len(b.length, 0xa0, undefined, 0xda, 0xdb);
    this.out.push(...b);
    return this;
  }
  bin(b: Uint8Array): this {
    if (this.newSpec) this.len(b.length, undefined, 0xc4, 0xc5, 0xc6);
    else this.len(b.length, 0xa0, undefined, 0xda, 0xdb);
    this.out.push(...b);
    return this;
  }
  map(n: number): this {
    this.out.push(0x80 | n);
    return this;
  }
  uint(n: number): this {
    if (n < 128) this.out.push(n);
    else if (n < 256) this.out.push(0xcc, n);
    else if (n < 65536) this.out.push(0xcd, n >> 8, n & 0xff);
    else this.out.push(0xce, (n >>> 24) & 0xff, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff);
    return this;
  }
  bool(v: boolean): this {
    this.out.push(v ? 0xc3 : 0xc2);
    return this;
  }
}

/** Consul's UserEvent struct as encodeMsgPack writes it (omitempty fields left out, LTime not encoded). */
export function encodeConsulUserEvent(ev: StoredEvent): Uint8Array {
  const fields: [string, (m: Msgpack) => void][] = [
    ["ID", (m) => m.str(ev.id)],
    ["n", (m) => m.str(ev.name)],
  ];
  if (ev.payload && ev.payload.length > 0) fields.push(["p", (m) => m.bin(ev.payload!)]);
  if (ev.nodeFilter !== "") fields.push(["nf", (m) => m.str(ev.nodeFilter)]);
  if (ev.serviceFilter !== "") fields.push(["sf", (m) => m.str(ev.serviceFilter)]);
  if (ev.tagFilter !== "") fields.push(["tf", (m) => m.str(ev.tagFilter)]);
  fields.push(["v", (m) => m.uint(ev.version)]);
  const m = new Msgpack(true).map(fields.length);
  for (const [k, f] of fields) {
    m.str(k);
    f(m);
  }
  return Uint8Array.from(m.out);
}

/** serf's encodeMessage(messageUserEventType, messageUserEvent{LTime, Name, Payload, CC}). */
export function encodeSerfUserEvent(ltime: number, name: string, payload: Uint8Array): Uint8Array {
  const m = new Msgpack(false);
  m.out.push(8);
  m.map(4).str("LTime").uint(ltime).str("Name").str(name).str("Payload").bin(payload).str("CC").bool(false);
  return Uint8Array.from(m.out);
}
