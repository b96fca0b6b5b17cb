/**
 * The compiled binary deploying from S3 (a loopback s3rver behind a Signature V4 check): the AWS
 * SDK has been reported to lose its credential chain only after bundling, so credentials are
 * proven here, through `dist/pulldeploy`, from environment variables and from a shared credentials
 * file with a named profile. The child gets only the variables each case sets (plus PATH and
 * TMPDIR), a HOME without ~/.aws, and never an instance metadata service.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BINARY, listTree, run, sha, tarGz, writeTree } from "../support/helpers.ts";
import { startS3Server, type S3TestServer } from "../support/s3-server.ts";

const BUCKET = "releases";
const PAYLOAD = randomBytes(2 * 1024 * 1024 + 5);

let s3: S3TestServer;
let dir: string;
let archiveSha: string;

beforeAll(async () => {
  if (!existsSync(BINARY)) throw new Error(`${BINARY} is missing: run \`make build\` first`);
  s3 = await startS3Server();
  dir = await mkdtemp(join(tmpdir(), "pd-s3-e2e-"));
  const src = join(dir, "app-src");
  mkdirSync(src);
  writeTree(src, {
    "index.html": "<h1>release 42</h1>\n",
    "bin/start.sh": { mode: 0o755, content: "#!/bin/sh\necho started\n" },
    "assets/payload.bin": PAYLOAD,
  });
  const archive = tarGz(src, join(dir, "app.tar.gz"));
  archiveSha = sha(archive);
  await s3.createBucket(BUCKET);
  await s3.put(BUCKET, "app.tar.gz", readFileSync(archive));
});

afterAll(async () => {
  await s3?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** Upload a manifest deploying the archive into `dest`; returns its s3:// URL. */
async function manifestFor(name: string, dest: string): Promise<string> {
  const yaml = [`src: s3://${BUCKET}/app.tar.gz`, `checksum: ${archiveSha}`, `dest: ${dest}`, ""].join("\n");
  await s3.put(BUCKET, `${name}.yml`, yaml);
  return `s3://${BUCKET}/${name}.yml`;
}

/** The child's environment: the given variables, an empty HOME, no reachable instance metadata. */
function childEnv(home: string, vars: Record<string, string>): Record<string, string | undefined> {
  return {
    HOME: home,
    AWS_EC2_METADATA_DISABLED: "true",
    AWS_CONFIG_FILE: join(home, "no-such-aws-config"),
    AWS_SHARED_CREDENTIALS_FILE: join(home, "no-such-aws-credentials"),
    ...vars,
  };
}

/** A fresh case directory with a HOME and a dest path (not yet created). */
function caseDir(name: string): { home: string; dest: string } {
  const root = join(dir, name);
  const home = join(root, "home");
  mkdirSync(home, { recursive: true });
  return { home, dest: join(root, "dest") };
}

function expectDeployed(dest: string): void {
  expect(listTree(dest)).toEqual(["assets/", "assets/payload.bin", "bin/", "bin/start.sh", "index.html"]);
  expect(readFileSync(join(dest, "index.html"), "utf8")).toBe("<h1>release 42</h1>\n");
  expect(readFileSync(join(dest, "bin/start.sh"), "utf8")).toBe("#!/bin/sh\necho started\n");
  expect(readFileSync(join(dest, "assets/payload.bin")).equals(PAYLOAD)).toBe(true);
}

describe("pulldeploy agent from s3:// (compiled binary)", () => {
  test("credentials from environment variables", async () => {
    const { home, dest } = caseDir("env");
    const url = await manifestFor("env", dest);
    const r = await run(["agent"], { stdin: `${url}\n`, env: childEnv(home, s3.env) });
    if (r.code !== 0) console.error(r.stderr);
    expect(r.code).toBe(0);
    expectDeployed(dest);
  });

  test("credentials from a shared credentials file and a named profile only", async () => {
    const { home, dest } = caseDir("profile");
    const url = await manifestFor("profile", dest);
    const credentials = join(home, "aws-credentials");
    // The default profile's secret is wrong: success proves the named profile was read.
    writeFileSync(
      credentials,
      [
        "[default]",
        `aws_access_key_id = ${s3.accessKeyId}`,
        "aws_secret_access_key = the-default-profile-is-wrong",
        "",
        "[deployer]",
        `aws_access_key_id = ${s3.accessKeyId}`,
        `aws_secret_access_key = ${s3.secretAccessKey}`,
        "",
      ].join("\n"),
      { mode: 0o600 },
    );
    const env = childEnv(home, {
      AWS_ENDPOINT_URL_S3: s3.endpoint,
      AWS_REGION: s3.region,
      AWS_SHARED_CREDENTIALS_FILE: credentials,
      AWS_PROFILE: "deployer",
    });
    expect(env.AWS_ACCESS_KEY_ID).toBeUndefined();
    expect(env.AWS_SECRET_ACCESS_KEY).toBeUndefined();
    const r = await run(["agent"], { stdin: `${url}\n`, env });
    if (r.code !== 0) console.error(r.stderr);
    expect(r.code).toBe(0);
    expectDeployed(dest);
  });

  test("a wrong secret: exit 1, a 403 on stderr, dest untouched", async () => {
    const { home, dest } = caseDir("wrong-secret");
    const url = await manifestFor("wrong-secret", dest);
    writeTree(dest, { "current.txt": "the release before\n" });
    const r = await run(["agent"], {
      stdin: `${url}\n`,
      env: childEnv(home, { ...s3.env, AWS_SECRET_ACCESS_KEY: "not-the-secret" }),
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`fetch ${url.replaceAll(".", "\\.")}: 403 SignatureDoesNotMatch`));
    expect(r.stderr).not.toContain("not-the-secret");
    expect(listTree(dest)).toEqual(["current.txt"]);
    expect(readFileSync(join(dest, "current.txt"), "utf8")).toBe("the release before\n");
  });

  test("no credentials anywhere: exit 1 with one clear line, dest untouched", async () => {
    const { home, dest } = caseDir("no-credentials");
    const url = await manifestFor("no-credentials", dest);
    const r = await run(["agent"], {
      stdin: `${url}\n`,
      env: childEnv(home, { AWS_ENDPOINT_URL_S3: s3.endpoint, AWS_REGION: s3.region }),
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(
      `fetch ${url}: no AWS credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE`,
    );
    expect(existsSync(dest)).toBe(false);
  });
});
