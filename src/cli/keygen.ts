/** `pulldeploy keygen --out FILE`: an Ed25519 key pair for signed manifests (FILE and FILE.pub). */
import { defineCommand, type ArgsDef } from "citty";
import { writeKeyPair } from "../signature.ts";
import type { CommandEnv } from "./context.ts";

const args = {
  out: {
    type: "string",
    description: "Private key file to write (the public key goes to FILE.pub); never overwritten",
    valueHint: "file",
    default: "pulldeploy.key",
  },
} as const satisfies ArgsDef;

export default defineCommand({
  meta: {
    name: "keygen",
    description:
      "Make an Ed25519 key pair: sign with `publish --sign-key FILE`, trust with `agent --trust-key FILE.pub`",
  },
  args,
  run({ args, data }) {
    const { log } = data as CommandEnv;
    const out = args.out;
    writeKeyPair(out);
    log.info(`keygen: wrote ${out} (private, mode 0600) and ${out}.pub (public)`);
    process.stdout.write(`${out}\n${out}.pub\n`);
    return 0;
  },
});
