/** The host lock (flock and its pid + start-time fallback), leftover process groups, the downgrade mark. */
import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { acquireLock, downgradeOf, raiseMark, sweepChildren, type AgentState } from "../../src/agent/state.ts";
import { processStartTime } from "../../src/pid.ts";
import { running, tempDir, waitFor } from "../support/helpers.ts";

describe("downgradeOf / raiseMark", () => {
  const marked: AgentState = { issued_marks: { "/srv/app": "2026-06-01T12:00:00.000Z" } };
  test.each([
    ["no mark yet: anything", {}, "2020-01-01T00:00:00.000Z", "/srv/app", undefined],
    ["no mark yet: undated (legacy) too", {}, undefined, "/srv/app", undefined],
    ["newer", marked, "2026-06-01T12:00:00.001Z", "/srv/app", undefined],
    ["the same statement again", marked, "2026-06-01T12:00:00.000Z", "/srv/app", undefined],
    [
      "older",
      marked,
      "2026-06-01T11:59:59.999Z",
      "/srv/app",
      "manifest issued 2026-06-01T11:59:59.999Z, older than the last deployed 2026-06-01T12:00:00.000Z for " +
        "/srv/app: refusing a downgrade",
    ],
    [
      "older, dest spelled with a trailing slash",
      marked,
      "2025-01-01T00:00:00.000Z",
      "/srv/app/",
      "refusing a downgrade",
    ],
    [
      "undated after a dated one",
      marked,
      undefined,
      "/srv/app",
      "manifest has no signed issued_at, and /srv/app already runs one issued 2026-06-01T12:00:00.000Z",
    ],
    ["another dest has its own mark", marked, "2020-01-01T00:00:00.000Z", "/srv/other", undefined],
  ] as const)("%s", (_name, state, issued, dest, want) => {
    const got = downgradeOf(issued, dest, state as AgentState);
    if (want === undefined) expect(got).toBeUndefined();
    else expect(got).toContain(want);
  });

  test("the mark only rises", () => {
    const s1 = raiseMark({}, "/srv/app/", "2026-01-01T00:00:00.000Z");
    expect(s1.issued_marks).toEqual({ "/srv/app": "2026-01-01T00:00:00.000Z" });
    expect(raiseMark(s1, "/srv/app", "2025-01-01T00:00:00.000Z")).toBe(s1);
    expect(raiseMark(s1, "/srv/app", "2026-02-01T00:00:00.000Z").issued_marks).toEqual({
      "/srv/app": "2026-02-01T00:00:00.000Z",
    });
  });
});

describe("acquireLock (flock)", () => {
  test("cannot be taken twice; free again once released; a waiter gets it when the holder lets go", async () => {
    await using d = tempDir();
    const a = await acquireLock(d.path, { waitMs: 0 });
    expect(fs.readFileSync(join(d.path, "lock"), "utf8")).toBe(`${process.pid}\n`);
    await expect(acquireLock(d.path, { waitMs: 0 })).rejects.toThrow(
      `another pulldeploy agent (pid ${process.pid}) is deploying on this host (lock ${join(d.path, "lock")}); ` +
        "not waiting",
    );
    let waited: number | undefined;
    const b = acquireLock(d.path, { waitMs: 10_000, onWait: (pid) => (waited = pid) });
    await waitFor(() => waited !== undefined, "the waiter to report the holder");
    expect(waited).toBe(process.pid);
    a.release();
    (await b).release();
    (await acquireLock(d.path, { waitMs: 0 })).release();
  });

  test("a symlink planted as the lock file is not followed", async () => {
    await using d = tempDir();
    fs.writeFileSync(join(d.path, "victim"), "keep\n");
    fs.symlinkSync(join(d.path, "victim"), join(d.path, "lock"));
    await expect(acquireLock(d.path, { waitMs: 0 })).rejects.toThrow(
      `lock ${join(d.path, "lock")}: cannot open it (it is a symlink)`,
    );
    expect(fs.readFileSync(join(d.path, "victim"), "utf8")).toBe("keep\n");
  });
});

