/** `file:///abs/path`. A host part is an error (stretcher silently ignored it). */
import { FetchError } from "../../errors.ts";
import { redact } from "../../log.ts";
import type { Source } from "./types.ts";

export function filePath(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new FetchError(`fetch ${redact(url)}: not a valid file URL; use file:///absolute/path`, false);
  }
  if (u.host !== "" && u.host !== "localhost") {
    throw new FetchError(
      `fetch ${redact(url)}: file URLs take no host ("${u.host}"); use file:///absolute/path`,
      false,
    );
  }
  return decodeURIComponent(u.pathname);
}

export const fileSource: Source = {
  async open(url, opts) {
    const path = filePath(url);
    const file = Bun.file(path);
    let size: number;
    try {
      const st = await file.stat();
      if (st.isDirectory()) throw new FetchError(`fetch ${url}: is a directory`, false);
      size = st.size;
    } catch (err) {
      if (err instanceof FetchError) throw err;
      const code = (err as NodeJS.ErrnoException).code;
      // A missing file is the 404 of the other sources (a missing `.sig` means "not signed").
      throw new FetchError(`fetch ${url}: ${code === "ENOENT" ? "no such file" : (err as Error).message}`, false, {
        cause: err,
        status: code === "ENOENT" ? 404 : undefined,
      });
    }
    const offset = opts.offset ?? 0;
    if (opts.length !== undefined) return { body: file.slice(offset, offset + opts.length).stream(), size };
    return { body: (offset > 0 ? file.slice(offset) : file).stream(), size };
  },
};
