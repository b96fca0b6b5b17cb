/**
 * What woke the agent: a `consul watch` event array, a Serf user event, or a plain line.
 * Pure: takes stdin's text and the environment, returns a typed trigger or throws a one-line error.
 */
import type { Env } from "../env.ts";
import { PulldeployError } from "../errors.ts";

export type Trigger =
  | { kind: "consul"; url: string; eventId: string; ltime: number }
  | { kind: "consul-empty" }
  | { kind: "serf"; url: string; event: string; ltime: string }
  | { kind: "plain"; url: string }
  | { kind: "flag"; url: string };

export class TriggerError extends PulldeployError {
  override name = "TriggerError";
  constructor(message: string) {
    super(message, "trigger");
  }
}

/** Which reader applies, in order: the first whose test matches. */
const READERS: {
  kind: string;
  test: (input: string, env: Env) => boolean;
  read: (input: string, env: Env) => Trigger;
}[] = [
  {
    kind: "consul",
    test: (input, env) => env.CONSUL_INDEX !== undefined || input.trimStart().startsWith("["),
    read: readConsul,
  },
  { kind: "serf", test: (_input, env) => env.SERF_EVENT !== undefined, read: readSerf },
  { kind: "plain", test: () => true, read: readPlain },
];

export function parseTrigger(input: string, env: Env): Trigger {
  const reader = READERS.find((r) => r.test(input, env))!;
  return reader.read(input, env);
}

function readConsul(input: string): Trigger {
  if (input.trim() === "")
    throw new TriggerError("consul event: stdin is empty (expected the JSON array consul watch sends)");
  let data: unknown;
  try {
    data = JSON.parse(input);
  } catch (err) {
    throw new TriggerError(`consul event: stdin is not JSON: ${(err as Error).message}`);
  }
  if (!Array.isArray(data)) throw new TriggerError("consul event: expected a JSON array of events");
  if (data.length === 0) return { kind: "consul-empty" };
  const ev = data[data.length - 1] as Record<string, unknown> | null;
  if (ev === null || typeof ev !== "object")
    throw new TriggerError("consul event: the last element is not an event object");
  const id = typeof ev.ID === "string" ? ev.ID : "";
  const ltime = typeof ev.LTime === "number" ? ev.LTime : 0;
  if (ev.Payload === null || ev.Payload === undefined || ev.Payload === "") {
    throw new TriggerError(`consul event ${id}: payload is empty (fire the event with the manifest URL as payload)`);
  }
  if (typeof ev.Payload !== "string") throw new TriggerError(`consul event ${id}: Payload is not a base64 string`);
  const url = Buffer.from(ev.Payload, "base64").toString("utf8");
  return { kind: "consul", url: checkUrl(url, `consul event ${id}`), eventId: id, ltime };
}

function readSerf(input: string, env: Env): Trigger {
  if (env.SERF_EVENT !== "user") {
    throw new TriggerError(
      `serf event: ${env.SERF_EVENT} is not a user event (use -event-handler "user:deploy=pulldeploy agent")`,
    );
  }
  const event = env.SERF_USER_EVENT ?? "";
  return {
    kind: "serf",
    url: checkUrl(firstLine(input), `serf event ${event}`),
    event,
    ltime: env.SERF_USER_LTIME ?? "",
  };
}

function readPlain(input: string): Trigger {
  return { kind: "plain", url: checkUrl(firstLine(input), "stdin") };
}

function firstLine(input: string): string {
  const trimmed = input.trimStart();
  const nl = trimmed.indexOf("\n");
  return (nl === -1 ? trimmed : trimmed.slice(0, nl)).trim();
}

/** A manifest URL must carry a scheme; a bare path is refused with a hint. */
export function checkUrl(url: string, where: string): string {
  const u = url.trim();
  if (u === "") throw new TriggerError(`${where}: no manifest URL (expected e.g. s3://bucket/app.yml)`);
  if (/\s/.test(u)) throw new TriggerError(`${where}: manifest URL contains white space: "${u}"`);
  // NUL, escape sequences, DEL: nothing a URL holds, and they would reach the log, KV and hooks as they are.
  if (/[\u0000-\u001f\u007f-\u009f]/.test(u))
    throw new TriggerError(`${where}: manifest URL contains control characters: ${quoted(u)}`);
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(u)) {
    const hint = u.startsWith("/") ? ` (did you mean file://${u}?)` : "";
    throw new TriggerError(
      `${where}: "${u}" is not a URL: a scheme is required (s3://, gs://, http://, https://, file://)${hint}`,
    );
  }
  return u;
}

/** `s` in double quotes with every control character (C0, DEL, C1) escaped as `\uXXXX`: one safe line. */
function quoted(s: string): string {
  return JSON.stringify(s).replace(/[\u007f-\u009f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}
