/** `--follow`'s retry of a failed release, against the Consul stand-in with a real client. */
import { expect, test } from "bun:test";
import { follow } from "../../src/agent/follow.ts";
import { ConsulClient, consulConfig } from "../../src/consul/client.ts";
import { createLogger } from "../../src/log.ts";
import type { ReleaseRecord } from "../../src/records/release.ts";
import { startConsulStandin } from "../support/consul-standin.ts";
import { waitFor } from "../support/helpers.ts";

const record = (id: string): ReleaseRecord => ({
  id,
  role: "web",
  manifest_url: `file:///m/${id}.yml`,
  archive_url: "",
  algorithm: "sha256",
  checksum: "0".repeat(64),
  size: null,
  files: null,
  created_at: "2026-01-01T00:00:00Z",
  publisher: "t",
  message: "",
});

test("a failed release is retried with growing, jittered waits until it succeeds; a newer release goes first and resets the backoff", async () => {
  await using consul = await startConsulStandin();
  consul.kvPut("pulldeploy/roles/web/latest", JSON.stringify(record("r1")));
  const stop = new AbortController();
  const calls: { id: string; at: number }[] = [];
  let r1Failures = 3;
  const done = follow({
    consul: new ConsulClient(consulConfig(consul.env)),
    prefix: "pulldeploy",
    role: "web",
    log: createLogger({ quiet: true, write: () => {} }),
    stop: stop.signal,
    waitMs: 1000,
    retryMs: [100, 400],
    random: () => 1, // the top of the ±20% jitter: waits of 120, 240, 480 (capped at 400 * 1.2)
    converge: async (r) => {
      calls.push({ id: r.id, at: performance.now() });
      if (r.id === "r1" && r1Failures-- > 0) return false;
      if (r.id === "r2" && calls.filter((c) => c.id === "r2").length === 1) return false;
      return true;
    },
  });
  try {
    await waitFor(() => calls.length >= 4, "r1 to be retried until it succeeds", 10_000);
    expect(calls.slice(0, 4).map((c) => c.id)).toEqual(["r1", "r1", "r1", "r1"]);
    const gaps = [1, 2, 3].map((i) => calls[i]!.at - calls[i - 1]!.at);
    expect(gaps[0]).toBeGreaterThanOrEqual(110);
    expect(gaps[1]).toBeGreaterThanOrEqual(230);
    expect(gaps[2]).toBeGreaterThanOrEqual(470);
    // Succeeded: not deployed again while latest stays the same.
    const reads = () => consul.requests.filter((q) => q.path.endsWith("/roles/web/latest")).length;
    const seen = reads();
    await consul.waitFor(() => reads() >= seen + 1, "another read of latest");
    expect(calls.length).toBe(4);
    // A newer release: deployed at once; its failure is retried from the first wait again.
    consul.kvPut("pulldeploy/roles/web/latest", JSON.stringify(record("r2")));
    await waitFor(() => calls.filter((c) => c.id === "r2").length >= 2, "r2 to be retried", 10_000);
    const r2 = calls.filter((c) => c.id === "r2");
    expect(r2[1]!.at - r2[0]!.at).toBeLessThan(400);
  } finally {
    stop.abort();
    await done;
  }
});
