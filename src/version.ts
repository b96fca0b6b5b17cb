import pkg from "../package.json" with { type: "json" };

/**
 * Baked in by the build (`bun build --define`, see the Makefile and scripts/commit-id.sh): the
 * commit, `-dirty` if the tree had changes, "unknown" outside a git clone. Undefined when run from
 * source. Never read from git at run time: `--version` must stay fast.
 */
declare const PULLDEPLOY_COMMIT: string | undefined;

/** package.json's version: the one place the version is set (the packages' names and metadata read it too). */
export const VERSION: string = pkg.version;
export const COMMIT: string = typeof PULLDEPLOY_COMMIT === "string" ? PULLDEPLOY_COMMIT : "unknown";
export const USER_AGENT = `pulldeploy/${VERSION}`;
