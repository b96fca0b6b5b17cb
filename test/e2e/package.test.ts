/**
 * `make dist`'s packages (issue 12) as an operator gets them: the tarballs and SHA256SUMS, the .deb
 * installed, checked and removed with the real dpkg (into a root of its own), the unit checked by
 * systemd-analyze, the arm64 binary run under qemu-user. The files come from `make dist` (`make test`
 * builds them once); run it first when running this file alone.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pkg from "../../package.json" with { type: "json" };
import { BINARY, ROOT, tempDir } from "../support/helpers.ts";

const RELEASE = join(ROOT, "dist/release");
const ARM64_BINARY = join(ROOT, "dist/pulldeploy-linux-arm64");
const VERSION: string = pkg.version;
const DEB_VERSION = VERSION.replace("-", "~");
const TARBALL = (arch: string) => `pulldeploy-${VERSION}-linux-${arch}.tar.gz`;
const DEB = (arch: string) => `pulldeploy_${DEB_VERSION}_${arch}.deb`;
const PACKAGES = [TARBALL("x64"), TARBALL("arm64"), DEB("amd64"), DEB("arm64")];
const ELF_MACHINE = { x64: 62, arm64: 183 } as const;

function sh(cmd: string[], opts: { cwd?: string; env?: Record<string, string> } = {}) {
  const r = Bun.spawnSync(cmd, { cwd: opts.cwd, env: { ...process.env, ...opts.env }, stdout: "pipe", stderr: "pipe" });
  return { code: r.exitCode, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}
/** Run a command that must succeed; its stdout. */
function ok(cmd: string[], opts: { cwd?: string; env?: Record<string, string> } = {}): string {
  const r = sh(cmd, opts);
  if (r.code !== 0) throw new Error(`${cmd.join(" ")}: exit ${r.code}: ${r.stderr.trim()}`);
  return r.stdout;
}
/** The ELF header's e_machine (62 x86-64, 183 aarch64), or undefined if `bytes` is no ELF file. */
function elfMachine(bytes: Uint8Array): number | undefined {
  if (bytes.length < 20 || bytes[0] !== 0x7f || String.fromCharCode(...bytes.subarray(1, 4)) !== "ELF")
    return undefined;
  return bytes[18]! | (bytes[19]! << 8);
}
const head = (path: string) => {
  const fd = fs.openSync(path, "r");
  try {
    const b = new Uint8Array(20);
    fs.readSync(fd, b, 0, 20, 0);
    return b;
  } finally {
    fs.closeSync(fd);
  }
};
/** What scripts/commit-id.sh says now: what the build must have baked in. */
const commitNow = () => ok([join(ROOT, "scripts/commit-id.sh")]).trim();
const versionLine = (commit: string) => `pulldeploy ${VERSION} (commit ${commit})\n`;

beforeAll(() => {
  for (const f of [BINARY, ARM64_BINARY, ...PACKAGES.map((p) => join(RELEASE, p)), join(RELEASE, "SHA256SUMS")]) {
    if (!fs.existsSync(f)) throw new Error(`${f} is missing: run make dist`);
  }
  if (fs.statSync(join(RELEASE, "SHA256SUMS")).mtimeMs < fs.statSync(BINARY).mtimeMs)
    throw new Error(`${RELEASE} is older than ${BINARY}: run make dist`);
});