describe("acquireLock (pid + start time fallback)", () => {
  test("a live holder (right start time) blocks; a reused pid (another start time) or a dead pid does not", async () => {
    await using d = tempDir();
    const other = Bun.spawn(["sleep", "30"]);
    try {
      await waitFor(() => processStartTime(other.pid) !== undefined, "sleep to start");
      const lock = join(d.path, "lock");
      fs.writeFileSync(lock, `${other.pid} ${processStartTime(other.pid)}\n`);
      await expect(acquireLock(d.path, { waitMs: 0, noFlock: true })).rejects.toThrow(
        `another pulldeploy agent (pid ${other.pid})`,
      );
      fs.writeFileSync(lock, `${other.pid} 1\n`); // the pid now names a process started at another time
      const mine = await acquireLock(d.path, { waitMs: 0, noFlock: true });
      expect(fs.readFileSync(lock, "utf8")).toBe(`${process.pid} ${processStartTime(process.pid)}\n`);
      await expect(acquireLock(d.path, { waitMs: 0, noFlock: true })).rejects.toThrow("another pulldeploy agent");
      mine.release();
      expect(fs.existsSync(lock)).toBe(false);
      fs.writeFileSync(lock, "999999999\n"); // an older pulldeploy's pid-only lock, holder gone
      (await acquireLock(d.path, { waitMs: 0, noFlock: true })).release();
      expect(fs.readdirSync(d.path)).toEqual([]);
    } finally {
      other.kill();
    }
  });
});

describe("sweepChildren", () => {
  test("kills a recorded group whose leader has the recorded start time, with its members; leaves a reused pid alone", async () => {
    await using d = tempDir();
    const pids = join(d.path, "pids");
    const group = Bun.spawn(["sh", "-c", `sleep 30 & echo $! > ${pids}; wait`], { detached: true });
    const unrelated = Bun.spawn(["sleep", "30"], { detached: true });
    try {
      await waitFor(() => fs.existsSync(pids) && fs.readFileSync(pids, "utf8").endsWith("\n"), "the group to start");
      const member = Number(fs.readFileSync(pids, "utf8"));
      fs.mkdirSync(join(d.path, "children"));
      fs.writeFileSync(
        join(d.path, "children", String(group.pid)),
        `${group.pid} ${processStartTime(group.pid)} pre: sleep\n`,
      );
      fs.writeFileSync(join(d.path, "children", String(unrelated.pid)), `${unrelated.pid} 1 pre: sleep\n`);
      fs.writeFileSync(join(d.path, "children", "junk"), "not a record\n");
      const logged: string[] = [];
      expect(sweepChildren(d.path, (m) => logged.push(m))).toBe(1);
      expect(await group.exited).not.toBe(0);
      await waitFor(() => !running(member), "the group's member to die");
      expect(logged.sort()).toEqual(
        [
          `cleanup: killed process group ${group.pid} left running by a previous agent run (pre: sleep)`,
          `cleanup: pid ${unrelated.pid} now names another process (started at tick ` +
            `${processStartTime(unrelated.pid)}, not 1): left alone`,
        ].sort(),
      );
      expect(unrelated.exitCode).toBeNull();
      expect(fs.readdirSync(join(d.path, "children"))).toEqual([]);
    } finally {
      unrelated.kill();
      group.kill();
    }
  });

  test("kills a recorded tree (rsync: not a group of its own) whose root has the recorded start time, with its descendants", async () => {
    await using d = tempDir();
    const pids = join(d.path, "pids");
    // Not detached: in this test's own process group, as rsync is in the agent's.
    const root = Bun.spawn(["sh", "-c", `sh -c 'sleep 30 & echo $! >> ${pids}; wait' & echo $! >> ${pids}; wait`]);
    const other = Bun.spawn(["sleep", "30"]);
    try {
      await waitFor(
        () => fs.existsSync(pids) && fs.readFileSync(pids, "utf8").trim().split("\n").length === 2,
        "the tree to start",
      );
      const below = fs.readFileSync(pids, "utf8").trim().split("\n").map(Number);
      fs.mkdirSync(join(d.path, "children"));
      fs.writeFileSync(
        join(d.path, "children", `${root.pid}.tree`),
        `${root.pid} ${processStartTime(root.pid)} sync: rsync\n`,
      );
      // A reused pid (another start time) and a root that is gone: left alone, said so.
      fs.writeFileSync(join(d.path, "children", `${other.pid}.tree`), `${other.pid} 1 sync: rsync\n`);
      fs.writeFileSync(join(d.path, "children", "99999999.tree"), "99999999 1 sync: rsync\n");
      const logged: string[] = [];
      expect(sweepChildren(d.path, (m) => logged.push(m))).toBe(1);
      expect(await root.exited).not.toBe(0);
      for (const pid of below) await waitFor(() => !running(pid), `descendant ${pid} to die`);
      expect(logged.sort()).toEqual(
        [
          `cleanup: killed process ${root.pid} and its 2 descendants, left running by a previous agent run (sync: rsync)`,
          `cleanup: pid ${other.pid} now names another process (started at tick ${processStartTime(other.pid)}, not 1): left alone`,
          "cleanup: process 99999999 (sync: rsync) of a previous agent run is gone already",
        ].sort(),
      );
      expect(running(other.pid)).toBe(true);
      expect(fs.readdirSync(join(d.path, "children"))).toEqual([]);
    } finally {
      other.kill();
      root.kill();
    }
  });
});
