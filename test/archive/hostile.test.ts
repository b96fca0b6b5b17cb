/**
 * The extractor against forged archives (issue 8): names that are not what they seem (class 2),
 * header numbers and pax records out of shape (class 3), meta entries as memory and limit bypasses,
 * and empty archives (class 6). Each refusal is one ExtractError line naming the entry, nothing is
 * written outside the tree, and refusals come as the header arrives (before its data is held).
 */
import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import {
  DEFAULT_LIMITS,
  MAX_META_SIZE,
  printable,
  TarExtractor,
  type ExtractLimits,
} from "../../src/archive/extract.ts";
import { ExtractError } from "../../src/errors.ts";
import { listTree, tempDir } from "../support/helpers.ts";
import { base256, entry, header, long, pax, rec, tar } from "./_forge.ts";

const b = (...xs: (string | number[])[]) =>
  Buffer.concat(xs.map((x) => (typeof x === "string" ? Buffer.from(x) : Buffer.from(x))));

interface Outcome {
  error?: Error;
  tree: string[];
  outside: string[];
  root: string;
}

/** Extract `archive` (fed in 100-byte pieces, as a stream would) next to an `outside` dir. */
async function extract(
  archive: Uint8Array,
  limits: Partial<ExtractLimits> = {},
  check?: (root: string) => void,
): Promise<Outcome> {
  await using d = tempDir();
  const root = join(d.path, "root");
  const outside = join(d.path, "outside");
  fs.mkdirSync(root, { mode: 0o700 });
  fs.mkdirSync(outside);
  fs.writeFileSync(join(outside, "keep"), "keep");
  const ex = new TarExtractor(root, { ...DEFAULT_LIMITS, ...limits });
  let error: Error | undefined;
  try {
    for (let off = 0; off < archive.length; off += 100) ex.write(archive.subarray(off, off + 100));
    ex.end();
  } catch (err) {
    ex.abort();
    error = err as Error;
  }
  check?.(root);
  return { error, tree: listTree(root), outside: listTree(outside), root };
}

/** Refused with exactly `message`, as one printable line, nothing outside touched. */
async function refused(archive: Uint8Array, message: string | RegExp, limits: Partial<ExtractLimits> = {}) {
  const r = await extract(archive, limits);
  expect(r.error).toBeInstanceOf(ExtractError);
  const m = r.error!.message;
  if (typeof message === "string") expect(m).toBe(message);
  else expect(m).toMatch(message);
  expect(m).not.toMatch(/[\x00-\x1f\x7f-\x9f]/);
  expect(r.outside).toEqual(["keep"]);
  return r;
}

const ok = entry({ name: "ok.txt", data: "fine" });

