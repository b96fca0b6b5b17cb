/**
 * Two real Serf agents on loopback with stretcher's handler line pointing at the compiled binary:
 * `serf event deploy <url>` deploys on both.
 */
import { expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { appRelease, BINARY, listTree, tempDir, waitFor } from "../support/helpers.ts";
import { startSerfCluster } from "../support/serf.ts";

test("serf event deploy <url> deploys on both agents", { timeout: 60_000 }, async () => {
  await using d = tempDir();
  // One manifest for the fleet; each node deploys into its own dest through the env template.
  const rel = appRelease(
    d.path,
    { "index.html": "served by serf", "lib/x.js": "x" },
    (a) => `src: file://${a.path}
checksum: ${a.sha256}
dest: ${d.path}/{{ env "SERF_SELF_NAME" "unknown" }}/app
commands:
  pre: ["mkdir -p ${d.path}/$SERF_SELF_NAME"]
  success: ["cat > ${d.path}/$SERF_SELF_NAME.log", "echo $SERF_SELF_NAME $SERF_USER_EVENT $SERF_USER_LTIME >> ${d.path}/done.log"]
`,
  );
  await using cluster = await startSerfCluster(d.path, [
    // Two "hosts" on one machine: each keeps its own agent state.
    {
      name: "web1",
      handler: `user:deploy=${BINARY} agent`,
      tags: { role: "web" },
      env: { PULLDEPLOY_STATE_DIR: join(d.path, "state-web1") },
    },
    {
      name: "web2",
      handler: `user:deploy=${BINARY} agent`,
      tags: { role: "web" },
      env: { PULLDEPLOY_STATE_DIR: join(d.path, "state-web2") },
    },
  ]);
  cluster.event("deploy", rel.manifestUrl);
  const done = join(d.path, "done.log");
  await waitFor(
    () => fs.existsSync(done) && fs.readFileSync(done, "utf8").trim().split("\n").length === 2,
    "both agents to deploy",
    20_000,
  );
  expect(fs.readFileSync(done, "utf8").trim().split("\n").sort()).toEqual(["web1 deploy 1", "web2 deploy 1"]);
  for (const node of ["web1", "web2"]) {
    expect(listTree(join(d.path, node, "app"))).toEqual(["index.html", "lib/", "lib/x.js"]);
    expect(fs.readFileSync(join(d.path, node, "app/index.html"), "utf8")).toBe("served by serf");
    // The agent logged the serf event it was woken by (the success command got the log on stdin).
    expect(fs.readFileSync(join(d.path, `${node}.log`), "utf8")).toContain(
      `serf user event deploy (LTime 1): ${rel.manifestUrl}`,
    );
  }
});
