/**
 * The tar header codec on its own: the ustar layout and checksum, and the pax records for what ustar
 * can't hold, read back by the real GNU tar (header-only archives: directories, symlinks, empty files).
 */
import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { BLOCK, entryHeaders, type TarEntry } from "../../src/archive/tar-header.ts";
import { tempDir } from "../support/helpers.ts";

const entry = (e: Partial<TarEntry> & Pick<TarEntry, "path" | "type">): TarEntry => ({
  mode: 0o755,
  mtime: 1_700_000_000,
  size: 0,
  linkname: "",
  ...e,
});
const ascii = (b: Uint8Array, off: number, len: number) =>
  new TextDecoder().decode(b.subarray(off, off + len)).replace(/\0.*$/s, "");

/** A header-only archive: each entry's headers, then the two zero blocks that end it. */
function archive(entries: TarEntry[]): Uint8Array {
  const parts = entries.map(entryHeaders);
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0) + 2 * BLOCK);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

function tar(args: string[], cwd: string): string {
  const r = Bun.spawnSync(["tar", ...args], {
    cwd,
    stdout: "pipe",
    stderr: "pipe",
    env: { LC_ALL: "C.UTF-8", TZ: "UTC", PATH: process.env.PATH! },
  });
  if (r.exitCode !== 0) throw new Error(`tar ${args.join(" ")}: ${r.stderr.toString()}`);
  return r.stdout.toString();
}

/** The pax records of a header set that starts with one: `[key, value, declared length, actual length]`. */
function paxRecords(h: Uint8Array): [string, string, number, number][] {
  const size = parseInt(ascii(h, 124, 12), 8);
  const text = new TextDecoder().decode(h.subarray(BLOCK, BLOCK + size));
  const out: [string, string, number, number][] = [];
  let rest = Buffer.from(text);
  while (rest.length > 0) {
    const space = rest.indexOf(0x20);
    const len = Number(rest.subarray(0, space).toString());
    const record = rest.subarray(0, len).toString();
    const [key, ...value] = record.slice(record.indexOf(" ") + 1, -1).split("=");
    out.push([key!, value.join("="), len, Buffer.byteLength(record)]);
    rest = rest.subarray(len);
  }
  return out;
}

describe("ustar header", () => {
  test("one block: fields at their offsets, uid/gid 0, no owner names, a valid checksum", () => {
    const h = entryHeaders(entry({ path: "app/run.sh", type: "file", mode: 0o750, size: 1234 }));
    expect(h.length).toBe(BLOCK);
    expect(ascii(h, 0, 100)).toBe("app/run.sh");
    expect(ascii(h, 100, 8)).toBe("0000750");
    expect([ascii(h, 108, 8), ascii(h, 116, 8)]).toEqual(["0000000", "0000000"]);
    expect(parseInt(ascii(h, 124, 12), 8)).toBe(1234);
    expect(parseInt(ascii(h, 136, 12), 8)).toBe(1_700_000_000);
    expect(String.fromCharCode(h[156]!)).toBe("0");
    expect(ascii(h, 257, 6)).toBe("ustar");
    expect(ascii(h, 263, 2)).toBe("00");
    expect([ascii(h, 265, 32), ascii(h, 297, 32)]).toEqual(["", ""]);
    // The checksum: the sum of all bytes with the checksum field read as spaces.
    const copy = h.slice();
    copy.fill(0x20, 148, 156);
    expect(parseInt(ascii(h, 148, 8), 8)).toBe(copy.reduce((a, b) => a + b, 0));
  });

  test("a name that needs a pax record is cut in the ustar field at a UTF-8 boundary, whole in the record", () => {
    const path = "ü".repeat(60); // 120 bytes, no slash to split at
    const h = entryHeaders(entry({ path, type: "file" }));
    expect(paxRecords(h).map(([k, v]) => [k, v])).toEqual([["path", path]]);
    const name = h.subarray(h.length - BLOCK, h.length - BLOCK + 100);
    const used = name.indexOf(0) === -1 ? name : name.subarray(0, name.indexOf(0));
    expect(new TextDecoder("utf-8", { fatal: true }).decode(used)).toBe("ü".repeat(50));
  });

  test("a path over 100 bytes is split into prefix and name at a slash when it fits", () => {
    const path = `${"d".repeat(150)}/${"f".repeat(99)}`;
    const h = entryHeaders(entry({ path, type: "file" }));
    expect(h.length).toBe(BLOCK); // no pax record needed
    expect([ascii(h, 345, 155), ascii(h, 0, 100)]).toEqual(["d".repeat(150), "f".repeat(99)]);
  });

  test("a size beyond 11 octal digits goes into a pax record, the ustar field holds 0", () => {
    const h = entryHeaders(entry({ path: "big.bin", type: "file", size: 2 ** 34 }));
    expect(String.fromCharCode(h[156]!)).toBe("x");
    expect(paxRecords(h).map(([k, v]) => [k, v])).toEqual([["size", String(2 ** 34)]]);
    const main = h.subarray(h.length - BLOCK);
    expect(parseInt(ascii(main, 124, 12), 8)).toBe(0);
  });
});

describe("pax records, read back by GNU tar", () => {
  test("each record's length counts its own digits, across the 999 → 1000 rollover", () => {
    // " linkpath=" + target + "\n" is 11 + L bytes: L = 985..987 puts the record at 999, 1000, 1001 bytes.
    for (const l of [985, 986, 987]) {
      const records = paxRecords(entryHeaders(entry({ path: "l", type: "symlink", linkname: "t".repeat(l) })));
      expect(records).toHaveLength(1);
      const [key, value, declared, actual] = records[0]!;
      expect([key, value.length, declared]).toEqual(["linkpath", l, actual]);
    }
  });

  test("long paths, long and UTF-8 link targets, times before 1970: tar extracts them exactly", async () => {
    await using d = tempDir();
    const longPath = `${"a".repeat(200)}/${"b".repeat(120)}`; // neither part fits ustar's name field
    const utf8Target = `${"ü".repeat(60)}/日本`; // over 100 bytes, 64 characters
    const entries = [
      entry({ path: "a".repeat(200), type: "dir" }),
      entry({ path: longPath, type: "file", mode: 0o640 }),
      entry({ path: "link-long", type: "symlink", linkname: `${"t".repeat(150)}/target` }),
      entry({ path: "link-utf8", type: "symlink", linkname: utf8Target }),
      entry({ path: "old", type: "dir", mtime: -86_400 }),
      entry({ path: "plain", type: "file", mode: 0o644, mtime: 86_400 }),
    ];
    fs.writeFileSync(join(d.path, "t.tar"), archive(entries));
    fs.mkdirSync(join(d.path, "out"));
    tar(["-xf", "../t.tar"], join(d.path, "out"));
    const out = (p: string) => join(d.path, "out", p);
    expect(fs.statSync(out(longPath)).size).toBe(0);
    expect(fs.statSync(out(longPath)).mode & 0o7777).toBe(0o640);
    expect(fs.readlinkSync(out("link-long"))).toBe(`${"t".repeat(150)}/target`);
    expect(fs.readlinkSync(out("link-utf8"))).toBe(utf8Target);
    expect(fs.statSync(out("old")).mtimeMs).toBe(-86_400_000);
    expect(fs.statSync(out("plain")).mtimeMs).toBe(86_400_000);
    // The listing names every entry once: the pax headers are not entries of their own.
    expect(tar(["-tf", "t.tar"], d.path).trim().split("\n")).toEqual([
      `${"a".repeat(200)}/`,
      longPath,
      "link-long",
      "link-utf8",
      "old/",
      "plain",
    ]);
  });
});
