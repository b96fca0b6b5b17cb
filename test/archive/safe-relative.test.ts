import { expect, test } from "bun:test";
import { safeRelative } from "../../src/archive/materialise.ts";

/** Every spelling of an entry's name the guards must see as one: the usual ones take a shortcut. */
test.each([
  ["a", "a"],
  ["a/b.txt", "a/b.txt"],
  ["./a/b.txt", "a/b.txt"],
  ["./a/", "a"],
  ["a//b", "a/b"],
  ["./a//b", "a/b"],
  ["././a", "a"],
  ["a/./b", "a/b"],
  [".hidden/.x", ".hidden/.x"],
  ["./..a/b..", "..a/b.."],
  ["./", null],
  [".", null],
  ["./.", null],
  ["", null],
])("safeRelative(%p) is %p", (name, rel) => {
  expect(safeRelative(name)).toBe(rel);
});

test.each([
  ["../x", "path contains .."],
  ["./../x", "path contains .."],
  ["./a/../../x", "path contains .."],
  ["a/..", "path contains .."],
  ["/etc/passwd", "absolute path"],
  ["./a\0b", "NUL in name"],
  ["a\0b", "NUL in name"],
])("safeRelative(%p) refuses: %s", (name, why) => {
  expect(() => safeRelative(name)).toThrow(why);
});
