/** `fire` with `signKey` (the `fire --sign-key` command): re-sign first, then fire that manifest. */
import { expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { createLogger } from "../../src/log.ts";
import { fire } from "../../src/publish/fire.ts";
import { loadPublicKey, verifyBytes, writeKeyPair } from "../../src/signature.ts";
import { startConsulStandin } from "../support/consul-standin.ts";
import { tempDir } from "../support/helpers.ts";

test("fire re-signs with signKey and fires (and returns) the new manifest URL; the original stays as it was", async () => {
  await using d = tempDir();
  const consul = await startConsulStandin();
  try {
    const { privateFile, publicFile } = writeKeyPair(join(d.path, "release.key"));
    expect(fs.statSync(privateFile).mode & 0o777).toBe(0o600);
    expect(() => writeKeyPair(join(d.path, "release.key"))).toThrow(
      `${privateFile} exists; keys are never overwritten (choose another --out)`,
    );
    const id = "20260101T000000Z-0123456789ab";
    const path = join(d.path, `store/web/${id}.yml`);
    fs.mkdirSync(join(d.path, "store/web"), { recursive: true });
    const original =
      `src: file:///s/web/${id}.tar.gz\nchecksum: ${"a".repeat(64)}\ndest: /srv/app\nrelease_id: ` +
      `${id}\nissued_at: "2026-01-01T00:00:00.000Z"\n`;
    fs.writeFileSync(path, original);
    const { manifestUrl } = await fire({
      manifestUrl: `file://${path}`,
      signKey: privateFile,
      kv: false,
      kvPrefix: "pulldeploy",
      announce: { via: "consul", event: "deploy" },
      consul: {},
      publisher: "t",
      message: "",
      env: consul.env,
      log: createLogger({ quiet: true }),
    });
    expect(manifestUrl).toStartWith(`file://${d.path}/store/web/resigned-`);
    expect(manifestUrl).toEndWith(`/${id}.yml`);
    const bytes = fs.readFileSync(new URL(manifestUrl));
    expect(
      verifyBytes(bytes, fs.readFileSync(new URL(`${manifestUrl}.sig`), "utf8"), [loadPublicKey(publicFile)]),
    ).toBe(true);
    expect(fs.readFileSync(path, "utf8")).toBe(original);
    // The event carries the re-signed manifest's URL, not the original's.
    const event = consul.requests.find((q) => q.path === "/v1/event/fire/deploy");
    expect(new TextDecoder().decode(event?.body)).toBe(manifestUrl);
  } finally {
    await consul.stop();
  }
});
