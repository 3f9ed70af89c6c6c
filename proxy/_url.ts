import { ProxyError } from "./errors.ts";

/** A proxy URL, checked and taken apart. */
export interface ProxyUrl {
  /** `http` (CONNECT) or `socks5` (socks5: and socks5h: alike). */
  kind: "http" | "socks5";
  /** The proxy's host, without brackets. */
  hostname: string;
  port: number;
  /** Percent-decoded; "" when the URL has none. */
  username: string;
  password: string;
  /** `host:port` (IPv6 in brackets), for messages: never the credentials. */
  at: string;
}

export { hostPort } from "../internal/host.ts";
import { hostPort } from "../internal/host.ts";

/** A host name without the brackets an IPv6 literal wears in URLs. */
export function stripBrackets(host: string): string {
  return host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
}

/**
 * Parses `http://[user:pass@]host[:port]` or `socks5[h]://…`; a string with
 * no scheme is taken as `http://` (as curl does). Default ports: 80 for
 * http (the URL's own default), 1080 for SOCKS5.
 */
export function parseProxyUrl(proxy: string | URL): ProxyUrl {
  let url: URL;
  try {
    url = proxy instanceof URL
      ? proxy
      : new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(proxy.trim()) ? proxy.trim() : `http://${proxy}`);
  } catch (err) {
    throw new ProxyError(
      "ERR_PROXY_URL",
      `"${withoutUserinfo(String(proxy))}" is not a proxy URL: write ` +
        "http://[user:pass@]host:port or socks5://[user:pass@]host:port",
      { cause: err },
    );
  }
  const scheme = url.protocol.slice(0, -1).toLowerCase();
  const hostname = stripBrackets(url.hostname);
  const kind = scheme === "http"
    ? "http"
    : scheme === "socks5" || scheme === "socks5h"
    ? "socks5"
    : null;
  if (kind === null) {
    throw new ProxyError(
      "ERR_PROXY_URL",
      `proxy scheme "${scheme}:" is not supported (proxy ${hostPort(hostname, portOf(url, 0))}): ` +
        "use http:// (HTTP CONNECT) or socks5:// (SOCKS5)",
    );
  }
  if (hostname === "") {
    throw new ProxyError("ERR_PROXY_URL", `the proxy URL "${scheme}://" names no host`);
  }
  const port = portOf(url, kind === "http" ? 80 : 1080);
  return {
    kind,
    hostname,
    port,
    username: decode(url.username),
    password: decode(url.password),
    at: hostPort(hostname, port),
  };
}

function portOf(url: URL, fallback: number): number {
  return url.port === "" ? fallback : Number(url.port);
}

function decode(component: string): string {
  try {
    return decodeURIComponent(component);
  } catch {
    return component; // a stray "%": take it literally rather than fail
  }
}

function withoutUserinfo(text: string): string {
  return text.replace(/^([a-z][a-z0-9+.-]*:\/\/)?[^@/]*@/i, "$1");
}
