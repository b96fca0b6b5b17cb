/**
 * Real Serf agents (Debian's `serf`) on loopback for tests: distinct bind and RPC ports, joined
 * into one cluster, stopped with the scope (`await using`).
 */
import * as fs from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { waitFor } from "./helpers.ts";

export interface SerfAgent {
  name: string;
  bind: string;
  rpc: string;
  logFile: string;
}

/** A free loopback TCP port (asked from the kernel, then released). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

export async function startSerfCluster(
  dir: string,
  nodes: { name: string; handler?: string; env?: Record<string, string>; tags?: Record<string, string> }[],
) {
  const procs: ReturnType<typeof Bun.spawn>[] = [];
  const agents: SerfAgent[] = [];
  for (const n of nodes) {
    const bindPort = await freePort();
    const rpcPort = await freePort();
    const logFile = join(dir, `serf-${n.name}.log`);
    const args = [
      "serf",
      "agent",
      `-node=${n.name}`,
      `-bind=127.0.0.1:${bindPort}`,
      `-rpc-addr=127.0.0.1:${rpcPort}`,
      "-log-level=info",
    ];
    if (n.handler) args.push(`-event-handler=${n.handler}`);
    for (const [k, v] of Object.entries(n.tags ?? {})) args.push(`-tag`, `${k}=${v}`);
    const log = fs.openSync(logFile, "w");
    procs.push(Bun.spawn(args, { stdout: log, stderr: log, env: { PATH: process.env.PATH!, ...n.env }, cwd: dir }));
    agents.push({ name: n.name, bind: `127.0.0.1:${bindPort}`, rpc: `127.0.0.1:${rpcPort}`, logFile });
  }
  const serf = (args: string[]) => Bun.spawnSync(["serf", ...args], { stdout: "pipe", stderr: "pipe" });
  for (const a of agents) {
    await waitFor(() => serf(["members", `-rpc-addr=${a.rpc}`]).exitCode === 0, `serf agent ${a.name} RPC`);
  }
  for (const a of agents.slice(1)) {
    const r = serf(["join", `-rpc-addr=${a.rpc}`, agents[0]!.bind]);
    if (r.exitCode !== 0) throw new Error(`serf join failed: ${r.stderr.toString()}`);
  }
  await waitFor(
    () =>
      serf(["members", `-rpc-addr=${agents[0]!.rpc}`, "-status=alive"])
        .stdout.toString()
        .trim()
        .split("\n").length === agents.length,
    "all serf members alive",
  );
  return {
    agents,
    /** `serf event` through the first agent's RPC. */
    event(name: string, payload: string, extra: string[] = []) {
      const r = serf(["event", `-rpc-addr=${agents[0]!.rpc}`, ...extra, name, payload]);
      if (r.exitCode !== 0) throw new Error(`serf event failed: ${r.stderr.toString()}${r.stdout.toString()}`);
      return r.stdout.toString();
    },
    async [Symbol.asyncDispose]() {
      for (const p of procs) p.kill("SIGTERM");
      await Promise.all(procs.map((p) => p.exited));
    },
  };
}
