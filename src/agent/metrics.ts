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

/** The exposition text (format 0.0.4): HELP and TYPE for every family, label values escaped. */
export function renderMetrics(run: DeployMetrics, before: MetricsCarry): { text: string; carry: MetricsCarry } {
  const carry: MetricsCarry = {
    bytesFetched: before.bytesFetched + run.bytesFetched,
    success: before.success + (run.success ? 1 : 0),
    failure: before.failure + (run.success ? 0 : 1),
    release: run.release ?? before.release,
  };
  const family = (name: string, type: "gauge" | "counter", help: string, samples: string[]) => [`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, ...samples];
  const lines = [
    ...family("pulldeploy_last_deploy_timestamp_seconds", "gauge", "Unix time the last deploy on this host finished.", [
      `pulldeploy_last_deploy_timestamp_seconds ${(run.finishedAt.getTime() / 1000).toFixed(3)}`,
    ]),
    ...family("pulldeploy_last_deploy_success", "gauge", "1 if the last deploy on this host succeeded, 0 if it failed.", [`pulldeploy_last_deploy_success ${run.success ? 1 : 0}`]),
    ...family("pulldeploy_last_deploy_duration_seconds", "gauge", "How long the last deploy on this host took.", [
      `pulldeploy_last_deploy_duration_seconds ${(run.durationMs / 1000).toFixed(3)}`,
    ]),
    ...family("pulldeploy_bytes_fetched_total", "counter", "Archive bytes downloaded by deploys on this host.", [`pulldeploy_bytes_fetched_total ${carry.bytesFetched}`]),
    ...family("pulldeploy_deploys_total", "counter", "Deploys on this host, by result.", [
      `pulldeploy_deploys_total{result="success"} ${carry.success}`,
      `pulldeploy_deploys_total{result="failure"} ${carry.failure}`,
    ]),
    ...(carry.release
      ? family(RELEASE_INFO, "gauge", "The release live on this host (from its last successful deploy); always 1.", [`${RELEASE_INFO}${labels(carry.release)} 1`])
      : []),
  ];
  return { text: `${lines.join("\n")}\n`, carry };
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

/** One sample line of the text format (`name{a="b",…} value`), or undefined for comments, blanks and garbage. */
export function parseSample(line: string): { name: string; labels: Record<string, string>; value: number } | undefined {
  const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?[ \t]+(\S+)(?:[ \t]+-?\d+)?$/.exec(line);
  if (!m) return undefined;
  const labels: Record<string, string> = {};
  const body = m[2] ?? "";
  const pair = /\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"\s*(,|$)/y;
  let at = 0;
  while (at < body.length) {
    pair.lastIndex = at;
    const p = pair.exec(body);
    if (!p) return undefined;
    if (p[1]! in labels) return undefined;
    labels[p[1]!] = p[2]!.replace(/\\(["\\n])/g, (_all, c: string) => (c === "n" ? "\n" : c));
    at = pair.lastIndex;
    if (p[3] === "" && at < body.length) return undefined;
  }
  const value = /^(?:[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)|[+-]?Inf|NaN)$/.test(m[3]!) ? Number(m[3]!.replace(/^([+-]?)Inf$/, "$1Infinity")) : NaN;
  if (Number.isNaN(value) && m[3] !== "NaN") return undefined;
  return { name: m[1]!, labels, value };
}

function labels(l: Record<string, string>): string {
  const parts = Object.entries(l)
    .filter(([k]) => /^[a-zA-Z_][a-zA-Z0-9_]*$/.test(k) && !k.startsWith("__"))
    .map(([k, v]) => `${k}="${v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")}"`);
  return parts.length ? `{${parts.join(",")}}` : "";
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
  const fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o644);
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
