/**
 * The agent's index reader (`parseCompactIndex`) against the reference parser (`parseIndex`): the same
 * index read into typed arrays must be the same index, and whatever one refuses the other refuses
 * with the same message, on the fast path (publish's exact shape, read from the bytes) and the slow
 * one (anything else, through `JSON.parse`), and on thousands of mutated indexes.
 */
import { describe, expect, test } from "bun:test";
import { type CompactIndex, parseCompactIndex } from "../../src/delta/compact.ts";
import { encodeIndex, parseIndex, type DeltaIndex } from "../../src/delta/format.ts";

const H = (c: string) => c.repeat(64);
const index: DeltaIndex = {
  tar: { sha256: H("a"), size: 10_240 },
  archiveSize: 900,
  packs: [H("b"), H("e")],
  chunks: [
    { hash: H("c"), pack: 0, offset: 0, stored: 10, size: 20 },
    { hash: `${"0123456789abcdef".repeat(4)}`, pack: 1, offset: 10, stored: 5, size: 7 },
  ],
  entries: [
    { path: "dir", type: "dir", mode: 0o755, mtime: 1, size: 0, linkname: "", chunks: [] },
    { path: "dir/plain.js", type: "file", mode: 0o644, mtime: 1_700_000_000, size: 27, linkname: "", chunks: [0, 1] },
    { path: 'dir/a"],[{:}\\b\u00e9\u2028', type: "file", mode: 0o644, mtime: 2, size: 20, linkname: "", chunks: [0] },
    { path: "dir/l", type: "symlink", mode: 0o777, mtime: 3, size: 0, linkname: "../x", chunks: [] },
    { path: "dir/l2", type: "symlink", mode: 0o777, mtime: 3, size: 0, linkname: '../\u00e9"]', chunks: [] },
    { path: "empty", type: "file", mode: 0o600, mtime: 4, size: 0, linkname: "", chunks: [] },
    { path: "old", type: "file", mode: 0o600, mtime: -5, size: 7, linkname: "", chunks: [1] },
  ],
};
const limits = { maxEntries: 100, maxBytes: 1e9 };
const bytes = (text: string) => new TextEncoder().encode(text);

/** The compact index as `parseIndex` returns it (without `byPath`), and every path found by `find`. */
function objects(ix: CompactIndex): DeltaIndex {
  const entries = Array.from({ length: ix.count }, (_, i) => ix.entry(i));
  entries.forEach((e, i) => {
    const p = bytes(e.path);
    expect(ix.find(p, 0, p.length)).toBe(i);
  });
  return {
    tar: ix.tar,
    archiveSize: ix.archiveSize,
    packs: ix.packs,
    chunks: Array.from({ length: ix.chunkCount }, (_, k) => ix.chunk(k)),
    entries,
  };
}

/** Both parsers on `text`: the same index, or the same refusal (offsets in messages aside: bytes vs chars). */
function same(text: string, l = limits): "ok" | string {
  let want: DeltaIndex | undefined;
  let wantErr: string | undefined;
  try {
    const { byPath: _, ...rest } = parseIndex(new TextDecoder().decode(bytes(text)), l);
    want = rest;
  } catch (err) {
    wantErr = (err as Error).message;
  }
  let got: DeltaIndex | undefined;
  let gotErr: string | undefined;
  try {
    got = objects(parseCompactIndex(bytes(text), l));
  } catch (err) {
    gotErr = (err as Error).message;
  }
  const norm = (m?: string) => m?.replace(/ at \d+/g, " at N");
  expect(norm(gotErr)).toBe(norm(wantErr));
  if (want) expect(got).toEqual(want);
  return wantErr ?? "ok";
}

const compact = encodeIndex(index);
const raw = JSON.parse(compact);

describe("parseCompactIndex reads what parseIndex reads", () => {
  test.each([
    ["as publish writes it (the fast path)", compact],
    ["pretty-printed (every element through JSON.parse)", JSON.stringify(raw, null, 2)],
    ["with tabs and CRLF", JSON.stringify(raw, null, "\t").replaceAll("\n", "\r\n")],
    [
      "keys in another order",
      JSON.stringify({ entries: raw.entries, format: raw.format, chunks: raw.chunks, tar: raw.tar, packs: raw.packs }),
    ],
    ["strings with \\u escapes", compact.replaceAll("dir/l", "\\u0064ir/l")],
    ["numbers written otherwise", compact.replace(",1700000000,", ",1.7e9,").replace(",420,", ",420.0,")],
    ["an unknown key", compact.replace("{", '{"comment":{"x":["]}",1]},')],
    ["no entries", compact.replace(/"entries":\[.*\]\}$/, '"entries":[]}')],
  ])("%s", (_, text) => {
    expect(same(text)).toBe("ok");
  });

  test("the fast path and JSON.parse give the same arrays", () => {
    const fast = parseCompactIndex(bytes(compact), limits);
    const slow = parseCompactIndex(bytes(JSON.stringify(raw, null, 1)), limits);
    for (const k of [
      "hashes",
      "pack",
      "offset",
      "stored",
      "size",
      "kind",
      "mode",
      "mtime",
      "fileSize",
      "pathStart",
      "refStart",
      "refs",
      "pathBytes",
    ] as const)
      expect(Array.from(fast[k])).toEqual(Array.from(slow[k]));
  });
});

