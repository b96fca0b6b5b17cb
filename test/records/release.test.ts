/** Release ids, stored names, the KV layout and the record format (a contract the fleet status reads). */
import { describe, expect, test } from "bun:test";
import {
  checkNode,
  checkRole,
  kvKeys,
  normalizeKvPrefix,
  parseReleaseId,
  parseReleaseRecord,
  releaseId,
  releaseIdOfUrl,
  renderReleaseRecord,
  storedNames,
  type ReleaseRecord,
} from "../../src/records/release.ts";

const SHA = "0ca9279b78e236bc67c54fd9df0527d5d8945a0f2fd95c971f6db08814a57b5e";

const RECORD: ReleaseRecord = {
  id: "20260102T030405Z-0ca9279b78e2",
  role: "web",
  manifest_url: "s3://b/app/web/20260102T030405Z-0ca9279b78e2.yml",
  archive_url: "s3://b/app/web/20260102T030405Z-0ca9279b78e2.tar.gz",
  algorithm: "sha256",
  checksum: SHA,
  size: 1234,
  files: 10,
  created_at: "2026-01-02T03:04:05Z",
  publisher: "ci@build-1",
  message: "fix the login page",
};

describe("release ids", () => {
  test.each([
    [new Date("2026-01-02T03:04:05.678Z"), SHA, "20260102T030405Z-0ca9279b78e2"],
    [new Date("1999-12-31T23:59:59Z"), "E0840DAAA97CD2CF2175F9E5D133FFB3324A2B93", "19991231T235959Z-e0840daaa97c"],
  ])("%s + checksum → %s", (at, checksum, id) => {
    expect(releaseId(at, checksum)).toBe(id);
    expect(parseReleaseId(id)).toEqual({
      createdAt: new Date(Math.floor(at.getTime() / 1000) * 1000),
      checksumPrefix: id.slice(-12),
    });
  });

  test("ids sort by time as strings", () => {
    const ids = ["2026-03-01T00:00:00Z", "2025-12-31T23:59:59Z", "2026-01-10T08:00:00Z"].map((t) =>
      releaseId(new Date(t), SHA),
    );
    expect([...ids].sort()).toEqual([ids[1], ids[2], ids[0]]);
  });

  test.each([
    "",
    "20260102T030405Z",
    "20260102T030405Z-0CA9279B78E2",
    "20260102T030405Z-0ca9279b78e",
    "20261302T030405Z-0ca9279b78e2",
    "2026-01-02T03:04:05Z-0ca9279b78e2",
  ])("%j is not an id", (s) => expect(parseReleaseId(s)).toBeUndefined());

  test.each([
    ["s3://b/app/web/20260102T030405Z-0ca9279b78e2.yml", "20260102T030405Z-0ca9279b78e2"],
    ["file:///srv/rel/web/20260102T030405Z-0ca9279b78e2.tar.gz", "20260102T030405Z-0ca9279b78e2"],
    ["https://dav/x/20260102T030405Z-0ca9279b78e2.yml?sig=1", "20260102T030405Z-0ca9279b78e2"],
    ["s3://b/app/web/manifest.yml", undefined],
    ["s3://b/app/web/20260102T030405Z-0ca9279b78e2.json", undefined],
  ])("releaseIdOfUrl(%j)", (url, id) => expect(releaseIdOfUrl(url)).toBe(id));
});

