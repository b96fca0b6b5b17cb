/** Where the Consul agent is and how to reach it: Consul's variables and the flags, every problem at once. */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { consulConfig, type ConsulConfig } from "../../src/consul/config.ts";
import { UsageError } from "../../src/errors.ts";
import { tempDir } from "../support/helpers.ts";

describe("consulConfig", () => {
  const dir = tempDir("pd-consul-config-");
  afterAll(() => dir[Symbol.asyncDispose]());
  const file = (name: string, content: string) => {
    const p = join(dir.path, name);
    writeFileSync(p, content);
    return p;
  };
  const tokenFile = file("token", "  from-file \n");
  const ca = file("ca.pem", "CA PEM");
  mkdirSync(join(dir.path, "capath"));
  writeFileSync(join(dir.path, "capath", "b.pem"), "B");
  writeFileSync(join(dir.path, "capath", "a.pem"), "A");
  const cert = file("cert.pem", "CERT");
  const key = file("key.pem", "KEY");

  const rows: {
    name: string;
    env: Record<string, string>;
    flags?: { addr?: string; token?: string };
    want: Partial<ConsulConfig>;
  }[] = [
    { name: "defaults", env: {}, want: { baseUrl: "http://127.0.0.1:8500", address: "127.0.0.1:8500" } },
    { name: "empty address is the default", env: { CONSUL_HTTP_ADDR: "" }, want: { baseUrl: "http://127.0.0.1:8500" } },
    {
      name: "host:port",
      env: { CONSUL_HTTP_ADDR: "consul.service:8501" },
      want: { baseUrl: "http://consul.service:8501", address: "consul.service:8501" },
    },
    {
      name: "http URL",
      env: { CONSUL_HTTP_ADDR: "http://10.0.0.5:8500" },
      want: { baseUrl: "http://10.0.0.5:8500", address: "10.0.0.5:8500" },
    },
    { name: "IPv6", env: { CONSUL_HTTP_ADDR: "[::1]:8500" }, want: { baseUrl: "http://[::1]:8500" } },
    {
      name: "https URL",
      env: { CONSUL_HTTP_ADDR: "https://consul:8501" },
      want: { baseUrl: "https://consul:8501", tls: { verify: true } },
    },
    {
      name: "CONSUL_HTTP_SSL=true",
      env: { CONSUL_HTTP_ADDR: "consul:8501", CONSUL_HTTP_SSL: "true" },
      want: { baseUrl: "https://consul:8501" },
    },
    {
      name: "SSL never reverts to http",
      env: { CONSUL_HTTP_ADDR: "http://consul:8501", CONSUL_HTTP_SSL: "1" },
      want: { baseUrl: "https://consul:8501" },
    },
    { name: "CONSUL_HTTP_SSL=false", env: { CONSUL_HTTP_SSL: "False" }, want: { baseUrl: "http://127.0.0.1:8500" } },
    {
      name: "unix socket",
      env: { CONSUL_HTTP_ADDR: "unix:///run/consul.sock" },
      want: { baseUrl: "http://localhost", address: "unix:///run/consul.sock", unixSocket: "/run/consul.sock" },
    },
    {
      name: "flag address wins",
      env: { CONSUL_HTTP_ADDR: "a:1" },
      flags: { addr: "b:2" },
      want: { baseUrl: "http://b:2" },
    },
    { name: "token", env: { CONSUL_HTTP_TOKEN: "t-env" }, want: { token: "t-env" } },
    {
      name: "token file wins over the variable",
      env: { CONSUL_HTTP_TOKEN: "t-env", CONSUL_HTTP_TOKEN_FILE: tokenFile },
      want: { token: "from-file" },
    },
    {
      name: "flag token wins",
      env: { CONSUL_HTTP_TOKEN: "t-env", CONSUL_HTTP_TOKEN_FILE: tokenFile },
      flags: { token: "t-flag" },
      want: { token: "t-flag" },
    },
    {
      name: "TLS files",
      env: {
        CONSUL_HTTP_ADDR: "https://c:8501",
        CONSUL_CACERT: ca,
        CONSUL_CAPATH: join(dir.path, "capath"),
        CONSUL_CLIENT_CERT: cert,
        CONSUL_CLIENT_KEY: key,
        CONSUL_TLS_SERVER_NAME: "consul.internal",
      },
      want: {
        tls: { ca: ["CA PEM", "A", "B"], cert: "CERT", key: "KEY", serverName: "consul.internal", verify: true },
      },
    },
    {
      name: "SSL verify off",
      env: { CONSUL_HTTP_SSL: "true", CONSUL_HTTP_SSL_VERIFY: "false" },
      want: { tls: { verify: false } },
    },
    {
      name: "TLS settings ignored for http",
      env: { CONSUL_CACERT: "/nonexistent" },
      want: { baseUrl: "http://127.0.0.1:8500" },
    },
  ];
  for (const row of rows) {
    test(row.name, () => {
      const cfg = consulConfig(row.env, row.flags);
      expect(cfg).toMatchObject(row.want);
      if (!("token" in row.want)) expect(cfg.token).toBeUndefined();
      if (!("tls" in row.want) && !cfg.baseUrl.startsWith("https")) expect(cfg.tls).toBeUndefined();
    });
  }

  test("every problem at once, as a UsageError", () => {
    let err: unknown;
    try {
      consulConfig({
        CONSUL_HTTP_ADDR: "ftp://x:1",
        CONSUL_HTTP_SSL: "yes",
        CONSUL_HTTP_TOKEN_FILE: join(dir.path, "missing"),
      });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UsageError);
    const msg = (err as Error).message;
    expect(msg).toContain('CONSUL_HTTP_SSL: not a boolean: "yes"');
    expect(msg).toContain('CONSUL_HTTP_ADDR: unknown scheme "ftp"');
    expect(msg).toContain(`CONSUL_HTTP_TOKEN_FILE ${join(dir.path, "missing")}: ENOENT`);
    expect(() => consulConfig({ CONSUL_HTTP_SSL: "1", CONSUL_CLIENT_CERT: cert })).toThrow("set both or neither");
    expect(() => consulConfig({}, { addr: "host with space:1" })).toThrow(
      '--consul-addr: not a host:port: "host with space:1"',
    );
  });
});
