/** Publish progress: a bar on a terminal, plain log lines otherwise. */
import type { Logger } from "../log.ts";
import { formatBytes } from "../units.ts";

// ------------------------------------------------------------------ progress

export interface Progress {
  start(totalBytes: number): void;
  /** Uncompressed bytes packed. */
  packed(n: number): void;
  /** Compressed bytes stored. */
  sent(n: number): void;
  finish(): void;
}

/**
 * A bar redrawn in place on a terminal (bytes, rate, ETA), or a plain log line every `intervalMs`
 * otherwise. The rate and ETA follow the packed (uncompressed) bytes, which the upload keeps pace with.
 */
export function createProgress(opts: {
  tty: boolean;
  write: (s: string) => void;
  log: Logger;
  intervalMs?: number;
  now?: () => number;
}): Progress {
  const now = opts.now ?? (() => performance.now());
  const interval = opts.intervalMs ?? (opts.tty ? 100 : 5000);
  let total = 0;
  let packed = 0;
  let sent = 0;
  let t0 = 0;
  let last = 0;
  let drawn = false;
  const render = () => {
    const elapsed = (now() - t0) / 1000;
    const rate = elapsed > 0 ? packed / elapsed : 0;
    const pct = total > 0 ? Math.min(100, (packed / total) * 100) : 100;
    const eta = rate > 0 ? Math.max(0, (total - packed) / rate) : undefined;
    const etaText = eta === undefined ? "--" : `${Math.ceil(eta)}s`;
    if (opts.tty) {
      const width = 24;
      const filled = Math.round((pct / 100) * width);
      opts.write(
        `\r\x1b[K[${"#".repeat(filled)}${"-".repeat(width - filled)}] ${pct.toFixed(0).padStart(3)}% ` +
          `${formatBytes(packed)}/${formatBytes(total)} ${formatBytes(rate)}/s ETA ${etaText} · ` +
          `${formatBytes(sent)} sent`,
      );
      drawn = true;
    } else {
      opts.log.info(
        `progress: ${pct.toFixed(0)}% (${formatBytes(packed)} of ${formatBytes(total)} packed, ` +
          `${formatBytes(sent)} sent, ${formatBytes(rate)}/s, ETA ${etaText})`,
      );
    }
  };
  const tick = () => {
    const t = now();
    if (t - last >= interval) {
      last = t;
      render();
    }
  };
  return {
    start(n) {
      total = n;
      t0 = now();
      last = t0;
      // A bar at once on a terminal (a small release may be packed before the first interval).
      if (opts.tty) render();
    },
    packed(n) {
      packed += n;
      tick();
    },
    sent(n) {
      sent += n;
      tick();
    },
    finish() {
      if (drawn) opts.write("\r\x1b[K");
      drawn = false;
    },
  };
}
