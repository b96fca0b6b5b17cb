/**
 * Seeded, bounded mutations of valid archives and manifests (issue 8's fuzzer). Every case is a pure
 * function of (seed, index): `caseRng(seed, i)` reproduces case i alone. Mutations reach past the
 * header checksum (it is recomputed unless the mutation is about the checksum) so that the parser
 * behind it is what gets attacked.
 */
import { base256, FIELDS, fixChecksum, entry, long, pax, rec, setField, type Field } from "../archive/_forge.ts";

/** mulberry32: a tiny, good-enough PRNG with a 32-bit state. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface Rng {
  next(): number;
  int(n: number): number;
  pick<T>(xs: readonly T[]): T;
  chance(p: number): boolean;
}

export function caseRng(seed: number, index: number): Rng {
  const next = mulberry32((seed ^ Math.imul(index + 1, 0x9e3779b1)) >>> 0);
  return {
    next,
    int: (n) => Math.floor(next() * n),
    pick: (xs) => xs[Math.floor(next() * xs.length)]!,
    chance: (p) => next() < p,
  };
}

/** Offsets of the header blocks of a valid plain tar (meta entries included), up to its end marker. */
export function headerOffsets(t: Uint8Array): number[] {
  const out: number[] = [];
  let off = 0;
  while (off + 512 <= t.length) {
    const h = t.subarray(off, off + 512);
    if (h.every((b) => b === 0)) break;
    out.push(off);
    const size = parseInt(
      Buffer.from(h.subarray(124, 136))
        .toString("latin1")
        .replace(/[\0 ]+$/, "") || "0",
      8,
    );
    const type = String.fromCharCode(h[156]!);
    const hasData =
      type === "0" || type === "\0" || type === "7" || type === "x" || type === "g" || type === "L" || type === "K";
    off += 512 + (hasData ? Math.ceil(size / 512) * 512 : 0);
  }
  return out;
}

/** The entry (header and data) starting at `off`. */
function entryAt(t: Uint8Array, offsets: number[], off: number): Uint8Array {
  const i = offsets.indexOf(off);
  const end = i + 1 < offsets.length ? offsets[i + 1]! : endOf(t);
  return t.slice(off, end);
}

function endOf(t: Uint8Array): number {
  const offs = headerOffsets(t);
  if (offs.length === 0) return 0;
  const last = offs.at(-1)!;
  const size = parseInt(
    Buffer.from(t.subarray(last + 124, last + 136))
      .toString("latin1")
      .replace(/[\0 ]+$/, "") || "0",
    8,
  );
  return Math.min(t.length, last + 512 + Math.ceil((Number.isFinite(size) ? size : 0) / 512) * 512);
}

const enc = new TextEncoder();
const b = (...xs: (string | number[])[]) => Buffer.concat(xs.map((x) => Buffer.from(x as never)));

/**
 * Hostile names; OUTSIDE is replaced by the absolute path of the sentinel directory next to the
 * tree, so that an escape would be seen there.
 */
export const HOSTILE_NAMES: (string | Uint8Array)[] = [
  "../outside/pwned",
  "a/../../outside/pwned",
  "OUTSIDE/abs",
  "/OUTSIDE/abs2",
  "esc/pwned",
  "esc",
  "./esc/./pwned",
  "esc//pwned",
  ".",
  "./",
  "",
  "..",
  "a/..",
  "dir",
  "dir/",
  "dir/file",
  "file",
  "f\nake",
  "a\x1b[31m",
  "a\x7f",
  "a\u0085",
  "caf\u00e9",
  "a\\b",
  b("x", [0xff]),
  b([0xc0, 0xaf]),
  b([0xed, 0xa0, 0x80]),
  b("n", [0], "ul"),
  "x".repeat(99),
  "d/".repeat(60),
];
export const HOSTILE_LINKS: (string | Uint8Array)[] = [
  "../outside",
  "OUTSIDE",
  "/etc",
  ".",
  "..",
  "dir",
  "file",
  "esc",
  "",
  "esc/pwned",
  "dir/file",
  b([0xfe]),
  "a\nb",
];

