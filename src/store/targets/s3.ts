/**
 * `s3://bucket/prefix`: the AWS SDK's commands, through the client of `s3client.ts` (full credential
 * chain, `AWS_ENDPOINT_URL_S3`-style endpoints).
 *
 * A stream is cut into parts as it arrives. If it ends within the first part it is one PutObject
 * under its final name. Otherwise it is a multipart upload (parts of `partSize`, `concurrency` in
 * flight, each retried) to a staging key, because the final name holds the checksum and is known only
 * at the end; once complete, the object is copied server-side to its final name and the staging key
 * deleted. Any failure aborts the upload: nothing is left under a final name.
 *
 * Never overwriting: a HEAD first (a 403 there is not fatal: the caller may lack s3:GetObject) and
 * `If-None-Match: *` on the write, which AWS S3 enforces and stores that ignore it do not mind.
 */
import { UsageError } from "../../errors.ts";
import { redact } from "../../log.ts";
import { createS3Client, parseS3Url, S3_RETRYABLE_CODES } from "../s3client.ts";
import { networkMessage } from "../network.ts";
import { encodePath, UploadError, withRetries, type Target, type TargetOptions } from "./types.ts";

export interface S3TargetTuning {
  /** Bytes per part (≥ 5 MiB, S3's minimum). */
  partSize: number;
  /** Parts in flight. */
  concurrency: number;
  /** Above this size the copy to the final name is itself multipart (CopyObject's limit is 5 GiB). */
  copyLimit: number;
}

export const DEFAULT_S3_TUNING: S3TargetTuning = { partSize: 8 * 2 ** 20, concurrency: 4, copyLimit: 5 * 2 ** 30 };

/**
 * Bun's HTTP client copies each request body, and the collector frees such large buffers lazily:
 * with parts cycling through, memory would climb with the archive's size. Collecting when the
 * process passes this size keeps it flat (measured: 240 MB and 1 GiB trees both peak at ~130 MB).
 */
const RSS_SOFT_LIMIT = 120 * 2 ** 20;

