/**
 * The source tree's dependency rule, checked on every import of every file under src/:
 *
 *   main → cli → {agent, publish, fleet} → {sync, manifest, archive, delta, store, consul, records} → shared
 *
 * - no import cycles at all (static or dynamic `import()`);
 * - a subsystem imports only from its own folder, the layers below it and the shared vocabulary
 *   (src/*.ts); agent, publish and fleet never import each other;
 * - the shared vocabulary imports only itself (and package.json for the version).
 * Lower layers may import each other only where the table says so (manifest reads store's scheme
 * list; consul reads store's HTTP types; delta builds on archive, store and manifest).
 */
import { describe, expect, test } from "bun:test";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { ROOT } from "./support/helpers.ts";

const SRC = join(ROOT, "src");

/** What each part may import besides itself and the shared vocabulary. */
const MAY_IMPORT: Record<string, string[]> = {
  main: ["cli"],
  cli: ["agent", "publish", "fleet", "sync", "manifest", "archive", "delta", "store", "consul", "records"],
  agent: ["sync", "manifest", "archive", "delta", "store", "consul", "records"],
  publish: ["manifest", "archive", "delta", "store", "consul", "records"],
  fleet: ["consul", "records"],
  sync: ["manifest"],
  delta: ["archive", "store", "manifest"],
  manifest: ["store"],
  archive: [],
  store: [],
  consul: ["store"],
  records: [],
  shared: [],
};

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? walk(p) : /\.(ts|js)$/.test(name) ? [p] : [];
  });
}

/** The part a file belongs to: its first folder under src/, "main" for src/main.ts, else "shared". */
function partOf(file: string): string {
  const rel = relative(SRC, file);
  if (rel === "main.ts") return "main";
  return rel.includes("/") ? rel.split("/")[0]! : "shared";
}

const IMPORT = /(?:^|[^\w.])(?:import|export)\s*(?:type\s+)?(?:[^"';]*?\sfrom\s*)?\(?\s*["'](\.{1,2}\/[^"']+)["']/gm;

function importsOf(file: string): string[] {
  const text = readFileSync(file, "utf8");
  return [...text.matchAll(IMPORT)]
    .map((m) => resolve(dirname(file), m[1]!))
    .filter((p) => p.startsWith(SRC) && /\.(ts|js)$/.test(p));
}

const files = walk(SRC);
const graph = new Map(files.map((f) => [f, importsOf(f)]));

describe("source layout", () => {
  test("every src/ folder is a known part", () => {
    const parts = new Set(files.map(partOf));
    for (const p of parts) expect(Object.keys(MAY_IMPORT)).toContain(p);
    expect(graph.size).toBeGreaterThan(40);
  });

  test("each import goes to its own part, a part below it, or the shared vocabulary", () => {
    const bad: string[] = [];
    for (const [file, deps] of graph) {
      const from = partOf(file);
      for (const dep of deps) {
        const to = partOf(dep);
        if (to === from || (to === "shared" && from !== "shared") || MAY_IMPORT[from]!.includes(to)) continue;
        if (from === "shared" && to === "shared") continue;
        bad.push(`${relative(ROOT, file)} (${from}) imports ${relative(ROOT, dep)} (${to})`);
      }
    }
    expect(bad).toEqual([]);
  });

  test("no import cycles", () => {
    const cycles: string[] = [];
    const state = new Map<string, "open" | "done">();
    const stack: string[] = [];
    const visit = (f: string) => {
      state.set(f, "open");
      stack.push(f);
      for (const d of graph.get(f) ?? []) {
        if (state.get(d) === "open")
          cycles.push([...stack.slice(stack.indexOf(d)), d].map((p) => relative(SRC, p)).join(" → "));
        else if (!state.has(d)) visit(d);
      }
      stack.pop();
      state.set(f, "done");
    };
    for (const f of files) if (!state.has(f)) visit(f);
    expect(cycles).toEqual([]);
  });

  test("the checker sees imports of every form (static, type-only, dynamic, re-export)", () => {
    const agentCli = graph.get(join(SRC, "cli/index.ts"))!.map((p) => relative(SRC, p));
    expect(agentCli).toContain("cli/agent.ts"); // a dynamic import() in the command table
    expect(agentCli).toContain("cli/context.ts"); // a type-only import
  });
});

/** Biome's lineWidth (biome.json): Biome does not break long string literals or comments, so this keeps them short. */
const MAX_LINE = 120;
function allFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? allFiles(p) : [p];
  });
}

/** Every line of `files` longer than `max` characters (UTF-16 code units, as Biome counts), as `file:line (length)`. */
function longLines(files: string[], max: number): string[] {
  return files.flatMap((file) =>
    readFileSync(file, "utf8")
      .split("\n")
      .flatMap((line, i) => (line.length > max ? [`${relative(ROOT, file)}:${i + 1} (${line.length})`] : [])),
  );
}

describe("line length", () => {
  test(`no line in src/ is longer than ${MAX_LINE} characters`, () => {
    const files = allFiles(SRC);
    expect(files.length).toBeGreaterThan(40);
    expect(longLines(files, MAX_LINE)).toEqual([]);
  });

  test("the check finds a planted long line and names its file and line", () => {
    const dir = mkdtempSync(join(tmpdir(), "pulldeploy-layout-"));
    try {
      const file = join(dir, "planted.ts");
      writeFileSync(file, `const ok = 1;\n${"x".repeat(MAX_LINE)}\n// ${"y".repeat(MAX_LINE - 2)}\n`);
      expect(longLines([file], MAX_LINE)).toEqual([`${relative(ROOT, file)}:3 (${MAX_LINE + 1})`]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
