/**
 * The log's two formats: the text form byte for byte as before, the JSON form's fields; what is kept is always text.
 */
import { describe, expect, test } from "bun:test";
import { takeLogFormat } from "../src/cli/argv.ts";
import { createLogger } from "../src/log.ts";

const at = new Date("2026-12-04T10:00:00.123Z");

function logged(format?: "text" | "json") {
  const out: string[] = [];
  const log = createLogger({ write: (l) => out.push(l), now: () => at, format });
  return { log, out };
}

describe("createLogger", () => {
  test("text: timestamp, a space, the message; each line of a multi-line message; fields never shown", () => {
    const { log, out } = logged();
    log.set({ phase: "fetch", node: "n1" });
    log.info("a\nb");
    log.error("deploy failed in phase fetch: x");
    expect(out.join("")).toBe(
      "2026-12-04T10:00:00.123Z a\n2026-12-04T10:00:00.123Z b\n2026-12-04T10:00:00.123Z deploy failed in phase " +
        "fetch: x\n",
    );
    expect(log.text()).toBe(out.join(""));
  });

  test("json: one object per line, time/level/msg first, known fields in a fixed order, credentials redacted; text() stays text", () => {
    const { log, out } = logged("json");
    log.info("start");
    log.set({ role: "web", node: "n1", event_id: "e-1", release_id: "r1", phase: "pre" });
    log.error('fetch https://u:pw@h/a?X-Amz-Signature=abc: "quoted"\nsecond');
    log.set({ phase: undefined });
    log.info("after");
    const lines = out.map((l) => {
      expect(l.endsWith("\n") && !l.slice(0, -1).includes("\n")).toBe(true);
      return JSON.parse(l);
    });
    expect(lines).toEqual([
      { time: at.toISOString(), level: "info", msg: "start" },
      {
        time: at.toISOString(),
        level: "error",
        msg: 'fetch https://u:***@h/a?X-Amz-Signature=***: "quoted"',
        phase: "pre",
        node: "n1",
        role: "web",
        release_id: "r1",
        event_id: "e-1",
      },
      {
        time: at.toISOString(),
        level: "error",
        msg: "second",
        phase: "pre",
        node: "n1",
        role: "web",
        release_id: "r1",
        event_id: "e-1",
      },
      {
        time: at.toISOString(),
        level: "info",
        msg: "after",
        node: "n1",
        role: "web",
        release_id: "r1",
        event_id: "e-1",
      },
    ]);
    expect(Object.keys(lines[1])).toEqual(["time", "level", "msg", "phase", "node", "role", "release_id", "event_id"]);
    expect(log.text()).toBe(
      `${at.toISOString()} start\n${at.toISOString()} fetch https://u:***@h/a?X-Amz-Signature=***: ` +
        `"quoted"\n${at.toISOString()} second\n${at.toISOString()} after\n`,
    );
  });
});

describe("json lines can't be forged", () => {
  test("a hook printing a JSON line, or a message with quotes and control characters, stays inside msg", () => {
    const { log, out } = logged("json");
    log.set({ role: 'web", "level": "debug' });
    log.info('out: {"time":"x","level":"error","msg":"forged"}\r\nnext\u0000\u001b[31m');
    const lines = out.map((l) => JSON.parse(l));
    expect(lines).toHaveLength(2);
    expect(lines[0]).toEqual({
      time: at.toISOString(),
      level: "info",
      msg: 'out: {"time":"x","level":"error","msg":"forged"}',
      role: 'web", "level": "debug',
    });
    expect(lines[1].msg).toBe("next\u0000\u001b[31m");
    expect(out[1]).toContain("\\u0000\\u001b[31m"); // escaped on the wire
  });
});

describe("takeLogFormat", () => {
  test.each([
    [["agent"], "text", ["agent"], undefined],
    [["--log-format", "json", "agent", "--role", "web"], "json", ["agent", "--role", "web"], undefined],
    [["agent", "--log-format=json"], "json", ["agent"], undefined],
    [["agent", "-log-format", "json", "--log-format", "text"], "text", ["agent"], undefined],
    [["agent", "--", "--log-format", "json"], "text", ["agent", "--", "--log-format", "json"], undefined],
    [["agent", "--log-format", "yaml"], "text", ["agent"], '--log-format: expected text or json, got "yaml"'],
    [["agent", "--log-format"], "text", ["agent"], "--log-format needs a value: text or json"],
    [["agent", "--log-formats", "json"], "text", ["agent", "--log-formats", "json"], undefined],
  ] as const)("%j", (argv, format, rest, error) => {
    expect(takeLogFormat([...argv])).toEqual({ format, rest: [...rest], error });
  });
});