describe("the version", () => {
  test("--version prints package.json's version and the commit baked in at build time", () => {
    const commit = commitNow();
    expect(commit).toMatch(/^([0-9a-f]{7,40}(-dirty)?|unknown)$/);
    const r = sh([BINARY, "--version"]);
    if (r.stdout !== versionLine(commit))
      throw new Error(`dist/pulldeploy says ${JSON.stringify(r.stdout)}, the tree is at ${commit}: run make build`);
    expect(r).toEqual({ code: 0, stdout: versionLine(commit), stderr: "" });
  });

  test("every spelling prints the same line: the entry's own answer (--version, -v, version) and the command path's (after --log-format), in the binary and from source", () => {
    const line = versionLine(commitNow());
    for (const args of [["--version"], ["-v"], ["version", "extra"], ["--log-format", "json", "--version"]])
      expect({ args, ...sh([BINARY, ...args]) }).toEqual({ args, code: 0, stdout: line, stderr: "" });
    // from source nothing is baked in: cli/run.ts answers, with the commit unknown
    const fromSource = sh([process.execPath, join(ROOT, "src/main.ts"), "--version"]);
    expect(fromSource).toEqual({ code: 0, stdout: versionLine("unknown"), stderr: "" });
  });

  test("scripts/commit-id.sh: HEAD's short hash, -dirty for changed tracked files, unknown outside its own clone", async () => {
    await using d = tempDir();
    const tree = join(d.path, "outer/pulldeploy-src");
    fs.mkdirSync(join(tree, "scripts"), { recursive: true });
    fs.copyFileSync(join(ROOT, "scripts/commit-id.sh"), join(tree, "scripts/commit-id.sh"));
    fs.writeFileSync(join(tree, "a.txt"), "a\n");
    const id = () => ok([join(tree, "scripts/commit-id.sh")], { cwd: d.path }).trim();
    const git = (cwd: string, ...args: string[]) =>
      ok(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main", ...args], {
        cwd,
      });

    expect(id()).toBe("unknown"); // an unpacked source tarball: no .git
    git(join(d.path, "outer"), "init", "-q");
    git(join(d.path, "outer"), "commit", "-q", "--allow-empty", "-m", "outer");
    expect(id()).toBe("unknown"); // inside some other repository: not its commit
    git(tree, "init", "-q");
    git(tree, "add", ".");
    git(tree, "commit", "-q", "-m", "one");
    const head = git(tree, "rev-parse", "--short", "HEAD").trim();
    expect(id()).toBe(head);
    fs.writeFileSync(join(tree, "untracked.txt"), "x");
    expect(id()).toBe(head); // untracked files (build output) don't make a build dirty
    fs.writeFileSync(join(tree, "a.txt"), "changed\n");
    expect(id()).toBe(`${head}-dirty`);
    git(tree, "add", "a.txt");
    expect(id()).toBe(`${head}-dirty`); // staged but not committed
  });
});

