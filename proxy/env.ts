import { parseIP } from "./_ip.ts";
import { stripBrackets } from "./_url.ts";

/** Where proxy variables are read from: a plain object, or a lookup function. */
export type ProxyEnv =
  | Record<string, string | undefined>
  | ((name: string) => string | undefined);

const DEFAULT_PORTS: Record<string, number> = { http: 80, ws: 80, https: 443, wss: 443 };

/**
 * The proxy to use for `target` according to the environment, as curl
 * reads it, or `undefined` to connect directly.
 *
 * - The variable `<scheme>_proxy` of the target's scheme is used first
 *   (`https_proxy` for `https:`, `http_proxy` for `http:`, `tcp_proxy` for
 *   `tcp:`, …), then, like curl, `http_proxy` for `ws:` and `https_proxy`
 *   for `wss:`, then `all_proxy`. Each name is tried in lower case, then
 *   upper case; the lower case wins when both are set.
 * - `HTTP_PROXY` in upper case: curl never reads it, because a CGI program
 *   gets the request header `Proxy:` in that very variable ("httpoxy").
 *   netkit reads it, as the contract says "either case", except when
 *   `REQUEST_METHOD` is set — that is, when running as CGI — which is what
 *   Go's `net/http` does.
 * - `no_proxy`/`NO_PROXY` (lower case wins) is a list separated by commas or
 *   spaces: `*` (everything), host names (matching the host and its
 *   subdomains; a leading `.` or `*.` is optional), IPv4/IPv6 addresses
 *   (`[::1]` or `::1`) and CIDR ranges (`10.0.0.0/8`, `fd00::/8`), each
 *   optionally with `:port`. Names are not resolved: `localhost` does not
 *   match `127.0.0.1`.
 * - A proxy given without a scheme (`proxy.corp:3128`) is `http://`.
 *
 * @param target The URL to be reached: `https:`, `wss:`, `http:`, `ws:`, or
 *   `tcp://host:port` / `tls://host:port` for raw connections.
 * @param env The variables. Defaults to `Deno.env`; without permission to
 *   read one, it counts as unset.
 * @returns The proxy URL, or `undefined` for a direct connection.
 *
 * @example Picking the proxy for an HTTPS URL, with an exception
 * ```ts
 * import assert from "node:assert/strict";
 * import { proxyForUrl } from "@netkit/netkit/proxy";
 *
 * const env = { HTTPS_PROXY: "proxy.corp:3128", NO_PROXY: ".internal,10.0.0.0/8" };
 * assert.equal(proxyForUrl("https://example.com/", env), "http://proxy.corp:3128");
 * assert.equal(proxyForUrl("https://git.internal/", env), undefined);
 * assert.equal(proxyForUrl("wss://10.1.2.3:8443/", env), undefined);
 * assert.equal(proxyForUrl("http://example.com/", env), undefined); // no http_proxy
 * ```
 */
export function proxyForUrl(target: URL | string, env?: ProxyEnv): string | undefined {
  const url = typeof target === "string" ? new URL(target) : target;
  const get = lookup(env);
  const scheme = url.protocol.slice(0, -1).toLowerCase();
  const names = [scheme];
  if (scheme === "ws") names.push("http");
  if (scheme === "wss") names.push("https");
  names.push("all");
  let proxy: string | undefined;
  for (const name of names) {
    proxy = get(`${name}_proxy`) || upperCase(name, get);
    if (proxy) break;
  }
  if (!proxy) return undefined;
  const port = url.port === "" ? DEFAULT_PORTS[scheme] : Number(url.port);
  if (bypassesProxy(url.hostname, port, get("no_proxy") || get("NO_PROXY") || "")) {
    return undefined;
  }
  proxy = proxy.trim();
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(proxy) ? proxy : `http://${proxy}`;
}

/**
 * Whether `hostname` (and `port`) is on a `NO_PROXY` list, by the rules
 * {@linkcode proxyForUrl} describes. Useful with an explicit proxy (a
 * `--proxy` flag), which curl also skips for the hosts on `NO_PROXY`.
 *
 * @param hostname The target's host name or IP literal (brackets allowed).
 * @param port The target's port, if known; entries with a port need it.
 * @param noProxy The list, e.g. `"localhost,.internal,10.0.0.0/8,[::1]:8080"`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { bypassesProxy } from "@netkit/netkit/proxy";
 *
 * assert.equal(bypassesProxy("api.example.com", 443, "example.com"), true);
 * assert.equal(bypassesProxy("notexample.com", 443, "example.com"), false);
 * assert.equal(bypassesProxy("10.9.8.7", 22, "10.0.0.0/8"), true);
 * assert.equal(bypassesProxy("localhost", 8080, "localhost:9090"), false);
 * ```
 */
export function bypassesProxy(
  hostname: string,
  port: number | undefined,
  noProxy: string,
): boolean {
  const host = stripBrackets(hostname).toLowerCase().replace(/\.$/, "");
  const hostIP = parseIP(host);
  for (const raw of noProxy.split(/[\s,]+/)) {
    if (raw === "") continue;
    if (raw === "*") return true;
    const entry = splitPort(raw.toLowerCase());
    if (entry.port !== undefined && entry.port !== port) continue;
    if (matchesHost(entry.host, host, hostIP)) return true;
  }
  return false;
}

function matchesHost(pattern: string, host: string, hostIP: Uint8Array | null): boolean {
  const slash = pattern.indexOf("/");
  if (slash >= 0) {
    const network = parseIP(stripBrackets(pattern.slice(0, slash)));
    const bits = Number(pattern.slice(slash + 1));
    if (network === null || hostIP === null || network.length !== hostIP.length) return false;
    if (!Number.isInteger(bits) || bits < 0 || bits > network.length * 8) return false;
    return samePrefix(network, hostIP, bits);
  }
  const patternIP = parseIP(stripBrackets(pattern));
  if (patternIP !== null) {
    return hostIP !== null && patternIP.length === hostIP.length &&
      samePrefix(patternIP, hostIP, patternIP.length * 8);
  }
  const domain = pattern.replace(/^\*?\./, "").replace(/\.$/, "");
  return domain !== "" && (host === domain || host.endsWith(`.${domain}`));
}

// "host:port", "[v6]:port", "v4/len:port"; a bare IPv6 address has no port.
function splitPort(entry: string): { host: string; port?: number } {
  const match = /^(\[[^\]]*\](?:\/\d+)?|[^:]*):(\d+)$/.exec(entry);
  if (match) return { host: match[1], port: Number(match[2]) };
  return { host: entry };
}

function samePrefix(a: Uint8Array, b: Uint8Array, bits: number): boolean {
  for (let i = 0; i < a.length && bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if ((a[i] & mask) !== (b[i] & mask)) return false;
  }
  return true;
}

function upperCase(name: string, get: (name: string) => string | undefined): string | undefined {
  if (name === "http" && get("REQUEST_METHOD")) return undefined; // CGI: see proxyForUrl
  return get(`${name.toUpperCase()}_PROXY`);
}

function lookup(env: ProxyEnv | undefined): (name: string) => string | undefined {
  if (typeof env === "function") return env;
  if (env !== undefined) return (name) => env[name];
  return (name) => {
    try {
      return Deno.env.get(name);
    } catch {
      return undefined; // no --allow-env for this name: as if unset
    }
  };
}