describe("layout", () => {
  test("stored names under <to>", () => {
    expect(storedNames.archive("web", RECORD.id)).toBe("web/20260102T030405Z-0ca9279b78e2.tar.gz");
    expect(storedNames.manifest("web", RECORD.id)).toBe("web/20260102T030405Z-0ca9279b78e2.yml");
  });

  test("Consul KV keys", () => {
    expect(kvKeys.role("pulldeploy", "web")).toBe("pulldeploy/roles/web");
    expect(kvKeys.latest("pulldeploy", "web")).toBe("pulldeploy/roles/web/latest");
    expect(kvKeys.release("pulldeploy", "web", RECORD.id)).toBe(
      "pulldeploy/roles/web/releases/20260102T030405Z-0ca9279b78e2",
    );
    expect(kvKeys.releases("pulldeploy", "web")).toBe("pulldeploy/roles/web/releases/");
    expect(kvKeys.node("teams/a/pd", "web", "web-1")).toBe("teams/a/pd/roles/web/nodes/web-1");
  });

  test.each([
    ["pulldeploy", "pulldeploy"],
    ["/teams/a/", "teams/a"],
    ["//", { error: "the KV prefix must not be empty" }],
  ])("kv prefix %j", (input, out) => expect(normalizeKvPrefix(input)).toEqual(out));

  test.each([
    ["web", true],
    ["api-v2.internal_1", true],
    ["9", true],
    ["", false],
    ["-web", false],
    ["web/admin", false],
    ["web admin", false],
    ["x".repeat(129), false],
  ])("role %j valid: %p", (role, ok) => expect(checkRole(role) === undefined).toBe(ok));

  // A name becomes a KV key segment: an HTTP client resolves dot segments (`nodes/../latest` is the
  // role's `latest`), so anything that is not a plain name is refused.
  test.each([
    ["web-1", true],
    ["ip-10-0-0-1.ec2.internal", true],
    ["../latest", false],
    ["..", false],
    [".", false],
    ["", false],
    ["/", false],
    ["a/b", false],
    ["web\n1", false],
    ["web\u0000", false],
    ["%2e%2e", false],
    ["web 1", false],
    ["web\u009b2J", false],
  ])("node %j valid: %p", (node, ok) => {
    const bad = checkNode(node);
    expect(bad === undefined).toBe(ok);
    if (bad) expect(bad).not.toMatch(/[\u0000-\u001f\u007f-\u009f]/);
  });

  test.each([
    ["a/../b", "a/../b"],
    ["..", ".."],
    ["a/./b", "a/./b"],
    ["a//b", "a//b"],
    ["pd\u0001", "pd\u0001"],
    ["pd?x=1", "pd?x=1"],
  ])("kv prefix %j is refused", (input) => {
    const out = normalizeKvPrefix(input);
    expect(typeof out).toBe("object");
    expect((out as { error: string }).error).toContain("each segment must be letters, digits");
  });
});

describe("records", () => {
  test("render → parse round-trips, keys in a fixed order", () => {
    const text = renderReleaseRecord({ ...RECORD });
    expect(Object.keys(JSON.parse(text))).toEqual([
      "id",
      "role",
      "manifest_url",
      "archive_url",
      "algorithm",
      "checksum",
      "size",
      "files",
      "created_at",
      "publisher",
      "message",
    ]);
    expect(parseReleaseRecord(text)).toEqual(RECORD);
    // Unknown keys from a newer publisher are ignored.
    expect(parseReleaseRecord(JSON.stringify({ ...RECORD, extra: 1 }))).toEqual(RECORD);
    expect(parseReleaseRecord(JSON.stringify({ ...RECORD, size: null, files: null }))).toEqual({
      ...RECORD,
      size: null,
      files: null,
    });
  });

  test.each([
    ["not json", /^not JSON/],
    ["[]", /^not a JSON object$/],
    [JSON.stringify({ ...RECORD, algorithm: "crc32" }), /^algorithm: expected md5, sha1, sha256 or sha512$/],
    [
      JSON.stringify({ ...RECORD, id: "v1", size: -1, files: 1.5, role: 3 }),
      /^role: expected a string; size: expected a whole number or null; files: expected a whole number or null; id: "v1" is not a release id$/,
    ],
  ])("%s is refused with every problem", (text, message) => {
    const r = parseReleaseRecord(text);
    expect(typeof r).toBe("string");
    expect(r as string).toMatch(message);
  });
});
