import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { parseTrigger, TriggerError } from "../../src/agent/trigger.ts";
import { FIXTURES } from "../support/helpers.ts";

const consul = (name: string) => fs.readFileSync(join(FIXTURES, "consul-1.10", name), "utf8");
const serfEnv = (name: string): Record<string, string> =>
  Object.fromEntries(
    fs
      .readFileSync(join(FIXTURES, "serf", name), "utf8")
      .split("\n")
      .filter((l) => /^[A-Z_]+=/.test(l))
      .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
  );

describe("consul watch input (captured from Consul 1.10)", () => {
  test("watch-1: [] is 'no events'", () => {
    expect(parseTrigger(consul("watch-1-startup-no-events.stdin.json"), { CONSUL_INDEX: "1" })).toEqual({
      kind: "consul-empty",
    });
  });
  test("watch-2: one CLI event", () => {
    expect(
      parseTrigger(consul("watch-2-after-cli-event.stdin.json"), { CONSUL_INDEX: "15811143543160204488" }),
    ).toEqual({
      kind: "consul",
      url: "s3://bucket/app.yml",
      eventId: "4c4dfaad-2a88-5a22-9721-8de5244e36ea",
      ltime: 2,
    });
  });
  test("watch-3: HTTP-fired event", () => {
    expect(parseTrigger(consul("watch-3-after-http-event.stdin.json"), { CONSUL_INDEX: "1" })).toMatchObject({
      url: "http://x/app2.yml",
      ltime: 3,
    });
  });
  test("watch-5: the last of the buffered events", () => {
    expect(() =>
      parseTrigger(consul("watch-5-restart-with-existing-events.stdin.json"), { CONSUL_INDEX: "1" }),
    ).toThrow('consul event f4e50f41-d645-b52c-d385-1db2de63a736: "filtered-to-dev" is not a URL');
  });
  test("two events → the last one", () => {
    const two = JSON.stringify([
      { ID: "a", Payload: Buffer.from("http://x/old.yml").toString("base64"), LTime: 1 },
      { ID: "b", Payload: Buffer.from("http://x/new.yml").toString("base64"), LTime: 2 },
    ]);
    expect(parseTrigger(two, { CONSUL_INDEX: "9" })).toMatchObject({ eventId: "b", url: "http://x/new.yml" });
  });
  test("a leading [ selects the consul reader even without CONSUL_INDEX", () => {
    expect(parseTrigger("  []\n", {})).toEqual({ kind: "consul-empty" });
  });
  test.each([
    ["empty stdin", "", "stdin is empty"],
    ["junk JSON", "[{oops", "stdin is not JSON"],
    ["an object, not an array", '{"ID":"x"}', "expected a JSON array"],
    ["null payload", '[{"ID":"e1","Payload":null}]', "consul event e1: payload is empty"],
    ["null element", "[null]", "not an event object"],
  ])("%s", (_n, input, msg) => {
    expect(() => parseTrigger(input, { CONSUL_INDEX: "1" })).toThrow(msg);
  });
});

describe("serf user event input (captured from serf 0.8)", () => {
  test("payload and newline, env from the capture", () => {
    const env = serfEnv("user-deploy.node-b.env.txt");
    expect(parseTrigger(fs.readFileSync(join(FIXTURES, "serf/user-deploy.stdin.txt"), "utf8"), env)).toEqual({
      kind: "serf",
      url: "http://x/app.yml",
      event: "deploy",
      ltime: "1",
    });
  });
  test("a member event is refused with a hint", () => {
    expect(() => parseTrigger("a\t127.0.0.1\n", serfEnv("member-join.node-b.env.txt"))).toThrow(
      'not a user event (use -event-handler "user:deploy=pulldeploy agent")',
    );
  });
});

describe("plain line", () => {
  test.each([
    ["s3://bucket/app.yml\n", "s3://bucket/app.yml"],
    ["s3://bucket/app.yml", "s3://bucket/app.yml"],
    ["s3://bucket/app.yml\r\n", "s3://bucket/app.yml"],
    ["  https://x/app.yml  \n", "https://x/app.yml"],
    ["\n\nfile:///srv/m.yml\nignored\n", "file:///srv/m.yml"],
  ])("%j", (input, url) => {
    expect(parseTrigger(input, {})).toEqual({ kind: "plain", url });
  });
  test("a bare path needs a scheme, with a hint", () => {
    expect(() => parseTrigger("/srv/app.yml\n", {})).toThrow(
      '"/srv/app.yml" is not a URL: a scheme is required (s3://, gs://, http://, https://, file://) (did you ' +
        "mean file:///srv/app.yml?)",
    );
  });
  test("empty", () => {
    expect(() => parseTrigger("\n", {})).toThrow(TriggerError);
  });
});

describe("hostile trigger payloads", () => {
  const event = (url: string) =>
    JSON.stringify([{ ID: "e1", Name: "deploy", Payload: Buffer.from(url).toString("base64"), LTime: 3 }]);
  test.each([
    [
      "s3://b/app.yml\u0000.evil",
      'consul event e1: manifest URL contains control characters: "s3://b/app.yml\\u0000.evil"',
    ],
    [
      "s3://b/\u001b[2Japp.yml",
      'consul event e1: manifest URL contains control characters: "s3://b/\\u001b[2Japp.yml"',
    ],
    ["s3://b/app\u007f.yml", 'consul event e1: manifest URL contains control characters: "s3://b/app\\u007f.yml"'],
    ["s3://b/app\u009b.yml", 'consul event e1: manifest URL contains control characters: "s3://b/app\\u009b.yml"'],
  ])("a payload with control characters is refused in one line: %j", (url, msg) => {
    let err: unknown;
    try {
      parseTrigger(event(url), { CONSUL_INDEX: "1" });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(TriggerError);
    expect((err as Error).message).toBe(msg);
    expect((err as Error).message).not.toMatch(/[\u0000-\u001f]/);
  });
});
