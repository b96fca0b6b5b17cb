/**
 * The agent's local state, under `--state-dir` (default /var/lib/pulldeploy):
 *
 *   state.json   the last handled event and the last deployed release, and a report Consul did not
 *                take yet; written atomically (temp file + rename); a corrupt or missing file is survived
 *   lock         flock(2)ed by the one agent deploying (or rolling back) on this host, for its whole run;
 *                the kernel frees it when the holder dies, even by kill -9. The holder's pid is inside,
 *                for messages only. Never removed (removing it would let two holders lock two inodes).
 *   children/    one file per process group a run started (hooks, rsync): `pgid start-time what`;
 *                the next run kills the groups a killed agent left running
 *
 * `duplicateOf` decides, purely, whether a trigger was handled already: `consul watch` replays every
 * buffered event whenever the watch or the Consul agent restarts.
 */
import * as fs from "node:fs";
import { join, resolve } from "node:path";
import { PulldeployError } from "../errors.ts";
import { type Logger, redact } from "../log.ts";
import { descendants, pidAlive, processStartTime, type ChildTracker } from "../pid.ts";
import type { NodeReport } from "../records/report.ts";

export const DEFAULT_STATE_DIR = "/var/lib/pulldeploy";

export interface AgentState {
  /** The last consul event handled (whatever its outcome). */
  last_event_id?: string;
  /** The last serf user event handled, as `name:ltime`. */
  last_serf_event?: string;
  /** The last release deployed and how it went. */
  release_id?: string;
  manifest_url?: string;
  checksum?: string;
  status?: "success" | "failure";
  updated_at?: string;
  /** A report Consul did not take; sent by the next run. */
  pending_report?: NodeReport;
  /**
   * Per dest, the highest `issued_at` of a signed manifest deployed there (the downgrade high-water
   * mark); only kept with `--trust-key`.
   */
  issued_marks?: Record<string, string>;
}

/** What the trigger is, for duplicate detection. */
export type Handled =
  | { kind: "consul"; eventId: string }
  | { kind: "serf"; event: string; ltime: string }
  | { kind: "release"; releaseId: string }
  | { kind: "none" };

/** Why `h` is a duplicate of what `state` recorded, or undefined when it is new. */
export function duplicateOf(h: Handled, state: AgentState): string | undefined {
  switch (h.kind) {
    case "consul":
      return state.last_event_id === h.eventId
        ? `consul event ${h.eventId} was handled already (${state.updated_at ?? "earlier"})`
        : undefined;
    case "serf":
      return h.ltime !== "" && state.last_serf_event === `${h.event}:${h.ltime}`
        ? `serf event ${h.event} LTime ${h.ltime} was handled already`
        : undefined;
    case "release":
      return state.release_id === h.releaseId && state.status === "success"
        ? `release ${h.releaseId} is already deployed here`
        : undefined;
    case "none":
      return undefined;
  }
}

/** Record that `h` was handled. */
export function markHandled(state: AgentState, h: Handled): AgentState {
  if (h.kind === "consul") return { ...state, last_event_id: h.eventId };
  if (h.kind === "serf") return { ...state, last_serf_event: `${h.event}:${h.ltime}` };
  return state;
}

export class StateStore {
  readonly file: string;
  constructor(readonly dir: string) {
    this.file = join(dir, "state.json");
  }

  /** The state; `{}` with a warning when the file is missing or corrupt. */
  read(warn: (msg: string) => void): AgentState {
    let text: string;
    try {
      text = fs.readFileSync(this.file, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT")
        warn(`state: cannot read ${this.file} (${(err as NodeJS.ErrnoException).code}); starting fresh`);
      return {};
    }
    try {
      // Older agents wrote it 0644; it holds URLs and log tails: tighten before anything else reads it.
      if ((fs.statSync(this.file).mode & 0o077) !== 0) fs.chmodSync(this.file, 0o600);
    } catch {}
    try {
      const data = JSON.parse(text) as unknown;
      if (data === null || typeof data !== "object" || Array.isArray(data)) throw new Error("not an object");
      return data as AgentState;
    } catch {
      warn(`state: ${this.file} is corrupt; starting fresh (it will be rewritten)`);
      return {};
    }
  }

  /**
   * Atomic: a reader sees the old file or the new one, never a torn one. Mode 0600 (it holds URLs and
   * the pending report's log tail), every string redacted: no URL credential is kept on disk.
   */
  write(state: AgentState): void {
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o755 });
    const tmp = join(this.dir, `.state.json.tmp-${process.pid}`);
    const text = JSON.stringify(
      { ...state, updated_at: new Date().toISOString() },
      (_k, v: unknown) => (typeof v === "string" ? redact(v) : v),
      2,
    );
    fs.writeFileSync(tmp, `${text}\n`, { mode: 0o600 });
    fs.chmodSync(tmp, 0o600); // a leftover temp file of the same pid keeps its old mode
    fs.renameSync(tmp, this.file);
  }
}

