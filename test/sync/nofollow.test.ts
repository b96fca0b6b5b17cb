/**
 * nofollow.ts (root's walk under a dest another user may change) and the extractor's link-dest
 * accounting, in process: real directories, real symlinks and hard links, and the real app user
 * (setpriv) where a run without root is the point.
 */
import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { DEFAULT_LIMITS, TarExtractor } from "../../src/archive/extract.ts";
import { hardlinksProtected } from "../../src/archive/link-dest.ts";
import {
  checkDest,
  onlyRootCanChange,
  openDir,
  removeEntry,
  untrustedLink,
  writableByOthers,
} from "../../src/sync/nofollow.ts";
import { sweepTempTrees } from "../../src/sync/strategies.ts";
import { appUser } from "../support/app-user.ts";
import { listTree, ROOT, tempDir, writeTree } from "../support/helpers.ts";

const APP = appUser();
if (process.getuid?.() === 0 && APP === undefined)
  throw new Error("nofollow.test: running as root but the pulldeploy-app user is missing: run scripts/setup.sh");

function victimDir(d: string) {
  const v = join(d, "victim");
  writeTree(v, { f: "victim", "sub/g": "victim g" });
  return {
    path: v,
    state: () =>
      listTree(v).map((r) => `${r} ${fs.lstatSync(join(v, r)).mode.toString(8)} ${fs.lstatSync(join(v, r)).nlink}`),
  };
}

/** Extract the tar at `archive` into `root` (made 0700), hard-linking from `linkFrom`, other names in `peers`. */
/**
 * Files of the app's user in the archive (so, extracted as root, in each release): the app could hard-link
 * them anywhere, so every other name must be accounted for. A root-owned file needs no accounting where
 * fs.protected_hardlinks is 1 (see "names only root can have made" below).
 */
function appOwned(src: string, files: string[]) {
  for (const f of files) fs.chownSync(join(src, f), APP!.uid, APP!.gid);
}

function extractWith(archive: string) {
  return (root: string, linkFrom?: string, peers?: string[]) => {
    fs.mkdirSync(root, { recursive: true, mode: 0o700 });
    const ex = new TarExtractor(root, DEFAULT_LIMITS, linkFrom, peers);
    ex.write(fs.readFileSync(archive));
    ex.end();
    return ex;
  };
}

describe("removeEntry: rm -rf that never follows a link", () => {
  test("symlinks to a directory and a file outside, nested 0555 directories: the tree goes, what the links point to stays", async () => {
    await using d = tempDir();
    const v = victimDir(d.path);
    const before = v.state();
    const tree = join(d.path, "tree");
    writeTree(tree, {
      "a/b/c": "x",
      "a/link-dir": { symlink: v.path },
      "a/link-file": { symlink: join(v.path, "f") },
      "go/mod/m.go": "m",
    });
    fs.chmodSync(join(tree, "go/mod"), 0o555);
    fs.chmodSync(join(tree, "go"), 0o555);
    const parent = openDir(d.path)!;
    try {
      removeEntry(parent, "tree");
      removeEntry(parent, "missing"); // nothing to do
    } finally {
      parent.close();
    }
    expect(fs.existsSync(tree)).toBe(false);
    expect(v.state()).toEqual(before);
  });

  test("a symlink given as the entry is unlinked, not entered", async () => {
    await using d = tempDir();
    const v = victimDir(d.path);
    const before = v.state();
    fs.symlinkSync(v.path, join(d.path, "rel"));
    const parent = openDir(d.path)!;
    removeEntry(parent, "rel");
    parent.close();
    expect(fs.existsSync(join(d.path, "rel"))).toBe(false);
    expect(v.state()).toEqual(before);
  });

  test("as an unprivileged user (no CAP_DAC_OVERRIDE), its own 0555 directories are made writable and removed", async () => {
    if (process.getuid?.() !== 0) return; // as the test's own user this is the plain case above
    await using d = tempDir();
    fs.chmodSync(d.path, 0o777);
    const tree = join(d.path, "tree");
    writeTree(tree, { "go/pkg/mod/m.go": "m", "go/pkg/x": "x" });
    for (const p of ["go/pkg/mod", "go/pkg", "go"]) fs.chmodSync(join(tree, p), 0o555);
    Bun.spawnSync(["chown", "-R", `${APP!.uid}:${APP!.gid}`, tree]);
    const script =
      `import { openDir, removeEntry } from ${JSON.stringify(join(ROOT, "src/sync/nofollow.ts"))}; const p = ` +
      `openDir(${JSON.stringify(d.path)}); removeEntry(p, "tree");`;
    // Control: plain rm -r as that user cannot (the point of the chmod).
    const plain = Bun.spawnSync([
      "setpriv",
      "--reuid",
      APP!.name,
      "--regid",
      APP!.name,
      "--clear-groups",
      "rm",
      "-r",
      join(tree, "go/pkg/mod"),
    ]);
    expect(plain.exitCode).not.toBe(0);
    const r = Bun.spawnSync(
      ["setpriv", "--reuid", APP!.name, "--regid", APP!.name, "--clear-groups", process.execPath, "-e", script],
      { env: { PATH: process.env.PATH } },
    );
    expect(r.stderr.toString()).toBe("");
    expect(r.exitCode).toBe(0);
    expect(fs.existsSync(tree)).toBe(false);
  });
});

