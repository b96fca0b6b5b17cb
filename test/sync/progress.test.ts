/**
 * Long sync steps say so while they run: an rsync still running is logged every `progressEveryMs`
 * (30 s by default) with its pid, and a cleanup that took that long is logged with its duration, so a
 * deploy whose sync phase took minutes shows which part they went to. Nothing more is logged once the
 * deploy has returned.
 */
import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { deployWithLog, sha, tempDir, writeTree } from "../support/helpers.ts";

/** A release archive of one file, its manifest (`extra` appended) and, unless `mv`, a dest holding an older file. */
function release(dir: string, extra = "", mv = false) {
  writeTree(join(dir, "src"), { "index.html": "version 2\n" });
  const archive = join(dir, "app.tar.gz");
  const r = Bun.spawnSync(["tar", "czf", archive, "-C", join(dir, "src"), "."]);
  if (r.exitCode !== 0) throw new Error(r.stderr.toString());
  const dest = join(dir, "dest");
  // not empty: rsync runs (an empty dest gets the tree renamed); mv wants no dest at all
  if (!mv) writeTree(dest, { "index.html": "v1\n" });
  fs.writeFileSync(join(dir, "m.yml"), `src: file://${archive}\nchecksum: ${sha(archive)}\ndest: ${dest}\n${extra}`);
  const tmp = join(dir, "tmp");
  fs.mkdirSync(tmp);
  return { url: `file://${dir}/m.yml`, dest, tmp };
}

describe("progress of long sync steps", () => {
  test("an rsync that runs for 0.6 s with progressEveryMs 150: 'still running' lines with its pid while it runs, none after", async () => {
    await using d = tempDir();
    const rel = release(d.path);
    // rsync as a wrapper that waits first: the real one, found before the wrapper's dir is on PATH
    const real = Bun.which("rsync");
    if (!real) throw new Error("rsync is missing: run scripts/setup.sh");
    const shim = join(d.path, "bin");
    writeTree(shim, { rsync: { mode: 0o755, content: `#!/bin/sh\nsleep 0.6\nexec ${real} "$@"\n` } });
    const { result, log, lines } = await deployWithLog(rel.url, {
      env: { PATH: `${shim}:${process.env.PATH}`, TMPDIR: rel.tmp },
      progressEveryMs: 150,
    });
    expect(result.ok).toBe(true);
    expect(fs.readFileSync(join(rel.dest, "index.html"), "utf8")).toBe("version 2\n");
    const still = log.split("\n").filter((l) => l.includes("still running"));
    expect(still.length).toBeGreaterThanOrEqual(2);
    for (const l of still) expect(l).toMatch(/ sync: rsync \(pid \d+\) still running after \d+ms$/);
    // the interval ended with rsync: nothing is logged after the deploy returned
    const before = lines.length;
    await Bun.sleep(400);
    expect(lines.slice(before)).toEqual([]);
  });

  test("a cleanup that takes at least progressEveryMs is logged with its duration (mv strategy, threshold 0)", async () => {
    await using d = tempDir();
    const rel = release(d.path, "sync_strategy: mv\n", true);
    const { result, log } = await deployWithLog(rel.url, {
      env: { PATH: process.env.PATH, TMPDIR: rel.tmp },
      progressEveryMs: 0,
    });
    expect(result).toMatchObject({ ok: true });
    expect(log).toMatch(/ cleanup: took \d+ms\n/);
  });

  test("a quick deploy with the default (30 s) logs neither", async () => {
    await using d = tempDir();
    const rel = release(d.path);
    const { result, log } = await deployWithLog(rel.url, { env: { PATH: process.env.PATH, TMPDIR: rel.tmp } });
    expect(result.ok).toBe(true);
    expect(log).not.toContain("still running");
    expect(log).not.toContain("cleanup: took");
  });
});
