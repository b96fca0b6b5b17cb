/**
 * `pulldeploy gc --to URL --role web --keep 20 [--apply]`: remove delta packs and indexes no kept
 * release needs (src/delta/gc.ts). Dry run unless --apply. Only turns flags into options.
 */
import { defineCommand, type ArgsDef } from "citty";
import type { CommandEnv } from "./context.ts";
import { gc } from "../delta/gc.ts";
import { UsageError } from "../errors.ts";
import { checkRole } from "../records/release.ts";
import { USER_AGENT } from "../version.ts";
import { durationFlag, intFlag } from "./_shared.ts";

export const gcArgs = {
  to: {
    type: "string",
    description: "The store publish uploads to: s3://bucket/prefix or file:///dir",
    valueHint: "url",
  },
  role: { type: "string", description: "The role whose delta contents to collect", valueHint: "role" },
  keep: {
    type: "string",
    description: "Keep the newest N releases' indexes and every pack they reference (default 20)",
    valueHint: "n",
  },
  "min-age": {
    type: "string",
    description: "Keep unreferenced packs younger than this: a publish may be running (default 1h)",
    valueHint: "duration",
  },
  apply: { type: "boolean", description: "Delete (without it: only say what would be deleted)" },
} as const satisfies ArgsDef;

export default defineCommand({
  meta: {
    name: "gc",
    description: "Remove delta packs and indexes that no kept release references (dry run unless --apply)",
  },
  args: gcArgs,
  async run({ args, data }) {
    const { env, log, signal } = data as CommandEnv;
    const a = args as Record<string, string | boolean | undefined>;
    const str = (k: string) => (typeof a[k] === "string" && a[k] !== "" ? (a[k] as string) : undefined);
    const to = str("to");
    const role = str("role");
    if (to === undefined)
      throw new UsageError("--to is required: the store to collect in (s3://bucket/prefix or file:///dir)");
    if (role === undefined) throw new UsageError("--role is required: the role whose delta contents to collect");
    const bad = checkRole(role);
    if (bad) throw new UsageError(`--role: ${bad}`);
    const keep = intFlag("keep", str("keep"), 1) ?? 20;
    const minAgeMs = durationFlag("min-age", str("min-age"));
    await gc({ to, role, keep, apply: a.apply === true, minAgeMs, env, log, signal, userAgent: USER_AGENT });
    return 0;
  },
});
