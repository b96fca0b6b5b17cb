/**
 * Decompression with a cap on the output, through the runtime's native `DecompressionStream`: a
 * chunk or index from the store is untrusted until hashed, and a small deflate stream can expand a
 * thousandfold. (node:zlib's `maxOutputLength` would do the same, but loading node:zlib costs the
 * agent ~10 MB of RSS.)
 */
export async function inflateCapped(
  bytes: Uint8Array,
  format: "gzip" | "deflate-raw",
  max: number,
): Promise<Uint8Array> {
  const ds = new DecompressionStream(format);
  const writer = ds.writable.getWriter();
  writer.write(bytes as Uint8Array<ArrayBuffer>).catch(() => {});
  writer.close().catch(() => {});
  const reader = ds.readable.getReader();
  const parts: Uint8Array[] = [];
  let n = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    n += value.byteLength;
    if (n > max) {
      await reader.cancel().catch(() => {});
      throw new Error(`inflates to more than ${max} bytes`);
    }
    parts.push(value);
  }
  return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
}
