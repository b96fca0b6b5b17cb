/**
 * The unprivileged app user that owns `dest` in the hostile-input suites (made by scripts/setup.sh
 * when it runs as root). The agent runs as root; the "app" acts through `asApp`.
 */
import { execFileSync, spawnSync } from "node:child_process";

export const APP_USER = "pulldeploy-app";

export interface AppUser {
  name: string;
  uid: number;
  gid: number;
}

/** The app user, or undefined when the suite can't act as one (not root, or no such user). */
export function appUser(): AppUser | undefined {
  if (process.getuid?.() !== 0) return undefined;
  try {
    const uid = Number(execFileSync("id", ["-u", APP_USER], { encoding: "utf8" }).trim());
    const gid = Number(execFileSync("id", ["-g", APP_USER], { encoding: "utf8" }).trim());
    return { name: APP_USER, uid, gid };
  } catch {
    return undefined;
  }
}

/** Run `sh -c script` as the app user (what a compromised app could do); throws on a non-zero exit. */
export function asApp(script: string, cwd?: string): string {
  const r = spawnSync("setpriv", ["--reuid", APP_USER, "--regid", APP_USER, "--clear-groups", "sh", "-c", script], {
    cwd,
    encoding: "utf8",
  });
  if (r.status !== 0) throw new Error(`as ${APP_USER}: ${script}: exit ${r.status}: ${r.stderr.trim()}`);
  return r.stdout;
}
