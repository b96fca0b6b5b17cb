/**
 * The exposition format: what the agent and the dashboard write, read back; the linter the tests trust must catch what
 * promtool would.
 */
import { describe, expect, test } from "bun:test";
import { parseCarry, renderMetrics } from "../src/agent/metrics.ts";
import { exposition, family, labelText, lintExposition, parseSample } from "../src/prometheus.ts";

describe("parseSample", () => {
  test.each([
    ["a 1", { name: "a", labels: {}, value: 1 }],
    ['a_total{result="success"} 12 1700000000000', { name: "a_total", labels: { result: "success" }, value: 12 }],
    ['a{x="q\\"u\\\\o\\nte",y=""} -1.5e3', { name: "a", labels: { x: 'q"u\\o\nte', y: "" }, value: -1500 }],
    ['a{x="1",} +Inf', { name: "a", labels: { x: "1" }, value: Infinity }],
    ["# HELP a b", undefined],
    ["", undefined],
    ['a{x="1" 2', undefined],
    ["a{x=1} 2", undefined],
    ['a{x="1",x="2"} 2', undefined],
    ['a{x="1"y="2"} 2', undefined],
    ["a one", undefined],
    ["1a 2", undefined],
  ])("%j", (line, want) => {
    expect(parseSample(line)).toEqual(want as never);
  });
});

describe("lintExposition", () => {
  test("what we write is clean", () => {
    expect(
      lintExposition(
        exposition([
          family("x_total", "counter", "h", [{ value: 1 }]),
          family("y", "gauge", "h", [{ labels: { a: "b" }, value: 0.5 }]),
        ]),
      ),
    ).toEqual([]);
  });
  test.each([
    ["x 1\n", "x has no TYPE"],
    ["# TYPE x gauge\nx 1\nx 2\n", "duplicate series x"],
    ["# TYPE x gauge\nx 1", "does not end with a newline"],
    ["# TYPE x counter\nx 1\n", "counter x should end in _total"],
    ['# TYPE x gauge\n# TYPE y gauge\nx 1\ny 1\nx{a="b"} 1\n', "x's samples are not together"],
    ['# TYPE x gauge\nx{a="b} 1\n', "not a sample"],
    ["# TYPE x gauge\n# TYPE x gauge\nx 1\n", "second TYPE for x"],
    ["# TYPE x weird\nx 1\n", "unknown type weird"],
  ])("%j", (text, problem) => {
    expect(lintExposition(text).join("; ")).toContain(problem);
  });
});

describe("the agent's metrics file", () => {
  const run = { finishedAt: new Date("2026-12-04T10:00:00.250Z"), success: true, durationMs: 1234, bytesFetched: 100 };
  test("label values from a manifest (quotes, backslashes, newlines) are escaped and read back intact; counters carry", () => {
    const dest = '/srv/a "b"\\c\nd';
    const first = renderMetrics(
      { ...run, release: { release_id: "r1", dest, role: "web" } },
      { bytesFetched: 0, success: 0, failure: 0 },
    );
    expect(lintExposition(first.text)).toEqual([]);
    expect(first.text).toContain(
      'pulldeploy_release_info{release_id="r1",dest="/srv/a \\"b\\"\\\\c\\nd",role="web"} 1\n',
    );
    expect(first.text).toContain("pulldeploy_last_deploy_timestamp_seconds 1796378400.25\n");
    const carry = parseCarry(first.text);
    expect(carry).toEqual({
      bytesFetched: 100,
      success: 1,
      failure: 0,
      release: { release_id: "r1", dest, role: "web" },
    });
    const second = renderMetrics({ ...run, success: false, bytesFetched: 5 }, carry);
    expect(parseCarry(second.text)).toEqual({
      bytesFetched: 105,
      success: 1,
      failure: 1,
      release: { release_id: "r1", dest, role: "web" },
    });
    expect(second.text).toContain("pulldeploy_last_deploy_success 0\n");
  });
  test("a file without a live release has no release_info family; invalid label names are dropped", () => {
    const { text } = renderMetrics({ ...run, success: false }, { bytesFetched: 0, success: 0, failure: 0 });
    expect(text).not.toContain("pulldeploy_release_info");
    expect(labelText({ ok: "1", "bad-name": "2", __reserved: "3" })).toBe('{ok="1"}');
  });
  test("negative, fractional or huge counters in a tampered file restart at 0", () => {
    expect(
      parseCarry(
        'pulldeploy_bytes_fetched_total -5\npulldeploy_deploys_total{result="success"} ' +
          '1.5\npulldeploy_deploys_total{result="failure"} 1e300\n',
      ),
    ).toEqual({ bytesFetched: 0, success: 0, failure: 0 });
  });
});
