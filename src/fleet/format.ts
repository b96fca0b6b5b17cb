/**
 * How the fleet is put into words, shared by `pulldeploy status` (view.ts) and the dashboard page,
 * which gets these very functions as `/format.js`, from their compiled source (dashboard/assets.js).
 * So each function is self-contained: no imports, no module-level helpers or constants, no Node or
 * DOM; pure.
 */

export type Attention = "failed" | "never-reported" | "behind" | "not-in-catalog";

/** Why a row needs a person's eyes, the most serious reason first; null when it doesn't. */
export function attention(row: { status: string; behind: boolean; in_catalog: boolean }): Attention | null {
  if (row.status === "failure") return "failed";
  if (row.status === "never-reported") return "never-reported";
  if (row.behind) return "behind";
  if (!row.in_catalog) return "not-in-catalog";
  return null;
}

/** A row's status in words (`never-reported` has a space). */
export function statusText(s: string): string {
  return s === "never-reported" ? "never reported" : s;
}

/** `45s`, `12m`, `3h`, `2d`: the largest whole unit, as `kubectl get` shows ages. */
export function formatAge(ms: number | null): string {
  if (ms === null) return "-";
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h`;
  return `${Math.floor(h / 24)}d`;
}

/** How long a deploy took, to a tenth of a second under a minute: `850 ms`, `3.9 s`, `2 min 5 s`. */
export function formatTook(ms: number): string {
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
}
