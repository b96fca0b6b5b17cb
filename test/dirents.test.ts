import { expect, test } from "bun:test";
import * as fs from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { direntKey, inodesOf } from "../src/dirents.ts";

const fresh = () => fs.mkdtempSync(join(tmpdir(), "pulldeploy-dirents-"));

test("every entry with lstat's inode number; . and .. left out; a directory read past one 64 KiB buffer", () => {
  const dir = fresh();
  try {
    // ~300 bytes per entry: several getdents64 calls.
    const names = Array.from({ length: 600 }, (_, i) => `${String(i).padStart(4, "0")}-${"x".repeat(250)}`);
    for (const n of names) fs.writeFileSync(join(dir, n), "");
    fs.mkdirSync(join(dir, "sub"));
    fs.symlinkSync("/etc/passwd", join(dir, "link"));
    fs.linkSync(join(dir, names[0]!), join(dir, "hard"));
    const fd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
    let got: Map<string, number> | undefined;
    try {
      got = inodesOf(fd);
    } finally {
      fs.closeSync(fd);
    }
    expect(got).toBeDefined();
    expect([...got!.keys()].sort()).toEqual([...names, "sub", "link", "hard"].sort());
    for (const [name, ino] of got!) expect(ino).toBe(fs.lstatSync(join(dir, name)).ino); // ASCII: keys are names
    expect(got!.get("hard")).toBe(got!.get(names[0]!));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("names are keyed by their bytes: UTF-8 names by direntKey, and a name that is not UTF-8 never equals one", () => {
  const dir = fresh();
  const list = () => {
    const fd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
    try {
      return inodesOf(fd)!;
    } finally {
      fs.closeSync(fd);
    }
  };
  try {
    // "a" + 0xFF: a lenient UTF-8 decoder would make it "a\uFFFD", a name an archive may hold.
    fs.writeFileSync(Buffer.concat([Buffer.from(`${dir}/a`), Buffer.from([0xff])]), "planted");
    expect(list().get(direntKey("a\uFFFD"))).toBeUndefined();
    for (const name of ["a\uFFFD", "é.js", "日本.txt", "plain"]) fs.writeFileSync(join(dir, name), name);
    const got = list();
    expect(got.size).toBe(5);
    for (const name of ["a\uFFFD", "é.js", "日本.txt", "plain"])
      expect(got.get(direntKey(name))).toBe(fs.lstatSync(join(dir, name)).ino);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("a descriptor that is not a directory: undefined, not an empty listing", () => {
  const dir = fresh();
  try {
    fs.writeFileSync(join(dir, "f"), "x");
    const fd = fs.openSync(join(dir, "f"), "r");
    try {
      expect(inodesOf(fd)).toBeUndefined();
    } finally {
      fs.closeSync(fd);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
