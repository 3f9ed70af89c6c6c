import { NetkitError } from "../errors.ts";

/**
 * The stable codes a {@linkcode ProxyError} carries.
 *
 * - `ERR_PROXY_URL`: the proxy URL cannot be used (not a URL, a scheme other
 *   than `http:`, `socks5:` or `socks5h:`, credentials too long for SOCKS5).
 * - `ERR_PROXY_TARGET`: the host or port to tunnel to is not valid.
 * - `ERR_PROXY_UNREACHABLE`: no TCP connection to the proxy itself.
 * - `ERR_PROXY_AUTH`: the proxy wants credentials (HTTP 407, SOCKS5 with no
 *   acceptable method) or rejected the ones given.
 * - `ERR_PROXY_REFUSED`: the proxy would not, or could not, connect to the
 *   target (an HTTP status other than 2xx and 407, a SOCKS5 failure reply).
 * - `ERR_PROXY_PROTOCOL`: the proxy answered something that is not the
 *   protocol asked for, or hung up during the handshake.
 * - `ERR_PROXY_TIMEOUT`: the tunnel was not set up within the timeout.
 */
export type ProxyErrorCode =
  | "ERR_PROXY_URL"
  | "ERR_PROXY_TARGET"
  | "ERR_PROXY_UNREACHABLE"
  | "ERR_PROXY_AUTH"
  | "ERR_PROXY_REFUSED"
  | "ERR_PROXY_PROTOCOL"
  | "ERR_PROXY_TIMEOUT";

/**
 * A tunnel through a proxy could not be set up. Every message names the
 * proxy as `host:port` (never its password) and says what to check.
 *
 * @example Telling a refused tunnel from an unreachable proxy
 * ```ts
 * import assert from "node:assert/strict";
 * import { openTunnel, ProxyError } from "@netkit/netkit/proxy";
 *
 * const err = await openTunnel("ftp://127.0.0.1:21", { hostname: "example.com", port: 443 })
 *   .catch((e) => e);
 * assert.ok(err instanceof ProxyError);
 * assert.equal(err.code, "ERR_PROXY_URL");
 * ```
 */
export class ProxyError extends NetkitError {
  /** Which kind of failure this is. */
  declare readonly code: ProxyErrorCode;

  /**
   * Makes a proxy error.
   *
   * @param code Which kind of failure.
   * @param message What went wrong, naming the proxy, and what to do.
   * @param options The underlying error, if any, as `cause`.
   */
  constructor(code: ProxyErrorCode, message: string, options?: ErrorOptions) {
    super(code, message, options);
  }
}
