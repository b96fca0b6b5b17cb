#!/usr/bin/env node
// Count a JUnit XML report (from `bun test --reporter=junit`) into the line CI reads:
// `N passed, N failed, N skipped`. Missing or unreadable report: a failure, said plainly.
import { readFileSync } from "node:fs";

const file = process.argv[2];
let xml;
try {
  xml = readFileSync(file, "utf8");
} catch (err) {
  console.log(`junit report ${file} not found: ${err.message}`);
  console.log("0 passed, 1 failed");
  process.exit(0);
}
let passed = 0;
let failed = 0;
let skipped = 0;
for (const m of xml.matchAll(/<testcase\b[^>]*?(\/>|>([\s\S]*?)<\/testcase>)/g)) {
  const body = m[2] ?? "";
  if (/<(failure|error)\b/.test(body)) failed++;
  else if (/<skipped\b/.test(body)) skipped++;
  else passed++;
}
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ""}`);
