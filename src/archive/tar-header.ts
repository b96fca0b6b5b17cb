/**
 * The tar header codec, both sides of one field layout (`FIELD`) and checksum. Pure.
 *
 * Writing (the packer): ustar headers, with a pax extended header before one whose fields don't fit
 * (a path over ustar's 100+155 bytes, a link target over 100, a size or time beyond 11 octal digits).
 * Deterministic: uid/gid 0, no user or group names.
 *
 * Reading (the extractor): ustar, GNU (long names `L`/`K`, base-256 numbers) and pax (`x`, `g`).
 * Strict, since the archive is hostile until its checksum is known (at the end of the stream): every
 * number of a header is octal terminated by NUL/space only (or base-256) and in range for its field,
 * pax records are framed exactly, names are valid UTF-8 without control characters. Each refusal is
 * an `ExtractError` of one line naming the entry, its unprintable bytes escaped.
 */
import { ExtractError } from "../errors.ts";
import { dfgOnly } from "../jit.ts";

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
/** The ustar header's fields: [offset, length]. */
export const FIELD = {
  name: [0, 100],
  mode: [100, 8],
  uid: [108, 8],
  gid: [116, 8],
  size: [124, 12],
  mtime: [136, 12],
  checksum: [148, 8],
  type: [156, 1],
  linkname: [157, 100],
  magic: [257, 6],
  devmajor: [329, 8],
  devminor: [337, 8],
  prefix: [345, 155],
} as const satisfies Record<string, readonly [number, number]>;
const MAX_OCTAL_11 = 8 ** 11 - 1;
const encoder = new TextEncoder();

/** The 512-byte ustar header; fields that do not fit go into a pax record set before it. */
function header(
  h: Uint8Array,
  f: {
    name: Uint8Array;
    prefix: Uint8Array;
    mode: number;
    size: number;
    mtime: number;
    type: string;
    linkname: Uint8Array;
  },
): void {
  h.fill(0);
  h.set(f.name, FIELD.name[0]);
  octal(h, FIELD.mode, f.mode);
  octal(h, FIELD.uid, 0);
  octal(h, FIELD.gid, 0);
  octal(h, FIELD.size, f.size);
  octal(h, FIELD.mtime, f.mtime);
  h[FIELD.type[0]] = f.type.charCodeAt(0);
  h.set(f.linkname, FIELD.linkname[0]);
  h.set(encoder.encode("ustar\x0000"), FIELD.magic[0]);
  octal(h, FIELD.devmajor, 0);
  octal(h, FIELD.devminor, 0);
  h.set(f.prefix, FIELD.prefix[0]);
  // Six digits, NUL, then the space the sum counted there (as GNU tar writes it).
  octal(h, [FIELD.checksum[0], 7], checksum(h));
  h[FIELD.checksum[0] + 7] = 0x20;
}

function octal(h: Uint8Array, [off, len]: readonly [number, number], n: number): void {
  h.set(encoder.encode(`${n.toString(8).padStart(len - 1, "0")}\0`), off);
}