describe("openDir pins a directory: its path may change, its entries may not be redirected", () => {
  test("a symlink, a file: refused in one line naming what it is; missing: undefined", async () => {
    await using d = tempDir();
    fs.symlinkSync("/etc", join(d.path, "l"));
    fs.writeFileSync(join(d.path, "f"), "");
    expect(() => openDir(join(d.path, "l"))).toThrow(
      /l is a symlink \(to \/etc\), not a directory: refusing to follow it as root; remove it/,
    );
    expect(() => openDir(join(d.path, "f"))).toThrow(/f is a file, not a directory/);
    expect(openDir(join(d.path, "none"))).toBeUndefined();
  });

  test("after the path is swapped for a symlink to a victim, writes through the opened dir still land in the real one", async () => {
    await using d = tempDir();
    const v = victimDir(d.path);
    const before = v.state();
    fs.mkdirSync(join(d.path, "releases"));
    const dir = openDir(join(d.path, "releases"))!;
    try {
      fs.renameSync(join(d.path, "releases"), join(d.path, "moved"));
      fs.symlinkSync(v.path, join(d.path, "releases"));
      fs.writeFileSync(dir.at("new"), "x");
      removeEntry(dir, "new");
      fs.writeFileSync(dir.at("kept"), "y");
    } finally {
      dir.close();
    }
    expect(fs.readdirSync(join(d.path, "moved"))).toEqual(["kept"]);
    expect(v.state()).toEqual(before);
  });
});

describe("who else could change dest", () => {
  test("writableByOthers and checkDest's warning; untrustedLink", async () => {
    await using d = tempDir();
    const mine = join(d.path, "mine");
    fs.mkdirSync(mine, { mode: 0o755 });
    if (process.getuid?.() === 0) {
      expect(writableByOthers(mine)).toBeUndefined();
      expect(checkDest(mine)).toBeUndefined();
      fs.chownSync(mine, APP!.uid, APP!.gid);
      expect(writableByOthers(join(mine, "app"))).toBe(`${mine} is owned by uid ${APP!.uid}`);
      expect(checkDest(join(mine, "app"))).toMatch(/^sync: warning: .* is owned by uid \d+: another user can change/);
      fs.symlinkSync("/etc", join(mine, "dest"));
      expect(untrustedLink(join(mine, "dest"))).toBe(`${mine} is owned by uid ${APP!.uid}`);
      expect(() => checkDest(join(mine, "dest"))).toThrow(
        /is a symlink \(to \/etc\) and .* is owned by uid \d+: refusing to follow it as root; set dest in the manifest to the real path/,
      );
    }
    const open = join(d.path, "open");
    fs.mkdirSync(open);
    fs.chmodSync(open, 0o777);
    expect(writableByOthers(join(open, "app"))).toBe(`${open} is writable by its group or others (mode 777)`);
    fs.chmodSync(open, 0o1777); // sticky, as /tmp: others can't replace what is ours in it
    expect(writableByOthers(join(open, "app"))).toBeUndefined();
    fs.symlinkSync(d.path, join(open, "dest"));
    expect(untrustedLink(join(open, "dest"))).toBeUndefined();
  });
});

describe("onlyRootCanChange: when extraction may use plain paths instead of pinned ones", () => {
  test("a root-only chain; the app's dir on the way; a root symlink into the app's dir", async () => {
    if (process.getuid?.() !== 0) return; // ownership by root is the point
    await using d = tempDir();
    fs.chmodSync(d.path, 0o755);
    const rootOnly = join(d.path, "root/app/releases");
    fs.mkdirSync(rootOnly, { recursive: true, mode: 0o755 });
    expect(onlyRootCanChange(rootOnly)).toBe(true);
    const apps = join(d.path, "apps");
    fs.mkdirSync(join(apps, "app/releases"), { recursive: true, mode: 0o755 });
    fs.chownSync(join(apps, "app"), APP!.uid, APP!.gid);
    expect(onlyRootCanChange(join(apps, "app/releases"))).toBe(false);
    fs.symlinkSync(join(apps, "app"), join(d.path, "root/linked")); // root's link, into the app's dir
    expect(onlyRootCanChange(join(d.path, "root/linked/releases"))).toBe(false);
  });
});

