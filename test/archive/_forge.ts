/**
 * Tar headers forged byte by byte, for archives no tar writer would make: any field may be a number
 * (written as NUL-terminated octal), a raw string or raw bytes; the checksum is computed over the
 * result unless given, so that a forged field reaches the parser behind the checksum check.
 */
export type Field = number | string | Uint8Array;

export interface Fields {
  name?: string | Uint8Array;
  mode?: Field;
  uid?: Field;
  gid?: Field;
  size?: Field;
  mtime?: Field;
  /** A typeflag character or byte; default "0". */
  type?: string | number;
  linkname?: string | Uint8Array;
  /** "ustar" (POSIX, with a prefix field), "gnu" ("ustar  "), or "v7" (no magic). */
  magic?: "ustar" | "gnu" | "v7";
  prefix?: string | Uint8Array;
  /** A raw checksum field; default: the correct one. */
  checksum?: Field;
}

export const FIELDS = {
  name: [0, 100],
  mode: [100, 8],
  uid: [108, 8],
  gid: [116, 8],
  size: [124, 12],
  mtime: [136, 12],
  checksum: [148, 8],
  type: [156, 1],
  linkname: [157, 100],
  magic: [257, 8],
  prefix: [345, 155],
} as const;

const enc = new TextEncoder();
const bytesOf = (v: string | Uint8Array) => (typeof v === "string" ? enc.encode(v) : v);

/** Write `v` into `h`'s field: numbers as zero-padded octal ended by a NUL. */
export function setField(h: Uint8Array, [off, len]: readonly [number, number], v: Field): void {
  h.fill(0, off, off + len);
  const b = typeof v === "number" ? enc.encode(`${v.toString(8).padStart(len - 1, "0")}\0`) : bytesOf(v);
  h.set(b.subarray(0, len), off);
}

/** Recompute the header checksum (the way GNU tar writes it: six digits, NUL, space). */
export function fixChecksum(h: Uint8Array): void {
  h.fill(32, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.set(enc.encode(`${sum.toString(8).padStart(6, "0")}\0 `), 148);
}

export function header(f: Fields & { dataLength?: number }): Uint8Array {
  const h = new Uint8Array(512);
  setField(h, FIELDS.name, f.name ?? "file");
  setField(h, FIELDS.mode, f.mode ?? 0o644);
  setField(h, FIELDS.uid, f.uid ?? 0);
  setField(h, FIELDS.gid, f.gid ?? 0);
  setField(h, FIELDS.size, f.size ?? f.dataLength ?? 0);
  setField(h, FIELDS.mtime, f.mtime ?? 1_700_000_000);
  h[156] = typeof f.type === "number" ? f.type : (f.type ?? "0").charCodeAt(0);
  setField(h, FIELDS.linkname, f.linkname ?? "");
  const magic = f.magic ?? "ustar";
  if (magic === "ustar") h.set(enc.encode("ustar\x0000"), 257);
  else if (magic === "gnu") h.set(enc.encode("ustar  \0"), 257);
  if (f.prefix !== undefined) setField(h, FIELDS.prefix, f.prefix);
  if (f.checksum === undefined) fixChecksum(h);
  else setField(h, FIELDS.checksum, f.checksum);
  return h;
}

/** A header and its data, padded to whole blocks; `size` defaults to the data's length. */
export function entry(f: Fields & { data?: string | Uint8Array }): Uint8Array {
  const data = bytesOf(f.data ?? "");
  const out = new Uint8Array(512 + Math.ceil(data.length / 512) * 512);
  out.set(header({ ...f, dataLength: data.length }));
  out.set(data, 512);
  return out;
}

/** One correctly framed pax record. */
export function rec(key: string, value: string | Uint8Array): Uint8Array {
  const body = Buffer.concat([enc.encode(` ${key}=`), bytesOf(value), enc.encode("\n")]);
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return Buffer.concat([enc.encode(String(len)), body]);
}

/** A pax header entry (`x`, or `g`) with exactly these bytes as data. */
export function pax(records: (string | Uint8Array)[], type: "x" | "g" = "x", name = "PaxHeaders/file"): Uint8Array {
  return entry({ name, type, data: Buffer.concat(records.map(bytesOf)) });
}

/** A GNU long name (`L`) or long link name (`K`) entry. */
export function long(type: "L" | "K", name: string | Uint8Array): Uint8Array {
  return entry({ name: "././@LongLink", type, magic: "gnu", data: Buffer.concat([bytesOf(name), new Uint8Array(1)]) });
}

/** Entries followed by the end-of-archive marker. */
export function tar(...parts: Uint8Array[]): Uint8Array {
  return Buffer.concat([...parts, new Uint8Array(1024)]);
}

/** A GNU base-256 field of `len` bytes (two's complement, high bit set). */
export function base256(v: bigint, len: number): Uint8Array {
  const out = new Uint8Array(len);
  let x = v < 0n ? (1n << BigInt(len * 8)) + v : v;
  for (let i = len - 1; i >= 0; i--) {
    out[i] = Number(x & 0xffn);
    x >>= 8n;
  }
  out[0]! |= 0x80;
  return out;
}
