/**
 * The CLI contract of `publish` for bad input, through the compiled binary: one line on stderr, exit 1
 * (2 for usage errors), nothing uploaded. Unreadable files are tested as an unprivileged user
 * (`setpriv`), since root reads everything.
 */
import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { BINARY, run, tempDir, writeTree, type RunResult } from "../support/helpers.ts";

function publish(args: string[]): Promise<RunResult> {
  return run(["publish", ...args]);
}

/** stderr is exactly one `pulldeploy publish: …` line (after the timestamp). */
function oneLine(r: RunResult): string {
  const lines = r.stderr.trim().split("\n");
  expect(lines).toHaveLength(1);
  return lines[0]!.replace(/^\S+ /, "");
}

describe("the directory", () => {
  test.each([
    ["missing", (d: string) => join(d, "nope"), "no such directory"],
    [
      "empty",
      (d: string) => (fs.mkdirSync(join(d, "app")), join(d, "app")),
      "nothing to pack (the directory is empty)",
    ],
    [
      "empty after --exclude",
      (d: string) => (writeTree(d, { "app/a.log": "" }), join(d, "app")),
      "nothing to pack (everything in it is excluded by --exclude)",
    ],
    ["a file", (d: string) => (writeTree(d, { "f.txt": "" }), join(d, "f.txt")), "not a directory"],
  ])("%s: exit 1, one line, nothing stored", async (_what, make, message) => {
    await using d = tempDir();
    const dir = make(d.path);
    const r = await publish([
      dir,
      "--to",
      `file://${d.path}/store`,
      "--role",
      "web",
      "--dest",
      "/srv/web",
      "--exclude",
      "*.log",
      "--no-kv",
      "--no-event",
    ]);
    expect(r.code).toBe(1);
    expect(oneLine(r)).toBe(`pulldeploy publish: pack ${dir}: ${message}`);
    expect(r.stdout).toBe("");
    expect(fs.existsSync(join(d.path, "store"))).toBe(false);
  });

  test("special files are all listed in one error", async () => {
    await using d = tempDir();
    writeTree(d.path, { "app/ok": "x" });
    expect(Bun.spawnSync(["mkfifo", join(d.path, "app/fifo1"), join(d.path, "app/fifo2")]).exitCode).toBe(0);
    const r = await publish([
      join(d.path, "app"),
      "--to",
      `file://${d.path}/store`,
      "--role",
      "web",
      "--dest",
      "/srv/web",
      "--no-kv",
      "--no-event",
    ]);
    expect(r.code).toBe(1);
    expect(oneLine(r)).toBe(
      `pulldeploy publish: pack ${d.path}/app: 2 entries cannot be packed: fifo1 (fifo), fifo2 (fifo)`,
    );
  });

  test("unreadable files and directories (as an unprivileged user) are all listed in one error", async () => {
    if (!Bun.which("setpriv") || process.getuid?.() !== 0) return;
    await using d = tempDir();
    fs.chmodSync(d.path, 0o755);
    writeTree(d.path, { "app/ok.txt": "x", "app/secret.key": "k", "app/private/a": "a", "app/conf/db.yml": "pw" });
    fs.chmodSync(join(d.path, "app/secret.key"), 0o600);
    fs.chmodSync(join(d.path, "app/private"), 0o700);
    fs.chmodSync(join(d.path, "app/conf/db.yml"), 0o000);
    const p = Bun.spawn(
      [
        "setpriv",
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        BINARY,
        "publish",
        join(d.path, "app"),
        "--to",
        `file://${d.path}/store`,
        "--role",
        "web",
        "--dest",
        "/srv/web",
        "--no-kv",
        "--no-event",
      ],
      { stdout: "pipe", stderr: "pipe", env: { PATH: process.env.PATH!, HOME: "/tmp" } },
    );
    const [stdout, stderr, code] = await Promise.all([
      new Response(p.stdout).text(),
      new Response(p.stderr).text(),
      p.exited,
    ]);
    expect(code).toBe(1);
    expect(oneLine({ code, stdout, stderr })).toBe(
      `pulldeploy publish: pack ${d.path}/app: 3 entries cannot be packed: conf/db.yml (unreadable), private/ ` +
        "(unreadable directory), secret.key (unreadable)",
    );
    expect(fs.existsSync(join(d.path, "store"))).toBe(false);
  });
});