/**
 * Downgrade protection (with trust keys only: an unsigned manifest's `issued_at` proves nothing).
 * A signed manifest issued before the last one deployed to the same dest is a replay of an older
 * signed statement and is refused; one issued at the same instant is the same statement fired again
 * (idempotent: duplicate detection decides). A signed manifest without `issued_at` (published before
 * pulldeploy signed the time) is accepted only while the dest has no mark: once a dated manifest was
 * deployed there, every undated one is older. Returns why `issuedAt` is refused, or undefined.
 */
export function downgradeOf(issuedAt: string | undefined, dest: string, state: AgentState): string | undefined {
  const mark = state.issued_marks?.[resolve(dest)];
  if (mark === undefined) return undefined;
  const fix = "re-sign it with pulldeploy rollback --role ROLE --to ID --sign-key KEY";
  if (issuedAt === undefined)
    return (
      `manifest has no signed issued_at, and ${dest} already runs one issued ${mark}: refusing a possible ` +
      `downgrade (${fix})`
    );
  if (Date.parse(issuedAt) < Date.parse(mark))
    return (
      `manifest issued ${issuedAt}, older than the last deployed ${mark} for ${dest}: refusing a downgrade ` +
      `(${fix})`
    );
  return undefined;
}

/** `state` with `dest`'s mark raised to `issuedAt` (never lowered). */
export function raiseMark(state: AgentState, dest: string, issuedAt: string): AgentState {
  const mark = state.issued_marks?.[resolve(dest)];
  if (mark !== undefined && Date.parse(mark) >= Date.parse(issuedAt)) return state;
  return { ...state, issued_marks: { ...state.issued_marks, [resolve(dest)]: issuedAt } };
}

// ------------------------------------------------------------------ host lock

export interface HostLock {
  release(): void;
}

const LOCK_EX = 2;
const LOCK_NB = 4;
type Flock = (fd: number, op: number) => number;
let flockFn: Flock | null | undefined;

/** libc's flock(2) through bun:ffi, or null where it can't be loaded (musl, no ffi). */
function loadFlock(): Flock | null {
  if (flockFn !== undefined) return flockFn;
  flockFn = null;
  try {
    // Loaded lazily: only the agent and `rollback --dest` need it. "libc.so.6" is glibc's soname on
    // every architecture (x64, arm64).
    const { dlopen, FFIType } = require("bun:ffi") as typeof import("bun:ffi");
    const lib = dlopen("libc.so.6", { flock: { args: [FFIType.i32, FFIType.i32], returns: FFIType.i32 } });
    flockFn = (fd, op) => lib.symbols.flock(fd, op);
  } catch {}
  return flockFn;
}

export interface LockOptions {
  waitMs: number;
  signal?: AbortSignal;
  onWait?: (holder: number | undefined) => void;
  /** Tests: force the pid + start time fallback. */
  noFlock?: boolean;
}

/**
 * Take the host's deploy lock, waiting up to `waitMs` (polling with backoff, 25 ms doubling to 1 s)
 * for another agent to finish. With flock(2) a dead holder's lock is free at once; where flock can't
 * be loaded, a lock whose (pid, start time) names no live process is taken over, race-free.
 */
export async function acquireLock(dir: string, opts: LockOptions): Promise<HostLock> {
  fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
  const lock = join(dir, "lock");
  const flock = opts.noFlock ? null : loadFlock();
  const attempt = flock ? flockAttempt(lock, flock) : pidAttempt(lock, dir);
  const deadline = Date.now() + opts.waitMs;
  let told = false;
  let backoff = 25;
  try {
    for (;;) {
      const got = attempt.try();
      if (got) return got;
      const holder = readPid(lock);
      if (Date.now() >= deadline || opts.signal?.aborted) {
        throw new PulldeployError(
          `another pulldeploy agent (pid ${holder ?? "unknown"}) is deploying on this host (lock ${lock}); ` +
            `${opts.waitMs > 0 ? `waited ${Math.round(opts.waitMs / 1000)}s` : "not waiting"} (--lock-wait to ` +
            "wait longer)",
        );
      }
      // The holder writes its pid just after it takes the lock: told once the pid is there (or after
      // a few tries), so the message names who holds it.
      if (!told && (holder !== undefined || backoff >= 200)) {
        opts.onWait?.(holder);
        told = true;
      }
      await Bun.sleep(Math.min(backoff, Math.max(1, deadline - Date.now())));
      backoff = Math.min(backoff * 2, 1000);
    }
  } catch (err) {
    attempt.close();
    throw err;
  }
}

