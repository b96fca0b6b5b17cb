/**
 * Reading argv: the global `--log-format`, then a command's flags normalised for citty (stretcher's
 * Go-style `-flag value` spelling, unknown flags rejected: citty ignores them silently). Imported by
 * `run.ts` on every command's run: keep its imports to errors and log.
 */
import type { ArgsDef } from "citty";
import { UsageError } from "../errors.ts";
import { LOG_FORMATS, type LogFormat } from "../log.ts";

/**
 * Rewrite argv so citty reads it as we mean it:
 * - `-max-bandwidth 10M` (Go flag style, one dash) → `--max-bandwidth=10M`;
 * - a string flag always takes the next word as its value, even `-vv` (`--rsync-verbose -vv`);
 * - any flag not in `args` (name or alias) is a `UsageError` listing the valid ones;
 * - a list flag (its `valueHint` ends in `...`) may be repeated: the values are joined with ","
 *   (other flags: the last one wins, as with Go's flag package).
 * Positional words are kept only when the command declares positionals.
 */
export function normalizeArgv(argv: string[], args: ArgsDef): string[] {
  const byName = new Map<string, { name: string; type: string; list: boolean }>();
  for (const [name, def] of Object.entries(args)) {
    if (def.type === "positional") continue;
    const aliases = "alias" in def && def.alias ? (Array.isArray(def.alias) ? def.alias : [def.alias]) : [];
    const list = def.valueHint?.endsWith("...") ?? false;
    for (const n of [name, ...aliases]) byName.set(n, { name, type: def.type ?? "string", list });
  }
  const lists = new Map<string, string[]>();
  const positionals = Object.values(args).filter((d) => d.type === "positional").length;
  const out: string[] = [];
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--") {
      rest.push(...argv.slice(i + 1));
      break;
    }
    const m = /^--?([A-Za-z][\w-]*)(?:=(.*))?$/s.exec(a);
    if (!m || a === "-") {
      rest.push(a);
      continue;
    }
    const [, raw, inline] = m;
    const negated = raw!.startsWith("no-") && byName.get(raw!.slice(3))?.type === "boolean";
    const flag = byName.get(negated ? raw!.slice(3) : raw!);
    if (!flag) {
      const valid = [...new Set([...byName.values()].map((f) => `--${f.name}`))].join(", ");
      throw new UsageError(`unknown flag ${a.replace(/=.*$/s, "")} (valid: ${valid || "none"}, --help)`);
    }
    if (flag.type === "boolean") {
      if (inline !== undefined && !/^(true|false|1|0)$/.test(inline))
        throw new UsageError(`--${flag.name} takes no value, got "${inline}"`);
      const on = negated ? false : inline === undefined || inline === "true" || inline === "1";
      out.push(on ? `--${flag.name}` : `--no-${flag.name}`);
      continue;
    }
    let value = inline;
    if (value === undefined) {
      if (i + 1 >= argv.length) throw new UsageError(`flag --${flag.name} needs a value`);
      value = argv[++i]!;
    }
    if (flag.list) {
      const values = lists.get(flag.name) ?? [];
      if (values.length === 0) lists.set(flag.name, values);
      values.push(value);
      continue;
    }
    out.push(`--${flag.name}=${value}`);
  }
  for (const [name, values] of lists) out.push(`--${name}=${values.join(",")}`);
  if (rest.length > positionals) {
    throw new UsageError(
      "unexpected argument " +
        `"${rest[positionals]}"${positionals === 0 ? " (this command takes only flags; see --help)" : ""}`,
    );
  }
  return [...out, ...rest];
}

/**
 * The global `--log-format text|json` (also `--log-format=json`, `-log-format json`), anywhere
 * before `--`, taken out of argv before the command's own flags are read. The last one wins.
 */
export function takeLogFormat(argv: string[]): { format: LogFormat; rest: string[]; error?: string } {
  let format: LogFormat = "text";
  let error: string | undefined;
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--") {
      rest.push(...argv.slice(i));
      break;
    }
    const m = /^--?log-format(?:=(.*))?$/s.exec(a);
    if (!m) {
      rest.push(a);
      continue;
    }
    const value = m[1] ?? argv[++i];
    if (value === undefined) error = "--log-format needs a value: text or json";
    else if (!(LOG_FORMATS as readonly string[]).includes(value))
      error = `--log-format: expected ${LOG_FORMATS.join(" or ")}, got "${value}"`;
    else format = value as LogFormat;
  }
  return { format, rest, error };
}
