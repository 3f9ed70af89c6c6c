/**
 * The WebSocket client: `ws://` over netkit TCP, `wss://` over netkit TLS,
 * with netkit's own RFC 6455 engine.
 *
 * @module
 */
import { formatAddr } from "../../conn.ts";
import { UnexpectedEofError } from "../../io/errors.ts";
import { connectSocket } from "../../tcp/connect.ts";
import { SocketConn } from "../../internal/socket_conn.ts";
import { timedOut } from "../../tcp/errors.ts";
import { connect as connectTls } from "../../tls/connect.ts";
import { DEFAULT_COMPRESSION_THRESHOLD, DEFAULT_MAX_HEAD_SIZE } from "../codec/constants.ts";
import { kStart, WebSocketConn } from "../connection/conn.ts";
import { type ConnectionOptions, type EngineDeflate, FramedEngine } from "../connection/_engine.ts";
import {
  acceptDeflateResponse,
  DeflateContext,
  deflateContextOptions,
  formatDeflateOffer,
} from "../codec/permessage_deflate.ts";
import { HandshakeError, WebSocketError } from "../errors.ts";
import {
  formatUpgradeRequest,
  generateKey,
  parseResponseHead,
  verifyAccept,
} from "../codec/handshake.ts";
import { isToken, type ResponseHead } from "../../internal/http_head.ts";

/** Options for {@linkcode connect}. Times are milliseconds. */
export interface ConnectOptions extends ConnectionOptions {
  /** The server's URL (`ws://`, `wss://`; `http(s)://` are taken as `ws(s)://`), when not given apart. */
  url?: string | URL;
  /** Subprotocols to offer, preferred first; `ws.protocol` is the one agreed on. */
  protocols?: string | string[];
  /** Extra request headers (`Authorization`, `Origin`, cookies, …). */
  headers?: HeadersInit;
  /**
   * Milliseconds for the whole connect — TCP, TLS and the upgrade; 0 waits
   * as long as the OS and the server do. Over it: `ETIMEDOUT` or
   * `ERR_WS_HANDSHAKE_TIMEOUT`. @default {0}
   */
  timeout?: number;
  /** Gives up when aborted; the promise rejects with the signal's reason. */
  signal?: AbortSignal;
  /** `wss:` — extra CA certificates (PEM) to trust, added to Deno's root store. */
  caCerts?: string[];
  /** `wss:` — a client certificate (PEM), for servers that ask for one. Needs `key`. */
  cert?: string;
  /** `wss:` — the client certificate's private key (PEM). */
  key?: string;
  /** `wss:` — the name the server's certificate must cover (and SNI). Default: the URL's host. */
  serverName?: string;
  /** The largest response head accepted. @default {16384} */
  maxHeadSize?: number;
  /**
   * Offer permessage-deflate (RFC 7692) as browsers do
   * (`permessage-deflate; client_max_window_bits`). If the server agrees
   * (see `ws.extensions`), messages of at least `compressionThreshold`
   * bytes go compressed and the server's compressed messages are inflated,
   * `maxPayload` counting inflated bytes; whatever parameters it answers
   * are honoured. An answer that does not fit the offer fails the connect
   * (`ERR_WS_BAD_EXTENSION_RESPONSE`). Each connection has its own
   * compressor and decompressor (a few hundred KiB once used, freed when it
   * closes). @default {false}
   */
  compression?: boolean;
  /**
   * With compression agreed: messages shorter than this many bytes go
   * uncompressed. @default {1024}
   */
  compressionThreshold?: number;
  /**
   * A proxy to tunnel through: `http://[user:pass@]host:port` (HTTP CONNECT)
   * or `socks5://[user:pass@]host:port` (the proxy resolves the name). TLS
   * runs end to end through it. Default: none — the library reads no
   * environment variables; `proxyForUrl()` from `@netkit/netkit/proxy` does.
   */
  proxy?: string | URL;
  /**
   * `wss:` — a server that ends the TLS stream without a close_notify is an
   * error; see `tls.ConnectOptions.requireCloseNotify`. @default {false}
   */
  requireCloseNotify?: boolean;
}

