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

const SECRET_QUERY = /([?&](?:X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|Signature|AWSAccessKeyId|token|access_token|sig|password|secret)=)[^&\s]+/gi;

/** Remove passwords in URLs and signed query parameters from a line. */
export function redact(s: string): string {
  return s
    .replace(/\b([a-z][a-z0-9+.-]*:\/\/)([^/@\s:]+):([^/@\s]+)@/gi, "$1$2:***@")
    .replace(SECRET_QUERY, "$1***");
}