/** Values for each numeric field, well-formed and not. */
const NUMBERS: Record<string, Field[]> = {
  size: [
    0,
    1,
    511,
    512,
    513,
    0o77777777777,
    "00000000009\0",
    "1\0x",
    "  1 ",
    "-1",
    "0x10",
    "",
    base256(-1n, 12),
    base256(1n << 60n, 12),
    base256(1n << 33n, 12),
    base256(4096n, 12),
    new Uint8Array(12).fill(0xff),
  ],
  mode: [
    0o644,
    0o7777,
    0o4755,
    0o177777,
    0o1777777,
    0o100644,
    0o40755,
    "abc",
    "",
    base256(-1n, 8),
    "0000644 ",
    "7777777\0",
  ],
  uid: [0, 1000, 0o7777777, "77777777", base256(0xffffffffn, 8), base256(-5n, 8), "-1", "9"],
  gid: [0, 1000, "77777777", base256(0xfffffffen, 8), base256(-1n, 8), "x"],
  mtime: [
    0,
    1,
    0o77777777777,
    base256(-86400n, 12),
    base256(1n << 40n, 12),
    base256(-(1n << 40n), 12),
    "1e10",
    "NaN",
    " ",
  ],
  checksum: ["0", "abc", "", "0000000\0", "77777777"],
};
const TYPES = [
  "0",
  "\0",
  "1",
  "2",
  "3",
  "4",
  "5",
  "6",
  "7",
  "x",
  "g",
  "L",
  "K",
  "S",
  "V",
  "D",
  "M",
  "N",
  "\x1b",
  "\xff",
];

const PAX_RECORDS: Uint8Array[] = [
  rec("path", "../outside/paxpwn"),
  rec("path", "OUTSIDE/paxabs"),
  rec("path", "esc/paxpwn"),
  rec("path", b("a", [0], "b")),
  rec("path", "x\ny"),
  rec("path", b([0xff])),
  rec("path", ""),
  rec("linkpath", "OUTSIDE"),
  rec("linkpath", "../../.."),
  rec("size", "-1"),
  rec("size", "99999999999999999"),
  rec("size", "1e3"),
  rec("size", "4096"),
  rec("size", "0"),
  rec("mtime", "NaN"),
  rec("mtime", "1700000000.5"),
  rec("mtime", "-1.5"),
  rec("mtime", "95617584000"),
  rec("uid", "4294967295"),
  rec("uid", "12345"),
  rec("gid", "-1"),
  rec("GNU.sparse.major", "1"),
  rec("GNU.sparse.size", "100"),
  rec("comment", "x".repeat(600)),
  rec("hdrcharset", "BINARY"),
  b("13 path=abc\n"),
  b("+12 path=abc\n"),
  b("012 path=ab\n"),
  b("5 a=b"),
  b("8 nokey\n"),
  b("0 \n"),
  b("999999999999 x=y\n"),
  b("\0\0\0"),
];

/** One mutation of a plain tar; returns the mutated bytes and a short description. */
type Mutation = (t: Uint8Array, r: Rng, ctx: MutationContext) => [Uint8Array, string];

export interface MutationContext {
  outside: string;
  bases: Uint8Array[];
}

