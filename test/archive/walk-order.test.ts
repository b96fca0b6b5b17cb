/** The scan's name order: UTF-8 byte order, computed without encoding each name. */
import { expect, test } from "bun:test";
import { byName } from "../../src/archive/walk.ts";

test("byName orders names exactly as Buffer.compare of their UTF-8 bytes", () => {
  const names = [
    "",
    "a",
    "A",
    "a.txt",
    "a-b",
    "a_b",
    "ab",
    "é",
    "e\u0301",
    "\u00ff",
    "\u0100",
    "\u07ff",
    "\u0800",
    "\ud7ff",
    "\ue000",
    "\uf8ff",
    "\ufb01",
    "\ufffd",
    "\uffff",
    "😀",
    "𝄞",
    "\u{10ffff}",
    "a😀",
    "a\uffff",
    "日本",
    "日本語",
    "Z",
    "~",
  ];
  const bytes = (a: string, b: string) => Buffer.compare(Buffer.from(a), Buffer.from(b));
  for (const a of names)
    for (const b of names) expect([a, b, Math.sign(byName(a, b))]).toEqual([a, b, Math.sign(bytes(a, b))]);
  expect([...names].sort(byName)).toEqual([...names].sort(bytes));
});
