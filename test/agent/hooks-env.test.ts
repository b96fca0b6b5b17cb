/** The commands' environment: `PULLDEPLOY_*` values redacted, the host's own variables passed on as they are. */
import { expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { commandEnv, runCommands } from "../../src/agent/hooks.ts";
import { createLogger } from "../../src/log.ts";
import { tempDir } from "../support/helpers.ts";

test("commandEnv redacts every PULLDEPLOY_* value and nothing else", () => {
  expect(
    commandEnv({
      PULLDEPLOY_ERROR: "fetch https://u:pw@h/a.tgz?X-Amz-Signature=abc: 403",
      PULLDEPLOY_MANIFEST_URL: "https://tok@h/m.yml",
      AWS_SECRET_ACCESS_KEY: "host-secret",
      HTTPS_PROXY: "http://proxyuser:proxypw@proxy:3128",
    }),
  ).toEqual({
    PULLDEPLOY_ERROR: "fetch https://u:***@h/a.tgz?X-Amz-Signature=***: 403",
    PULLDEPLOY_MANIFEST_URL: "https://***@h/m.yml",
    AWS_SECRET_ACCESS_KEY: "host-secret",
    HTTPS_PROXY: "http://proxyuser:proxypw@proxy:3128",
  });
});

test("a failure command sees PULLDEPLOY_ERROR redacted, whatever the error's text", async () => {
  await using d = tempDir();
  const out = join(d.path, "env");
  await runCommands([`env > ${out}`], {
    phase: "failure",
    env: {
      PATH: process.env.PATH!,
      PULLDEPLOY_ERROR: "post: curl https://deploy:hunter2@hooks.example/x?token=t0k3n failed",
    },
    log: createLogger({ quiet: true }),
  });
  const env = fs.readFileSync(out, "utf8");
  expect(env).toContain("PULLDEPLOY_ERROR=post: curl https://deploy:***@hooks.example/x?token=*** failed");
  expect(env).not.toContain("hunter2");
  expect(env).not.toContain("t0k3n");
});
