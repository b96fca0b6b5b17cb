/**
 * `file:///abs/dir`: a directory, for trying pulldeploy on one machine or a shared mount. Files appear
 * whole and at once: written to a hidden staging file in the same directory, synced, then hard-linked
 * under their final name (`link` fails rather than overwrite), and the staging file removed.
 */
import * as fs from "node:fs";
import { dirname, join } from "node:path";
import { UsageError } from "../../errors.ts";
import { encodePath, UploadError, type Target, type TargetOptions } from "./types.ts";

export async function fileTarget(url: string, opts: TargetOptions): Promise<Target> {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new UsageError(`--to ${url}: not a valid URL`);
  }
  if (u.host !== "" && u.host !== "localhost")
    throw new UsageError(`--to ${url}: file URLs take no host ("${u.host}"); use file:///absolute/path`);
  const root = decodeURIComponent(u.pathname).replace(/\/+$/, "") || "/";
  const base = `file://${encodePath(root)}`;
  let stagingSeq = 0;
  const stagingPath = () => join(root, `.pulldeploy-staging-${process.pid}-${Date.now()}-${stagingSeq++}`);

  /** Make `staging` appear as `name`, or fail without touching an existing `name`. */
  const publishAs = (staging: string, name: string) => {
    const final = join(root, name);
    try {
      fs.mkdirSync(dirname(final), { recursive: true });
      try {
        fs.linkSync(staging, final);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === "EEXIST") throw err;
        // No hard links here (some network filesystems): an exclusive create and a copy.
        fs.copyFileSync(staging, final, fs.constants.COPYFILE_EXCL);
      }
    } catch (err) {
      throw fileError(`${base}/${encodePath(name)}`, err);
    } finally {
      fs.rmSync(staging, { force: true });
    }
  };

  return {
    base,
    urlOf: (name) => `${base}/${encodePath(name)}`,
    async preflight() {
      try {
        fs.mkdirSync(root, { recursive: true });
        fs.accessSync(root, fs.constants.W_OK);
      } catch (err) {
        throw fileError(base, err);
      }
    },
    async putStream(body, name) {
      const staging = stagingPath();
      let fd: number;
      try {
        fd = fs.openSync(staging, "wx", 0o644);
      } catch (err) {
        await body.cancel().catch(() => {});
        throw fileError(base, err);
      }
      try {
        for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) {
          if (opts.signal?.aborted) throw opts.signal.reason;
          let off = 0;
          while (off < chunk.byteLength) off += fs.writeSync(fd, chunk, off);
          opts.onSent?.(chunk.byteLength);
        }
        fs.fsyncSync(fd);
      } catch (err) {
        fs.closeSync(fd);
        fs.rmSync(staging, { force: true });
        throw err instanceof UploadError || !(err as NodeJS.ErrnoException)?.code ? err : fileError(base, err);
      }
      fs.closeSync(fd);
      publishAs(staging, name());
    },
    async putBytes(name, bytes) {
      const staging = stagingPath();
      try {
        fs.writeFileSync(staging, bytes, { flag: "wx", mode: 0o644 });
      } catch (err) {
        fs.rmSync(staging, { force: true });
        throw fileError(base, err);
      }
      publishAs(staging, name);
    },
    close() {},
  };
}

function fileError(url: string, err: unknown): UploadError {
  const e = err as NodeJS.ErrnoException;
  if (e.code === "EEXIST")
    return new UploadError(`store ${url}: already exists (releases are never overwritten)`, {
      exists: true,
      cause: err,
    });
  const what =
    e.code === "EACCES" || e.code === "EPERM"
      ? "permission denied"
      : e.code === "ENOSPC"
        ? "no space left on device"
        : e.code === "ENOTDIR"
          ? "not a directory"
          : e.code === "EROFS"
            ? "read-only file system"
            : (e.message ?? String(err));
  return new UploadError(`store ${url}: ${what}`, { cause: err });
}
