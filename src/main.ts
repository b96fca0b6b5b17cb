/**
 * The executable's entry: argv in, the exit code out. In the built executable a bare `pulldeploy
 * --version` (or `-v`, `version`) is answered here, from what the build baked in, and loads nothing
 * else; every other run, and every run from source, loads `cli/run.ts`, which reads `process.env`,
 * stdin and signals and runs the command (`--version` too, in any other spelling).
 *
 * Why: a module's static imports are loaded and run before its first line, and each chunk of the split
 * bundle costs its own load. This file imports nothing, so `--version` loads one small chunk, and the
 * other runs one chunk more than if this file held `cli/run.ts`'s code.
 */

/** package.json's version and the commit, baked in by the build (`--define`, see the Makefile). */
declare const PULLDEPLOY_VERSION: string | undefined;
declare const PULLDEPLOY_COMMIT: string | undefined;

const VERSION_WORDS = new Set(["--version", "-v", "version"]);

/** The exit code of a run with these arguments (argv without the executable and script). */
export async function main(argv: string[]): Promise<number> {
  if (typeof PULLDEPLOY_VERSION === "string" && argv.length > 0 && VERSION_WORDS.has(argv[0]!)) {
    const commit = typeof PULLDEPLOY_COMMIT === "string" ? PULLDEPLOY_COMMIT : "unknown";
    // console.log, not process.stdout: building that stream costs ~25 ms (see cli/run.ts)
    console.log(`pulldeploy ${PULLDEPLOY_VERSION} (commit ${commit})`);
    return 0;
  }
  const { run } = await import("./cli/run.ts");
  return run(argv);
}

if (import.meta.main) {
  // No top-level await: importing this module (tests do) must not run or wait for anything.
  void main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