describe("usage errors exit 2 with one line", () => {
  test.each([
    [[], "missing the directory to publish"],
    [["APP"], "--to is required"],
    [["APP", "--to", "file:///tmp/x"], "--role is required"],
    [["APP", "--to", "ftp://host/x", "--role", "web"], '--to: unknown scheme "ftp" (valid: file, s3, http, https)'],
    [["APP", "--to", "/tmp/x", "--role", "web"], '--to "/tmp/x" is not a URL'],
    [["APP", "--to", "file:///tmp/x", "--role", "web/admin", "--dest", "/srv"], '--role: role "web/admin" must be'],
    [
      ["APP", "--to", "file:///tmp/x", "--role", "web", "--dest", "srv/web"],
      '--dest must be an absolute path, got "srv/web"',
    ],
    [
      ["APP", "--to", "file:///tmp/x", "--role", "web", "--dest-mode", "755x"],
      '--dest-mode: expected an octal mode like 0755, got "755x"',
    ],
    [
      ["APP", "--to", "file:///tmp/x", "--role", "web", "--sync-strategy", "scp"],
      '--sync-strategy: unknown strategy "scp"',
    ],
    [["APP", "--to", "file:///tmp/x", "--role", "web", "--gzip-level", "13"], "--gzip-level: expected 1–12, got 13"],
    [
      ["APP", "--to", "file:///tmp/x", "--role", "web", "--checksum-algorithm", "crc32"],
      '--checksum-algorithm: unknown algorithm "crc32"',
    ],
    [
      ["APP", "--to", "file:///tmp/x", "--role", "web", "--manifest", "/nonexistent/hooks.yml"],
      "--manifest /nonexistent/hooks.yml: no such file",
    ],
    [
      ["APP", "--to", "file:///tmp/x", "--role", "web", "--via", "pigeon"],
      '--via: expected consul or serf, got "pigeon"',
    ],
    [["APP", "--to", "file:///tmp/x", "--role", "web", "--tag", "blue", "--dest", "/srv"], "--tag needs --service"],
    [["APP", "--to", "file:///tmp/x", "--role", "web", "--bogus"], "unknown flag --bogus"],
    [["APP", "--to", "file://host/x", "--role", "web", "--dest", "/srv"], 'file URLs take no host ("host")'],
    [
      [
        "APP",
        "--to",
        "file:///tmp/x",
        "--role",
        "web",
        "--dest",
        "/srv",
        "--no-kv",
        "--no-event",
        "--retry-wait",
        "soon",
      ],
      "--retry-wait:",
    ],
  ])("%j", async (args, message) => {
    await using d = tempDir();
    writeTree(d.path, { "app/x": "x" });
    const r = await publish(args.map((a) => (a === "APP" ? join(d.path, "app") : a)));
    expect(r.code).toBe(2);
    expect(oneLine(r)).toContain(message);
  });

  test("the Consul settings are checked before packing", async () => {
    await using d = tempDir();
    writeTree(d.path, { "app/x": "x" });
    const r = await run(
      ["publish", join(d.path, "app"), "--to", `file://${d.path}/store`, "--role", "web", "--dest", "/srv"],
      { env: { CONSUL_HTTP_ADDR: "ftp://consul:8500" } },
    );
    expect(r.code).toBe(2);
    expect(oneLine(r)).toContain('consul settings: CONSUL_HTTP_ADDR: unknown scheme "ftp"');
    expect(fs.existsSync(join(d.path, "store"))).toBe(false);
  });
});
