/**
 * sync_strategy rsync with dest as the extractor's `linkFrom`: files equal to dest's are hard-linked
 * into the temp tree instead of written (rsync's quick check then skips them as before), only when the
 * temp dir is on dest's file system; nothing in dest changes before the sync, whatever fails; a file
 * changed in place after it was linked (by `pre`) makes the deploy extract again without links.
 */
import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import type { DeployOptions } from "../../src/agent/deploy.ts";
import { linkableDir } from "../../src/sync/strategies.ts";
import { deployWithLog, listTree, sha, tempDir, writeTree } from "../support/helpers.ts";

const agent = (manifestUrl: string, tmp: string, over: Partial<DeployOptions> = {}) =>
  deployWithLog(manifestUrl, { env: { PATH: process.env.PATH, TMPDIR: tmp }, ...over });

const FILES = {
  "index.html": "<h1>v1</h1>\n",
  "lib/app.js": "console.log(1)\n",
  "lib/util.js": "export {}\n",
  "bin/run": { mode: 0o755, content: "#!/bin/sh\necho run\n" },
  empty: "",
  link: { symlink: "lib/app.js" },
};

/** An app source dir, and `pack(name, manifestExtra)` to tar it as it is now and write a manifest. */
function app(dir: string) {
  const src = join(dir, "src");
  writeTree(src, FILES);
  const dest = join(dir, "dest");
  const tmp = join(dir, "tmp");
  fs.mkdirSync(tmp);
  const pack = (name: string, extra = "", checksum?: string) => {
    const archive = join(dir, `${name}.tar.gz`);
    const r = Bun.spawnSync(["tar", "czf", archive, "-C", src, "."]);
    if (r.exitCode !== 0) throw new Error(r.stderr.toString());
    fs.writeFileSync(
      join(dir, `${name}.yml`),
      `src: file://${archive}\nchecksum: ${checksum ?? sha(archive)}\ndest: ${dest}\n${extra}`,
    );
    return `file://${dir}/${name}.yml`;
  };
  return { src, dest, tmp, pack };
}

/** Everything rsync and users see of dest: per entry its inode, mode, mtime, size, links and bytes. */
function snapshot(dest: string) {
  return ["", ...listTree(dest)].map((rel) => {
    const p = join(dest, rel);
    const st = fs.lstatSync(p);
    const body = st.isFile() ? fs.readFileSync(p, "utf8") : st.isSymbolicLink() ? `-> ${fs.readlinkSync(p)}` : "";
    return [rel, st.ino, st.mode, st.mtimeMs, st.size, st.nlink, st.uid, st.gid, body];
  });
}

/** `pre` that lists the temp tree's files sharing an inode with another name: `path inode`. */
const listLinked = (tmp: string, out: string) =>
  `find ${tmp} -type f -links +1 -printf '%P %i\\n' | sed 's|^[^/]*/||' | sort > ${out}`;

