/**
 * The rollout flags of publish, fire and rollback, and the rollout command: bad input is one line, exit 2, nothing
 * done.
 */
import { describe, expect, test } from "bun:test";
import { run } from "../support/helpers.ts";

const PUBLISH = ["publish", "/nonexistent-app", "--to", "file:///tmp/pd-never", "--role", "web", "--dest", "/srv/app"];
// No Consul listens here: a usage error must come before any request.
const env = { CONSUL_HTTP_ADDR: "127.0.0.1:1" };

describe("rollout flags: usage errors before anything is packed, uploaded or fired", () => {
  test.each([
    [[...PUBLISH, "--max-parallel", "0"], "--max-parallel: must be at least 1 (or above 0%)"],
    [
      [...PUBLISH, "--max-parallel", "a few"],
      `--max-parallel: expected a number of nodes (3) or a share of the role's nodes (25%), got "a few"`,
    ],
    [
      [...PUBLISH, "--max-failures", "150%", "--max-parallel", "-1"],
      `--max-parallel: expected a number of nodes (3) or a share of the role's nodes (25%), got "-1"; ` +
        `--max-failures: expected a number of nodes (3) or a share of the role's nodes (25%), got "150%"`,
    ],
    [[...PUBLISH, "--canary-wait"], "--canary-wait needs --canary N (the canaries to wait after)"],
    [[...PUBLISH, "--canary", "two"], `--canary: expected a whole number ≥ 0, got "two"`],
    [
      [...PUBLISH, "--health-grace", "1m", "--health-deadline", "30s"],
      "--health-deadline (30s) must be at least --health-grace (60s)",
    ],
    [[...PUBLISH, "--prepare-deadline", "1m"], "--prepare-deadline only applies with --switch-together"],
    [
      [...PUBLISH, "--max-parallel", "2", "--no-kv"],
      "rollout flags (--max-parallel, --canary, …) cannot go with --no-kv: agents coordinate through Consul KV",
    ],
    [
      ["fire", "file:///tmp/x/web/20260102T030405Z-0ca9279b78e2.yml", "--canary", "1"],
      "rollout flags (--max-parallel, --canary, …) need --role: the role whose nodes take part",
    ],
    [
      ["rollback", "--dest", "/srv/app", "--max-parallel", "2"],
      "rollout flags (--max-parallel, --canary, …) apply to a fleet rollback (--role ROLE without --dest)",
    ],
    [
      [...PUBLISH, "--auto-rollback", "--max-failures", "1", "--via", "serf"],
      "--auto-rollback cannot go with --via serf: the halting agent fires the rollback as a Consul event, " +
        "which Serf handlers never see; drop --auto-rollback (after a halt: pulldeploy rollback --role web --via " +
        "serf) or announce through Consul",
    ],
    [
      [
        "fire",
        "file:///tmp/x/web/20260102T030405Z-0ca9279b78e2.yml",
        "--role",
        "web",
        "--auto-rollback",
        "--via",
        "serf",
      ],
      "--auto-rollback cannot go with --via serf",
    ],
    [["rollback", "--role", "web", "--auto-rollback", "--via", "serf"], "--auto-rollback cannot go with --via serf"],
    [[...PUBLISH, "--max-parallel", "1", "--slot-ttl", "0"], "--slot-ttl: must be at least 1s (got 0s)"],
    [[...PUBLISH, "--max-parallel", "1", "--slot-ttl", "500ms"], "--slot-ttl: must be at least 1s (got 500ms)"],
    [
      [...PUBLISH, "--canary", "1", "--slot-ttl", "20s"],
      "--slot-ttl only applies with --max-parallel (without it there are no slots)",
    ],
    [["rollout", "status"], "--role is required: the role whose rollout to show or steer"],
    [
      ["rollout", "--role", "web"],
      "missing the action: pulldeploy rollout status|pause|resume|promote|abort --role ROLE",
    ],
    [["rollout", "promote", "--role", "web/x"], `--role: role "web/x" must be`],
  ])("%p", async (argv, message) => {
    const r = await run(argv, { env });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(message);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
  });
});
