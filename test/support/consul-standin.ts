/**
 * A stand-in for Consul 1.10 on Bun.serve, for tests: either one dev agent (server + agent in one,
 * pretty JSON, the older captures) or a cluster of agents sharing one state (a server and client
 * agents, compact JSON, the cluster captures in test/fixtures/consul-1.10/, health-notes.txt).
 *
 * It answers like the captures, byte for byte except what varies run to run in Consul too (Date,
 * UUIDs, raft indexes, event LTimes, ContentHash) and, where Bun decides, header order (see
 * consul/agent.ts). The model: consul/cluster.ts (state: raft index, KV, sessions, catalog and
 * health, node liveness, events in flight); consul/agent.ts (one node's HTTP API); consul/go.ts
 * (Go's encodings).
 *
 *   await using consul = await startConsulStandin();          // one dev agent "dev"
 *   // CONSUL_HTTP_ADDR=consul.addr; consul.requests is the request log
 *
 *   await using cluster = await startConsulCluster({ nodes: ["node-1", "node-2", "node-3"], timeScale: 0.01 });
 *   const n1 = cluster.node("node-1");                       // n1.url, n1.addr, n1.env, n1.nodeName, n1.requests
 *   cluster.registerService("node-1", { Name: "web", ID: "web-1", Check: { CheckID: "web-ttl", TTL: "30s" } });
 *   n1.setCheck("web-ttl", "passing", "ok");                 // as PUT /v1/agent/check/pass would
 *   await cluster.killNode("node-1");                        // HTTP refused now; serfHealth critical 51 ms later
 *   await cluster.restartNode("node-1");
 */
import { ConsulStandin, resetDevNode } from "./consul/agent.ts";
import { ConsulCluster } from "./consul/cluster.ts";
import type { ClusterOptions, StandinOptions } from "./consul/types.ts";

export { ConsulStandin } from "./consul/agent.ts";
export { ConsulCluster } from "./consul/cluster.ts";
export { eventIndex, goJson, parseGoDuration } from "./consul/go.ts";
export type {
  CheckStatus,
  ClusterOptions,
  KvSnapshotEntry,
  LoggedRequest,
  NodeSpec,
  StandinOptions,
  StandinService,
  StoredEvent,
} from "./consul/types.ts";

/** One dev agent: a one-node cluster whose only node is a server answering pretty JSON. */
export async function startConsulStandin(options: StandinOptions = {}): Promise<ConsulStandin> {
  const cluster = new ConsulCluster(options.initialIndex ?? 13, { datacenter: options.datacenter });
  const agent = new ConsulStandin(cluster, { ...options, server: true });
  cluster.agents.set(agent.nodeName, agent);
  resetDevNode(cluster, agent.nodeName);
  agent.start();
  return agent;
}

/**
 * A server and client agents sharing one state, each with its own HTTP API on 127.0.0.1 (port 0),
 * production agents (compact JSON). Node i of `nodes` advertises 127.0.0.(i+2), the server
 * 127.0.0.1, as in the captures (data only; see ClusterOptions.addresses).
 */
export async function startConsulCluster(options: ClusterOptions = {}): Promise<ConsulCluster> {
  const clients = options.nodes ?? ["node-1", "node-2", "node-3"];
  const serverName = options.server ?? "server";
  const cluster = new ConsulCluster(options.initialIndex ?? 13, options);
  const all = [serverName, ...clients];
  for (const [i, name] of all.entries()) {
    const server = name === serverName;
    const address = options.addresses?.[name] ?? (server ? "127.0.0.1" : `127.0.0.${i + 1}`);
    const node = cluster.addNode(name, { address, server, id: options.nodeIds?.[name] });
    // The server's catalog entry carries the "consul" service ({"consul":[]} in catalog/services).
    if (server)
      node.services.push({
        id: "consul",
        name: "consul",
        tags: [],
        port: cluster.ports.server,
        address: "",
        meta: {},
        createIndex: node.createIndex,
        modifyIndex: node.createIndex,
      });
    const agent = new ConsulStandin(cluster, { nodeName: name, devMode: false, server });
    cluster.agents.set(name, agent);
    agent.start();
  }
  return cluster;
}