describe("rsync strategy: unchanged files hard-linked from dest", () => {
  test("a redeploy links unchanged files from dest (same inode), writes the changed one, and dest keeps its inodes", async () => {
    await using d = tempDir();
    const a = app(d.path);
    expect((await agent(a.pack("v1"), a.tmp)).result.ok).toBe(true);
    const ino = (rel: string) => fs.statSync(join(a.dest, rel)).ino;
    const before = Object.fromEntries(
      ["index.html", "lib/app.js", "lib/util.js", "bin/run", "empty"].map((r) => [r, ino(r)]),
    );
    fs.writeFileSync(join(a.src, "lib/util.js"), "export const v = 2\n");
    const out = join(d.path, "linked.txt");
    const { result, log } = await agent(a.pack("v2", `commands:\n  pre: ["${listLinked(a.tmp, out)}"]\n`), a.tmp);
    expect(result.ok).toBe(true);
    expect(log).toContain("4 unchanged files hard-linked");
    expect(log).toContain(`rsync -a --delete ${a.tmp}/`);
    // During pre, the temp tree's unchanged files were dest's inodes.
    expect(fs.readFileSync(out, "utf8")).toBe(
      ["bin/run", "empty", "index.html", "lib/app.js"].map((r) => `${r} ${before[r]}\n`).join(""),
    );
    expect(fs.readFileSync(join(a.dest, "lib/util.js"), "utf8")).toBe("export const v = 2\n");
    for (const r of ["index.html", "lib/app.js", "bin/run", "empty"]) {
      expect(ino(r)).toBe(before[r]!);
      expect(fs.statSync(join(a.dest, r)).nlink).toBe(1);
    }
    expect(fs.readdirSync(a.tmp)).toEqual([]);
    // dest is what tar x + rsync -a would make of v2.
    const check = join(d.path, "check");
    fs.mkdirSync(check);
    Bun.spawnSync(["tar", "xzf", join(d.path, "v2.tar.gz"), "-C", check]);
    expect(Bun.spawnSync(["rsync", "-anic", "--delete", `${check}/`, `${a.dest}/`]).stdout.toString()).toBe("");
  });

  test("a checksum mismatch, a failing pre: dest exactly as it was (bytes, modes, mtimes, inodes, link counts)", async () => {
    await using d = tempDir();
    const a = app(d.path);
    expect((await agent(a.pack("v1"), a.tmp)).result.ok).toBe(true);
    const before = snapshot(a.dest);
    fs.writeFileSync(join(a.src, "index.html"), "<h1>v2</h1>\n");

    const bad = await agent(a.pack("bad", "", "0".repeat(64)), a.tmp);
    expect(bad.result).toMatchObject({ ok: false, phase: "checksum" });
    expect(snapshot(a.dest)).toEqual(before);

    const out = join(d.path, "linked.txt");
    const failing = await agent(a.pack("v2", `commands:\n  pre: ["${listLinked(a.tmp, out)}", "exit 3"]\n`), a.tmp);
    expect(failing.result).toMatchObject({ ok: false, phase: "pre" });
    expect(fs.readFileSync(out, "utf8").trim().split("\n")).toHaveLength(4); // linking did happen
    expect(snapshot(a.dest)).toEqual(before);
    expect(fs.readdirSync(a.tmp)).toEqual([]);
  });

  test("pre writing to and chmod-ing linked dest files in place: extracted again without links, dest gets the archive's", async () => {
    await using d = tempDir();
    const a = app(d.path);
    expect((await agent(a.pack("v1"), a.tmp)).result.ok).toBe(true);
    const pre = `commands:\n  pre: ["printf maintenance > ${a.dest}/index.html", "chmod 600 ${a.dest}/bin/run"]\n`;
    const { result, log } = await agent(a.pack("v2", pre), a.tmp);
    expect(result.ok).toBe(true);
    expect(log).toMatch(
      /fetch: (index\.html|bin\/run) changed in .* after it was hard-linked into the new tree; fetching again without links/,
    );
    expect(fs.readFileSync(join(a.dest, "index.html"), "utf8")).toBe("<h1>v1</h1>\n");
    expect(fs.statSync(join(a.dest, "bin/run")).mode & 0o7777).toBe(0o755);
    const check = join(d.path, "check");
    fs.mkdirSync(check);
    Bun.spawnSync(["tar", "xzf", join(d.path, "v2.tar.gz"), "-C", check]);
    expect(Bun.spawnSync(["rsync", "-anic", "--delete", `${check}/`, `${a.dest}/`]).stdout.toString()).toBe("");
  });

  test("a dest file whose mtime is off by a fraction of a second is written, not linked: the tree is exactly what tar x makes", async () => {
    await using d = tempDir();
    const a = app(d.path);
    expect((await agent(a.pack("v1"), a.tmp)).result.ok).toBe(true);
    const p = join(a.dest, "lib/app.js");
    const t = fs.statSync(p).mtimeMs / 1000;
    fs.utimesSync(p, t + 0.5, t + 0.5);
    const { result, log } = await agent(a.pack("v2"), a.tmp);
    expect(result.ok).toBe(true);
    expect(log).toContain("4 unchanged files hard-linked"); // of 5: not lib/app.js
    // rsync's quick check compares whole seconds: it leaves dest's file, as after tar x + rsync -a.
    expect(fs.statSync(p).mtimeMs).toBe((t + 0.5) * 1000);
    expect(fs.readFileSync(p, "utf8")).toBe("console.log(1)\n");
  });

  test("nothing is linked through a directory of dest that is a symlink; what it points to is left alone", async () => {
    await using d = tempDir();
    const a = app(d.path);
    expect((await agent(a.pack("v1"), a.tmp)).result.ok).toBe(true);
    const elsewhere = join(d.path, "elsewhere");
    fs.renameSync(join(a.dest, "lib"), elsewhere);
    fs.symlinkSync(elsewhere, join(a.dest, "lib"));
    const { result, log } = await agent(a.pack("v2"), a.tmp);
    expect(result.ok).toBe(true);
    expect(log).toContain("3 unchanged files hard-linked"); // index.html, bin/run, empty; not lib/*
    expect(fs.lstatSync(join(a.dest, "lib")).isDirectory()).toBe(true); // rsync -a replaced the symlink
    expect(fs.readFileSync(join(a.dest, "lib/app.js"), "utf8")).toBe("console.log(1)\n");
    expect(fs.statSync(join(elsewhere, "app.js")).nlink).toBe(1);
  });

  test("pre moving dest away (a backup): the first-deploy rename does not put the backup's inodes in dest", async () => {
    await using d = tempDir();
    const a = app(d.path);
    expect((await agent(a.pack("v1"), a.tmp)).result.ok).toBe(true);
    const bak = join(d.path, "dest.bak");
    const { result, log } = await agent(
      a.pack("v2", `commands:\n  pre: ["mv ${a.dest} ${bak}", "mkdir ${a.dest}"]\n`),
      a.tmp,
    );
    expect(result.ok).toBe(true);
    expect(log).toContain("5 unchanged files hard-linked");
    // What rsync -a makes of it: dest's own files, not names of the backup's inodes (an in-place
    // write to dest's file would change the backup's too).
    for (const rel of ["index.html", "lib/app.js", "lib/util.js", "bin/run", "empty"]) {
      expect(fs.statSync(join(a.dest, rel)).ino).not.toBe(fs.statSync(join(bak, rel)).ino);
      expect(fs.statSync(join(bak, rel)).nlink).toBe(1);
    }
  });

  test("linkableDir: dest on the temp dir's file system, missing, not a directory", async () => {
    await using d = tempDir();
    fs.mkdirSync(join(d.path, "tree"));
    fs.mkdirSync(join(d.path, "dest"));
    fs.writeFileSync(join(d.path, "file"), "");
    expect(linkableDir(join(d.path, "dest"), join(d.path, "tree"))).toBe(join(d.path, "dest"));
    expect(linkableDir(join(d.path, "missing"), join(d.path, "tree"))).toBeUndefined();
    expect(linkableDir(join(d.path, "file"), join(d.path, "tree"))).toBeUndefined();
  });
});

