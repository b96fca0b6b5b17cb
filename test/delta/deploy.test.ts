/**
 * Delta deploys against archive deploys, with the real pipeline (`deploy`), real files and real
 * tar-compatible archives: the trees must be identical; tampered or unusable deltas fall back.
 */
import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { appUser, asApp } from "../support/app-user.ts";
import { BINARY, deployWithLog, httpServer, tempDir, waitFor } from "../support/helpers.ts";
import { describeTree, manifestFor, noise, publishRelease } from "./support.ts";

const T0 = 1_700_000_000;

/** Version 1 of an app with every kind of entry, each with a fixed mtime. */
function v1(root: string) {
  const w = (rel: string, data: string | Uint8Array, mode = 0o644) => {
    fs.mkdirSync(join(root, rel, ".."), { recursive: true });
    fs.writeFileSync(join(root, rel), data);
    fs.chmodSync(join(root, rel), mode);
  };
  w("a.txt", "a\n");
  w("big.bin", noise(1, 2 * 2 ** 20));
  w("gone.txt", "removed in v2\n");
  w("old-name.bin", noise(2, 40_000));
  w("mode.sh", "#!/bin/sh\necho hi\n");
  w("f2link", "file, then a symlink\n");
  fs.symlinkSync("a.txt", join(root, "l2file"));
  w("f2dir", "file, then a directory\n");
  w("d2file/x.txt", "dir, then a file\n");
  fs.symlinkSync("d2file", join(root, "l2dir"));
  w("hard1", "hard-linked twice\n");
  fs.linkSync(join(root, "hard1"), join(root, "hard2"));
  w("empty", "");
  w("dir/sub/deep.txt", "deep\n");
  w("touched.txt", "only its mtime changes\n");
  w("same.bin", noise(3, 300_000));
  w("world.dat", noise(4, 100_000), 0o666);
  stamp(root);
}

/** v2: one of each kind of change. */
function v2(root: string) {
  const big = fs.readFileSync(join(root, "big.bin"));
  big.set(noise(9, 20_000), 1_000_000);
  fs.writeFileSync(join(root, "big.bin"), big);
  fs.writeFileSync(join(root, "new.txt"), "added\n");
  fs.rmSync(join(root, "gone.txt"));
  fs.renameSync(join(root, "old-name.bin"), join(root, "new-name.bin"));
  fs.chmodSync(join(root, "mode.sh"), 0o755);
  fs.rmSync(join(root, "f2link"));
  fs.symlinkSync("dir/sub/deep.txt", join(root, "f2link"));
  fs.rmSync(join(root, "l2file"));
  fs.writeFileSync(join(root, "l2file"), "symlink, then a file\n");
  fs.rmSync(join(root, "f2dir"));
  fs.mkdirSync(join(root, "f2dir"));
  fs.writeFileSync(join(root, "f2dir/inside.txt"), "now inside\n");
  fs.rmSync(join(root, "d2file"), { recursive: true });
  fs.writeFileSync(join(root, "d2file"), "now a file\n");
  fs.rmSync(join(root, "l2dir"));
  fs.mkdirSync(join(root, "l2dir"));
  fs.writeFileSync(join(root, "l2dir/y.txt"), "symlink, then a directory\n");
  stamp(root, ["touched.txt"]);
  fs.utimesSync(join(root, "touched.txt"), T0 + 500, T0 + 500);
}

/** Fixed mtimes everywhere (except `skip`), so unchanged files compare equal across versions. */
function stamp(root: string, skip: string[] = []) {
  const walk = (dir: string, rel: string) => {
    for (const name of fs.readdirSync(dir)) {
      const r = rel ? `${rel}/${name}` : name;
      const p = join(dir, name);
      const st = fs.lstatSync(p);
      if (st.isDirectory()) walk(p, r);
      if (!skip.includes(r)) fs.lutimesSync(p, T0, T0);
    }
  };
  walk(root, "");
}

/**
 * @param groupWritable files made writable by their group in both versions, so that someone other than
 *   root could hard-link them (publish packs every file as root's, and a root-owned file writable by root
 *   alone can't be linked by anyone else where fs.protected_hardlinks is 1: no name of one needs
 *   accounting for, see test/sync/nofollow.test.ts).
 */
