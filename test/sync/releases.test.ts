/**
 * sync_strategy: release with real tar archives and file systems: atomic switch, hard links,
 * keep_releases, shared_paths, validate auto-revert, switching to a release already on disk.
 */
import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { listReleases, releasePaths } from "../../src/sync/releases.ts";
import { appRelease, deployWithLog, httpServer, tempDir, waitFor } from "../support/helpers.ts";

const agent = deployWithLog;

/** An app of `n` files whose contents say `version`, except those listed in `changed`. */
function app(version: string, n = 50, changedTo: Record<string, string> = {}) {
  const files: Record<string, string> = {};
  for (let i = 0; i < n; i++) files[`lib/f${i}.txt`] = `file ${i}\n`;
  files.VERSION = version;
  files["a.txt"] = `a ${version}`;
  files["b.txt"] = `b ${version}`;
  return { ...files, ...changedTo };
}

/** Publish app `files` as release `id` into `dir`; returns the manifest URL. */
function release(dir: string, dest: string, id: string, files: Record<string, string>, extra = "") {
  const store = join(dir, `store-${id}`);
  fs.mkdirSync(store, { recursive: true });
  const rel = appRelease(
    store,
    files,
    (a) =>
      `src: file://${a.path}\nchecksum: ${a.sha256}\ndest: ${dest}\nsync_strategy: release\nrelease_id: ` +
      `${id}\n${extra}`,
  );
  return rel.manifestUrl;
}

