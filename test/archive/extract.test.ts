/**
 * The extractor against archives made by GNU tar where it must do what `tar x` does: the `./` entry's
 * mtime on the root, symlink mtimes, and a later entry of a name replacing the earlier one (a new inode, never a
 * truncated shared one: not a hard link's target, not a file linked from a previous release).
 */
import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { DEFAULT_LIMITS, TarExtractor } from "../../src/archive/extract.ts";
import { entryHeaders, padded } from "../../src/archive/tar-header.ts";
import { deploy } from "../../src/agent/deploy.ts";
import { createLogger } from "../../src/log.ts";
import { sha, tempDir, writeTree } from "../support/helpers.ts";

/** GNU tar, failing the test on a non-zero exit. */
function tar(...args: string[]): void {
  const r = Bun.spawnSync(["tar", ...args]);
  if (r.exitCode !== 0) throw new Error(`tar ${args.join(" ")}: ${r.stderr.toString()}`);
}

/** gzip a plain tar made by `tar cf`/`tar rf`, as `tar czf` would have. */
function gzip(plain: string): string {
  fs.writeFileSync(`${plain}.gz`, Bun.gzipSync(fs.readFileSync(plain)));
  return `${plain}.gz`;
}

function extract(archive: string, root: string, linkFrom?: string): TarExtractor {
  fs.mkdirSync(root, { recursive: true, mode: 0o700 });
  const ex = new TarExtractor(root, DEFAULT_LIMITS, linkFrom);
  ex.write(Bun.gunzipSync(fs.readFileSync(archive)));
  ex.end();
  return ex;
}

const read = (p: string) => fs.readFileSync(p, "utf8");
const T0 = 1_600_000_000;

describe("the archive's ./ entry", () => {
  test("gives the root its mtime, after everything inside it; not its mode (the root stays 0700)", async () => {
    await using d = tempDir();
    const src = join(d.path, "src");
    writeTree(src, { "a.txt": "a", "sub/b.txt": "b" });
    fs.chmodSync(src, 0o775);
    fs.utimesSync(src, T0, T0);
    const archive = join(d.path, "app.tar.gz");
    tar("czf", archive, "-C", src, ".");
    const root = join(d.path, "root");
    extract(archive, root);
    expect(fs.statSync(root).mtimeMs).toBe(T0 * 1000);
    expect(fs.statSync(root).mode & 0o7777).toBe(0o700);
    expect(read(join(root, "sub/b.txt"))).toBe("b");
  });

  test("rsync deploys: dest gets the archive's root mtime, so a redeploy leaves dest's own time alone", async () => {
    await using d = tempDir();
    const src = join(d.path, "src");
    writeTree(src, { "index.html": "v1", "lib/app.js": "1" });
    fs.utimesSync(src, T0, T0);
    const archive = join(d.path, "app.tar.gz");
    tar("czf", archive, "-C", src, ".");
    const dest = join(d.path, "dest");
    fs.mkdirSync(dest);
    fs.writeFileSync(join(d.path, "m.yml"), `src: file://${archive}\nchecksum: ${sha(archive)}\ndest: ${dest}\n`);
    const lines: string[] = [];
    const result = await deploy({
      manifestUrl: `file://${d.path}/m.yml`,
      env: { PATH: process.env.PATH, TMPDIR: d.path },
      log: createLogger({ write: (l) => void lines.push(l) }),
      fetch: { retry: 0, retryWaitMs: 10 },
      rsyncVerbose: "",
      limits: DEFAULT_LIMITS,
    });
    expect(result.ok).toBe(true);
    expect(fs.statSync(dest).mtimeMs).toBe(T0 * 1000);
    // What `tar xzf` + `rsync -a` would leave: nothing to itemize, not even `.d..t...... ./`.
    const check = join(d.path, "check");
    fs.mkdirSync(check);
    tar("xzf", archive, "-C", check);
    const drift = Bun.spawnSync(["rsync", "-ani", "--delete", `${check}/`, `${dest}/`]).stdout.toString();
    expect(drift).toBe("");
  });
});

test("a symlink gets the archive's mtime, as with tar x (else rsync -a re-stamps dest's every deploy)", async () => {
  await using d = tempDir();
  const src = join(d.path, "src");
  writeTree(src, { "a.txt": "a", link: { symlink: "a.txt" } });
  fs.lutimesSync(join(src, "link"), T0, T0);
  const archive = join(d.path, "app.tar.gz");
  tar("czf", archive, "-C", src, ".");
  const root = join(d.path, "root");
  extract(archive, root);
  expect(fs.lstatSync(join(root, "link")).mtimeMs).toBe(T0 * 1000);
  expect(fs.readlinkSync(join(root, "link"))).toBe("a.txt");
});

