/**
 * A tiering hint for the per-entry code of short runs. JavaScriptCore compiles a function that gets
 * hot first with its DFG compiler and, if it stays hot, again with the FTL, its slowest compiler,
 * on a background thread. An agent's run extracts a few thousand entries and exits: the FTL's compile
 * of the header parser and the per-file checks costs more CPU than its faster code saves in the rest
 * of the run, and the compilers' memory stays with the process (the README's benchmark section has
 * the figures). `dfgOnly` keeps the given functions, or every method of the given classes, out of
 * the FTL; they still reach the DFG tier, whose code is what runs.
 */
import { noFTL } from "bun:jsc";

type Target = ((...args: never[]) => unknown) | (abstract new (...args: never[]) => unknown);

/** Each function given, and every method and getter of each class given, stays out of the FTL. */
export function dfgOnly(...targets: Target[]): void {
  for (const t of targets) {
    noFTL(t as (...args: unknown[]) => unknown);
    const proto: unknown = (t as { prototype?: unknown }).prototype;
    if (typeof proto !== "object" || proto === null) continue; // arrow functions have none
    for (const key of Object.getOwnPropertyNames(proto)) {
      const d = Object.getOwnPropertyDescriptor(proto, key)!;
      for (const f of [d.value, d.get, d.set]) if (typeof f === "function" && f !== t) noFTL(f);
    }
  }
}