describe("class 2: names", () => {
  test.each([
    [
      "NUL inside a GNU long name",
      tar(long("L", b("a", [0], "b")), entry({ name: "x" })),
      "unsafe entry: NUL in GNU long name: a\\x00b",
    ],
    [
      "NUL inside a pax path",
      tar(pax([rec("path", b("a", [0], "/etc/passwd"))]), entry({ name: "x" })),
      "unsafe entry: NUL in pax path: PaxHeaders/file",
    ],
    [
      "a newline in a ustar name (a forged log line)",
      tar(entry({ name: "a\n2026-01-01 deploy succeeded" })),
      "unsafe entry: control character in name: a\\x0a2026-01-01 deploy succeeded",
    ],
    [
      "ESC in a name (terminal escapes)",
      tar(entry({ name: "a\x1b[2Jb" })),
      "unsafe entry: control character in name: a\\x1b[2Jb",
    ],
    ["DEL in a name", tar(entry({ name: "a\x7f" })), "unsafe entry: control character in name: a\\x7f"],
    [
      "a C1 control (U+0085 NEL) in a name",
      tar(entry({ name: "a\u0085b" })),
      "unsafe entry: control character in name: a\\x85b",
    ],
    [
      "a carriage return in a pax path",
      tar(pax([rec("path", "ok\rtxt")]), entry({ name: "x" })),
      "unsafe entry: control character in pax path: PaxHeaders/file",
    ],
    [
      "a tab in a GNU long link name",
      tar(long("K", "tar\tget"), entry({ name: "l", type: "2", linkname: "x" })),
      "unsafe entry: control character in GNU long name: tar\\x09get",
    ],
    [
      "a control character in a symlink target",
      tar(entry({ name: "l", type: "2", linkname: "t\x1bx" })),
      "unsafe entry: control character in link name: l",
    ],
    [
      "invalid UTF-8 in a name (0xff)",
      tar(entry({ name: b("a", [0xff]) })),
      "unsafe entry: name is not valid UTF-8: a\\xff",
    ],
    [
      "an overlong '/' (0xc0 0xaf) that a lax decoder reads as a separator",
      tar(entry({ name: b("a", [0xc0, 0xaf], "b") })),
      "unsafe entry: name is not valid UTF-8: a\\xc0\\xafb",
    ],
    [
      "a UTF-16 surrogate encoded as UTF-8",
      tar(entry({ name: b([0xed, 0xa0, 0x80]) })),
      "unsafe entry: name is not valid UTF-8: \\xed\\xa0\\x80",
    ],
    [
      "invalid UTF-8 in a symlink target",
      tar(entry({ name: "l", type: "2", linkname: b([0xfe]) })),
      "unsafe entry: link name is not valid UTF-8: l",
    ],
    [
      "invalid UTF-8 in a pax path",
      tar(pax([rec("path", b([0x80]))]), entry({ name: "x" })),
      "unsafe entry: pax path is not valid UTF-8: PaxHeaders/file",
    ],
    [
      "invalid UTF-8 in a GNU long name",
      tar(long("L", b("dir/", [0xc3])), entry({ name: "x" })),
      "unsafe entry: GNU long name is not valid UTF-8: dir/\\xc3",
    ],
    [
      "a pax path longer than PATH_MAX",
      tar(pax([rec("path", "a/".repeat(2100))]), entry({ name: "x" })),
      "unsafe entry: pax path longer than 4096 bytes: PaxHeaders/file",
    ],
    [
      "a GNU long name longer than PATH_MAX (the message cuts it)",
      tar(long("L", "a/".repeat(2100)), entry({ name: "x" })),
      /^unsafe entry: GNU long name longer than 4096 bytes: (a\/){150}…\(4200 chars\)$/,
    ],
    [
      "a component longer than NAME_MAX",
      tar(long("L", `d/${"c".repeat(256)}`), entry({ name: "x" })),
      `unsafe entry: GNU long name has a component longer than 255 bytes: d/${"c".repeat(256)}`,
    ],
    ["an empty name", tar(entry({ name: "" })), "unsafe entry: an entry has an empty name"],
    [
      "a symlink in place of the root",
      tar(entry({ name: "./", type: "2", linkname: "/etc" })),
      "unsafe entry: the archive root is not a directory: ./",
    ],
    [
      "a file in place of the root",
      tar(entry({ name: ".", data: "x" })),
      "unsafe entry: the archive root is not a directory: .",
    ],
    [
      "a directory after a file of the same name",
      tar(entry({ name: "a", data: "x" }), entry({ name: "a/", type: "5" })),
      "directory entry where an earlier entry made a file: a/",
    ],
    [
      "a dir replaced by a symlink out, then a file through it",
      tar(
        entry({ name: "d/", type: "5" }),
        entry({ name: "d", type: "2", linkname: "../outside" }),
        entry({ name: "d/x", data: "evil" }),
      ),
      "unsafe entry: path goes through a symlink: d/x",
    ],
    [
      "a symlink as ./l, then a file through l//",
      tar(entry({ name: "./l", type: "2", linkname: "../outside" }), entry({ name: "l//x", data: "evil" })),
      "unsafe entry: path goes through a symlink: l//x",
    ],
    [
      "a symlink named in a GNU long name, then a file through it",
      tar(
        long("L", "l"),
        entry({ name: "ignored", type: "2", linkname: "../outside" }),
        entry({ name: "l/./keep", data: "evil" }),
      ),
      "unsafe entry: path goes through a symlink: l/./keep",
    ],
  ] as [string, Uint8Array, string | RegExp][])("%s", async (_name, archive, message) => {
    await refused(archive, message);
  });

  test("a symlink replaced by a directory of the same name: the directory is ours, nothing goes out", async () => {
    const r = await extract(
      tar(
        entry({ name: "l", type: "2", linkname: "../outside" }),
        entry({ name: "l/", type: "5" }),
        entry({ name: "l/x", data: "in" }),
      ),
    );
    expect(r.error).toBeUndefined();
    expect(r.tree).toEqual(["l/", "l/x"]);
    expect(r.outside).toEqual(["keep"]);
  });

  test("names that are fine: UTF-8 beyond ASCII, a backslash, a POSIX prefix; bidi controls are escaped in messages", async () => {
    const r = await extract(
      tar(
        entry({ name: "café/日本.txt", data: "1" }),
        entry({ name: "a\\b", data: "2" }),
        entry({ prefix: "deep/er", name: "f", data: "3" }),
      ),
    );
    expect(r.error).toBeUndefined();
    expect(r.tree).toEqual(["a\\b", "café/", "café/日本.txt", "deep/", "deep/er/", "deep/er/f"]);
    expect(printable("a\u202eb\\c")).toBe("a\\u{202e}b\\\\c");
    expect(printable(b([0x5c, 0xff]))).toBe("\\\\\\xff");
  });
});

