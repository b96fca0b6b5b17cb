/**
 * Checksums: the algorithm is decided by the hex digest's length, as stretcher does.
 */

export type HashAlgorithm = "md5" | "sha1" | "sha256" | "sha512";

/** Hex length → algorithm: the table the manifest's `checksum` is resolved with. */
export const ALGORITHM_BY_LENGTH: Record<number, HashAlgorithm> = {
  32: "md5",
  40: "sha1",
  64: "sha256",
  128: "sha512",
};

export interface Checksum {
  algorithm: HashAlgorithm;
  /** Lower-case hex. */
  hex: string;
}

/** Parse a hex digest; returns an error string naming the valid lengths on bad input. */
export function parseChecksum(input: string): Checksum | string {
  const hex = input.trim().toLowerCase();
  if (!/^[0-9a-f]+$/.test(hex)) return `not a hex digest: "${input}"`;
  const algorithm = ALGORITHM_BY_LENGTH[hex.length];
  if (!algorithm) {
    return `length ${hex.length} matches no algorithm (32 md5, 40 sha1, 64 sha256, 128 sha512)`;
  }
  return { algorithm, hex };
}

export function isHashAlgorithm(s: string): s is HashAlgorithm {
  return (Object.values(ALGORITHM_BY_LENGTH) as string[]).includes(s);
}

/** A streaming hasher over the compressed bytes. */
export function createHasher(algorithm: HashAlgorithm): { update(b: Uint8Array): void; hex(): string } {
  const h = new Bun.CryptoHasher(algorithm);
  return {
    update: (b) => void h.update(b),
    hex: () => h.digest("hex"),
  };
}