async function twoReleases(dir: string, groupWritable: string[] = []) {
  const src1 = join(dir, "src1");
  const src2 = join(dir, "src2");
  fs.mkdirSync(src1);
  v1(src1);
  for (const f of groupWritable) fs.chmodSync(join(src1, f), 0o664);
  Bun.spawnSync(["cp", "-a", src1, src2]);
  v2(src2);
  const store = join(dir, "store");
  const r1 = await publishRelease(store, src1, "r1");
  const r2 = await publishRelease(store, src2, "r2");
  return { store, r1, r2 };
}

describe("delta deploys", () => {
  for (const strategy of ["release", "rsync"] as const) {
    test(`${strategy}: the delta builds the same tree as the archive for every kind of change, fetching a fraction`, async () => {
      await using d = tempDir();
      const { r1, r2 } = await twoReleases(d.path);
      const viaArchive = join(d.path, "A");
      const viaDelta = join(d.path, "B");
      for (const r of [r1, r2])
        expect((await deployWithLog(manifestFor(r, viaArchive, { delta: false, strategy }))).result.ok).toBe(true);
      const first = await deployWithLog(manifestFor(r1, viaDelta, { strategy }));
      expect(first.result.ok).toBe(true);
      expect(first.log).toContain("delta: no previous release on this host: fetching the full archive");
      const second = await deployWithLog(manifestFor(r2, viaDelta, { strategy }));
      expect(second.result.ok).toBe(true);
      const root = (dest: string) => (strategy === "release" ? `${join(dest, "current")}/` : dest);
      expect(describeTree(root(viaDelta))).toEqual(describeTree(root(viaArchive)));
      const fetched = Number(
        /delta index sha256 [0-9a-f]{64} ok, \d+ chunks (?:and the tar stream's sha256 )?verified \((\d+) bytes fetched/.exec(
          second.log,
        )?.[1],
      );
      const archive = fs.statSync(r2.archive).size;
      // 20 KB changed in a 2 MB file: the chunks around it (each ≤ 256 KiB) plus the small files and the index.
      expect(fetched).toBeGreaterThan(20_000);
      expect(fetched).toBeLessThan(archive * 0.25);
      expect(second.log).toMatch(/delta: fetched .* in \d+ requests/);
    });
  }

  test("rsync: a file changed in place in dest (same size and mtime) is not reused, and dest ends as an archive deploy leaves it", async () => {
    await using d = tempDir();
    const { r1, r2 } = await twoReleases(d.path);
    const tamper = (dest: string) => {
      // Rewritten in place keeping size and mtime: only hashing can tell (rsync's dest has no record).
      const p = join(dest, "same.bin");
      const st = fs.statSync(p);
      const fd = fs.openSync(p, "r+");
      fs.writeSync(fd, new Uint8Array(1000).fill(7), 0, 1000, 100_000);
      fs.closeSync(fd);
      fs.utimesSync(p, st.atime, st.mtime);
    };
    const runs: string[] = [];
    for (const [name, delta] of [
      ["A", false],
      ["B", true],
      ["C", true],
    ] as const) {
      const dest = join(d.path, name);
      await deployWithLog(manifestFor(r1, dest, { strategy: "rsync", delta }));
      if (name !== "C") tamper(dest);
      const { result, log } = await deployWithLog(manifestFor(r2, dest, { strategy: "rsync", delta }));
      expect(result.ok).toBe(true);
      runs.push(log);
    }
    // same.bin's chunk that holds the change was fetched, not taken from the changed copy.
    const fetchedChunks = (log: string) => Number(/delta: fetched .* requests: (\d+) of \d+ chunks/.exec(log)?.[1]);
    expect(fetchedChunks(runs[1]!)).toBeGreaterThan(fetchedChunks(runs[2]!));
    // rsync's quick check (size and mtime) then leaves dest's copy alone, as after an archive deploy.
    expect(describeTree(join(d.path, "B"))).toEqual(describeTree(join(d.path, "A")));
  });

  test("release: unchanged files are not re-hashed (recorded at their deploy); a file the app wrote in place is", async () => {
    const app = appUser();
    if (process.getuid?.() === 0 && app === undefined)
      throw new Error("running as root but the pulldeploy-app user is missing: run scripts/setup.sh");
    await using d = tempDir();
    fs.chmodSync(d.path, 0o755);
    const { r1, r2 } = await twoReleases(d.path);
    const dest = join(d.path, "B");
    expect((await deployWithLog(manifestFor(r1, dest))).result.ok).toBe(true);
    expect(fs.readdirSync(join(dest, "releases"))).toContain(".delta-r1.rec");
    const plain = await deployWithLog(manifestFor(r2, join(d.path, "C"), { delta: false }));
    expect(plain.result.ok).toBe(true);
    // world.dat is world-writable (0666): the app writes into it; it cannot set the mtime back.
    const world = join(dest, "current/world.dat");
    if (app) {
      asApp(`printf XXXX | dd of=${world} bs=1 seek=1000 conv=notrunc 2>/dev/null`);
      expect(() => asApp(`touch -m -d @${T0} ${world}`)).toThrow(/Operation not permitted/);
    }
    const { result, log } = await deployWithLog(manifestFor(r2, dest));
    expect(result.ok).toBe(true);
    expect(log).toMatch(/reused from .*releases\/r1 \(.* of it unchanged since recorded, not re-hashed\)/);
    expect(describeTree(`${join(dest, "current")}/`)).toEqual(describeTree(`${join(d.path, "C/current")}/`));
    expect(
      fs
        .readdirSync(join(dest, "releases"))
        .filter((n) => n.startsWith(".delta-"))
        .sort(),
    ).toEqual([".delta-r1.rec", ".delta-r2.rec"]);
  });

  test("release: a pre command writing in place to a file the delta hard-linked: the tree is built again, and holds the release's bytes", async () => {
    await using d = tempDir();
    const { r1, r2 } = await twoReleases(d.path);
    const dest = join(d.path, "B");
    expect((await deployWithLog(manifestFor(r1, dest))).result.ok).toBe(true);
    // same.bin is unchanged in r2: linked from r1 without being read; `pre` then writes into r1's copy (the same
    // inode).
    const pre =
      `commands:\n  pre:\n    - "printf XXXX | dd of=${dest}/current/same.bin bs=1 seek=10 conv=notrunc ` +
      `2>/dev/null"\n`;
    const { result, log } = await deployWithLog(manifestFor(r2, dest, { extra: pre }));
    expect(result.ok).toBe(true);
    expect(log).toMatch(/not re-hashed/);
    expect(log).toContain("same.bin changed in");
    expect(
      fs.readFileSync(join(dest, "releases/r2/same.bin")).equals(fs.readFileSync(join(d.path, "src2/same.bin"))),
    ).toBe(true);
    expect(fs.readFileSync(join(dest, "releases/r1/same.bin")).subarray(10, 14).toString()).toBe("XXXX");
  });

  test("release: a recorded file with another hard link outside the releases is not trusted nor linked (its other name could write it later)", async () => {
    await using d = tempDir();
    const { r1, r2 } = await twoReleases(d.path, ["same.bin"]);
    const dest = join(d.path, "B");
    expect((await deployWithLog(manifestFor(r1, dest))).result.ok).toBe(true);
    fs.linkSync(join(dest, "releases/r1/same.bin"), join(d.path, "kept-elsewhere"));
    const { result, log } = await deployWithLog(manifestFor(r2, dest));
    expect(result.ok).toBe(true);
    const ino = (p: string) => fs.statSync(p).ino;
    expect(ino(join(dest, "releases/r2/same.bin"))).not.toBe(ino(join(dest, "releases/r1/same.bin")));
    expect(ino(join(dest, "releases/r2/a.txt"))).toBe(ino(join(dest, "releases/r1/a.txt")));
    expect(
      fs.readFileSync(join(dest, "releases/r2/same.bin")).equals(fs.readFileSync(join(d.path, "src2/same.bin"))),
    ).toBe(true);
    expect(log).toMatch(/delta: fetched/);
  });

  test("a spool left by a delta run killed with -9 is swept by the next one; a live run's is left alone", async () => {
    await using d = tempDir();
    const { r1, r2 } = await twoReleases(d.path);
    const tmp = join(d.path, "tmp");
    fs.mkdirSync(tmp);
    const dead = Bun.spawnSync(["true"]).pid;
    fs.mkdirSync(join(tmp, `pulldeploy-delta-${dead}-abc123`));
    fs.writeFileSync(join(tmp, `pulldeploy-delta-${dead}-abc123/chunks`), "left behind");
    fs.mkdirSync(join(tmp, `pulldeploy-delta-${process.pid}-live01`));
    const dest = join(d.path, "B");
    const env = { PATH: process.env.PATH, TMPDIR: tmp };
    await deployWithLog(manifestFor(r1, dest), { env });
    const { result, log } = await deployWithLog(manifestFor(r2, dest), { env });
    expect(result.ok).toBe(true);
    expect(log).toContain("delta: fetched");
    expect(fs.readdirSync(tmp)).toEqual([`pulldeploy-delta-${process.pid}-live01`]);
  });

  test("a tampered chunk in a pack is refused (checksum mismatch) and the archive is used", async () => {
    await using d = tempDir();
    const { store, r1, r2 } = await twoReleases(d.path);
    const dest = join(d.path, "B");
    await deployWithLog(manifestFor(r1, dest));
    // Flip one byte in the middle of every pack: whatever the delta fetches is corrupt.
    const packs = join(store, "web/delta/packs");
    for (const name of fs.readdirSync(packs)) {
      const b = fs.readFileSync(join(packs, name));
      for (let i = 100; i < b.length; i += 4096) b[i]! ^= 0xff;
      fs.writeFileSync(join(packs, name), b);
    }
    const { result, log } = await deployWithLog(manifestFor(r2, dest));
    expect(result.ok).toBe(true);
    expect(log).toMatch(
      /delta: chunk [0-9a-f]{12} \(file:\/\/.*\.pack bytes \d+-\d+\): (does not inflate|checksum mismatch).*; fetching the full archive/,
    );
    expect(log).toMatch(/checksum: sha256 [0-9a-f]{64} ok/);
    expect(fs.readFileSync(join(dest, "current/new.txt"), "utf8")).toBe("added\n");
  });

  test("a tampered index is refused by the manifest's checksum; a forged index with its own checksum and a hostile path is refused by the parser", async () => {
    await using d = tempDir();
    const { r1, r2 } = await twoReleases(d.path);
    const dest = join(d.path, "B");
    await deployWithLog(manifestFor(r1, dest));
    const idx = new URL(r2.delta.indexUrl).pathname;
    const text = new TextDecoder().decode(Bun.gunzipSync(fs.readFileSync(idx)));
    const forged = Bun.gzipSync(new TextEncoder().encode(text.replace('["new.txt"', '["../../escaped.txt"')));
    const forgedPath = join(d.path, "forged.idx");
    fs.writeFileSync(forgedPath, forged);
    // The same bytes under the real index name: the manifest's checksum no longer matches.
    fs.writeFileSync(idx, forged);
    const tampered = await deployWithLog(manifestFor(r2, dest));
    expect(tampered.result.ok).toBe(true);
    expect(tampered.log).toMatch(
      /delta: index file:\/\/.*r2\.idx: checksum mismatch: expected sha256 [0-9a-f]{64}, got [0-9a-f]{64}; fetching the full archive/,
    );
    // A manifest that names the forged index with its true checksum (a compromised publisher's
    // manifest, say): the path is refused like a tar name would be, nothing is written outside.
    const dest2 = join(d.path, "C");
    await deployWithLog(manifestFor(r1, dest2));
    const sum = new Bun.CryptoHasher("sha256").update(forged).digest("hex");
    const hostile = await deployWithLog(manifestFor(r2, dest2, { indexUrl: `file://${forgedPath}`, indexSha256: sum }));
    expect(hostile.log).toMatch(
      /delta: file:\/\/.*forged\.idx: index: entries\[\d+\]: unsafe entry: path contains \.\.: \.\.\/\.\.\/escaped\.txt; fetching the full archive/,
    );
    expect(hostile.result.ok).toBe(true);
    expect(fs.existsSync(join(d.path, "escaped.txt"))).toBe(false);
    expect(fs.existsSync(join(dest2, "escaped.txt"))).toBe(false);
  });

  test("over HTTP: ranged GETs coalesced; an origin that ignores Range, or sends other bytes for a range, makes the agent use the archive", async () => {
    await using d = tempDir();
    const { store, r1, r2 } = await twoReleases(d.path);
    let mode: "ok" | "no-range" | "tamper" = "ok";
    await using origin = httpServer((req) => {
      const path = join(store, decodeURIComponent(new URL(req.url).pathname));
      if (!fs.existsSync(path)) return new Response("not found", { status: 404 });
      const body = fs.readFileSync(path);
      const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.get("range") ?? "");
      if (!m || mode === "no-range") return new Response(body);
      const start = Number(m[1]);
      const end = m[2] === "" ? body.length - 1 : Number(m[2]);
      const part = Buffer.from(body.subarray(start, end + 1));
      if (mode === "tamper") part[Math.floor(part.length / 2)]! ^= 1;
      return new Response(part, { status: 206, headers: { "content-range": `bytes ${start}-${end}/${body.length}` } });
    });
    const http = (p: { archive: string }) => `${origin.url}${p.archive.slice(store.length)}`;
    const idxUrl = `${origin.url}/web/delta/r2.idx`;
    const run = async (dest: string) => {
      await deployWithLog(manifestFor(r1, dest, { src: http(r1), delta: false }));
      const before = origin.requests.length;
      const out = await deployWithLog(manifestFor(r2, dest, { src: http(r2), indexUrl: idxUrl }));
      return { ...out, requests: origin.requests.slice(before) };
    };
    const ok = await run(join(d.path, "ok"));
    expect(ok.result.ok).toBe(true);
    const ranged = ok.requests.filter((r) => r.headers.get("range"));
    expect(ranged.length).toBeGreaterThan(0);
    expect(ranged.length).toBeLessThanOrEqual(3);
    expect(ranged.every((r) => /^bytes=\d+-\d+$/.test(r.headers.get("range")!) && r.path.endsWith(".pack"))).toBe(true);
    expect(ok.requests.some((r) => r.path.endsWith(".tar.gz"))).toBe(false);

    mode = "no-range";
    const noRange = await run(join(d.path, "no-range"));
    expect(noRange.result.ok).toBe(true);
    expect(noRange.log).toMatch(
      /delta: ranged GET: fetch http:\/\/.*\.pack: server ignored the Range request \(status 200\); fetching the full archive/,
    );
    expect(noRange.requests.some((r) => r.path.endsWith("r2.tar.gz"))).toBe(true);

    mode = "tamper";
    const tampered = await run(join(d.path, "tamper"));
    expect(tampered.result.ok).toBe(true);
    expect(tampered.log).toMatch(
      /delta: chunk [0-9a-f]{12} .*(does not inflate|checksum mismatch).*; fetching the full archive/,
    );
    for (const r of [noRange, tampered])
      expect(describeTree(`${join(d.path, r === noRange ? "no-range" : "tamper", "current")}/`)).toEqual(
        describeTree(`${join(d.path, "ok/current")}/`),
      );
  });

  test("most files changed: the delta would cost more than half the archive, so the archive is fetched", async () => {
    await using d = tempDir();
    const src1 = join(d.path, "s1");
    const src2 = join(d.path, "s2");
    fs.mkdirSync(src1);
    fs.mkdirSync(src2);
    fs.writeFileSync(join(src1, "data.bin"), noise(1, 500_000));
    fs.writeFileSync(join(src2, "data.bin"), noise(2, 500_000));
    const store = join(d.path, "store");
    const r1 = await publishRelease(store, src1, "r1");
    const r2 = await publishRelease(store, src2, "r2");
    const dest = join(d.path, "B");
    await deployWithLog(manifestFor(r1, dest));
    const { result, log } = await deployWithLog(manifestFor(r2, dest));
    if (!result.ok) console.error(log);
    expect(result.ok).toBe(true);
    expect(log).toMatch(
      /delta: \d+ of \d+ chunks are missing here \(.*, more than 50% of the .* archive\); fetching the full archive/,
    );
  });
});

