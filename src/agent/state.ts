/**
 * The agent's local state, under `--state-dir` (default /var/lib/pulldeploy):
 *
 *   state.json   the last handled event and the last deployed release, and a report Consul did not
 *                take yet; written atomically (temp file + rename); a corrupt or missing file is survived
 *   lock         held by the one agent deploying on this host (pid inside; a dead holder's lock is taken)
 *
 * `duplicateOf` decides, purely, whether a trigger was handled already: `consul watch` replays every
 * buffered event whenever the watch or the Consul agent restarts.
 */
import * as fs from "node:fs";
import { join } from "node:path";
import { PulldeployError } from "../errors.ts";
import { redact } from "../log.ts";
import { pidAlive } from "../pid.ts";
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
      return state.last_event_id === h.eventId ? `consul event ${h.eventId} was handled already (${state.updated_at ?? "earlier"})` : undefined;
    case "serf":
      return h.ltime !== "" && state.last_serf_event === `${h.event}:${h.ltime}` ? `serf event ${h.event} LTime ${h.ltime} was handled already` : undefined;
    case "release":
      return state.release_id === h.releaseId && state.status === "success" ? `release ${h.releaseId} is already deployed here` : undefined;
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
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") warn(`state: cannot read ${this.file} (${(err as NodeJS.ErrnoException).code}); starting fresh`);
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
    const text = JSON.stringify({ ...state, updated_at: new Date().toISOString() }, (_k, v: unknown) => (typeof v === "string" ? redact(v) : v), 2);
    fs.writeFileSync(tmp, `${text}\n`, { mode: 0o600 });
    fs.chmodSync(tmp, 0o600); // a leftover temp file of the same pid keeps its old mode
    fs.renameSync(tmp, this.file);
  }
}

export interface HostLock {
  release(): void;
}

/**
 * Take the host's deploy lock, waiting up to `waitMs` for another agent to finish. A lock whose
 * holder process is gone (killed) is taken over.
 */
export async function acquireLock(
  dir: string,
  opts: { waitMs: number; signal?: AbortSignal; onWait?: (holder: number) => void; isAlive?: (pid: number) => boolean },
): Promise<HostLock> {
  const isAlive = opts.isAlive ?? pidAlive;
  fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
  const lock = join(dir, "lock");
  const mine = join(dir, `.lock.tmp-${process.pid}`);
  fs.writeFileSync(mine, `${process.pid}\n`);
  const deadline = Date.now() + opts.waitMs;
  let told = false;
  try {
    for (;;) {
      try {
        fs.linkSync(mine, lock); // atomic: fails if someone holds it
        return { release: () => releaseLock(lock) };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      }
      const holder = readPid(lock);
      if (holder !== undefined && !isAlive(holder)) {
        // Move the dead holder's lock aside atomically; only one contender wins the rename.
        try {
          fs.renameSync(lock, join(dir, `.lock.stale-${process.pid}`));
          fs.rmSync(join(dir, `.lock.stale-${process.pid}`), { force: true });
        } catch {}
        continue;
      }
      if (Date.now() >= deadline || opts.signal?.aborted) {
        throw new PulldeployError(
          `another pulldeploy agent (pid ${holder ?? "unknown"}) is deploying on this host (lock ${lock}); ${opts.waitMs > 0 ? `waited ${Math.round(opts.waitMs / 1000)}s` : "not waiting"} (--lock-wait to wait longer)`,
        );
      }
      if (!told && holder !== undefined) {
        opts.onWait?.(holder);
        told = true;
      }
      await Bun.sleep(Math.min(100, Math.max(0, deadline - Date.now())));
    }
  } finally {
    fs.rmSync(mine, { force: true });
  }
}

function releaseLock(lock: string): void {
  try {
    if (readPid(lock) === process.pid) fs.unlinkSync(lock);
  } catch {}
}

function readPid(path: string): number | undefined {
  try {
    const n = Number.parseInt(fs.readFileSync(path, "utf8"), 10);
    return Number.isFinite(n) ? n : undefined;
  } catch {
    return undefined;
  }
}