/** ustar's name/prefix split, or undefined when the path needs a pax record. */
function splitName(path: Uint8Array): { name: Uint8Array; prefix: Uint8Array } | undefined {
  if (path.length <= 100) return { name: path, prefix: new Uint8Array(0) };
  for (let i = path.length - 1; i > 0; i--) {
    if (path[i] !== 0x2f) continue;
    if (i <= 155 && path.length - i - 1 <= 100 && path.length - i - 1 > 0)
      return { prefix: path.subarray(0, i), name: path.subarray(i + 1) };
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

/** `entryHeaders(e).byteLength`, without building them when they are one block (most entries). */
export function headerSize(e: TarEntry): number {
  const oneBlock =
    e.linkname.length === 0 &&
    e.size <= MAX_OCTAL_11 &&
    e.mtime >= 0 &&
    e.mtime <= MAX_OCTAL_11 &&
    e.path.length < 100 &&
    Buffer.byteLength(e.path) < 100;
  return oneBlock ? BLOCK : entryHeaders(e).byteLength;
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

/** One entry's header as read: validated, with the preceding pax / long-name values applied. */
export interface TarHeader {
  name: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  /** The typeflag: "0" file, "1" hard link, "2" symlink, "5" directory, "x"/"g"/"L"/"K" meta. */
  type: string;
  linkname: string;
}

/** Values of a pax `x` header (or GNU `L`/`K`) for the next entry, already validated. */
export interface Overrides {
  path?: string;
  linkpath?: string;
  size?: number;
  mtime?: number;
  uid?: number;
  gid?: number;
}

const strictDecoder = new TextDecoder("utf-8", { fatal: true });

/** Meta entries are held whole in memory: capped like Go's archive/tar and GNU tar (1 MiB). */
export const MAX_META_SIZE = 1 << 20;
/**
 * Linux's PATH_MAX (and NAME_MAX per component): no longer name can be created, so refuse it before it fills messages.
 */
const MAX_NAME_BYTES = 4096;
/** (uid_t)-1 means "leave unchanged" to chown. */
const MAX_ID = 0xfffffffe;
/** 1901-12-13 .. 2514-05-30: what file systems store; anything beyond is a corrupt or hostile header. */
const MTIME_MIN = -(2 ** 31);
const MTIME_MAX = 2 ** 34;

/** The meta entries, read whole before the entry they describe. */
export const META_KIND: Record<string, string> = {
  x: "pax header",
  g: "global pax header",
  L: "GNU long name",
  K: "GNU long link name",
};

/**
 * A header's sum with its checksum field counted as spaces, its bytes unsigned; with `signed`, as some
 * old tars summed them (bytes over 127 negative).
 */
function checksum(b: Uint8Array, signed = false): number {
  const [at, len] = FIELD.checksum;
  let sum = 0;
  let high = 0;
  for (let i = 0; i < BLOCK; i++) {
    const v = b[i]!;
    sum += v;
    high += v >> 7;
  }
  for (let i = at; i < at + len; i++) {
    const v = b[i]!;
    sum -= v;
    high -= v >> 7;
  }
  return sum + 32 * len - (signed ? 256 * high : 0);
}

/** The header's checksum field against its bytes (the signed sum is tried only when the usual one differs). */
export function checksumOk(b: Uint8Array): boolean {
  const stored = octalDigits(b, ...FIELD.checksum);
  return stored !== null && (stored === checksum(b) || stored === checksum(b, true));
}

/** The typeflag; NUL and `7` (contiguous) are regular files. */
export function typeOf(byte: number): string {
  return byte === 0 || byte === 0x37 ? "0" : String.fromCharCode(byte);
}

/**
 * A header parsed strictly: every number in range for its field, the name and link name valid.
 * `over` holds what preceding pax / GNU long-name entries set (validated already).
 */
export function parseHeader(b: Uint8Array, over: Overrides = {}): TarHeader {
  let type = typeOf(b[FIELD.type[0]]!);
  let name = over.path;
  if (name === undefined) {
    let bytes = field(b, ...FIELD.name);
    // POSIX ustar ("ustar\0") has a prefix field; GNU's "ustar  " keeps other data there.
    const [magic] = FIELD.magic;
    // "ustar" then NUL
    if (
      b[magic] === 0x75 &&
      b[magic + 1] === 0x73 &&
      b[magic + 2] === 0x74 &&
      b[magic + 3] === 0x61 &&
      b[magic + 4] === 0x72 &&
      b[magic + 5] === 0
    ) {
      const prefix = field(b, ...FIELD.prefix);
      if (prefix.length > 0) bytes = Buffer.concat([prefix, Buffer.from("/"), bytes]);
    }
    name = checkName(bytes, "name");
  } else checkName(name, "name");
  if (name === "") throw new ExtractError("unsafe entry: an entry has an empty name");
  const linkname = over.linkpath ?? checkName(field(b, ...FIELD.linkname), "link name", () => printable(name));
  // Old-style archives mark directories with a trailing slash on a regular entry.
  if (type === "0" && name.endsWith("/")) type = "5";
  let mode = numeric(b, ...FIELD.mode, "mode", name);
  // Some writers include the file type bits (S_IFREG…): accepted when they agree with the typeflag.
  const ifmt = mode >> 12;
  if (mode > 0o177777 || (ifmt !== 0 && ifmt !== IFMT[type]))
    throw new ExtractError(`bad tar header: mode ${mode.toString(8)} has bits beyond 07777`, name);
  mode &= 0o7777;
  const mtime = over.mtime ?? numeric(b, ...FIELD.mtime, "mtime", name, true);
  if (mtime < MTIME_MIN || mtime > MTIME_MAX)
    throw new ExtractError(`bad tar header: mtime ${mtime} is out of range`, name);
  return {
    name,
    mode,
    uid: over.uid ?? idField(b, FIELD.uid, "uid", name),
    gid: over.gid ?? idField(b, FIELD.gid, "gid", name),
    size: over.size ?? numeric(b, ...FIELD.size, "size", name),
    mtime,
    type,
    linkname,
  };
}

/** A uid or gid field, in chown's range. (Pax values were checked when their header was read.) */
function idField(b: Uint8Array, [off, len]: readonly [number, number], what: string, name: string): number {
  const n = numeric(b, off, len, what, name);
  if (n > MAX_ID) throw new ExtractError(`bad tar header: ${what} ${n} is out of range (0..${MAX_ID})`, name);
  return n;
}

/** The S_IFMT bits (>> 12) a mode may carry for each type. */
const IFMT: Record<string, number> = { "0": 0o10, "1": 0o10, "2": 0o12, "5": 0o04 };

/** A NUL-terminated header field's bytes. */
export function field(b: Uint8Array, off: number, len: number): Uint8Array {
  let end = off;
  while (end < off + len && b[end] !== 0) end++;
  return b.subarray(off, end);
}

/** Octal digits, optionally led by spaces and ended by NULs/spaces (as GNU and POSIX tars write); else null. */
function octalDigits(b: Uint8Array, off: number, len: number): number | null {
  let i = off;
  const end = off + len;
  while (i < end && b[i] === 0x20) i++;
  // Summed as read (at most 12 digits: exact in a double), no string per field: ~6 fields a header.
  let n = 0;
  while (i < end && b[i]! >= 0x30 && b[i]! <= 0x37) n = n * 8 + (b[i++]! - 0x30);
  for (; i < end; i++) if (b[i] !== 0 && b[i] !== 0x20) return null;
  return n;
}

/**
 * A numeric field: octal, or GNU base-256 (two's complement) when the first byte's high bit is set.
 * Negative only where `signed` (mtime); never beyond Number.MAX_SAFE_INTEGER.
 */
export function numeric(b: Uint8Array, off: number, len: number, what: string, name: string, signed = false): number {
  const bad = (why: string) => new ExtractError(`bad tar header: ${what} ${why}`, name);
  if (b[off]! & 0x80) {
    let v = BigInt(b[off]! & 0x7f);
    for (let i = 1; i < len; i++) v = (v << 8n) | BigInt(b[off + i]!);
    if (b[off]! & 0x40) v -= 1n << BigInt(len * 8 - 1);
    if (v < 0n && !signed) throw bad(`is negative (${v})`);
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < -BigInt(Number.MAX_SAFE_INTEGER)) throw bad(`${v} is out of range`);
    return Number(v);
  }
  const n = octalDigits(b, off, len);
  if (n === null) throw bad(`is not an octal number ("${printable(b.subarray(off, off + len))}")`);
  return n;
}

/**
 * A name or link name from the archive: valid UTF-8 (else two names could decode to one), no NUL or
 * control character (C0, DEL, C1), at most PATH_MAX bytes. `shown` names the entry in the error
 * (printable; asked only on an error); by default the name itself, escaped.
 */
function checkName(raw: Uint8Array | string, what: string, shown?: () => string): string {
  let name: string;
  if (typeof raw === "string") name = raw;
  else if (raw.length === 0) return "";
  else {
    try {
      name = strictDecoder.decode(raw);
    } catch {
      throw new ExtractError(`unsafe entry: ${what} is not valid UTF-8`, shown?.() ?? printable(raw));
    }
  }
  if (name.includes("\0")) throw new ExtractError(`unsafe entry: NUL in ${what}`, shown?.() ?? printable(name));
  if (/[\x01-\x1f\x7f-\x9f]/.test(name))
    throw new ExtractError(`unsafe entry: control character in ${what}`, shown?.() ?? printable(name));
  const bytes = Buffer.byteLength(name);
  if (bytes > MAX_NAME_BYTES)
    throw new ExtractError(`unsafe entry: ${what} longer than ${MAX_NAME_BYTES} bytes`, shown?.() ?? printable(name));
  if (what !== "link name" && bytes > 255 && name.split("/").some((c) => Buffer.byteLength(c) > 255))
    throw new ExtractError(`unsafe entry: ${what} has a component longer than 255 bytes`, shown?.() ?? printable(name));
  return name;
}

/** A GNU `L`/`K` entry's data: the name and its NUL terminator(s), nothing after. */
export function longName(data: Uint8Array, _label: string): string {
  let end = data.length;
  while (end > 0 && data[end - 1] === 0) end--;
  const bytes = data.subarray(0, end);
  if (bytes.includes(0)) throw new ExtractError("unsafe entry: NUL in GNU long name", printable(bytes));
  return checkName(bytes, "GNU long name");
}

/**
 * Shown in a message: unprintable characters (C0, DEL, C1, line and bidi controls) and bytes that are
 * not UTF-8 escaped as `\xNN` / `\u{N}`, backslashes doubled, long names cut, so the line stays one
 * safe line.
 */
export function printable(name: Uint8Array | string): string {
  let s: string;
  if (typeof name === "string") s = name;
  else {
    try {
      s = strictDecoder.decode(name);
    } catch {
      s = "";
      for (const byte of name) {
        if (byte === 0x5c) s += "\\\\";
        else s += byte >= 0x20 && byte < 0x7f ? String.fromCharCode(byte) : `\\x${byte.toString(16).padStart(2, "0")}`;
      }
      return cut(s);
    }
  }
  return cut(
    s.replace(/[\\\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g, (c) => {
      if (c === "\\") return "\\\\";
      const code = c.charCodeAt(0);
      return code <= 0xff ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u{${code.toString(16)}}`;
    }),
  );
}

function cut(s: string): string {
  return s.length <= 300 ? s : `${s.slice(0, 300)}…(${s.length} chars)`;
}

/** The zero padding after `size` bytes of data, to the next block. */
export function pad(size: number): number {
  return (BLOCK - (size % BLOCK)) % BLOCK;
}

/**
 * A pax header's records, each `<length> <key>=<value>\n` with the length counting the whole record:
 * any other framing, a bad number, or a sparse file (not supported) is an error naming `label`.
 * An empty value removes the key (POSIX), i.e. the ustar field applies.
 */
export function parsePax(data: Uint8Array, label: string): Overrides {
  const out: Overrides = {};
  const bad = (why: string) => new ExtractError(`bad pax header: ${why}`, label);
  let i = 0;
  while (i < data.length) {
    let sp = i;
    while (sp < data.length && sp - i < 15 && data[sp]! >= 0x30 && data[sp]! <= 0x39) sp++;
    if (sp === i || data[sp] !== 0x20 || (data[i] === 0x30 && sp - i > 0))
      throw bad(`record at byte ${i} does not start with its length`);
    const len = Number(String.fromCharCode(...data.subarray(i, sp)));
    const end = i + len;
    if (end > data.length || end - 1 <= sp + 1 || data[end - 1] !== 0x0a)
      throw bad(`record at byte ${i} is not ${len} bytes ending in a newline`);
    const record = data.subarray(sp + 1, end - 1);
    const eq = record.indexOf(0x3d);
    if (eq <= 0) throw bad(`record at byte ${i} has no key=value`);
    const key = printable(record.subarray(0, eq));
    const raw = record.subarray(eq + 1);
    i = end;
    if (key.startsWith("GNU.sparse.")) throw bad(`sparse files are not supported (${key})`);
    if (!PAX_KEYS.has(key)) continue; // uname, gname, xattrs, comments…: nothing we use
    const k = key as keyof Overrides;
    if (raw.length === 0) {
      delete out[k];
      continue;
    }
    if (key === "path" || key === "linkpath") {
      out[k] = checkName(raw, `pax ${key}`, () => label) as never;
      continue;
    }
    const text = String.fromCharCode(...raw.subarray(0, 40));
    const v = paxNumber(key, text, raw.length);
    if (v === null) throw bad(`${key}="${printable(raw)}" is not a valid ${key}`);
    if (key === "atime" || key === "ctime") continue; // validated, unused
    out[k] = v as never;
  }
  return out;
}

const PAX_KEYS = new Set(["path", "linkpath", "size", "mtime", "uid", "gid", "atime", "ctime"]);

/** A pax number: decimal `size`, `uid`, `gid` in range; times with an optional sign and fraction (floored). */
function paxNumber(key: string, text: string, rawLength: number): number | null {
  if (rawLength > 40) return null;
  if (key === "mtime" || key === "atime" || key === "ctime") {
    if (!/^-?[0-9]{1,15}(\.[0-9]{1,20})?$/.test(text)) return null;
    const t = Math.floor(Number(text));
    return t >= MTIME_MIN && t <= MTIME_MAX ? t : null;
  }
  if (!/^[0-9]{1,16}$/.test(text)) return null;
  const n = Number(text);
  if (key === "size") return n <= Number.MAX_SAFE_INTEGER ? n : null;
  return n <= MAX_ID ? n : null;
}

dfgOnly(parseHeader, idField, checksum, checksumOk, numeric, octalDigits, field, checkName, typeOf, pad);
