/**
 * The process environment as the CLI passes it down (`process.env` at the edge, a plain object in
 * tests). Modules below the CLI read variables from this, never from `process.env`.
 */
export type Env = Record<string, string | undefined>;