describe("delta deploys: what the record and the releases are trusted with", () => {
  const sameIno = (a: string, b: string) => fs.statSync(a).ino === fs.statSync(b).ino;
  const bytesOf = (p: string) => fs.readFileSync(p);

  test("a record that is not this tree's (another host's, copied in) is not believed: a file root rewrote in place keeping size and mtime is fetched, not linked", async () => {
    await using d = tempDir();
    const { r1, r2 } = await twoReleases(d.path);
    const [b, c] = [join(d.path, "B"), join(d.path, "C")];
    for (const dest of [b, c]) expect((await deployWithLog(manifestFor(r1, dest))).result.ok).toBe(true);
    // Root rewrites B's same.bin in place, size and mtime kept: B's own record would still vouch for it
    // (only root can set an mtime back: the record's stated trust), C's record names other inodes.
    const same = join(b, "releases/r1/same.bin");
    const st = fs.statSync(same);
    const fd = fs.openSync(same, "r+");
    fs.writeSync(fd, new Uint8Array(4096).fill(1), 0, 4096, 0);
    fs.closeSync(fd);
    fs.utimesSync(same, st.atime, st.mtime);
    fs.copyFileSync(join(c, "releases/.delta-r1.rec"), join(b, "releases/.delta-r1.rec"));
    const { result, log } = await deployWithLog(manifestFor(r2, b));
    expect(result.ok).toBe(true);
    expect(log).not.toMatch(/not re-hashed/);
    expect(bytesOf(join(b, "releases/r2/same.bin")).equals(bytesOf(join(d.path, "src2/same.bin")))).toBe(true);
    expect(sameIno(join(b, "releases/r2/same.bin"), same)).toBe(false);
    // The untouched files are still hard-linked, after their bytes were compared.
    expect(sameIno(join(b, "releases/r2/a.txt"), join(b, "releases/r1/a.txt"))).toBe(true);
    const viaArchive = join(d.path, "A");
    for (const r of [r1, r2]) await deployWithLog(manifestFor(r, viaArchive, { delta: false }));
    expect(describeTree(`${join(b, "current")}/`)).toEqual(describeTree(`${join(viaArchive, "current")}/`));
  });

  test("names of a file in older releases are counted and it is linked again unread; a name outside, or in a release directory others can write, and it is written instead", async () => {
    await using d = tempDir();
    const { store, r1, r2 } = await twoReleases(d.path, ["same.bin", "dir/sub/deep.txt"]);
    const r3 = await publishRelease(store, join(d.path, "src2"), "r3");
    const deploy3 = async (name: string, plant?: (dest: string) => void) => {
      const dest = join(d.path, name);
      for (const r of [r1, r2]) expect((await deployWithLog(manifestFor(r, dest))).result.ok).toBe(true);
      plant?.(dest);
      const out = await deployWithLog(manifestFor(r3, dest));
      expect(out.result.ok).toBe(true);
      expect(bytesOf(join(dest, "releases/r3/same.bin")).equals(bytesOf(join(d.path, "src2/same.bin")))).toBe(true);
      return {
        dest,
        log: out.log,
        linked: sameIno(join(dest, "releases/r3/same.bin"), join(dest, "releases/r2/same.bin")),
      };
    };
    const plain = await deploy3("plain");
    expect(plain.linked).toBe(true);
    expect(fs.statSync(join(plain.dest, "releases/r3/same.bin")).nlink).toBe(3);
    expect(plain.log).toMatch(/not re-hashed/);
    const outside = await deploy3("outside", (dest) =>
      fs.linkSync(join(dest, "releases/r2/same.bin"), join(d.path, "kept-elsewhere")),
    );
    expect(outside.linked).toBe(false);
    expect(sameIno(join(outside.dest, "releases/r3/a.txt"), join(outside.dest, "releases/r2/a.txt"))).toBe(true);
    // r1's dir/sub writable by others: its deep.txt is a name someone else could have put there.
    const writable = await deploy3("writable", (dest) => fs.chmodSync(join(dest, "releases/r1/dir/sub"), 0o777));
    expect(writable.linked).toBe(true);
    const deep = (rel: string) => join(writable.dest, rel, "dir/sub/deep.txt");
    expect(sameIno(deep("releases/r3"), deep("releases/r2"))).toBe(false);
    expect(bytesOf(deep("releases/r3")).toString()).toBe("deep\n");
  });

  test("--max-bandwidth holds on the delta path: the ranged GETs are paced", async () => {
    await using d = tempDir();
    const { store, r1, r2 } = await twoReleases(d.path);
    await using origin = httpServer((req) => {
      const body = fs.readFileSync(join(store, decodeURIComponent(new URL(req.url).pathname)));
      const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.get("range") ?? "");
      if (!m) return new Response(body);
      const part = body.subarray(Number(m[1]), Number(m[2]) + 1);
      return new Response(part, { status: 206, headers: { "content-range": `bytes ${m[1]}-${m[2]}/${body.length}` } });
    });
    const ranged = (from: number) =>
      origin.requests.slice(from).reduce((n, r) => {
        const m = /^bytes=(\d+)-(\d+)$/.exec(r.headers.get("range") ?? "");
        return m ? n + Number(m[2]) - Number(m[1]) + 1 : n;
      }, 0);
    const run = async (dest: string, maxBandwidth?: number) => {
      await deployWithLog(manifestFor(r1, dest));
      const before = origin.requests.length;
      const started = performance.now();
      const out = await deployWithLog(manifestFor(r2, dest, { indexUrl: `${origin.url}/web/delta/r2.idx` }), {
        fetch: { retry: 0, retryWaitMs: 10, maxBandwidth },
      });
      expect(out.result.ok).toBe(true);
      expect(out.log).toContain("delta: fetched");
      return { seconds: (performance.now() - started) / 1000, bytes: ranged(before) };
    };
    const free = await run(join(d.path, "free"));
    expect(free.bytes).toBeGreaterThan(20_000);
    // Capped at the ranges' bytes per second: about a second, where uncapped took a fraction of it.
    const capped = await run(join(d.path, "capped"), free.bytes);
    expect(capped.bytes).toBe(free.bytes);
    expect(capped.seconds).toBeGreaterThan(0.9);
    expect(capped.seconds).toBeGreaterThan(free.seconds + 0.5);
  });

  test("the agent killed with -9 in the middle of the build (waiting for a chunk it had to fetch again): the next deploy cleans up and builds the same tree", async () => {
    await using d = tempDir();
    const { store, r1, r2 } = await twoReleases(d.path);
    let stall = true;
    let ranged = 0;
    await using origin = httpServer((req) => {
      const body = fs.readFileSync(join(store, decodeURIComponent(new URL(req.url).pathname)));
      const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.get("range") ?? "");
      if (!m) return new Response(body);
      // The first ranged GET is the plan's; the second comes from the build: held until the kill.
      if (++ranged === 2 && stall) return new Promise<Response>(() => {});
      const part = body.subarray(Number(m[1]), Number(m[2]) + 1);
      return new Response(part, { status: 206, headers: { "content-range": `bytes ${m[1]}-${m[2]}/${body.length}` } });
    });
    const dest = join(d.path, "B");
    const tmp = join(d.path, "tmp");
    const state = join(d.path, "state");
    fs.mkdirSync(tmp);
    const env = { PATH: process.env.PATH, TMPDIR: tmp };
    expect((await deployWithLog(manifestFor(r1, dest), { env })).result.ok).toBe(true);
    // world.dat is unchanged in r2 but rewritten in r1 since recorded: not linked, its chunk no longer
    // held here, so the build fetches it.
    fs.writeFileSync(join(dest, "releases/r1/world.dat"), noise(99, 100_000));
    const manifest = manifestFor(r2, dest, { indexUrl: `${origin.url}/web/delta/r2.idx` });
    const agent = Bun.spawn([BINARY, "agent"], {
      stdin: new TextEncoder().encode(`${manifest}\n`),
      stdout: "ignore",
      stderr: "pipe",
      env: { ...env, PULLDEPLOY_STATE_DIR: state },
    });
    await waitFor(() => ranged === 2, "the build's ranged GET");
    const partial = fs.readdirSync(join(dest, "releases")).find((n) => n.startsWith(".partial-r2-"));
    expect(partial).toBeDefined();
    expect(fs.existsSync(join(dest, "releases", partial!, "a.txt"))).toBe(true);
    expect(fs.readdirSync(tmp).some((n) => n.startsWith(`pulldeploy-delta-${agent.pid}-`))).toBe(true);
    agent.kill("SIGKILL");
    await agent.exited;
    stall = false;
    const { result, log } = await deployWithLog(manifest, { env });
    expect(result.ok).toBe(true);
    expect(log).toContain("delta: fetched");
    expect(fs.readdirSync(join(dest, "releases")).sort()).toEqual([
      ".delta-r1.rec",
      ".delta-r2.rec",
      ".order",
      "r1",
      "r2",
    ]);
    expect(fs.readdirSync(tmp)).toEqual([]);
    const viaArchive = join(d.path, "A");
    for (const r of [r1, r2]) await deployWithLog(manifestFor(r, viaArchive, { delta: false }));
    expect(describeTree(`${join(dest, "current")}/`)).toEqual(describeTree(`${join(viaArchive, "current")}/`));
  });
});