interface Attempt {
  try(): HostLock | undefined;
  close(): void;
}

function flockAttempt(lock: string, flock: Flock): Attempt {
  // O_NOFOLLOW: the state dir is root's, but a symlink planted as `lock` must not be written through.
  let fd: number;
  try {
    fd = fs.openSync(lock, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW, 0o600);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new PulldeployError(
      `lock ${lock}: cannot open it (${code === "ELOOP" ? "it is a symlink" : code}); it must be a regular ` +
        "file in a directory only root writes",
      undefined,
      { cause: err },
    );
  }
  let open = true;
  const close = () => {
    if (!open) return;
    open = false;
    fs.closeSync(fd); // frees the flock
  };
  return {
    try() {
      if (flock(fd, LOCK_EX | LOCK_NB) !== 0) return undefined;
      fs.ftruncateSync(fd, 0);
      fs.writeSync(fd, `${process.pid}\n`, 0);
      return { release: close };
    },
    close,
  };
}

/** The fallback: `lock` holds `pid start-time`, made with link(2) (atomic, fails when it exists). */
function pidAttempt(lock: string, dir: string): Attempt {
  const me = `${process.pid} ${processStartTime(process.pid) ?? "?"}\n`;
  const mine = join(dir, `.lock.tmp-${process.pid}`);
  fs.writeFileSync(mine, me, { mode: 0o600 });
  const cleanup = () => fs.rmSync(mine, { force: true });
  return {
    try() {
      try {
        fs.linkSync(mine, lock);
        cleanup();
        return {
          release: () => {
            try {
              if (fs.readFileSync(lock, "utf8") === me) fs.unlinkSync(lock);
            } catch {}
          },
        };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      }
      if (!takeOverStale(lock, dir)) return undefined;
      return this.try();
    },
    close: cleanup,
  };
}

/**
 * Remove `lock` if its holder is dead (its pid is gone or now names a process started at another
 * time). One contender at a time, under `lock.takeover` (O_EXCL): it re-reads the lock under that
 * guard, so it can never remove a live holder's lock that replaced the stale one meanwhile. A guard
 * left by a contender that died mid-takeover is cleared after 5 s.
 */
function takeOverStale(lock: string, dir: string): boolean {
  const content = readText(lock);
  if (content === undefined || !stale(content)) return false;
  const guard = join(dir, "lock.takeover");
  let fd: number;
  try {
    fd = fs.openSync(
      guard,
      fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW,
      0o600,
    );
  } catch {
    try {
      if (Date.now() - fs.lstatSync(guard).mtimeMs > 5000) fs.unlinkSync(guard);
    } catch {}
    return false;
  }
  try {
    if (readText(lock) !== content) return false;
    fs.unlinkSync(lock);
    return true;
  } finally {
    fs.closeSync(fd);
    fs.rmSync(guard, { force: true });
  }
}

function stale(content: string): boolean {
  const [pid, start] = content.trim().split(/\s+/);
  const n = Number(pid);
  if (!Number.isSafeInteger(n) || n <= 0) return true;
  // A lock written by an older pulldeploy has a pid only: judged by the pid alone.
  if (start === undefined) return !pidAlive(n);
  return processStartTime(n) !== start;
}