/** Parses and checks a WebSocket URL; `http(s):` becomes `ws(s):`. */
export function parseWebSocketUrl(input: string | URL): URL {
  let url: URL;
  try {
    url = new URL(input);
  } catch {
    throw new WebSocketError(
      "ERR_WS_BAD_URL",
      `"${input}" is not a URL: give one like ws://127.0.0.1:8080/ or wss://example.com/chat`,
    );
  }
  if (url.protocol === "http:") url.protocol = "ws:";
  else if (url.protocol === "https:") url.protocol = "wss:";
  if (url.protocol !== "ws:" && url.protocol !== "wss:") {
    throw new WebSocketError(
      "ERR_WS_BAD_URL",
      `"${input}" is not a WebSocket URL: the scheme must be ws: or wss:`,
    );
  }
  url.hash = "";
  return url;
}

/**
 * Connects to a WebSocket server and resolves to a {@linkcode WebSocketConn}
 * once the upgrade has succeeded: the same `Conn` as TCP (each message one
 * chunk of `readable`, each chunk written one binary message) with messages,
 * close codes, ping and a send backlog on top. Frames are masked, as a
 * client's must be; `Sec-WebSocket-Accept` is checked.
 *
 * @param url `ws://host:port/path` or `wss://…` (or give `options.url`).
 * @throws {NetworkError} `ECONNREFUSED`, `ETIMEDOUT`, `ENOTFOUND`, … before the upgrade.
 * @throws {TlsError} `wss:` — `ERR_TLS_CERT_UNTRUSTED`, `ERR_TLS_CERT_NAME_MISMATCH`, …
 * @throws {HandshakeError} The server refused the upgrade (`status`, `body`), answered
 *   something that is not a valid upgrade, or took longer than `timeout`.
 *
 * @example A round trip
 * ```ts
 * import { connect, serve } from "@netkit/netkit/websocket";
 * import assert from "node:assert/strict";
 *
 * await using server = serve({ port: 0 }, async (ws) => {
 *   for await (const msg of ws) await ws.send(msg);
 * });
 * await using ws = await connect(`ws://127.0.0.1:${server.addr.port}/`, { timeout: 5000 });
 * await ws.send("ping");
 * assert.equal(await ws.receive(), "ping");
 * ```
 */
