/**
 * The tar reader's numeric header fields (mode, uid, gid, size, mtime) as parseHeader reads them:
 * octal digits, optionally led by spaces and ended by NULs or spaces, up to the field's full width
 * with no terminator; anything else is refused naming the field. The digits are summed directly (no
 * string per field: the extractor's hot path, ~6 fields per entry); this table pins the values.
 */
import { describe, expect, test } from "bun:test";
import { parseHeader } from "../../src/archive/extract.ts";
import { FIELDS, fixChecksum, header, setField } from "./_forge.ts";

const enc = new TextEncoder();
/** A valid header whose `field` holds exactly `raw` (the rest of the field NUL). */
function withRaw(field: "mode" | "uid" | "size" | "mtime", raw: string): Uint8Array {
  const h = header({ name: "f" });
  setField(h, FIELDS[field], enc.encode(raw));
  fixChecksum(h);
  return h;
}

describe("parseHeader: numeric fields", () => {
  const good: [field: "mode" | "uid" | "size" | "mtime", raw: string, value: number][] = [
    ["mode", "0000644\0", 0o644],
    ["mode", "644", 0o644],
    ["mode", "   644 \0", 0o644],
    ["mode", "0000644 ", 0o644],
    ["mode", "", 0],
    ["mode", "        ", 0],
    ["uid", "0001750\0", 1000],
    ["uid", "7777777\0", 0o7777777],
    ["size", "00000000000\0", 0],
    ["size", "77777777777\0", 8589934591], // 11 digits: 8 GiB - 1, ustar's usual maximum
    ["size", "777777777777", 68719476735], // 12 digits, no terminator: the full field
    ["size", "00000001000 ", 512],
    ["mtime", "14524770400\0", 1700000000],
    ["mtime", "17777777777\0", 2 ** 31 - 1],
  ];
  test.each(good)("%s %j is %d", (field, raw, value) => {
    const h = parseHeader(withRaw(field, raw));
    expect(field === "mode" ? h.mode : field === "uid" ? h.uid : field === "size" ? h.size : h.mtime).toBe(value);
  });

  const bad: [field: "mode" | "uid" | "size" | "mtime", raw: string][] = [
    ["mode", "0000648\0"],
    ["uid", "12 34\0"],
    ["size", "0000000001x\0"],
    ["mtime", "-1\0"],
    ["size", "0000000\x00001"], // a NUL, then digits again
  ];
  test.each(bad)("%s %j is refused, naming the field and the entry", (field, raw) => {
    expect(() => parseHeader(withRaw(field, raw))).toThrow(
      new RegExp(`^bad tar header: ${field} is not an octal number \\("${raw.slice(0, 2)}.*"\\): f$`),
    );
  });
});
