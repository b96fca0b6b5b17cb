import { describe, expect, test } from "bun:test";
import { agentArgs } from "../../src/cli/agent.ts";
import { kvPrefixFlag } from "../../src/cli/_shared.ts";
import { normalizeArgv } from "../../src/cli/argv.ts";
import { UsageError } from "../../src/errors.ts";
import { parseManifest } from "../../src/manifest/parse.ts";
import { rsyncArgs } from "../../src/sync/strategies.ts";

describe("argv: both stretcher spellings", () => {
  test.each([
    [["-max-bandwidth", "10M"], ["--max-bandwidth=10M"]],
    [["--max-band-width", "10MB"], ["--max-bandwidth=10MB"]],
    [["-max-bandwidth=10M"], ["--max-bandwidth=10M"]],
    [["-timeout", "30"], ["--timeout=30"]],
    [["--timeout=30s"], ["--timeout=30s"]],
    [
      ["-retry", "3", "-retry-wait", "1"],
      ["--retry=3", "--retry-wait=1"],
    ],
    [["-rsync-verbose", "-vv"], ["--rsync-verbose=-vv"]],
    [["--rsync-verbose", ""], ["--rsync-verbose="]],
    [["-random-delay", "0.5"], ["--random-delay=0.5"]],
  ])("%j", (argv, out) => expect(normalizeArgv(argv, agentArgs)).toEqual(out));

  test.each([
    [["--bogus"], "unknown flag --bogus"],
    [["-x"], "unknown flag -x"],
    [["--timeout"], "flag --timeout needs a value"],
    [["extra"], 'unexpected argument "extra"'],
  ])("%j is a usage error", (argv, msg) => {
    expect(() => normalizeArgv(argv, agentArgs)).toThrow(UsageError);
    expect(() => normalizeArgv(argv, agentArgs)).toThrow(msg);
  });
});

describe("rsync arguments: stretcher's command line exactly", () => {
  const sha = "e0840daaa97cd2cf2175f9e5d133ffb3324a2b93";
  const m = (extra = "") => parseManifest(`src: file:///a.tgz\nchecksum: ${sha}\ndest: /srv/app\n${extra}`).manifest;
  test.each([
    ["", "", ["rsync", "-a", "--delete", "/tmp/t/", "/srv/app/"]],
    ["-vv", "", ["rsync", "-a", "--delete", "-vv", "/tmp/t/", "/srv/app/"]],
    [
      "",
      'excludes: ["*.pid", "log/"]\n',
      ["rsync", "-a", "--delete", "--exclude", "*.pid", "--exclude", "log/", "/tmp/t/", "/srv/app/"],
    ],
    [
      "-v",
      "exclude_from: ex.list\nexcludes: [a]\n",
      ["rsync", "-a", "--delete", "-v", "--exclude-from", "/tmp/t/ex.list", "--exclude", "a", "/tmp/t/", "/srv/app/"],
    ],
  ])("verbose %j, %j", (verbose, extra, args) => {
    expect(rsyncArgs({ tree: "/tmp/t", dest: "/srv/app", manifest: m(extra), rsyncVerbose: verbose })).toEqual(args);
  });
  test("an empty verbose flag adds no empty argument (rsync ≥3.2 aborts on one)", () => {
    expect(rsyncArgs({ tree: "/t", dest: "/d", manifest: m(), rsyncVerbose: "" })).not.toContain("");
  });
});

describe("--kv-prefix: one reading for agent, publish, fire, status and dashboard", () => {
  test.each([
    [undefined, "pulldeploy"],
    ["pulldeploy", "pulldeploy"],
    ["/custom/", "custom"],
    ["//a/b//", "a/b"],
  ])("%p → %p", (value, prefix) => expect(kvPrefixFlag(value)).toBe(prefix));
  test("nothing left after the slashes is a usage error", () => {
    expect(() => kvPrefixFlag("//")).toThrow(new UsageError("--kv-prefix: the KV prefix must not be empty"));
    expect(() => kvPrefixFlag("")).toThrow(UsageError);
  });
});
