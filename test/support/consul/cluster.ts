/**
 * The shared state of a stand-in Consul 1.10 cluster: one raft log (index counter), KV, sessions,
 * the catalog (nodes, services, checks as the servers see them), user events in flight, and the
 * node-liveness model (serfHealth). Agents (agent.ts) are HTTP front ends onto it, one per node.
 *
 * Contracts taken from the captures (health-notes.txt, session-*.txt, semaphore-3-nodes.txt):
 * - Every write request consumes a raft index; a table's index moves only when it really changes.
 * - A check has two views: the agent's local one (/v1/agent/checks, indexes 0) and the catalog's
 *   (/v1/health/*). A STATUS change syncs at once and carries the latest Output; an Output-only
 *   change stays local (CheckUpdateInterval 5m), so it wakes no blocking health query.
 * - A check (or serfHealth) turning critical invalidates, in the same raft index, every session of
 *   that node that lists it; "warning" does not. Invalidation releases (Behavior release: Session
 *   gone, LockIndex kept) or deletes (Behavior delete) the held keys and starts their lock-delay.
 * - killNode: the agent's HTTP API goes away at once (connection refused); failureDetectMs later
 *   (5.1 s as captured, × timeScale) the member is failed (Status 4) and serfHealth critical with
 *   "Agent not live or unreachable". A restart before that is not noticed at all (captured).
 * - Session TTL: invalidated 2 × TTL after the last create/renew; minimum TTL 10s.
 */
import { randomUUID } from "node:crypto";
import { bytes, HttpError, type Json, nodeIdFor, parseGoDuration } from "./go.ts";
import type { CheckStatus, ClusterOptions, KvSnapshotEntry, NodeSpec, StandinService, StoredEvent } from "./types.ts";
import type { ConsulStandin } from "./agent.ts";

export const SERF_HEALTH = "serfHealth";
const SESSION_TTL_MULTIPLIER = 2;
const DEFAULT_LOCK_DELAY_NS = 15_000_000_000;
export const SESSION_TTL_MIN_MS = 10_000;
export const SESSION_TTL_MAX_MS = 86_400_000;
const EVENT_BUFFER = 256;

export interface Session {
  id: string;
  name: string;
  node: string;
  lockDelayNs: number;
  behavior: "release" | "delete";
  ttl: string;
  nodeChecks: string[] | null;
  serviceChecks: { ID: string; Namespace: string }[] | null;
  /** The "Checks" field as sent (1.10 still accepts it); shown only when given. */
  checks: string[] | undefined;
  createIndex: number;
  modifyIndex: number;
  timer?: ReturnType<typeof setTimeout>;
}

export interface ServiceDef extends Required<StandinService> {
  createIndex: number;
  modifyIndex: number;
}

export interface CheckView {
  status: CheckStatus;
  output: string;
}

/** A check registered on an agent (serfHealth is kept apart, in CatalogNode.serf). */
export interface AgentCheck {
  id: string;
  name: string;
  notes: string;
  serviceId: string;
  serviceName: string;
  serviceTags: string[];
  type: string;
  /** "" for checks embedded in a service definition, "0s" for ones registered alone (captured). */
  interval: string;
  timeout: string;
  ttlMs: number;
  /** An HTTP check: the agent GETs (or `method`s) this URL every `intervalMs` (× timeScale). */
  http?: { url: string; method: string; intervalMs: number; timeoutMs: number };
  initialStatus: CheckStatus;
  local: CheckView;
  synced: CheckView;
  createIndex: number;
  modifyIndex: number;
  timer?: ReturnType<typeof setTimeout>;
}

export interface CatalogNode {
  id: string;
  name: string;
  address: string;
  meta: Record<string, string>;
  services: ServiceDef[];
  checks: Map<string, AgentCheck>;
  serf: CheckView & { createIndex: number; modifyIndex: number };
  /** serf member status: 1 alive, 4 failed. */
  member: 1 | 4;
  server: boolean;
  createIndex: number;
  modifyIndex: number;
}

