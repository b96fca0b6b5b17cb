/**
 * The manifest template functions of stretcher v2: `{{ env "A" "default" }}` and `{{ must_env "A" }}`.
 * Any other `{{ … }}` text is left as it is (stretcher would render `{{.State.Running}}` as `<no value>`).
 */
import type { Env } from "../env.ts";

const CALL = /\{\{-?\s*(env|must_env)\s+"((?:[^"\\]|\\.)*)"(?:\s+"((?:[^"\\]|\\.)*)")?\s*-?\}\}/g;

export interface RenderResult {
  text: string;
  /** One entry per unset `must_env` variable. */
  missing: string[];
}

export function renderTemplate(text: string, env: Env): RenderResult {
  const missing: string[] = [];
  const out = text.replace(CALL, (_all, fn: string, rawName: string, rawDefault: string | undefined) => {
    const name = unescapeTemplate(rawName);
    const value = env[name];
    if (fn === "must_env") {
      if (value === undefined || value === "") {
        if (!missing.includes(name)) missing.push(name);
        return "";
      }
      return value;
    }
    if (value !== undefined && value !== "") return value;
    return rawDefault === undefined ? "" : unescapeTemplate(rawDefault);
  });
  return { text: out, missing };
}

function unescapeTemplate(s: string): string {
  return s.replace(/\\(.)/g, "$1");
}
