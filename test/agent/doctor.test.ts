/** doctor's pure table: facts in, one row per check; the thresholds and verdicts each fact leads to. */
import { describe, expect, test } from "bun:test";
import { runChecks, renderChecks, type CheckStatus, type HostFacts } from "../../src/agent/doctor.ts";

const base: HostFacts = {
  uid: 0,
  prefix: "pulldeploy",
  role: "web",
  consulAddress: "127.0.0.1:8500",
  consul: { ok: true },
  node: { name: "n1", from: "consul" },
  kvRead: { ok: true },
  kvWrite: { ok: true },
  event: { ok: true, name: "deploy" },
  session: { ok: true },
  skewMs: 0,
  latest: {
    record: {
      id: "20261204T101010Z-0123456789ab",
      role: "web",
      manifest_url: "",
      archive_url: "",
      algorithm: "sha256",
      checksum: "",
      size: 1000,
      files: 1,
      created_at: "",
      publisher: "",
      message: "",
    },
  },
  stateDir: { path: "/var/lib/pulldeploy", stat: { uid: 0, mode: 0o40700, isDir: true }, freeBytes: 10_000 },
  tools: {
    rsync: { path: "/usr/bin/rsync", version: "rsync version 3.2.7" },
    tar: { path: "/usr/bin/tar", version: "tar (GNU tar) 1.34" },
  },
  dest: { path: "/srv/app", from: "manifest", stat: { uid: 0, mode: 0o40755, isDir: true } },
  trustKeys: [{ file: "/etc/pulldeploy/k.pub" }],
};
const status = (f: Partial<HostFacts>, check: string) =>
  runChecks({ ...base, ...f }).find((r) => r.check === check)!.status;

describe("doctor's checks", () => {
  test("the healthy facts: every row ok", () => {
    expect(runChecks(base).filter((r) => r.status !== "ok")).toEqual([]);
  });
  test.each([
    [{ skewMs: 4_000 }, "clock", "ok"],
    [{ skewMs: -30_000 }, "clock", "warn"],
    [{ skewMs: 16 * 60_000 }, "clock", "fail"],
    [{ skewMs: undefined }, "clock", "skip"],
    [{ stateDir: { path: "/s", stat: { uid: 1000, mode: 0o40700, isDir: true } } }, "state dir", "fail"],
    [{ stateDir: { path: "/s", stat: { uid: 0, mode: 0o40770, isDir: true } } }, "state dir", "fail"],
    [{ stateDir: { path: "/s", stat: { uid: 0, mode: 0o40700, isDir: true }, freeBytes: 999 } }, "state dir", "fail"],
    [{ stateDir: { path: "/s", error: "ENOENT" } }, "state dir", "warn"],
    [{ stateDir: { path: "/s", stat: { uid: 0, mode: 0o100600, isDir: false } } }, "state dir", "fail"],
    [{ tools: { ...base.tools, rsync: {} } }, "rsync", "fail"],
    [{ tools: { ...base.tools, rsync: { path: "/usr/bin/rsync", error: "--version exited 1" } } }, "rsync", "fail"],
    [{ tools: { ...base.tools, tar: {} } }, "tar", "warn"],
    [{ dest: { ...base.dest!, othersCanWrite: "/srv is writable by its group or others (mode 777)" } }, "dest", "fail"],
    [{ dest: { ...base.dest!, othersCanWrite: "/srv is writable by its group or others (mode 775)" } }, "dest", "warn"],
    [{ dest: { ...base.dest!, othersCanWrite: "/srv/app is owned by uid 1000" } }, "dest", "warn"],
    [{ dest: { ...base.dest!, refused: "sync: dest /srv/app is a symlink …" } }, "dest", "fail"],
    [{ dest: { path: "/srv/app", from: "flag" } }, "dest", "warn"],
    [{ dest: undefined, destError: "the latest manifest has no dest (commands only)" }, "dest", "skip"],
    [{ trustKeys: [] }, "trust keys", "skip"],
    [{ trustKeys: [{ file: "k", error: "k: not an Ed25519 public key" }] }, "trust keys", "fail"],
    [{ kvWrite: { ok: false, denied: true, error: "403" } }, "kv write", "fail"],
    [{ event: { ok: false, denied: true, error: "403", name: "deploy" } }, "event fire", "warn"],
    [{ session: { skipped: "Consul did not answer" } }, "sessions", "skip"],
    [{ latest: { none: true } }, "latest release", "warn"],
    [{ latest: { error: "bad json" } }, "latest release", "fail"],
    [{ latest: undefined, kvRead: { ok: false, denied: true, error: "403" } }, "latest release", "skip"],
    [{ node: { name: "h", from: "hostname", error: "403" } }, "node name", "warn"],
    [{ consul: { ok: false, error: "unreachable" } }, "consul", "fail"],
  ] as [Partial<HostFacts>, string, CheckStatus][])("%j → %s %s", (facts, check, want) => {
    expect(status(facts, check)).toBe(want);
  });
  test("the table shows advice only under rows that are not ok, and a summary", () => {
    const text = renderChecks(runChecks({ ...base, tools: { ...base.tools, rsync: {} } }));
    expect(text).toContain("fail  rsync           not found on PATH\n                      → install rsync");
    expect(text).not.toContain("→ rsync is present");
    expect(text).toEndWith("\n12 ok, 0 warn, 1 fail, 0 not checked\n");
  });
});