interface Waiter {
  path: string;
  wake: () => void;
}

export class ConsulCluster implements AsyncDisposable {
  readonly datacenter: string;
  readonly timeScale: number;
  readonly failureDetectMs: number;
  readonly sessionTtlMinMs: number;
  readonly ports: { serfLan: number; server: number; serfWan: number };
  /** Agents by node name, in creation order. */
  readonly agents = new Map<string, ConsulStandin>();
  /** Every event fired through any agent, delivered or not, for assertions. */
  readonly fired: StoredEvent[] = [];

  raftIndex = 0;
  kvsIndex = 0;
  tombstoneIndex = 0;
  sessionsIndex = 0;
  catalogIndex = 0;
  readonly kv = new Map<string, KvSnapshotEntry>();
  readonly tombstones = new Map<string, number>();
  readonly lockDelays = new Map<string, number>();
  readonly sessions = new Map<string, Session>();
  readonly nodes = new Map<string, CatalogNode>();
  eventClock = 2;
  private readonly idQueue: string[] = [];
  private held: StoredEvent[] | undefined;
  private readonly failTimers = new Map<string, ReturnType<typeof setTimeout>>();
  readonly waiters = new Set<Waiter>();
  private readonly watchers = new Set<() => void>();

  constructor(
    private readonly initialIndex: number,
    options: Pick<ClusterOptions, "datacenter" | "timeScale" | "failureDetectMs" | "ports" | "sessionTtlMinMs"> = {},
  ) {
    this.datacenter = options.datacenter ?? "dc1";
    this.timeScale = options.timeScale ?? 1;
    this.failureDetectMs = options.failureDetectMs ?? 5100;
    this.sessionTtlMinMs = options.sessionTtlMinMs ?? SESSION_TTL_MIN_MS;
    this.ports = {
      serfLan: options.ports?.serfLan ?? 8301,
      server: options.ports?.server ?? 8300,
      serfWan: options.ports?.serfWan ?? 8302,
    };
    this.raftIndex = initialIndex;
  }

  /** The agent of `name` (throws for a node without an HTTP API). */
  node(name: string): ConsulStandin {
    const a = this.agents.get(name);
    if (!a) throw new Error(`consul stand-in: no agent for node ${name}`);
    return a;
  }

