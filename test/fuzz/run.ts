/**
 * The fuzzer's runner: each mutated archive goes through the agent's real unpack path
 * (`fetchAndExtract`: file:// source, hash, gunzip, extract), with a correct checksum so that the
 * extractor, not the checksum, is what decides. After every case the invariants are checked:
 *
 *   - nothing outside the tree changed: a sentinel dir beside it (the target of the hostile names
 *     and links) and the work dir's own listing are as before;
 *   - the limits hold: entries in the tree ≤ maxEntries, bytes of its files ≤ maxBytes;
 *   - a failure is an ExtractError (phase `extract`) whose message is one printable line; nothing
 *     else is thrown (no TypeError, no raw errno error, no checksum error);
 *   - each case finishes within its deadline, and RSS stays flat over the run.
 *
 * A violation throws at once with the seed, the case and its mutations, to replay it alone.
 */
import * as fs from "node:fs";
import { join } from "node:path";
import { fetchAndExtract } from "../../src/agent/unpack.ts";
import { ExtractError, PulldeployError } from "../../src/errors.ts";
import { parseManifest } from "../../src/manifest/parse.ts";
import { packTree, scanTree } from "../../src/archive/pack.ts";
import type { ExtractLimits } from "../../src/archive/extract.ts";
import { entry, long, pax, rec, tar } from "../archive/_forge.ts";
import { archiveCase, manifestCase, type MutationContext } from "./mutate.ts";

export interface FuzzOptions {
  seed: number;
  runs: number;
  /** A scratch directory (emptied and reused per case). */
  work: string;
  /** Per case, in ms. */
  deadlineMs?: number;
  /** Allowed RSS growth over the run after warm-up, in bytes. */
  rssGrowth?: number;
  /** Only this case (replay). */
  only?: number;
}

export interface FuzzStats {
  runs: number;
  extracted: number;
  refused: number;
  /** Refusals by message, data (entry names) stripped. */
  reasons: Map<string, number>;
  /** The first case of each reason, with its full message (to replay). */
  examples: Map<string, string>;
  maxCaseMs: number;
  rssGrowth: number;
}

export const LIMITS: ExtractLimits = { maxEntries: 64, maxBytes: 256 * 1024 };

/** Valid archives to mutate: GNU tar in three formats, our packer, and a forged pax/GNU mix. */
export async function baseArchives(work: string): Promise<Uint8Array[]> {
  const src = join(work, "base-src");
  fs.rmSync(src, { recursive: true, force: true });
  fs.mkdirSync(join(src, "dir/sub"), { recursive: true });
  fs.writeFileSync(join(src, "file"), "hello\n");
  fs.writeFileSync(join(src, "dir/file"), "x".repeat(1500));
  fs.writeFileSync(join(src, "dir/sub/deep.txt"), "deep");
  fs.writeFileSync(join(src, `long-${"n".repeat(110)}.txt`), "long name");
  fs.symlinkSync("dir/file", join(src, "link"));
  fs.linkSync(join(src, "file"), join(src, "hard"));
  fs.chmodSync(join(src, "dir/sub"), 0o555);
  const out: Uint8Array[] = [];
  for (const format of ["gnu", "pax", "ustar"]) {
    const members = format === "ustar" ? ["./file", "./dir", "./link", "./hard"] : ["."];
    const r = Bun.spawnSync(["tar", "cf", "-", `--format=${format}`, "-C", src, ...members]);
    if (r.exitCode !== 0) throw new Error(`tar --format=${format}: ${r.stderr.toString()}`);
    out.push(new Uint8Array(r.stdout));
  }
  const packed = packTree(scanTree(src, { excludes: [] }), { algorithm: "sha256", gzipLevel: 1, inline: true });
  out.push(Bun.gunzipSync(new Uint8Array(await new Response(packed.stream).arrayBuffer())));
  out.push(
    tar(
      entry({ name: "./", type: "5" }),
      pax([rec("path", `pax/${"p".repeat(120)}`), rec("mtime", "1700000000.25")]),
      entry({ name: "ignored", data: "pax file" }),
      long("L", `gnu/${"g".repeat(120)}`),
      entry({ name: "ignored2", data: "gnu file", magic: "gnu" }),
      entry({ name: "pax/", type: "5" }),
      entry({ name: "ln", type: "2", linkname: "pax" }),
    ),
  );
  fs.chmodSync(join(src, "dir/sub"), 0o755);
  fs.rmSync(src, { recursive: true, force: true });
  return out;
}