describe("a later entry of the same name replaces the earlier one", () => {
  /** `./a` and its hard link `./b` (tar cf), then `tar rf` appends a regular file `./b`. */
  async function linkThenFile(dir: string): Promise<string> {
    const one = join(dir, "one");
    writeTree(one, { a: "the link target\n" });
    fs.linkSync(join(one, "a"), join(one, "b"));
    const two = join(dir, "two");
    writeTree(two, { b: "a file of its own\n" });
    const plain = join(dir, "app.tar");
    tar("cf", plain, "-C", one, "./a", "./b");
    tar("rf", plain, "-C", two, "./b");
    const listing = Bun.spawnSync(["tar", "tvf", plain]).stdout.toString();
    expect(listing).toContain("./b link to ./a");
    return gzip(plain);
  }

  test("a file after a hard link to another file: the link's target keeps its bytes (as with tar x)", async () => {
    await using d = tempDir();
    const archive = await linkThenFile(d.path);
    const root = join(d.path, "root");
    extract(archive, root);
    const gnu = join(d.path, "gnu");
    fs.mkdirSync(gnu);
    tar("xzf", archive, "-C", gnu);
    expect(read(join(gnu, "a"))).toBe("the link target\n");
    expect(read(join(root, "a"))).toBe("the link target\n");
    expect(read(join(root, "b"))).toBe("a file of its own\n");
    expect(fs.statSync(join(root, "a")).ino).not.toBe(fs.statSync(join(root, "b")).ino);
    expect(fs.statSync(join(root, "a")).nlink).toBe(1);
  });

  test("a file after a file: the later one's mode, not the earlier one's", async () => {
    await using d = tempDir();
    const one = join(d.path, "one");
    writeTree(one, { run: { mode: 0o644, content: "old\n" } });
    const two = join(d.path, "two");
    writeTree(two, { run: { mode: 0o755, content: "#!/bin/sh\n" } });
    const plain = join(d.path, "app.tar");
    tar("cf", plain, "-C", one, "./run");
    tar("rf", plain, "-C", two, "./run");
    const root = join(d.path, "root");
    extract(gzip(plain), root);
    expect(read(join(root, "run"))).toBe("#!/bin/sh\n");
    expect(fs.statSync(join(root, "run")).mode & 0o7777).toBe(0o755);
  });

  /**
   * Release 1 from `one`; release 2's archive holds `./f` unchanged (hard-linked from release 1),
   * then `tar rf` appends `./f` again from `two`, with `second` in it and mtime `mtime`.
   */
  async function releases(dir: string, second: string, mtime: number) {
    const one = join(dir, "one");
    writeTree(one, { f: "release one\n", g: "g\n" });
    fs.utimesSync(join(one, "f"), T0, T0);
    const r1 = join(dir, "r1.tar");
    tar("cf", r1, "-C", one, ".");
    const prev = join(dir, "releases/1");
    extract(gzip(r1), prev);
    const two = join(dir, "two");
    writeTree(two, { f: second });
    fs.utimesSync(join(two, "f"), mtime, mtime);
    const r2 = join(dir, "r2.tar");
    tar("cf", r2, "-C", one, ".");
    tar("rf", r2, "-C", two, "./f");
    return { prev, archive: gzip(r2) };
  }

  test("a file after a file linked from the previous release: written anew, the previous release untouched", async () => {
    await using d = tempDir();
    const { prev, archive } = await releases(d.path, "release two\n", T0 + 1);
    const before = fs.statSync(join(prev, "f"));
    const tree = join(d.path, "releases/2");
    const ex = extract(archive, tree, prev);
    expect(ex.linked).toBeGreaterThanOrEqual(2); // ./f (first entry) and ./g
    expect(read(join(tree, "f"))).toBe("release two\n");
    expect(fs.statSync(join(tree, "f")).mtimeMs).toBe((T0 + 1) * 1000);
    expect(read(join(prev, "f"))).toBe("release one\n");
    const after = fs.statSync(join(prev, "f"));
    expect([after.ino, after.mtimeMs, after.mode, after.nlink]).toEqual([before.ino, before.mtimeMs, before.mode, 1]);
    expect(fs.statSync(join(tree, "g")).ino).toBe(fs.statSync(join(prev, "g")).ino);
    expect(ex.changedLink()).toBeUndefined();
  });

  test("a file after the same file, both equal to the previous release's: linked, not an error", async () => {
    await using d = tempDir();
    const { prev, archive } = await releases(d.path, "release one\n", T0);
    const tree = join(d.path, "releases/2");
    const ex = extract(archive, tree, prev);
    expect(read(join(tree, "f"))).toBe("release one\n");
    expect(fs.statSync(join(tree, "f")).ino).toBe(fs.statSync(join(prev, "f")).ino);
    expect(fs.statSync(join(prev, "f")).nlink).toBe(2);
    expect(ex.linked).toBe(3);
  });
});

