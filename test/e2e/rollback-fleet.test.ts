/**
 * Fleet rollback through the compiled binary: `rollback --role` makes an earlier release the role's
 * latest in Consul KV and fires the event; an agent that still holds it switches without a download.
 */
import { expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { run, tempDir, writeTree } from "../support/helpers.ts";
import { startConsulStandin } from "../support/consul-standin.ts";

test("rollback --role: latest goes back, the event fires, the agent switches with no download", async () => {
  await using d = tempDir();
  await using consul = await startConsulStandin({ nodeName: "web-1" });
  const env = { ...consul.env, PULLDEPLOY_STATE_DIR: join(d.path, "state") };
  const dest = join(d.path, "srv/app");
  const publish = async (version: string) => {
    const app = join(d.path, `build-${version}`);
    writeTree(app, { VERSION: version, [`v${version}.txt`]: version });
    const r = await run(
      [
        "publish",
        app,
        "--to",
        `file://${d.path}/store`,
        "--role",
        "web",
        "--dest",
        dest,
        "--sync-strategy",
        "release",
        "--no-event",
        "--message",
        `v${version}`,
      ],
      { env },
    );
    expect(r.code).toBe(0);
    return r.stdout.trim();
  };
  const v1 = await publish("1");
  expect((await run(["agent", "--role", "web", "--from-kv"], { env })).code).toBe(0);
  await Bun.sleep(1100); // release ids carry the second they were made: keep v2's later
  const v2 = await publish("2");
  expect((await run(["agent", "--role", "web", "--from-kv"], { env })).code).toBe(0);
  expect(fs.readFileSync(join(dest, "current/VERSION"), "utf8")).toBe("2");

  const listed = await run(["rollback", "--role", "web", "--list"], { env });
  expect(
    listed.stdout
      .split("\n")
      .filter(Boolean)
      .map((l) => l.slice(0, 2)),
  ).toEqual(["  ", "* "]);

  // v1's archive is gone from the store: only a switch without download can succeed.
  for (const f of fs.readdirSync(join(d.path, "store/web")))
    if (f.endsWith(".tar.gz") && v1.includes(f.replace(".tar.gz", ""))) fs.rmSync(join(d.path, "store/web", f));
  const back = await run(["rollback", "--role", "web"], { env });
  expect(back.code).toBe(0);
  const latest = JSON.parse(new TextDecoder().decode(consul.kvEntry("pulldeploy/roles/web/latest")!.value!));
  expect(latest.manifest_url).toBe(v1);
  const fired = consul.fired.at(-1)!;
  expect(fired.name).toBe("deploy");
  expect(new TextDecoder().decode(fired.payload!)).toBe(v1);

  // The agent gets the event as consul watch hands it over.
  const payload = Buffer.from(v1).toString("base64");
  const agent = await run(["agent", "--role", "web"], {
    stdin: `[{"ID":"${fired.id}","Name":"deploy","Payload":"${payload}","LTime":3}]\n`,
    env: { ...env, CONSUL_INDEX: "9" },
  });
  expect(agent.code).toBe(0);
  expect(agent.stderr).toContain("is already on disk: switching without a download");
  expect(fs.readFileSync(join(dest, "current/VERSION"), "utf8")).toBe("1");
  expect(v2).not.toBe(v1);

  const nowhere = await run(["rollback", "--role", "web", "--to", "nope"], { env });
  expect(nowhere.code).toBe(2);
  expect(nowhere.stderr).toContain('--to: no release "nope" recorded for role web');
});