describe("class 3: header numbers", () => {
  test.each([
    [
      "a size that is not octal",
      entry({ name: "f", size: "00000000009\0" }),
      'bad tar header: size is not an octal number ("00000000009\\x00"): f',
    ],
    [
      "a size with bytes after its terminator",
      entry({ name: "f", size: "1\0x" }),
      'bad tar header: size is not an octal number ("1\\x00x\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00"): f',
    ],
    [
      "a size with a space inside",
      entry({ name: "f", size: "00 1" }),
      /^bad tar header: size is not an octal number \("00 1.*"\): f$/,
    ],
    ["a size in hex", entry({ name: "f", size: "0x10" }), /^bad tar header: size is not an octal number .*: f$/],
    [
      "a negative base-256 size",
      entry({ name: "f", size: base256(-1n, 12) }),
      "bad tar header: size is negative (-1): f",
    ],
    [
      "a base-256 size beyond 2^53",
      entry({ name: "f", size: base256(1n << 60n, 12) }),
      "bad tar header: size 1152921504606846976 is out of range: f",
    ],
    [
      "a mode that is not octal",
      entry({ name: "f", mode: "0000abc\0" }),
      /^bad tar header: mode is not an octal number .*: f$/,
    ],
    [
      "a mode beyond 07777 and the type bits",
      entry({ name: "f", mode: 0o1777777 }),
      "bad tar header: mode 1777777 has bits beyond 07777: f",
    ],
    [
      "a file with a directory's S_IFMT bits",
      entry({ name: "f", mode: 0o40755 }),
      "bad tar header: mode 40755 has bits beyond 07777: f",
    ],
    [
      "a negative base-256 mode",
      entry({ name: "f", mode: base256(-420n, 8) }),
      "bad tar header: mode is negative (-420): f",
    ],
    [
      "a uid of (uid_t)-1, which chown reads as 'unchanged'",
      entry({ name: "f", uid: base256(0xffffffffn, 8) }),
      "bad tar header: uid 4294967295 is out of range (0..4294967294): f",
    ],
    ["a negative gid", entry({ name: "f", gid: base256(-5n, 8) }), "bad tar header: gid is negative (-5): f"],
    [
      "a uid written as decimal -1",
      entry({ name: "f", uid: "-1\0" }),
      /^bad tar header: uid is not an octal number .*: f$/,
    ],
    [
      "an mtime beyond 2514",
      entry({ name: "f", mtime: base256(1n << 40n, 12) }),
      "bad tar header: mtime 1099511627776 is out of range: f",
    ],
    [
      "an mtime before 1901",
      entry({ name: "f", mtime: base256(-(1n << 40n), 12) }),
      "bad tar header: mtime -1099511627776 is out of range: f",
    ],
    [
      "a checksum that is not octal",
      header({ name: "f", checksum: "abc" }),
      "corrupt archive: bad tar header checksum after entry: ok.txt",
    ],
    [
      "a checksum off by one",
      (() => {
        const h = header({ name: "f" });
        h[0] = h[0]! + 1;
        return h;
      })(),
      "corrupt archive: bad tar header checksum after entry: ok.txt",
    ],
    [
      "a control character as the typeflag",
      entry({ name: "f", type: 0x1b }),
      'unsupported entry type "\\x1b" (only files, directories and links): f',
    ],
    [
      "a GNU sparse file",
      entry({ name: "f", type: "S" }),
      'unsupported entry type "S" (only files, directories and links): f',
    ],
  ] as [string, Uint8Array, string | RegExp][])("%s", async (_name, e, message) => {
    await refused(tar(ok, e), message);
  });

  test("numbers tars do write are accepted: space-led and space-ended octal, 8 digits without a terminator, base-256, S_IFREG bits, a signed checksum", async () => {
    const hi = header({ name: "hi\u00e9", data: "" } as never);
    const r = await extract(
      tar(
        entry({ name: "a", size: "     1 ", data: "A", mode: "000644 \0" }),
        entry({ name: "b", uid: "77777777", gid: base256(70000n, 8), mode: 0o100600, data: "B" }),
        entry({ name: "c", size: base256(1n, 12), mtime: base256(-86400n, 12), data: "C" }),
        // A header with bytes > 127 whose checksum was summed as signed chars (old Sun tar).
        (() => {
          let sum = 0;
          hi.fill(32, 148, 156);
          for (const x of hi) sum += x > 127 ? x - 256 : x;
          hi.set(Buffer.from(`${sum.toString(8).padStart(6, "0")}\0 `), 148);
          return hi;
        })(),
      ),
      {},
      (root) => {
        expect(fs.readFileSync(join(root, "a"), "utf8")).toBe("A");
        expect(fs.statSync(join(root, "b")).mode & 0o7777).toBe(0o600);
        expect(fs.readFileSync(join(root, "c"), "utf8")).toBe("C");
        if (process.getuid?.() === 0)
          expect(fs.statSync(join(root, "b"))).toMatchObject({ uid: 0o77777777, gid: 70000 });
      },
    );
    expect(r.error).toBeUndefined();
    expect(r.tree).toEqual(["a", "b", "c", "hié"]);
  });
});