describe("sweepTempTrees", () => {
  test("only pulldeploy-<dead pid>-XXXXXX directories of ours; not live pids, not other names, not symlinks", async () => {
    await using d = tempDir();
    const v = victimDir(d.path);
    const before = v.state();
    const tmp = join(d.path, "tmp");
    writeTree(tmp, {
      "pulldeploy-100-abcdef/x": "1",
      "pulldeploy-200-abcdef/x": "1",
      "pulldeploy-abcdef/x": "old style, no pid",
      "other-100-abcdef/x": "1",
    });
    fs.symlinkSync(v.path, join(tmp, "pulldeploy-100-linkxx"));
    const removed = sweepTempTrees({ TMPDIR: tmp }, (pid) => pid === 200);
    expect(removed).toEqual([join(tmp, "pulldeploy-100-abcdef")]);
    expect(fs.readdirSync(tmp).sort()).toEqual([
      "other-100-abcdef",
      "pulldeploy-100-linkxx",
      "pulldeploy-200-abcdef",
      "pulldeploy-abcdef",
    ]);
    expect(v.state()).toEqual(before);
  });
});

describe("link-dest accounting: a file is linked only when every name of its inode is one the agent made", () => {
  const T = 1_650_000_000;
  function setup(d: string) {
    const src = join(d, "src");
    writeTree(src, { "lib/a.js": "same bytes" });
    fs.utimesSync(join(src, "lib/a.js"), T, T);
    appOwned(src, ["lib/a.js"]);
    const archive = join(d, "app.tar");
    const r = Bun.spawnSync(["tar", "cf", archive, "-C", src, "."]);
    if (r.exitCode !== 0) throw new Error(r.stderr.toString());
    return extractWith(archive);
  }

  test("linked into two releases before (nlink 3): linked again when the peers are given, not without", async () => {
    await using d = tempDir();
    const extract = setup(d.path);
    const releases = join(d.path, "releases");
    extract(join(releases, "r1"));
    expect(extract(join(releases, "r2"), join(releases, "r1")).linked).toBe(1);
    const peers = ["r1", "r2"].map((r) => join(releases, r));
    expect(extract(join(releases, "r3"), join(releases, "r2"), peers).linked).toBe(1);
    expect(fs.statSync(join(releases, "r3/lib/a.js")).nlink).toBe(3);
    // Without the peers (the rsync strategy's dest): an inode with another name is not vouched for.
    expect(extract(join(d.path, "x"), join(releases, "r3")).linked).toBe(0);
  });

  test("an extra name outside the releases (a hard link the app made to an equal file): written, not linked", async () => {
    await using d = tempDir();
    const extract = setup(d.path);
    const releases = join(d.path, "releases");
    extract(join(releases, "r1"));
    fs.linkSync(join(releases, "r1/lib/a.js"), join(d.path, "outside"));
    const ex = extract(join(releases, "r2"), join(releases, "r1"), [join(releases, "r1")]);
    expect(ex.linked).toBe(0);
    expect(fs.statSync(join(releases, "r2/lib/a.js")).nlink).toBe(1);
    expect(fs.statSync(join(d.path, "outside")).nlink).toBe(2);
  });

  test("a second release aliasing the first's directory through a symlink does not count twice", async () => {
    await using d = tempDir();
    const extract = setup(d.path);
    const releases = join(d.path, "releases");
    extract(join(releases, "r1"));
    fs.linkSync(join(releases, "r1/lib/a.js"), join(d.path, "outside")); // nlink 2: one name unaccounted for
    fs.mkdirSync(join(releases, "r0"));
    fs.symlinkSync(join(releases, "r1/lib"), join(releases, "r0/lib")); // tries to account for it
    const ex = extract(join(releases, "r2"), join(releases, "r1"), [join(releases, "r0"), join(releases, "r1")]);
    expect(ex.linked).toBe(0);
  });
});