describe("parseCompactIndex refuses what parseIndex refuses, with its message", () => {
  const entry = (e: unknown[]) => compact.replace('["empty","f",384,4,0,[]]', JSON.stringify(e));
  test.each([
    ["trailing text", `${compact} x`],
    ["a key given twice", compact.replace("{", `{"packs":[],`)],
    ["a top-level array", `[${compact}]`],
    ["nothing", ""],
    ["an unterminated string", compact.slice(0, compact.indexOf("dir/l") + 3)],
    ["elements without a comma", compact.replace('],["dir/l"', '] ["dir/l"')],
    ["a trailing comma", compact.replace(/\]\]\}$/, "],]}")],
    ["junk inside an element", compact.replace('"dir","d"', '"dir" "d"')],
    ["chunks not a list", compact.replace(/"chunks":\[.*?\]\],"entries"/, '"chunks":{},"entries"')],
    ["another format", compact.replace("pulldeploy-delta/1", "pulldeploy-delta/2")],
    ["a path listed twice (fast path)", entry(["dir/plain.js", "f", 0o600, 4, 0, []])],
    ["a symlink listed twice (fast path)", entry(["dir/l", "l", 0o777, 4, "x"])],
    ["a path with ..", entry(["dir/../x", "f", 0o600, 4, 0, []])],
    ["an absolute path", entry(["/etc/passwd", "f", 0o600, 4, 0, []])],
    ["a path with an empty component", entry(["dir//x", "f", 0o600, 4, 0, []])],
    ["a mode over 0o7777", entry(["x", "f", 0o10000, 4, 0, []])],
    ["an unsafe mtime", entry(["x", "f", 0o600, 2 ** 60, 0, []])],
    ["a chunk not in the list", entry(["x", "f", 0o600, 4, 20, [2]])],
    ["chunks that do not add up", entry(["x", "f", 0o600, 4, 21, [0]])],
    ["an empty link target", entry(["x", "l", 0o777, 4, ""])],
    ["an unknown type", entry(["x", "h", 0o600, 4, 0, []])],
    ["a directory with a size", entry(["x", "d", 0o755, 4, 0])],
    ["a chunk in no pack", compact.replace(`"${H("c")}",0,`, `"${H("c")}",2,`)],
    ["a chunk of size 0", compact.replace(`"${H("c")}",0,0,10,20`, `"${H("c")}",0,0,10,0`)],
    ["an upper-case hash", compact.replace(H("c"), H("C"))],
    ["a short hash", compact.replace(H("c"), H("c").slice(1))],
    ["a leading zero", compact.replace(",1700000000,", ",01700000000,")],
  ])("%s", (_, text) => {
    expect(same(text)).not.toBe("ok");
  });

  test("more entries than the limit, and more bytes than the limit", () => {
    expect(same(compact, { ...limits, maxEntries: 3 })).toBe("index: more than 3 entries, the limit");
    expect(same(compact, { ...limits, maxBytes: 50 })).toBe("index: files add up to more than the limit of 50 bytes");
  });

  test("3,000 mutated indexes: each accepted or refused alike", () => {
    let seed = 11;
    const rnd = () => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed / 2 ** 32;
    };
    const alphabet = '[]{},:"\\0123456789 aefdlx/.-\u00e9';
    let refused = 0;
    for (let n = 0; n < 3000; n++) {
      const chars = [...compact];
      for (let m = 1 + Math.floor(rnd() * 3); m > 0; m--) {
        const at = Math.floor(rnd() * chars.length);
        const c = alphabet[Math.floor(rnd() * alphabet.length)]!;
        const op = rnd();
        if (op < 0.4) chars[at] = c;
        else if (op < 0.7) chars.splice(at, 1);
        else chars.splice(at, 0, c);
      }
      if (same(chars.join("")) !== "ok") refused++;
    }
    // Most mutations break something; some (a digit for a digit) do not: both kinds were compared.
    expect(refused).toBeGreaterThan(1000);
    expect(refused).toBeLessThan(3000);
  });

  test("many paths: each found, absent ones not (the table grows past its first size)", () => {
    const many: DeltaIndex = {
      ...index,
      entries: Array.from({ length: 5000 }, (_, i) => ({
        path: `d${i % 7}/f${i}`,
        type: "file" as const,
        mode: 0o644,
        mtime: i,
        size: 0,
        linkname: "",
        chunks: [],
      })),
    };
    const text = encodeIndex(many).replace(/"entries":\[/, '"entries":  [');
    const ix = parseCompactIndex(bytes(text), { maxEntries: 10_000, maxBytes: 1e9 });
    expect(objects(ix).entries).toEqual(many.entries);
    const absent = bytes("d1/f5000");
    expect(ix.find(absent, 0, absent.length)).toBe(-1);
  });
});
