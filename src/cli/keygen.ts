/** `pulldeploy keygen --out FILE`: an Ed25519 key pair for signed manifests (FILE and FILE.pub). */
import { defineCommand, type ArgsDef } from "citty";
import * as fs from "node:fs";
import { UsageError } from "../errors.ts";
import { generateKeys } from "../signature.ts";
import type { CommandEnv } from "./context.ts";

const args = {
  out: { type: "string", description: "Private key file to write (the public key goes to FILE.pub); never overwritten", valueHint: "file", default: "pulldeploy.key" },
} as const satisfies ArgsDef;

export default defineCommand({
  meta: { name: "keygen", description: "Make an Ed25519 key pair: sign with `publish --sign-key FILE`, trust with `agent --trust-key FILE.pub`" },
  args,
  run({ args, data }) {
    const { log } = data as CommandEnv;
    const out = args.out;
    for (const f of [out, `${out}.pub`]) {
      if (fs.existsSync(f)) throw new UsageError(`${f} exists; keys are never overwritten (choose another --out)`);
    }
    const { privatePem, publicPem } = generateKeys();
    fs.writeFileSync(out, privatePem, { mode: 0o600, flag: "wx" });
    fs.writeFileSync(`${out}.pub`, publicPem, { mode: 0o644, flag: "wx" });
    log.info(`keygen: wrote ${out} (private, mode 0600) and ${out}.pub (public)`);
    process.stdout.write(`${out}\n${out}.pub\n`);
    return 0;
  },
});
