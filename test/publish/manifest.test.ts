/**
 * The manifest publish writes: flags merged over a stretcher-style hooks file, rendered as YAML 1.1 and
 * read back by the agent's own parser; every problem of a bad hooks file listed at once. Tables on the pure functions,
 * then the binary with `--hooks` (and its old name `--manifest`), then the agent deploying what was published.
 * Also the event size rule (tables checked against the Consul stand-in's msgpack encoder).
 */
import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { userEventSize } from "../../src/consul/event-size.ts";
import { ManifestError } from "../../src/errors.ts";
import { parseManifest } from "../../src/manifest/parse.ts";
import { serfEventSize } from "../../src/consul/event-size.ts";
import { readHooks, renderManifest, type ManifestFields } from "../../src/manifest/render.ts";
import { eventPayloadLimit, fireCommand } from "../../src/publish/announce.ts";
import { listTree, run, tempDir, writeTree } from "../support/helpers.ts";

const RELEASE = {
  src: "s3://b/app/web/20260101T000000Z-0ca9279b78e2.tar.gz",
  checksum: "0ca9279b78e236bc67c54fd9df0527d5d8945a0f2fd95c971f6db08814a57b5e",
  releaseId: "20260101T000000Z-0ca9279b78e2",
};

function render(fields: ManifestFields, hooksText?: string): string {
  return renderManifest(
    fields,
    readHooks(hooksText === undefined ? undefined : { path: "hooks.yml", text: hooksText }),
    RELEASE,
  );
}

function problemsOf(fields: ManifestFields, hooksText?: string): string[] {
  try {
    render(fields, hooksText);
  } catch (err) {
    if (err instanceof ManifestError) return err.problems;
    throw err;
  }
  throw new Error("expected a ManifestError");
}

const HOOKS = `
dest: /srv/from-file
dest_mode: 0711
excludes: ["*.pid"]
commands:
  pre: &greet
    - echo "deploying {{ env "APP" "app" }}"
  post:
    - "echo a: b"
    -
  validate: *greet
  success: ["curl -s https://hooks.example/ok"]
  failure: ["cat >> /var/log/deploy-failures.log"]
  env:
    RAILS_ENV: production
`;

