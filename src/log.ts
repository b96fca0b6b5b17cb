/**
 * The deploy log: timestamped lines on stderr, with the same text kept in memory for the
 * `success`/`failure` commands' stdin. Credentials are scrubbed before a line is written.
 *
 * `--log-format json` changes only what is written: one JSON object per line (`time`, `level`,
 * `msg`, then whichever of `phase`, `node`, `role`, `release_id`, `event_id` are known), for
 * journald, Loki or CloudWatch. What is kept (`text()`: the hooks' stdin, the node report's
 * `log_tail`) is always the text form, and the text form is what stretcher printed.
 */

export const LOG_FORMATS = ["text", "json"] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

/** What a JSON line says about where it comes from, when known. Text lines never show them. */
export interface LogFields {
  phase?: string;
  node?: string;
  role?: string;
  release_id?: string;
  event_id?: string;
}

export interface Logger {
  info(msg: string): void;
  /** A failure (`level: "error"` in JSON); the same text line as `info`. */
  error(msg: string): void;
  /** Set (or, with undefined, clear) fields for the lines that follow. */
  set(fields: LogFields): void;
  /** Everything logged so far, newline-terminated lines. */
  text(): string;
}

export interface LoggerOptions {
  /** Where lines go; stderr by default. */
  write?: (line: string) => void;
  /** Clock, for tests. */
  now?: () => Date;
  /** Suppress output (the text is still kept). */
  quiet?: boolean;
  /** What is written (default "text"); what is kept is always text. */
  format?: LogFormat;
}

const FIELD_ORDER = ["phase", "node", "role", "release_id", "event_id"] as const satisfies readonly (keyof LogFields)[];

export function createLogger(opts: LoggerOptions = {}): Logger {
  const write = opts.write ?? ((line: string) => process.stderr.write(line));
  const now = opts.now ?? (() => new Date());
  const json = opts.format === "json";
  const kept: string[] = [];
  const fields: LogFields = {};
  const log = (level: "info" | "error", msg: string) => {
    for (const part of redact(msg).split(/\r?\n/)) {
      const time = now().toISOString();
      const line = `${time} ${part}\n`;
      kept.push(line);
      if (opts.quiet) continue;
      if (!json) {
        write(line);
        continue;
      }
      const record: Record<string, string> = { time, level, msg: part };
      for (const k of FIELD_ORDER) if (fields[k] !== undefined && fields[k] !== "") record[k] = redact(fields[k]!);
      write(`${JSON.stringify(record)}\n`);
    }
  };
  return {
    info: (msg) => log("info", msg),
    error: (msg) => log("error", msg),
    set(more) {
      for (const k of FIELD_ORDER) if (k in more) fields[k] = more[k];
    },
    text: () => kept.join(""),
  };
}

/** A logger that keeps nothing and prints nothing. */
export const silentLogger: Logger = { info() {}, error() {}, set() {}, text: () => "" };

/**
 * Query parameters that carry a credential: AWS and GCS signed URLs (SigV4 and V2, `X-Goog-*`),
 * Azure SAS (`sig`), OAuth and API tokens. Matched case-insensitively, after `?`, `&` or `;`; the value
 * ends before `&`, `;`, `#`, white space or quotes, and a trailing `:`, `,`, `.` or `)` is left to the
 * sentence around it (`fetch URL: 403`).
 */
const SECRET_PARAMS = [
  "X-Amz-Signature",
  "X-Amz-Credential",
  "X-Amz-Security-Token",
  "Signature",
  "AWSAccessKeyId",
  "X-Goog-Signature",
  "X-Goog-Credential",
  "X-Goog-Security-Token",
  "GoogleAccessId",
  "sig",
  "signature",
  "token",
  "access_token",
  "id_token",
  "refresh_token",
  "auth",
  "authorization",
  "api_key",
  "apikey",
  "api-key",
  "key",
  "client_secret",
  "password",
  "passwd",
  "pass",
  "secret",
];
/**
 * Built at the first text that could hold a query credential (one with `=`), not at start-up: every
 * run loads this module, `--version` included, and compiling this case-insensitive alternation
 * costs more than the rest of `--version` (see the README's benchmark section).
 */
let secretQuery: RegExp | undefined;
const secretQueryPattern = () =>
  new RegExp(
    `([?&;](?:${SECRET_PARAMS.map((p) => p.replace(/[-]/g, "\\-")).join("|")})=)[^&;#\\s"'<>]*[^&;#\\s"'<>:,.)]`,
    "gi",
  );
/**
 * A URL's userinfo: everything between `scheme://` and the authority's last `@` (a password may hold
 * `@` or `:`). `user:pass` keeps the user; a token-only `user@` (GitHub, GitLab tokens) is hidden whole.
 */
const USERINFO = /\b([a-z][a-z0-9+.-]*:\/\/)([^/?#\s@]*(?:@[^/?#\s@]*)*)@/gi;

/**
 * Remove credentials from text that may hold URLs: passwords and tokens in userinfo, and signed-URL
 * query parameters. Every sink of the agent (its log and the log tail, the node report, the failure
 * commands' environment, the state file) passes text through this one function.
 */
export function redact(s: string): string {
  // Neither pattern can match without its `@` or `=`: most log lines have neither.
  if (s.includes("@"))
    s = s.replace(USERINFO, (_all, scheme: string, info: string) => {
      const colon = info.indexOf(":");
      return colon > 0 ? `${scheme}${info.slice(0, colon)}:***@` : `${scheme}***@`;
    });
  if (s.includes("=")) s = s.replace((secretQuery ??= secretQueryPattern()), "$1***");
  return s;
}
