/**
 * `http(s)://host/path`: plain PUTs, as WebDAV servers (nginx `dav_methods PUT`, Apache mod_dav,
 * rclone serve webdav…) take them. A non-2xx answer is an error naming the status; 5xx, 429 and
 * network errors are retried. `If-None-Match: *` asks the server not to overwrite, after a HEAD that
 * finds nothing. A 409 (missing parent collection) is answered with MKCOL and one more PUT.
 *
 * The archive's name holds its checksum, known only at the end, and a PUT needs its URL first: the
 * stream is spooled to a temporary file (removed on every path), then sent with a Content-Length.
 * Credentials in the URL (`https://user:pass@host/`) authenticate the PUTs and are never written
 * into the URLs the agents are given.
 */
import * as fs from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { UsageError } from "../../errors.ts";
import { redact } from "../../log.ts";
import { proxyFor } from "../sources/http.ts";
import { USER_AGENT } from "../../version.ts";
import { networkMessage } from "../network.ts";
import { encodePath, UploadError, withRetries, type Target, type TargetOptions } from "./types.ts";

export async function httpTarget(url: string, opts: TargetOptions): Promise<Target> {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new UsageError(`--to ${redact(url)}: not a valid URL`);
  }
  if (u.search !== "" || u.hash !== "")
    throw new UsageError(`--to ${redact(url)}: a query or fragment cannot be extended with file names`);
  const auth =
    u.username !== ""
      ? `Basic ${btoa(`${decodeURIComponent(u.username)}:${decodeURIComponent(u.password)}`)}`
      : undefined;
  u.username = "";
  u.password = "";
  const base = u.toString().replace(/\/+$/, "");
  const urlOf = (name: string) => `${base}/${encodePath(name)}`;
  const headers = (extra: Record<string, string> = {}): Record<string, string> => ({
    "User-Agent": USER_AGENT,
    ...(auth ? { Authorization: auth } : {}),
    ...extra,
  });

  const request = async (
    method: string,
    target: string,
    init: { body?: RequestInit["body"]; headers?: Record<string, string> } = {},
  ): Promise<Response> => {
    try {
      return await fetch(target, {
        method,
        body: init.body,
        headers: headers(init.headers),
        signal: opts.signal,
        redirect: "manual",
        proxy: proxyFor(target, opts.env),
      } as RequestInit);
    } catch (err) {
      const aborted = (err as Error).name === "AbortError";
      throw new UploadError(`store ${target}: ${aborted ? "interrupted" : networkMessage(err)}`, {
        retryable: !aborted,
        cause: err,
      });
    }
  };

  const statusError = (target: string, res: Response, what = "") =>
    new UploadError(`store ${target}: ${what}${res.status} ${res.statusText || "error"}`, {
      retryable: res.status >= 500 || res.status === 429,
      status: res.status,
      exists: res.status === 412,
    });

  /** MKCOL each missing collection above `name` (WebDAV answers a PUT into one with 409). */
  const makeCollections = async (name: string) => {
    const dirs = name.split("/").slice(0, -1);
    for (let i = 1; i <= dirs.length; i++) {
      const col = `${urlOf(dirs.slice(0, i).join("/"))}/`;
      const res = await request("MKCOL", col);
      await res.body?.cancel().catch(() => {});
      // 405: it exists already.
      if (!res.ok && res.status !== 405) throw statusError(col, res, "MKCOL: ");
    }
  };

  const put = async (name: string, body: () => NonNullable<RequestInit["body"]>, size: number, contentType: string) => {
    const target = urlOf(name);
    const head = await withRetries(`store ${target}`, opts, async () => {
      const res = await request("HEAD", target);
      if (res.status >= 500) throw statusError(target, res, "HEAD: ");
      return res;
    });
    if (head.ok)
      throw new UploadError(`store ${target}: already exists (releases are never overwritten)`, { exists: true });
    let madeCollections = false;
    await withRetries(`store ${target}`, opts, async () => {
      for (;;) {
        const res = await request("PUT", target, {
          body: body(),
          headers: { "Content-Type": contentType, "If-None-Match": "*" },
        });
        await res.body?.cancel().catch(() => {});
        if (res.status === 409 && !madeCollections) {
          madeCollections = true;
          await makeCollections(name);
          continue;
        }
        if (res.status === 412)
          throw new UploadError(`store ${target}: already exists (releases are never overwritten)`, {
            exists: true,
            status: 412,
          });
        if (!res.ok) throw statusError(target, res);
        return;
      }
    });
    opts.onSent?.(size);
  };

  return {
    base,
    urlOf,
    async preflight() {},
    async putStream(body, name, contentType) {
      const dir = fs.mkdtempSync(join(opts.env.TMPDIR || tmpdir(), "pulldeploy-publish-"));
      const spool = join(dir, "archive.tar.gz");
      try {
        const fd = fs.openSync(spool, "wx", 0o600);
        let size = 0;
        try {
          for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) {
            let off = 0;
            while (off < chunk.byteLength) off += fs.writeSync(fd, chunk, off);
            size += chunk.byteLength;
          }
        } finally {
          fs.closeSync(fd);
        }
        await put(name(), () => Bun.file(spool), size, contentType);
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    },
    async putBytes(name, bytes, contentType) {
      await put(name, () => bytes as Uint8Array<ArrayBuffer>, bytes.byteLength, contentType);
    },
    close() {},
  };
}