export async function s3Target(
  url: string,
  opts: TargetOptions,
  tuning: S3TargetTuning = DEFAULT_S3_TUNING,
): Promise<Target> {
  let loc: { bucket: string; key: string };
  try {
    loc = parseS3Url(url);
  } catch (err) {
    throw new UsageError(`--to: ${(err as Error).message}`);
  }
  const bucket = loc.bucket;
  const prefix = loc.key === "" ? "" : `${loc.key.replace(/\/+$/, "")}/`;
  const base = `s3://${bucket}${prefix === "" ? "" : `/${encodePath(prefix.slice(0, -1))}`}`;
  const client = await createS3Client(opts.env);
  const s3 = await import("@aws-sdk/client-s3");
  const urlOf = (name: string) => `${base}/${encodePath(name)}`;
  const keyOf = (name: string) => `${prefix}${name}`;
  const abortSignal = opts.signal;
  const send = <T>(what: string, call: () => Promise<T>): Promise<T> =>
    withRetries(what, opts, async () => {
      try {
        return await call();
      } catch (err) {
        throw s3Error(what, opts, err);
      }
    });

  /** Refuse a taken name. A 403 on HEAD is not an answer (no s3:GetObject): the write's If-None-Match decides. */
  const ensureFree = async (name: string) => {
    try {
      await client.send(new s3.HeadObjectCommand({ Bucket: bucket, Key: keyOf(name) }), { abortSignal: opts.signal });
    } catch (err) {
      const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
      if (status === 404 || status === 403) return;
      throw s3Error(`store ${urlOf(name)}`, opts, err);
    }
    throw new UploadError(`store ${urlOf(name)}: already exists (releases are never overwritten)`, { exists: true });
  };

  // Part buffers are reused, and parts in flight counted, across every stream of this target (publish
  // uploads a pack beside the archive): at most concurrency + one per stream exist, whatever the sizes.
  const free: Buffer[] = [];
  let partsInFlight = 0;
  const slotFree: (() => void)[] = [];

  const putObject = async (name: string, body: Uint8Array, contentType: string) => {
    await ensureFree(name);
    await send(`store ${urlOf(name)}`, () =>
      client.send(
        new s3.PutObjectCommand({
          Bucket: bucket,
          Key: keyOf(name),
          Body: body,
          ContentType: contentType,
          IfNoneMatch: "*",
        }),
        { abortSignal },
      ),
    );
    opts.onSent?.(body.byteLength);
  };

  return {
    base,
    urlOf,
    async preflight() {
      try {
        await client.send(new s3.HeadBucketCommand({ Bucket: bucket }), { abortSignal: opts.signal });
      } catch (err) {
        const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
        const status = e.$metadata?.httpStatusCode;
        // 403: maybe only s3:ListBucket is missing; the upload itself will tell.
        if (status === 403 || status === 301) return;
        if (status === 404)
          throw new UploadError(`store ${base}: bucket "${bucket}" does not exist (404 NoSuchBucket)`, { status });
        throw s3Error(`store ${base}`, opts, err);
      }
    },

    async putStream(body, name, contentType) {
      const reader = body.getReader();
      let current: Buffer = free.pop() ?? Buffer.allocUnsafe(tuning.partSize);
      let filled = 0;
      let multipart: { key: string; url: string; uploadId: string } | undefined;
      const parts: { PartNumber: number; ETag: string }[] = [];
      const inFlight = new Set<Promise<void>>();
      let failure: unknown;
      let size = 0;
      let partNumber = 0;

      const start = async () => {
        const key = `${prefix}.pulldeploy-staging/${Date.now()}-${Math.random().toString(36).slice(2, 10)}`;
        const created = await send(`store ${base}: start a multipart upload`, () =>
          client.send(new s3.CreateMultipartUploadCommand({ Bucket: bucket, Key: key, ContentType: contentType }), {
            abortSignal,
          }),
        );
        return { key, url: `s3://${bucket}/${encodePath(key)}`, uploadId: created.UploadId! };
      };
      /** Send `current` as the next part; wait while `concurrency` parts are in flight. */
      const flush = async () => {
        multipart ??= await start();
        const { key, uploadId } = multipart;
        const buffer = current;
        const bytes = buffer.subarray(0, filled);
        const n = ++partNumber;
        size += bytes.length;
        const p = send(`store ${base}: archive part ${n} (multipart upload)`, () =>
          client.send(
            new s3.UploadPartCommand({ Bucket: bucket, Key: key, UploadId: uploadId, PartNumber: n, Body: bytes }),
            { abortSignal },
          ),
        ).then(
          (res) => {
            parts.push({ PartNumber: n, ETag: res.ETag! });
            opts.onSent?.(bytes.byteLength);
            free.push(buffer);
            if (process.memoryUsage.rss() > RSS_SOFT_LIMIT) Bun.gc(true);
          },
          (err) => {
            failure ??= err;
          },
        );
        partsInFlight++;
        const tracked = p.finally(() => {
          inFlight.delete(tracked);
          partsInFlight--;
          slotFree.shift()?.();
        });
        inFlight.add(tracked);
        current = free.pop() ?? Buffer.allocUnsafe(tuning.partSize);
        filled = 0;
        while (partsInFlight >= tuning.concurrency) await new Promise<void>((resolve) => slotFree.push(resolve));
      };

      try {
        for (;;) {
          if (failure) break;
          const { done, value } = await reader.read();
          if (done) break;
          for (let off = 0; off < value.byteLength && !failure; ) {
            const n = Math.min(value.byteLength - off, tuning.partSize - filled);
            current.set(value.subarray(off, off + n), filled);
            filled += n;
            off += n;
            if (filled === tuning.partSize) await flush();
          }
        }
        if (!failure && !multipart) {
          // A small archive: one PutObject under its final name.
          await putObject(name(), current.subarray(0, filled), contentType);
          free.push(current);
          return;
        }
        if (!failure && filled > 0) await flush();
        await Promise.all(inFlight);
        if (failure) throw failure;
        free.push(current);
        parts.sort((a, b) => a.PartNumber - b.PartNumber);
        const { key, uploadId } = multipart!;
        await send(`store ${base}: complete the multipart upload`, () =>
          client.send(
            new s3.CompleteMultipartUploadCommand({
              Bucket: bucket,
              Key: key,
              UploadId: uploadId,
              MultipartUpload: { Parts: parts },
            }),
            { abortSignal },
          ),
        );
        opts.log.info(
          `store ${base}: multipart upload of ${parts.length} parts done (${size} bytes) to ${multipart!.url}; ` +
            "copying it to its final name",
        );
      } catch (err) {
        await reader.cancel(err).catch(() => {});
        await Promise.allSettled(inFlight);
        if (multipart) {
          const { key, url, uploadId } = multipart;
          await client
            .send(new s3.AbortMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: uploadId }))
            .catch((e) => {
              opts.log.info(
                `store ${url}: could not abort multipart upload ${uploadId} (a lifecycle rule for incomplete ` +
                  `uploads will clear it): ${(e as Error).message}`,
              );
            });
        }
        throw err;
      }
      const { key: stagingKey, url: stagingUrl } = multipart!;

      // The archive is whole; give it its final name.
      const final = name();
      try {
        await ensureFree(final);
        const source = `${bucket}/${encodePath(stagingKey)}`;
        if (size <= tuning.copyLimit) {
          await send(`store ${urlOf(final)}: copy from ${stagingUrl}`, () =>
            client.send(
              new s3.CopyObjectCommand({
                Bucket: bucket,
                Key: keyOf(final),
                CopySource: source,
                ContentType: contentType,
                MetadataDirective: "REPLACE",
                IfNoneMatch: "*",
              }),
              { abortSignal },
            ),
          );
        } else {
          await multipartCopy(final, source, size, contentType);
        }
      } finally {
        await client.send(new s3.DeleteObjectCommand({ Bucket: bucket, Key: stagingKey })).catch((e) => {
          opts.log.info(`store ${stagingUrl}: could not delete the staging copy: ${(e as Error).message}`);
        });
      }
    },

    async putBytes(name, bytes, contentType) {
      await putObject(name, bytes, contentType);
    },

    close() {
      client.destroy();
    },
  };

  /** CopyObject stops at 5 GiB: copy ranges of `copyLimit` as parts instead. */
  async function multipartCopy(final: string, source: string, size: number, contentType: string): Promise<void> {
    const what = `store ${urlOf(final)}`;
    const { UploadId } = await send(what, () =>
      client.send(
        new s3.CreateMultipartUploadCommand({ Bucket: bucket, Key: keyOf(final), ContentType: contentType }),
        { abortSignal },
      ),
    );
    try {
      const ranges: [number, number][] = [];
      for (let start = 0; start < size; start += tuning.copyLimit)
        ranges.push([start, Math.min(start + tuning.copyLimit, size) - 1]);
      const parts = await Promise.all(
        ranges.map(async ([start, end], i) => {
          const res = await send(`${what}: copy part ${i + 1}`, () =>
            client.send(
              new s3.UploadPartCopyCommand({
                Bucket: bucket,
                Key: keyOf(final),
                UploadId,
                PartNumber: i + 1,
                CopySource: source,
                CopySourceRange: `bytes=${start}-${end}`,
              }),
              { abortSignal },
            ),
          );
          return { PartNumber: i + 1, ETag: res.CopyPartResult!.ETag! };
        }),
      );
      await send(what, () =>
        client.send(
          new s3.CompleteMultipartUploadCommand({
            Bucket: bucket,
            Key: keyOf(final),
            UploadId,
            MultipartUpload: { Parts: parts },
            IfNoneMatch: "*",
          }),
          { abortSignal },
        ),
      );
    } catch (err) {
      await client
        .send(new s3.AbortMultipartUploadCommand({ Bucket: bucket, Key: keyOf(final), UploadId }))
        .catch(() => {});
      throw err;
    }
  }
}

