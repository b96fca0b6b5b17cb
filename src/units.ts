/**
 * Pure parsers for the flag values shared with stretcher: durations and byte sizes.
 * Both stretcher spellings are accepted: v1's bare numbers and v2's suffixed values.
 */

const DURATION_UNITS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

/** `30` (seconds), `1.5`, `30s`, `500ms`, `2m`, `1h30m` → milliseconds. Returns an error string on bad input. */
export function parseDuration(input: string): number | string {
  const s = input.trim();
  if (/^\d+(\.\d+)?$/.test(s)) return Math.round(Number(s) * 1000);
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/gy;
  let total = 0;
  let pos = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(s)) !== null) {
    total += Number(m[1]) * DURATION_UNITS[m[2]!]!;
    pos = re.lastIndex;
  }
  if (pos === 0 || pos !== s.length) return `not a duration: "${input}" (use e.g. 30, 30s, 500ms, 2m)`;
  return Math.round(total);
}

const SIZE_UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  k: 1e3,
  kb: 1e3,
  m: 1e6,
  mb: 1e6,
  g: 1e9,
  gb: 1e9,
  t: 1e12,
  tb: 1e12,
  kib: 2 ** 10,
  mib: 2 ** 20,
  gib: 2 ** 30,
  tib: 2 ** 40,
};

/** `10M`, `10MB` (10^6), `1MiB` (2^20), `500k`, `1024` → bytes. Returns an error string on bad input. */
export function parseSize(input: string): number | string {
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(input.trim());
  const unit = m ? SIZE_UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined) return `not a size: "${input}" (use e.g. 500k, 10M, 10MB, 1MiB or bytes)`;
  const bytes = Math.floor(Number(m[1]) * unit);
  if (bytes <= 0) return `not a size: "${input}" (must be more than 0)`;
  return bytes;
}

export function formatBytes(n: number): string {
  if (n < 1000) return `${n} B`;
  const units = ["kB", "MB", "GB", "TB"];
  let v = n / 1000;
  let i = 0;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${v.toFixed(1)} ${units[i]}`;
}
