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
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // Field 2 (comm) is in parentheses and may hold spaces or ")": the fields after the last ")" start at 3.
  const rest = text.slice(text.lastIndexOf(")") + 2).split(" ");
  const start = rest[22 - 3];
  return start !== undefined && /^\d+$/.test(start) ? start : undefined;
}

/**
 * Told about each child process group the agent starts (hooks, rsync), so that the next run can kill
 * what a killed agent left running. `started` right after the spawn, `ended` once the group is done.
 */
export interface ChildTracker {
  started(pgid: number, what: string): void;
  ended(pgid: number): void;
}