/** Path → "type size mode content-hash" of everything under `dir` (lstat: links not followed). */
function snapshot(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (p: string, rel: string) => {
    const st = fs.lstatSync(p);
    let what = `${st.mode.toString(8)} ${st.size} ${st.mtimeMs}`;
    if (st.isFile()) what += ` ${Bun.hash(fs.readFileSync(p))}`;
    else if (st.isSymbolicLink()) what += ` -> ${fs.readlinkSync(p)}`;
    out.set(rel, what);
    if (st.isDirectory()) for (const n of fs.readdirSync(p)) walk(join(p, n), `${rel}/${n}`);
  };
  walk(dir, ".");
  return out;
}

/** Entries under `tree` and the bytes of its distinct files; makes every directory writable for the cleanup. */
function measure(tree: string): { entries: number; bytes: number } {
  let entries = 0;
  let bytes = 0;
  const inodes = new Set<number>();
  const walk = (p: string) => {
    for (const n of fs.readdirSync(p)) {
      const q = join(p, n);
      const st = fs.lstatSync(q);
      entries++;
      if (st.isDirectory()) {
        fs.chmodSync(q, 0o700);
        walk(q);
      } else if (st.isFile() && !inodes.has(st.ino)) {
        inodes.add(st.ino);
        bytes += st.size;
      }
    }
  };
  fs.chmodSync(tree, 0o700);
  walk(tree);
  return { entries, bytes };
}

function check(cond: boolean, what: string, where: string): void {
  if (!cond) throw new Error(`fuzz invariant broken: ${what} (${where})`);
}

