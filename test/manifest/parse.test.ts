import { describe, expect, test } from "bun:test";
import { ManifestError } from "../../src/errors.ts";
import { parseManifest } from "../../src/manifest/parse.ts";

const SHA1 = "e0840daaa97cd2cf2175f9e5d133ffb3324a2b93";

function problems(yaml: string, env: Record<string, string> = {}): { problems: string[]; fatal: boolean } {
  try {
    parseManifest(yaml, env);
  } catch (err) {
    expect(err).toBeInstanceOf(ManifestError);
    return { problems: (err as ManifestError).problems, fatal: (err as ManifestError).fatal };
  }
  throw new Error("expected a ManifestError");
}

describe("manifest: the stretcher README example", () => {
  const yaml = `
src: s3://example.com/app.tar.gz
checksum: ${SHA1}
dest: /home/stretcher/app
dest_mode: 0755
commands:
  pre:
    - echo 'staring deploy'
  post:
    - echo 'deploy done'
  success:
    - echo 'deploy success'
  failure:
    - echo 'deploy failed!!'
    - cat >> /path/to/failure.log
excludes:
  - "*.pid"
  - "*.socket"
exclude_from: exclude.list
`;
  test("every field", () => {
    const { manifest, warnings } = parseManifest(yaml);
    expect(manifest).toEqual({
      src: "s3://example.com/app.tar.gz",
      checksum: { algorithm: "sha1", hex: SHA1 },
      dest: "/home/stretcher/app",
      destMode: 0o755,
      syncStrategy: "rsync",
      commands: {
        pre: ["echo 'staring deploy'"],
        post: ["echo 'deploy done'"],
        validate: [],
        success: ["echo 'deploy success'"],
        failure: ["echo 'deploy failed!!'", "cat >> /path/to/failure.log"],
        env: {},
      },
      excludes: ["*.pid", "*.socket"],
      excludeFrom: "exclude.list",
      releaseId: undefined,
      keepReleases: 5,
      sharedPaths: [],
    });
    expect(warnings).toEqual([]);
  });
});

describe("manifest: YAML 1.1 semantics (go-yaml v2)", () => {
  const base = `src: file:///a.tgz\nchecksum: ${SHA1}\ndest: /srv/app\n`;
  test.each([
    ["0711", 0o711],
    ["0755", 0o755],
    ["0700", 0o700],
    ['"0750"', 0o750],
    ["493", 493],
  ])("dest_mode %s", (raw, mode) => {
    expect(parseManifest(`${base}dest_mode: ${raw}\n`).manifest.destMode).toBe(mode);
  });
  test("default dest_mode is 0755", () => {
    expect(parseManifest(base).manifest.destMode).toBe(0o755);
  });
  test("scalars in command lists keep their source text (yes, on, 0711, 1.0)", () => {
    const m = parseManifest(`commands:\n  pre:\n    - yes\n    - on\n    - 0711\n    - 1.0\n    - true\n`).manifest;
    expect(m.commands.pre).toEqual(["yes", "on", "0711", "1.0", "true"]);
  });
  test("a null command item is a no-op", () => {
    const m = parseManifest(`commands:\n  pre:\n    - echo a\n    -\n    - echo b\n`).manifest;
    expect(m.commands.pre).toEqual(["echo a", "echo b"]);
  });
  test("anchors and merge keys", () => {
    const m = parseManifest(`
defaults: &d
  dest: /srv/app
  checksum: ${SHA1}
hooks: &h
  - echo shared
<<: *d
src: file:///a.tgz
commands:
  pre: *h
  post: *h
`);
    expect(m.manifest.dest).toBe("/srv/app");
    expect(m.manifest.commands.pre).toEqual(["echo shared"]);
    expect(m.manifest.commands.post).toEqual(["echo shared"]);
    expect(m.warnings).toEqual(["manifest: ignoring unknown keys: defaults, hooks"]);
  });
  test("unknown keys are ignored with one warning", () => {
    const { warnings } = parseManifest(`${base}foo: 1\nbar: 2\n`);
    expect(warnings).toEqual(["manifest: ignoring unknown keys: foo, bar"]);
  });
  test("a collection as a key (its text over several lines) is one unknown key on one line, and nothing else is printed", async () => {
    const printed: string[] = [];
    const onWarning = (w: Error) => printed.push(w.message);
    process.on("warning", onWarning);
    try {
      const { warnings } = parseManifest(`${base}["a\\n2026-12-05T00:00:00.000Z deploy succeeded"]: 1\n`);
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).not.toContain("\n");
      expect(warnings[0]).toStartWith("manifest: ignoring unknown keys: [ ");
      await new Promise((resolve) => setImmediate(resolve)); // process warnings are emitted on a later tick
    } finally {
      process.off("warning", onWarning);
    }
    expect(printed).toEqual([]);
  });
  test("an unquoted `echo a: b` item is an error (stretcher's colon test) and fatal", () => {
    const p = problems(`commands:\n  pre:\n    - echo a: b\n`);
    expect(p.fatal).toBe(true);
    expect(p.problems[0]).toContain("commands.pre[0]: expected a string, got a mapping");
  });
  test("a quoted colon item is fine", () => {
    expect(parseManifest(`commands:\n  pre:\n    - "echo a: b"\n`).manifest.commands.pre).toEqual(["echo a: b"]);
  });
});

