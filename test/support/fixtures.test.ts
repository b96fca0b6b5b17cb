/**
 * The repo's copy of the captured Consul and Serf samples must stay byte for byte the spec's
 * (`../shared/fixtures`), which is checked whenever the original is there (it is beside the project's
 * own work tree; a bare clone has only the copy).
 */
import { expect, test } from "bun:test";
import * as fs from "node:fs";
import { join, relative } from "node:path";
import { FIXTURES, SHARED_FIXTURES } from "./helpers.ts";

function files(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else out.push(relative(root, p));
    }
  };
  walk(root);
  return out.sort();
}

test("the captured samples are in the repo: consul 1.10 HTTP sessions and watch stdin, serf events", () => {
  const ours = files(FIXTURES);
  expect(ours.filter((f) => f.endsWith(".http.txt")).length).toBeGreaterThan(20);
  expect(ours.some((f) => /watch-.*\.stdin\.json$/.test(f))).toBe(true);
});

test.skipIf(!fs.existsSync(SHARED_FIXTURES))("the repo's copy equals ../shared/fixtures byte for byte", () => {
  const theirs = files(SHARED_FIXTURES);
  expect(files(FIXTURES)).toEqual(theirs);
  for (const f of theirs)
    expect(Buffer.compare(fs.readFileSync(join(FIXTURES, f)), fs.readFileSync(join(SHARED_FIXTURES, f)))).toBe(0);
});
