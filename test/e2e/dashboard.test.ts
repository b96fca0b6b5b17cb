/**
 * `pulldeploy dashboard` through the compiled binary against the Consul stand-in, opened in real
 * headless Chromium (Debian's package, driven by playwright-core; no browser download). Asserts what a
 * person sees, then changes reports in KV and sees the page follow without a reload. Keeps one
 * screenshot in test-artifacts/dashboard.png.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { chromium, type Browser, type Page } from "playwright-core";
import { kvKeys, releaseId, renderReleaseRecord, type ReleaseRecord } from "../../src/records/release.ts";
import type { NodeReport } from "../../src/records/report.ts";
import { startConsulStandin, type ConsulStandin } from "../support/consul-standin.ts";
import { BINARY, ROOT, run, waitFor } from "../support/helpers.ts";

const CHROMIUM = "/usr/bin/chromium";
const ago = (ms: number) => new Date(Date.now() - ms).toISOString();
// Release ids carry their creation time: make them relative to now, as the page shows ages.
const NEW = releaseId(new Date(Date.now() - 6 * 60_000), "0123456789ab");
const OLD = releaseId(new Date(Date.now() - 50 * 3_600_000), "aaaaaaaaaaaa");
const API = releaseId(new Date(Date.now() - 3 * 3_600_000), "bbbbbbbbbbbb");
const ERROR = "post: command failed with exit code 1: ./restart.sh";
const stamp = (agoMs: number) => new Date(Date.now() - agoMs).toISOString().replace(/\.\d{3}Z$/, "Z");
const FAILED_LOG = [
  `${stamp(184_000)} fetch: 2.1 MB in 0.4s`,
  `${stamp(183_500)} checksum: sha256 ok`,
  `${stamp(183_000)} sync: 214 files, 3 changed`,
  `${stamp(182_500)} post: ./restart.sh`,
  `${stamp(180_200)} post: restart.sh: unicorn did not come up on :8080 (connection refused)`,
  `${stamp(180_100)} failure: ${ERROR}`,
].join("\n");

function record(role: string, id: string, createdAgoMs: number, message: string): string {
  const r: ReleaseRecord = {
    id,
    role,
    manifest_url: `s3://releases/${role}/${id}.yml`,
    archive_url: `s3://releases/${role}/${id}.tar.gz`,
    algorithm: "sha256",
    checksum: id.slice(-12).padEnd(64, "0"),
    size: 2_140_000,
    files: 214,
    created_at: ago(createdAgoMs),
    publisher: "ci@build-1",
    message,
  };
  return renderReleaseRecord(r);
}

function report(role: string, node: string, patch: Partial<NodeReport> = {}): string {
  const r: NodeReport = {
    node,
    role,
    status: "success",
    phase: "done",
    release_id: NEW,
    manifest_url: `s3://releases/${role}/${NEW}.yml`,
    checksum: null,
    error: null,
    rolled_back_to: null,
    event_id: null,
    started_at: ago(3.5 * 60_000 + 3200),
    finished_at: ago(3.5 * 60_000),
    duration_ms: 3200,
    agent_version: "0.1.0",
    log_tail: `${stamp(3.5 * 60_000)} success: deployed\n`,
    ...patch,
  };
  return JSON.stringify(r);
}

let consul: ConsulStandin;
let dashboard: ReturnType<typeof Bun.spawn> | undefined;
let stderr = "";
let url = "";
let browser: Browser;
let page: Page;

const put = (role: string, node: string, patch: Partial<NodeReport> = {}) =>
  consul.kvPut(kvKeys.node("pulldeploy", role, node), report(role, node, patch));

beforeAll(async () => {
  if (!fs.existsSync(CHROMIUM))
    throw new Error(`${CHROMIUM} is missing: run scripts/setup.sh (apt-get install chromium)`);
  consul = await startConsulStandin();
  for (const n of ["web-1", "web-2", "web-3", "web-4", "web-5", "web-10"]) consul.addNode(n, { services: ["web"] });
  consul.addNode("api-1", { services: ["api"] });
  consul.addNode("api-2", { services: ["api"] });
  consul.kvPut(kvKeys.release("pulldeploy", "web", OLD), record("web", OLD, 50 * 3_600_000, "add the search page"));
  consul.kvPut(kvKeys.release("pulldeploy", "web", NEW), record("web", NEW, 6 * 60_000, "fix the login page"));
  consul.kvPut(kvKeys.latest("pulldeploy", "web"), record("web", NEW, 6 * 60_000, "fix the login page"));
  put("web", "web-1");
  put("web", "web-2", {
    status: "failure",
    phase: "post",
    error: ERROR,
    log_tail: `${FAILED_LOG}\n`,
    finished_at: ago(3 * 60_000),
    duration_ms: 3900,
  });
  put("web", "web-3", { release_id: OLD, started_at: ago(49 * 3_600_000 + 4000), finished_at: ago(49 * 3_600_000) });
  put("web", "web-5", {
    status: "deploying",
    phase: "fetch",
    finished_at: null,
    duration_ms: null,
    started_at: ago(5000),
    log_tail: "",
  });
  put("web", "web-10");
  // web-4 never reported.
  consul.kvPut(kvKeys.latest("pulldeploy", "api"), record("api", API, 3 * 3_600_000, "bump the rate limits"));
  for (const n of ["api-1", "api-2"]) put("api", n, { release_id: API, finished_at: ago(3 * 3_600_000 - 60_000) });

  dashboard = Bun.spawn([BINARY, "dashboard", "--listen", "127.0.0.1:0"], {
    env: { PATH: process.env.PATH, ...consul.env },
    stdout: "pipe",
    stderr: "pipe",
  });
  void (async () => {
    for await (const chunk of dashboard!.stderr as ReadableStream<Uint8Array>)
      stderr += new TextDecoder().decode(chunk);
  })();
  await waitFor(
    () => /dashboard: listening on http:\/\/127\.0\.0\.1:\d+\n/.test(stderr) || dashboard!.exitCode !== null,
    "the dashboard's address",
  );
  url = /dashboard: listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(stderr)?.[1] ?? "";
  expect(url).not.toBe("");

  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
  page.setDefaultTimeout(5000);
});

afterAll(async () => {
  await browser?.close();
  dashboard?.kill("SIGTERM");
  await dashboard?.exited;
  await consul?.stop();
});

const row = (node: string) => page.locator(`section[data-role="web"] tr.node[data-node="${node}"]`);

describe("pulldeploy dashboard in Chromium", () => {
  test("shows roles, the latest release on top, each node's status, a failed node's error; its log one click away", async () => {
    const requests: string[] = [];
    page.on("request", (r) => requests.push(r.url()));
    await page.goto(url);
    const web = page.locator('section[data-role="web"]');
    await web.waitFor();
    expect(await page.locator("section.role h2").allInnerTexts()).toEqual(["api", "web"]);
    expect(await web.locator(".release-box .rid").innerText()).toBe(NEW);
    expect(await web.locator(".release-box .meta").innerText()).toMatch(
      /^published 6m ago by ci@build-1 · “fix the login page” · 2\.1 MB, 214 files$/,
    );
    expect(await web.locator(".progress-text").innerText()).toBe("2 / 6 nodes on latest");
    expect(await web.locator(".release-box .history").innerText()).toBe(`Earlier: ${OLD} (2d ago)`);

    // One row per node in natural order, each with its status as text.
    expect(await web.locator("tr.node td.name").allInnerTexts()).toEqual([
      "web-1",
      "web-2",
      "web-3",
      "web-4",
      "web-5",
      "web-10",
    ]);
    const statuses = await web.locator("tr.node .badge").allInnerTexts();
    expect(statuses.map((s) => s.trim())).toEqual([
      "success",
      "failure",
      "success",
      "never reported",
      "deploying",
      "success",
    ]);
    expect(await row("web-2").locator("td.err").innerText()).toBe(ERROR);
    expect(await row("web-3").locator("td.rel").innerText()).toBe(`${OLD}older · 2d ago`);
    expect(await row("web-1").locator("td.rel .tag").innerText()).toBe("latest");
    expect(await row("web-1").locator("td.age").innerText()).toBe("3m ago");
    expect(await row("web-4").locator("button").isDisabled()).toBe(true);
    expect(await page.locator('section[data-role="api"] .release-box .rid').innerText()).toBe(API);
    expect(await page.locator('section[data-role="api"] .pills').innerText()).toBe("2 on latest");
    expect(await web.locator(".pills .pill").allInnerTexts()).toEqual([
      "2 on latest",
      "1 deploying",
      "1 failed",
      "1 on an older release",
      "1 never reported",
    ]);

    // The log tail is one click away.
    const log = page.locator('tr.logrow[data-log-for="web-2"] pre');
    expect(await log.count()).toBe(0);
    await row("web-2").getByRole("button", { name: "Show log" }).click();
    await log.waitFor();
    expect(await log.textContent()).toBe(`${FAILED_LOG}\n`);
    expect(await page.locator('tr.logrow[data-log-for="web-2"] .errline').innerText()).toBe(ERROR);
    // The deploy's duration in the fleet view's words (format.ts, served to the page as /format.js).
    expect(await page.locator('tr.logrow[data-log-for="web-2"] .loghead').innerText()).toContain("took 3.9 s");
    expect(await row("web-2").locator("button").innerText()).toBe("Hide log");
    expect(await page.locator("#conn-text").innerText()).toBe("live");

    fs.mkdirSync(join(ROOT, "test-artifacts"), { recursive: true });
    await page.screenshot({ path: join(ROOT, "test-artifacts/dashboard.png"), fullPage: true });

    // Nothing but this server was asked for anything.
    expect(requests.filter((u) => !u.startsWith(url))).toEqual([]);
  }, 20_000);

  test("a report changed in KV shows up without a reload; an open log stays open", async () => {
    const logRow = page.locator('tr.logrow[data-log-for="web-2"]');
    if ((await logRow.count()) === 0) await row("web-2").getByRole("button", { name: "Show log" }).click();
    await logRow.waitFor();
    await page.evaluate(() => ((globalThis as unknown as { notReloaded: boolean }).notReloaded = true));
    put("web", "web-4", {
      status: "deploying",
      phase: "sync",
      finished_at: null,
      duration_ms: null,
      started_at: ago(1000),
      log_tail: "",
    });
    await waitFor(
      async () => (await row("web-4").locator(".badge").innerText()).trim() === "deploying",
      "web-4 deploying on the page",
    );
    put("web", "web-4");
    put("web", "web-2", { log_tail: "2026-03-01T12:01:00Z success: deployed on the second try\n" });
    await waitFor(
      async () => (await row("web-2").locator(".badge").innerText()).trim() === "success",
      "web-2 success on the page",
    );
    await waitFor(
      async () => (await row("web-4").locator(".badge").innerText()).trim() === "success",
      "web-4 success on the page",
    );
    expect(await row("web-2").locator("td.err").innerText()).toBe("");
    expect(await page.locator('tr.logrow[data-log-for="web-2"] pre').textContent()).toBe(
      "2026-03-01T12:01:00Z success: deployed on the second try\n",
    );
    expect(await page.locator('section[data-role="web"] .progress-text').innerText()).toBe("4 / 6 nodes on latest");
    expect(await page.evaluate(() => (globalThis as unknown as { notReloaded?: boolean }).notReloaded)).toBe(true);

    // A new role appears as soon as its first key is written.
    consul.kvPut(kvKeys.latest("pulldeploy", "batch"), record("batch", NEW, 1000, "first release"));
    await page.locator('section[data-role="batch"]').waitFor();
    expect(await page.locator("section.role h2").allInnerTexts()).toEqual(["api", "batch", "web"]);
  }, 20_000);

  test("/api/state is the same state as JSON; ?index= waits for the next change", async () => {
    const first = (await (await fetch(`${url}/api/state`)).json()) as {
      index: number;
      consul: { ok: boolean };
      roles: { role: string; latest: { id: string } | null; rows: { node: string; status: string }[] }[];
    };
    expect(first.consul.ok).toBe(true);
    expect(first.roles.map((r) => r.role)).toEqual(["api", "batch", "web"]);
    expect(first.roles[2]!.rows.find((r) => r.node === "web-2")?.status).toBe("success");
    const waiting = fetch(`${url}/api/state?index=${first.index}`).then((r) => r.json() as Promise<typeof first>);
    await consul.waitFor(() => consul.blocked >= 1, "the dashboard's blocking query");
    put("web", "web-3");
    const next = await waiting;
    expect(next.index).toBeGreaterThan(first.index);
    expect(next.roles[2]!.rows.find((r) => r.node === "web-3")).toMatchObject({ status: "success" });
    expect((await fetch(`${url}/nope`)).status).toBe(404);
    expect((await fetch(`${url}/api/state`, { method: "POST" })).status).toBe(405);
  });

  test("Consul away: the last state stays under a banner; the page follows again once Consul is back", async () => {
    await consul.stop();
    const banner = page.locator("#banner");
    await banner.waitFor({ state: "visible" });
    expect(await banner.innerText()).toMatch(
      /^Consul is not answering \(consul .+\)\. Showing the last state seen; retrying\.$/,
    );
    expect(await page.locator("#conn-text").innerText()).toBe("Consul unreachable");
    expect((await row("web-2").locator(".badge").innerText()).trim()).toBe("success");
    await consul.restart();
    put("web", "web-5");
    await waitFor(
      async () => (await row("web-5").locator(".badge").innerText()).trim() === "success",
      "web-5 success after Consul came back",
    );
    expect(await banner.isHidden()).toBe(true);
    expect(await page.locator("#conn-text").innerText()).toBe("live");
    expect(stderr).toMatch(/dashboard: consul .*; showing the last state, retrying\n/);
  }, 20_000);

  test("SIGTERM stops it with exit 0; a bad --listen is a usage error", async () => {
    dashboard!.kill("SIGTERM");
    expect(await dashboard!.exited).toBe(0);
    await waitFor(() => stderr.includes("dashboard: stopped"), "the stop line");
    const bad = await run(["dashboard", "--listen", "nowhere"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--listen: expected host:port (127.0.0.1:8080, [::1]:8080, :8080), got "nowhere"');
  });
});