describe("class 3: pax records", () => {
  const file = entry({ name: "f", data: "x" });
  test.each([
    [
      "a length one too long",
      [b("13 path=abc\n")],
      "bad pax header: record at byte 0 is not 13 bytes ending in a newline: PaxHeaders/file",
    ],
    [
      "a length one too short",
      [b("11 path=abc\n")],
      "bad pax header: record at byte 0 is not 11 bytes ending in a newline: PaxHeaders/file",
    ],
    [
      "no newline",
      [b("12 path=abcd")],
      "bad pax header: record at byte 0 is not 12 bytes ending in a newline: PaxHeaders/file",
    ],
    [
      "a length with a sign",
      [b("+12 path=abc\n")],
      "bad pax header: record at byte 0 does not start with its length: PaxHeaders/file",
    ],
    [
      "a length with a leading zero",
      [b("012 path=ab\n")],
      "bad pax header: record at byte 0 does not start with its length: PaxHeaders/file",
    ],
    [
      "a length of zero",
      [b("0 \n")],
      "bad pax header: record at byte 0 does not start with its length: PaxHeaders/file",
    ],
    [
      "a huge length",
      [b("999999999999999 path=a\n")],
      "bad pax header: record at byte 0 is not 999999999999999 bytes ending in a newline: PaxHeaders/file",
    ],
    ["no key=value", [b("8 nokey\n")], "bad pax header: record at byte 0 has no key=value: PaxHeaders/file"],
    [
      "garbage after the last record",
      [rec("path", "a"), b("\0\0\0")],
      "bad pax header: record at byte 9 does not start with its length: PaxHeaders/file",
    ],
    ["size=-1", [rec("size", "-1")], 'bad pax header: size="-1" is not a valid size: PaxHeaders/file'],
    ["size=1e3", [rec("size", "1e3")], 'bad pax header: size="1e3" is not a valid size: PaxHeaders/file'],
    ["size=NaN", [rec("size", "NaN")], 'bad pax header: size="NaN" is not a valid size: PaxHeaders/file'],
    [
      "size beyond 2^53",
      [rec("size", "99999999999999999")],
      'bad pax header: size="99999999999999999" is not a valid size: PaxHeaders/file',
    ],
    ["mtime=NaN", [rec("mtime", "NaN")], 'bad pax header: mtime="NaN" is not a valid mtime: PaxHeaders/file'],
    ["mtime=1e10", [rec("mtime", "1e10")], 'bad pax header: mtime="1e10" is not a valid mtime: PaxHeaders/file'],
    ["mtime=1.2.3", [rec("mtime", "1.2.3")], 'bad pax header: mtime="1.2.3" is not a valid mtime: PaxHeaders/file'],
    [
      "mtime in the year 5000",
      [rec("mtime", "95617584000")],
      'bad pax header: mtime="95617584000" is not a valid mtime: PaxHeaders/file',
    ],
    [
      "atime=Infinity (validated though unused)",
      [rec("atime", "Infinity")],
      'bad pax header: atime="Infinity" is not a valid atime: PaxHeaders/file',
    ],
    [
      "uid=4294967295",
      [rec("uid", "4294967295")],
      'bad pax header: uid="4294967295" is not a valid uid: PaxHeaders/file',
    ],
    ["gid=0x10", [rec("gid", "0x10")], 'bad pax header: gid="0x10" is not a valid gid: PaxHeaders/file'],
    [
      "a value with a control character",
      [rec("uid", "1\n")],
      'bad pax header: uid="1\\x0a" is not a valid uid: PaxHeaders/file',
    ],
    [
      "a GNU sparse map",
      [rec("GNU.sparse.major", "1"), rec("GNU.sparse.minor", "0")],
      "bad pax header: sparse files are not supported (GNU.sparse.major): PaxHeaders/file",
    ],
  ] as [string, Uint8Array[], string][])("%s", async (_name, records, message) => {
    await refused(tar(pax(records), file), message);
  });

  test("a bad global (g) header is refused as well, though its values are not used", async () => {
    await refused(
      tar(pax([b("5 a=b")], "g", "pax_global_header"), file),
      "bad pax header: record at byte 0 is not 5 bytes ending in a newline: pax_global_header",
    );
  });

  test("good records apply: path, linkpath, size, fractional and negative mtime, uid/gid; an empty value falls back to the header; unknown keys are ignored", async () => {
    const r = await extract(
      tar(
        pax([
          rec("path", `long/${"n".repeat(200)}`),
          rec("mtime", "1700000000.75"),
          rec("uid", "4242"),
          rec("gid", "4343"),
          rec("SCHILY.xattr.user.x", "y"),
          rec("comment", "hi"),
        ]),
        entry({ name: "short", data: "x" }),
        pax([rec("path", "gone"), rec("path", "")]),
        entry({ name: "kept", data: "y", mtime: 0 }),
        pax([rec("linkpath", `long/${"n".repeat(200)}`), rec("mtime", "-1.5")]),
        entry({ name: "link", type: "2", linkname: "x" }),
      ),
      {},
      (root) => {
        const st = fs.statSync(join(root, "long", "n".repeat(200)));
        expect(st.mtimeMs).toBe(1_700_000_000_000);
        if (process.getuid?.() === 0) expect(st).toMatchObject({ uid: 4242, gid: 4343 });
        expect(fs.readlinkSync(join(root, "link"))).toBe(`long/${"n".repeat(200)}`);
      },
    );
    expect(r.error).toBeUndefined();
    expect(r.tree).toEqual(["kept", "link", "long/", `long/${"n".repeat(200)}`]);
  });
});