describe("renderManifest", () => {
  test("flags only: src, checksum, dest; defaults left out", () => {
    expect(render({ dest: "/srv/web" })).toBe(`src: ${RELEASE.src}\nchecksum: ${RELEASE.checksum}\ndest: /srv/web\n`);
  });

  test("every flag: dest_mode stays octal, sync_strategy, excludes", () => {
    const text = render({ dest: "/srv/web", destMode: "0750", syncStrategy: "mv", excludes: ["*.pid", "tmp/"] });
    expect(text).toBe(
      `src: ${RELEASE.src}\nchecksum: ${RELEASE.checksum}\ndest: /srv/web\ndest_mode: 0750\nsync_strategy: ` +
        `mv\nexcludes:\n  - "*.pid"\n  - tmp/\n`,
    );
    expect(parseManifest(text).manifest).toMatchObject({
      destMode: 0o750,
      syncStrategy: "mv",
      excludes: ["*.pid", "tmp/"],
    });
  });

  test("the release strategy gets the release id as its directory name", () => {
    const { manifest } = parseManifest(render({ dest: "/srv/web", syncStrategy: "release" }));
    expect(manifest.releaseId).toBe(RELEASE.releaseId);
  });

  test("a hooks file: commands kept (anchors resolved, templates untouched), flags win", () => {
    const text = render({ dest: "/srv/flag", excludes: ["*.sock"], syncStrategy: "release" }, HOOKS);
    const { manifest, warnings } = parseManifest(text, { APP: "shop" });
    expect(warnings).toEqual([]);
    expect(manifest).toMatchObject({
      src: RELEASE.src,
      dest: "/srv/flag",
      destMode: 0o711,
      excludes: ["*.sock"],
      syncStrategy: "release",
      commands: {
        pre: ['echo "deploying shop"'],
        validate: ['echo "deploying shop"'],
        post: ["echo a: b"],
        success: ["curl -s https://hooks.example/ok"],
        failure: ["cat >> /var/log/deploy-failures.log"],
        env: { RAILS_ENV: "production" },
      },
    });
    expect(text).toContain('{{ env "APP" "app" }}');
    expect(text).toContain("dest_mode: 0711\n");
  });

  test("dest may come from the file, and may be a template each agent fills in", () => {
    expect(parseManifest(render({}, "dest: /srv/file\n")).manifest.dest).toBe("/srv/file");
    const text = render({ dest: '{{ must_env "APP_DEST" }}' });
    expect(parseManifest(text, { APP_DEST: "/srv/node-a" }).manifest.dest).toBe("/srv/node-a");
  });

  test("an empty hooks file is fine", () => {
    expect(render({ dest: "/srv/web" }, "")).toBe(render({ dest: "/srv/web" }));
    expect(render({ dest: "/srv/web" }, "# only a comment\n")).toBe(render({ dest: "/srv/web" }));
  });

  test("every problem of a hooks file at once, named after the file", () => {
    expect(
      problemsOf(
        { dest: "/srv/web" },
        "src: s3://elsewhere/app.tar.gz\nchecksum: abc\nrelease_id: mine\ncomands:\n  pre: [x]\nsync_strategy: " +
          "scp\ndest_mode: rwxr-xr-x\nexcludes: notalist\nexclude_from: /etc/passwd\n",
      ),
    ).toEqual([
      "--manifest hooks.yml: src: set by publish (the uploaded archive's URL); remove it from the file",
      "--manifest hooks.yml: checksum: set by publish (the uploaded archive's); remove it from the file",
      "--manifest hooks.yml: release_id: set by publish (the release id that KV and the agents' reports use); " +
        "remove it from the file",
      "--manifest hooks.yml: ignoring unknown keys: comands",
      '--manifest hooks.yml: dest_mode: expected an octal mode like 0755, got "rwxr-xr-x"',
      '--manifest hooks.yml: sync_strategy: unknown strategy "scp" (valid: rsync, mv, release)',
      '--manifest hooks.yml: excludes: expected a list of patterns, got "notalist"',
      '--manifest hooks.yml: exclude_from: must be a relative path inside the archive, got "/etc/passwd"',
    ]);
    expect(
      problemsOf(
        { dest: "/srv/web" },
        "comands:\n  pre: [x]\nsync_strategy: scp\ndest_mode: rwxr-xr-x\nexcludes: notalist\nexclude_from: " +
          "/etc/passwd\n",
      ),
    ).toEqual([
      "--manifest hooks.yml: ignoring unknown keys: comands",
      '--manifest hooks.yml: dest_mode: expected an octal mode like 0755, got "rwxr-xr-x"',
      '--manifest hooks.yml: sync_strategy: unknown strategy "scp" (valid: rsync, mv, release)',
      '--manifest hooks.yml: excludes: expected a list of patterns, got "notalist"',
      '--manifest hooks.yml: exclude_from: must be a relative path inside the archive, got "/etc/passwd"',
    ]);
  });

  test("a malformed commands section does not hide the other problems", () => {
    const problems = problemsOf(
      { dest: "/srv/web" },
      "commands:\n  pre: echo hi\n  post:\n    - echo a: b\nsync_strategy: scp\n",
    );
    expect(problems).toContain('--manifest hooks.yml: commands.pre: expected a list of shell commands, got "echo hi"');
    expect(problems.some((p) => p.startsWith("--manifest hooks.yml: commands.post[0]: expected a string"))).toBe(true);
    expect(problems).toContain(
      '--manifest hooks.yml: sync_strategy: unknown strategy "scp" (valid: rsync, mv, release)',
    );
  });

  test("YAML syntax errors and a non-mapping file stop at once", () => {
    expect(() => readHooks({ path: "h.yml", text: "commands: [\n" })).toThrow(
      /^manifest: --manifest h\.yml: YAML syntax: /,
    );
    expect(() => readHooks({ path: "h.yml", text: "- a\n- b\n" })).toThrow(
      "--manifest h.yml: expected a mapping of fields (commands, excludes, …)",
    );
    // Named as the user typed it: --hooks (the new spelling) or --manifest.
    expect(() => readHooks({ path: "h.yml", text: "- a\n", flag: "--hooks" })).toThrow(
      "--hooks h.yml: expected a mapping of fields (commands, excludes, …)",
    );
  });

  test("no dest anywhere", () => {
    expect(problemsOf({})).toEqual(["manifest: dest: required: pass --dest /abs/path"]);
    expect(problemsOf({}, "commands: {}\n")).toEqual([
      "--manifest hooks.yml: dest: required: pass --dest /abs/path or set dest in the file",
    ]);
  });
});

