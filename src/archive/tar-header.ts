/**
 * The tar header codec: ustar headers, with a pax extended header before one whose fields don't fit
 * (a path over ustar's 100+155 bytes, a link target over 100, a size or time beyond 11 octal digits).
 * Only the writer's side so far; the extractor's parsing can move here to share the field layout.
 * Deterministic: uid/gid 0, no user or group names. Pure.
 */

export type EntryType = "file" | "dir" | "symlink";

/** One entry as its header describes it. */
export interface TarEntry {
  /** Path relative to the root, `/`-separated, no trailing slash. */
  path: string;
  type: EntryType;
  /** Permission bits (0o7777). */
  mode: number;
  /** Seconds since the epoch, floored. */
  mtime: number;
  /** Bytes, files only. */
  size: number;
  /** Symlinks only. */
  linkname: string;
}

/** Tar's unit: every header and every file's data (zero-padded) fills whole blocks. */
export const BLOCK = 512;
const MAX_OCTAL_11 = 8 ** 11 - 1;
const encoder = new TextEncoder();

/** The 512-byte ustar header; fields that do not fit go into a pax record set before it. */
function header(h: Uint8Array, f: { name: Uint8Array; prefix: Uint8Array; mode: number; size: number; mtime: number; type: string; linkname: Uint8Array }): void {
  h.fill(0);
  h.set(f.name, 0);
  octal(h, 100, 8, f.mode);
  octal(h, 108, 8, 0);
  octal(h, 116, 8, 0);
  octal(h, 124, 12, f.size);
  octal(h, 136, 12, f.mtime);
  h.fill(0x20, 148, 156);
  h[156] = f.type.charCodeAt(0);
  h.set(f.linkname, 157);
  h.set(encoder.encode("ustar\x0000"), 257);
  octal(h, 329, 8, 0);
  octal(h, 337, 8, 0);
  h.set(f.prefix, 345);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += h[i]!;
  octal(h, 148, 7, sum);
}

function octal(h: Uint8Array, off: number, len: number, n: number): void {
  h.set(encoder.encode(`${n.toString(8).padStart(len - 1, "0")}\0`), off);
}

/** ustar's name/prefix split, or undefined when the path needs a pax record. */
function splitName(path: Uint8Array): { name: Uint8Array; prefix: Uint8Array } | undefined {
  if (path.length <= 100) return { name: path, prefix: new Uint8Array(0) };
  for (let i = path.length - 1; i > 0; i--) {
    if (path[i] !== 0x2f) continue;
    if (i <= 155 && path.length - i - 1 <= 100 && path.length - i - 1 > 0) return { prefix: path.subarray(0, i), name: path.subarray(i + 1) };
    if (i < path.length - 101) break;
  }
  return undefined;
}

function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  const bodyLen = encoder.encode(body).length;
  let len = bodyLen + 1;
  while (String(len).length + bodyLen !== len) len = String(len).length + bodyLen;
  return `${len}${body}`;
}

/** The header blocks of one entry (pax extension first when needed). */
export function entryHeaders(e: TarEntry): Uint8Array {
  const full = encoder.encode(e.type === "dir" ? `${e.path}/` : e.path);
  const link = encoder.encode(e.linkname);
  const records: string[] = [];
  let split = splitName(full);
  if (!split) {
    records.push(paxRecord("path", e.type === "dir" ? `${e.path}/` : e.path));
    split = { name: truncateUtf8(full, 100), prefix: new Uint8Array(0) };
  }
  let linkname: Uint8Array = link;
  if (link.length > 100) {
    records.push(paxRecord("linkpath", e.linkname));
    linkname = truncateUtf8(link, 100);
  }
  let size = e.size;
  if (size > MAX_OCTAL_11) {
    records.push(paxRecord("size", String(size)));
    size = 0;
  }
  let mtime = e.mtime;
  if (mtime < 0 || mtime > MAX_OCTAL_11) {
    records.push(paxRecord("mtime", String(mtime)));
    mtime = Math.min(Math.max(mtime, 0), MAX_OCTAL_11);
  }
  const type = e.type === "file" ? "0" : e.type === "dir" ? "5" : "2";
  const main = new Uint8Array(BLOCK);
  header(main, { ...split, mode: e.mode, size, mtime, type, linkname });
  if (records.length === 0) return main;

  const pax = encoder.encode(records.join(""));
  const base = e.path.slice(e.path.lastIndexOf("/") + 1);
  const out = new Uint8Array(BLOCK + padded(pax.length) + BLOCK);
  header(out.subarray(0, BLOCK), {
    name: truncateUtf8(encoder.encode(`PaxHeader/${base}`), 100),
    prefix: new Uint8Array(0),
    mode: 0o644,
    size: pax.length,
    mtime,
    type: "x",
    linkname: new Uint8Array(0),
  });
  out.set(pax, BLOCK);
  out.set(main, BLOCK + padded(pax.length));
  return out;
}

/** `n` bytes rounded up to whole blocks. */
export function padded(n: number): number {
  return Math.ceil(n / BLOCK) * BLOCK;
}

/** At most `max` bytes, never cutting a UTF-8 sequence. */
function truncateUtf8(b: Uint8Array, max: number): Uint8Array {
  if (b.length <= max) return b;
  let end = max;
  while (end > 0 && (b[end]! & 0xc0) === 0x80) end--;
  return b.subarray(0, end);
}