export async function fuzzArchives(opts: FuzzOptions): Promise<FuzzStats> {
  const { work, seed } = opts;
  fs.mkdirSync(work, { recursive: true });
  const outside = join(work, "outside");
  fs.mkdirSync(outside, { recursive: true });
  fs.writeFileSync(join(outside, "keep"), "sentinel");
  fs.mkdirSync(join(outside, "dir"), { recursive: true });
  const ctx: MutationContext = { outside, bases: await baseArchives(work) };
  const before = snapshot(outside);
  const stats: FuzzStats = {
    runs: 0,
    extracted: 0,
    refused: 0,
    reasons: new Map(),
    examples: new Map(),
    maxCaseMs: 0,
    rssGrowth: 0,
  };
  const deadline = opts.deadlineMs ?? 5000;
  let rssBase = 0;
  let rssMax = 0;
  const first = opts.only ?? 0;
  const last = opts.only !== undefined ? opts.only + 1 : opts.runs;
  for (let i = first; i < last; i++) {
    const c = archiveCase(seed, i, ctx);
    const where = `FUZZ_SEED=${seed} case ${i}: ${c.steps.join("; ")}${c.gzip ? " (gzip)" : ""}`;
    const tree = join(work, "tree");
    const file = join(work, "case.tar");
    fs.mkdirSync(tree, { mode: 0o700 });
    fs.writeFileSync(file, c.bytes);
    const hex = new Bun.CryptoHasher("sha256").update(c.bytes).digest("hex");
    const t0 = performance.now();
    let failure: unknown;
    try {
      const r = await fetchAndExtract({
        url: `file://${file}`,
        checksum: { algorithm: "sha256", hex },
        tree,
        env: {},
        userAgent: "fuzz",
        limits: LIMITS,
      });
      failure = r.extractError;
    } catch (err) {
      failure = err;
    }
    const ms = performance.now() - t0;
    stats.maxCaseMs = Math.max(stats.maxCaseMs, ms);
    check(ms < deadline, `took ${ms.toFixed(0)} ms (deadline ${deadline})`, where);
    if (failure !== undefined) {
      check(
        failure instanceof ExtractError,
        `threw ${(failure as Error)?.name}: ${(failure as Error)?.message ?? failure}`,
        where,
      );
      const e = failure as PulldeployError;
      check(e.phase === "extract", `phase ${e.phase}`, where);
      check(
        !/[\x00-\x1f\x7f-\x9f]/.test(e.message),
        `message is not one printable line: ${JSON.stringify(e.message)}`,
        where,
      );
      check(e.message.length < 4500, `message of ${e.message.length} chars: ${e.message.slice(0, 200)}`, where);
      stats.refused++;
      const reason = e.message.replace(/:\s.*$/s, "").replace(/\d+/g, "N");
      stats.reasons.set(reason, (stats.reasons.get(reason) ?? 0) + 1);
      if (!stats.examples.has(reason)) stats.examples.set(reason, `${e.message} [${where}]`);
    } else stats.extracted++;
    const m = measure(tree);
    check(m.entries <= LIMITS.maxEntries, `${m.entries} entries extracted (limit ${LIMITS.maxEntries})`, where);
    check(m.bytes <= LIMITS.maxBytes, `${m.bytes} bytes extracted (limit ${LIMITS.maxBytes})`, where);
    fs.rmSync(tree, { recursive: true, force: true });
    fs.rmSync(file);
    const after = snapshot(outside);
    const changed = [...new Set([...before.keys(), ...after.keys()])].filter((k) => before.get(k) !== after.get(k));
    check(changed.length === 0, `outside the tree changed: ${changed.join(", ")}`, where);
    const extra = fs.readdirSync(work).filter((n) => n !== "outside");
    check(extra.length === 0, `created beside the tree: ${extra.join(", ")}`, where);
    stats.runs++;
    // Peak RSS, sampled after every case, against the level after a warm-up.
    if (i - first === 20) {
      Bun.gc(true);
      rssBase = process.memoryUsage.rss();
    } else if (i - first > 20) rssMax = Math.max(rssMax, process.memoryUsage.rss());
  }
  stats.rssGrowth = rssBase > 0 && rssMax > 0 ? rssMax - rssBase : 0;
  check(
    stats.rssGrowth < (opts.rssGrowth ?? 64 * 2 ** 20),
    `RSS grew by ${(stats.rssGrowth / 2 ** 20).toFixed(1)} MiB`,
    `FUZZ_SEED=${seed}, ${stats.runs} runs`,
  );
  return stats;
}

const BASE_MANIFESTS = [
  "src: file:///tmp/app.tar.gz\nchecksum: " +
    "a".repeat(64) +
    '\ndest: /srv/app\ndest_mode: 0755\nexcludes:\n  - .git\ncommands:\n  pre:\n    - echo pre\n  post: ["echo post"]\n  success: ["true"]\n  failure: ["echo failed"]\n',
  "src: s3://bucket/app.tgz\nchecksum: " +
    "b".repeat(40) +
    '\ndest: /srv/app\nsync_strategy: release\nkeep_releases: 3\nshared_paths: [log, tmp/pids]\ncommands:\n  validate: ["curl -fs localhost"]\n  env:\n    A: b\n',
  "commands:\n  pre:\n    - echo only commands\n",
];

/** Mutated manifests through the parser: a result or a one-line PulldeployError, within the deadline. */
export function fuzzManifests(
  seed: number,
  runs: number,
  deadlineMs = 2000,
): { runs: number; parsed: number; refused: number } {
  let parsed = 0;
  let refused = 0;
  for (let i = 0; i < runs; i++) {
    const c = manifestCase(seed, i, BASE_MANIFESTS);
    const where = `FUZZ_SEED=${seed} manifest case ${i}: ${c.steps.join("; ")}`;
    const t0 = performance.now();
    try {
      parseManifest(c.text, { HOME: "/root" });
      parsed++;
    } catch (err) {
      check(err instanceof PulldeployError, `threw ${(err as Error)?.name}: ${(err as Error)?.message}`, where);
      check(
        !/[\r\n]/.test((err as Error).message),
        `message is not one line: ${JSON.stringify((err as Error).message)}`,
        where,
      );
      refused++;
    }
    const ms = performance.now() - t0;
    check(ms < deadlineMs, `took ${ms.toFixed(0)} ms`, where);
  }
  return { runs, parsed, refused };
}