describe("class 3: meta entries can't grow memory or bypass the limits", () => {
  test.each([
    ["L", "GNU long name"],
    ["K", "GNU long link name"],
    ["x", "pax header"],
    ["g", "global pax header"],
  ])("a %s entry declaring 1 GiB is refused at its header, before any of its data", async (type, kind) => {
    await using d = tempDir();
    const ex = new TarExtractor(d.path, DEFAULT_LIMITS);
    // Only the header is fed: the refusal can't have waited for (or buffered) the data.
    expect(() => ex.write(header({ name: "././@LongLink", type, size: 2 ** 30 }))).toThrow(
      new ExtractError(`${kind} of 1073741824 bytes is larger than the 1048576-byte limit`, "././@LongLink"),
    );
  });

  test("a pax header of exactly 1 MiB is accepted", async () => {
    const record = rec("comment", "c".repeat(MAX_META_SIZE - 17));
    expect(record.length).toBe(MAX_META_SIZE);
    const r = await extract(tar(pax([record]), ok));
    expect(r.error).toBeUndefined();
    expect(r.tree).toEqual(["ok.txt"]);
  });

  test("meta entries count against --max-files: 2 files with a pax header each exceed 3", async () => {
    const p = pax([rec("mtime", "1")]);
    await refused(
      tar(p, entry({ name: "a", data: "1" }), p, entry({ name: "b", data: "2" })),
      "too many entries (limit 3, counting 2 pax and long-name headers): b",
      { maxEntries: 3 },
    );
  });

  test("one deep directory name over --max-files is refused before its directories are made", async () => {
    // The fuzzer's find (FUZZ_SEED=4242 case 3933): the parents were made, then counted, so a refused
    // entry left up to ~2,000 directories (a 4,096-byte name) beyond the limit.
    for (const type of ["5", "0"] as const) {
      const r = await refused(
        tar(pax([rec("path", `${"d/".repeat(120)}x`)]), entry({ name: "x", type, data: type === "0" ? "1" : "" })),
        `too many entries (limit 64, counting 1 pax and long-name headers, counting 120 directories the archive ` +
          `implies): ${"d/".repeat(120)}x`,
        { maxEntries: 64 },
      );
      expect(r.tree).toEqual([]);
    }
  });

  test("a stream of meta entries alone hits --max-files", async () => {
    const p = long("L", "x");
    await refused(
      tar(...Array.from({ length: 50 }, () => p)),
      "too many entries (limit 10, counting 11 pax and long-name headers): ././@LongLink",
      { maxEntries: 10 },
    );
  });

  test("meta data counts against --max-extract-size", async () => {
    await refused(
      tar(pax([rec("comment", "c".repeat(900))]), entry({ name: "f", data: "x".repeat(200) })),
      "archive expands beyond 1000 bytes: f",
      { maxBytes: 1000 },
    );
  });

  test("a directory's or symlink's declared data counts against --max-extract-size", async () => {
    await refused(
      tar(entry({ name: "d/", type: "5", data: "z".repeat(1500) })),
      "archive expands beyond 1000 bytes: d/",
      { maxBytes: 1000 },
    );
    await refused(
      tar(entry({ name: "l", type: "2", linkname: "x", size: 2 ** 40 })),
      "archive expands beyond 1000 bytes: l",
      { maxBytes: 1000 },
    );
  });

  test("a file declaring more than --max-extract-size is refused at its header", async () => {
    await using d = tempDir();
    const ex = new TarExtractor(d.path, { ...DEFAULT_LIMITS, maxBytes: 1 << 20 });
    expect(() => ex.write(header({ name: "huge", size: 2 ** 40 }))).toThrow(
      "archive expands beyond 1048576 bytes: huge",
    );
    expect(fs.readdirSync(d.path)).toEqual([]);
  });
});