describe("rsync strategy: temp dir and dest on different file systems", () => {
  const canMount =
    Bun.spawnSync(["sh", "-c", "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs $d && umount $d && rmdir $d"])
      .exitCode === 0;

  test.skipIf(!canMount)(
    "TMPDIR on a tmpfs: linkableDir says null, nothing is linked, the log says why, dest is right",
    async () => {
      await using d = tempDir();
      const a = app(d.path);
      const tmpfs = join(d.path, "tmpfs");
      fs.mkdirSync(tmpfs);
      expect(Bun.spawnSync(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", tmpfs]).exitCode).toBe(0);
      try {
        expect(linkableDir(d.path, tmpfs)).toBeNull();
        expect((await agent(a.pack("v1"), tmpfs)).result.ok).toBe(true);
        fs.writeFileSync(join(a.src, "lib/util.js"), "export const v = 2\n");
        const { result, log } = await agent(a.pack("v2"), tmpfs);
        expect(result.ok).toBe(true);
        expect(log).toContain("is not on dest's file system: every file is written");
        expect(log).not.toContain("hard-linked");
        expect(fs.readFileSync(join(a.dest, "lib/util.js"), "utf8")).toBe("export const v = 2\n");
        expect(fs.readdirSync(tmpfs)).toEqual([]);
      } finally {
        Bun.spawnSync(["umount", tmpfs]);
      }
    },
  );

  test.skipIf(!canMount)(
    "TMPDIR a bind mount (same st_dev, link() fails with EXDEV): written instead, dest is right",
    async () => {
      await using d = tempDir();
      const a = app(d.path);
      const bind = join(d.path, "bind");
      fs.mkdirSync(bind);
      expect(Bun.spawnSync(["mount", "--bind", a.tmp, bind]).exitCode).toBe(0);
      try {
        expect(fs.statSync(bind).dev).toBe(fs.statSync(d.path).dev);
        expect((await agent(a.pack("v1"), bind)).result.ok).toBe(true);
        fs.writeFileSync(join(a.src, "lib/util.js"), "export const v = 2\n");
        const { result, log } = await agent(a.pack("v2"), bind);
        expect(result.ok).toBe(true);
        expect(log).not.toContain("hard-linked");
        expect(listTree(a.dest)).toEqual([
          "bin/",
          "bin/run",
          "empty",
          "index.html",
          "lib/",
          "lib/app.js",
          "lib/util.js",
          "link",
        ]);
        expect(fs.readFileSync(join(a.dest, "lib/util.js"), "utf8")).toBe("export const v = 2\n");
        expect(fs.readFileSync(join(a.dest, "index.html"), "utf8")).toBe("<h1>v1</h1>\n");
      } finally {
        Bun.spawnSync(["umount", bind]);
      }
    },
  );
});