describe("link-dest: names only root can have made need no accounting", () => {
  const T = 1_650_000_000;
  function setup(d: string, mode: number) {
    const src = join(d, "src");
    writeTree(src, { "lib/a.js": { mode, content: "same bytes" } });
    fs.chmodSync(join(src, "lib/a.js"), mode);
    fs.utimesSync(join(src, "lib/a.js"), T, T);
    const archive = join(d, "app.tar");
    const r = Bun.spawnSync(["tar", "cf", archive, "-C", src, "."]);
    if (r.exitCode !== 0) throw new Error(r.stderr.toString());
    return extractWith(archive);
  }
  // Where the kernel lets anyone hard-link what they can see, a root-owned file is accounted for too.
  const shortcut = hardlinksProtected() ? 1 : 0;

  test("root's file, writable by root alone, with another name root made outside the releases: linked", async () => {
    await using d = tempDir();
    const extract = setup(d.path, 0o644);
    const rel = (r: string) => join(d.path, "releases", r);
    extract(rel("r1"));
    fs.linkSync(join(rel("r1"), "lib/a.js"), join(d.path, "backup")); // a root process's (say, a backup's)
    expect(extract(rel("r2"), rel("r1"), [rel("r1")]).linked).toBe(shortcut);
    expect(fs.statSync(join(rel("r2"), "lib/a.js")).nlink).toBe(shortcut ? 3 : 1);
  });

  test("the same file writable by its group: every name accounted for, so the outside one means written", async () => {
    await using d = tempDir();
    const extract = setup(d.path, 0o664);
    const rel = (r: string) => join(d.path, "releases", r);
    extract(rel("r1"));
    expect(fs.statSync(join(rel("r1"), "lib/a.js")).mode & 0o777).toBe(0o664);
    expect(extract(rel("r2"), rel("r1"), [rel("r1")]).linked).toBe(1); // nlink 2: no other name
    fs.linkSync(join(rel("r1"), "lib/a.js"), join(d.path, "outside"));
    const ex = extract(rel("r3"), rel("r2"), [rel("r1"), rel("r2")]);
    expect(ex.linked).toBe(0);
    expect(fs.statSync(join(rel("r3"), "lib/a.js")).nlink).toBe(1);
  });

  test("root's file in a directory the app owns in the previous release (a name it could have moved there): accounted for", async () => {
    await using d = tempDir();
    const extract = setup(d.path, 0o644);
    const rel = (r: string) => join(d.path, "releases", r);
    extract(rel("r1"));
    fs.linkSync(join(rel("r1"), "lib/a.js"), join(d.path, "outside"));
    fs.chownSync(join(rel("r1"), "lib"), APP!.uid, APP!.gid);
    const ex = extract(rel("r2"), rel("r1"), [rel("r1")]);
    expect(ex.linked).toBe(0);
    expect(fs.statSync(join(rel("r2"), "lib/a.js")).nlink).toBe(1);
  });
});

