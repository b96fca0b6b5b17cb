/**
 * The walk before packing: a directory into a sorted plan of entries (each directory right before its
 * contents, names in UTF-8 byte order whatever the locale), excludes applied, `.git` left out unless
 * asked, and every entry that cannot be packed (unreadable, fifo, socket, device) reported in one error.
 */
import * as fs from "node:fs";
import { join } from "node:path";
import { PackError } from "./pack-error.ts";
import type { TarEntry } from "./tar-header.ts";

/** An entry of the plan: what its tar header will say. */
export type PackEntry = TarEntry;

export interface TreePlan {
  root: string;
  entries: PackEntry[];
  files: number;
  /** Sum of the files' sizes. */
  bytes: number;
}

export interface ScanOptions {
  /**
   * Glob patterns (Bun.Glob): without a `/` they match a name at any depth, with one the path from the root; a trailing
   * `/` matches directories only.
   */
  excludes: string[];
  /** Pack `.git` too (ignored by default). */
  includeGit?: boolean;
}

interface Matcher {
  glob: InstanceType<typeof Bun.Glob>;
  /** Matched against the whole relative path rather than the last name. */
  anchored: boolean;
  dirOnly: boolean;
}

function compileExcludes(patterns: string[]): Matcher[] {
  return patterns
    .map((p) => p.trim())
    .filter((p) => p !== "")
    .map((p) => {
      const dirOnly = p.endsWith("/");
      let body = dirOnly ? p.replace(/\/+$/, "") : p;
      const anchored = body.includes("/");
      body = body.replace(/^\/+/, "");
      return { glob: new Bun.Glob(body), anchored, dirOnly };
    });
}

function excluded(matchers: Matcher[], path: string, name: string, isDir: boolean): boolean {
  return matchers.some((m) => (!m.dirOnly || isDir) && m.glob.match(m.anchored ? path : name));
}

/** Entries scanned between two collections. */
const GC_EVERY = 2048;

/**
 * Byte order of UTF-8 names, so the order does not depend on the locale. That is code point order,
 * compared without encoding (two buffers per comparison were most of a scan's garbage): UTF-16 code
 * units order the same except that surrogates (astral code points) must sort after U+E000–U+FFFF.
 */
export function byName(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x === y) continue;
    if (x >= 0xd800 && y >= 0xd800) {
      x += x < 0xe000 ? 0x2000 : -0x800;
      y += y < 0xe000 ? 0x2000 : -0x800;
    }
    return x - y;
  }
  return a.length - b.length;
}

/**
 * Walk `root` into a sorted plan (each directory right before its contents). Throws `PackError` for a
 * missing, non-directory or empty root, and one `PackError` listing every entry that cannot be packed.
 */
export function scanTree(root: string, opts: ScanOptions): TreePlan {
  let st: fs.Stats;
  try {
    st = fs.statSync(root);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new PackError(`pack ${root}: ${code === "ENOENT" ? "no such directory" : (err as Error).message}`);
  }
  if (!st.isDirectory()) throw new PackError(`pack ${root}: not a directory`);

  const matchers = compileExcludes(opts.excludes);
  const entries: PackEntry[] = [];
  const problems: string[] = [];
  let files = 0;
  let bytes = 0;
  const skipped = { git: 0, excluded: 0 };
  const canRead = (p: string) => {
    try {
      fs.accessSync(p, fs.constants.R_OK);
      return true;
    } catch {
      return false;
    }
  };

  let scanned = 0;
  const walk = (dir: string, rel: string) => {
    let names: string[];
    try {
      names = fs.readdirSync(dir);
    } catch (err) {
      problems.push(
        `${rel || "."}/ (unreadable directory: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
      );
      return;
    }
    names.sort(byName);
    for (const name of names) {
      if (name === ".git" && !opts.includeGit) {
        skipped.git++;
        continue;
      }
      // Each entry's lstat and strings are garbage: collected as the scan goes, the heap stays small.
      if (++scanned % GC_EVERY === 0) Bun.gc(true);
      const abs = join(dir, name);
      const path = rel === "" ? name : `${rel}/${name}`;
      let s: fs.Stats;
      try {
        s = fs.lstatSync(abs);
      } catch (err) {
        problems.push(`${path} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
        continue;
      }
      if (excluded(matchers, path, name, s.isDirectory())) {
        skipped.excluded++;
        continue;
      }
      const base = { path, mode: s.mode & 0o7777, mtime: Math.floor(s.mtimeMs / 1000), size: 0, linkname: "" };
      if (s.isDirectory()) {
        if (!canRead(abs)) {
          problems.push(`${path}/ (unreadable directory)`);
          continue;
        }
        entries.push({ ...base, type: "dir" });
        walk(abs, path);
      } else if (s.isFile()) {
        if (!canRead(abs)) {
          problems.push(`${path} (unreadable)`);
          continue;
        }
        entries.push({ ...base, type: "file", size: s.size });
        files++;
        bytes += s.size;
      } else if (s.isSymbolicLink()) {
        entries.push({ ...base, type: "symlink", linkname: fs.readlinkSync(abs) });
      } else {
        const kind = s.isFIFO()
          ? "fifo"
          : s.isSocket()
            ? "socket"
            : s.isCharacterDevice()
              ? "character device"
              : s.isBlockDevice()
                ? "block device"
                : "special file";
        problems.push(`${path} (${kind})`);
      }
    }
  };
  walk(root, "");

  if (problems.length > 0) {
    throw new PackError(
      `pack ${root}: ${problems.length} ${problems.length === 1 ? "entry" : "entries"} cannot be packed: ` +
        `${problems.join(", ")}`,
      problems,
    );
  }
  if (entries.length === 0) {
    const why =
      skipped.excluded > 0
        ? "everything in it is excluded by --exclude"
        : skipped.git > 0
          ? "it holds only .git, which is left out unless --include-git"
          : "the directory is empty";
    throw new PackError(`pack ${root}: nothing to pack (${why})`);
  }
  return { root, entries, files, bytes };
}
