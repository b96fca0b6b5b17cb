/**
 * One place that builds the S3 client for sources and publish targets: region and endpoint from the
 * passed environment, the SDK's default credential chain, path-style addressing and checksums only
 * when required for S3-compatible endpoints (which disagree with the SDK's aws-chunked uploads).
 */
import type { S3Client } from "@aws-sdk/client-s3";
import { FetchError } from "../errors.ts";
import type { Env } from "../env.ts";

export interface S3Location {
  bucket: string;
  key: string;
}

/** `s3://bucket/key/with/slashes` → bucket and key (key may be empty for a prefix). */
export function parseS3Url(url: string): S3Location {
  const m = /^s3:\/\/([^/]+)\/?(.*)$/i.exec(url);
  if (!m || m[1] === "") throw new FetchError(`${url}: not an S3 URL (expected s3://bucket/key)`, false);
  return { bucket: m[1]!, key: decodeURIComponent(m[2]!) };
}

/**
 * Error codes that mean "try again later" whatever the HTTP status they come with (a 5xx or 429 is
 * retried anyway), for downloads and uploads alike: throttling (`SlowDown`, `Throttling`,
 * `ThrottlingException`), a request too slow for S3 (`RequestTimeout`, a 400), a clock off by more
 * than 15 minutes (`RequestTimeTooSkewed`, a 403 the SDK corrects on the next attempt) and
 * `InternalError` (S3's "retry", which CompleteMultipartUpload can send inside a 200 that the SDK
 * turns into an error). The union of the lists the source and the target used to keep apart: none of
 * these codes is a reason to give up on either side.
 */
export const S3_RETRYABLE_CODES: ReadonlySet<string> = new Set([
  "SlowDown",
  "Throttling",
  "ThrottlingException",
  "RequestTimeout",
  "RequestTimeTooSkewed",
  "InternalError",
]);

export function s3Endpoint(env: Env): string | undefined {
  const e = env.AWS_ENDPOINT_URL_S3 ?? env.AWS_ENDPOINT_URL;
  return e && e !== "" ? e : undefined;
}

export async function createS3Client(env: Env): Promise<S3Client> {
  const { S3Client } = await import("@aws-sdk/client-s3");
  const endpoint = s3Endpoint(env);
  const region = env.AWS_REGION || env.AWS_DEFAULT_REGION || undefined;
  return new S3Client({
    // Without a region the SDK reads the profile's; S3-compatible stores accept any.
    ...(region ? { region } : endpoint ? { region: "us-east-1" } : {}),
    ...(endpoint
      ? {
          endpoint,
          forcePathStyle: true,
          requestChecksumCalculation: "WHEN_REQUIRED",
          responseChecksumValidation: "WHEN_REQUIRED",
        }
      : {}),
  });
}