describe("sync_strategy: release", () => {
  test("first deploy: current -> releases/<id>, all files there", async () => {
    await using d = tempDir();
    const dest = join(d.path, "app");
    const { result } = await agent(release(d.path, dest, "r1", app("1")));
    expect(result).toMatchObject({ ok: true, releaseId: "r1" });
    expect(fs.readlinkSync(join(dest, "current"))).toBe("releases/r1");
    expect(fs.readFileSync(join(dest, "current/VERSION"), "utf8")).toBe("1");
    expect(fs.readdirSync(join(dest, "releases")).sort()).toEqual([".order", "r1"]);
  });

  test("hooks get PULLDEPLOY_RELEASE_ID, PULLDEPLOY_RELEASE_DIR and PULLDEPLOY_PREVIOUS_RELEASE", async () => {
    await using d = tempDir();
    const dest = join(d.path, "app");
    const out = join(d.path, "env.txt");
    const hooks =
      `commands:\n  post: ["echo $PULLDEPLOY_RELEASE_ID $PULLDEPLOY_RELEASE_DIR $PULLDEPLOY_PREVIOUS_RELEASE >> ` +
      `${out}; echo $(cat $PULLDEPLOY_RELEASE_DIR/VERSION) >> ${out}"]\n`;
    await agent(release(d.path, dest, "r1", app("1"), hooks));
    const { result } = await agent(release(d.path, dest, "r2", app("2"), hooks));
    expect(result.ok).toBe(true);
    expect(fs.readFileSync(out, "utf8").split("\n")).toEqual([
      `r1 ${dest}/releases/r1`,
      "1",
      `r2 ${dest}/releases/r2 r1`,
      "2",
      "",
    ]);
  });

  test("a redeploy hard-links unchanged files from the previous release (same inode) and writes only the changed", async () => {
    await using d = tempDir();
    const dest = join(d.path, "app");
    await agent(release(d.path, dest, "r1", app("1")));
    // Keep mtimes equal for unchanged files: the second tree is a copy of the first, with one file changed.
    const src2 = join(d.path, "store-r2", "app-src");
    fs.mkdirSync(join(d.path, "store-r2"), { recursive: true });
    Bun.spawnSync(["cp", "-a", join(d.path, "store-r1", "app-src"), src2]);
    fs.writeFileSync(join(src2, "lib/f3.txt"), "changed\n");
    Bun.spawnSync(["tar", "czf", join(d.path, "store-r2/app.tar.gz"), "-C", src2, "."]);
    const sum = new Bun.CryptoHasher("sha256")
      .update(fs.readFileSync(join(d.path, "store-r2/app.tar.gz")))
      .digest("hex");
    fs.writeFileSync(
      join(d.path, "store-r2/app.yml"),
      `src: file://${d.path}/store-r2/app.tar.gz\nchecksum: ${sum}\ndest: ${dest}\nsync_strategy: ` +
        `release\nrelease_id: r2\n`,
    );
    const { result, log } = await agent(`file://${d.path}/store-r2/app.yml`);
    expect(result.ok).toBe(true);
    expect(log).toMatch(/52 unchanged files hard-linked/);
    const ino = (r: string, f: string) => fs.statSync(join(dest, "releases", r, f)).ino;
    expect(ino("r2", "lib/f0.txt")).toBe(ino("r1", "lib/f0.txt"));
    expect(ino("r2", "VERSION")).toBe(ino("r1", "VERSION"));
    expect(ino("r2", "lib/f3.txt")).not.toBe(ino("r1", "lib/f3.txt"));
    expect(fs.readFileSync(join(dest, "current/lib/f3.txt"), "utf8")).toBe("changed\n");
    expect(fs.readFileSync(join(dest, "releases/r1/lib/f3.txt"), "utf8")).toBe("file 3\n");
  });

  test("same size and mtime but other bytes: written, not linked (content is compared, not trusted)", async () => {
    await using d = tempDir();
    const dest = join(d.path, "app");
    const mk = (id: string, content: string) => {
      const store = join(d.path, `s-${id}`);
      const rel = appRelease(store, { "conf.txt": content, "same.txt": "same" }, () => "");
      const t = new Date("2026-01-01T00:00:00Z");
      for (const f of ["conf.txt", "same.txt", "."]) fs.utimesSync(join(store, "app-src", f), t, t);
      Bun.spawnSync(["tar", "czf", rel.archive, "-C", join(store, "app-src"), "."]);
      const sum = new Bun.CryptoHasher("sha256").update(fs.readFileSync(rel.archive)).digest("hex");
      fs.writeFileSync(
        rel.manifestPath,
        `src: file://${rel.archive}\nchecksum: ${sum}\ndest: ${dest}\nsync_strategy: release\nrelease_id: ${id}\n`,
      );
      return rel.manifestUrl;
    };
    expect((await agent(mk("r1", "value=1"))).result.ok).toBe(true);
    const { result, log } = await agent(mk("r2", "value=2"));
    expect(result.ok).toBe(true);
    expect(log).toContain("1 unchanged files hard-linked");
    expect(fs.readFileSync(join(dest, "current/conf.txt"), "utf8")).toBe("value=2");
    expect(fs.readFileSync(join(dest, "releases/r1/conf.txt"), "utf8")).toBe("value=1");
    expect(fs.statSync(join(dest, "releases/r2/same.txt")).ino).toBe(
      fs.statSync(join(dest, "releases/r1/same.txt")).ino,
    );
  });

  test("keep_releases prunes the oldest, never current or the previous one", async () => {
    await using d = tempDir();
    const dest = join(d.path, "app");
    for (const v of ["1", "2", "3", "4"])
      expect((await agent(release(d.path, dest, `r${v}`, app(v, 3), "keep_releases: 2\n"))).result.ok).toBe(true);
    expect(listReleases(releasePaths(dest))).toEqual(["r3", "r4"]);
    // Roll back by hand to r3, then deploy r5: r3 (current before) and r5 stay, r4 (abandoned) goes first.
    const { result } = await agent(release(d.path, dest, "r5", app("5", 3), "keep_releases: 2\n"));
    expect(result.ok).toBe(true);
    expect(listReleases(releasePaths(dest))).toEqual(["r4", "r5"]);
  });

  test("shared_paths are symlinks into <dest>/shared that outlive releases", async () => {
    await using d = tempDir();
    const dest = join(d.path, "app");
    await agent(release(d.path, dest, "r1", { ...app("1", 2), "log/.keep": "" }, "shared_paths: [log, tmp/pids]\n"));
    expect(fs.readlinkSync(join(dest, "releases/r1/log"))).toBe(join(dest, "shared/log"));
    fs.writeFileSync(join(dest, "current/log/app.log"), "line 1\n");
    await agent(release(d.path, dest, "r2", app("2", 2), "shared_paths: [log, tmp/pids]\n"));
    expect(fs.readFileSync(join(dest, "current/log/app.log"), "utf8")).toBe("line 1\n");
    expect(fs.statSync(join(dest, "current/tmp/pids")).isDirectory()).toBe(true);
  });

  test("validate fails: current is switched back to the previous release by itself, and it is reported", async () => {
    await using d = tempDir();
    const dest = join(d.path, "app");
    await agent(release(d.path, dest, "good", app("good", 2)));
    const hooks =
      `commands:\n  validate: ["grep -q good $PULLDEPLOY_DEST/current/VERSION"]\n  failure: ["echo ` +
      `$PULLDEPLOY_FAILED_PHASE $PULLDEPLOY_RELEASE_ID $PULLDEPLOY_PREVIOUS_RELEASE > ${d.path}/failure.txt"]\n`;
    const { result, log } = await agent(release(d.path, dest, "bad", app("bad", 2), hooks));
    expect(result).toMatchObject({ ok: false, phase: "validate", rolledBackTo: "good", releaseId: "bad" });
    expect(log).toContain("rolled back: current -> releases/good");
    expect(fs.readlinkSync(join(dest, "current"))).toBe("releases/good");
    expect(fs.readFileSync(join(d.path, "failure.txt"), "utf8")).toBe("validate bad good\n");
  });

  test("a release already on disk is switched to without any download", async () => {
    await using d = tempDir();
    const dest = join(d.path, "app");
    const files = app("1", 2);
    const store = join(d.path, "store");
    const rel = appRelease(
      store,
      files,
      (a) => `src: SRC\nchecksum: ${a.sha256}\ndest: ${dest}\nsync_strategy: release\nrelease_id: r1\n`,
    );
    const bytes = fs.readFileSync(rel.archive);
    await using srv = httpServer(() => new Response(bytes));
    fs.writeFileSync(
      rel.manifestPath,
      fs.readFileSync(rel.manifestPath, "utf8").replace("SRC", `${srv.url}/app.tar.gz`),
    );
    await agent(rel.manifestUrl);
    await agent(release(d.path, dest, "r2", app("2", 2)));
    expect(srv.requests).toHaveLength(1);
    const { result, log } = await agent(rel.manifestUrl);
    expect(result.ok).toBe(true);
    expect(log).toContain("release r1 is already on disk: switching without a download");
    expect(srv.requests).toHaveLength(1);
    expect(fs.readlinkSync(join(dest, "current"))).toBe("releases/r1");
  });

  test("the switch is atomic: a reader resolving current never sees files from two releases", async () => {
    await using d = tempDir();
    const dest = join(d.path, "app");
    const urls = Array.from({ length: 6 }, (_, i) =>
      release(d.path, dest, `r${i}`, app(String(i), 20), "keep_releases: 50\n"),
    );
    await agent(urls[0]!);
    // The reader is another process, as an app would be: it resolves current once per read, then reads three files
    // there.
    const stopFile = join(d.path, "STOP");
    const readyFile = join(d.path, "READY");
    const readerScript = `const fs = require("fs"); const out = [];
      fs.writeFileSync(${JSON.stringify(readyFile)}, "");
      while (!fs.existsSync(${JSON.stringify(stopFile)})) {
        const r = fs.realpathSync(${JSON.stringify(join(dest, "current"))});
        out.push(["VERSION", "a.txt", "b.txt"].map((f) => fs.readFileSync(r + "/" + f, "utf8")).join(" "));
      }
      console.log(out.join("\\n"));`;
    const reader = Bun.spawn([process.execPath, "-e", readerScript], { stdout: "pipe" });
    const output = new Response(reader.stdout).text();
    await waitFor(() => fs.existsSync(readyFile), "the reader to start");
    for (const url of [...urls.slice(1), ...urls.slice(1)]) expect((await agent(url)).result.ok).toBe(true);
    fs.writeFileSync(stopFile, "");
    const lines = (await output).split("\n").filter((l) => l !== "");
    expect(lines.length).toBeGreaterThan(100);
    const mixes = lines.filter((l) => !/^(\d) a \1 b \1$/.test(l));
    expect(mixes).toEqual([]);
  });
});