describe("manifest: checksum length picks the algorithm", () => {
  test.each([
    ["d41d8cd98f00b204e9800998ecf8427e", "md5"],
    [SHA1, "sha1"],
    ["E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855", "sha256"],
    [
      "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e",
      "sha512",
    ],
  ])("%s → %s (upper case accepted)", (hex, alg) => {
    const m = parseManifest(`src: file:///a.tgz\nchecksum: ${hex}\ndest: /srv/app\n`).manifest;
    expect(m.checksum).toEqual({ algorithm: alg as "md5", hex: hex.toLowerCase() });
  });
  test.each([["abc"], ["e0840daaa97cd2cf2175f9e5d133ffb3324a2b9"], ["zz840daaa97cd2cf2175f9e5d133ffb3324a2b93"]])(
    "%s is refused",
    (hex) => {
      const p = problems(`src: file:///a.tgz\nchecksum: ${hex}\ndest: /srv/app\n`);
      expect(p.fatal).toBe(false);
      expect(p.problems).toHaveLength(1);
      expect(p.problems[0]).toStartWith("checksum: ");
    },
  );
});

describe("manifest: every problem at once", () => {
  test("every field wrong", () => {
    const p = problems(`
src: /bare/path.tgz
checksum: 1234
dest: relative/dir
dest_mode: 9999
sync_strategy: scp
excludes: "*.pid"
exclude_from: ../outside
`);
    expect(p.fatal).toBe(false);
    expect(p.problems.map((s) => s.split(":")[0])).toEqual([
      "src",
      "checksum",
      "dest",
      "dest_mode",
      "sync_strategy",
      "excludes",
      "exclude_from",
    ]);
    expect(p.problems.join("\n")).toContain("valid: rsync, mv");
  });
  test("src without checksum and dest", () => {
    expect(problems("src: http://x/a.tgz\n").problems).toEqual([
      "checksum: required when src is set",
      "dest: required when src is set",
    ]);
  });
  test("unknown scheme lists the valid ones", () => {
    expect(problems(`src: ftp://x/a.tgz\nchecksum: ${SHA1}\ndest: /srv/app\n`).problems).toEqual([
      'src: unknown scheme "ftp" (valid: file, http, https, s3, gs)',
    ]);
  });
  test("relative dest is an error (stretcher silently synced into its temp dir)", () => {
    expect(problems(`src: file:///a.tgz\nchecksum: ${SHA1}\ndest: app\n`).problems).toEqual([
      'dest: must be an absolute path, got "app"',
    ]);
  });
  test("a non-fatal error keeps the failure commands so they can run", () => {
    try {
      parseManifest(
        `src: file:///a.tgz\nchecksum: 12\ndest: /srv\ncommands:\n  failure: ["echo failed"]\n  env: {A: b}\n`,
      );
      throw new Error("unreachable");
    } catch (err) {
      expect((err as ManifestError).partial).toEqual({ failure: ["echo failed"], env: { A: "b" } });
    }
  });
  test.each([
    ["YAML syntax error", "src: [unclosed\n", "YAML syntax"],
    ["not a mapping", "- a\n- b\n", "expected a mapping"],
    ["commands not a mapping", "commands: [a]\n", "commands: expected a mapping"],
    ["commands.pre not a list", "commands:\n  pre: echo hi\n", "commands.pre: expected a list"],
  ])("%s is fatal", (_name, yaml, text) => {
    const p = problems(yaml);
    expect(p.fatal).toBe(true);
    expect(p.problems.join(" ")).toContain(text);
  });
  test("commands-only manifest", () => {
    const m = parseManifest("commands:\n  pre: [echo hi]\n").manifest;
    expect(m.src).toBeUndefined();
    expect(m.commands.pre).toEqual(["echo hi"]);
  });
});

