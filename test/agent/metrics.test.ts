/**
 * writeMetricsFile on a real file system: atomic replace, 0644 whatever the umask, nothing followed or read that it
 * shouldn't.
 */
import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { writeMetricsFile } from "../../src/agent/metrics.ts";
import { lintExposition } from "../../src/prometheus.ts";
import { tempDir } from "../support/helpers.ts";

const run = { finishedAt: new Date(), success: true, durationMs: 10, bytesFetched: 7 };

describe("writeMetricsFile", () => {
  test("a symlink at the path is replaced, its target untouched; a link planted at the temp name is not followed", async () => {
    await using d = tempDir();
    const victim = join(d.path, "victim");
    fs.writeFileSync(victim, "precious\n");
    const path = join(d.path, "pulldeploy.prom");
    fs.symlinkSync(victim, path);
    fs.symlinkSync(victim, join(d.path, `.pulldeploy.prom.${process.pid}.tmp`));
    writeMetricsFile(path, run);
    expect(fs.readFileSync(victim, "utf8")).toBe("precious\n");
    expect(fs.lstatSync(path).isFile()).toBe(true);
    expect(lintExposition(fs.readFileSync(path, "utf8"))).toEqual([]);
    expect(fs.readdirSync(d.path).sort()).toEqual(["pulldeploy.prom", "victim"]);
  });

  test("0644 under a 077 umask; a FIFO at the path is not read (no hang) and is replaced", async () => {
    await using d = tempDir();
    const path = join(d.path, "m.prom");
    Bun.spawnSync(["mkfifo", path]);
    expect(fs.lstatSync(path).isFIFO()).toBe(true);
    const old = process.umask(0o077);
    try {
      writeMetricsFile(path, run);
    } finally {
      process.umask(old);
    }
    expect(fs.statSync(path).mode & 0o7777).toBe(0o644);
    expect(fs.readFileSync(path, "utf8")).toContain('pulldeploy_deploys_total{result="success"} 1\n');
  });

  test("a directory that can't be written: the error names the file and nothing is left", async () => {
    await using d = tempDir();
    expect(() => writeMetricsFile(join(d.path, "missing", "m.prom"), run)).toThrow(/ENOENT/);
  });
});
