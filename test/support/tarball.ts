/**
 * Hand-made tar archives for hostile cases that GNU tar refuses to create (`../x`, `/etc/x`,
 * a symlink followed by a file through it).
 */
export interface RawEntry {
  name: string;
  type?: "0" | "2" | "5" | "1" | "3";
  content?: string;
  linkname?: string;
  mode?: number;
}

export function rawTar(entries: RawEntry[]): Uint8Array {
  const blocks: Uint8Array[] = [];
  for (const e of entries) {
    const body = new TextEncoder().encode(e.content ?? "");
    const h = new Uint8Array(512);
    const put = (off: number, len: number, s: string) => h.set(new TextEncoder().encode(s).subarray(0, len), off);
    const oct = (off: number, len: number, n: number) => put(off, len, `${n.toString(8).padStart(len - 1, "0")}\0`);
    put(0, 100, e.name);
    oct(100, 8, e.mode ?? (e.type === "5" ? 0o755 : 0o644));
    oct(108, 8, 0);
    oct(116, 8, 0);
    oct(124, 12, e.type === undefined || e.type === "0" ? body.length : 0);
    oct(136, 12, 1_700_000_000);
    put(148, 8, "        ");
    put(156, 1, e.type ?? "0");
    put(157, 100, e.linkname ?? "");
    put(257, 6, "ustar\0");
    put(263, 2, "00");
    let sum = 0;
    for (const b of h) sum += b;
    put(148, 8, `${sum.toString(8).padStart(6, "0")}\0 `);
    blocks.push(h);
    if (e.type === undefined || e.type === "0") {
      const padded = new Uint8Array(Math.ceil(body.length / 512) * 512);
      padded.set(body);
      blocks.push(padded);
    }
  }
  blocks.push(new Uint8Array(1024));
  return Buffer.concat(blocks);
}

export function rawTarGz(entries: RawEntry[]): Uint8Array {
  return Bun.gzipSync(rawTar(entries) as Uint8Array<ArrayBuffer>);
}