describe("manifest: templates and commands.env", () => {
  test("env with default, must_env, and other {{ }} left alone", () => {
    const m = parseManifest(
      `src: file:///{{ env "APP" "app" }}.tgz\nchecksum: ${SHA1}\ndest: {{ must_env "DEST" }}\ncommands:\n  ` +
        `pre: ["docker inspect -f '{{.State.Running}}' x"]\n`,
      { DEST: "/srv/x" },
    ).manifest;
    expect(m.src).toBe("file:///app.tgz");
    expect(m.dest).toBe("/srv/x");
    expect(m.commands.pre).toEqual(["docker inspect -f '{{.State.Running}}' x"]);
  });
  test("env takes the variable when set", () => {
    expect(parseManifest(`commands:\n  pre: ['echo {{ env "A" "d" }}']\n`, { A: "set" }).manifest.commands.pre).toEqual(
      ["echo set"],
    );
  });
  test("an unset must_env is a manifest error, not a panic", () => {
    expect(problems(`dest: {{ must_env "NOPE" }}\n`).problems).toContain(
      "must_env: environment variable NOPE is not set",
    );
  });
  test("commands.env is a map of strings", () => {
    expect(parseManifest("commands:\n  env:\n    A: 1\n    B: yes\n    C: text\n").manifest.commands.env).toEqual({
      A: "1",
      B: "yes",
      C: "text",
    });
  });
  test("commands.env with a bad name", () => {
    expect(problems("commands:\n  env:\n    1A: x\n").problems).toEqual([
      'commands.env: "1A" is not a valid variable name',
    ]);
  });
});

describe("manifest: string fields keep their YAML source text", () => {
  test("an all-digit checksum is not read as a number (YAML 1.1 would make 0…0 an octal 0)", () => {
    const m = parseManifest(`src: file:///a.tgz\nchecksum: ${"0".repeat(64)}\ndest: /srv/app\n`).manifest;
    expect(m.checksum).toEqual({ algorithm: "sha256", hex: "0".repeat(64) });
  });
  test("a digits-and-e checksum is not read as a float", () => {
    const hex = `1e5${"0".repeat(29)}`;
    expect(parseManifest(`src: file:///a.tgz\nchecksum: ${hex}\ndest: /srv/app\n`).manifest.checksum).toEqual({
      algorithm: "md5",
      hex,
    });
  });
});

describe("manifest: the release strategy's fields", () => {
  const base = `src: file:///a.tgz\nchecksum: ${SHA1}\ndest: /srv/app\n`;
  test("release_id, keep_releases, shared_paths, commands.validate", () => {
    const m = parseManifest(
      `${base}sync_strategy: release\nrelease_id: 20261126T000000Z-abc\nkeep_releases: 3\nshared_paths: [log/, ` +
        `tmp/pids, config/db.yml]\ncommands:\n  validate: ["curl -sf localhost/health"]\n`,
    ).manifest;
    expect(m).toMatchObject({
      syncStrategy: "release",
      releaseId: "20261126T000000Z-abc",
      keepReleases: 3,
      sharedPaths: ["log", "tmp/pids", "config/db.yml"],
    });
    expect(m.commands.validate).toEqual(["curl -sf localhost/health"]);
  });
  test("defaults: keep 5, no shared paths", () => {
    expect(parseManifest(`${base}sync_strategy: release\n`).manifest).toMatchObject({
      keepReleases: 5,
      sharedPaths: [],
      releaseId: undefined,
    });
  });
  test("every problem at once", () => {
    expect(
      problems(`${base}sync_strategy: release\nrelease_id: ../x\nkeep_releases: 1\nshared_paths: [/etc, ../up]\n`)
        .problems,
    ).toEqual([
      'release_id: use letters, digits, ".", "_" and "-" only (max 128), got "../x"',
      "keep_releases: expected a whole number ≥ 2 (current and previous are always kept), got 1",
      'shared_paths[0]: expected a relative path inside the release, got "/etc"',
      'shared_paths[1]: expected a relative path inside the release, got "../up"',
    ]);
  });
  test("release-only fields with another strategy are an error", () => {
    expect(problems(`${base}shared_paths: [log]\ncommands:\n  validate: [true]\n`).problems).toEqual([
      "commands.validate: only used with sync_strategy: release",
      "shared_paths: only used with sync_strategy: release",
    ]);
  });
});

