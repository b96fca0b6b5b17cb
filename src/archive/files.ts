/**
 * The file system primitives of extraction, shared by the materialiser and link-dest: new files only
 * (never an existing one opened), times as utimes takes them, and every failure an `ExtractError`
 * naming the entry.
 */
import { dfgOnly } from "../jit.ts";
import * as fs from "node:fs";
import { ExtractError } from "../errors.ts";

/**
 * A new file, never an existing one opened: an earlier entry of the same name is unlinked first (as
 * GNU tar does), since it may share its inode with another name (a hard-link entry, or a file
 * linked from `linkFrom`) that truncating it would corrupt. O_EXCL also refuses to follow a symlink.
 */
export function openNewFile(path: string, mode: number, name: string): number {
  try {
    return fs.openSync(path, "wx", mode & 0o7777);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    try {
      if (e.code === "EEXIST") {
        if (fs.lstatSync(path).isDirectory())
          throw new ExtractError("file entry where an earlier entry made a directory", name, { cause: e });
        unlinkEntry(path, name);
        return fs.openSync(path, "wx", mode & 0o7777);
      }
      if (e.code === "ENOENT") {
        // Archives may omit parent directories.
        fs.mkdirSync(path.slice(0, path.lastIndexOf("/")), { recursive: true, mode: 0o755 });
        return fs.openSync(path, "wx", mode & 0o7777);
      }
      throw e;
    } catch (err) {
      if (err instanceof ExtractError) throw err;
      throw fsError(err as NodeJS.ErrnoException, name);
    }
  }
}

/** All of `bytes` to `fd`, at its offset. */
export function writeAll(fd: number, bytes: Uint8Array, name: string): void {
  try {
    let off = 0;
    while (off < bytes.length) off += fs.writeSync(fd, bytes, off, bytes.length - off);
  } catch (err) {
    throw fsError(err as NodeJS.ErrnoException, name);
  }
}

export function unlinkEntry(path: string, name: string): void {
  try {
    fs.unlinkSync(path);
  } catch (err) {
    throw fsError(err as NodeJS.ErrnoException, name);
  }
}

/** A time for utimes & co: they take a negative number of seconds for "now", a Date before 1970 as it is. */
export function fsTime(t: number): number | Date {
  return t < 0 ? new Date(t * 1000) : t;
}

export function fsError(e: NodeJS.ErrnoException, name: string): ExtractError {
  if (e.code === "ENOSPC") return new ExtractError("no space left on device while extracting", name, { cause: e });
  if (e.code === "EDQUOT") return new ExtractError("disk quota exceeded while extracting", name, { cause: e });
  return new ExtractError(`cannot write (${e.code ?? e.message})`, name, { cause: e });
}

dfgOnly(openNewFile, writeAll, unlinkEntry, fsTime);
