/**
 * The packer: scan rules (order, excludes, .git, unpackable entries), reproducible bytes, and archives
 * that the real GNU tar and gzip read back exactly (modes, mtimes, symlinks, empty dirs, long names).
 */
import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { PackError, packTree, scanTree, type PackOptions } from "../../src/archive/pack.ts";
import { TarExtractor } from "../../src/archive/extract.ts";
import { listTree, tempDir, writeTree } from "../support/helpers.ts";

const OPTS: PackOptions = { algorithm: "sha256", gzipLevel: 6 };

async function packBytes(
  root: string,
  scan: Parameters<typeof scanTree>[1] = { excludes: [] },
  opts: PackOptions = OPTS,
) {
  const packed = packTree(scanTree(root, scan), opts);
  const bytes = await new Response(packed.stream).bytes();
  return { bytes, result: await packed.result };
}

function tar(args: string[], cwd?: string): string {
  const r = Bun.spawnSync(["tar", ...args], {
    cwd,
    stdout: "pipe",
    stderr: "pipe",
    env: { LC_ALL: "C.UTF-8", TZ: "UTC", PATH: process.env.PATH! },
  });
  if (r.exitCode !== 0) throw new Error(`tar ${args.join(" ")}: ${r.stderr.toString()}`);
  return r.stdout.toString();
}

/** A tree with every kind of entry the packer keeps. */
function sampleTree(root: string): void {
  const longDir = `${"d".repeat(120)}/${"e".repeat(120)}`;
  writeTree(root, {
    "a/x.txt": "hello\n",
    "a/exec.sh": { mode: 0o750, content: "#!/bin/sh\necho hi\n" },
    "b.txt": "b",
    "zero.txt": "",
    "block.bin": "x".repeat(512),
    [`${longDir}/${"f".repeat(99)}.txt`]: "deep",
    [`${"n".repeat(101)}.txt`]: "long name, no slash",
    "ünïcode/日本.txt": "utf-8 names",
    link: { symlink: "a/x.txt" },
    longlink: { symlink: `${"t".repeat(150)}/target` },
    dangling: { symlink: "does/not/exist" },
  });
  fs.mkdirSync(join(root, "empty/nested"), { recursive: true });
  fs.chmodSync(join(root, "a"), 0o711);
  fs.utimesSync(join(root, "b.txt"), 1_000_000_000, 1_000_000_000);
  fs.writeFileSync(
    join(root, "big.bin"),
    new Uint8Array(3 * 2 ** 20 + 17).map((_, i) => (i * 7919) & 0xff),
  );
}