function readText(path: string): string | undefined {
  try {
    return fs.readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
}

function readPid(path: string): number | undefined {
  const n = Number.parseInt(readText(path) ?? "", 10);
  return Number.isFinite(n) && n > 0 ? n : undefined;
}

// ------------------------------------------------------------------ child process groups

/**
 * Records each child under `<dir>/children/` while it runs: `<pgid>` for a group, `<pid>.tree` for a
 * process tree. Never throws: a record is best effort.
 */
export function childTracker(dir: string, log: (m: string) => void): ChildTracker {
  const children = join(dir, "children");
  const files = new Map<number, string>();
  return {
    started(id, what, kind = "group") {
      const file = join(children, kind === "tree" ? `${id}.tree` : String(id));
      try {
        fs.mkdirSync(children, { recursive: true, mode: 0o700 });
        // Written whole or not at all (temp + rename): a kill -9 mid-write must not leave an empty record.
        const tmp = join(children, `.${id}.tmp`);
        fs.writeFileSync(tmp, `${id} ${processStartTime(id) ?? "?"} ${what.replace(/\s+/g, " ").slice(0, 200)}\n`, {
          mode: 0o600,
        });
        fs.renameSync(tmp, file);
        files.set(id, file);
      } catch (err) {
        log(`state: cannot record child process ${kind === "tree" ? "" : "group "}${id}: ${(err as Error).message}`);
      }
    },
    ended(id) {
      const file = files.get(id);
      files.delete(id);
      if (file !== undefined) fs.rmSync(file, { force: true });
    },
  };
}

/**
 * Kill (SIGKILL) what a previous, killed run left running; call with the lock held. Only what is
 * provably the recorded process: a group whose leader is alive with the recorded start time, or whose
 * leader is gone (Linux does not reuse a pid while a group of that id exists, so `kill(-pgid)` then
 * reaches the recorded group's survivors or nothing); a tree whose root is alive with the recorded
 * start time, with its descendants, each checked again just before its kill. A pid reused by an
 * unrelated process (another start time) is left alone. Returns how many records led to a kill.
 */
export function sweepChildren(dir: string, log: (m: string) => void): number {
  const children = join(dir, "children");
  let names: string[];
  try {
    names = fs.readdirSync(children);
  } catch {
    return 0;
  }
  let killed = 0;
  for (const name of names) {
    const file = join(children, name);
    const [idText, start, ...words] = (readText(file) ?? "").trim().split(" ");
    const id = Number(idText);
    const what = words.join(" ");
    const tree = name === `${id}.tree`;
    if (Number.isSafeInteger(id) && id > 1 && (tree || String(id) === name)) {
      const now = processStartTime(id);
      if (tree ? now === start : now === undefined || now === start) {
        try {
          if (tree) {
            const below = descendants(id);
            process.kill(id, "SIGKILL");
            for (const d of below) {
              try {
                if (processStartTime(d.pid) === d.start) process.kill(d.pid, "SIGKILL");
              } catch {} // exited meanwhile
            }
            const also = `and its ${below.length} descendants`;
            log(`cleanup: killed process ${id} ${also}, left running by a previous agent run (${what})`);
          } else {
            process.kill(-id, "SIGKILL");
            log(`cleanup: killed process group ${id} left running by a previous agent run (${what})`);
          }
          killed++;
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          const which = tree ? `process ${id}` : `process group ${id}`;
          log(
            code === "ESRCH"
              ? `cleanup: ${which} (${what}) of a previous agent run is gone already`
              : `cleanup: cannot kill ${which} (${what}): ${(err as Error).message}`,
          );
        }
      } else if (now === undefined) {
        log(`cleanup: process ${id} (${what}) of a previous agent run is gone already`);
      } else {
        log(`cleanup: pid ${id} now names another process (started at tick ${now}, not ${start}): left alone`);
      }
    }
    fs.rmSync(file, { force: true });
  }
  return killed;
}

/**
 * The state dir, made if missing, or undefined (with a warning saying what this run goes `without`)
 * when it can't be made or written: stretcher kept no state, so a deploy goes on without it.
 */
export function usableStateDir(dir: string, log: Logger, without: string): string | undefined {
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
    fs.accessSync(dir, fs.constants.W_OK);
    return dir;
  } catch (err) {
    log.info(
      `state: cannot use ${dir} (${(err as NodeJS.ErrnoException).code}): ${without} this run (set --state-dir)`,
    );
    return undefined;
  }
}

/**
 * The host lock as an agent run or `rollback --dest` takes it: waiting up to `waitMs` (said once in
 * the log), then killing the process groups a killed agent left running (`sweepChildren`).
 */
export async function takeHostLock(
  dir: string,
  o: { waitMs: number; signal?: AbortSignal; log: Logger; warn: (m: string) => void },
): Promise<HostLock> {
  const lock = await acquireLock(dir, {
    waitMs: o.waitMs,
    signal: o.signal,
    onWait: (pid) =>
      o.log.info(
        `lock: another agent (pid ${pid ?? "unknown"}) is deploying on this host; waiting up to ` +
          `${Math.round(o.waitMs / 1000)}s`,
      ),
  });
  sweepChildren(dir, o.warn);
  return lock;
}
