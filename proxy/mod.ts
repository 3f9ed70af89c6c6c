/**
 * Client connections through proxies: HTTP `CONNECT` (with Basic auth) and
 * SOCKS5 (with username/password, names resolved by the proxy), and the
 * curl rules for `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY`.
 *
 * {@linkcode openTunnel} hands back a plain `Deno.TcpConn` to the target;
 * netkit's TCP and TLS `connect` take a `proxy` option that uses it, so TLS
 * runs end to end through the tunnel and the proxy sees only ciphertext.
 * Every failure is a {@linkcode ProxyError} whose message names the proxy
 * (never its password) and the reason.
 *
 * @example Choosing a proxy from the environment, then connecting through it
 * ```ts
 * import assert from "node:assert/strict";
 * import { openTunnel, proxyForUrl } from "@netkit/netkit/proxy";
 *
 * const env = { ALL_PROXY: "socks5://127.0.0.1:1", NO_PROXY: "localhost" };
 * assert.equal(proxyForUrl("tcp://localhost:7000", env), undefined);
 * const proxy = proxyForUrl("tcp://example.com:7000", env);
 * assert.equal(proxy, "socks5://127.0.0.1:1");
 *
 * // Nobody listens on port 1 here, so the proxy cannot be reached.
 * await assert.rejects(openTunnel(proxy!, { hostname: "example.com", port: 7000 }), {
 *   code: "ERR_PROXY_UNREACHABLE",
 * });
 * ```
 *
 * @module
 */
export { openTunnel, type TunnelOptions } from "./tunnel.ts";
export { bypassesProxy, type ProxyEnv, proxyForUrl } from "./env.ts";
export { ProxyError, type ProxyErrorCode } from "./errors.ts";
