/**
 * Small documents (the manifest, its `.sig`) against hostile servers on loopback port 0: one that
 * accepts and never answers, one that answers and trickles forever, endless and lying bodies, 5xx
 * then success. Every fetch ends within its deadline, never buffers past the cap, and retries only
 * what is retryable.
 */
import { describe, expect, test } from "bun:test";
import { FetchError } from "../../../src/errors.ts";
import { fetchBytes } from "../../../src/store/sources/index.ts";
import { httpServer, tcpServer } from "../../support/helpers.ts";

const OPTS = { env: {}, userAgent: "test" };

async function failure(p: Promise<unknown>): Promise<FetchError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(FetchError);
    return err as FetchError;
  }
  throw new Error("expected the fetch to fail");
}

describe("fetchBytes: deadline per attempt", () => {
  test("a server that accepts and never answers: fails at the deadline, retried, then one line", async () => {
    using srv = tcpServer(() => {});
    const started = performance.now();
    const retries: number[] = [];
    const err = await failure(
      fetchBytes(`${srv.url}/app.yml`, OPTS, 1 << 20, {
        timeoutMs: 300,
        retry: 1,
        retryWaitMs: 10,
        onRetry: (_e, n) => retries.push(n),
      }),
    );
    const ms = performance.now() - started;
    expect(err.message).toBe(`fetch ${srv.url}/app.yml: no complete answer within 0.3s (--timeout) (after 2 attempts)`);
    expect(retries).toEqual([2]);
    expect(srv.connections()).toBe(2);
    expect(ms).toBeGreaterThan(550);
    expect(ms).toBeLessThan(5000);
  });

  test("headers then a body trickled a byte at a time forever: the deadline covers the body", async () => {
    let stop = false;
    await using srv = httpServer(
      () =>
        new Response(
          new ReadableStream({
            async pull(c) {
              if (stop) return c.close();
              await Bun.sleep(20); // the hostile server's pace, not test synchronisation
              c.enqueue(new Uint8Array([0x61]));
            },
          }),
        ),
    );
    try {
      const err = await failure(fetchBytes(`${srv.url}/app.yml`, OPTS, 1 << 20, { timeoutMs: 400 }));
      expect(err.message).toBe(`fetch ${srv.url}/app.yml: no complete answer within 0.4s (--timeout)`);
      expect(err.retryable).toBe(true);
    } finally {
      stop = true;
    }
  });

  test("the agent's own signal (SIGTERM) is not retried", async () => {
    using srv = tcpServer(() => {});
    const stop = new AbortController();
    setTimeout(() => stop.abort(new Error("SIGTERM")), 100);
    const err = await failure(
      fetchBytes(`${srv.url}/m.yml`, { ...OPTS, signal: stop.signal }, 1 << 20, {
        timeoutMs: 10_000,
        retry: 5,
        retryWaitMs: 10,
      }),
    );
    expect(err.message).toBe(`fetch ${srv.url}/m.yml: interrupted`);
    expect(srv.connections()).toBe(1);
  });
});

describe("fetchBytes: size cap", () => {
  test("an endless body (10 GB worth) is cut at the cap, not buffered", async () => {
    let sent = 0;
    await using srv = httpServer(
      () =>
        new Response(
          new ReadableStream({
            pull(c) {
              sent += 65536;
              c.enqueue(new Uint8Array(65536));
              if (sent >= 10 * 2 ** 30) c.close();
            },
          }),
        ),
    );
    const err = await failure(fetchBytes(`${srv.url}/huge.yml`, OPTS, 1 << 20));
    expect(err.message).toBe(
      `fetch ${srv.url}/huge.yml: larger than 1048576 bytes; a manifest or signature is never that big: check the URL`,
    );
    expect(err.retryable).toBe(false);
    expect(sent).toBeLessThan(64 << 20);
  });

  test("a declared Content-Length of 10 GB is refused before the body is read", async () => {
    using srv = tcpServer((s) => {
      s.write("HTTP/1.1 200 OK\r\nContent-Length: 10737418240\r\n\r\nsrc: x\n");
    });
    const err = await failure(fetchBytes(`${srv.url}/lie.yml`, OPTS, 1 << 20, { timeoutMs: 2000 }));
    expect(err.message).toBe(
      `fetch ${srv.url}/lie.yml: larger than 1048576 bytes (10737418240 bytes); a manifest or signature is ` +
        "never that big: check the URL",
    );
  });

  test("a signature's cap is its own (4 KiB)", async () => {
    await using srv = httpServer(() => new Response("A".repeat(5000)));
    const err = await failure(fetchBytes(`${srv.url}/m.yml.sig`, OPTS, 4096));
    expect(err.message).toStartWith(`fetch ${srv.url}/m.yml.sig: larger than 4096 bytes`);
  });
});

describe("fetchBytes: --retry", () => {
  test("503, 502 then 200: the third attempt's bytes", async () => {
    await using srv = httpServer((_req, n) =>
      n < 3 ? new Response("busy", { status: n === 1 ? 503 : 502 }) : new Response("src: ok\n"),
    );
    const bytes = await fetchBytes(`${srv.url}/m.yml`, OPTS, 1 << 20, { retry: 2, retryWaitMs: 5 });
    expect(new TextDecoder().decode(bytes)).toBe("src: ok\n");
    expect(srv.requests).toHaveLength(3);
  });

  test("5xx beyond --retry: the last status, with the attempt count", async () => {
    await using srv = httpServer(() => new Response("no", { status: 500, statusText: "Internal Server Error" }));
    const err = await failure(fetchBytes(`${srv.url}/m.yml`, OPTS, 1 << 20, { retry: 2, retryWaitMs: 5 }));
    expect(err.message).toBe(`fetch ${srv.url}/m.yml: 500 Internal Server Error (after 3 attempts)`);
    expect(srv.requests).toHaveLength(3);
  });

  test("404 and 403 are not retried", async () => {
    for (const status of [403, 404]) {
      await using srv = httpServer(() => new Response("no", { status }));
      const err = await failure(fetchBytes(`${srv.url}/m.yml`, OPTS, 1 << 20, { retry: 3, retryWaitMs: 5 }));
      expect(err.status).toBe(status);
      expect(srv.requests).toHaveLength(1);
    }
  });

  test("credentials in the URL never reach the error", async () => {
    using srv = tcpServer(() => {});
    const url = `${srv.url.replace("http://", "http://deploy:hunter2@")}/m.yml?X-Amz-Signature=s3cr3t&X-Goog-Credential=gcred`;
    const err = await failure(fetchBytes(url, OPTS, 1 << 20, { timeoutMs: 100 }));
    expect(err.message).not.toContain("hunter2");
    expect(err.message).not.toContain("s3cr3t");
    expect(err.message).not.toContain("gcred");
  });
});