  async stop(): Promise<void> {
    for (const t of this.failTimers.values()) clearTimeout(t);
    this.failTimers.clear();
    for (const s of this.sessions.values()) clearTimeout(s.timer);
    for (const n of this.nodes.values()) for (const c of n.checks.values()) clearTimeout(c.timer);
    await Promise.all([...this.agents.values()].map((a) => a.stop()));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  /** Drop everything (a dev-mode restart): indexes start over. */
  reset(): void {
    for (const s of this.sessions.values()) clearTimeout(s.timer);
    for (const n of this.nodes.values()) for (const c of n.checks.values()) clearTimeout(c.timer);
    this.raftIndex = this.initialIndex;
    this.kvsIndex = 0;
    this.tombstoneIndex = 0;
    this.sessionsIndex = 0;
    this.catalogIndex = 0;
    this.kv.clear();
    this.tombstones.clear();
    this.lockDelays.clear();
    this.sessions.clear();
    this.nodes.clear();
    this.eventClock = 2;
  }

  ms(realMs: number): number {
    return realMs * this.timeScale;
  }

  // ------------------------------------------------------------ ids, waiting

  /** How many blocking queries are parked right now, on any agent. */
  get blocked(): number {
    return this.waiters.size;
  }

  /** Use these IDs, in order, for the next events and sessions created (then random UUIDs again). */
  useIds(...ids: string[]): void {
    this.idQueue.push(...ids);
  }

  nextId(): string {
    return this.idQueue.shift() ?? randomUUID();
  }

  notify(): void {
    for (const w of [...this.waiters]) w.wake();
    this.poke();
  }

  poke(): void {
    for (const w of [...this.watchers]) w();
  }

  /** Resolves once `cond` holds; checked on every request, state change and blocking-query move. */
  waitFor(cond: () => boolean, what = "a condition", timeoutMs = 10_000): Promise<void> {
    if (cond()) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const check = () => {
        if (!cond()) return;
        this.watchers.delete(check);
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        this.watchers.delete(check);
        reject(new Error(`consul stand-in: timed out waiting for ${what}`));
      }, timeoutMs);
      this.watchers.add(check);
    });
  }

  /** Resolves once `count` (default 1) blocking queries on paths starting with `path` are parked. */
  waitForBlocked(options: { path?: string; count?: number; timeoutMs?: number } = {}): Promise<void> {
    const count = options.count ?? 1;
    const match = () => [...this.waiters].filter((w) => w.path.startsWith(options.path ?? "")).length >= count;
    return this.waitFor(
      match,
      `${count} blocking query(ies) on ${options.path ?? "any path"}`,
      options.timeoutMs ?? 10_000,
    );
  }

  // ------------------------------------------------------------ catalog

  /** Register (or replace) a node and its services in the catalog (no agent; see addAgent for one). */
  addNode(name: string, spec: NodeSpec & { server?: boolean; id?: string } = {}): CatalogNode {
    const idx = ++this.raftIndex;
    const old = this.nodes.get(name);
    const services = (spec.services ?? []).map((s): ServiceDef => {
      const d = typeof s === "string" ? { name: s, tags: spec.tags } : s;
      return {
        name: d.name,
        id: d.id ?? d.name,
        tags: d.tags ?? [],
        port: d.port ?? 0,
        address: d.address ?? "",
        meta: d.meta ?? {},
        createIndex: "createIndex" in d ? (d as ServiceDef).createIndex : idx,
        modifyIndex: "modifyIndex" in d ? (d as ServiceDef).modifyIndex : idx,
      };
    });
    const status = spec.status ?? "passing";
    const node: CatalogNode = {
      id: spec.id ?? old?.id ?? nodeIdFor(name),
      name,
      address: spec.address ?? old?.address ?? "127.0.0.1",
      meta: spec.meta ?? old?.meta ?? { "consul-network-segment": "" },
      services,
      checks: old?.checks ?? new Map(),
      serf: { status, output: serfOutput(status), createIndex: old?.serf.createIndex ?? idx, modifyIndex: idx },
      member: old?.member ?? 1,
      server: spec.server ?? old?.server ?? false,
      createIndex: old?.createIndex ?? idx,
      modifyIndex: idx,
    };
    this.nodes.set(name, node);
    this.catalogIndex = idx;
    this.notify();
    return node;
  }

  removeNode(name: string): void {
    const idx = ++this.raftIndex;
    if (this.nodes.delete(name)) this.catalogIndex = idx;
    this.notify();
  }

  getNode(name: string): CatalogNode {
    const n = this.nodes.get(name);
    if (!n) throw new Error(`consul stand-in: no node ${name}`);
    return n;
  }

  /** Register a service on a node's agent, with its checks (agent/service/register). */
  registerService(nodeName: string, def: Record<string, unknown>): void {
    const node = this.getNode(nodeName);
    const f = (o: Record<string, unknown>, k: string) => fieldCI(o, k);
    const name = String(f(def, "Name") ?? "");
    if (name === "") throw new HttpError(400, "Missing service name");
    const id = String(f(def, "ID") ?? "") || name;
    const idx = ++this.raftIndex;
    const old = node.services.find((s) => s.id === id);
    const svc: ServiceDef = {
      id,
      name,
      tags: (f(def, "Tags") as string[] | undefined) ?? [],
      port: Number(f(def, "Port") ?? 0),
      address: String(f(def, "Address") ?? ""),
      meta: (f(def, "Meta") as Record<string, string> | undefined) ?? {},
      createIndex: old?.createIndex ?? idx,
      modifyIndex: idx,
    };
    node.services = [...node.services.filter((s) => s.id !== id), svc];
    const defs: Record<string, unknown>[] = [];
    const one = f(def, "Check") as Record<string, unknown> | undefined;
    if (one && Object.keys(one).length > 0) defs.push(one);
    const many = (f(def, "Checks") as Record<string, unknown>[] | undefined) ?? [];
    defs.push(...many);
    defs.forEach((c, i) => {
      const cid =
        String(f(c, "CheckID") ?? f(c, "ID") ?? "") || (defs.length > 1 ? `service:${id}:${i + 1}` : `service:${id}`);
      this.addCheck(node, idx, c, { id: cid, embedded: true, svc });
    });
    this.catalogIndex = idx;
    this.notify();
  }

  deregisterService(nodeName: string, id: string): void {
    const node = this.getNode(nodeName);
    const idx = ++this.raftIndex;
    node.services = node.services.filter((s) => s.id !== id);
    for (const c of [...node.checks.values()]) if (c.serviceId === id) this.removeCheck(node, idx, c.id);
    this.catalogIndex = idx;
    this.notify();
  }

  /** agent/check/register: a check alone, or on a service of the node with ServiceID. */
  registerCheck(nodeName: string, def: Record<string, unknown>): void {
    const node = this.getNode(nodeName);
    const name = String(fieldCI(def, "Name") ?? "");
    if (name === "") throw new HttpError(400, "Missing check name");
    const id = String(fieldCI(def, "CheckID") ?? fieldCI(def, "ID") ?? "") || name;
    const sid = String(fieldCI(def, "ServiceID") ?? "");
    const svc = sid === "" ? undefined : node.services.find((s) => s.id === sid);
    if (sid !== "" && !svc) throw new HttpError(400, `ServiceID "${sid}" does not exist`);
    const idx = ++this.raftIndex;
    this.addCheck(node, idx, def, { id, embedded: false, svc });
    this.catalogIndex = idx;
    this.notify();
  }

  private addCheck(
    node: CatalogNode,
    idx: number,
    def: Record<string, unknown>,
    o: { id: string; embedded: boolean; svc?: ServiceDef },
  ): void {
    const ttl = String(fieldCI(def, "TTL") ?? "");
    const ttlNs = ttl === "" ? 0 : (parseGoDuration(ttl) ?? 0);
    const httpUrl = String(fieldCI(def, "HTTP") ?? "");
    const interval = String(fieldCI(def, "Interval") ?? "");
    const timeout = String(fieldCI(def, "Timeout") ?? "");
    if (httpUrl !== "" && !(parseGoDuration(interval) ?? 0))
      throw new HttpError(400, "Interval must be > 0 for Script, HTTP, or TCP checks");
    const status = (fieldCI(def, "Status") as CheckStatus | undefined) || "critical";
    if (!["passing", "warning", "critical"].includes(status))
      throw new HttpError(400, `Invalid check status: '${status}'`);
    const old = node.checks.get(o.id);
    if (old) clearTimeout(old.timer);
    const name = String(fieldCI(def, "Name") ?? "") || (o.svc ? `Service '${o.svc.name}' check` : o.id);
    const view = { status, output: String(fieldCI(def, "Output") ?? "") };
    const c: AgentCheck = {
      id: o.id,
      name,
      notes: String(fieldCI(def, "Notes") ?? ""),
      serviceId: o.svc?.id ?? "",
      serviceName: o.svc?.name ?? "",
      serviceTags: o.svc?.tags ?? [],
      type: ttlNs > 0 ? "ttl" : httpUrl !== "" ? "http" : "",
      interval: httpUrl !== "" ? interval : o.embedded ? "" : "0s",
      timeout: httpUrl !== "" ? timeout : o.embedded ? "" : "0s",
      ttlMs: ttlNs / 1e6,
      http:
        httpUrl === ""
          ? undefined
          : {
              url: httpUrl,
              method: String(fieldCI(def, "Method") ?? "") || "GET",
              intervalMs: (parseGoDuration(interval) ?? 0) / 1e6,
              timeoutMs: (parseGoDuration(timeout) ?? 10e9) / 1e6 || 10_000,
            },
      initialStatus: status,
      local: { ...view },
      synced: { ...view },
      createIndex: old?.createIndex ?? idx,
      modifyIndex: idx,
    };
    node.checks.set(o.id, c);
    this.armCheckTimer(node, c);
  }

  deregisterCheck(nodeName: string, id: string): void {
    const node = this.getNode(nodeName);
    const idx = ++this.raftIndex;
    if (!node.checks.has(id))
      throw new HttpError(404, `Unknown check ID "${id}". Ensure that the check ID is passed, not the check name.`);
    this.removeCheck(node, idx, id);
    this.catalogIndex = idx;
    this.notify();
  }

  private removeCheck(node: CatalogNode, idx: number, id: string): void {
    const c = node.checks.get(id);
    if (!c) return;
    clearTimeout(c.timer);
    node.checks.delete(id);
    // Consul invalidates the sessions that list a check when it goes away.
    this.invalidateWhere(idx, (s) => s.node === node.name && sessionCheckIds(s).includes(id));
  }

  private armCheckTimer(node: CatalogNode, c: AgentCheck): void {
    clearTimeout(c.timer);
    c.timer = undefined;
    if (node.member !== 1 || !this.agentUp(node.name)) return;
    if (c.http) {
      this.armProbe(node, c);
      return;
    }
    if (c.ttlMs <= 0) return;
    c.timer = setTimeout(() => this.expireCheckTtl(node.name, c.id), this.ms(c.ttlMs));
    c.timer.unref?.();
  }

  /**
   * An HTTP check as the agent runs it: 2xx passing, 429 warning, anything else (or no answer within
   * the timeout) critical; Output "HTTP GET <url>: <status> <text> Output: <body>" (body cut at 4 KB).
   */
  private armProbe(node: CatalogNode, c: AgentCheck): void {
    const h = c.http!;
    const probe = async () => {
      let status: CheckStatus;
      let output: string;
      try {
        const res = await fetch(h.url, { method: h.method, signal: AbortSignal.timeout(this.ms(h.timeoutMs)) });
        const body = (await res.text()).slice(0, 4096);
        status = res.status >= 200 && res.status < 300 ? "passing" : res.status === 429 ? "warning" : "critical";
        output = `HTTP ${h.method} ${h.url}: ${res.status} ${res.statusText} Output: ${body}`;
      } catch (err) {
        status = "critical";
        output = (err as Error).message;
      }
      // The probe may finish after the check went away or its agent died.
      if (node.checks.get(c.id) === c && c.timer !== undefined)
        this.setCheck(node.name, c.id, status, output, { restartTtl: false });
    };
    const t = setInterval(probe, Math.max(1, this.ms(h.intervalMs)));
    t.unref?.();
    c.timer = t;
    void probe();
  }

  private agentUp(name: string): boolean {
    const a = this.agents.get(name);
    return a === undefined || a.running;
  }

  /**
   * What a TTL update (pass/warn/fail/update) or a script check's result does on the node's agent:
   * the local view changes at once; a status change is synced to the catalog in a new raft index
   * (with the latest output), and if it is critical, the sessions listing the check die with it.
   */
  setCheck(nodeName: string, id: string, status: CheckStatus, output: string, o: { restartTtl?: boolean } = {}): void {
    const node = this.getNode(nodeName);
    const c = node.checks.get(id);
    if (!c) throw new Error(`consul stand-in: node ${nodeName} has no check ${id}`);
    c.local = { status, output };
    if ((o.restartTtl ?? true) && c.type === "ttl") this.armCheckTimer(node, c);
    if (c.synced.status !== status) {
      const idx = ++this.raftIndex;
      c.synced = { ...c.local };
      c.modifyIndex = idx;
      this.catalogIndex = idx;
      if (status === "critical")
        this.invalidateWhere(idx, (s) => s.node === nodeName && sessionCheckIds(s).includes(id));
      this.notify();
    } else {
      this.poke();
    }
  }

  /** Let a TTL check's TTL run out now, exactly as its timer would. */
  expireCheckTtl(nodeName: string, id: string): void {
    const c = this.getNode(nodeName).checks.get(id);
    if (!c) throw new Error(`consul stand-in: node ${nodeName} has no check ${id}`);
    const out =
      c.local.output === "" ? "TTL expired" : `TTL expired (last output before timeout follows): ${c.local.output}`;
    this.setCheck(nodeName, id, "critical", out, { restartTtl: false });
  }

  /** End a key's lock-delay now (instead of waiting it out). */
  endLockDelay(key: string): void {
    this.lockDelays.delete(key);
  }

  /** Set a node's serfHealth directly (critical invalidates its serfHealth sessions). */
  setSerfHealth(nodeName: string, status: CheckStatus): void {
    const node = this.getNode(nodeName);
    if (node.serf.status === status) return;
    const idx = ++this.raftIndex;
    node.serf = { ...node.serf, status, output: serfOutput(status), modifyIndex: idx };
    this.catalogIndex = idx;
    if (status === "critical")
      this.invalidateWhere(idx, (s) => s.node === nodeName && sessionCheckIds(s).includes(SERF_HEALTH));
    this.notify();
  }

  // ------------------------------------------------------------ node liveness

  /**
   * kill -9 of a node's agent: its HTTP API refuses connections now, its TTL timers stop; after the
   * failure detection delay the member is failed and serfHealth goes critical (sessions invalidated).
   */
  async killNode(name: string): Promise<void> {
    const node = this.getNode(name);
    const agent = this.agents.get(name);
    for (const c of node.checks.values()) {
      clearTimeout(c.timer);
      c.timer = undefined;
    }
    if (agent) await agent.stop();
    clearTimeout(this.failTimers.get(name));
    const t = setTimeout(() => {
      this.failTimers.delete(name);
      node.member = 4;
      this.setSerfHealth(name, "critical");
    }, this.ms(this.failureDetectMs));
    t.unref?.();
    this.failTimers.set(name, t);
    this.poke();
  }

  /**
   * The agent comes back on the same port with the same node ID: events are gone (memory), services
   * and checks are back from its data dir, TTL checks at their initial status with Output "" (only
   * their local view: same status as the catalog's is not synced). A restart before the failure was
   * detected goes unnoticed; after it, the member is alive and serfHealth passing again.
   */
  async restartNode(name: string): Promise<void> {
    const node = this.getNode(name);
    const agent = this.node(name);
    clearTimeout(this.failTimers.get(name));
    this.failTimers.delete(name);
    await agent.restart();
    node.member = 1;
    for (const c of node.checks.values()) {
      if (c.type === "http") this.armCheckTimer(node, c);
      if (c.type !== "ttl") continue;
      c.local = { status: c.initialStatus, output: "" };
      this.armCheckTimer(node, c);
      if (c.synced.status !== c.local.status) this.setCheck(name, c.id, c.local.status, "");
    }
    this.setSerfHealth(name, "passing");
    this.poke();
  }

  /** Whether the failure of a killed node is still pending. */
  failurePending(name: string): boolean {
    return this.failTimers.has(name);
  }

  // ------------------------------------------------------------ events

  /** Hold gossip: events fired from now on reach no agent until releaseEvents. */
  holdEvents(): void {
    this.held ??= [];
  }

  /**
   * Deliver the held events, in `order` (event IDs; default firing order), to every agent whose node
   * passes the filters, and stop holding. Gossip's arrival order is not the firing order (captured).
   */
  releaseEvents(order?: string[]): void {
    const held = this.held ?? [];
    this.held = undefined;
    const seq = order ? order.map((id) => held.find((e) => e.id === id)!).filter(Boolean) : held;
    for (const ev of seq) this.deliver(ev);
  }

  /** serf broadcast: each live agent keeps the events that pass its node's filters. */
  deliver(ev: StoredEvent): void {
    this.fired.push(ev);
    if (this.held) {
      this.held.push(ev);
      return;
    }
    for (const a of this.agents.values()) {
      const node = this.nodes.get(a.nodeName);
      if (!a.running || !node || !passesFilters(ev, node)) continue;
      a.events.push(ev);
      if (a.events.length > EVENT_BUFFER) a.events.splice(0, a.events.length - EVENT_BUFFER);
    }
    this.notify();
  }

  /** Which catalog nodes an event reaches: each agent applies the filters to its own node and services. */
  receivers(ev: Pick<StoredEvent, "nodeFilter" | "serviceFilter" | "tagFilter">): string[] {
    return [...this.nodes.values()]
      .filter((n) => passesFilters(ev, n))
      .map((n) => n.name)
      .sort();
  }

  // ------------------------------------------------------------ KV

  kvMaxIndex(): number {
    return Math.max(this.kvsIndex, this.tombstoneIndex);
  }

  /** A write as if through the HTTP API (consumes a raft index); for setting up state in tests. */
  kvPut(key: string, value: string | Uint8Array, flags: bigint = 0n): void {
    this.kvSet(++this.raftIndex, key, bytes(value), flags);
  }

  kvEntry(key: string): KvSnapshotEntry | undefined {
    const e = this.kv.get(key);
    return e && { ...e };
  }

  /** kvsSetTxn: keeps CreateIndex and (unless `lock` is given) the session; an identical write is a no-op. */
  kvSet(
    idx: number,
    key: string,
    value: Uint8Array,
    flags: bigint,
    lock?: { session: string; lockIndex: number },
  ): void {
    const old = this.kv.get(key);
    const next: KvSnapshotEntry = {
      key,
      value,
      flags,
      createIndex: old?.createIndex ?? idx,
      modifyIndex: idx,
      lockIndex: lock ? lock.lockIndex : (old?.lockIndex ?? 0),
      session: lock ? lock.session : (old?.session ?? ""),
    };
    if (
      old &&
      old.lockIndex === next.lockIndex &&
      old.flags === next.flags &&
      old.session === next.session &&
      Buffer.compare(old.value, next.value) === 0
    ) {
      return;
    }
    this.kv.set(key, next);
    this.tombstones.delete(key);
    this.kvsIndex = idx;
    this.notify();
  }

  kvCas(idx: number, key: string, value: Uint8Array, flags: bigint, cas: number): boolean {
    const old = this.kv.get(key);
    if (cas === 0 && old) return false;
    if (cas !== 0 && (!old || old.modifyIndex !== cas)) return false;
    this.kvSet(idx, key, value, flags);
    return true;
  }

  /** kvsLockTxn; `invalid` is the error text for a session that does not exist. */
  kvLock(
    idx: number,
    key: string,
    value: Uint8Array,
    flags: bigint,
    session: string,
    invalid: (id: string) => string,
  ): boolean {
    if (session === "") throw new HttpError(500, "missing session");
    if (!this.sessions.has(session)) throw new HttpError(500, invalid(session));
    const old = this.kv.get(key);
    let lockIndex = 1;
    if (old) {
      if (old.session === session) lockIndex = old.lockIndex;
      else if (old.session !== "") return false;
      else lockIndex = old.lockIndex + 1;
    }
    this.kvSet(idx, key, value, flags, { session, lockIndex });
    return true;
  }

  kvUnlock(idx: number, key: string, value: Uint8Array, flags: bigint, session: string): boolean {
    if (session === "") throw new HttpError(500, "missing session");
    const old = this.kv.get(key);
    if (!old || old.session !== session) return false;
    this.kvSet(idx, key, value, flags, { session: "", lockIndex: old.lockIndex });
    return true;
  }

  kvRemove(idx: number, key: string): void {
    if (!this.kv.delete(key)) return;
    this.tombstones.set(key, idx);
    this.tombstoneIndex = idx;
    this.notify();
  }

  lockDelayed(key: string): boolean {
    return (this.lockDelays.get(key) ?? 0) > Date.now();
  }

  // ------------------------------------------------------------ sessions

  addSession(s: Session): void {
    this.sessions.set(s.id, s);
    this.sessionsIndex = s.createIndex;
    this.armSessionTimer(s);
    this.notify();
  }

  armSessionTimer(s: Session): void {
    clearTimeout(s.timer);
    if (s.ttl === "") return;
    const ns = parseGoDuration(s.ttl) ?? 0;
    if (ns === 0) return;
    s.timer = setTimeout(
      () => this.destroySession(++this.raftIndex, s.id),
      this.ms((ns / 1e6) * SESSION_TTL_MULTIPLIER),
    );
    s.timer.unref?.();
  }

  rearmSessionTimers(): void {
    for (const s of this.sessions.values()) this.armSessionTimer(s);
  }

  /** Invalidate a session now, as if its TTL ran out. */
  expireSession(id: string): void {
    this.destroySession(++this.raftIndex, id);
  }

  private invalidateWhere(idx: number, pred: (s: Session) => boolean): void {
    for (const s of [...this.sessions.values()]) if (pred(s)) this.destroySession(idx, s.id);
  }

  /** Invalidate: release or delete the keys it holds (lock-delay starts now), then drop it. */
  destroySession(idx: number, id: string): void {
    const s = this.sessions.get(id);
    if (!s) return;
    clearTimeout(s.timer);
    for (const e of [...this.kv.values()]) {
      if (e.session !== id) continue;
      if (s.lockDelayNs > 0) this.lockDelays.set(e.key, Date.now() + this.ms(s.lockDelayNs / 1e6));
      if (s.behavior === "delete") this.kvRemove(idx, e.key);
      else this.kvSet(idx, e.key, e.value, e.flags, { session: "", lockIndex: e.lockIndex });
    }
    this.sessions.delete(id);
    this.sessionsIndex = idx;
    this.notify();
  }

  /** The status of a check a session may list, as the servers see it; undefined when unknown. */
  checkStatus(nodeName: string, id: string): CheckStatus | undefined {
    const node = this.nodes.get(nodeName);
    if (!node) return undefined;
    if (id === SERF_HEALTH) return node.serf.status;
    return node.checks.get(id)?.synced.status;
  }

  newSessionDefaults(): { lockDelayNs: number } {
    return { lockDelayNs: DEFAULT_LOCK_DELAY_NS };
  }
}