describe("after the end-of-archive marker", () => {
  test("padding to a record is ignored (tar -b 2048 pads to 1 MiB)", async () => {
    const r = await extract(Buffer.concat([tar(ok), new Uint8Array(2 ** 20)]));
    expect(r.error).toBeUndefined();
    expect(r.tree).toEqual(["ok.txt"]);
  });

  test("more than 16 MiB after it is refused as it streams, so no gzip of zeros is inflated without end", async () => {
    await using d = tempDir();
    const ex = new TarExtractor(d.path, DEFAULT_LIMITS);
    ex.write(tar(ok));
    const zeros = new Uint8Array(2 ** 20);
    let fed = 0;
    expect(() => {
      for (; fed < 64; fed++) ex.write(zeros);
    }).toThrow(
      "more than 16777216 bytes after the end-of-archive marker (concatenated archives are not supported): ok.txt",
    );
    expect(fed).toBe(16);
  });
});

describe("class 6: an empty archive would empty dest", () => {
  const MESSAGE =
    "empty archive: no entry besides its root; deploying it would empty dest (pass --allow-empty-archive if " +
    "that is what you want)";
  test.each([
    ["only the end-of-archive marker", tar()],
    ["only a ./ entry", tar(entry({ name: "./", type: "5" }))],
    [
      "./ and . entries with a global pax header",
      tar(pax([rec("comment", "x")], "g"), entry({ name: "./", type: "5" }), entry({ name: ".", type: "5" })),
    ],
    ["a lone pax header with nothing after it", tar(entry({ name: "./", type: "5" }), pax([rec("mtime", "1")]))],
  ])("%s: refused", async (_name, archive) => {
    await refused(archive, MESSAGE);
  });

  test("with allowEmpty it extracts to an empty tree", async () => {
    const r = await extract(tar(entry({ name: "./", type: "5" })), { allowEmpty: true });
    expect(r.error).toBeUndefined();
    expect(r.tree).toEqual([]);
  });

  test("one directory is not empty", async () => {
    const r = await extract(tar(entry({ name: "./", type: "5" }), entry({ name: "./logs/", type: "5" })));
    expect(r.error).toBeUndefined();
    expect(r.tree).toEqual(["logs/"]);
  });
});
