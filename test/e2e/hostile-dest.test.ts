/**
 * The hostile `dest` (SECURITY.md, threat classes 1, 2 and 8), through the compiled binary: the agent
 * runs as root, the unprivileged app user owns `dest` and plants symlinks, hard links and read-only
 * directories in it. Each attack asserts that a victim directory outside dest is exactly as before,
 * and that a refusal is one line naming the phase.
 */
import { afterAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { dirname, join } from "node:path";
import { appUser, asApp } from "../support/app-user.ts";
import { descendants } from "../../src/pid.ts";
import { BINARY, listTree, run, running, tarGz, tempDir, waitFor, writeTree } from "../support/helpers.ts";

const ROOT_RUN = process.getuid?.() === 0;
const APP = appUser();
// As root the suite must run in full: a missing app user is a broken setup, not a reason to skip.
if (ROOT_RUN && APP === undefined)
  throw new Error("hostile-dest: running as root but the pulldeploy-app user is missing: run scripts/setup.sh");
const suite = ROOT_RUN ? describe : describe.skip;

/** A fixed mtime for every file, so that an unchanged file is equal to the previous release's (and linkable). */
const T = 1_700_000_000;
const files = (v: string) => ({ VERSION: v, "lib/a.js": "a: the same in every version\n", "lib/b.js": `b ${v}\n` });

const victims: string[] = [];
let released = 0;
afterAll(() => {
  for (const v of victims) fs.rmSync(v, { recursive: true, force: true });
});

/** A scene: dest owned by the app user, a victim outside it, a store of releases, a TMPDIR of our own. */
function scene(strategy: "release" | "rsync" | "mv" = "release") {
  const d = tempDir("pd-hostile-");
  fs.chmodSync(d.path, 0o755);
  const victim = fs.mkdtempSync("/tmp/pd-victim-");
  victims.push(victim);
  writeTree(victim, {
    f: "a: the same in every version\n",
    "a.js": "a: the same in every version\n",
    "sub/g": "victim g\n",
    shadow: { mode: 0o640, content: "root:secret\n" },
  });
  for (const f of ["f", "a.js"]) fs.utimesSync(join(victim, f), T, T);
  const dest = join(d.path, "app");
  fs.mkdirSync(dest);
  fs.chownSync(dest, APP!.uid, APP!.gid);
  const tmp = join(d.path, "tmp");
  fs.mkdirSync(tmp, { mode: 0o700 });
  const store = join(d.path, "store");
  const before = victimState(victim);
  return {
    d,
    victim,
    dest,
    tmp,
    store,
    /** A release `id` of version `v` in the store; returns its manifest URL. */
    release(
      id: string,
      v: string,
      extra = "",
      opts: {
        owner?: string;
        files?: Record<string, string | { mode: number; content: string }>;
        dirModes?: Record<string, number>;
        appDirs?: string[];
      } = {},
    ) {
      const src = join(store, id, "src");
      fs.mkdirSync(src, { recursive: true });
      writeTree(src, opts.files ?? files(v));
      // lib/a.js is the same file in every release; the others get an mtime of their own (else rsync's quick check
      // skips them).
      released++;
      for (const rel of listTree(src))
        fs.utimesSync(join(src, rel), rel.endsWith("a.js") ? T : T + released, rel.endsWith("a.js") ? T : T + released);
      for (const rel of opts.appDirs ?? []) fs.chownSync(join(src, rel), APP!.uid, APP!.gid);
      for (const [rel, mode] of Object.entries(opts.dirModes ?? {})) fs.chmodSync(join(src, rel), mode);
      const owner = opts.owner ? [`--owner=${opts.owner}`, `--group=${opts.owner}`] : [];
      const archive = tarGz(src, join(store, id, "app.tar.gz"), ["."], owner);
      const sum = new Bun.CryptoHasher("sha256").update(fs.readFileSync(archive)).digest("hex");
      const kind =
        strategy === "release" ? `sync_strategy: release\nrelease_id: ${id}\n` : `sync_strategy: ${strategy}\n`;
      const manifest = join(store, id, "app.yml");
      fs.writeFileSync(manifest, `src: file://${archive}\nchecksum: ${sum}\ndest: ${dest}\n${kind}${extra}`);
      return `file://${manifest}`;
    },
    agent: (url: string, args: string[] = []) => run(["agent", "--manifest", url, ...args], { env: { TMPDIR: tmp } }),
    /** The victim is exactly as it was: entries, bytes, modes, owners, link counts, mtimes. */
    expectVictimIntact() {
      expect(victimState(victim)).toEqual(before);
    },
    async [Symbol.asyncDispose]() {
      await d[Symbol.asyncDispose]();
    },
  };
}

function victimState(root: string): string[] {
  return listTree(root).map((rel) => {
    const st = fs.lstatSync(join(root, rel));
    const body = st.isFile()
      ? fs.readFileSync(join(root, rel), "utf8")
      : st.isSymbolicLink()
        ? `-> ${fs.readlinkSync(join(root, rel))}`
        : "";
    return `${rel} ${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid} n${st.nlink} ${st.mtimeMs} ${body}`;
  });
}

/** A refusal: exit 1 and one log line `deploy failed in phase <phase>: <what>` matching `what`. */
function expectRefused(r: { code: number; stderr: string }, phase: string, what: RegExp) {
  expect(r.code).toBe(1);
  const line = r.stderr.split("\n").find((l) => l.includes("deploy failed in phase"));
  expect(line).toBeDefined();
  expect(line!).toContain(`deploy failed in phase ${phase}: `);
  expect(line!).toMatch(what);
}

const ok = (r: { code: number; stderr: string }) => {
  if (r.code !== 0) throw new Error(`agent failed: ${r.stderr}`);
};

/** The `checksum: … ok (… N unchanged files hard-linked …)` count of a run. */
const linkedCount = (stderr: string) => Number(/(\d+) unchanged files hard-linked/.exec(stderr)?.[1] ?? 0);

suite("class 1: the app user swaps releases/, current and bookkeeping for links", () => {
  test("releases -> a symlink to the victim (before the first and before a later deploy): refused, nothing extracted or pruned there", async () => {
    for (const first of [true, false]) {
      await using s = scene();
      if (!first) ok(await s.agent(s.release("r1", "1")));
      asApp(`cd '${s.dest}' && { [ ! -e releases ] || mv releases releases.old; } && ln -s '${s.victim}' releases`);
      const r = await s.agent(s.release("r2", "2", "keep_releases: 2\n"));
      expectRefused(
        r,
        "sync",
        /releases is a symlink \(to \/tmp\/pd-victim-\w+\), not a directory: refusing to follow it as root/,
      );
      s.expectVictimIntact();
    }
  });

  test("releases replaced by a real directory of the app's (with a symlink to the victim as an old release): refused, nothing pruned", async () => {
    await using s = scene();
    ok(await s.agent(s.release("r1", "1")));
    asApp(
      `cd '${s.dest}' && mv releases releases.old && mkdir releases && ln -s '${s.victim}' releases/r0 && ` +
        "mkdir releases/r00",
    );
    const r = await s.agent(s.release("r2", "2", "keep_releases: 2\n"));
    expectRefused(
      r,
      "sync",
      new RegExp(`releases is owned by uid ${APP!.uid}, so another user could swap releases in it`),
    );
    s.expectVictimIntact();
    expect(fs.readdirSync(join(s.dest, "releases")).sort()).toEqual(["r0", "r00"]);
  });

  test("current -> the victim (a directory, a file, a relative path out): replaced by releases/<id>, the victim untouched", async () => {
    for (const target of ["VICTIM", "VICTIM/shadow", "releases/../../../../../VICTIM"]) {
      await using s = scene();
      ok(await s.agent(s.release("r1", "1")));
      asApp(`cd '${s.dest}' && rm current && ln -s '${target.replace("VICTIM", s.victim)}' current`);
      ok(await s.agent(s.release("r2", "2", "keep_releases: 2\n")));
      expect(fs.readlinkSync(join(s.dest, "current"))).toBe("releases/r2");
      expect(fs.readFileSync(join(s.dest, "current/VERSION"), "utf8")).toBe("2");
      s.expectVictimIntact();
    }
  });

  test("releases swapped for a symlink while the archive is being extracted: extraction stays in the real partial dir, the commit is refused", async () => {
    await using s = scene();
    ok(await s.agent(s.release("r1", "1")));
    const url = s.release("r2", "2");
    const held = holdingServer(fs.readFileSync.bind(fs));
    try {
      const path = url.slice(7);
      fs.writeFileSync(
        path,
        fs.readFileSync(path, "utf8").replace(/src: file:\/\/(\S+)/, (_m, p: string) => `src: ${held.url}${p}`),
      );
      const proc = Bun.spawn([BINARY, "agent", "--manifest", url], {
        stderr: "pipe",
        env: { PATH: process.env.PATH!, TMPDIR: s.tmp, PULLDEPLOY_STATE_DIR: join(s.d.path, "state") },
      });
      await waitFor(
        () => held.hits() > 0 && fs.existsSync(join(s.dest, `releases/.partial-r2-${proc.pid}`)),
        "the agent to be extracting",
      );
      // The app: releases/ moved away; in its place a link to a directory of its own, where the
      // partial dir's name leads to the victim.
      const evil = join(s.d.path, "evil");
      fs.mkdirSync(evil);
      fs.chownSync(evil, APP!.uid, APP!.gid);
      asApp(
        `cd '${s.dest}' && mv releases releases.moved && ln -s '${evil}' releases && ln -s '${s.victim}' ` +
          `'${evil}/.partial-r2-${proc.pid}'`,
      );
      held.release();
      const stderr = await new Response(proc.stderr).text();
      expect(await proc.exited).toBe(1);
      expectRefused(
        { code: 1, stderr },
        "sync",
        /releases is a symlink \(to .*evil\), not a directory: refusing to follow it as root/,
      );
      s.expectVictimIntact();
    } finally {
      held.release();
      held.stop();
    }
  });

  test("a symlink among the releases (made by root by mistake): never a release, never pruned through", async () => {
    await using s = scene();
    ok(await s.agent(s.release("r1", "1")));
    fs.symlinkSync(s.victim, join(s.dest, "releases/r0"));
    fs.symlinkSync(s.victim, join(s.dest, "releases/.partial-r7-999999"));
    for (const [id, v] of [
      ["r2", "2"],
      ["r3", "3"],
      ["r4", "4"],
    ])
      ok(await s.agent(s.release(id!, v!, "keep_releases: 2\n")));
    const left = fs.readdirSync(join(s.dest, "releases")).sort();
    expect(left).toEqual([".order", "r0", "r3", "r4"]); // r1, r2 pruned; the symlinks left alone (no one followed them)
    s.expectVictimIntact();
    expect((await run(["rollback", "--dest", s.dest, "--list"])).stdout).not.toContain("r0");
  });

  test(".order and a stale temp link replaced by symlinks to victim files: replaced by name, never written through", async () => {
    await using s = scene();
    ok(await s.agent(s.release("r1", "1")));
    fs.rmSync(join(s.dest, "releases/.order"));
    fs.symlinkSync(join(s.victim, "shadow"), join(s.dest, "releases/.order"));
    asApp(`cd '${s.dest}' && ln -s '${s.victim}/f' .current.tmp-999999 && ln -s '${s.victim}' .partial-x-999998`);
    ok(await s.agent(s.release("r2", "2")));
    s.expectVictimIntact();
    expect(fs.lstatSync(join(s.dest, "releases/.order")).isFile()).toBe(true);
    expect(JSON.parse(fs.readFileSync(join(s.dest, "releases/.order"), "utf8"))).toEqual({ order: ["r2"] });
    // The app's own links (not the agent's: another owner) are left where they are.
    expect(fs.lstatSync(join(s.dest, ".current.tmp-999999")).isSymbolicLink()).toBe(true);
  });

  test("dest itself a symlink: refused when another user could have planted it, followed when only root could have", async () => {
    await using s = scene();
    const apps = join(s.d.path, "apps");
    fs.mkdirSync(apps);
    fs.chownSync(apps, APP!.uid, APP!.gid);
    asApp(`ln -s '${s.victim}' '${apps}/app'`);
    for (const strategy of ["release", "rsync"]) {
      const url = s.release(`x-${strategy}`, "1");
      fs.writeFileSync(
        url.slice(7),
        fs
          .readFileSync(url.slice(7), "utf8")
          .replace(`dest: ${s.dest}`, `dest: ${apps}/app`)
          .replace(/sync_strategy: \w+/, `sync_strategy: ${strategy}`),
      );
      expectRefused(
        await s.agent(url),
        "sync",
        /dest \/tmp\/pd-hostile-\w+\/apps\/app is a symlink \(to \/tmp\/pd-victim-\w+\) and the link is owned by uid \d+: refusing to follow it as root/,
      );
    }
    // A root-made link in a root-only directory (an admin's /srv/app -> /data/app) is followed.
    const real = join(s.d.path, "real");
    fs.symlinkSync(real, join(s.d.path, "linked"));
    const url = s.release("y", "1");
    fs.writeFileSync(
      url.slice(7),
      fs.readFileSync(url.slice(7), "utf8").replace(`dest: ${s.dest}`, `dest: ${join(s.d.path, "linked")}`),
    );
    fs.mkdirSync(real);
    ok(await s.agent(url));
    expect(fs.readFileSync(join(real, "current/VERSION"), "utf8")).toBe("1");
    s.expectVictimIntact();
  });

  test("a dest the app owns is deployed, with a one-line warning naming who else can change it", async () => {
    await using s = scene("rsync");
    const r = await s.agent(s.release("r1", "1"));
    ok(r);
    expect(r.stderr).toContain(
      `sync: warning: ${s.dest} is owned by uid ${APP!.uid}: another user can change what is under dest`,
    );
    // A dest only root can change: no warning.
    fs.chownSync(s.dest, 0, 0);
    const again = await s.agent(s.release("r2", "2"));
    ok(again);
    expect(again.stderr).not.toContain("sync: warning");
  });
});

suite("class 2: shared_paths and hard links from the previous release or dest", () => {
  test("shared -> a symlink to the victim: refused; nothing created in the victim", async () => {
    await using s = scene();
    asApp(`ln -s '${s.victim}' '${s.dest}/shared'`);
    expectRefused(
      await s.agent(s.release("r1", "1", 'shared_paths: ["log", "tmp/cache"]\n')),
      "sync",
      /shared_paths: .*\/app\/shared is a symlink \(to \/tmp\/pd-victim-\w+\): refusing to create shared paths through it as root/,
    );
    s.expectVictimIntact();
  });

  test("shared/<path> -> the victim is the app's business: linked by name, never written or chmod-ed through; shared/<dir> -> victim under a path: refused", async () => {
    await using s = scene();
    asApp(`mkdir '${s.dest}/shared' && ln -s '${s.victim}' '${s.dest}/shared/log'`);
    ok(await s.agent(s.release("r1", "1", 'shared_paths: ["log"]\n')));
    expect(fs.readlinkSync(join(s.dest, "releases/r1/log"))).toBe(join(s.dest, "shared/log"));
    s.expectVictimIntact();
    const r = await s.agent(s.release("r2", "2", 'shared_paths: ["log/app"]\n'));
    expectRefused(r, "sync", /shared_paths: .*\/app\/shared\/log is a symlink \(to \/tmp\/pd-victim-\w+\)/);
    s.expectVictimIntact();
    expect(fs.existsSync(join(s.victim, "app"))).toBe(false);
  });

  test("a shared path under a symlink of the archive itself: refused, nothing removed where it points", async () => {
    await using s = scene();
    const url = s.release("r1", "1", 'shared_paths: ["out/f"]\n', { files: { VERSION: "1" } });
    fs.symlinkSync(s.victim, join(s.store, "r1/src/out"));
    const archive = tarGz(join(s.store, "r1/src"), join(s.store, "r1/app.tar.gz"));
    const sum = new Bun.CryptoHasher("sha256").update(fs.readFileSync(archive)).digest("hex");
    fs.writeFileSync(url.slice(7), fs.readFileSync(url.slice(7), "utf8").replace(/checksum: \w+/, `checksum: ${sum}`));
    expectRefused(
      await s.agent(url),
      "sync",
      /shared_paths: out\/f: out is a symlink \(to \/tmp\/pd-victim-\w+\) in the archive/,
    );
    s.expectVictimIntact();
  });

  test("a previous-release file, or a directory above it, replaced by the app with a symlink to an equal victim file: never followed, written anew", async () => {
    // The release's lib/ and lib/x/ are the app's (as the archive says), its files root's, like the victim's.
    const opts = {
      files: { VERSION: "v", "lib/x/a.js": files("1")["lib/a.js"], "lib/b.js": "b" },
      appDirs: ["lib", "lib/x"],
    };
    const attacks: [string, number][] = [
      ["true", 1], // control: untouched, the unchanged file is hard-linked (so the attacks below are what stop it)
      ["rm lib/x/a.js && ln -s '{V}/a.js' lib/x/a.js", 0],
      ["mv lib/x lib/x.old && ln -s '{V}' lib/x", 0],
    ];
    for (const [attack, linked] of attacks) {
      await using s = scene();
      ok(await s.agent(s.release("r1", "1", "", opts)));
      asApp(`cd '${s.dest}/releases/r1' && ${attack.replaceAll("{V}", s.victim)}`);
      const r = await s.agent(s.release("r2", "2", "", opts));
      ok(r);
      expect(linkedCount(r.stderr)).toBe(linked);
      const a = fs.lstatSync(join(s.dest, "releases/r2/lib/x/a.js"));
      expect(a.isFile()).toBe(true);
      expect(a.nlink).toBe(linked + 1);
      expect(a.ino).not.toBe(fs.statSync(join(s.victim, "a.js")).ino);
      expect(fs.readFileSync(join(s.dest, "releases/r2/lib/x/a.js"), "utf8")).toBe(files("1")["lib/a.js"]);
      s.expectVictimIntact();
    }
  });

  test("a previous-release or dest file hard-linked to an equal file outside the tree: not trusted (nlink), written anew", async () => {
    for (const strategy of ["release", "rsync"] as const) {
      await using s = scene(strategy);
      ok(await s.agent(s.release("r1", "1")));
      const victimFile = join(s.victim, "f");
      const inDest = strategy === "release" ? join(s.dest, "releases/r1/lib/a.js") : join(s.dest, "lib/a.js");
      // What an app can do where fs.protected_hardlinks is 0 (done as root here, where it is 1), in a
      // directory it owns (say, after a `chown -R` of dest). In a directory only root can change, no one
      // else could have put a name there, and a root-owned file needs no accounting (nofollow.test.ts).
      fs.chownSync(dirname(inDest), APP!.uid, APP!.gid);
      fs.rmSync(inDest);
      fs.linkSync(victimFile, inDest);
      const before = victimState(s.victim);
      const r = await s.agent(s.release("r2", "2"));
      ok(r);
      expect(linkedCount(r.stderr)).toBe(0);
      if (strategy === "release")
        expect(fs.statSync(join(s.dest, "releases/r2/lib/a.js")).ino).not.toBe(fs.statSync(victimFile).ino);
      expect(victimState(s.victim)).toEqual(before);
      expect(fs.statSync(victimFile).nlink).toBe(2); // the app's link, and no other
    }
  });
});

suite("class 8: read-only trees and what dead runs left", () => {
  test("0555 directories (as in Go module caches) in a release to prune and in a failed run's tree never break cleanup", async () => {
    await using s = scene();
    const ro = {
      files: { VERSION: "x", "gomod/cache/m.go": "package m\n" },
      dirModes: { "gomod/cache": 0o555, gomod: 0o555 },
    };
    for (const id of ["r1", "r2", "r3", "r4"]) ok(await s.agent(s.release(id, "1", "keep_releases: 2\n", ro)));
    expect(fs.readdirSync(join(s.dest, "releases")).sort()).toEqual([".order", "r3", "r4"]);
    const failing = await s.agent(s.release("r5", "1", 'commands:\n  pre: ["exit 3"]\n', ro));
    expect(failing.code).toBe(1);
    expect(fs.readdirSync(join(s.dest, "releases")).filter((n) => n.startsWith(".partial"))).toEqual([]);
    await using r = scene("rsync");
    const bad = await r.agent(r.release("a", "1", 'commands:\n  pre: ["exit 3"]\n', ro));
    expect(bad.code).toBe(1);
    expect(fs.readdirSync(r.tmp)).toEqual([]);
  });

  test("stale temp trees of dead pids are swept by every strategy; live pids', other owners' and symlinks are not", async () => {
    for (const strategy of ["release", "rsync", "mv"] as const) {
      await using s = scene(strategy);
      const dead = deadPid();
      const live = process.pid;
      const stale = [`pulldeploy-${dead}-abc123`, `pulldeploy-${dead}-zzzzzz`];
      for (const n of stale) writeTree(join(s.tmp, n), { "x/y": "left", "ro/f": "ro" });
      fs.chmodSync(join(s.tmp, stale[0]!, "ro"), 0o555);
      fs.mkdirSync(join(s.tmp, `pulldeploy-${live}-livexx`));
      fs.mkdirSync(join(s.tmp, `pulldeploy-${dead}-appsxx`));
      fs.chownSync(join(s.tmp, `pulldeploy-${dead}-appsxx`), APP!.uid, APP!.gid);
      fs.symlinkSync(s.victim, join(s.tmp, `pulldeploy-${dead}-linkxx`));
      if (strategy === "release") {
        ok(await s.agent(s.release("r0", "0")));
        writeTree(join(s.dest, `releases/.partial-r9-${dead}`), { "a/b": "half" });
      }
      if (strategy === "mv") fs.rmdirSync(s.dest);
      const r = await s.agent(s.release("r1", "1"));
      ok(r);
      expect(r.stderr).toContain("left by an interrupted run");
      expect(fs.readdirSync(s.tmp).sort()).toEqual(
        [`pulldeploy-${dead}-appsxx`, `pulldeploy-${dead}-linkxx`, `pulldeploy-${live}-livexx`].sort(),
      );
      if (strategy === "release")
        expect(fs.readdirSync(join(s.dest, "releases")).filter((n) => n.startsWith(".partial"))).toEqual([]);
      s.expectVictimIntact();
    }
  });
});

suite("crash safety inside release's sync: every state a kill -9 between two of its steps leaves", () => {
  // sync = extract into .partial → link shared → rename to releases/<id> → make .current.tmp-<pid> →
  // rename over current → write .order.tmp-<pid> → rename over .order → prune. A kill between two steps
  // leaves one of these states (made here as the dead run would have, with a dead pid).
  const states: [string, (s: ReturnType<typeof scene>, dead: number) => void][] = [
    [
      "extracted, not committed",
      (s, dead) =>
        fs.cpSync(join(s.dest, "releases/r1"), join(s.dest, `releases/.partial-r2-${dead}`), {
          recursive: true,
          verbatimSymlinks: true,
        }),
    ],
    // Complete by construction (renamed from a finished partial): the next run switches to it as it is.
    [
      "committed, current not switched",
      (s) => {
        fs.cpSync(join(s.dest, "releases/r1"), join(s.dest, "releases/r2"), {
          recursive: true,
          verbatimSymlinks: true,
        });
        writeTree(join(s.dest, "releases/r2"), files("2"));
      },
    ],
    [
      "the new current link made, not renamed",
      (s, dead) => fs.symlinkSync("releases/r1", join(s.dest, `.current.tmp-${dead}`)),
    ],
    [
      "the order written, not renamed",
      (s, dead) => fs.writeFileSync(join(s.dest, `releases/.order.tmp-${dead}`), '{"order":["r1","r2"]}\n'),
    ],
  ];
  test.each(states)(
    "%s: the next deploy completes, sweeps, and a rollback goes back to a complete release",
    async (_name, leave) => {
      await using s = scene();
      ok(await s.agent(s.release("r1", "1")));
      const dead = deadPid();
      leave(s, dead);
      const r = await s.agent(s.release("r2", "2"));
      ok(r);
      expect(fs.readlinkSync(join(s.dest, "current"))).toBe("releases/r2");
      expect(fs.readFileSync(join(s.dest, "current/VERSION"), "utf8")).toBe("2");
      expect(
        fs
          .readdirSync(join(s.dest, "releases"))
          .filter((n) => n.startsWith("."))
          .sort(),
      ).toEqual([".order"]);
      expect(fs.readdirSync(s.dest).filter((n) => n.startsWith("."))).toEqual([]);
      const back = await run(["rollback", "--dest", s.dest]);
      expect(back.code).toBe(0);
      expect(fs.readlinkSync(join(s.dest, "current"))).toBe("releases/r1");
      expect(listTree(join(s.dest, "current/"))).toEqual(["VERSION", "lib/", "lib/a.js", "lib/b.js"]);
      s.expectVictimIntact();
    },
  );
});

/** A pid that just exited (not reused within a test). */
function deadPid(): number {
  const p = Bun.spawnSync(["true"]);
  return p.pid;
}

/**
 * kill -9 at every phase for every strategy. `fetch` (extraction streams with it): the store holds the
 * archive half sent until the agent is dead. `pre`/`post`: a hook writes its pid and blocks. `sync`
 * (rsync): an `rsync` first in PATH writes its pid, blocks, and would then run the real one.
 */
suite("crash safety: kill -9 in every phase of every strategy, then a clean deploy (and a rollback)", () => {
  const cases: [string, string][] = [];
  for (const strategy of ["rsync", "mv", "release"])
    for (const phase of ["fetch", "pre", "sync", "post"])
      if (!(phase === "sync" && strategy !== "rsync")) cases.push([strategy, phase]);
  test.each(cases)("%s: kill -9 during %s", async (strategy, phase) => {
    await using s = scene(strategy as "release");
    const marker = join(s.d.path, "marker");
    const hook = (p: string) =>
      `commands:\n  ${p}: ["echo $$ > ${marker}.tmp && mv ${marker}.tmp ${marker} && exec sleep 60"]\n`;
    const held = holdingServer(fs.readFileSync.bind(fs));
    try {
      if (strategy !== "mv") ok(await s.agent(s.release("r1", "1")));
      if (strategy === "mv") fs.rmdirSync(s.dest);
      const url = s.release("r2", "2", phase === "pre" || phase === "post" ? hook(phase) : "");
      let manifestUrl = url;
      if (phase === "fetch") {
        const path = url.slice(7);
        fs.writeFileSync(
          path,
          fs.readFileSync(path, "utf8").replace(/src: file:\/\/(\S+)/, (_m, p: string) => `src: ${held.url}${p}`),
        );
        manifestUrl = url;
      }
      const bin = join(s.d.path, "bin");
      fs.mkdirSync(bin);
      fs.writeFileSync(
        join(bin, "rsync"),
        `#!/bin/sh\necho $$ > ${marker}.tmp && mv ${marker}.tmp ${marker}\nsleep 60\nexec ${Bun.which("rsync")} "$@"\n`,
        { mode: 0o755 },
      );
      const env: Record<string, string> = {
        PATH: phase === "sync" ? `${bin}:${process.env.PATH}` : process.env.PATH!,
        TMPDIR: s.tmp,
        PULLDEPLOY_STATE_DIR: join(s.d.path, "state"),
      };
      const proc = Bun.spawn([BINARY, "agent", "--manifest", manifestUrl], { stderr: "ignore", env });
      await waitFor(() => (phase === "fetch" ? held.hits() > 0 : fs.existsSync(marker)), `the agent to reach ${phase}`);
      proc.kill("SIGKILL");
      await proc.exited;
      // What the dead run left running (the hook, or rsync, each blocked in a child `sleep`) is the
      // next run's to kill: left alone here, and checked after it.
      const left = fs.existsSync(marker) ? Number(fs.readFileSync(marker, "utf8").trim()) : undefined;
      const leftBelow = left === undefined ? [] : descendants(left);
      held.release();
      // What is live is complete: the previous release (or r2 once post was reached).
      if (strategy === "release") {
        expect(listTree(join(s.dest, "current/"))).toEqual(["VERSION", "lib/", "lib/a.js", "lib/b.js"]);
      } else if (strategy === "rsync" && phase !== "post") {
        expect(fs.readFileSync(join(s.dest, "VERSION"), "utf8")).toBe("1");
      }
      // A clean deploy: sweeps what the dead run left, deploys r2.
      fs.writeFileSync(
        url.slice(7),
        fs
          .readFileSync(url.slice(7), "utf8")
          .replace(/commands:[\s\S]*$/, "")
          .replace(/src: http:\/\/[^/]+/, "src: file://"),
      );
      if (strategy === "mv") fs.rmSync(s.dest, { recursive: true, force: true });
      const again = await run(["agent", "--manifest", url], {
        env: { TMPDIR: s.tmp, PULLDEPLOY_STATE_DIR: join(s.d.path, "state"), PATH: process.env.PATH },
      });
      ok(again);
      if (left !== undefined) {
        if (phase === "sync") expect(leftBelow.length).toBeGreaterThan(0); // the fake rsync's sleep
        for (const p of [left, ...leftBelow.map((d) => d.pid)]) await waitFor(() => !running(p), `process ${p} to die`);
        expect(again.stderr).toContain(
          phase === "sync" ? `cleanup: killed process ${left} and its` : "cleanup: killed process group",
        );
      }
      expect(fs.readdirSync(s.tmp)).toEqual([]);
      const live = strategy === "release" ? join(s.dest, "current") : s.dest;
      expect(fs.readFileSync(join(live, "VERSION"), "utf8")).toBe("2");
      if (strategy === "release") {
        expect(fs.readdirSync(join(s.dest, "releases")).filter((n) => n.startsWith("."))).toEqual([".order"]);
        const back = await run(["rollback", "--dest", s.dest]);
        expect(back.code).toBe(0);
        expect(fs.readlinkSync(join(s.dest, "current"))).toBe("releases/r1");
        expect(listTree(join(s.dest, "current/"))).toEqual(["VERSION", "lib/", "lib/a.js", "lib/b.js"]);
        expect(fs.readFileSync(join(s.dest, "current/VERSION"), "utf8")).toBe("1");
      }
      s.expectVictimIntact();
    } finally {
      held.release();
      held.stop();
    }
  });
});

/**
 * Serves a file's first half, then holds the response open until `release()` sends the rest: a fetch "in progress" for
 * as long as we want.
 */
function holdingServer(read: (p: string) => Buffer) {
  let hits = 0;
  let releaseAll: () => void = () => {};
  const gate = new Promise<void>((r) => (releaseAll = r));
  const server = Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    fetch(req) {
      const bytes = read(decodeURIComponent(new URL(req.url).pathname));
      hits++;
      return new Response(
        new ReadableStream({
          async start(c) {
            c.enqueue(bytes.subarray(0, bytes.length >> 1));
            await gate;
            try {
              c.enqueue(bytes.subarray(bytes.length >> 1));
              c.close();
            } catch {
              // the client is gone (killed)
            }
          },
        }),
        { headers: { "content-length": String(bytes.length) } },
      );
    },
  });
  return {
    url: `http://127.0.0.1:${server.port}`,
    hits: () => hits,
    release: () => releaseAll(),
    stop: () => server.stop(true),
  };
}
