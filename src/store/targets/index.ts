/**
 * Upload targets by the scheme of `--to`. Implementations are imported lazily so that a `file://`
 * publish never loads the AWS SDK.
 */
import { UsageError } from "../../errors.ts";
import { schemeOf } from "../schemes.ts";
import type { Target, TargetOptions } from "./types.ts";

export const TARGET_SCHEMES = ["file", "s3", "http", "https"] as const;
export type TargetScheme = (typeof TARGET_SCHEMES)[number];

const TARGETS: Record<TargetScheme, (url: string, opts: TargetOptions) => Promise<Target>> = {
  file: async (url, opts) => (await import("./file.ts")).fileTarget(url, opts),
  s3: async (url, opts) => (await import("./s3.ts")).s3Target(url, opts),
  http: async (url, opts) => (await import("./http.ts")).httpTarget(url, opts),
  https: async (url, opts) => (await import("./http.ts")).httpTarget(url, opts),
};

/** A usage problem with `--to`, or undefined when its scheme has a target. */
export function checkTargetUrl(url: string): string | undefined {
  const scheme = schemeOf(url);
  if (scheme === undefined)
    return `--to "${url}" is not a URL: a scheme is required (${TARGET_SCHEMES.join(", ")}), e.g. file:///srv/releases`;
  if (!(TARGET_SCHEMES as readonly string[]).includes(scheme))
    return `--to: unknown scheme "${scheme}" (valid: ${TARGET_SCHEMES.join(", ")})`;
  return undefined;
}

export async function openTarget(url: string, opts: TargetOptions): Promise<Target> {
  const problem = checkTargetUrl(url);
  if (problem) throw new UsageError(problem);
  return TARGETS[schemeOf(url) as TargetScheme](url, opts);
}

export { UploadError, type Target, type TargetOptions } from "./types.ts";
