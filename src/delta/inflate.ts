/**
 * Decompression with a cap on the output, through the runtime's native `DecompressionStream`: a
 * chunk or index from the store is untrusted until hashed, and a small deflate stream can expand a
 * thousandfold. (node:zlib's `maxOutputLength` would do the same, but loading node:zlib costs the
 * agent ~10 MB of RSS.)
 */
const PIECE = 64 * 1024;

export async function inflateCapped(
  bytes: Uint8Array,
  format: "gzip" | "deflate-raw",
  max: number,
): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  await inflatePieces(bytes, format, max, (piece) => parts.push(piece));
  return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
}

/**
 * The same, decoded as UTF-8 text piece by piece: never the inflated bytes whole beside the text
 * (a lower peak RSS than inflating, concatenating, then decoding).
 */
export async function inflateText(bytes: Uint8Array, format: "gzip" | "deflate-raw", max: number): Promise<string> {
  const decoder = new TextDecoder();
  const text: string[] = [];
  await inflatePieces(bytes, format, max, (piece) => text.push(decoder.decode(piece, { stream: true })));
  text.push(decoder.decode());
  return text.join("");
}

/**
 * The same into one buffer of `hint` bytes (grown when the output is larger): never the pieces and
 * their concatenation at once, and each piece's memory given back once copied.
 */
export async function inflateInto(
  bytes: Uint8Array,
  format: "gzip" | "deflate-raw",
  max: number,
  hint: number,
): Promise<Uint8Array> {
  let out = new Uint8Array(Math.min(Math.max(hint, PIECE), max));
  let n = 0;
  await inflatePieces(bytes, format, max, (piece) => {
    if (n + piece.byteLength > out.byteLength) {
      const bigger = new Uint8Array(Math.min(Math.max(2 * out.byteLength, n + piece.byteLength), max));
      bigger.set(out.subarray(0, n));
      out = bigger;
    }
    out.set(piece, n);
    n += piece.byteLength;
    const buffer = piece.buffer;
    if (buffer instanceof ArrayBuffer && piece.byteOffset === 0 && piece.byteLength === buffer.byteLength)
      buffer.transfer(0);
  });
  return out.subarray(0, n);
}

async function inflatePieces(
  bytes: Uint8Array,
  format: "gzip" | "deflate-raw",
  max: number,
  each: (piece: Uint8Array) => void,
): Promise<void> {
  const ds = new DecompressionStream(format);
  const writer = ds.writable.getWriter();
  // In pieces, each written once the last was taken: the runtime holds less output at a time than
  // when the input is written whole.
  void (async () => {
    for (let at = 0; at < bytes.byteLength; at += PIECE)
      await writer.write(bytes.subarray(at, at + PIECE) as Uint8Array<ArrayBuffer>);
    await writer.close();
  })().catch(() => {});
  const reader = ds.readable.getReader();
  let n = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    n += value.byteLength;
    if (n > max) {
      await reader.cancel().catch(() => {});
      throw new Error(`inflates to more than ${max} bytes`);
    }
    each(value);
  }
}
