/**
 * The http source against servers on loopback port 0 that stall: without a deadline on the whole
 * fetch, no headers or no body bytes for `stallMs` is a retryable error; the caller's per-attempt
 * deadline is retryable too; the agent being stopped is not.
 */
import { describe, expect, test } from "bun:test";
import { FetchError } from "../../../src/errors.ts";
import { httpSource } from "../../../src/store/sources/http.ts";
import { httpServer } from "../../support/helpers.ts";

const OPTS = { env: {}, userAgent: "test" };

async function failure(p: Promise<unknown>): Promise<FetchError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(FetchError);
    return err as FetchError;
  }
  throw new Error("expected a FetchError");
}

/** A server that accepts connections and never answers. */
function silent() {
  const server = Bun.listen<undefined>({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  return { url: `http://127.0.0.1:${server.port}`, [Symbol.dispose]: () => server.stop(true) };
}

describe("http source: stalls", () => {
  test("no response headers within stallMs: retryable 'stalled'", async () => {
    using srv = silent();
    const err = await failure(httpSource.open(`${srv.url}/a.tgz`, { ...OPTS, stallMs: 200 }));
    expect(err.message).toBe(`fetch ${srv.url}/a.tgz: stalled: no data for 0.2s`);
    expect(err.retryable).toBe(true);
  });

  test("headers, some bytes, then silence: the body fails with a retryable 'stalled'", async () => {
    let release = () => {};
    await using srv = httpServer(
      () =>
        new Response(
          new ReadableStream({
            start(c) {
              c.enqueue(new Uint8Array(1000));
            },
            pull: () => new Promise<void>((r) => (release = r)), // never sends more until the test ends
          }),
          { headers: { "Content-Length": "5000" } },
        ),
    );
    try {
      const { body } = await httpSource.open(`${srv.url}/a.tgz`, { ...OPTS, stallMs: 200 });
      let got = 0;
      const err = await failure(
        (async () => {
          for await (const chunk of body) got += chunk.byteLength;
        })(),
      );
      expect(got).toBe(1000);
      expect(err.message).toBe(`fetch ${srv.url}/a.tgz: stalled: no data for 0.2s`);
      expect(err.retryable).toBe(true);
    } finally {
      release();
    }
  });

  test("a slow consumer is not a stall: the timer runs only while a read waits", async () => {
    await using srv = httpServer(() => new Response(new Uint8Array(3 * 65536)));
    const { body } = await httpSource.open(`${srv.url}/a.tgz`, { ...OPTS, stallMs: 100 });
    const reader = body.getReader();
    let got = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      got += value.byteLength;
      await Bun.sleep(150); // the consumer (extraction) being slow, longer than stallMs
    }
    expect(got).toBe(3 * 65536);
  });

  test("the caller's per-attempt deadline is retryable; the agent being stopped is not", async () => {
    using srv = silent();
    const timedOut = await failure(httpSource.open(`${srv.url}/a.tgz`, { ...OPTS, signal: AbortSignal.timeout(100) }));
    expect(timedOut.message).toBe(`fetch ${srv.url}/a.tgz: timed out`);
    expect(timedOut.retryable).toBe(true);
    const stop = new AbortController();
    setTimeout(() => stop.abort(new Error("interrupted by SIGTERM")), 100);
    const stopped = await failure(httpSource.open(`${srv.url}/a.tgz`, { ...OPTS, signal: stop.signal }));
    expect(stopped.message).toBe(`fetch ${srv.url}/a.tgz: interrupted by SIGTERM`);
    expect(stopped.retryable).toBe(false);
  });
});