describe("the release files", () => {
  test("SHA256SUMS covers exactly the four packages and sha256sum -c accepts it", () => {
    const sums = fs.readFileSync(join(RELEASE, "SHA256SUMS"), "utf8");
    expect(
      sums
        .trim()
        .split("\n")
        .map((l) => l.replace(/^[0-9a-f]{64} {2}/, "")),
    ).toEqual([...PACKAGES].sort());
    expect(ok(["sha256sum", "--strict", "-c", "SHA256SUMS"], { cwd: RELEASE })).toBe(
      PACKAGES.slice()
        .sort()
        .map((p) => `${p}: OK\n`)
        .join(""),
    );
  });

  for (const arch of ["x64", "arm64"] as const) {
    test(`${TARBALL(arch)}: the ${arch} binary, README and examples in one directory, owned by root, nothing group/world-writable`, async () => {
      await using d = tempDir();
      ok(["tar", "xzf", join(RELEASE, TARBALL(arch)), "-C", d.path]); // as root: the archive's owners are kept
      const top = `pulldeploy-${VERSION}-linux-${arch}`;
      expect(fs.readdirSync(d.path)).toEqual([top]);
      const want = [
        "README.md",
        "examples/",
        ...fs.readdirSync(join(ROOT, "examples")).map((f) => `examples/${f}`),
        "pulldeploy",
      ];
      if (fs.existsSync(join(ROOT, "LICENSE"))) want.push("LICENSE");
      const got: string[] = [];
      const walk = (dir: string, rel: string) => {
        for (const name of fs.readdirSync(dir)) {
          const p = join(dir, name);
          const st = fs.lstatSync(p);
          got.push(st.isDirectory() ? `${rel}${name}/` : `${rel}${name}`);
          expect({ p, uid: st.uid, gid: st.gid, writable: (st.mode & 0o022) !== 0 }).toEqual({
            p,
            uid: 0,
            gid: 0,
            writable: false,
          });
          if (st.isDirectory()) walk(p, `${rel}${name}/`);
        }
      };
      walk(join(d.path, top), "");
      expect(got.sort()).toEqual(want.sort());
      const bin = join(d.path, top, "pulldeploy");
      expect(fs.statSync(bin).mode & 0o7777).toBe(0o755);
      expect(elfMachine(head(bin))).toBe(ELF_MACHINE[arch]);
      expect(fs.readFileSync(join(d.path, top, "README.md"), "utf8")).toBe(
        fs.readFileSync(join(ROOT, "README.md"), "utf8"),
      );
      if (arch === "x64") expect(ok([bin, "--version"])).toBe(versionLine(commitNow()));
    });
  }

  test("the arm64 binary: an aarch64 ELF executable that prints the version under qemu-user", () => {
    expect(elfMachine(head(ARM64_BINARY))).toBe(ELF_MACHINE.arm64);
    // Debian's qemu-user and libc6-arm64-cross (scripts/setup.sh) run it with the arm64 C library.
    const sysroot = "/usr/aarch64-linux-gnu";
    if (!Bun.which("qemu-aarch64") || !fs.existsSync(join(sysroot, "lib/ld-linux-aarch64.so.1")))
      throw new Error(
        "qemu-aarch64 or the arm64 C library is missing: run scripts/setup.sh (apt-get install qemu-user " +
          "libc6-arm64-cross)",
      );
    expect(sh(["qemu-aarch64", "-L", sysroot, ARM64_BINARY, "--version"])).toEqual({
      code: 0,
      stdout: versionLine(commitNow()),
      stderr: "",
    });
  });

  for (const [arch, elf] of [
    ["amd64", "x64"],
    ["arm64", "arm64"],
  ] as const) {
    test(`${DEB(arch)}: its metadata, and every file root's and not group/world-writable`, () => {
      const deb = join(RELEASE, DEB(arch));
      const fields = ok(["dpkg-deb", "-f", deb, "Package", "Version", "Architecture", "Depends"]);
      expect(fields).toMatch(
        new RegExp(
          `^Package: pulldeploy\nVersion: ${DEB_VERSION.replace(/[.+~]/g, "\\$&")}\nArchitecture: ` +
            `${arch}\nDepends: libc6 \\(>= 2\\.\\d+\\), rsync, tar\n$`,
        ),
      );
      const listing = ok(["dpkg-deb", "-c", deb]).trim().split("\n");
      const entries = listing.map((l) => {
        const [mode, owner, , , , path] = l.split(/\s+/);
        return { mode: mode!, owner: owner!, path: path! };
      });
      for (const e of entries)
        expect({ path: e.path, owner: e.owner, writable: /^.{4}w|^.{7}w/.test(e.mode) }).toEqual({
          path: e.path,
          owner: "root/root",
          writable: false,
        });
      const files = entries.filter((e) => !e.mode.startsWith("d")).map((e) => `${e.mode} ${e.path}`);
      expect(files.sort()).toEqual(
        [
          "-rw------- ./etc/default/pulldeploy", // it may hold a Consul token
          "-rw-r--r-- ./usr/lib/systemd/system/pulldeploy-follow.service",
          "-rw-r--r-- ./usr/share/doc/pulldeploy/README.md",
          "-rw-r--r-- ./usr/share/doc/pulldeploy/consul-watch.hcl",
          "-rwxr-xr-x ./usr/bin/pulldeploy",
          ...(fs.existsSync(join(ROOT, "LICENSE")) ? ["-rw-r--r-- ./usr/share/doc/pulldeploy/copyright"] : []),
        ].sort(),
      );
      // The state dir is not in the package's files: postinst makes it, so that `dpkg -r` keeps it.
      expect(entries.some((e) => e.path.startsWith("./var/"))).toBe(false);
      // The binary inside is this arch's: the first bytes of ./usr/bin/pulldeploy from the archive.
      const bytes = Bun.spawnSync([
        "sh",
        "-c",
        `dpkg-deb --fsys-tarfile "$1" | tar -xOf - ./usr/bin/pulldeploy | head -c 20`,
        "sh",
        deb,
      ]).stdout;
      expect(elfMachine(new Uint8Array(bytes))).toBe(ELF_MACHINE[elf]);
    });
  }
});

