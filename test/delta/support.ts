/** Releases with a content index, built the way `publish` builds them, for the delta tests. */
import * as fs from "node:fs";
import { join } from "node:path";
import { packTree, scanTree } from "../../src/archive/pack.ts";
import { publishDelta, type DeltaPublished } from "../../src/delta/index.ts";
import { createLogger, type Logger } from "../../src/log.ts";
import { fileTarget } from "../../src/store/targets/file.ts";

export interface Published {
  id: string;
  archive: string;
  checksum: string;
  delta: DeltaPublished;
  log: string;
}

/** Pack `src` into `<store>/<role>/<id>.tar.gz` and store its delta in the file store `store`, as publish does. */
export async function publishRelease(store: string, src: string, id: string, role = "web"): Promise<Published> {
  const lines: string[] = [];
  const log: Logger = createLogger({ write: (l) => void lines.push(l) });
  const target = await fileTarget(`file://${store}`, { env: {}, log, retries: 0, retryWaitMs: 1 });
  const plan = scanTree(src, { excludes: [] });
  const packed = packTree(plan, { algorithm: "sha256", gzipLevel: 6, inline: true });
  const archive = join(store, role, `${id}.tar.gz`);
  fs.mkdirSync(join(store, role), { recursive: true });
  fs.writeFileSync(archive, new Uint8Array(await new Response(packed.stream).arrayBuffer()));
  const { checksum, size } = await packed.result;
  const delta = await publishDelta({ plan, target, role, id, archiveSize: size, env: {}, log, userAgent: "test" });
  return { id, archive, checksum, delta, log: lines.join("") };
}

/** A manifest for `p` deploying to `dest`, with the delta keys unless `delta: false`; returns its URL. */
export function manifestFor(
  p: Published,
  dest: string,
  o: { delta?: boolean; strategy?: string; indexUrl?: string; indexSha256?: string; src?: string; extra?: string } = {},
): string {
  const strategy = o.strategy ?? "release";
  let text =
    `src: ${o.src ?? `file://${p.archive}`}\nchecksum: ${p.checksum}\ndest: ${dest}\nsync_strategy: ` +
    `${strategy}\n${strategy === "release" ? `release_id: ${p.id}\n` : ""}`;
  if (o.extra) text += o.extra;
  if (o.delta !== false)
    text += `delta_index: ${o.indexUrl ?? p.delta.indexUrl}\ndelta_index_checksum: ${o.indexSha256 ?? p.delta.sha256}\n`;
  const path = `${p.archive.replace(/\.tar\.gz$/, "")}-${Bun.hash(text).toString(16)}.yml`;
  fs.writeFileSync(path, text);
  return `file://${path}`;
}

/**
 * Everything extraction decides about a tree, per path: type, mode, mtime, size, owner, bytes'
 * sha256 or link target; and which paths share an inode with each other.
 */
export function describeTree(root: string): string[] {
  const out: string[] = [];
  const inodes = new Map<number, string[]>();
  const walk = (dir: string, rel: string) => {
    for (const name of fs.readdirSync(dir).sort()) {
      const p = join(dir, name);
      const r = rel ? `${rel}/${name}` : name;
      const st = fs.lstatSync(p);
      const common = `mode=${(st.mode & 0o7777).toString(8)} mtime=${st.mtimeMs} uid=${st.uid} gid=${st.gid}`;
      if (st.isDirectory()) {
        out.push(`${r}/ dir ${common}`);
        walk(p, r);
      } else if (st.isSymbolicLink()) out.push(`${r} -> ${fs.readlinkSync(p)} mtime=${st.mtimeMs}`);
      else {
        out.push(
          `${r} file ${common} size=${st.size} ` +
            `sha256=${new Bun.CryptoHasher("sha256").update(fs.readFileSync(p)).digest("hex")}`,
        );
        inodes.set(st.ino, [...(inodes.get(st.ino) ?? []), r]);
      }
    }
  };
  walk(root, "");
  for (const group of inodes.values()) if (group.length > 1) out.push(`linked: ${group.join(" = ")}`);
  return out;
}

export { noise } from "../support/helpers.ts";
