import { describe, expect, test } from "bun:test";
import { parseChecksum } from "../src/checksum.ts";
import { parseDuration, parseSize } from "../src/units.ts";
import { redact } from "../src/log.ts";

describe("durations: stretcher v1 seconds and v2 Go durations", () => {
  test.each([
    ["30", 30_000],
    ["1.5", 1500],
    ["0", 0],
    ["30s", 30_000],
    ["500ms", 500],
    ["2m", 120_000],
    ["1h30m", 5_400_000],
    ["1.5s", 1500],
  ])("%s → %d ms", (input, ms) => expect(parseDuration(input)).toBe(ms));
  test.each([["abc"], ["30x"], [""], ["-1"], ["s"]])("%j is refused", (input) => {
    expect(typeof parseDuration(input)).toBe("string");
  });
});

describe("sizes: 1MB = 10^6, 1MiB = 2^20", () => {
  test.each([
    ["10M", 10_000_000],
    ["10MB", 10_000_000],
    ["1MiB", 1_048_576],
    ["500k", 500_000],
    ["500K", 500_000],
    ["1024", 1024],
    ["1.5MB", 1_500_000],
    ["2G", 2_000_000_000],
    ["1GiB", 2 ** 30],
  ])("%s → %d bytes", (input, n) => expect(parseSize(input)).toBe(n));
  test.each([["10X"], ["MB"], ["0"], [""], ["-5M"]])("%j is refused", (input) => {
    expect(typeof parseSize(input)).toBe("string");
  });
});

describe("checksum", () => {
  test("length 32/40/64/128", () => {
    expect(parseChecksum("a".repeat(32))).toEqual({ algorithm: "md5", hex: "a".repeat(32) });
    expect(parseChecksum("A".repeat(40))).toEqual({ algorithm: "sha1", hex: "a".repeat(40) });
    expect(parseChecksum("b".repeat(64))).toEqual({ algorithm: "sha256", hex: "b".repeat(64) });
    expect(parseChecksum("c".repeat(128))).toEqual({ algorithm: "sha512", hex: "c".repeat(128) });
  });
  test("other lengths name the valid ones", () => {
    expect(parseChecksum("a".repeat(48))).toBe(
      "length 48 matches no algorithm (32 md5, 40 sha1, 64 sha256, 128 sha512)",
    );
  });
});

describe("logs never print credentials", () => {
  test.each([
    ["fetch https://user:secret@host/a.tgz", "fetch https://user:***@host/a.tgz"],
    [
      "https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIA&X-Amz-Signature=abc",
      "https://b.s3.amazonaws.com/k?X-Amz-Credential=***&X-Amz-Signature=***",
    ],
    ["http://x/a?token=abc&v=1", "http://x/a?token=***&v=1"],
  ])("%s", (input, out) => expect(redact(input)).toBe(out));
});
