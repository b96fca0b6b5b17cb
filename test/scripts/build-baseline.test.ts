/**
 * scripts/build-baseline.sh (make bench BENCH_BASELINE=<commit>): builds another commit's executable
 * in a git worktree of its own, with node_modules copied, and leaves this checkout as it was. Run in a
 * small git repository of its own (a main.ts printing its commit and a word that changes between
 * commits), with this checkout's bun.
 */
import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { ROOT, tempDir } from "../support/helpers.ts";

const BUN = join(ROOT, "node_modules/.bin/bun");

/** mktemp's dir (TMPDIR) is the repo's tmp/, to see what the script leaves there. */
function run(cmd: string[], cwd: string): { code: number; stdout: string; stderr: string } {
  const p = Bun.spawnSync(cmd, {
    cwd,
    stdout: "pipe",
    stderr: "pipe",
    env: {
      ...process.env,
      TMPDIR: join(cwd, "tmp"),
      GIT_AUTHOR_NAME: "t",
      GIT_AUTHOR_EMAIL: "t@t",
      GIT_COMMITTER_NAME: "t",
      GIT_COMMITTER_EMAIL: "t@t",
    },
  });
  return { code: p.exitCode ?? -1, stdout: p.stdout.toString(), stderr: p.stderr.toString() };
}
function ok(cmd: string[], cwd: string): string {
  const r = run(cmd, cwd);
  if (r.code !== 0) throw new Error(`${cmd.join(" ")}: exit ${r.code}: ${r.stderr}`);
  return r.stdout;
}

/**
 * A repo whose src/main.ts prints `word`, the baked commit and version (package.json's, "1.0.<word>");
 * node_modules (untracked) holds bun.
 */
function makeRepo(dir: string): { first: string; second: string } {
  fs.mkdirSync(join(dir, "scripts"));
  fs.copyFileSync(join(ROOT, "scripts/build-baseline.sh"), join(dir, "scripts/build-baseline.sh"));
  fs.chmodSync(join(dir, "scripts/build-baseline.sh"), 0o755);
  fs.mkdirSync(join(dir, "node_modules/.bin"), { recursive: true });
  fs.symlinkSync(fs.realpathSync(BUN), join(dir, "node_modules/.bin/bun"));
  fs.writeFileSync(join(dir, "node_modules/marker"), "untouched");
  fs.writeFileSync(join(dir, ".gitignore"), "node_modules/\n.bench/\ntmp/\n");
  fs.mkdirSync(join(dir, "tmp"));
  fs.mkdirSync(join(dir, "src"));
  const main = (word: string) =>
    "declare const PULLDEPLOY_COMMIT: string;\ndeclare const PULLDEPLOY_VERSION: string;\n" +
    `console.log("${word}", PULLDEPLOY_COMMIT, PULLDEPLOY_VERSION);\n`;
  const pkg = (word: string) => JSON.stringify({ name: "t", version: `1.0.${word}` });
  ok(["git", "init", "-q"], dir);
  fs.writeFileSync(join(dir, "src/main.ts"), main("old"));
  fs.writeFileSync(join(dir, "package.json"), pkg("old"));
  ok(["git", "add", "-A"], dir);
  ok(["git", "commit", "-qm", "old"], dir);
  const first = ok(["git", "rev-parse", "HEAD"], dir).trim();
  fs.writeFileSync(join(dir, "src/main.ts"), main("new"));
  fs.writeFileSync(join(dir, "package.json"), pkg("new"));
  ok(["git", "commit", "-qam", "new"], dir);
  return { first, second: ok(["git", "rev-parse", "HEAD"], dir).trim() };
}

describe("scripts/build-baseline.sh", () => {
  test("builds the named commit's executable, not the checkout's; no worktree or temp dir is left; a second run reuses it", async () => {
    await using d = tempDir("pd-baseline-");
    const { first } = makeRepo(d.path);
    const out = ok(["scripts/build-baseline.sh", first.slice(0, 7), "--compile"], d.path).trim();
    expect(out).toBe(
      join(
        fs.realpathSync(d.path),
        ".bench/baseline",
        `${first}-${out.split("-").at(-1)!.split("/")[0]}`,
        "pulldeploy",
      ),
    );
    expect(ok([out], d.path).trim()).toBe(`old ${first.slice(0, 7)} 1.0.old`);
    // The checkout: its file, its node_modules and its worktree list as they were.
    expect(fs.readFileSync(join(d.path, "src/main.ts"), "utf8")).toContain('"new"');
    expect(fs.readFileSync(join(d.path, "node_modules/marker"), "utf8")).toBe("untouched");
    expect(ok(["git", "worktree", "list", "--porcelain"], d.path).match(/^worktree /gm)).toHaveLength(1);
    expect(ok(["git", "status", "--porcelain"], d.path)).toBe("");
    expect(fs.readdirSync(join(d.path, "tmp"))).toEqual([]);
    // Kept: the same commit and flags give the same file, not rebuilt.
    const mtime = fs.statSync(out).mtimeMs;
    expect(ok(["scripts/build-baseline.sh", first, "--compile"], d.path).trim()).toBe(out);
    expect(fs.statSync(out).mtimeMs).toBe(mtime);
  }, 60_000);

  test("a name that is not a commit is refused in one line naming it; nothing is built", async () => {
    await using d = tempDir("pd-baseline-");
    makeRepo(d.path);
    const r = run(["scripts/build-baseline.sh", "no-such-ref", "--compile"], d.path);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(
      "build-baseline: 'no-such-ref' is not a commit of this clone; give a hash or a ref (e.g. 386a006)\n",
    );
    expect(r.stdout).toBe("");
    expect(fs.existsSync(join(d.path, ".bench"))).toBe(false);
  });

  test("a failed build leaves no executable behind and no worktree", async () => {
    await using d = tempDir("pd-baseline-");
    makeRepo(d.path);
    fs.writeFileSync(join(d.path, "src/main.ts"), "console.log(;\n");
    ok(["git", "commit", "-qam", "broken"], d.path);
    const broken = ok(["git", "rev-parse", "HEAD"], d.path).trim();
    const r = run(["scripts/build-baseline.sh", broken, "--compile"], d.path);
    expect(r.code).not.toBe(0);
    expect(r.stdout).toBe("");
    const built = fs.existsSync(join(d.path, ".bench/baseline"))
      ? fs.readdirSync(join(d.path, ".bench/baseline"), { recursive: true }).map(String)
      : [];
    expect(built.filter((n) => n.endsWith("pulldeploy"))).toEqual([]);
    expect(ok(["git", "worktree", "list", "--porcelain"], d.path).match(/^worktree /gm)).toHaveLength(1);
    expect(fs.readdirSync(join(d.path, "tmp"))).toEqual([]);
  });
});