export function serfOutput(status: CheckStatus): string {
  return status === "critical" ? "Agent not live or unreachable" : "Agent alive and reachable";
}

/** Every check a session is tied to, whichever field listed it. */
export function sessionCheckIds(s: Session): string[] {
  return [...new Set([...(s.nodeChecks ?? []), ...(s.serviceChecks ?? []).map((c) => c.ID), ...(s.checks ?? [])])];
}

/** Go's encoding/json matches field names case-insensitively. */
export function fieldCI(o: Record<string, unknown>, name: string): unknown {
  const k = Object.keys(o).find((k) => k.toLowerCase() === name.toLowerCase());
  return k === undefined ? undefined : o[k];
}

/** shouldProcessUserEvent: node name regexp (unanchored), then a service (and tag) of this node matching. */
export function passesFilters(
  ev: Pick<StoredEvent, "nodeFilter" | "serviceFilter" | "tagFilter">,
  node: CatalogNode,
): boolean {
  if (ev.nodeFilter !== "" && !new RegExp(ev.nodeFilter).test(node.name)) return false;
  if (ev.serviceFilter !== "") {
    const sre = new RegExp(ev.serviceFilter);
    const tre = ev.tagFilter !== "" ? new RegExp(ev.tagFilter) : undefined;
    return node.services.some((s) => sre.test(s.name) && (!tre || s.tags.some((t) => tre.test(t))));
  }
  return true;
}

export function sessionJson(s: Session): Json {
  const o: { [k: string]: Json } = {
    ID: s.id,
    Name: s.name,
    Node: s.node,
    LockDelay: s.lockDelayNs,
    Behavior: s.behavior,
    TTL: s.ttl,
    NodeChecks: s.nodeChecks,
    ServiceChecks: s.serviceChecks,
  };
  if (s.checks !== undefined) o.Checks = s.checks;
  o.CreateIndex = s.createIndex;
  o.ModifyIndex = s.modifyIndex;
  return o;
}
