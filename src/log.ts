/**
 * The deploy log: timestamped lines on stderr, with the same text kept in memory for the
 * `success`/`failure` commands' stdin. Credentials are scrubbed before a line is written.
 */

export interface Logger {
  info(msg: string): void;
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
}

export function createLogger(opts: LoggerOptions = {}): Logger {
  const write = opts.write ?? ((line: string) => process.stderr.write(line));
  const now = opts.now ?? (() => new Date());
  const kept: string[] = [];
  return {
    info(msg: string) {
      for (const part of redact(msg).split(/\r?\n/)) {
        const line = `${now().toISOString()} ${part}\n`;
        kept.push(line);
        if (!opts.quiet) write(line);
      }
    },
    text: () => kept.join(""),
  };
}

/** A logger that keeps nothing and prints nothing. */
export const silentLogger: Logger = { info() {}, text: () => "" };

/**
 * Query parameters that carry a credential: AWS and GCS signed URLs (SigV4 and V2, `X-Goog-*`),
 * Azure SAS (`sig`), OAuth and API tokens. Matched case-insensitively, after `?`, `&` or `;`; the value
 * ends before `&`, `;`, `#`, white space or quotes, and a trailing `:`, `,`, `.` or `)` is left to the
 * sentence around it (`fetch URL: 403`).
 */
const SECRET_PARAMS = [
  "X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token", "Signature", "AWSAccessKeyId",
  "X-Goog-Signature", "X-Goog-Credential", "X-Goog-Security-Token", "GoogleAccessId",
  "sig", "signature", "token", "access_token", "id_token", "refresh_token", "auth", "authorization",
  "api_key", "apikey", "api-key", "key", "client_secret", "password", "passwd", "pass", "secret",
];
const SECRET_QUERY = new RegExp(`([?&;](?:${SECRET_PARAMS.map((p) => p.replace(/[-]/g, "\\-")).join("|")})=)[^&;#\\s"'<>]*[^&;#\\s"'<>:,.)]`, "gi");
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
  return s
    .replace(USERINFO, (_all, scheme: string, info: string) => {
      const colon = info.indexOf(":");
      return colon > 0 ? `${scheme}${info.slice(0, colon)}:***@` : `${scheme}***@`;
    })
    .replace(SECRET_QUERY, "$1***");
}