describe("link-dest accounting across the peers' directories (each opened once, never through a symlink)", () => {
  const T = 1_650_000_000;
  const FILES = ["top.js", "a/x.js", "a/b/y.js", "a/b/c/z.js", "a/d/w.js", "e/v.js"];
  function setup(d: string) {
    const src = join(d, "src");
    writeTree(src, Object.fromEntries(FILES.map((f) => [f, `bytes of ${f}`])));
    for (const f of FILES) fs.utimesSync(join(src, f), T, T);
    appOwned(src, FILES);
    const archive = join(d, "app.tar");
    const r = Bun.spawnSync(["tar", "cf", archive, "-C", src, "."]);
    if (r.exitCode !== 0) throw new Error(r.stderr.toString());
    return extractWith(archive);
  }

  test("files in nested and sibling directories, one directory gone from a peer: each name counted once", async () => {
    await using d = tempDir();
    const extract = setup(d.path);
    const rel = (r: string) => join(d.path, "releases", r);
    extract(rel("r1"));
    expect(extract(rel("r2"), rel("r1")).linked).toBe(FILES.length);
    expect(extract(rel("r3"), rel("r2"), [rel("r1"), rel("r2")]).linked).toBe(FILES.length);
    for (const f of FILES) expect(fs.statSync(join(rel("r3"), f)).nlink).toBe(3);
    // r1 loses a/b (and so its names of y.js and z.js): those two now have names in r2 and r3 only.
    fs.rmSync(join(rel("r1"), "a/b"), { recursive: true });
    const ex = extract(rel("r4"), rel("r3"), [rel("r1"), rel("r2"), rel("r3")]);
    expect(ex.linked).toBe(FILES.length);
    expect(fs.statSync(join(rel("r4"), "a/b/c/z.js")).nlink).toBe(3);
    expect(fs.statSync(join(rel("r4"), "a/x.js")).nlink).toBe(4);
  });

  test("a directory's files listed after its subdirectories' (a parent returned to): every name still found in each peer", async () => {
    await using d = tempDir();
    const src = join(d.path, "src");
    const order = ["a", "a/b", "a/b/y.js", "a/b/c", "a/b/c/z.js", "a/x.js", "a/d", "a/d/w.js", "a/v.js", "top.js"];
    const files = order.filter((f) => f.endsWith(".js"));
    writeTree(src, Object.fromEntries(files.map((f) => [f, `bytes of ${f}`])));
    for (const f of files) fs.utimesSync(join(src, f), T, T);
    appOwned(src, files);
    const archive = join(d.path, "app.tar");
    const r = Bun.spawnSync(["tar", "cf", archive, "-C", src, "--no-recursion", ...order]);
    if (r.exitCode !== 0) throw new Error(r.stderr.toString());
    const rel = (id: string) => join(d.path, "releases", id);
    const extract = extractWith(archive);
    extract(rel("r1"));
    const ids = ["r1", "r2", "r3", "r4", "r5"];
    for (let i = 1; i < ids.length; i++) {
      const ex = extract(rel(ids[i]!), rel(ids[i - 1]!), ids.slice(0, i).map(rel));
      expect(ex.linked).toBe(files.length);
    }
    for (const f of files) expect(fs.statSync(join(rel("r5"), f)).nlink).toBe(5);
  });

  test("peers whose directories the app owns (looked up through their descriptors): linked; a symlink planted there is not followed", async () => {
    await using d = tempDir();
    const extract = setup(d.path);
    const rel = (r: string) => join(d.path, "releases", r);
    extract(rel("r1"));
    expect(extract(rel("r2"), rel("r1")).linked).toBe(FILES.length);
    for (const dir of ["a", "a/b", "a/b/c", "a/d", "e"]) fs.chownSync(join(rel("r1"), dir), APP!.uid, APP!.gid);
    fs.chownSync(rel("r2"), APP!.uid, APP!.gid); // its root too: every lookup below it through a descriptor
    expect(extract(rel("r3"), rel("r2"), [rel("r1"), rel("r2")]).linked).toBe(FILES.length);
    for (const f of FILES) expect(fs.statSync(join(rel("r3"), f)).nlink).toBe(3);
    // What the app could do in a directory it owns (done here as root: the test's temp dir is root's
    // 0700 and the file root's): move r1's a/b aside, plant an outside name of r3's y.js in a look-alike
    // tree and point r1's a/b there. That name is not one of r1's, so y.js (nlink 4 now) is written; so
    // is z.js, whose r1 name moved out with a/b.
    const outside = join(d.path, "outside");
    fs.mkdirSync(join(outside, "b"), { recursive: true });
    fs.renameSync(join(rel("r1"), "a/b"), join(outside, "b-r1"));
    fs.linkSync(join(rel("r3"), "a/b/y.js"), join(outside, "b/y.js"));
    fs.symlinkSync(join(outside, "b"), join(rel("r1"), "a/b"));
    const ex = extract(rel("r4"), rel("r3"), [rel("r1"), rel("r2"), rel("r3")]);
    expect(ex.linked).toBe(FILES.length - 2);
    expect(fs.statSync(join(rel("r4"), "a/b/y.js")).nlink).toBe(1);
    expect(fs.statSync(join(rel("r4"), "a/b/c/z.js")).nlink).toBe(1);
    expect(fs.readFileSync(join(rel("r4"), "a/b/y.js"), "utf8")).toBe("bytes of a/b/y.js");
    expect(fs.statSync(join(rel("r4"), "a/x.js")).nlink).toBe(4);
  });

  test("a planted name reached through a symlinked directory deeper in a peer is not counted", async () => {
    await using d = tempDir();
    const extract = setup(d.path);
    const rel = (r: string) => join(d.path, "releases", r);
    extract(rel("r1"));
    // An outside name of r1's a/b/y.js, in a directory laid out like the release's (outside/b/y.js)...
    const outside = join(d.path, "outside");
    fs.mkdirSync(join(outside, "b"), { recursive: true });
    fs.linkSync(join(rel("r1"), "a/b/y.js"), join(outside, "b/y.js"));
    // ...and a peer whose `a` points there, so that peer/a/b/y.js is that outside name.
    fs.mkdirSync(rel("r0"));
    fs.symlinkSync(outside, join(rel("r0"), "a"));
    const ex = extract(rel("r2"), rel("r1"), [rel("r0"), rel("r1")]);
    expect(ex.linked).toBe(FILES.length - 1);
    expect(fs.statSync(join(rel("r2"), "a/b/y.js")).nlink).toBe(1);
    expect(fs.readFileSync(join(rel("r2"), "a/b/y.js"), "utf8")).toBe("bytes of a/b/y.js");
    expect(fs.statSync(join(outside, "b/y.js")).nlink).toBe(2);
  });
});