describe("scanTree", () => {
  test("entries are sorted by name, each directory right before its contents", async () => {
    await using d = tempDir();
    writeTree(d.path, { "b/1": "", "a-b": "", "a/z": "", "a/b/c": "", A: "", _: "" });
    expect(scanTree(d.path, { excludes: [] }).entries.map((e) => e.path)).toEqual([
      "A",
      "_",
      "a",
      "a/b",
      "a/b/c",
      "a/z",
      "a-b",
      "b",
      "b/1",
    ]);
  });

  test("counts files and bytes; keeps modes and whole-second mtimes", async () => {
    await using d = tempDir();
    writeTree(d.path, { x: "12345", "y/z": { mode: 0o600, content: "ab" } });
    fs.utimesSync(join(d.path, "x"), 1_700_000_000.75, 1_700_000_000.75);
    const plan = scanTree(d.path, { excludes: [] });
    expect(plan.files).toBe(2);
    expect(plan.bytes).toBe(7);
    expect(plan.entries.find((e) => e.path === "x")!.mtime).toBe(1_700_000_000);
    expect(plan.entries.find((e) => e.path === "y/z")!.mode).toBe(0o600);
  });

  test.each([
    [["*.log"], ["a", "a/keep.txt", "b", "b/c", "b/c/keep.txt", "tmp", "tmp/cache", "tmp/cache/x"]],
    [["tmp/"], ["a", "a/keep.txt", "a/x.log", "b", "b/c", "b/c/keep.txt", "b/c/y.log"]],
    [["b/c"], ["a", "a/keep.txt", "a/x.log", "b", "tmp", "tmp/cache", "tmp/cache/x"]],
    [["/a"], ["b", "b/c", "b/c/keep.txt", "b/c/y.log", "tmp", "tmp/cache", "tmp/cache/x"]],
    [
      ["**/*.log", "tmp/cache/**"],
      ["a", "a/keep.txt", "b", "b/c", "b/c/keep.txt", "tmp", "tmp/cache"],
    ],
    [["keep.*"], ["a", "a/x.log", "b", "b/c", "b/c/y.log", "tmp", "tmp/cache", "tmp/cache/x"]],
    [
      ["x/"],
      ["a", "a/keep.txt", "a/x.log", "b", "b/c", "b/c/keep.txt", "b/c/y.log", "tmp", "tmp/cache", "tmp/cache/x"],
    ],
  ])("--exclude %j", async (excludes, paths) => {
    await using d = tempDir();
    writeTree(d.path, { "a/keep.txt": "", "a/x.log": "", "b/c/keep.txt": "", "b/c/y.log": "", "tmp/cache/x": "" });
    expect(scanTree(d.path, { excludes }).entries.map((e) => e.path)).toEqual(paths);
  });

  test(".git is ignored at any depth unless asked for (a submodule's .git file too)", async () => {
    await using d = tempDir();
    writeTree(d.path, {
      ".git/HEAD": "ref",
      "sub/.git": "gitdir: ../.git/modules/sub",
      "sub/f": "",
      ".gitignore": "x",
    });
    expect(scanTree(d.path, { excludes: [] }).entries.map((e) => e.path)).toEqual([".gitignore", "sub", "sub/f"]);
    expect(scanTree(d.path, { excludes: [], includeGit: true }).entries.map((e) => e.path)).toEqual([
      ".git",
      ".git/HEAD",
      ".gitignore",
      "sub",
      "sub/.git",
      "sub/f",
    ]);
  });

  test("every special file is listed in one error", async () => {
    await using d = tempDir();
    writeTree(d.path, { "ok.txt": "fine" });
    fs.mkdirSync(join(d.path, "run"));
    expect(Bun.spawnSync(["mkfifo", join(d.path, "run/fifo"), join(d.path, "pipe")]).exitCode).toBe(0);
    const server = createServer();
    await new Promise<void>((r) => server.listen(join(d.path, "run/app.sock"), r));
    try {
      const err = (() => {
        try {
          scanTree(d.path, { excludes: [] });
        } catch (e) {
          return e;
        }
      })() as PackError;
      expect(err).toBeInstanceOf(PackError);
      expect(err.problems).toEqual(["pipe (fifo)", "run/app.sock (socket)", "run/fifo (fifo)"]);
      expect(err.message).toBe(
        `pack ${d.path}: 3 entries cannot be packed: pipe (fifo), run/app.sock (socket), run/fifo (fifo)`,
      );
      // Excluding them is the way out.
      expect(scanTree(d.path, { excludes: ["run/", "pipe"] }).entries.map((e) => e.path)).toEqual(["ok.txt"]);
    } finally {
      server.close();
    }
  });

  test("a device file is refused", async () => {
    await using d = tempDir();
    fs.symlinkSync("/dev/null", join(d.path, "null-link"));
    // A symlink to a device is just a symlink; a device node itself is not packable.
    expect(scanTree(d.path, { excludes: [] }).entries.map((e) => e.type)).toEqual(["symlink"]);
    const mk = Bun.spawnSync(["mknod", join(d.path, "null"), "c", "1", "3"]);
    if (mk.exitCode !== 0) return; // not allowed in this sandbox
    expect(() => scanTree(d.path, { excludes: [] })).toThrow("null (character device)");
  });

  test.each([
    ["a missing directory", (d: string) => join(d, "nope"), "no such directory"],
    ["a file", (d: string) => (fs.writeFileSync(join(d, "f"), "x"), join(d, "f")), "not a directory"],
    ["an empty directory", (d: string) => d, "nothing to pack (the directory is empty)"],
    [
      "a directory with only .git",
      (d: string) => (writeTree(d, { ".git/HEAD": "x" }), d),
      "nothing to pack (it holds only .git, which is left out unless --include-git)",
    ],
  ])("%s is a clear error", async (_what, make, message) => {
    await using d = tempDir();
    const root = make(d.path);
    expect(() => scanTree(root, { excludes: [] })).toThrow(`pack ${root}: ${message}`);
  });
});

