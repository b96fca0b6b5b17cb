/**
 * Threat classes 7, 8 (lock, processes) and 9 through the compiled binary: a killed agent's lock and
 * hooks, replayed signed releases, and the books a local rollback keeps. The agent runs as root here,
 * as it does in production; the state dir is per test.
 */
import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { appRelease, BINARY, run, running, tempDir, waitFor, writeTree } from "../support/helpers.ts";
import { startConsulStandin } from "../support/consul-standin.ts";

function spawnAgent(args: string[], env: Record<string, string>) {
  return Bun.spawn([BINARY, "agent", ...args], {
    env: { PATH: process.env.PATH!, HOME: process.env.HOME!, ...env },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
}

/** A stream's text so far, as it arrives. */
function collect(stream: ReadableStream<Uint8Array>) {
  const out = { text: "", done: Promise.resolve() };
  const decoder = new TextDecoder();
  out.done = (async () => {
    for await (const chunk of stream) out.text += decoder.decode(chunk, { stream: true });
  })();
  return out;
}

function hookRelease(dir: string, name: string, pre: string) {
  const store = join(dir, `store-${name}`);
  fs.mkdirSync(store, { recursive: true });
  return appRelease(
    store,
    { VERSION: name },
    (a) =>
      `src: file://${a.path}\nchecksum: ${a.sha256}\ndest: ${dir}/dest\nsync_strategy: release\nrelease_id: ` +
      `${name}\ncommands:\n  pre: [${JSON.stringify(pre)}]\n`,
  );
}

describe("class 8: the host lock and a killed agent's processes", () => {
  test("kill -9 during a pre hook: the next run takes the lock at once, kills the hook's group, deploys", async () => {
    await using d = tempDir();
    const state = join(d.path, "state");
    const pids = join(d.path, "pids");
    // The hook and a background child of it, both in the hook's process group; pids written once started.
    const hung = hookRelease(d.path, "r1", `sleep 1000 & echo "$$ $!" > ${pids}; wait`);
    const agent = spawnAgent(["--manifest", hung.manifestUrl], { PULLDEPLOY_STATE_DIR: state });
    await waitFor(() => fs.existsSync(pids) && fs.readFileSync(pids, "utf8").endsWith("\n"), "the pre hook to start");
    const [sh, sleep] = fs.readFileSync(pids, "utf8").trim().split(" ").map(Number) as [number, number];
    // The agent records the group right after the spawn returns; on a loaded machine the hook can get
    // this far first (a kill -9 in that window of microseconds is not covered: see the report).
    await waitFor(() => fs.existsSync(join(state, "children", String(sh))), "the agent to record the hook's group");
    expect(fs.readdirSync(join(state, "children"))).toEqual([String(sh)]);
    agent.kill("SIGKILL");
    await agent.exited;
    expect(running(sh) && running(sleep)).toBe(true); // what the issue is about: they outlive the agent

    const ok = hookRelease(d.path, "r2", "true");
    const started = performance.now();
    const next = await run(["agent", "--lock-wait", "0", "--manifest", ok.manifestUrl], {
      env: { PULLDEPLOY_STATE_DIR: state },
    });
    expect(next.code).toBe(0);
    expect(performance.now() - started).toBeLessThan(5000);
    expect(next.stderr).toContain(
      `cleanup: killed process group ${sh} left running by a previous agent run (pre: sleep 1000`,
    );
    await waitFor(() => !running(sh) && !running(sleep), "the old hook's group to die");
    expect(fs.readFileSync(join(d.path, "dest/current/VERSION"), "utf8")).toBe("r2");
    expect(fs.readdirSync(join(state, "children"))).toEqual([]);
  });

  test("kill -9 during rsync: the next run kills the rsync a dead agent left running", async () => {
    await using d = tempDir();
    const state = join(d.path, "state");
    const pids = join(d.path, "rsync-pid");
    // An rsync that hangs (a stalled NFS dest): a stand-in first on PATH that says when it started.
    const bin = join(d.path, "bin");
    fs.mkdirSync(bin);
    fs.writeFileSync(
      join(bin, "rsync"),
      `#!/bin/sh\necho $$ > ${pids}.tmp && mv ${pids}.tmp ${pids}\nexec sleep 1000\n`,
      { mode: 0o755 },
    );
    fs.mkdirSync(join(d.path, "dest"));
    fs.writeFileSync(join(d.path, "dest/old"), "x"); // not empty: a real rsync, not the first-deploy rename
    const store = join(d.path, "store");
    fs.mkdirSync(store);
    const rel = appRelease(
      store,
      { VERSION: "r1" },
      (a) => `src: file://${a.path}\nchecksum: ${a.sha256}\ndest: ${d.path}/dest\n`,
    );
    const agent = spawnAgent(["--manifest", rel.manifestUrl], {
      PULLDEPLOY_STATE_DIR: state,
      PATH: `${bin}:${process.env.PATH}`,
    });
    await waitFor(() => fs.existsSync(pids), "rsync to start");
    const rsync = Number(fs.readFileSync(pids, "utf8"));
    await waitFor(() => fs.existsSync(join(state, "children", `${rsync}.tree`)), "the agent to record rsync");
    agent.kill("SIGKILL");
    await agent.exited;
    expect(running(rsync)).toBe(true);
    const next = await run(["agent", "--lock-wait", "0", "--manifest", rel.manifestUrl], {
      env: { PULLDEPLOY_STATE_DIR: state },
    });
    expect(next.code).toBe(0);
    expect(next.stderr).toContain(
      `cleanup: killed process ${rsync} and its 0 descendants, left running by a previous agent run (sync: rsync)`,
    );
    await waitFor(() => !running(rsync), "the old rsync to die");
    expect(fs.readFileSync(join(d.path, "dest/VERSION"), "utf8")).toBe("r1");
  });

  // mv needs a dest that does not exist, so only its pre phase can be followed by another deploy.
  test.each([
    ["rsync", "pre"],
    ["rsync", "post"],
    ["mv", "pre"],
    ["release", "pre"],
    ["release", "post"],
    ["release", "validate"],
  ] as const)(
    "%s, kill -9 in %s: the hook's group is killed by the next run, which deploys (and rolls back)",
    async (strategy, phase) => {
      await using d = tempDir();
      const state = join(d.path, "state");
      const pids = join(d.path, "pids");
      const store = join(d.path, "store");
      fs.mkdirSync(store);
      const manifest = (name: string, hook: string) =>
        // A file named after the release: rsync's quick check (size, whole-second mtime) can't skip it.
        appRelease(
          store,
          { VERSION: name, [name]: name },
          (a) =>
            `src: file://${a.path}\nchecksum: ${a.sha256}\ndest: ${d.path}/dest\nsync_strategy: ` +
            `${strategy}\n${strategy === "release" ? `release_id: ${name}\n` : ""}commands:\n  ${phase}: ` +
            `[${JSON.stringify(hook)}]\n`,
          name,
        );
      const hung = manifest("r1", `sleep 1000 & echo "$$ $!" > ${pids}; wait`);
      const agent = spawnAgent(["--manifest", hung.manifestUrl], { PULLDEPLOY_STATE_DIR: state });
      await waitFor(
        () => fs.existsSync(pids) && fs.readFileSync(pids, "utf8").endsWith("\n"),
        `the ${phase} hook to start`,
      );
      const [sh, sleep] = fs.readFileSync(pids, "utf8").trim().split(" ").map(Number) as [number, number];
      await waitFor(() => fs.existsSync(join(state, "children", String(sh))), "the agent to record the hook's group");
      agent.kill("SIGKILL");
      await agent.exited;
      expect({ sh: running(sh), sleep: running(sleep) }).toEqual({ sh: true, sleep: true });
      const next = await run(["agent", "--lock-wait", "0", "--manifest", manifest("r2", "true").manifestUrl], {
        env: { PULLDEPLOY_STATE_DIR: state },
      });
      expect(next.code).toBe(0);
      expect(next.stderr).toContain(
        `cleanup: killed process group ${sh} left running by a previous agent run (${phase}: sleep 1000`,
      );
      await waitFor(() => !running(sh) && !running(sleep), "the old hook's group to die");
      const live = join(d.path, strategy === "release" ? "dest/current" : "dest");
      expect([fs.existsSync(join(live, "r2")), fs.existsSync(join(live, "r1"))]).toEqual([true, false]);
      if (strategy === "release" && phase !== "pre") {
        // r1 was switched to before the kill: it is on disk to roll back to.
        const back = await run(["rollback", "--dest", join(d.path, "dest"), "--to", "r1"], {
          env: { PULLDEPLOY_STATE_DIR: state },
        });
        expect(back.code).toBe(0);
        expect(fs.readFileSync(join(d.path, "dest/current/VERSION"), "utf8")).toBe("r1");
      }
    },
  );

  test("a second agent waits for the lock's holder (--lock-wait) or refuses at once (0), naming the holder", async () => {
    await using d = tempDir();
    const state = join(d.path, "state");
    const gate = join(d.path, "gate");
    const slow = hookRelease(d.path, "r1", `touch ${gate}.started; while [ ! -e ${gate} ]; do sleep 0.05; done`);
    const holder = spawnAgent(["--manifest", slow.manifestUrl], { PULLDEPLOY_STATE_DIR: state });
    await waitFor(() => fs.existsSync(`${gate}.started`), "the holder's pre hook");
    const other = hookRelease(d.path, "r2", "true");
    const refused = await run(["agent", "--lock-wait", "0", "--manifest", other.manifestUrl], {
      env: { PULLDEPLOY_STATE_DIR: state },
    });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(`another pulldeploy agent (pid ${holder.pid}) is deploying on this host`);
    const waiter = spawnAgent(["--lock-wait", "30s", "--manifest", other.manifestUrl], { PULLDEPLOY_STATE_DIR: state });
    const waiterErr = collect(waiter.stderr);
    await waitFor(
      () =>
        waiterErr.text.includes(`lock: another agent (pid ${holder.pid}) is deploying on this host; waiting up to 30s`),
      "the waiter to wait",
    );
    fs.writeFileSync(gate, "");
    expect(await holder.exited).toBe(0);
    expect(await waiter.exited).toBe(0);
    await waiterErr.done;
    expect(waiterErr.text).toContain("deploy succeeded");
    expect(fs.readFileSync(join(d.path, "dest/current/VERSION"), "utf8")).toBe("r2");
  });

  test("a lock file naming a live, unrelated process (a reused pid) does not block", async () => {
    await using d = tempDir();
    const state = join(d.path, "state");
    fs.mkdirSync(state);
    const unrelated = Bun.spawn(["sleep", "30"]);
    try {
      fs.writeFileSync(join(state, "lock"), `${unrelated.pid}\n`);
      const rel = hookRelease(d.path, "r1", "true");
      const r = await run(["agent", "--lock-wait", "0", "--manifest", rel.manifestUrl], {
        env: { PULLDEPLOY_STATE_DIR: state },
      });
      expect(r.code).toBe(0);
      expect(running(unrelated.pid)).toBe(true);
      expect(fs.readFileSync(join(state, "lock"), "utf8")).not.toBe(`${unrelated.pid}\n`);
    } finally {
      unrelated.kill();
    }
  });

  test("a children record whose pid now names an unrelated process (another start time) is not killed", async () => {
    await using d = tempDir();
    const state = join(d.path, "state");
    fs.mkdirSync(join(state, "children"), { recursive: true });
    const unrelated = Bun.spawn(["sleep", "30"], { detached: true });
    try {
      fs.writeFileSync(join(state, "children", String(unrelated.pid)), `${unrelated.pid} 1 pre: sleep 1000\n`);
      const rel = hookRelease(d.path, "r1", "true");
      const r = await run(["agent", "--manifest", rel.manifestUrl], { env: { PULLDEPLOY_STATE_DIR: state } });
      expect(r.code).toBe(0);
      expect(r.stderr).not.toContain("cleanup: killed");
      expect(running(unrelated.pid)).toBe(true);
    } finally {
      unrelated.kill();
    }
  });
});

describe("class 7: a signed release can't be replayed to downgrade a host", () => {
  async function fleet(d: string) {
    const consul = await startConsulStandin({ nodeName: "web-1" });
    const env = { ...consul.env, PULLDEPLOY_STATE_DIR: join(d, "state") };
    expect((await run(["keygen", "--out", join(d, "key")])).code).toBe(0);
    const dest = join(d, "srv/app");
    const publish = async (version: string) => {
      const app = join(d, `build-${version}`);
      writeTree(app, { VERSION: version });
      const r = await run(
        [
          "publish",
          app,
          "--to",
          `file://${d}/store`,
          "--role",
          "web",
          "--dest",
          dest,
          "--sync-strategy",
          "release",
          "--no-event",
          "--sign-key",
          join(d, "key"),
        ],
        { env },
      );
      expect(r.code).toBe(0);
      return r.stdout.trim();
    };
    const agent = (args: string[]) =>
      run(["agent", "--role", "web", "--trust-key", join(d, "key.pub"), ...args], { env });
    return { consul, env, dest, publish, agent };
  }

  test("replaying v1 after v2 is refused; rollback --role --sign-key re-signs v1 and it deploys; v2's old statement is then refused", async () => {
    await using d = tempDir();
    const f = await fleet(d.path);
    await using _consul = f.consul;
    const v1 = await f.publish("1");
    const v2 = await f.publish("2");
    expect(fs.readFileSync(new URL(v2), "utf8")).toMatch(/^issued_at: "?\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"?$/m);
    expect((await f.agent(["--manifest", v1])).code).toBe(0);
    expect((await f.agent(["--manifest", v2])).code).toBe(0);

    // An attacker who can fire events replays v1's signed manifest.
    const replay = await f.agent(["--manifest", v1]);
    expect(replay.code).toBe(1);
    expect(replay.stderr).toMatch(
      /deploy failed in phase signature: manifest issued \S+, older than the last deployed \S+ for \S+srv\/app: refusing a downgrade \(re-sign it with pulldeploy rollback --role/,
    );
    expect(fs.readFileSync(join(f.dest, "current/VERSION"), "utf8")).toBe("2");
    const id2 = v2.replace(/^.*\//, "").replace(/\.yml$/, "");
    expect(JSON.parse(fs.readFileSync(join(d.path, "state/state.json"), "utf8"))).toMatchObject({
      release_id: id2,
      status: "success",
    });
    const report = JSON.parse(new TextDecoder().decode(f.consul.kvEntry("pulldeploy/roles/web/nodes/web-1")!.value!));
    expect(report).toMatchObject({ status: "failure", phase: "signature" });

    // A plain rollback re-points latest at v1's old statement: the operator is warned, agents refuse it.
    const id1 = v1.replace(/^.*\//, "").replace(/\.yml$/, "");
    const plain = await run(["rollback", "--role", "web", "--to", id1], { env: f.env });
    expect(plain.code).toBe(0);
    expect(plain.stderr).toContain(
      `rollback: warning: ${id1}'s manifest is signed; agents with --trust-key that ran a later release refuse ` +
        "it as a downgrade (pass --sign-key KEY to re-sign it)",
    );
    const refused = await f.agent(["--from-kv"]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("refusing a downgrade");

    // The operator means it: a new signed statement of v1 (even though v1 is already the latest).
    const back = await run(["rollback", "--role", "web", "--to", id1, "--sign-key", join(d.path, "key")], {
      env: f.env,
    });
    expect(back.code).toBe(0);
    const latest = JSON.parse(new TextDecoder().decode(f.consul.kvEntry("pulldeploy/roles/web/latest")!.value!));
    expect(latest.id).toBe(id1);
    expect(latest.manifest_url).toMatch(new RegExp(`/web/resigned-\\d{8}T\\d{9}Z/${id1}\\.yml$`));
    expect(fs.existsSync(new URL(`${latest.manifest_url}.sig`))).toBe(true);
    const fromKv = await f.agent(["--from-kv"]);
    expect(fromKv.code).toBe(0);
    expect(fromKv.stderr).toContain("is already on disk: switching without a download");
    expect(fs.readFileSync(join(f.dest, "current/VERSION"), "utf8")).toBe("1");

    // v2's original statement is now older than what runs: a replay of it is refused too.
    const forward = await f.agent(["--manifest", v2]);
    expect(forward.code).toBe(1);
    expect(forward.stderr).toContain("refusing a downgrade");
    // The same statement fired again is not a downgrade (idempotent).
    const again = await f.agent(["--manifest", latest.manifest_url, "--force"]);
    expect(again.code).toBe(0);
  });

  test("an old signed manifest without issued_at is refused once the dest ran a dated one; a tampered issued_at breaks the signature", async () => {
    await using d = tempDir();
    const f = await fleet(d.path);
    await using _consul = f.consul;
    const v1 = await f.publish("1");
    // A manifest as an older pulldeploy signed it: no issued_at, signed by the same key.
    const legacyPath = new URL(v1).pathname.replace(/\.yml$/, "-legacy.yml");
    fs.writeFileSync(legacyPath, fs.readFileSync(new URL(v1), "utf8").replace(/^issued_at:.*\n/m, ""));
    const { loadPrivateKey, signBytes } = await import("../../src/signature.ts");
    fs.writeFileSync(`${legacyPath}.sig`, signBytes(fs.readFileSync(legacyPath), loadPrivateKey(join(d.path, "key"))));
    // Before any dated manifest: accepted (upgrade path).
    expect((await f.agent(["--manifest", `file://${legacyPath}`])).code).toBe(0);
    expect((await f.agent(["--manifest", v1, "--force"])).code).toBe(0);
    const refused = await f.agent(["--manifest", `file://${legacyPath}`, "--force"]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("manifest has no signed issued_at, and");
    // Moving issued_at forward in the file without the key: the signature no longer matches.
    const forgedPath = new URL(v1).pathname.replace(/\.yml$/, "-forged.yml");
    fs.writeFileSync(
      forgedPath,
      fs.readFileSync(new URL(v1), "utf8").replace(/^issued_at:.*$/m, 'issued_at: "2099-01-01T00:00:00.000Z"'),
    );
    fs.copyFileSync(`${new URL(v1).pathname}.sig`, `${forgedPath}.sig`);
    const forged = await f.agent(["--manifest", `file://${forgedPath}`, "--force"]);
    expect(forged.code).toBe(1);
    expect(forged.stderr).toContain("bad signature");
  });
});

describe("class 9: rollback --dest keeps the books; --follow retries", () => {
  test("rollback --dest waits for the host lock, writes the state file and reports to KV", async () => {
    await using d = tempDir();
    await using consul = await startConsulStandin({ nodeName: "web-1" });
    const state = join(d.path, "state");
    const env = { ...consul.env, PULLDEPLOY_STATE_DIR: state };
    for (const n of ["r1", "r2"])
      expect(
        (await run(["agent", "--role", "web", "--manifest", hookRelease(d.path, n, "true").manifestUrl], { env })).code,
      ).toBe(0);
    expect(JSON.parse(fs.readFileSync(join(state, "state.json"), "utf8"))).toMatchObject({
      release_id: "r2",
      status: "success",
    });

    // A deploy holds the lock: rollback --lock-wait 0 refuses rather than switching under it.
    const gate = join(d.path, "gate");
    const holder = spawnAgent(
      [
        "--manifest",
        hookRelease(d.path, "r3", `touch ${gate}.started; while [ ! -e ${gate} ]; do sleep 0.05; done`).manifestUrl,
      ],
      { PULLDEPLOY_STATE_DIR: state },
    );
    await waitFor(() => fs.existsSync(`${gate}.started`), "the holder's pre hook");
    const busy = await run(["rollback", "--dest", join(d.path, "dest"), "--lock-wait", "0"], { env });
    expect(busy.code).toBe(1);
    expect(busy.stderr).toContain("another pulldeploy agent");
    fs.writeFileSync(gate, "");
    expect(await holder.exited).toBe(0);

    const back = await run(["rollback", "--dest", join(d.path, "dest"), "--to", "r1", "--role", "web"], { env });
    expect(back.code).toBe(0);
    expect(fs.readlinkSync(join(d.path, "dest/current"))).toBe("releases/r1");
    expect(JSON.parse(fs.readFileSync(join(state, "state.json"), "utf8"))).toMatchObject({
      release_id: "r1",
      status: "success",
    });
    const report = JSON.parse(new TextDecoder().decode(consul.kvEntry("pulldeploy/roles/web/nodes/web-1")!.value!));
    expect(report).toMatchObject({
      node: "web-1",
      role: "web",
      status: "success",
      phase: "done",
      release_id: "r1",
      rolled_back_to: "r1",
      error: null,
    });
    const status = await run(["status", "--role", "web"], { env });
    expect(status.stdout).toContain("r1");
  });

  test("--follow retries a failed release with backoff and converges once it can", async () => {
    await using d = tempDir();
    await using consul = await startConsulStandin({ nodeName: "web-1" });
    const state = join(d.path, "state");
    const ready = join(d.path, "ready");
    const tries = join(d.path, "tries");
    // Fails until `ready` exists, as a release does while a dependency is down.
    const rel = hookRelease(d.path, "r1", `echo x >> ${tries}; test -e ${ready}`);
    consul.kvPut(
      "pulldeploy/roles/web/latest",
      JSON.stringify({
        id: "r1",
        role: "web",
        manifest_url: rel.manifestUrl,
        archive_url: "",
        algorithm: "sha256",
        checksum: rel.sha256,
        size: null,
        files: null,
        created_at: new Date().toISOString(),
        publisher: "t",
        message: "",
      }),
    );
    const agent = spawnAgent(["--role", "web", "--follow", "--follow-retry", "200ms", "--follow-wait", "1s"], {
      ...consul.env,
      PULLDEPLOY_STATE_DIR: state,
    } as Record<string, string>);
    const count = () => (fs.existsSync(tries) ? fs.readFileSync(tries, "utf8").split("\n").filter(Boolean).length : 0);
    try {
      await waitFor(() => count() >= 2, "a retry of the failed release", 20_000);
      fs.writeFileSync(ready, "");
      await waitFor(() => fs.existsSync(join(d.path, "dest/current")), "the retry to succeed", 20_000);
      await waitFor(
        () => fs.readFileSync(join(state, "state.json"), "utf8").includes('"success"'),
        "the state to record the success",
      );
      const n = count();
      expect(fs.readFileSync(join(d.path, "dest/current/VERSION"), "utf8")).toBe("r1");
      // Once it succeeded, it is not deployed again: two more reads of latest change nothing.
      const reads = () => consul.requests.filter((q) => q.path.endsWith("/roles/web/latest")).length;
      const seen = reads();
      await consul.waitFor(() => reads() >= seen + 2, "two more reads of latest", 10_000);
      expect(count()).toBe(n);
    } finally {
      agent.kill("SIGTERM");
      await agent.exited;
    }
    const err = await new Response(agent.stderr).text();
    expect(err).toMatch(/follow: release r1 failed; retrying in \d+\.\ds unless a newer release comes first/);
    expect(err).toContain("follow: retrying release r1");
  });
});