/** Anything the SDK throws, as a one-line `UploadError`: `store s3://b/k: 403 AccessDenied`. */
function s3Error(what: string, opts: TargetOptions, err: unknown): UploadError {
  if (err instanceof UploadError) return err;
  const e = err as { name?: string; code?: string; message?: string; $metadata?: { httpStatusCode?: number } };
  const where = redact(what);
  const status = e.$metadata?.httpStatusCode;
  if (e.name === "CredentialsProviderError") {
    const hint = opts.env.AWS_PROFILE
      ? ` for AWS_PROFILE=${opts.env.AWS_PROFILE}`
      : ": set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or run with an instance or task role";
    return new UploadError(`${where}: no AWS credentials found${hint}`, { cause: err });
  }
  if (e.message === "Region is missing")
    return new UploadError(`${where}: no AWS region: set AWS_REGION or a region in the profile`, { cause: err });
  if (e.name === "AbortError") return new UploadError(`${where}: interrupted`, { cause: err });
  if (status !== undefined) {
    const code = e.name && e.name !== "Error" && e.name !== "UnknownError" ? e.name : "error";
    if (status === 412)
      return new UploadError(`${where}: already exists (releases are never overwritten)`, {
        exists: true,
        status,
        cause: err,
      });
    const retryable = status >= 500 || status === 429 || S3_RETRYABLE_CODES.has(code);
    const hint = code === "NoSuchBucket" ? " (the bucket does not exist)" : "";
    return new UploadError(`${where}: ${status} ${code}${hint}`, { retryable, status, cause: err });
  }
  return new UploadError(`${where}: ${networkMessage(err)}`, { retryable: true, cause: err });
}
