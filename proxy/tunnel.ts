import { closeQuietly } from "../internal/socket.ts";
import { ProxyError } from "./errors.ts";
import { httpConnect } from "./_http_connect.ts";
import { socks5Connect } from "./_socks5.ts";
import { hostPort, parseProxyUrl, stripBrackets } from "./_url.ts";

/** Options for {@linkcode openTunnel}. */
export interface TunnelOptions {
  /**
   * Milliseconds for the whole setup: reaching the proxy, authenticating,
   * and the proxy reaching the target. 0 waits as long as the OS and the
   * proxy do.
   * @default {0}
   */
  timeout?: number;
  /** Gives up when aborted; the promise rejects with the signal's reason. */
  signal?: AbortSignal;
  /**
   * The largest HTTP response head accepted from a CONNECT proxy, in bytes.
   * @default {16384}
   */
  maxHeadBytes?: number;
}

/**
 * Connects to a proxy and has it open a TCP tunnel to `target`; resolves to
 * the socket, which from then on carries the target's bytes both ways. Run
 * TLS over it (`Deno.startTls`) to keep the proxy to ciphertext.
 *
 * - `http://[user:pass@]host[:port]` (port 80 by default): HTTP/1.1
 *   `CONNECT`, with `Proxy-Authorization: Basic` when the URL has
 *   credentials (percent-decoded). Any 2xx opens the tunnel; 407 (or 401)
 *   is `ERR_PROXY_AUTH`, any other status `ERR_PROXY_REFUSED`.
 * - `socks5://` or `socks5h://[user:pass@]host[:port]` (port 1080 by
 *   default): SOCKS5, with username/password authentication when given. A
 *   host name is always resolved by the proxy (socks5h semantics); IP
 *   literals are sent as addresses.
 * - A URL with no scheme is taken as `http://`, as curl does.
 *
 * The handshake reads exactly what belongs to it, so the first bytes of a
 * target that speaks first (an SMTP or SSH banner) are still in the socket.
 * The socket is closed on every failure.
 *
 * @param proxy The proxy URL.
 * @param target Where the proxy should connect to (host names are resolved
 *   by the proxy).
 * @param options Timeout, signal and limits.
 * @throws {ProxyError} `ERR_PROXY_URL`, `ERR_PROXY_TARGET`,
 *   `ERR_PROXY_UNREACHABLE`, `ERR_PROXY_AUTH`, `ERR_PROXY_REFUSED`,
 *   `ERR_PROXY_PROTOCOL`, `ERR_PROXY_TIMEOUT`, each naming the proxy.
 *
 * @example Nothing listening where the proxy should be
 * ```ts
 * import assert from "node:assert/strict";
 * import { openTunnel } from "@netkit/netkit/proxy";
 *
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const { port } = listener.addr;
 * listener.close(); // a port with nobody on it
 * await assert.rejects(
 *   openTunnel(`socks5://127.0.0.1:${port}`, { hostname: "example.com", port: 443 }),
 *   { code: "ERR_PROXY_UNREACHABLE" },
 * );
 * ```
 */
export async function openTunnel(
  proxy: string | URL,
  target: { hostname: string; port: number },
  options: TunnelOptions = {},
): Promise<Deno.TcpConn> {
  const url = parseProxyUrl(proxy);
  const to = checkTarget(target, url.at);
  options.signal?.throwIfAborted();
  const timeout = options.timeout ?? 0;
  const maxHeadBytes = options.maxHeadBytes ?? 16 * 1024;

  // One controller for the timeout and the caller's signal; every step races it.
  const controller = new AbortController();
  const onAbort = () => controller.abort(options.signal!.reason);
  options.signal?.addEventListener("abort", onAbort, { once: true });
  const timer = timeout > 0
    ? setTimeout(() =>
      controller.abort(
        new ProxyError(
          "ERR_PROXY_TIMEOUT",
          `no tunnel through the proxy at ${url.at} to ${hostPort(to.hostname, to.port)} ` +
            `within ${timeout / 1000}s: check that the proxy is up, or allow more time`,
        ),
      ), timeout)
    : undefined;
  const gaveUp = new Promise<never>((_, reject) => {
    controller.signal.addEventListener("abort", () => reject(controller.signal.reason), {
      once: true,
    });
  });
  gaveUp.catch(() => {});

  try {
    let conn: Deno.TcpConn;
    const attempt = Deno.connect({
      hostname: url.hostname,
      port: url.port,
      signal: controller.signal,
    });
    // Deno.connect may not stop name resolution on abort: close a connection
    // that arrives after we gave up.
    attempt.then((late) => controller.signal.aborted && closeQuietly(late), () => {});
    try {
      conn = await Promise.race([attempt, gaveUp]);
    } catch (err) {
      if (controller.signal.aborted) throw controller.signal.reason;
      throw new ProxyError(
        "ERR_PROXY_UNREACHABLE",
        `could not reach the proxy at ${url.at}: ${reason(err)}`,
        { cause: err },
      );
    }
    try {
      const handshake = url.kind === "http"
        ? httpConnect(conn, url, to, maxHeadBytes)
        : socks5Connect(conn, url, to);
      await Promise.race([handshake, gaveUp]);
      return conn;
    } catch (err) {
      closeQuietly(conn); // also ends a read the handshake still has pending
      if (controller.signal.aborted) throw controller.signal.reason;
      if (err instanceof ProxyError) throw err;
      throw new ProxyError(
        "ERR_PROXY_PROTOCOL",
        `the connection to the proxy at ${url.at} failed during the handshake: ${reason(err)}`,
        { cause: err },
      );
    }
  } finally {
    clearTimeout(timer);
    options.signal?.removeEventListener("abort", onAbort);
  }
}

// The host goes into a request line or a SOCKS5 name field: refuse anything
// that could smuggle bytes (CR, LF, spaces) or not fit.
function checkTarget(
  target: { hostname: string; port: number },
  proxyAt: string,
): { hostname: string; port: number } {
  const hostname = stripBrackets(target.hostname);
  const bad = (what: string) =>
    new ProxyError("ERR_PROXY_TARGET", `cannot tunnel through the proxy at ${proxyAt}: ${what}`);
  // deno-lint-ignore no-control-regex -- control characters are what it rejects
  if (hostname === "" || /[\x00-\x20\x7f/@]/.test(hostname)) {
    throw bad(`${JSON.stringify(target.hostname)} is not a host name or IP address`);
  }
  if (new TextEncoder().encode(hostname).length > 255) throw bad("the host name is too long");
  if (!Number.isInteger(target.port) || target.port < 1 || target.port > 65535) {
    throw bad(`${target.port} is not a port number (1-65535)`);
  }
  return { hostname, port: target.port };
}

function reason(err: unknown): string {
  if (err instanceof Deno.errors.ConnectionRefused) {
    return "connection refused: is the proxy running, and is the proxy URL right?";
  }
  const message = err instanceof Error ? err.message : String(err);
  if (/lookup address|Name or service not known|No address associated/i.test(message)) {
    return "host not found: check the proxy URL";
  }
  return message;
}
