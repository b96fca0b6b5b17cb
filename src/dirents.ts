/**
 * A directory's entries with their inode numbers, read from an opened directory with getdents64(2)
 * (libc's, through bun:ffi): one system call per few hundred entries, where an lstat per name costs
 * one each and Node's readdir gives no inode numbers. For the link-dest vouching, which asks "how
 * many names of this peer directory are this inode?" for every file of an archive.
 *
 * An inode number is the entry's own, except for a mount point (the covered directory's): no regular
 * file shares it.
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

/**
 * Inode number → how many entries of the directory open as `fd` are that inode (`.` and `..` left
 * out), read from its start; undefined when getdents64 is unavailable or fails (the caller then looks
 * names up one by one, or trusts nothing). No name is decoded: the link-dest vouching counts names of
 * an inode, it does not need to spell them. The descriptor's position is left at the end: read it once.
 */
export function inodeCounts(fd: number): Map<number, number> | undefined {
  const call = load();
  if (call === null) return undefined;
  buffer ??= Buffer.alloc(BUFFER);
  const buf = buffer;
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const out = new Map<number, number>();
  for (;;) {
    const n = call(fd, buf);
    if (n < 0) return undefined;
    if (n === 0) return out;
    // struct linux_dirent64: u64 d_ino, s64 d_off, u16 d_reclen, u8 d_type, char d_name[] (NUL-ended).
    for (let at = 0; at < n; ) {
      const reclen = view.getUint16(at + 16, true);
      if (reclen < 20 || at + reclen > n) return undefined;
      const c0 = buf[at + 19];
      const dots = c0 === 0x2e && (buf[at + 20] === 0 || (buf[at + 20] === 0x2e && buf[at + 21] === 0));
      if (!dots) {
        // Two halves, not getBigUint64: no BigInt per entry (inode numbers stay below 2^53 in practice,
        // and a larger one only loses precision the same way for every name of it).
        const ino = view.getUint32(at, true) + view.getUint32(at + 4, true) * 0x1_0000_0000;
        out.set(ino, (out.get(ino) ?? 0) + 1);
      }
      at += reclen;
    }
    // Room for another entry was left: the directory ended (Linux fills the buffer while entries remain;
    // a file system that did not would only cost names not found here, so files written, not linked).
    if (n < BUFFER - MAX_RECORD) return out;
  }
}
