/**
 * A directory's entries with their inode numbers, read from an opened directory with getdents64(2)
 * (libc's, through bun:ffi): one system call per few hundred entries, where an lstat per name costs
 * one each and Node's readdir gives no inode numbers. For the link-dest vouching, which asks "which
 * names of this peer directory are this inode?" for every file of an archive.
 *
 * Names are keyed by their bytes (each byte one char, as latin1 reads them: `direntKey` spells a name
 * the same way), so that two names are one key only when they are the same bytes: a name that is not
 * valid UTF-8 never collapses into another. An inode number is the entry's own, except for a mount
 * point (the covered directory's): no regular file shares it.
 */

type Getdents = (fd: number, buf: Uint8Array) => number;

let getdents: Getdents | null | undefined;

/** libc's getdents64 through bun:ffi, or null where it can't be loaded (musl, no ffi). */
function load(): Getdents | null {
  if (getdents !== undefined) return getdents;
  try {
    const { dlopen, FFIType, ptr } = require("bun:ffi") as typeof import("bun:ffi");
    const lib = dlopen("libc.so.6", {
      getdents64: { args: [FFIType.i32, FFIType.ptr, FFIType.u64], returns: FFIType.i64 },
    });
    getdents = (fd, buf) => Number(lib.symbols.getdents64(fd, ptr(buf), buf.byteLength));
  } catch {
    getdents = null;
  }
  return getdents;
}

const BUFFER = 64 * 1024;
/** The largest linux_dirent64: 19 bytes of header, a 255-byte name and its NUL, padded to 8. */
const MAX_RECORD = 280;
let buffer: Buffer | undefined;

/** `name`'s key in `inodesOf`'s map: its UTF-8 bytes, one char each. */
export function direntKey(name: string): string {
  return /^[\x00-\x7f]*$/.test(name) ? name : Buffer.from(name, "utf8").toString("latin1");
}

/**
 * Name (`direntKey`) → inode number of every entry of the directory open as `fd` (`.` and `..` left out), read from
 * its start; undefined when getdents64 is unavailable or fails (the caller then looks names up one by
 * one, or trusts nothing). The descriptor's position is left at the end: read it once.
 */
export function inodesOf(fd: number): Map<string, number> | undefined {
  const call = load();
  if (call === null) return undefined;
  buffer ??= Buffer.alloc(BUFFER);
  const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  const out = new Map<string, number>();
  for (;;) {
    const n = call(fd, buffer);
    if (n < 0) return undefined;
    if (n === 0) return out;
    // struct linux_dirent64: u64 d_ino, s64 d_off, u16 d_reclen, u8 d_type, char d_name[] (NUL-ended).
    const text = buffer.toString("latin1", 0, n);
    for (let at = 0; at < n; ) {
      const reclen = view.getUint16(at + 16, true);
      if (reclen === 0 || at + reclen > n) return undefined;
      const start = at + 19;
      let end = start;
      while (end < at + reclen && buffer[end] !== 0) end++;
      const name = text.slice(start, end);
      if (name !== "." && name !== "..") out.set(name, Number(view.getBigUint64(at, true)));
      at += reclen;
    }
    // Room for another entry was left: the directory ended (Linux fills the buffer while entries remain;
    // a file system that did not would only cost names not found here, so files written, not linked).
    if (n < BUFFER - MAX_RECORD) return out;
  }
}
