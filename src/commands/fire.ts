/**
 * `pulldeploy fire MANIFEST_URL [--role R]`: announce an existing release again (re-deploy, or roll
 * back by hand). With --role, the role's `latest` in KV points at it first. Only turns flags into
 * options and calls `fire`. Exit code: 0, 1 failed, 2 usage.
 */
import { defineCommand, type ArgsDef } from "citty";
import type { CommandEnv } from "../cli.ts";
import { UsageError } from "../errors.ts";
import { fire } from "../publish.ts";
import { isSourceScheme, schemeOf, SOURCE_SCHEMES } from "../sources/schemes.ts";
import { announceArgs, announceOptions } from "./publish.ts";

export const fireArgs = {
  "manifest-url": { type: "positional", description: "The release's manifest URL (as publish printed it)", required: false },
  role: { type: "string", description: "Also make this release the role's latest in Consul KV", valueHint: "role" },
  ...announceArgs,
} as const satisfies ArgsDef;

export default defineCommand({
  meta: { name: "fire", description: "Fire the deploy event for an existing manifest URL (re-deploy or roll back by hand)" },
  args: fireArgs,
  async run({ args, data }) {
    const ctx = data as CommandEnv;
    const a = args as Record<string, string | boolean | undefined>;
    const url = typeof a["manifest-url"] === "string" ? a["manifest-url"] : "";
    if (url === "") throw new UsageError("missing the manifest URL: pulldeploy fire MANIFEST_URL [--role ROLE]");
    const scheme = schemeOf(url);
    if (!isSourceScheme(scheme)) throw new UsageError(`"${url}" is not a manifest URL (schemes: ${SOURCE_SCHEMES.join(", ")})`);
    const role = typeof a.role === "string" && a.role !== "" ? a.role : undefined;
    await fire({ manifestUrl: url, role, ...announceOptions(a, ctx), env: ctx.env, log: ctx.log, signal: ctx.signal });
    return 0;
  },
});
