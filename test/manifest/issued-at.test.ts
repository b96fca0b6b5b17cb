/** The manifest's `issued_at`: parsed strictly, normalised to ISO 8601 UTC with milliseconds. */
import { expect, test } from "bun:test";
import { ManifestError } from "../../src/errors.ts";
import { parseManifest } from "../../src/manifest/parse.ts";

const manifest = (issued: string) =>
  `src: file:///a.tar.gz\nchecksum: ${"a".repeat(64)}\ndest: /srv/app\nissued_at: ${issued}\n`;

test.each([
  ['"2026-12-04T18:30:00.123Z"', "2026-12-04T18:30:00.123Z"],
  ["2026-12-04T18:30:00Z", "2026-12-04T18:30:00.000Z"],
  ['"2026-12-04T18:30:00.123456789Z"', "2026-12-04T18:30:00.123Z"],
])("issued_at: %s reads as %s", (text, want) => {
  expect(parseManifest(manifest(text), {}).manifest.issuedAt).toBe(want);
});

test("no issued_at: undefined (an unsigned or older manifest)", () => {
  expect(parseManifest(manifest("").replace(/issued_at:.*\n/, ""), {}).manifest.issuedAt).toBeUndefined();
});

test.each([
  "2026-12-04",
  '"2026-12-04T18:30:00+01:00"',
  '"2026-13-45T99:99:99Z"',
  '"2026-02-30T00:00:00Z"',
  '"NaN"',
  "1733337000",
  '"-002026-12-04T18:30:00Z"',
  "[x]",
])("issued_at: %s is an error naming the field", (text) => {
  let err: unknown;
  try {
    parseManifest(manifest(text), {});
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(ManifestError);
  expect((err as Error).message).toContain("issued_at: expected");
});
