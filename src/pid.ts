import * as fs from "node:fs";

/** Is process `pid` alive? (EPERM: alive, but someone else's.) */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Process `pid`'s start time in clock ticks since boot (/proc/<pid>/stat field 22), or undefined when
 * there is no such process. A pid is reused; the pair (pid, start time) names one process for good
 * (until a reboot, which also ends every process it could name).
 */
export function processStartTime(pid: number): string | undefined {
  const start = statFields(pid)?.[22 - 3];
  return start !== undefined && /^\d+$/.test(start) ? start : undefined;
}

/** /proc/<pid>/stat's fields from the third on (index 0 is field 3), or undefined when there is no such process. */
function statFields(pid: number): string[] | undefined {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // Field 2 (comm) is in parentheses and may hold spaces or ")": the fields after the last ")" start at 3.
  return text.slice(text.lastIndexOf(")") + 2).split(" ");
}

/**
 * Told about each child the agent starts, so that the next run can kill what a killed agent left
 * running: `started` right after the spawn, `ended` once it is done. A hook leads a process group of
 * its own ("group": whatever it starts, even in the background, is killed with it); rsync stays in
 * the agent's group and session ("tree": it and its descendants, which it never detaches). A session
 * of its own would put rsync's three processes in a scheduler autogroup of their own, and its
 * 20 ms exit poll then misses more often (see the README's benchmark section).
 */
export type ChildKind = "group" | "tree";
export interface ChildTracker {
  started(id: number, what: string, kind?: ChildKind): void;
  ended(id: number): void;
}

/**
 * The live descendants of `pid` (children first found, then theirs), each with its start time, from
 * the parent links in /proc/<n>/stat. A snapshot: the caller checks each start time again before acting.
 */
export function descendants(pid: number): { pid: number; start: string }[] {
  const byParent = new Map<number, { pid: number; start: string }[]>();
  let names: string[];
  try {
    names = fs.readdirSync("/proc");
  } catch {
    return [];
  }
  for (const name of names) {
    if (!/^\d+$/.test(name)) continue;
    const fields = statFields(Number(name));
    if (fields === undefined) continue;
    const ppid = Number(fields[4 - 3]);
    const list = byParent.get(ppid) ?? [];
    list.push({ pid: Number(name), start: fields[22 - 3]! });
    byParent.set(ppid, list);
  }
  const out: { pid: number; start: string }[] = [];
  const seen = new Set([pid]);
  const parents = [pid];
  while (parents.length > 0) {
    for (const child of byParent.get(parents.shift()!) ?? []) {
      if (seen.has(child.pid)) continue;
      seen.add(child.pid);
      out.push(child);
      parents.push(child.pid);
    }
  }
  return out;
}
