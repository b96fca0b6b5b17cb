/** The URL schemes pulldeploy fetches from; the implementations live in `sources/index.ts`. */
export const SOURCE_SCHEMES = ["file", "http", "https", "s3", "gs"] as const;
export type SourceScheme = (typeof SOURCE_SCHEMES)[number];

/** The scheme of a URL, lower-cased, or undefined when it has none. */
export function schemeOf(url: string): string | undefined {
  const m = /^([a-z][a-z0-9+.-]*):\/\//i.exec(url);
  return m ? m[1]!.toLowerCase() : undefined;
}

export function isSourceScheme(s: string | undefined): s is SourceScheme {
  return s !== undefined && (SOURCE_SCHEMES as readonly string[]).includes(s);
}