describe("event size limits", () => {
  test.each([
    [{ via: "consul", event: "deploy" }, 404],
    [{ via: "consul", event: "deploy", node: "^web-" }, 404 - 3 - 6],
    [{ via: "consul", event: "deploy", service: "web", tag: "blue" }, 404 - 7 - 8],
    [{ via: "consul", event: "release-the-kraken" }, 404 - 24],
    [{ via: "serf", event: "deploy" }, 476],
    [{ via: "serf", event: "x" }, 481],
  ] as const)("%j: %d bytes of payload", (a, max) => {
    expect(eventPayloadLimit(a, "").max).toBe(max);
    expect(eventPayloadLimit(a, "é".repeat(max / 2 + 1)).fits).toBe(false);
  });

  test("the arithmetic matches the captured limit (405 bytes refused) and serf's own encoder", () => {
    expect(userEventSize("deploy", "x".repeat(404))).toBe(512);
    expect(userEventSize("deploy", "x".repeat(405))).toBe(513);
    expect(serfEventSize("deploy", "x".repeat(476))).toBe(512);
  });
});

describe("fireCommand", () => {
  const base = { manifestUrl: "s3://b/app/web/x.yml", kv: true, kvPrefix: "pulldeploy", message: "" };
  const record = { role: "web" } as never;
  test.each([
    [
      { ...base, record, announce: { via: "consul", event: "deploy" } },
      false,
      "pulldeploy fire s3://b/app/web/x.yml --role web",
    ],
    [{ ...base, record, announce: { via: "consul", event: "deploy" } }, true, "pulldeploy fire s3://b/app/web/x.yml"],
    [
      { ...base, kv: false, record, announce: { via: "serf", event: "ship", serfRpcAddr: "10.0.0.1:7373" } },
      false,
      "pulldeploy fire s3://b/app/web/x.yml --event ship --via serf --serf-rpc-addr 10.0.0.1:7373",
    ],
    [
      {
        ...base,
        record,
        kvPrefix: "t/a",
        message: "don't",
        announce: { via: "none", event: "deploy" },
        consulFlags: { addr: "c:8500", token: "secret" },
      },
      false,
      "pulldeploy fire s3://b/app/web/x.yml --role web --kv-prefix t/a --message 'don'\\''t' --no-event " +
        "--consul-addr c:8500",
    ],
    // The rollout flags are repeated until `latest` is written (no agent has begun); after, the record
    // written before it governs and `fire` only sends the event.
    [
      {
        ...base,
        record,
        announce: { via: "consul", event: "deploy" },
        rolloutFlags: ["--canary", "1", "--max-parallel", "25%", "--canary-wait"],
      },
      false,
      "pulldeploy fire s3://b/app/web/x.yml --role web --canary 1 --max-parallel 25% --canary-wait",
    ],
    [
      { ...base, record, announce: { via: "consul", event: "deploy" }, rolloutFlags: ["--canary", "1"] },
      true,
      "pulldeploy fire s3://b/app/web/x.yml",
    ],
  ] as const)("%#", (step, kvDone, cmd) => {
    expect(fireCommand(step as Parameters<typeof fireCommand>[0], { kvDone })).toBe(cmd);
  });
});