describe("manifest: misconfiguration fails closed", () => {
  const head = `src: file:///a.tgz\nchecksum: ${SHA1}\n`;
  test.each([
    "/",
    "//",
    "/etc",
    "/etc/",
    "/usr",
    "/bin",
    "/sbin",
    "/lib64",
    "/boot",
    "/dev",
    "/proc",
    "/sys",
    "/var",
    "/var/lib",
    "/root",
    "/home",
    "/run",
    "/tmp",
    "/srv/app/../..",
    "/usr/./local/",
    "///var//",
  ])("dest %j is a system directory", (dest) => {
    const p = problems(`${head}dest: "${dest}"\n`);
    expect(p.problems).toHaveLength(1);
    expect(p.problems[0]).toMatch(
      /^dest: ".*"(?: \(\/[a-z/]*\))? is a system directory: a deploy replaces its contents; use a directory of the app's own, e\.g\. \/srv\/app$/,
    );
    expect(p.fatal).toBe(false); // the failure commands still run
  });
  test.each(["/srv/app", "/etc/nginx/sites", "/var/www/app", "/home/app/current", "/tmp/pd-x/dest"])(
    "dest %j is fine",
    (dest) => {
      expect(parseManifest(`${head}dest: ${dest}\n`).manifest.dest).toBe(dest);
    },
  );
  test.each(["file:///a.tgz\\u0000.x", "https://h/a\\u001b[2J.tgz", "https://h/a.tgz\\n"])(
    "src %j with a control character",
    (src) => {
      expect(problems(`src: "${src}"\nchecksum: ${SHA1}\ndest: /srv/app\n`).problems).toEqual([
        `src: a URL holds no control characters, got ${JSON.stringify(JSON.parse(`"${src}"`))}`,
      ]);
    },
  );
  test("dest with a control character", () => {
    expect(problems(`${head}dest: "/srv/a\\nb"\n`).problems).toEqual([
      'dest: contains a control character: "/srv/a\\nb"',
    ]);
  });

  test.each([
    [
      "dest: /srv/a\ndest: /etc\n",
      'YAML: duplicate key "dest" (line 2): each key may appear once in a mapping; remove or merge the repeats',
    ],
    [
      "commands:\n  pre: [a]\n  'pre': [b]\n",
      'YAML: duplicate key "pre" (line 3): each key may appear once in a mapping; remove or merge the repeats',
    ],
    [
      "commands:\n  env: {A: 1, A: 2}\n",
      'YAML: duplicate key "A" (line 2): each key may appear once in a mapping; remove or merge the repeats',
    ],
    [
      "1: a\n'1': b\n",
      'YAML: duplicate key "1" (line 2): each key may appear once in a mapping; remove or merge the repeats',
    ],
  ])("duplicate keys are fatal: %j", (yaml, msg) => {
    expect(problems(yaml)).toEqual({ problems: [msg], fatal: true });
  });
  test("`<<` merge keys may repeat and still merge", () => {
    const m = parseManifest(`x-a: &a {dest: /srv/x}\nx-b: &b {dest_mode: "0700"}\n<<: *a\n<<: *b\n`).manifest;
    expect(m.dest).toBe("/srv/x");
    expect(m.destMode).toBe(0o700);
  });

  test.each([".", "./", "", "shared/..", "a/../.", "./.", "log/\u0001"])("shared_paths %j is refused", (p) => {
    const got = problems(`${head}dest: /srv/app\nsync_strategy: release\nshared_paths: [${JSON.stringify(p)}]\n`);
    expect(got.problems).toEqual([
      `shared_paths[0]: expected a relative path inside the release, got ${JSON.stringify(p)}`,
    ]);
  });
  test("shared_paths are stored normalised", () => {
    expect(
      parseManifest(`${head}dest: /srv/app\nsync_strategy: release\nshared_paths: ["./log/", "tmp//pids"]\n`).manifest
        .sharedPaths,
    ).toEqual(["log", "tmp/pids"]);
  });

  test.each([
    ["0755", 0o755, false],
    ['"0755"', 0o755, false],
    ['"755"', 0o755, false],
    ["02775", 0o2775, false],
    ["755", 755, true],
    ["493", 493, true],
    ["0o755", undefined, true],
  ])("dest_mode %s: mode %p, warned %p", (text, mode, warned) => {
    let parsed;
    try {
      parsed = parseManifest(`${head}dest: /srv/app\ndest_mode: ${text}\n`);
    } catch (err) {
      expect(mode).toBeUndefined();
      expect((err as ManifestError).problems[0]).toStartWith("dest_mode: expected an octal mode");
      return;
    }
    expect(parsed.manifest.destMode).toBe(mode!);
    const w = parsed.warnings.filter((x) => x.startsWith("dest_mode:"));
    expect(w).toEqual(
      warned
        ? [`dest_mode: ${JSON.stringify(text)} is not a 3–4 digit octal mode; write it with a leading zero, e.g. 0755`]
        : [],
    );
  });
});
