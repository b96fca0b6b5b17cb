/**
 * `--metrics-file PATH`: after every deploy (not a skipped run), a Prometheus text file for
 * node_exporter's textfile collector (name it `*.prom` in the collector's directory).
 *
 * Each agent run is a new process, so the counters (`pulldeploy_bytes_fetched_total`,
 * `pulldeploy_deploys_total`) and the live release's info carry on from the previous file: it is read
 * back, and a missing or unreadable one starts them at zero (Prometheus reads that as a counter reset).
 * The file is replaced atomically (a temp file in the same directory, then rename(2)), mode 0644, so
 * the collector never reads half a file; the temp file is created O_EXCL|O_NOFOLLOW and the rename
 * replaces a symlink at PATH rather than following it.
 */
import * as fs from "node:fs";
import { basename, dirname, join } from "node:path";
import { exposition, family, parseSample } from "../prometheus.ts";

export interface DeployMetrics {
  /** When the deploy finished. */
  finishedAt: Date;
  success: boolean;
  durationMs: number;
  bytesFetched: number;
  /** The release now live (after a success); undefined keeps the previous file's. */
  release?: Record<string, string>;
}

/** What carries over from one run to the next. */
export interface MetricsCarry {
  bytesFetched: number;
  success: number;
  failure: number;
  release?: Record<string, string>;
}

const RELEASE_INFO = "pulldeploy_release_info";

/** The exposition text, and what the next run carries over. */
export function renderMetrics(run: DeployMetrics, before: MetricsCarry): { text: string; carry: MetricsCarry } {
  const carry: MetricsCarry = {
    bytesFetched: before.bytesFetched + run.bytesFetched,
    success: before.success + (run.success ? 1 : 0),
    failure: before.failure + (run.success ? 0 : 1),
    release: run.release ?? before.release,
  };
  const text = exposition([
    family("pulldeploy_last_deploy_timestamp_seconds", "gauge", "Unix time the last deploy on this host finished.", [
      { value: run.finishedAt.getTime() / 1000 },
    ]),
    family("pulldeploy_last_deploy_success", "gauge", "1 if the last deploy on this host succeeded, 0 if it failed.", [
      { value: run.success ? 1 : 0 },
    ]),
    family("pulldeploy_last_deploy_duration_seconds", "gauge", "How long the last deploy on this host took.", [
      { value: run.durationMs / 1000 },
    ]),
    family("pulldeploy_bytes_fetched_total", "counter", "Archive bytes downloaded by deploys on this host.", [
      { value: carry.bytesFetched },
    ]),
    family("pulldeploy_deploys_total", "counter", "Deploys on this host, by result.", [
      { labels: { result: "success" }, value: carry.success },
      { labels: { result: "failure" }, value: carry.failure },
    ]),
    family(
      RELEASE_INFO,
      "gauge",
      "The release live on this host (from its last successful deploy); always 1.",
      carry.release ? [{ labels: carry.release, value: 1 }] : [],
    ),
  ]);
  return { text, carry };
}

/** The counters and the live release of a previous file's text; zeros for anything missing or malformed. */
export function parseCarry(text: string): MetricsCarry {
  const carry: MetricsCarry = { bytesFetched: 0, success: 0, failure: 0 };
  for (const line of text.split("\n")) {
    const sample = parseSample(line);
    if (!sample) continue;
    const whole = Number.isSafeInteger(sample.value) && sample.value >= 0 ? sample.value : 0;
    if (sample.name === "pulldeploy_bytes_fetched_total") carry.bytesFetched = whole;
    else if (sample.name === "pulldeploy_deploys_total" && sample.labels.result === "success") carry.success = whole;
    else if (sample.name === "pulldeploy_deploys_total" && sample.labels.result === "failure") carry.failure = whole;
    else if (sample.name === RELEASE_INFO) carry.release = sample.labels;
  }
  return carry;
}

/**
 * Read the previous file at `path`, add this run, replace the file atomically. Throws on I/O errors
 * (the caller logs them: metrics never fail a deploy).
 */
export function writeMetricsFile(path: string, run: DeployMetrics): void {
  let before: MetricsCarry = { bytesFetched: 0, success: 0, failure: 0 };
  try {
    const st = fs.lstatSync(path);
    // Only a regular file is read back (at most 1 MiB): not a FIFO or device someone put there.
    if (st.isFile() && st.size <= 1 << 20) before = parseCarry(fs.readFileSync(path, "utf8"));
  } catch {
    // none yet
  }
  const { text } = renderMetrics(run, before);
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.tmp`);
  fs.rmSync(tmp, { force: true }); // left by a crashed run that had this pid
  const fd = fs.openSync(
    tmp,
    fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW,
    0o644,
  );
  try {
    try {
      fs.fchmodSync(fd, 0o644); // the umask may have taken bits away; the collector's user must read it
      fs.writeSync(fd, text);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, path);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
}
