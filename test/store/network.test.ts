/** How the stores word a request that got no HTTP answer: one line, the code once, timeouts as such. */
import { describe, expect, test } from "bun:test";
import { isAbort, networkMessage } from "../../src/store/network.ts";

const withCode = (message: string, code: string) => Object.assign(new Error(message), { code });

describe("networkMessage", () => {
  const rows: [string, unknown, string][] = [
    [
      "Bun's fetch: the code is not in the message",
      withCode("Unable to connect. Is the computer able to access the url?", "ConnectionRefused"),
      "ConnectionRefused: Unable to connect. Is the computer able to access the url?",
    ],
    [
      "node:net style: the message names its code already",
      withCode("connect ECONNREFUSED 127.0.0.1:9", "ECONNREFUSED"),
      "connect ECONNREFUSED 127.0.0.1:9",
    ],
    ["no code", new Error("socket hang up"), "socket hang up"],
    ["an abort", new DOMException("The operation was aborted.", "AbortError"), "timed out"],
    ["a timeout signal", new DOMException("The operation timed out.", "TimeoutError"), "timed out"],
    ["not an Error", "weird", "weird"],
  ];
  for (const [name, err, text] of rows) test(name, () => expect(networkMessage(err)).toBe(text));
});

test("isAbort: AbortError and TimeoutError only", async () => {
  const aborted = await fetch("http://127.0.0.1:9/", { signal: AbortSignal.abort() }).catch((e: unknown) => e);
  expect(isAbort(aborted)).toBe(true);
  expect(isAbort(new Error("x"))).toBe(false);
});
