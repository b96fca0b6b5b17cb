/**
 * `s3://bucket/key`: one GetObject through the client of `s3client.ts`, so credentials come from
 * the SDK's default chain (environment, shared files and profiles, SSO, web identity, ECS, EC2).
 * Errors name the store's code (`403 AccessDenied`, `404 NoSuchKey`); 5xx, throttling and network
 * errors are retryable, a credential chain that finds nothing is not.
 */
import { FetchError } from "../../errors.ts";
import { redact } from "../../log.ts";
import { createS3Client, parseS3Url, S3_RETRYABLE_CODES } from "../s3client.ts";
import { isTimeout } from "../network.ts";
import type { Env } from "../../env.ts";
import type { Source } from "./types.ts";

export const s3Source: Source = {
  async open(url, opts) {
    const { bucket, key } = parseS3Url(url);
    const offset = opts.offset ?? 0;
    const ranged = offset > 0 || opts.length !== undefined;
    const client = await createS3Client(opts.env);
    const { GetObjectCommand } = await import("@aws-sdk/client-s3");
    try {
      const res = await client.send(
        new GetObjectCommand({
          Bucket: bucket,
          Key: key,
          ...(ranged ? { Range: `bytes=${offset}-${opts.length === undefined ? "" : offset + opts.length - 1}` } : {}),
        }),
        { abortSignal: opts.signal },
      );
      if (!res.Body) throw new FetchError(`fetch ${redact(url)}: the store sent no body`, true);
      if (ranged && !res.ContentRange) {
        await res.Body.transformToWebStream()
          .cancel()
          .catch(() => {});
        throw new FetchError(`fetch ${redact(url)}: the store ignored the Range request`, false);
      }
      const size =
        res.ContentLength === undefined || opts.length !== undefined ? undefined : res.ContentLength + offset;
      return {
        body: closingWith(url, opts.env, res.Body.transformToWebStream(), () => client.destroy(), opts.signal),
        size,
      };
    } catch (err) {
      client.destroy();
      throw err instanceof FetchError ? err : fetchError(url, opts.env, err, opts.signal);
    }
  },
};

/** Turn anything the SDK throws into a one-line `FetchError`. */
function fetchError(url: string, env: Env, err: unknown, signal?: AbortSignal): FetchError {
  const e = err as { name?: string; code?: string; message?: string; $metadata?: { httpStatusCode?: number } };
  const where = `fetch ${redact(url)}`;
  const status = e.$metadata?.httpStatusCode;
  if (e.name === "CredentialsProviderError") {
    const detail = e.message === "Could not load credentials from any providers" ? "" : ` (${e.message})`;
    const hint = env.AWS_PROFILE
      ? ` for AWS_PROFILE=${env.AWS_PROFILE}: check that the profile exists in ` +
        `${env.AWS_SHARED_CREDENTIALS_FILE ?? "~/.aws/credentials"} or ${env.AWS_CONFIG_FILE ?? "~/.aws/config"}`
      : ": set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or run with an instance or task role";
    return new FetchError(`${where}: no AWS credentials found${hint}${detail}`, false, { cause: err });
  }
  if (e.message === "Region is missing") {
    return new FetchError(`${where}: no AWS region: set AWS_REGION or a region in the profile`, false, { cause: err });
  }
  if (e.name === "AbortError" || e.name === "TimeoutError" || signal?.aborted) {
    // A per-attempt deadline (--timeout) is worth another attempt; the agent being stopped is not.
    return new FetchError(`${where}: timed out`, isTimeout(signal?.reason), { cause: err });
  }
  if (status !== undefined) {
    // The SDK names the error after the store's <Code>; without one it falls back to the status.
    const code = e.name && e.name !== "Error" && e.name !== "UnknownError" ? e.name : "error";
    const retryable = status >= 500 || status === 429 || S3_RETRYABLE_CODES.has(code);
    return new FetchError(`${where}: ${status} ${code}`, retryable, { cause: err, status });
  }
  const detail = e.code ? `${e.code}: ${e.message}` : String(e.message ?? err);
  return new FetchError(`${where}: ${detail}`, true, { cause: err });
}

/**
 * `body`, calling `close` once when it ends, fails or is cancelled, so the client's sockets are
 * released as soon as the object has been read. A failure mid-body becomes a `FetchError` too.
 */
function closingWith(
  url: string,
  env: Env,
  body: ReadableStream<Uint8Array>,
  close: () => void,
  signal?: AbortSignal,
): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  let closed = false;
  const closeOnce = () => {
    if (!closed) {
      closed = true;
      close();
    }
  };
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        try {
          const { done, value } = await reader.read();
          if (done) {
            closeOnce();
            controller.close();
          } else {
            controller.enqueue(value);
          }
        } catch (err) {
          closeOnce();
          controller.error(fetchError(url, env, err, signal));
        }
      },
      async cancel(reason) {
        try {
          await reader.cancel(reason);
        } finally {
          closeOnce();
        }
      },
    },
    { highWaterMark: 0 },
  );
}
