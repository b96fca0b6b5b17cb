/**
 * Where the Consul agent is and how to reach it, from Consul's own environment variables and the
 * --consul-addr/--consul-token flags. Reads only the files those variables name.
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import type { Env } from "../env.ts";
import { UsageError } from "../errors.ts";

export interface ConsulConfig {
  /** Where requests go, without a trailing slash: `http://127.0.0.1:8500`, `https://consul:8501`. */
  baseUrl: string;
  /** How messages name the agent: `127.0.0.1:8500`, `consul:8501`, `unix:///run/consul.sock`. */
  address: string;
  /** The socket path when CONSUL_HTTP_ADDR is `unix://…`. */
  unixSocket?: string;
  /** The ACL token, sent as `X-Consul-Token`. Never log it. */
  token?: string;
  /** For https: PEM texts (read from the files named) and whether to verify the server. */
  tls?: { ca?: string[]; cert?: string; key?: string; serverName?: string; verify: boolean };
}

/**
 * The agent's address, token and TLS settings from Consul's own environment variables, as the
 * `consul` CLI reads them; `flags` (--consul-addr, --consul-token) win over the environment.
 *
 * - CONSUL_HTTP_ADDR: `host:port` (default 127.0.0.1:8500), `http://…`, `https://…` or `unix:///path`.
 *   CONSUL_HTTP_SSL=true makes a bare `host:port` https (and an `http://` one too: Consul never
 *   falls back to http when TLS was asked for).
 * - Token: the flag, else CONSUL_HTTP_TOKEN_FILE's content (trimmed; it wins over the variable, as in
 *   Consul's API client), else CONSUL_HTTP_TOKEN.
 * - TLS (https only): CONSUL_CACERT (file), CONSUL_CAPATH (directory of PEM files), CONSUL_CLIENT_CERT
 *   with CONSUL_CLIENT_KEY, CONSUL_TLS_SERVER_NAME, CONSUL_HTTP_SSL_VERIFY=false.
 *
 * Reads the token and certificate files now, so every problem is reported at once, as a UsageError.
 */
export function consulConfig(env: Env, flags: { addr?: string; token?: string } = {}): ConsulConfig {
  const problems: string[] = [];
  const bool = (name: string): boolean | undefined => {
    const v = env[name];
    if (v === undefined || v === "") return undefined;
    const b = parseGoBool(v);
    if (b === undefined) problems.push(`${name}: not a boolean: "${v}"`);
    return b;
  };
  const read = (name: string, path: string): string | undefined => {
    try {
      return readFileSync(path, "utf8");
    } catch (err) {
      problems.push(`${name} ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      return undefined;
    }
  };

  const ssl = bool("CONSUL_HTTP_SSL") ?? false;
  const verify = bool("CONSUL_HTTP_SSL_VERIFY") ?? true;
  const addr = nonEmpty(flags.addr) ?? nonEmpty(env.CONSUL_HTTP_ADDR) ?? "127.0.0.1:8500";
  const source = nonEmpty(flags.addr) !== undefined ? "--consul-addr" : "CONSUL_HTTP_ADDR";

  let scheme = ssl ? "https" : "http";
  let hostPort = addr;
  let unixSocket: string | undefined;
  const m = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\/(.*)$/.exec(addr);
  if (m) {
    const [, s, rest] = m;
    hostPort = rest!;
    if (s === "https") scheme = "https";
    else if (s === "unix") unixSocket = rest;
    else if (s !== "http")
      problems.push(`${source}: unknown scheme "${s}" in "${addr}" (use host:port, http://, https:// or unix://)`);
  }
  if (unixSocket !== undefined) {
    if (unixSocket === "") problems.push(`${source}: no socket path in "${addr}"`);
  } else if (!validHostPort(hostPort)) {
    problems.push(`${source}: not a host:port: "${addr}"`);
  }

  let token = nonEmpty(flags.token);
  if (token === undefined && nonEmpty(env.CONSUL_HTTP_TOKEN_FILE) !== undefined) {
    token = nonEmpty(read("CONSUL_HTTP_TOKEN_FILE", env.CONSUL_HTTP_TOKEN_FILE!)?.trim());
  }
  token ??= nonEmpty(env.CONSUL_HTTP_TOKEN);

  let tls: ConsulConfig["tls"];
  if (scheme === "https" && unixSocket === undefined) {
    const ca: string[] = [];
    if (nonEmpty(env.CONSUL_CACERT)) {
      const pem = read("CONSUL_CACERT", env.CONSUL_CACERT!);
      if (pem !== undefined) ca.push(pem);
    }
    if (nonEmpty(env.CONSUL_CAPATH)) {
      const dir = env.CONSUL_CAPATH!;
      try {
        for (const f of readdirSync(dir).sort()) {
          const p = join(dir, f);
          if (statSync(p).isFile()) ca.push(readFileSync(p, "utf8"));
        }
      } catch (err) {
        problems.push(`CONSUL_CAPATH ${dir}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      }
    }
    const certFile = nonEmpty(env.CONSUL_CLIENT_CERT);
    const keyFile = nonEmpty(env.CONSUL_CLIENT_KEY);
    if ((certFile === undefined) !== (keyFile === undefined)) {
      problems.push("CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY: set both or neither");
    }
    tls = {
      ...(ca.length > 0 ? { ca } : {}),
      ...(certFile && keyFile
        ? { cert: read("CONSUL_CLIENT_CERT", certFile), key: read("CONSUL_CLIENT_KEY", keyFile) }
        : {}),
      ...(nonEmpty(env.CONSUL_TLS_SERVER_NAME) ? { serverName: env.CONSUL_TLS_SERVER_NAME } : {}),
      verify,
    };
  }

  if (problems.length > 0) throw new UsageError(`consul settings: ${problems.join("; ")}`, "consul");
  return {
    baseUrl: unixSocket !== undefined ? "http://localhost" : `${scheme}://${hostPort}`,
    address: unixSocket !== undefined ? `unix://${unixSocket}` : hostPort,
    ...(unixSocket !== undefined ? { unixSocket } : {}),
    ...(token !== undefined ? { token } : {}),
    ...(tls ? { tls } : {}),
  };
}

/** Go's strconv.ParseBool, which Consul uses for its boolean variables. */
function parseGoBool(v: string): boolean | undefined {
  if (["1", "t", "T", "TRUE", "true", "True"].includes(v)) return true;
  if (["0", "f", "F", "FALSE", "false", "False"].includes(v)) return false;
  return undefined;
}

function nonEmpty(v: string | undefined): string | undefined {
  return v === undefined || v === "" ? undefined : v;
}

function validHostPort(hp: string): boolean {
  if (hp === "" || /[\s/?#@]/.test(hp)) return false;
  try {
    return new URL(`http://${hp}`).host !== "";
  } catch {
    return false;
  }
}
