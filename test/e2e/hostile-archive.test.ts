/**
 * Hostile archives through the compiled binary (issue 8, classes 2, 3 and 6 and the fuzzer's cases):
 * the agent runs as root, `dest` belongs to the unprivileged app user. Every refusal exits 1 with one
 * log line naming the phase, runs the failure hooks with PULLDEPLOY_FAILED_PHASE=extract, and leaves
 * dest and a sentinel dir beside it exactly as they were.
 */
import { beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { appUser, type AppUser } from "../support/app-user.ts";
import { BINARY, listTree, run, tempDir } from "../support/helpers.ts";
import { base256, entry, header, pax, rec, tar } from "../archive/_forge.ts";
import { archiveCase } from "../fuzz/mutate.ts";
import { baseArchives } from "../fuzz/run.ts";

let app: AppUser;
beforeAll(() => {
  if (!fs.existsSync(BINARY)) throw new Error(`${BINARY} is missing: run make build`);
  if (process.getuid?.() === 0) {
    const u = appUser();
    if (u === undefined)
      throw new Error("running as root but the pulldeploy-app user is missing: run scripts/setup.sh");
    app = u;
  }
});

const TS = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z /;

/** Everything under `dir`: path, type, and a file's content. */
function snapshot(dir: string): string[] {
  return listTree(dir).map((p) => {
    const full = join(dir, p);
    const st = fs.lstatSync(full);
    if (st.isSymbolicLink()) return `${p} -> ${fs.readlinkSync(full)}`;
    return st.isFile() ? `${p} = ${fs.readFileSync(full, "utf8")}` : p;
  });
}

interface Deployed {
  code: number;
  /** The failure hook's `phase|error` lines. */
  failures: string[];
  /** stderr's lines, timestamps removed. */
  log: string[];
  dest: string[];
  destBefore: string[];
  outside: string[];
}

/** Deploy `archive` (gzip-compressed unless `plain`) with a fresh, app-owned dest. */
async function deployArchive(
  archive: Uint8Array,
  opts: { strategy?: string; flags?: string[]; gzip?: boolean } = {},
): Promise<Deployed> {
  await using d = tempDir("pd-hostile-");
  const dest = join(d.path, "dest");
  const outside = join(d.path, "outside");
  fs.mkdirSync(outside);
  fs.writeFileSync(join(outside, "keep"), "sentinel");
  const strategy = opts.strategy ?? "rsync";
  if (strategy === "release") {
    fs.mkdirSync(join(dest, "releases/r0"), { recursive: true });
    fs.writeFileSync(join(dest, "releases/r0/index.html"), "v0");
    fs.symlinkSync("releases/r0", join(dest, "current"));
  } else {
    fs.mkdirSync(join(dest, "lib"), { recursive: true });
    fs.writeFileSync(join(dest, "index.html"), "v0");
    fs.writeFileSync(join(dest, "lib/a.js"), "a0");
  }
  if (app) Bun.spawnSync(["chown", "-R", "-h", `${app.uid}:${app.gid}`, dest]);
  // releases/ and the releases in it are the agent's (root's), as a previous deploy leaves them; the rest is the app's.
  if (app && strategy === "release") Bun.spawnSync(["chown", "-R", "-h", "0:0", join(dest, "releases")]);
  const destBefore = snapshot(dest);
  const file = join(d.path, "app.tar.gz");
  fs.writeFileSync(file, opts.gzip === false ? archive : Bun.gzipSync(archive as Uint8Array<ArrayBuffer>));
  const hex = new Bun.CryptoHasher("sha256").update(fs.readFileSync(file)).digest("hex");
  const hookLog = join(d.path, "failure.log");
  fs.writeFileSync(
    join(d.path, "m.yml"),
    `src: file://${file}\nchecksum: ${hex}\ndest: ${dest}\nsync_strategy: ${strategy}\ncommands:\n  failure: ` +
      `['printf "%s|%s\\n" "$PULLDEPLOY_FAILED_PHASE" "$PULLDEPLOY_ERROR" >> ${hookLog}']\n`,
  );
  const r = await run(
    [
      "agent",
      "--manifest",
      `file://${d.path}/m.yml`,
      "--max-files",
      "200",
      "--max-extract-size",
      "10MB",
      ...(opts.flags ?? []),
    ],
    { env: { TMPDIR: d.path } },
  );
  return {
    code: r.code,
    failures: fs.existsSync(hookLog) ? fs.readFileSync(hookLog, "utf8").trimEnd().split("\n") : [],
    log: r.stderr
      .trimEnd()
      .split("\n")
      .map((l) => l.replace(TS, "")),
    dest: snapshot(dest),
    destBefore,
    outside: snapshot(outside),
  };
}

/** Refused in phase extract with `message`: one line in the log and in the failure hook; nothing changed. */
function expectRefused(r: Deployed, message: string) {
  expect(r.code).toBe(1);
  expect(r.log).toContain(`deploy failed in phase extract: ${message}`);
  expect(r.failures).toEqual([`extract|${message}`]);
  expect(r.dest).toEqual(r.destBefore);
  expect(r.outside).toEqual(["keep = sentinel"]);
}

const ok = entry({ name: "index.html", data: "v1" });

describe("refused through the binary, dest and the world untouched", () => {
  test.each([
    [
      "class 2: a newline in a name (a forged log line)",
      tar(ok, entry({ name: "x\n2026-12-04T00:00:00.000Z deploy succeeded", data: "x" })),
      "unsafe entry: control character in name: x\\x0a2026-12-04T00:00:00.000Z deploy succeeded",
    ],
    [
      "class 2: invalid UTF-8 that a lax decoder would collapse into another name",
      tar(ok, entry({ name: Buffer.from([0x69, 0x6e, 0x64, 0x65, 0x78, 0xff]), data: "x" })),
      "unsafe entry: name is not valid UTF-8: index\\xff",
    ],
    [
      "class 2: NUL inside a pax path",
      tar(pax([rec("path", Buffer.from("lib/a.js\0../../x"))]), ok),
      "unsafe entry: NUL in pax path: PaxHeaders/file",
    ],
    [
      "class 2: a dir replaced by a symlink out, then a file through it",
      tar(
        entry({ name: "lib/", type: "5" }),
        entry({ name: "lib", type: "2", linkname: "../outside" }),
        entry({ name: "lib/keep", data: "pwned" }),
      ),
      "unsafe entry: path goes through a symlink: lib/keep",
    ],
    [
      "class 3: a size that is not octal",
      tar(ok, entry({ name: "f", size: "0000000008\0" })),
      'bad tar header: size is not an octal number ("0000000008\\x00\\x00"): f',
    ],
    [
      "class 3: a negative base-256 size",
      tar(ok, entry({ name: "f", size: base256(-512n, 12) })),
      "bad tar header: size is negative (-512): f",
    ],
    [
      "class 3: a pax record whose length is off by one",
      tar(pax([Buffer.from("13 path=abc\n")]), ok),
      "bad pax header: record at byte 0 is not 13 bytes ending in a newline: PaxHeaders/file",
    ],
    [
      "class 3: pax size=NaN",
      tar(pax([rec("size", "NaN")]), ok),
      'bad pax header: size="NaN" is not a valid size: PaxHeaders/file',
    ],
    [
      "class 3: a GNU long name declaring 1 GiB (refused before it is held)",
      tar(header({ name: "././@LongLink", type: "L", size: 2 ** 30, magic: "gnu" })),
      "GNU long name of 1073741824 bytes is larger than the 1048576-byte limit: ././@LongLink",
    ],
    [
      "class 3: a pax size beyond --max-extract-size",
      tar(pax([rec("size", String(2 ** 40))]), header({ name: "big" })),
      "archive expands beyond 10000000 bytes: big",
    ],
    [
      "class 3: pax headers count against --max-files",
      tar(
        ...Array.from({ length: 120 }, (_, i) => [
          pax([rec("mtime", "1")]),
          entry({ name: `f${i}`, data: "x" }),
        ]).flat(),
      ),
      "too many entries (limit 200, counting 101 pax and long-name headers): PaxHeaders/file",
    ],
    [
      "class 3: one deep name implies more directories than --max-files",
      tar(pax([rec("path", `${"d/".repeat(250)}f`)]), entry({ name: "x", data: "x" })),
      "too many entries (limit 200, counting 1 pax and long-name headers, counting 250 directories the archive " +
        `implies): ${"d/".repeat(250)}f`,
    ],
    [
      "class 6: an empty archive",
      tar(),
      "empty archive: no entry besides its root; deploying it would empty dest (pass --allow-empty-archive if " +
        "that is what you want)",
    ],
    [
      "class 6: an archive of only ./",
      tar(entry({ name: "./", type: "5" })),
      "empty archive: no entry besides its root; deploying it would empty dest (pass --allow-empty-archive if " +
        "that is what you want)",
    ],
  ] as [string, Uint8Array, string][])("%s", async (_name, archive, message) => {
    expectRefused(await deployArchive(archive), message);
  });

  test.each(["mv", "release"])("with sync_strategy %s too", async (strategy) => {
    expectRefused(
      await deployArchive(tar(ok, entry({ name: "a\x1bb", data: "x" })), { strategy }),
      "unsafe entry: control character in name: a\\x1bb",
    );
    expectRefused(
      await deployArchive(tar(entry({ name: "./", type: "5" })), { strategy }),
      "empty archive: no entry besides its root; deploying it would empty dest (pass --allow-empty-archive if " +
        "that is what you want)",
    );
  });

  test("--allow-empty-archive deploys the empty tree (dest emptied, as asked)", async () => {
    const r = await deployArchive(tar(entry({ name: "./", type: "5" })), { flags: ["--allow-empty-archive"] });
    expect(r.code).toBe(0);
    expect(r.failures).toEqual([]);
    expect(r.dest).toEqual([]);
  });

  test("a valid archive still deploys (the control)", async () => {
    const r = await deployArchive(tar(ok, entry({ name: "lib/", type: "5" }), entry({ name: "lib/a.js", data: "a1" })));
    expect(r.code).toBe(0);
    expect(r.dest).toEqual(["index.html = v1", "lib/", "lib/a.js = a1"]);
  });
});

test("12 fuzzed archives through the binary: each deploys or fails in phase extract with its failure hook, dest intact", async () => {
  await using d = tempDir("pd-fuzz-e2e-");
  const bases = await baseArchives(d.path);
  // The mutations aim absolute names and links at this sentinel (each deploy also has its own beside dest).
  const sentinel = join(d.path, "outside");
  fs.mkdirSync(sentinel);
  fs.writeFileSync(join(sentinel, "keep"), "sentinel");
  const outcomes: string[] = [];
  for (let i = 0; i < 12; i++) {
    const c = archiveCase(20261204, i, { outside: sentinel, bases });
    const r = await deployArchive(c.bytes, { gzip: !c.gzip });
    const where = `case ${i}: ${c.steps.join("; ")}`;
    expect(r.outside, where).toEqual(["keep = sentinel"]);
    expect(snapshot(sentinel), where).toEqual(["keep = sentinel"]);
    if (r.code === 0) {
      outcomes.push("deployed");
      continue;
    }
    expect(r.code, where).toBe(1);
    expect(r.failures, where).toHaveLength(1);
    expect(r.failures[0], where).toStartWith("extract|");
    expect(
      r.log.filter((l) => l.startsWith("deploy failed in phase extract: ")),
      where,
    ).toHaveLength(1);
    expect(r.dest, where).toEqual(r.destBefore);
    outcomes.push("refused");
  }
  expect(outcomes).toContain("refused");
});
