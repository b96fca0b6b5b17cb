/**
 * `pulldeploy fire MANIFEST_URL [--role R]`: announce an existing release again (re-deploy, or roll
 * back by hand). With --role, the role's `latest` in KV points at it first. Only turns flags into
 * options and calls `fire`; with `--role … --wait`, then waits for the role's nodes as `publish --wait`
 * does. With `--sign-key`, the manifest is re-signed with a new issue time first and the new URL is
 * fired (agents with `--trust-key` refuse a manifest older than the one they run).
 * Exit code: 0, 1 failed (or a failed / timed-out / empty rollout with --wait), 2 usage.
 */
import { defineCommand, type ArgsDef } from "citty";
import type { CommandEnv } from "./context.ts";
import { UsageError } from "../errors.ts";
import { fire } from "../publish/fire.ts";
import { releaseIdOfUrl } from "../records/release.ts";
import { isSourceScheme, schemeOf, SOURCE_SCHEMES } from "../store/schemes.ts";
import { announceArgs, rolloutArgs, waitArgs } from "./_shared.ts";
import { announceOptions, waitForNodes, waitOptions } from "./publish.ts";
import { rolloutHook, rolloutSettings } from "./rollout.ts";

export const fireArgs = {
  "manifest-url": {
    type: "positional",
    description: "The release's manifest URL (as publish printed it)",
    required: false,
  },
  role: { type: "string", description: "Also make this release the role's latest in Consul KV", valueHint: "role" },
  "sign-key": {
    type: "string",
    description: "Re-sign the manifest with a new issue time (stored beside it under resigned-…/) and fire that",
    valueHint: "file",
  },
  ...waitArgs,
  ...rolloutArgs,
  ...announceArgs,
} as const satisfies ArgsDef;

export default defineCommand({
  meta: {
    name: "fire",
    description: "Fire the deploy event for an existing manifest URL (re-deploy or roll back by hand)",
  },
  args: fireArgs,
  async run({ args, data }) {
    const ctx = data as CommandEnv;
    const a = args as Record<string, string | boolean | undefined>;
    const url = typeof a["manifest-url"] === "string" ? a["manifest-url"] : "";
    if (url === "") throw new UsageError("missing the manifest URL: pulldeploy fire MANIFEST_URL [--role ROLE]");
    const scheme = schemeOf(url);
    if (!isSourceScheme(scheme))
      throw new UsageError(`"${url}" is not a manifest URL (schemes: ${SOURCE_SCHEMES.join(", ")})`);
    const role = typeof a.role === "string" && a.role !== "" ? a.role : undefined;
    const common = announceOptions(a, ctx);
    const wait = waitOptions(a, common);
    // Agents report the release by the id in the manifest's file name (<id>.yml, as publish names it).
    const releaseId = releaseIdOfUrl(url);
    if (wait && role === undefined) throw new UsageError("--wait needs --role: the role whose nodes to wait for");
    if (wait && releaseId === undefined)
      throw new UsageError(
        `--wait: "${url}" is not named <release id>.yml as publish names manifests, so its release cannot be ` +
          "told apart in the nodes' reports (drop --wait)",
      );
    const beforeRecord = rolloutHook(rolloutSettings(a), {
      role,
      kv: common.kv,
      prefix: common.kvPrefix,
      announce: common.announce,
      ctx,
    });
    const signKey = typeof a["sign-key"] === "string" ? a["sign-key"] : undefined;
    const { manifestUrl } = await fire({
      manifestUrl: url,
      signKey,
      role,
      ...common,
      env: ctx.env,
      log: ctx.log,
      signal: ctx.signal,
      beforeRecord,
    });
    if (signKey !== undefined) process.stdout.write(`${manifestUrl}\n`);
    if (!wait) return 0;
    return waitForNodes({ ...wait, role: role!, releaseId: releaseId!, common, ctx, log: ctx.log });
  },
});
