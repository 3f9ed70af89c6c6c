import type { Conn } from "../conn.ts";
import { writeAll } from "../io/write_all.ts";
import { connect as tcpConnect } from "../tcp/connect.ts";
import { connect as tlsConnect } from "../tls/connect.ts";
import { HttpError } from "./errors.ts";
import { type HttpResponse, readResponse, type ReadResponseOptions } from "./response.ts";

/** Options for {@linkcode get}. */
export interface GetOptions extends ReadResponseOptions {
  /** CA certificates (PEM) to trust for `https://`, on top of Deno's root store. */
  caCerts?: string[];
  /** Extra request headers. */
  headers?: HeadersInit;
  /** Milliseconds to wait for the connection; 0 = as long as the OS does. @default {0} */
  timeout?: number;
  /** Gives up when aborted. */
  signal?: AbortSignal;
  /**
   * `https://`: a server that closes without a TLS close_notify is an error
   * (`ERR_TLS_TRUNCATED`) instead of the end of a body read to the close;
   * see `tls.ConnectOptions.requireCloseNotify`. @default {false}
   */
  requireCloseNotify?: boolean;
  /**
   * A proxy to tunnel through: `http://[user:pass@]host:port` (HTTP CONNECT)
   * or `socks5://[user:pass@]host:port` (the proxy resolves the name). TLS
   * runs end to end through it. Default: none — the library reads no
   * environment variables; `proxyForUrl()` from `@netkit/netkit/proxy` does.
   */
  proxy?: string | URL;
}

/** A response with the connection it came on; disposing it closes the connection. */
export interface GetResult extends HttpResponse, AsyncDisposable {
  /** The connection the response is read from. */
  conn: Conn;
}

/**
 * Sends `GET` over a raw TCP or TLS connection — the request written with
 * `writeAll`, the head read with `readUntil("\r\n\r\n")` — and returns the
 * response with its body still streaming. A teaching client, and a handy one:
 * it frames the body by `Content-Length` or chunked encoding even when the
 * server keeps the connection open.
 *
 * @throws {HttpError} A URL that is not `http://` or `https://`, or a malformed response.
 * @throws {NetworkError} The connection failed.
 *
 * @example
 * ```ts
 * import { get } from "@netkit/netkit/http";
 * import assert from "node:assert/strict";
 *
 * await using server = Deno.serve({ port: 0, onListen() {} }, () => new Response("hello"));
 * await using response = await get(`http://127.0.0.1:${server.addr.port}/`);
 * assert.equal(response.status, 200);
 * assert.equal(await new Response(response.body).text(), "hello");
 * ```
 */
export async function get(url: string | URL, options: GetOptions = {}): Promise<GetResult> {
  let target: URL;
  try {
    target = new URL(url);
  } catch {
    throw new HttpError("ERR_HTTP_BAD_URL", `not a URL: ${JSON.stringify(String(url))}`);
  }
  const secure = target.protocol === "https:";
  if (!secure && target.protocol !== "http:") {
    throw new HttpError(
      "ERR_HTTP_BAD_URL",
      `only http:// and https:// URLs can be fetched, not ${target.protocol}//`,
    );
  }
  const hostname = target.hostname.replace(/^\[(.*)\]$/, "$1");
  const port = Number(target.port || (secure ? 443 : 80));
  const conn = secure
    ? await tlsConnect({
      hostname,
      port,
      caCerts: options.caCerts,
      timeout: options.timeout,
      signal: options.signal,
      requireCloseNotify: options.requireCloseNotify,
      proxy: options.proxy,
    })
    : await tcpConnect({
      hostname,
      port,
      timeout: options.timeout,
      signal: options.signal,
      proxy: options.proxy,
    });
  try {
    const headers = new Headers(options.headers);
    if (!headers.has("host")) headers.set("host", target.host);
    if (!headers.has("user-agent")) headers.set("user-agent", "netkit-http-get");
    if (!headers.has("accept")) headers.set("accept", "*/*");
    if (!headers.has("connection")) headers.set("connection", "close");
    let request = `GET ${target.pathname}${target.search} HTTP/1.1\r\n`;
    for (const [name, value] of headers) request += `${name}: ${value}\r\n`;
    await writeAll(conn.writable, request + "\r\n");
    const response = await readResponse(conn, options);
    return { ...response, conn, [Symbol.asyncDispose]: () => conn.close() };
  } catch (err) {
    await conn.close().catch(() => {});
    throw err;
  }
}