const subst = (v: string | Uint8Array, ctx: MutationContext) =>
  typeof v === "string" ? v.replaceAll("OUTSIDE", ctx.outside).replace(/^\/\//, "/") : v;

function pickHeader(t: Uint8Array, r: Rng): number | undefined {
  const offs = headerOffsets(t);
  return offs.length === 0 ? undefined : r.pick(offs);
}

const MUTATIONS: Record<string, Mutation> = {
  flip(t, r) {
    const out = t.slice();
    const n = 1 + r.int(8);
    for (let i = 0; i < n && out.length > 0; i++) out[r.int(out.length)]! ^= 1 << r.int(8);
    return [out, `flip ${n} bits`];
  },
  field(t, r) {
    const off = pickHeader(t, r);
    if (off === undefined) return [t, "field: no header"];
    const out = t.slice();
    const name = r.pick(Object.keys(NUMBERS));
    const v = r.pick(NUMBERS[name]!);
    const h = out.subarray(off, off + 512);
    setField(h, FIELDS[name as keyof typeof FIELDS], v);
    if (name !== "checksum") fixChecksum(h);
    return [
      out,
      `${name}=${typeof v === "number" ? v.toString(8) : JSON.stringify(Buffer.from(v as never).toString("latin1"))} ` +
        `@${off}`,
    ];
  },
  type(t, r) {
    const off = pickHeader(t, r);
    if (off === undefined) return [t, "type: no header"];
    const out = t.slice();
    const ty = r.pick(TYPES);
    out[off + 156] = ty.charCodeAt(0) & 0xff;
    fixChecksum(out.subarray(off, off + 512));
    return [out, `type=${JSON.stringify(ty)} @${off}`];
  },
  name(t, r, ctx) {
    const off = pickHeader(t, r);
    if (off === undefined) return [t, "name: no header"];
    const out = t.slice();
    const link = r.chance(0.3);
    const v = subst(r.pick(link ? HOSTILE_LINKS : HOSTILE_NAMES), ctx);
    const h = out.subarray(off, off + 512);
    setField(h, link ? FIELDS.linkname : FIELDS.name, v);
    if (r.chance(0.2)) setField(h, FIELDS.prefix, subst(r.pick(HOSTILE_NAMES), ctx));
    fixChecksum(h);
    return [out, `${link ? "linkname" : "name"}=${JSON.stringify(Buffer.from(v as never).toString("latin1"))} @${off}`];
  },
  inject(t, r, ctx) {
    const offs = headerOffsets(t);
    const at = offs.length === 0 ? 0 : r.pick(offs);
    let meta: Uint8Array;
    let what: string;
    const kind = r.int(4);
    if (kind === 0) {
      const n = 1 + r.int(3);
      const recs = Array.from({ length: n }, () =>
        r.chance(0.3) ? rec(r.pick(["path", "linkpath"]), subst(r.pick(HOSTILE_NAMES), ctx)) : r.pick(PAX_RECORDS),
      );
      meta = pax(recs, r.chance(0.8) ? "x" : "g");
      what = `pax ${recs.map((x) => JSON.stringify(Buffer.from(x).toString("latin1"))).join(",")}`;
    } else if (kind === 1) {
      const v = subst(r.pick(r.chance(0.5) ? HOSTILE_NAMES : HOSTILE_LINKS), ctx);
      const ty = r.chance(0.6) ? "L" : "K";
      meta = long(ty, v);
      what = `${ty} ${JSON.stringify(Buffer.from(v as never).toString("latin1"))}`;
    } else if (kind === 2) {
      // A meta entry declaring more than it carries (or more than the cap).
      const size = r.pick([2 ** 20 + 1, 2 ** 30, 4096, 100]);
      const ty = r.pick(["x", "L", "K", "g"]);
      meta = entry({ name: "././@LongLink", type: ty, size, data: "x".repeat(r.int(600)) });
      what = `${ty} declaring ${size}`;
    } else {
      // The classic: a symlink out of the tree, then something through it.
      meta = Buffer.concat([
        entry({
          name: "esc",
          type: "2",
          linkname: subst(r.pick(["../outside", "OUTSIDE", "/OUTSIDE"]), ctx) as string,
        }),
        entry({ name: r.pick(["esc/pwned", "esc/./p", "esc//q"]), data: "evil" }),
      ]);
      what = "symlink out + file through it";
    }
    return [Buffer.concat([t.subarray(0, at), meta, t.subarray(at)]), `inject ${what} @${at}`];
  },
  dup(t, r) {
    const offs = headerOffsets(t);
    if (offs.length === 0) return [t, "dup: no header"];
    const e = entryAt(t, offs, r.pick(offs));
    const at = r.pick(offs);
    return [Buffer.concat([t.subarray(0, at), e, t.subarray(at)]), `dup ${e.length}B @${at}`];
  },
  truncate(t, r) {
    const n = r.chance(0.5) ? r.int(t.length) : Math.floor(r.int(Math.ceil(t.length / 512)) * 512);
    return [t.subarray(0, n), `truncate at ${n}`];
  },
  concat(t, r, ctx) {
    const other = r.pick(ctx.bases);
    const strip = r.chance(0.5);
    const head = strip ? t.subarray(0, endOf(t)) : t;
    return [Buffer.concat([head, other]), `concat${strip ? " (end marker removed)" : ""}`];
  },
  noEnd(t) {
    return [t.subarray(0, endOf(t)), "end marker removed"];
  },
  shuffle(t, r) {
    const blocks = Math.floor(t.length / 512);
    if (blocks < 2) return [t, "shuffle: too small"];
    const out = t.slice();
    const i = r.int(blocks);
    const j = r.int(blocks);
    out.set(t.subarray(j * 512, j * 512 + 512), i * 512);
    return [out, `block ${j} copied over ${i}`];
  },
};

export interface ArchiveCase {
  bytes: Uint8Array;
  gzip: boolean;
  steps: string[];
}

/** Case `index` of `seed`: a base archive, 1-3 mutations, maybe gzip, maybe gzip-level damage. */
export function archiveCase(seed: number, index: number, ctx: MutationContext): ArchiveCase {
  const r = caseRng(seed, index);
  let t: Uint8Array = r.pick(ctx.bases);
  const steps: string[] = [];
  const names = Object.keys(MUTATIONS);
  const n = 1 + r.int(3);
  for (let i = 0; i < n; i++) {
    const m = r.pick(names);
    const [out, what] = MUTATIONS[m]!(t, r, ctx);
    t = out;
    steps.push(what);
  }
  const gzip = r.chance(0.6);
  if (!gzip) return { bytes: t, gzip, steps };
  let z: Uint8Array = Bun.gzipSync(t as Uint8Array<ArrayBuffer>, { level: 1 });
  const damage = r.int(6);
  if (damage === 0 && z.length > 20) {
    z = z.slice();
    const k = 1 + r.int(4);
    for (let i = 0; i < k; i++) z[10 + r.int(z.length - 10)]! ^= 1 << r.int(8);
    steps.push(`gzip: ${k} bits flipped`);
  } else if (damage === 1) {
    const cut = r.int(z.length);
    z = z.subarray(0, cut);
    steps.push(`gzip: truncated at ${cut}`);
  } else if (damage === 2) {
    z = Buffer.concat([z, enc.encode("trailing garbage")]);
    steps.push("gzip: trailing garbage");
  } else if (damage === 3) {
    z = Buffer.concat([z, Bun.gzipSync(r.pick(ctx.bases) as Uint8Array<ArrayBuffer>)]);
    steps.push("gzip: a second member");
  }
  return { bytes: z, gzip, steps };
}

// ---------------------------------------------------------------------------------------------
// manifests

const MANIFEST_SNIPPETS = [
  "dest: /\n",
  "dest: /etc\n",
  "dest_mode: 99999\n",
  "dest_mode: abc\n",
  'shared_paths: ["."]\n',
  'shared_paths: ["../x"]\n',
  "sync_strategy: nope\n",
  "src: file:///etc/passwd\n",
  "checksum: zz\n",
  "checksum: 123\n",
  "a: &a [*a, *a]\nb: &b [*a, *a, *a]\nc: [*b, *b, *b, *b]\n",
  "x: !!js/function 'f'\n",
  "commands:\n  pre: 5\n",
  'commands:\n  pre: ["echo $("]\n',
  'src: "http://u:p@h/x"\n',
  'dest: "/srv/\\0x"\n',
  "\t\tbad: indent\n",
  "---\n---\n",
  "? [a]\n: b\n",
  "keep_releases: -1\n",
  "excludes: 5\n",
  "%YAML 9.9\n",
  "<<: *undefined\n",
  `long: ${"x".repeat(5000)}\n`,
  "\u0000\n",
  "\ufeffsrc: x\n",
];

export function manifestCase(seed: number, index: number, bases: string[]): { text: string; steps: string[] } {
  const r = caseRng(seed, index);
  let text = r.pick(bases);
  const steps: string[] = [];
  const n = 1 + r.int(3);
  for (let i = 0; i < n; i++) {
    const lines = text.split("\n");
    switch (r.int(5)) {
      case 0: {
        const bytes = Buffer.from(text);
        if (bytes.length > 0) bytes[r.int(bytes.length)]! ^= 1 << r.int(8);
        text = bytes.toString("utf8");
        steps.push("flip");
        break;
      }
      case 1: {
        const l = r.int(lines.length);
        lines.splice(r.int(lines.length), 0, lines[l]!);
        text = lines.join("\n");
        steps.push(`dup line ${l}`);
        break;
      }
      case 2: {
        const s = r.pick(MANIFEST_SNIPPETS);
        lines.splice(r.int(lines.length + 1), 0, s.replace(/\n$/, ""));
        text = lines.join("\n");
        steps.push(`insert ${JSON.stringify(s)}`);
        break;
      }
      case 3: {
        const cut = r.int(text.length + 1);
        text = text.slice(0, cut);
        steps.push(`truncate ${cut}`);
        break;
      }
      default: {
        lines.splice(r.int(lines.length), 1);
        text = lines.join("\n");
        steps.push("drop line");
      }
    }
  }
  return { text, steps };
}