/**
 * The real dpkg, as root, installing into a root of its own (`dpkg --root`): nothing on this machine
 * changes, and a real /var/lib/pulldeploy here (an agent's, a benchmark's) can't be purged by a test.
 * Its database holds this machine's records of the package's dependencies (libc6, rsync, tar); the
 * maintainer scripts run as they do on a server (`--force-script-chrootless`: no chroot, `$DPKG_ROOT`
 * prefixes their paths); systemd-analyze reads the root's units (`--root`), systemd's own copied in.
 */
describe("the .deb installed with dpkg", () => {
  const deb = join(RELEASE, DEB("amd64"));
  let root = "";
  const at = (p: string) => join(root, p);
  const STATE = "/var/lib/pulldeploy";
  const UNIT = "/usr/lib/systemd/system/pulldeploy-follow.service";
  const dpkg = (...args: string[]) =>
    ok(["dpkg", `--root=${root}`, "--force-script-chrootless", "--log=/dev/null", ...args]);
  const status = () =>
    sh(["dpkg-query", `--admindir=${at("var/lib/dpkg")}`, "-W", "-f=${db:Status-Abbrev}", "pulldeploy"]).stdout.trim();

  beforeAll(() => {
    if (process.getuid?.() !== 0)
      throw new Error("the .deb tests install with dpkg -i (files owned by root): run them as root (CI does)");
    root = fs.mkdtempSync(join(tmpdir(), "pd-deb-root-"));
    const admin = at("var/lib/dpkg");
    for (const d of ["updates", "info"]) fs.mkdirSync(join(admin, d), { recursive: true });
    const deps = ["libc6", "rsync", "tar"];
    fs.writeFileSync(join(admin, "status"), ok(["dpkg-query", "-s", ...deps]));
    for (const name of ok(["dpkg-query", "-W", "-f=${binary:Package}\n", ...deps])
      .trim()
      .split("\n"))
      fs.writeFileSync(join(admin, `info/${name}.list`), "");
    fs.cpSync("/usr/lib/systemd/system", at("usr/lib/systemd/system"), { recursive: true, verbatimSymlinks: true });
  });
  afterAll(() => {
    if (root) fs.rmSync(root, { recursive: true, force: true });
  });

  test("dpkg -i: /usr/bin/pulldeploy runs, the state dir is root's 0700, the unit is installed and not enabled", () => {
    dpkg("-i", deb);
    expect(status()).toBe("ii");
    expect(sh([at("/usr/bin/pulldeploy"), "--version"])).toEqual({
      code: 0,
      stdout: versionLine(commitNow()),
      stderr: "",
    });
    const st = fs.lstatSync(at(STATE));
    expect({ dir: st.isDirectory(), mode: (st.mode & 0o7777).toString(8), uid: st.uid, gid: st.gid }).toEqual({
      dir: true,
      mode: "700",
      uid: 0,
      gid: 0,
    });
    expect(fs.existsSync(at(UNIT))).toBe(true);
    expect(fs.existsSync(at("/etc/systemd/system/multi-user.target.wants/pulldeploy-follow.service"))).toBe(false);
    expect(ok(["dpkg-query", `--admindir=${at("var/lib/dpkg")}`, "-W", "-f=${Conffiles}", "pulldeploy"])).toContain(
      "/etc/default/pulldeploy",
    );
    expect((fs.statSync(at("/etc/default/pulldeploy")).mode & 0o7777).toString(8)).toBe("600");
    const watch = fs.readFileSync(at("/usr/share/doc/pulldeploy/consul-watch.hcl"), "utf8");
    expect(watch).toContain(`args    = ["/usr/bin/pulldeploy", "agent"`);
    expect(watch).toContain(
      "#   consul watch -type event -name deploy /usr/bin/pulldeploy agent --role web --retry 3\n",
    );
    expect(watch).not.toContain("/usr/local/bin");
  });

  test("systemd-analyze verify accepts the unit, silently; it does flag a broken copy", () => {
    const verify = () => sh(["systemd-analyze", "verify", `--root=${root}`, "pulldeploy-follow.service"]);
    expect(verify()).toEqual({ code: 0, stdout: "", stderr: "" });
    // The check can fail: a missing executable is an error, a bad value a warning on stderr.
    const unit = fs.readFileSync(at(UNIT), "utf8");
    try {
      fs.writeFileSync(at(UNIT), unit.replace("ExecStart=/usr/bin/pulldeploy ", "ExecStart=/usr/bin/pulldeploy-gone "));
      expect(verify().code).not.toBe(0);
      fs.writeFileSync(at(UNIT), unit.replace("Restart=always", "Restart=sometimes"));
      expect(verify().stderr).toContain("sometimes");
    } finally {
      fs.writeFileSync(at(UNIT), unit);
    }
  });

  test("unconfigured (/etc/default/pulldeploy as shipped), the unit's command exits 2, which the unit doesn't restart", () => {
    const unit = fs.readFileSync(at(UNIT), "utf8");
    expect(unit).toMatch(
      /^ExecStart=\/usr\/bin\/pulldeploy agent --follow --role \$\{PULLDEPLOY_ROLE\} \$PULLDEPLOY_FOLLOW_ARGS$/m,
    );
    expect(unit).toMatch(/^RestartPreventExitStatus=2$/m);
    const env = Object.fromEntries(
      fs
        .readFileSync(at("/etc/default/pulldeploy"), "utf8")
        .split("\n")
        .filter((l) => /^[A-Z_]+=/.test(l))
        .map((l) => {
          const [k, v] = [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)];
          return [k, v.replace(/^"(.*)"$/, "$1")];
        }),
    );
    expect(env.PULLDEPLOY_ROLE).toBe("");
    // What systemd runs: ${X} is one argument (empty here), $X split on white space.
    const r = sh(
      [
        at("/usr/bin/pulldeploy"),
        "agent",
        "--follow",
        "--role",
        env.PULLDEPLOY_ROLE!,
        ...env.PULLDEPLOY_FOLLOW_ARGS!.split(/\s+/).filter(Boolean),
      ],
      {
        env: { PULLDEPLOY_STATE_DIR: at(join(STATE, "test-unconfigured")) },
      },
    );
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("--role");
  });

  test("dpkg -r removes the binary, the unit and the docs, keeps the state and the conffile; dpkg -P removes those", () => {
    fs.writeFileSync(at(join(STATE, "handled")), "a deploy this server has done\n");
    dpkg("-i", deb); // an upgrade/reinstall keeps the state
    expect(fs.readFileSync(at(join(STATE, "handled")), "utf8")).toBe("a deploy this server has done\n");
    dpkg("-r", "pulldeploy");
    expect(status()).toBe("rc");
    for (const p of ["/usr/bin/pulldeploy", UNIT, "/usr/share/doc/pulldeploy"])
      expect({ p, exists: fs.existsSync(at(p)) }).toEqual({ p, exists: false });
    expect(fs.readFileSync(at(join(STATE, "handled")), "utf8")).toBe("a deploy this server has done\n");
    expect(fs.existsSync(at("/etc/default/pulldeploy"))).toBe(true);
    dpkg("-P", "pulldeploy");
    expect(status()).toBe("");
    for (const p of [STATE, "/etc/default/pulldeploy"])
      expect({ p, exists: fs.existsSync(at(p)) }).toEqual({ p, exists: false });
  });
});

