import { expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { ROOT, tempDir } from "./support/helpers.ts";

/**
 * `dfgOnly` has an effect only if JavaScriptCore honours it: a child runtime reports its compiles
 * (BUN_JSC_reportCompileTimes) while three equally hot functions run, one left alone, one kept out of
 * the FTL by name, one as a method of a class given whole.
 */
test("dfgOnly keeps functions and a class's methods out of the FTL", async () => {
  await using dir = tempDir();
  const script = join(dir.path, "hot.ts");
  writeFileSync(
    script,
    `import { dfgOnly } from ${JSON.stringify(join(ROOT, "src/jit.ts"))};
function hotFree(n) { let s = 0; for (let i = 0; i < 64; i++) s = (s + n * i) | 0; return s; }
function hotKept(n) { let s = 0; for (let i = 0; i < 64; i++) s = (s + n * i) | 0; return s; }
class Hot { get g() { return 1; } hotMethod(n) { let s = 0; for (let i = 0; i < 64; i++) s = (s + n * i) | 0; return s; } }
dfgOnly(hotKept, Hot);
const h = new Hot();
let acc = 0;
const end = performance.now() + 1000;
while (performance.now() < end) for (let i = 0; i < 10000; i++) acc ^= hotFree(i) ^ hotKept(i) ^ h.hotMethod(i);
console.log(acc);
`,
  );
  const proc = Bun.spawn([process.execPath, script], {
    env: { ...process.env, BUN_JSC_reportCompileTimes: "1" },
    stdout: "ignore",
    stderr: "pipe",
  });
  const report = await new Response(proc.stderr).text();
  expect(await proc.exited).toBe(0);
  const tiers = (name: string) =>
    [...report.matchAll(new RegExp(`^Optimized ${name}#.* using (\\w+) `, "gm"))].map((m) => m[1]);
  expect(tiers("hotFree")).toContain("FTL");
  // Each ran hot enough to be compiled (by the baseline JIT or the DFG; the DFG may inline it).
  for (const name of ["hotKept", "hotMethod"]) {
    expect(tiers(name).length).toBeGreaterThan(0);
    expect(tiers(name)).not.toContain("FTL");
  }
});
