/** `rollback --role`'s choice of release, and re-signing a manifest with a new issue time. */
import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { parseManifest } from "../../src/manifest/parse.ts";
import { pickRollback, resignManifest } from "../../src/publish/rollback.ts";
import { createLogger } from "../../src/log.ts";
import type { ReleaseRecord } from "../../src/records/release.ts";
import { generateKeys, loadPublicKey, verifyBytes } from "../../src/signature.ts";
import { tempDir } from "../support/helpers.ts";

const rec = (id: string): ReleaseRecord => ({
  id,
  role: "web",
  manifest_url: `file:///s/web/${id}.yml`,
  archive_url: "",
  algorithm: "sha256",
  checksum: "0".repeat(64),
  size: null,
  files: null,
  created_at: id,
  publisher: "t",
  message: "",
});
const quiet = createLogger({ quiet: true });

describe("pickRollback", () => {
  const all = [rec("a"), rec("b"), rec("c")];
  test.each([
    ["the one before latest", all, rec("c"), undefined, "b"],
    ["--to", all, rec("c"), "a", "a"],
    ["--to the latest itself (the caller says so)", all, rec("c"), "c", "c"],
  ] as const)("%s", (_n, records, latest, to, want) => {
    expect(pickRollback([...records], latest, to, "web", "pulldeploy").id).toBe(want);
  });
  test.each([
    ["nothing recorded", [], null, undefined, "no releases recorded for role web (pulldeploy/roles/web/releases"],
    ["nothing before the first", all, rec("a"), undefined, "no release before a to roll back to (releases: a, b, c)"],
    ["an unknown --to", all, rec("c"), "z", '--to: no release "z" recorded for role web (releases: a, b, c)'],
  ] as const)("%s: one-line error", (_n, records, latest, to, want) => {
    expect(() => pickRollback([...records], latest, to, "web", "pulldeploy")).toThrow(want);
  });
});

describe("resignManifest", () => {
  test("a new manifest beside the original, same content but issued_at, signed; the original untouched; re-signing again does not nest", async () => {
    await using d = tempDir();
    const keys = generateKeys();
    fs.writeFileSync(join(d.path, "key"), keys.privatePem);
    fs.writeFileSync(join(d.path, "key.pub"), keys.publicPem);
    const id = "20260101T000000Z-0123456789ab";
    fs.mkdirSync(join(d.path, "store/web"), { recursive: true });
    const original =
      `src: file:///s/web/${id}.tar.gz\nchecksum: ${"a".repeat(64)}\ndest: /srv/app\ndest_mode: ` +
      `0750\nsync_strategy: release\nrelease_id: ${id}\nissued_at: "2026-01-01T00:00:00.000Z"\ncommands:\n  pre: ` +
      `["echo hi"]\n`;
    const path = join(d.path, `store/web/${id}.yml`);
    fs.writeFileSync(path, original);
    const at = new Date("2026-03-04T05:06:07.089Z");
    const url = await resignManifest({
      manifestUrl: `file://${path}`,
      signKey: join(d.path, "key"),
      env: {},
      log: quiet,
      now: () => at,
    });
    expect(url).toBe(`file://${d.path}/store/web/resigned-20260304T050607089Z/${id}.yml`);
    const bytes = fs.readFileSync(new URL(url));
    expect(
      verifyBytes(bytes, fs.readFileSync(new URL(`${url}.sig`), "utf8"), [loadPublicKey(join(d.path, "key.pub"))]),
    ).toBe(true);
    const before = parseManifest(original, {}).manifest;
    const after = parseManifest(bytes.toString(), {}).manifest;
    expect(after).toEqual({ ...before, issuedAt: "2026-03-04T05:06:07.089Z" });
    expect(after.destMode).toBe(0o750);
    expect(fs.readFileSync(path, "utf8")).toBe(original);
    const again = await resignManifest({
      manifestUrl: url,
      signKey: join(d.path, "key"),
      env: {},
      log: quiet,
      now: () => new Date(at.getTime() + 1),
    });
    expect(again).toBe(`file://${d.path}/store/web/resigned-20260304T050607090Z/${id}.yml`);
  });

  test("refuses what is not a manifest URL, or a key that is not a private key, in one line", async () => {
    await using d = tempDir();
    const keys = generateKeys();
    fs.writeFileSync(join(d.path, "key.pub"), keys.publicPem);
    await expect(
      resignManifest({ manifestUrl: "file:///s/web/x.json", signKey: join(d.path, "key.pub"), env: {}, log: quiet }),
    ).rejects.toThrow("key.pub: not a PEM key file (make one with pulldeploy keygen)");
    fs.writeFileSync(join(d.path, "key"), keys.privatePem);
    await expect(
      resignManifest({ manifestUrl: "file:///s/web/x.json", signKey: join(d.path, "key"), env: {}, log: quiet }),
    ).rejects.toThrow("re-sign file:///s/web/x.json: expected a manifest URL ending in <id>.yml");
  });
});