/**
 * scripts/package.sh in a copy of the tree, with /usr/bin/true (a small x86-64 executable linked
 * against glibc) standing in for the 115 MB binary: quick enough to build packages twice.
 */
describe("scripts/package.sh", () => {
  const copyTree = (to: string, version = VERSION) => {
    for (const p of ["scripts/package.sh", "README.md", "examples", "packaging"])
      fs.cpSync(join(ROOT, p), join(to, p), { recursive: true });
    fs.writeFileSync(join(to, "package.json"), JSON.stringify({ ...pkg, version }, null, 2));
  };
  const TRUE = fs.realpathSync(Bun.which("true")!);
  const pack = (tree: string, ...specs: string[]) =>
    sh([join(tree, "scripts/package.sh"), join(tree, "out"), ...specs], { env: { SOURCE_DATE_EPOCH: "1700000000" } });

  const git = (cwd: string, ...args: string[]) =>
    ok(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", ...args], { cwd });
  const taggedRepo = (dir: string, tag: string) => {
    git(dir, "init", "-q");
    git(dir, "add", ".");
    git(dir, "commit", "-q", "-m", "release");
    git(dir, "tag", tag);
  };

  test("the same inputs give the same bytes; a matching tag is fine; a pre-release sorts before its release in Debian", async () => {
    await using d = tempDir();
    copyTree(d.path, "1.2.0-rc.1");
    taggedRepo(d.path, "v1.2.0-rc.1");
    expect(pack(d.path, `${TRUE}:x64`)).toMatchObject({ code: 0, stderr: "" });
    const first = fs.readFileSync(join(d.path, "out/SHA256SUMS"), "utf8");
    expect(first).toMatch(
      / {2}pulldeploy-1\.2\.0-rc\.1-linux-x64\.tar\.gz\n[0-9a-f]{64} {2}pulldeploy_1\.2\.0~rc\.1_amd64\.deb\n$/,
    );
    fs.rmSync(join(d.path, "out"), { recursive: true });
    expect(pack(d.path, `${TRUE}:x64`).code).toBe(0);
    expect(fs.readFileSync(join(d.path, "out/SHA256SUMS"), "utf8")).toBe(first);
    expect(sh(["dpkg", "--compare-versions", "1.2.0~rc.1", "lt", "1.2.0"]).code).toBe(0);
  });

  test("an enclosing repository's tag is not this tree's (a source tarball unpacked inside another clone)", async () => {
    await using d = tempDir();
    copyTree(join(d.path, "src"));
    taggedRepo(d.path, "v9.9.9");
    expect(pack(join(d.path, "src"), `${TRUE}:x64`)).toMatchObject({ code: 0, stderr: "" });
  });

  test("refuses, in one line saying what to fix, and writes no SHA256SUMS", async () => {
    const cases: { name: string; version?: string; tag?: string; specs: string[]; error: RegExp }[] = [
      {
        name: "an x86-64 binary as arm64",
        specs: [`${TRUE}:arm64`],
        error: /is not a linux-arm64 executable \(ELF e_machine 62, expected 183\)$/,
      },
      {
        name: "an aarch64 binary as x64",
        specs: [`${ARM64_BINARY}:x64`],
        error: /is not a linux-x64 executable \(ELF e_machine 183, expected 62\)$/,
      },
      {
        name: "a script, not an ELF file",
        specs: [`${join(ROOT, "scripts/commit-id.sh")}:x64`],
        error: /commit-id\.sh is not a linux-x64 executable/,
      },
      {
        name: "a missing binary",
        specs: ["/nonexistent/pulldeploy:x64"],
        error: /\/nonexistent\/pulldeploy is missing: run make build/,
      },
      { name: "an unknown arch", specs: [`${TRUE}:386`], error: /unknown arch "386" \(x64 or arm64\)$/ },
      { name: "no binaries", specs: [], error: /^package: usage: / },
      {
        name: "a version that isn't semver",
        version: "1.0",
        specs: [`${TRUE}:x64`],
        error: /package\.json: version "1\.0" is not semver .*: fix it there$/,
      },
      {
        name: "a release tag that disagrees with package.json",
        tag: "v9.9.9",
        specs: [`${TRUE}:x64`],
        error: new RegExp(
          `HEAD is tagged v9\\.9\\.9 but package\\.json says ${VERSION.replace(/\./g, "\\.")}: set ` +
            `package\\.json's version to 9\\.9\\.9$`,
        ),
      },
    ];
    for (const c of cases) {
      await using d = tempDir();
      copyTree(d.path, c.version);
      if (c.tag) taggedRepo(d.path, c.tag);
      const r = pack(d.path, ...c.specs);
      expect({ name: c.name, code: r.code, lines: r.stderr.trim().split("\n").length }).toEqual({
        name: c.name,
        code: 1,
        lines: 1,
      });
      expect(r.stderr.trim()).toMatch(c.error);
      expect({ name: c.name, sums: fs.existsSync(join(d.path, "out/SHA256SUMS")) }).toEqual({
        name: c.name,
        sums: false,
      });
    }
  });
});
