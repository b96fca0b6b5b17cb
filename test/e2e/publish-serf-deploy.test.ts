/**
 * End to end: `pulldeploy publish --via serf` (compiled binary) → two real Serf agents whose handler is
 * `pulldeploy agent` (stretcher's handler line) → both deploy the new release into their own dest
 * (a template in --dest, filled in by each agent), run the hooks of the published manifest; then a
 * second publish replaces it everywhere.
 */
import { expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { BINARY, listTree, run, tempDir, waitFor, writeTree } from "../support/helpers.ts";
import { startSerfCluster } from "../support/serf.ts";

test("a publish via Serf reaches two agents that both deploy the new release", { timeout: 60_000 }, async () => {
  await using d = tempDir();
  const app = join(d.path, "app");
  writeTree(app, { "index.html": "v1\n", "lib/app.js": "x()\n" });
  const done = join(d.path, "done.log");
  fs.writeFileSync(
    join(d.path, "hooks.yml"),
    `commands:\n  post:\n    - echo "$SERF_SELF_NAME $(cat ${d.path}/$SERF_SELF_NAME/index.html)" >> ${done}\n`,
  );
  await using cluster = await startSerfCluster(d.path, [
    { name: "web1", handler: `user:deploy=${BINARY} agent`, env: { PULLDEPLOY_STATE_DIR: join(d.path, "state-web1") } },
    { name: "web2", handler: `user:deploy=${BINARY} agent`, env: { PULLDEPLOY_STATE_DIR: join(d.path, "state-web2") } },
  ]);
  const lines = () => (fs.existsSync(done) ? fs.readFileSync(done, "utf8").trim().split("\n").sort() : []);

  const publish = () =>
    run([
      "publish",
      app,
      "--to",
      `file://${d.path}/releases`,
      "--role",
      "web",
      "--dest",
      `${d.path}/{{ env "SERF_SELF_NAME" "unknown" }}`,
      "--manifest",
      join(d.path, "hooks.yml"),
      "--via",
      "serf",
      "--serf-rpc-addr",
      cluster.agents[0]!.rpc,
      "--no-kv",
      "--quiet",
    ]);

  const first = await publish();
  expect(first.stderr).toBe("");
  expect(first.code).toBe(0);
  await waitFor(() => lines().length === 2, "both agents to deploy v1", 20_000);
  expect(lines()).toEqual(["web1 v1", "web2 v1"]);
  for (const node of ["web1", "web2"])
    expect(listTree(join(d.path, node))).toEqual(["index.html", "lib/", "lib/app.js"]);

  // The next release replaces the first on both (a different second: a different id).
  await Bun.sleep(1000 - (Date.now() % 1000));
  fs.writeFileSync(join(app, "index.html"), "v2\n");
  fs.rmSync(join(app, "lib"), { recursive: true });
  const second = await publish();
  expect(second.code).toBe(0);
  expect(second.stdout.trim()).not.toBe(first.stdout.trim());
  await waitFor(() => lines().length === 4, "both agents to deploy v2", 20_000);
  expect(lines()).toEqual(["web1 v1", "web1 v2", "web2 v1", "web2 v2"]);
  for (const node of ["web1", "web2"]) expect(listTree(join(d.path, node))).toEqual(["index.html"]);
});
