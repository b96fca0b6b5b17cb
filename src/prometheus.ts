/**
 * The Prometheus text exposition format (0.0.4), as far as pulldeploy writes and reads it: metric
 * families with HELP and TYPE, label values escaped; and a strict reader of one sample line (the
 * agent reads its previous metrics file back; tests check what is written).
 */

export type MetricType = "gauge" | "counter";

export interface Sample {
  labels?: Record<string, string>;
  value: number;
}

/** One family: `# HELP`, `# TYPE`, then its samples (none: the family is left out). */
export function family(name: string, type: MetricType, help: string, samples: Sample[]): string[] {
  if (samples.length === 0) return [];
  return [
    `# HELP ${name} ${help.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")}`,
    `# TYPE ${name} ${type}`,
    ...samples.map((s) => `${name}${labelText(s.labels ?? {})} ${numberText(s.value)}`),
  ];
}

/** Families joined into a file's text, newline-terminated. */
export function exposition(families: string[][]): string {
  return `${families.flat().join("\n")}\n`;
}

function numberText(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return Number.isInteger(v) ? String(v) : String(Number(v.toFixed(3)));
}

/** `{a="b",c="d"}` with `\`, `"` and newlines escaped; names that are not valid label names dropped. */
export function labelText(l: Record<string, string>): string {
  const parts = Object.entries(l)
    .filter(([k]) => /^[a-zA-Z_][a-zA-Z0-9_]*$/.test(k) && !k.startsWith("__"))
    .map(([k, v]) => `${k}="${v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")}"`);
  return parts.length ? `{${parts.join(",")}}` : "";
}

/** One sample line (`name{a="b",…} value [timestamp]`), or undefined for comments, blanks and anything malformed. */
export function parseSample(line: string): { name: string; labels: Record<string, string>; value: number } | undefined {
  const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?[ \t]+(\S+)(?:[ \t]+-?\d+)?$/.exec(line);
  if (!m) return undefined;
  const labels: Record<string, string> = {};
  const body = m[2] ?? "";
  const pair = /\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"\s*(,|$)/y;
  let at = 0;
  while (at < body.length) {
    pair.lastIndex = at;
    const p = pair.exec(body);
    if (!p || p[1]! in labels) return undefined;
    labels[p[1]!] = p[2]!.replace(/\\(["\\n])/g, (_all, c: string) => (c === "n" ? "\n" : c));
    at = pair.lastIndex;
    if (p[3] === "" && at < body.length) return undefined;
  }
  const raw = m[3]!;
  if (!/^(?:[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)|[+-]?Inf|NaN)$/.test(raw)) return undefined;
  const value = raw === "NaN" ? NaN : Number(raw.replace(/Inf$/, "Infinity"));
  return { name: m[1]!, labels, value };
}

/**
 * Every problem with a whole exposition text, as promtool's `check metrics` would see them: lines
 * that are neither comments nor samples, samples without a TYPE before them, a family's samples
 * split apart, a TYPE after its samples, duplicate series, counters without `_total`. [] when valid.
 */
export function lintExposition(text: string): string[] {
  const problems: string[] = [];
  if (!text.endsWith("\n")) problems.push("does not end with a newline");
  const typed = new Map<string, string>();
  const seen = new Set<string>();
  const finished = new Set<string>();
  let current: string | undefined;
  const lines = text.split("\n");
  if (lines.at(-1) === "") lines.pop();
  lines.forEach((line, i) => {
    const at = `line ${i + 1}`;
    const meta = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line);
    if (meta) {
      const name = meta[2]!;
      if (meta[1] === "TYPE") {
        if (typed.has(name)) problems.push(`${at}: second TYPE for ${name}`);
        if (!/^(counter|gauge|histogram|summary|untyped)$/.test(meta[3]!))
          problems.push(`${at}: unknown type ${meta[3]}`);
        if (meta[3] === "counter" && !name.endsWith("_total"))
          problems.push(`${at}: counter ${name} should end in _total`);
        if ([...seen].some((s) => s.startsWith(`${name}{`) || s === name))
          problems.push(`${at}: TYPE for ${name} after its samples`);
        typed.set(name, meta[3]!);
      }
      if (current !== undefined && current !== name) finished.add(current);
      current = name;
      return;
    }
    if (line.startsWith("#")) return;
    const s = parseSample(line);
    if (!s) {
      problems.push(`${at}: not a sample: ${JSON.stringify(line)}`);
      return;
    }
    if (!typed.has(s.name)) problems.push(`${at}: ${s.name} has no TYPE`);
    if (finished.has(s.name)) problems.push(`${at}: ${s.name}'s samples are not together`);
    if (current !== undefined && current !== s.name) finished.add(current);
    current = s.name;
    const series = `${s.name}${labelText(Object.fromEntries(Object.entries(s.labels).sort()))}`;
    if (seen.has(series)) problems.push(`${at}: duplicate series ${series}`);
    seen.add(series);
  });
  return problems;
}
