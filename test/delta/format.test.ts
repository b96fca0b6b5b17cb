/**
 * The content index parser (`parseIndex`): its top-level scan and per-element parse must read exactly
 * what `JSON.parse` reads, whatever the whitespace, key order or string contents, and refuse what
 * `JSON.parse` refuses (plus a key given twice).
 */
import { describe, expect, test } from "bun:test";
import { DeltaError, encodeIndex, parseIndex, type DeltaIndex } from "../../src/delta/format.ts";

const H = (c: string) => c.repeat(64);
const index: DeltaIndex = {
  tar: { sha256: H("a"), size: 10_240 },
  archiveSize: 900,
  packs: [H("b")],
  chunks: [
    { hash: H("c"), pack: 0, offset: 0, stored: 10, size: 20 },
    { hash: H("d"), pack: 0, offset: 10, stored: 5, size: 7 },
  ],
  entries: [
    { path: "dir", type: "dir", mode: 0o755, mtime: 1, size: 0, linkname: "", chunks: [] },
    // Every character the scan must not take for structure: quotes, brackets, braces, commas, colons,
    // backslashes, escapes, non-ASCII.
    {
      path: 'dir/a"],[{:}\\b\u00e9\u2028',
      type: "file",
      mode: 0o644,
      mtime: 2,
      size: 27,
      linkname: "",
      chunks: [0, 1],
    },
    { path: "dir/l", type: "symlink", mode: 0o777, mtime: 3, size: 0, linkname: '../x"]', chunks: [] },
    { path: "empty", type: "file", mode: 0o600, mtime: 4, size: 0, linkname: "", chunks: [] },
  ],
};
const limits = { maxEntries: 100, maxBytes: 1e9 };
const parse = (text: string, l = limits) => {
  const { byPath, ...rest } = parseIndex(text, l);
  expect(byPath && Object.fromEntries(byPath)).toEqual(Object.fromEntries(index.entries.map((e, i) => [e.path, i])));
  return rest;
};
const compact = encodeIndex(index);
const raw = JSON.parse(compact);

describe("parseIndex reads what JSON.parse reads", () => {
  test.each([
    ["as publish writes it", compact],
    ["pretty-printed", JSON.stringify(raw, null, 2)],
    ["with tabs and CRLF", JSON.stringify(raw, null, "\t").replaceAll("\n", "\r\n")],
    [
      "entries before chunks, format last",
      JSON.stringify({
        entries: raw.entries,
        chunks: raw.chunks,
        tar: raw.tar,
        archive: raw.archive,
        packs: raw.packs,
        format: raw.format,
      }),
    ],
    ["strings with \\u escapes", compact.replaceAll("dir/l", "\\u0064ir/l")],
    ["an unknown key (ignored)", compact.replace("{", '{"comment":{"x":["]}",1]},')],
  ])("%s", (_, text) => {
    expect(parse(text)).toEqual(index);
  });
});

describe("parseIndex refuses", () => {
  const broken: [string, string, RegExp][] = [
    ["trailing text", `${compact} x`, /^index: not JSON \(unexpected text after the object/],
    ["a key given twice", compact.replace("{", `{"packs":[],`), /^index: not JSON \("packs" given twice\)/],
    ["a top-level array", `[${compact}]`, /^index: not JSON \(expected an object\)/],
    ["nothing", "", /^index: not JSON \(expected an object\)/],
    [
      "an unterminated string",
      compact.slice(0, compact.indexOf("dir/l") + 3),
      /^index: not JSON \(unterminated string\)/,
    ],
    [
      "elements without a comma",
      compact.replace('],["dir/l"', '] ["dir/l"'),
      /^index: not JSON \(expected ',' or '\]'/,
    ],
    ["a trailing comma", compact.replace(/\]\]\}$/, "],]}"), /^index: not JSON/],
    [
      "a bracket closed by a brace",
      compact.replace('["empty","f",384,4,0,[]]', '["empty","f",384,4,0,[]}'),
      /^index: not JSON/,
    ],
    ["junk inside an element", compact.replace('"dir","d"', '"dir" "d"'), /^index: not JSON/],
    ["a bare word", compact.replace('"archive":{"size":900}', '"archive":size'), /^index: not JSON/],
    [
      "chunks not a list",
      compact.replace(/"chunks":\[.*?\]\],"entries"/, '"chunks":{},"entries"'),
      /^index: chunks: expected a list$/,
    ],
  ];
  test.each(broken)("%s", (_, text, message) => {
    let err: unknown;
    try {
      parseIndex(text, limits);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(DeltaError);
    expect((err as Error).message).toMatch(message);
    // Of these JSON.parse accepts only the duplicate key and the wrong shapes; the rest it refuses too.
    if (!["a key given twice", "a top-level array", "chunks not a list"].includes(_))
      expect(() => JSON.parse(text)).toThrow();
  });

  test("more entries than the limit, before reading the rest", () => {
    expect(() => parseIndex(compact, { ...limits, maxEntries: 3 })).toThrow(/^index: more than 3 entries, the limit$/);
  });
});
