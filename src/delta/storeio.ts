/**
 * Listing and deleting in a store, which only `gc` and publish's "what does the store hold" need:
 * `file://` (a directory) and `s3://` (ListObjectsV2, DeleteObject). An `http(s)://` store cannot be
 * listed: there publish uploads every chunk of its release, and `gc` refuses.
 */
import * as fs from "node:fs";
import { join } from "node:path";
import { FetchError } from "../errors.ts";
import { redact } from "../log.ts";
import { filePath } from "../store/sources/file.ts";
import type { Env } from "../env.ts";
import { createS3Client, parseS3Url } from "../store/s3client.ts";

export interface Listed {
  name: string;
  size: number;
  /** Last modified, ms since the epoch. */
  mtimeMs: number;
}

export interface StoreDir {
  /** Names (no `/`) directly under `dir` (a `/`-separated path under the base). */
  list(dir: string): Promise<string[]>;
  /** The same, with sizes and times. */
  stat(dir: string): Promise<Listed[]>;
  remove(name: string): Promise<void>;
  close(): void;
}

export async function openStoreDir(base: string, env: Env): Promise<StoreDir | undefined> {
  const scheme = base.slice(0, base.indexOf(":")).toLowerCase();
  if (scheme === "file") {
    const root = filePath(base).replace(/\/+$/, "");
    const list = async (dir: string) => {
      try {
        return fs.readdirSync(join(root, dir)).filter((n) => !n.startsWith("."));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
        throw new FetchError(`list ${redact(base)}/${dir}: ${(err as Error).message}`, false, { cause: err });
      }
    };
    return {
      list,
      async stat(dir) {
        const out: Listed[] = [];
        for (const name of await list(dir)) {
          const st = fs.statSync(join(root, dir, name), { throwIfNoEntry: false });
          if (st?.isFile()) out.push({ name, size: st.size, mtimeMs: st.mtimeMs });
        }
        return out;
      },
      async remove(name) {
        fs.rmSync(join(root, name), { force: true });
      },
      close() {},
    };
  }
  if (scheme === "s3") {
    const { bucket, key } = parseS3Url(base);
    const prefix = key.replace(/\/+$/, "");
    const keyOf = (name: string) => (prefix === "" ? name : `${prefix}/${name}`);
    const client = await createS3Client(env);
    const { ListObjectsV2Command, DeleteObjectCommand } = await import("@aws-sdk/client-s3");
    const stat = async (dir: string) => {
      const out: Listed[] = [];
      const p = `${keyOf(dir)}/`;
      let token: string | undefined;
      do {
        const res = await client.send(
          new ListObjectsV2Command({ Bucket: bucket, Prefix: p, Delimiter: "/", ContinuationToken: token }),
        );
        for (const o of res.Contents ?? []) {
          const name = o.Key?.slice(p.length) ?? "";
          if (name !== "" && !name.includes("/"))
            out.push({ name, size: o.Size ?? 0, mtimeMs: o.LastModified?.getTime() ?? 0 });
        }
        token = res.IsTruncated ? res.NextContinuationToken : undefined;
      } while (token);
      return out;
    };
    return {
      stat,
      list: async (dir) => (await stat(dir)).map((l) => l.name),
      async remove(name) {
        await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: keyOf(name) }));
      },
      close: () => client.destroy(),
    };
  }
  return undefined;
}

/**
 * Index names (`<release id>.idx`) oldest first: by the id's time, then by when the store got them
 * (ids of one second differ only by their checksum prefix), then by name.
 */
export function newestLast(listed: Listed[]): string[] {
  return [...listed]
    .sort((a, b) =>
      a.name.slice(0, 16) < b.name.slice(0, 16)
        ? -1
        : a.name.slice(0, 16) > b.name.slice(0, 16)
          ? 1
          : a.mtimeMs - b.mtimeMs || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0),
    )
    .map((l) => l.name);
}
