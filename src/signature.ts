/**
 * Signed manifests: Ed25519 over the manifest's exact bytes, a detached base64 signature stored next to
 * the manifest as `<manifest URL>.sig`. The manifest carries the archive's checksum, so one signature
 * protects both. Keys are PEM files (PKCS#8 private, SPKI public), made by `pulldeploy keygen`.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from "node:crypto";
import * as fs from "node:fs";
import { PulldeployError, UsageError } from "./errors.ts";

export const SIGNATURE_SUFFIX = ".sig";

export function generateKeys(): { privatePem: string; publicPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  return {
    privatePem: privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
    publicPem: publicKey.export({ type: "spki", format: "pem" }).toString(),
  };
}

/**
 * A new key pair as `out` (private, 0600) and `out.pub` (public, 0644). Keys are never overwritten:
 * either file existing is an error, checked before either is written (and O_EXCL on each).
 */
export function writeKeyPair(out: string): { privateFile: string; publicFile: string } {
  const publicFile = `${out}.pub`;
  for (const f of [out, publicFile]) {
    if (fs.existsSync(f)) throw new UsageError(`${f} exists; keys are never overwritten (choose another --out)`);
  }
  const { privatePem, publicPem } = generateKeys();
  fs.writeFileSync(out, privatePem, { mode: 0o600, flag: "wx" });
  fs.writeFileSync(publicFile, publicPem, { mode: 0o644, flag: "wx" });
  return { privateFile: out, publicFile };
}

export function loadPrivateKey(path: string): KeyObject {
  const key = readKey(path, (pem) => createPrivateKey(pem));
  if (key.asymmetricKeyType !== "ed25519")
    throw new PulldeployError(`${path}: not an Ed25519 private key (make one with pulldeploy keygen)`);
  return key;
}

/** A trust key file: a public key, or a private key (its public half is used). */
export function loadPublicKey(path: string): KeyObject {
  const key = readKey(path, (pem) =>
    pem.includes("PRIVATE KEY") ? createPublicKey(createPrivateKey(pem)) : createPublicKey(pem),
  );
  if (key.asymmetricKeyType !== "ed25519")
    throw new PulldeployError(`${path}: not an Ed25519 public key (make one with pulldeploy keygen)`);
  return key;
}

export function signBytes(bytes: Uint8Array, key: KeyObject): string {
  return `${sign(null, bytes, key).toString("base64")}\n`;
}

/** Is `signature` (base64 text) a valid signature of `bytes` by any of `keys`? */
export function verifyBytes(bytes: Uint8Array, signature: string, keys: KeyObject[]): boolean {
  const sig = Buffer.from(signature.trim(), "base64");
  if (sig.length !== 64) return false;
  return keys.some((k) => verify(null, bytes, k, sig));
}

function readKey(path: string, parse: (pem: string) => KeyObject): KeyObject {
  let pem: string;
  try {
    pem = fs.readFileSync(path, "utf8");
  } catch (err) {
    throw new PulldeployError(
      `${path}: cannot read key file (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
      undefined,
      { cause: err },
    );
  }
  try {
    return parse(pem);
  } catch (err) {
    throw new PulldeployError(`${path}: not a PEM key file (make one with pulldeploy keygen)`, undefined, {
      cause: err,
    });
  }
}