describe("packTree", () => {
  test("GNU tar lists and extracts it exactly: modes, mtimes, symlinks, empty dirs, long and UTF-8 names", async () => {
    await using d = tempDir();
    const src = join(d.path, "src");
    sampleTree(src);
    const { bytes, result } = await packBytes(src);
    const archive = join(d.path, "app.tar.gz");
    fs.writeFileSync(archive, bytes);
    expect(result.size).toBe(bytes.length);
    expect(result.checksum).toBe(new Bun.CryptoHasher("sha256").update(bytes).digest("hex"));

    expect(Bun.spawnSync(["gzip", "-t", archive]).exitCode).toBe(0);
    const listing = tar(["tvzf", archive]).trim().split("\n");
    for (const line of listing) expect(line).toMatch(/^\S+ 0\/0 /); // uid/gid 0, no user names
    expect(listing.find((l) => l.endsWith(" b.txt"))).toContain("2001-09-09 01:46");
    expect(listing.find((l) => l.includes(" link -> "))).toMatch(/^lrwxrwxrwx .* link -> a\/x\.txt$/);
    expect(listing.find((l) => l.endsWith(" a/"))).toMatch(/^drwx--x--x /);
    expect(listing.find((l) => l.endsWith(" a/exec.sh"))).toMatch(/^-rwxr-x--- /);

    const out = join(d.path, "out");
    fs.mkdirSync(out);
    tar(["xzf", archive, "-C", out]);
    expect(listTree(out)).toEqual(listTree(src));
    for (const rel of listTree(src)) {
      const [a, b] = [fs.lstatSync(join(src, rel)), fs.lstatSync(join(out, rel))];
      expect([rel, b.mode]).toEqual([rel, a.mode]);
      if (!a.isSymbolicLink()) expect([rel, Math.floor(b.mtimeMs / 1000)]).toEqual([rel, Math.floor(a.mtimeMs / 1000)]);
      if (a.isFile()) expect(fs.readFileSync(join(out, rel)).equals(fs.readFileSync(join(src, rel)))).toBe(true);
      if (a.isSymbolicLink()) expect(fs.readlinkSync(join(out, rel))).toBe(fs.readlinkSync(join(src, rel)));
    }
  });

  test("the agent's own extractor reads it too", async () => {
    await using d = tempDir();
    const src = join(d.path, "src");
    sampleTree(src);
    const { bytes } = await packBytes(src);
    const out = join(d.path, "out");
    fs.mkdirSync(out);
    const extractor = new TarExtractor(out);
    const ds = new DecompressionStream("gzip");
    const writer = ds.writable.getWriter();
    void writer.write(bytes as Uint8Array<ArrayBuffer>).then(() => writer.close());
    for await (const chunk of ds.readable as unknown as AsyncIterable<Uint8Array>) extractor.write(chunk);
    extractor.end();
    expect(listTree(out)).toEqual(listTree(src));
    expect(fs.readFileSync(join(out, "big.bin")).equals(fs.readFileSync(join(src, "big.bin")))).toBe(true);
  });

  test("the same tree gives the same bytes, even copied elsewhere", async () => {
    await using d = tempDir();
    const src = join(d.path, "src");
    sampleTree(src);
    const copy = join(d.path, "copy");
    expect(Bun.spawnSync(["cp", "-a", src, copy]).exitCode).toBe(0);
    const [a, b, c] = await Promise.all([packBytes(src), packBytes(src), packBytes(copy)]);
    expect(Buffer.from(b.bytes).equals(Buffer.from(a.bytes))).toBe(true);
    expect(Buffer.from(c.bytes).equals(Buffer.from(a.bytes))).toBe(true);
    // A changed mtime is a different tree.
    fs.utimesSync(join(copy, "b.txt"), 1_000_000_001, 1_000_000_001);
    expect((await packBytes(copy)).result.checksum).not.toBe(a.result.checksum);
  });

  test("the worker and the main thread compress to the same bytes", async () => {
    await using d = tempDir();
    sampleTree(d.path);
    const worker = await packBytes(d.path);
    const inline = await packBytes(d.path, { excludes: [] }, { ...OPTS, inline: true });
    expect(Buffer.from(inline.bytes).equals(Buffer.from(worker.bytes))).toBe(true);
    expect(inline.result).toEqual(worker.result);
  });

  test("cancelling the stream stops the pack and rejects its result", async () => {
    await using d = tempDir();
    sampleTree(d.path);
    const packed = packTree(scanTree(d.path, { excludes: [] }), OPTS);
    const reader = packed.stream.getReader();
    await reader.read();
    await reader.cancel(new Error("upload failed"));
    await expect(packed.result).rejects.toThrow("upload failed");
    expect(packed.final).toBeUndefined();
  });

  test.each(["md5", "sha1", "sha512"] as const)("hashes with %s", async (algorithm) => {
    await using d = tempDir();
    writeTree(d.path, { f: "content" });
    const { bytes, result } = await packBytes(d.path, { excludes: [] }, { algorithm, gzipLevel: 6 });
    expect(result.algorithm).toBe(algorithm);
    expect(result.checksum).toBe(new Bun.CryptoHasher(algorithm).update(bytes).digest("hex"));
  });

  test("the gzip level changes the bytes, not the contents", async () => {
    await using d = tempDir();
    writeTree(d.path, { "f.txt": "the quick brown fox jumps over the lazy dog ".repeat(5000) });
    const fast = await packBytes(d.path, { excludes: [] }, { algorithm: "sha256", gzipLevel: 1 });
    const best = await packBytes(d.path, { excludes: [] }, { algorithm: "sha256", gzipLevel: 12 });
    expect(best.bytes.length).toBeLessThan(fast.bytes.length);
    expect(Bun.gunzipSync(fast.bytes as Uint8Array<ArrayBuffer>)).toEqual(
      Bun.gunzipSync(best.bytes as Uint8Array<ArrayBuffer>),
    );
  });

  test("several gzip members (one per MiB) read back as one stream by gzip", async () => {
    await using d = tempDir();
    fs.writeFileSync(
      join(d.path, "big.bin"),
      new Uint8Array(5 * 2 ** 20).map((_, i) => (i * 31) & 0xff),
    );
    const { bytes } = await packBytes(d.path);
    const archive = join(d.path, "..", `${d.path.split("/").pop()}.tgz`);
    fs.writeFileSync(archive, bytes);
    try {
      const r = Bun.spawnSync(["sh", "-c", `gzip -dc '${archive}' | wc -c`], { stdout: "pipe" });
      expect(Number(r.stdout.toString().trim())).toBe(512 + 5 * 2 ** 20 + 1024);
    } finally {
      fs.rmSync(archive);
    }
  });

  test("a file that shrinks while packing fails the pack", async () => {
    await using d = tempDir();
    writeTree(d.path, { "a.txt": "x".repeat(4096) });
    const plan = scanTree(d.path, { excludes: [] });
    fs.truncateSync(join(d.path, "a.txt"), 10);
    const packed = packTree(plan, OPTS);
    await expect(new Response(packed.stream).bytes()).rejects.toThrow(
      "a.txt shrank while packing (expected 4096 bytes)",
    );
    await expect(packed.result).rejects.toThrow(PackError);
  });

  test("a file deleted after the scan is named", async () => {
    await using d = tempDir();
    writeTree(d.path, { "a.txt": "x", "b.txt": "y" });
    const plan = scanTree(d.path, { excludes: [] });
    fs.rmSync(join(d.path, "b.txt"));
    await expect(new Response(packTree(plan, OPTS).stream).bytes()).rejects.toThrow("b.txt: ENOENT");
  });
});