describe("through the binary", () => {
  test("--manifest merged, flags winning; the agent deploys the published release and runs its hooks", async () => {
    await using d = tempDir();
    const app = join(d.path, "app");
    writeTree(app, { "index.html": "v1\n", "keep.pid": "1", "sub/a.txt": "a" });
    const dest = join(d.path, "dest");
    writeTree(dest, { "old.txt": "stale", "run.pid": "42" });
    fs.writeFileSync(
      join(d.path, "hooks.yml"),
      `dest: /nowhere\nexcludes: ["*.log"]\ncommands:\n  pre: ["echo pre >> ${d.path}/hooks.log"]\n  success: ` +
        `['echo "success $GREETING" >> ${d.path}/hooks.log']\n  env:\n    GREETING: hi\n`,
    );
    const r = await run([
      "publish",
      app,
      "--to",
      `file://${d.path}/store`,
      "--role",
      "web",
      "--dest",
      dest,
      "--manifest",
      join(d.path, "hooks.yml"),
      "--exclude-on-dest",
      "*.pid",
      "--no-kv",
      "--no-event",
      "--exclude",
      "keep.pid",
    ]);
    expect(r.stderr).not.toContain("pulldeploy publish:");
    expect(r.code).toBe(0);
    const url = r.stdout.trim();
    const { manifest } = parseManifest(fs.readFileSync(new URL(url).pathname, "utf8"));
    expect(manifest).toMatchObject({
      dest,
      excludes: ["*.pid"],
      commands: { pre: [`echo pre >> ${d.path}/hooks.log`] },
    });

    const agent = await run(["agent", "--manifest", url]);
    expect(agent.stderr).toContain("deploy succeeded");
    expect(agent.code).toBe(0);
    expect(listTree(dest)).toEqual(["index.html", "run.pid", "sub/", "sub/a.txt"]);
    expect(fs.readFileSync(join(d.path, "hooks.log"), "utf8")).toBe("pre\nsuccess hi\n");
  });

  test("an invalid hooks file: every problem on one line, exit 1, nothing uploaded", async () => {
    await using d = tempDir();
    writeTree(d.path, { "app/x": "x", "hooks.yml": "checksum: abc\nsync_strategy: scp\ncomands: {}\n" });
    const r = await run([
      "publish",
      join(d.path, "app"),
      "--to",
      `file://${d.path}/store`,
      "--role",
      "web",
      "--dest",
      "/srv/web",
      "--manifest",
      join(d.path, "hooks.yml"),
      "--no-kv",
      "--no-event",
    ]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    const h = `--manifest ${join(d.path, "hooks.yml")}`;
    expect(r.stderr).toContain(
      `pulldeploy publish: manifest: ${h}: checksum: set by publish (the uploaded archive's); remove it from ` +
        `the file; ${h}: ignoring unknown keys: comands; ${h}: sync_strategy: unknown strategy "scp"`,
    );
    expect(fs.existsSync(join(d.path, "store"))).toBe(false);
  });

  test("--hooks FILE is --manifest FILE's clearer name: the same manifest; both at once or a missing file is exit 2", async () => {
    await using d = tempDir();
    writeTree(d.path, {
      "app/x": "x",
      "hooks.yml": 'excludes: ["*.log"]\ncommands:\n  pre: ["echo pre"]\n  env:\n    GREETING: hi\n',
    });
    const publishWith = async (flag: string, store: string) => {
      const r = await run([
        "publish",
        join(d.path, "app"),
        "--to",
        `file://${d.path}/${store}`,
        "--role",
        "web",
        "--dest",
        "/srv/web",
        flag,
        join(d.path, "hooks.yml"),
        "--no-kv",
        "--no-event",
      ]);
      expect(r.stderr).not.toContain("pulldeploy publish:");
      expect(r.code).toBe(0);
      return parseManifest(fs.readFileSync(new URL(r.stdout.trim()).pathname, "utf8")).manifest;
    };
    const viaHooks = await publishWith("--hooks", "s1");
    const viaManifest = await publishWith("--manifest", "s2");
    expect(viaHooks.commands.pre).toEqual(["echo pre"]);
    expect(viaHooks.excludes).toEqual(["*.log"]);
    const same = (m: typeof viaHooks) => ({
      commands: m.commands,
      excludes: m.excludes,
      dest: m.dest,
      checksum: m.checksum,
    });
    expect(same(viaHooks)).toEqual(same(viaManifest));

    const both = await run([
      "publish",
      join(d.path, "app"),
      "--to",
      `file://${d.path}/s3`,
      "--role",
      "web",
      "--dest",
      "/srv/web",
      "--hooks",
      join(d.path, "hooks.yml"),
      "--manifest",
      join(d.path, "hooks.yml"),
      "--no-kv",
      "--no-event",
    ]);
    expect(both.code).toBe(2);
    expect(both.stderr).toContain(
      "pulldeploy publish: --hooks and --manifest are the same flag (--manifest is its old name): pass one",
    );
    const missing = await run([
      "publish",
      join(d.path, "app"),
      "--to",
      `file://${d.path}/s3`,
      "--role",
      "web",
      "--dest",
      "/srv/web",
      "--hooks",
      join(d.path, "nope.yml"),
      "--no-kv",
      "--no-event",
    ]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain(`pulldeploy publish: --hooks ${join(d.path, "nope.yml")}: no such file`);
    expect(fs.existsSync(join(d.path, "s3"))).toBe(false);
  });
});