export function connect(url: string | URL, options?: ConnectOptions): Promise<WebSocketConn>;
/** Connects to `options.url`; see the other overload. */
export function connect(options: ConnectOptions & { url: string | URL }): Promise<WebSocketConn>;
export async function connect(
  urlOrOptions: string | URL | (ConnectOptions & { url: string | URL }),
  maybeOptions: ConnectOptions = {},
): Promise<WebSocketConn> {
  const options = typeof urlOrOptions === "string" || urlOrOptions instanceof URL
    ? { ...maybeOptions, url: urlOrOptions }
    : urlOrOptions;
  const url = parseWebSocketUrl(options.url);
  const protocols = typeof options.protocols === "string"
    ? [options.protocols]
    : options.protocols ?? [];
  for (const p of protocols) {
    if (!isToken(p)) throw new TypeError(`invalid subprotocol "${p}": it must be an HTTP token`);
  }
  if (new Set(protocols).size !== protocols.length) throw new TypeError("duplicate subprotocols");
  const headers = new Headers(options.headers);
  const compression = options.compression ?? false;
  const threshold = options.compressionThreshold ?? DEFAULT_COMPRESSION_THRESHOLD;
  if (!(threshold >= 0)) {
    throw new RangeError(`compressionThreshold must be 0 or more, got ${threshold}`);
  }
  if (compression) headers.set("sec-websocket-extensions", formatDeflateOffer());
  const secure = url.protocol === "wss:";
  const hostname = url.hostname.startsWith("[") ? url.hostname.slice(1, -1) : url.hostname;
  const port = url.port === "" ? (secure ? 443 : 80) : Number(url.port);
  const at = formatAddr({ hostname, port });
  const timeout = options.timeout ?? 0;
  const started = performance.now();
  const left = () => timeout > 0 ? Math.max(1, timeout - (performance.now() - started)) : 0;
  options.signal?.throwIfAborted();

  let conn: SocketConn;
  if (secure) {
    const tls = await connectTls({
      hostname,
      port,
      serverName: options.serverName,
      caCerts: options.caCerts,
      cert: options.cert,
      key: options.key,
      timeout,
      signal: options.signal,
      proxy: options.proxy,
      requireCloseNotify: options.requireCloseNotify,
    });
    if (!(tls instanceof SocketConn)) {
      await tls.close();
      throw new TypeError("netkit's TLS connection is not a socket connection");
    }
    conn = tls;
  } else {
    conn = new SocketConn(
      await connectSocket({
        hostname,
        port,
        timeout,
        signal: options.signal,
        proxy: options.proxy,
      }),
    );
  }

  // The upgrade, within what is left of the timeout.
  let stopped: unknown;
  const stop = (reason: unknown) => {
    stopped ??= reason;
    conn.destroy();
  };
  const onAbort = () => stop(options.signal!.reason);
  options.signal?.addEventListener("abort", onAbort, { once: true });
  const remaining = left();
  const timer = remaining > 0
    ? setTimeout(
      () =>
        stop(
          new HandshakeError(
            "ERR_WS_HANDSHAKE_TIMEOUT",
            `no WebSocket upgrade from ${at} within ${
              timeout / 1000
            }s: is it a WebSocket server? Raise the timeout for a slow one`,
            0,
            "",
            { cause: timedOut(at, timeout) },
          ),
        ),
      remaining,
    )
    : undefined;
  try {
    const key = generateKey();
    const request = formatUpgradeRequest(url, key, protocols, headers);
    let off = 0;
    while (off < request.length) off += await conn.socket.write(request.subarray(off));
    const head = await readHead(conn, at, options.maxHeadSize ?? DEFAULT_MAX_HEAD_SIZE);
    if (head.status !== 101) throw await rejected(conn, head, at);
    const protocol = await verifyAccept(head, key, protocols, compression);
    const answer = head.headers.get("sec-websocket-extensions");
    // Fails the connection (RFC 7692 §5) when the answer is not one of ours.
    const agreed = compression ? acceptDeflateResponse(answer) : null;
    if (stopped !== undefined) throw stopped;
    let deflate: EngineDeflate | undefined;
    if (agreed !== null) {
      const contexts = deflateContextOptions(agreed, "client", { threshold });
      const send = new DeflateContext(contexts.send);
      const receive = new DeflateContext(contexts.receive);
      deflate = { send, receive, shared: false, owned: [send, receive] };
    }
    const engine = new FramedEngine(conn, false, options, {}, deflate);
    const ws = new WebSocketConn({
      engine,
      protocol,
      extensions: agreed !== null ? answer!.trim() : "",
      url: url.href,
      highWaterMark: options.highWaterMark,
    });
    ws[kStart]();
    return ws;
  } catch (err) {
    conn.destroy();
    throw stopped ?? err;
  } finally {
    clearTimeout(timer);
    options.signal?.removeEventListener("abort", onAbort);
  }
}

async function readHead(conn: SocketConn, at: string, maxHeadSize: number): Promise<ResponseHead> {
  let bytes: Uint8Array | null;
  try {
    bytes = await conn.reader.readUntil("\r\n\r\n", { maxBytes: maxHeadSize });
  } catch (err) {
    if (err instanceof UnexpectedEofError) bytes = null;
    else if (err instanceof Deno.errors.BadResource || err instanceof Deno.errors.Interrupted) {
      throw err;
    } else {
      throw new HandshakeError(
        "ERR_WS_HANDSHAKE",
        `bad answer to the WebSocket upgrade from ${at}: ${
          err instanceof Error ? err.message : err
        }`,
        0,
        "",
        { cause: err },
      );
    }
  }
  if (bytes === null) {
    throw new HandshakeError(
      "ERR_WS_HANDSHAKE",
      `${at} closed the connection without answering the WebSocket upgrade: is it a WebSocket server?`,
    );
  }
  return parseResponseHead(bytes);
}

/** The error for a non-101 answer, with the start of its body. */
async function rejected(conn: SocketConn, head: ResponseHead, at: string): Promise<HandshakeError> {
  let body = "";
  const length = Number(head.headers.get("content-length") ?? "0");
  if (Number.isSafeInteger(length) && length > 0) {
    try {
      const bytes = await conn.reader.readExact(Math.min(length, 1024));
      if (bytes !== null) body = new TextDecoder().decode(bytes).trim();
    } catch {
      // Whatever arrived is enough.
    }
  }
  const what = `${head.status}${head.statusText ? " " + head.statusText : ""}`;
  const firstLine = body.split("\n")[0].slice(0, 200);
  return new HandshakeError(
    "ERR_WS_HANDSHAKE_REJECTED",
    `${at} refused the WebSocket upgrade: HTTP ${what}${firstLine ? ` (${firstLine})` : ""}`,
    head.status,
    body,
  );
}
