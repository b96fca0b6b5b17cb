/** The dashboard's Host check (DNS rebinding) and what counts as loopback, as tables. */
import { expect, test } from "bun:test";
import { allowedHost, isLoopback } from "../../src/fleet/dashboard/server.ts";

const ALLOWED = new Set(["localhost", "127.0.0.1", "deploys.corp"]);

test.each([
  ["127.0.0.1:8080", true],
  ["10.0.0.5:8080", true],
  ["[::1]:8080", true],
  ["[fe80::1]", true],
  ["localhost:8080", true],
  ["LOCALHOST", true],
  ["localhost.:8080", true],
  ["deploys.corp:443", true],
  ["evil.example", false],
  ["evil.example:8080", false],
  ["localhost.evil.example:8080", false],
  ["127.0.0.1.nip.io:8080", false],
  ["deploys.corp.evil.example", false],
  ["", false],
  [null, false],
  ["a b", false],
  ["127.0.0.1:8080:80", false],
  ["[::1]evil", false],
])("Host %j allowed: %p", (host, ok) => expect(allowedHost(host, ALLOWED)).toBe(ok));

test.each([
  ["127.0.0.1", true],
  ["127.1.2.3", true],
  ["::1", true],
  ["localhost", true],
  ["0.0.0.0", false],
  ["::", false],
  ["10.0.0.5", false],
  ["dashboard.corp", false],
])("listen %j is loopback: %p", (h, ok) => expect(isLoopback(h)).toBe(ok));
