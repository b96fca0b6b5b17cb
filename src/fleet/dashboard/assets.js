/**
 * The dashboard page's files as text, embedded in the binary (Bun's text imports; `bun build
 * --compile` bundles them): nothing is read from disk or the internet at run time. Plain JavaScript
 * so that tsc (without allowJs) leaves the text imports alone; assets.d.ts types the exports.
 */
import html from "./page.html" with { type: "text" };
import css from "./page.css" with { type: "text" };
import js from "./page.js" with { type: "text" };
import { attention, formatAge, formatTook, statusText } from "../format.ts";

export const PAGE_HTML = html;
export const APP_CSS = css;
export const APP_JS = js;

/**
 * The module the page imports as /format.js: the fleet view's own formatting functions, from their
 * compiled source (each is self-contained, see format.ts), under the names the page imports.
 */
export const FORMAT_JS = Object.entries({ attention, formatAge, formatTook, statusText })
  .map(([name, fn]) => `export const ${name} = ${fn.toString()};\n`)
  .join("");