describe("linked files changed in place afterwards", () => {
  test("changedLink names a linked file written to or chmod-ed under linkFrom since", async () => {
    await using d = tempDir();
    const src = join(d.path, "src");
    writeTree(src, { "a.txt": "a\n", "b.txt": "b\n" });
    const archive = join(d.path, "app.tar.gz");
    tar("czf", archive, "-C", src, ".");
    const prev = join(d.path, "prev");
    extract(archive, prev);
    const tree = join(d.path, "tree");
    const ex = extract(archive, tree, prev);
    expect(ex.linked).toBe(2);
    expect(ex.changedLink()).toBeUndefined();
    fs.chmodSync(join(prev, "b.txt"), 0o600);
    expect(ex.changedLink()).toBe("b.txt");
    fs.chmodSync(join(prev, "b.txt"), fs.statSync(join(src, "b.txt")).mode & 0o7777);
    expect(ex.changedLink()).toBeUndefined();
    fs.appendFileSync(join(prev, "a.txt"), "more\n");
    expect(ex.changedLink()).toBe("a.txt");
  });
});

describe("a linked file written to while it is compared", () => {
  test("is named by changedLink even without the per-file check, though every byte read matched", async () => {
    await using d = tempDir();
    const src = join(d.path, "src");
    fs.mkdirSync(src);
    fs.writeFileSync(join(src, "big.bin"), Buffer.alloc(200_000, 120));
    fs.utimesSync(join(src, "big.bin"), T0, T0);
    const archive = join(d.path, "app.tar.gz");
    tar("czf", archive, "-C", src, ".");
    const prev = join(d.path, "prev");
    extract(archive, prev);
    const tree = join(d.path, "tree");
    fs.mkdirSync(tree, { mode: 0o700 });
    const ex = new TarExtractor(tree, DEFAULT_LIMITS, prev);
    const plain = Bun.gunzipSync(fs.readFileSync(archive));
    ex.write(plain.subarray(0, 1024 + 100_000)); // "./", the file's header, half its bytes
    // The app rewrites the second half in place with the same bytes: content equal, mtime moved.
    const fd = fs.openSync(join(prev, "big.bin"), "r+");
    fs.writeSync(fd, Buffer.alloc(1000, 120), 0, 1000, 150_000);
    fs.closeSync(fd);
    ex.write(plain.subarray(1024 + 100_000));
    ex.end();
    expect(ex.linked).toBe(1);
    expect(ex.changedLink(false)).toBe("big.bin");
  });
});

describe("a directory entry replaced by a later entry of the same name", () => {
  // end() sets directory modes and mtimes last; it must not do so through whatever replaced the
  // directory: a symlink (chmod follows it out of the tree) or a hard link (the inode may be dest's).
  test("a symlink: its target (outside the tree) keeps its mode and mtime", async () => {
    await using d = tempDir();
    const victim = join(d.path, "victim");
    fs.writeFileSync(victim, "secret\n");
    fs.chmodSync(victim, 0o600);
    fs.utimesSync(victim, T0, T0);
    const one = join(d.path, "one");
    fs.mkdirSync(join(one, "d"), { recursive: true });
    fs.chmodSync(join(one, "d"), 0o777);
    const two = join(d.path, "two");
    fs.mkdirSync(two);
    fs.symlinkSync(victim, join(two, "d"));
    const plain = join(d.path, "app.tar");
    tar("cf", plain, "-C", one, "d");
    tar("rf", plain, "-C", two, "d");
    const root = join(d.path, "root");
    extract(gzip(plain), root);
    expect(fs.readlinkSync(join(root, "d"))).toBe(victim);
    expect(fs.statSync(victim).mode & 0o7777).toBe(0o600);
    expect(fs.statSync(victim).mtimeMs).toBe(T0 * 1000);
  });

  test("a symlink over a parent: the directory below it is not reached through the symlink", async () => {
    await using d = tempDir();
    const outside = join(d.path, "outside");
    fs.mkdirSync(join(outside, "sub"), { recursive: true });
    fs.chmodSync(join(outside, "sub"), 0o700);
    const one = join(d.path, "one");
    fs.mkdirSync(join(one, "d", "sub"), { recursive: true });
    fs.chmodSync(join(one, "d", "sub"), 0o777);
    const two = join(d.path, "two");
    fs.mkdirSync(two);
    fs.symlinkSync(outside, join(two, "d"));
    const plain = join(d.path, "app.tar");
    tar("cf", plain, "-C", one, "d");
    tar("rf", plain, "-C", two, "d");
    const root = join(d.path, "root");
    extract(gzip(plain), root);
    expect(fs.statSync(join(outside, "sub")).mode & 0o7777).toBe(0o700);
  });

  test("a hard link to a file linked from linkFrom: linkFrom's file keeps its mode and mtime", async () => {
    await using d = tempDir();
    const one = join(d.path, "one");
    writeTree(one, { f: "same\n" });
    fs.chmodSync(join(one, "f"), 0o644);
    fs.utimesSync(join(one, "f"), T0, T0);
    fs.mkdirSync(join(one, "d"));
    fs.chmodSync(join(one, "d"), 0o777);
    const two = join(d.path, "two");
    fs.mkdirSync(two);
    fs.copyFileSync(join(one, "f"), join(two, "f"));
    fs.chmodSync(join(two, "f"), 0o644);
    fs.utimesSync(join(two, "f"), T0, T0);
    fs.linkSync(join(two, "f"), join(two, "d"));
    const plain = join(d.path, "app.tar");
    tar("cf", plain, "-C", one, "f", "d");
    tar("rf", plain, "-C", two, "f", "d");
    const prev = join(d.path, "prev");
    writeTree(prev, { f: "same\n" });
    fs.chmodSync(join(prev, "f"), 0o644);
    fs.utimesSync(join(prev, "f"), T0, T0);
    const root = join(d.path, "root");
    const ex = extract(gzip(plain), root, prev);
    expect(ex.linked).toBeGreaterThan(0);
    expect(fs.statSync(join(prev, "f")).mode & 0o7777).toBe(0o644);
    expect(fs.statSync(join(prev, "f")).mtimeMs).toBe(T0 * 1000);
    expect(fs.statSync(join(root, "d")).mode & 0o7777).toBe(0o644);
  });
});

