import { expect, test } from "bun:test";
import * as fs from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { inodeCounts } from "../src/dirents.ts";

const fresh = () => fs.mkdtempSync(join(tmpdir(), "pulldeploy-dirents-"));
const counts = (dir: string) => {
  const fd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  try {
    return inodeCounts(fd);
  } finally {
    fs.closeSync(fd);
  }
};

test("every entry counted under lstat's inode number; . and .. left out; a directory read past one 64 KiB buffer", () => {
  const dir = fresh();
  try {
    // ~300 bytes per entry: several getdents64 calls.
    const names = Array.from({ length: 600 }, (_, i) => `${String(i).padStart(4, "0")}-${"x".repeat(250)}`);
    for (const n of names) fs.writeFileSync(join(dir, n), "");
    fs.mkdirSync(join(dir, "sub"));
    fs.symlinkSync("/etc/passwd", join(dir, "link"));
    fs.linkSync(join(dir, names[0]!), join(dir, "hard"));
    fs.linkSync(join(dir, names[0]!), join(dir, "hard2"));
    const got = counts(dir);
    expect(got).toBeDefined();
    const want = new Map<number, number>();
    for (const n of [...names, "sub", "link", "hard", "hard2"]) {
      const ino = fs.lstatSync(join(dir, n)).ino;
      want.set(ino, (want.get(ino) ?? 0) + 1);
    }
    expect(got).toEqual(want);
    expect(got!.get(fs.lstatSync(join(dir, "hard")).ino)).toBe(3);
    // Neither the directory itself (.) nor its parent (..) is an entry.
    expect(got!.has(fs.statSync(dir).ino)).toBe(false);
    expect(got!.has(fs.statSync(join(dir, "..")).ino)).toBe(false);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("names that merely start with a dot, and names that are not UTF-8, are counted like any other", () => {
  const dir = fresh();
  try {
    const raw = Buffer.concat([Buffer.from(`${dir}/a`), Buffer.from([0xff])]);
    fs.writeFileSync(raw, "planted");
    for (const name of ["...", ".a", "..b", "日本.txt"]) fs.writeFileSync(join(dir, name), name);
    const got = counts(dir)!;
    expect(got.size).toBe(5);
    for (const name of ["...", ".a", "..b", "日本.txt"]) expect(got.get(fs.lstatSync(join(dir, name)).ino)).toBe(1);
    expect(got.get(fs.lstatSync(raw).ino)).toBe(1);
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
      expect(inodeCounts(fd)).toBeUndefined();
    } finally {
      fs.closeSync(fd);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