describe("times before 1970 (the packer writes them as pax mtime records)", () => {
  const OLD = -86_400 * 365 * 20 - 7; // 1950, not on a second boundary of "now"
  /** The packer's own headers: `./`, `d/`, `d/f`, `d/l` → f, all dated `OLD`. */
  function oldArchive(): Uint8Array {
    const e = (path: string, type: "file" | "dir" | "symlink", data = "", linkname = "") => {
      const body = new TextEncoder().encode(data);
      const blocks = new Uint8Array(padded(body.length));
      blocks.set(body);
      return [
        entryHeaders({ path, type, mode: type === "dir" ? 0o755 : 0o644, mtime: OLD, size: body.length, linkname }),
        blocks,
      ];
    };
    const parts = [
      ...e(".", "dir"),
      ...e("d", "dir"),
      ...e("d/f", "file", "old bytes\n"),
      ...e("d/l", "symlink", "", "f"),
      new Uint8Array(1024),
    ];
    return Buffer.concat(parts);
  }

  test("files, directories, symlinks and the root keep them (not the time of extraction)", async () => {
    await using d = tempDir();
    const root = join(d.path, "root");
    fs.mkdirSync(root, { mode: 0o700 });
    const ex = new TarExtractor(root, DEFAULT_LIMITS);
    ex.write(oldArchive());
    ex.end();
    for (const p of ["", "d", "d/f", "d/l"]) expect([p, fs.lstatSync(join(root, p)).mtimeMs]).toEqual([p, OLD * 1000]);
    expect(read(join(root, "d/f"))).toBe("old bytes\n");
  });

  test("so link-dest recognises the unchanged file and links it", async () => {
    await using d = tempDir();
    const [one, two] = [join(d.path, "one"), join(d.path, "two")];
    for (const [dir, from] of [
      [one, undefined],
      [two, one],
    ] as const) {
      fs.mkdirSync(dir, { mode: 0o700 });
      const ex = new TarExtractor(dir, DEFAULT_LIMITS, from);
      ex.write(oldArchive());
      ex.end();
      if (from !== undefined) expect(ex.linked).toBe(1);
    }
    expect(fs.statSync(join(two, "d/f")).ino).toBe(fs.statSync(join(one, "d/f")).ino);
  });
});

test("a file entry over an earlier directory entry: one line naming the entry, not a bare EISDIR", async () => {
  await using d = tempDir();
  const root = join(d.path, "root");
  fs.mkdirSync(root, { mode: 0o700 });
  const e = (path: string, type: "file" | "dir") =>
    entryHeaders({ path, type, mode: 0o644, mtime: T0, size: 0, linkname: "" });
  const ex = new TarExtractor(root, DEFAULT_LIMITS);
  expect(() =>
    ex.write(Buffer.concat([e("a", "dir"), e("a/x", "file"), e("a", "file"), new Uint8Array(1024)])),
  ).toThrow("file entry where an earlier entry made a directory: a");
  ex.abort();
  expect(fs.readdirSync(join(root, "a"))).toEqual(["x"]);
});
