/**
 * The WebSocket server's HTTP/1.1 front end: reading a request head within
 * its limit (answering garbage with 400 at once), plain answers that close
 * the connection, refusals, and the request's URL.
 *
 * @module
 */
import type { Addr } from "../../conn.ts";
import { LimitExceededError, UnexpectedEofError } from "../../io/errors.ts";
import {
  couldBeRequestLine,
  formatPlainResponse,
  type PlainResponse,
  type RequestHead,
} from "../../internal/http_head.ts";
import { hostPort } from "../../internal/host.ts";
import { closeQuietly, writeFull } from "../../internal/socket.ts";
import type { SocketConn } from "../../internal/socket_conn.ts";
import { Answered } from "../../internal/stream_server.ts";
import { parseRequestHead } from "../codec/handshake.ts";
import { HandshakeError } from "../errors.ts";

/** A request answered without an upgrade: not an error, reported as a `request` event. */
export class AnsweredRequest extends Answered {
  constructor(readonly method: string, readonly target: string, readonly status: number) {
    super(`answered ${method} ${target} with ${status}`);
  }
}

// How much a client may still send after its answer before it is cut off.
const DRAIN_AFTER_ANSWER = 64 * 1024;

/** Writes a response that ends the connection, then lets the client read it. */
export async function answer(
  conn: SocketConn,
  response: PlainResponse,
  method: string,
): Promise<void> {
  try {
    await writeFull(conn.socket, formatPlainResponse(response, method));
    await conn.socket.closeWrite();
    // Read what the client still sends until it closes (bounded, and the
    // handshake timeout still runs): closing with unread input would reset
    // the connection and could destroy the response before it is read.
    let seen = 0;
    for (;;) {
      const chunk = await conn.reader.readChunk();
      if (chunk === null || (seen += chunk.length) > DRAIN_AFTER_ANSWER) break;
    }
  } catch {
    // The client is gone: nothing more to tell it.
  } finally {
    conn.destroy();
  }
}

/** Answers a failed upgrade with its status (when it has one), then throws it. */
export async function reject(
  conn: SocketConn,
  err: HandshakeError,
  method = "GET",
): Promise<never> {
  const headers = new Headers();
  if (err.status === 405) headers.set("allow", "GET");
  if (err.status === 426) {
    headers.set("upgrade", "websocket");
    headers.set("sec-websocket-version", "13");
  }
  if (err.status > 0) {
    await answer(conn, { status: err.status, headers, body: err.message + "\n" }, method);
  }
  throw err;
}

/**
 * Reads the request head, at most `maxHeadSize` bytes (431 over it). Bytes
 * that cannot start a request line (TLS to a plain port, binary garbage)
 * get 400 as soon as they arrive, not when the handshake timeout fires.
 */
export async function readRequestHead(conn: SocketConn, maxHeadSize: number): Promise<RequestHead> {
  let bytes: Uint8Array | null;
  try {
    // Judge the method token as it arrives: it ends at the first space.
    for (let have = 0;;) {
      const view = await conn.reader.peek(have + 1, { maxBytes: maxHeadSize + 1 });
      if (view.length === have) break; // the end: readUntil reports it
      const space = view.indexOf(0x20);
      if (!couldBeRequestLine(space < 0 ? view : view.subarray(0, space + 1))) {
        return await reject(
          conn,
          new HandshakeError("ERR_WS_HANDSHAKE", "this is not an HTTP request", 400),
        );
      }
      if (space >= 0 || view.length > maxHeadSize) break;
      have = view.length;
    }
    bytes = await conn.reader.readUntil("\r\n\r\n", { maxBytes: maxHeadSize });
  } catch (err) {
    if (err instanceof LimitExceededError) {
      return await reject(
        conn,
        new HandshakeError(
          "ERR_WS_HANDSHAKE",
          `request head over maxHeadSize (${maxHeadSize} bytes)`,
          431,
        ),
      );
    }
    if (err instanceof UnexpectedEofError) {
      throw new HandshakeError(
        "ERR_WS_HANDSHAKE",
        "the client closed in the middle of its request",
      );
    }
    throw err;
  }
  if (bytes === null) {
    throw new HandshakeError("ERR_WS_HANDSHAKE", "the client closed without sending a request");
  }
  try {
    return parseRequestHead(bytes);
  } catch (err) {
    return await reject(conn, err as HandshakeError);
  }
}

/** The request's full URL (`ws:`/`wss:` with its `Host`), or undefined for a bad target. */
export function requestUrl(head: RequestHead, local: Addr, secure: boolean): URL | undefined {
  const scheme = secure ? "wss" : "ws";
  const fallback = "hostname" in local ? hostPort(local.hostname, local.port) : "localhost";
  try {
    if (head.target.startsWith("/")) {
      const host = head.headers.get("host") ?? fallback;
      try {
        return new URL(head.target, `${scheme}://${host}`);
      } catch {
        return new URL(head.target, `${scheme}://${fallback}`);
      }
    }
    const url = new URL(head.target);
    return /^(https?|wss?):$/.test(url.protocol) ? url : undefined;
  } catch {
    return undefined;
  }
}

/** A `Response` from a hook, as a {@linkcode PlainResponse}. */
export async function toPlainResponse(res: PlainResponse | Response): Promise<PlainResponse> {
  if (!(res instanceof Response)) return res;
  return {
    status: res.status,
    headers: res.headers,
    body: new Uint8Array(await res.arrayBuffer()),
  };
}

/** Whether an upgrade hook's decision is a refusal: a response to send instead. */
export function isRefusal(decision: unknown): decision is PlainResponse | Response {
  return decision instanceof Response ||
    (typeof decision === "object" && decision !== null &&
      typeof (decision as PlainResponse).status === "number");
}

/** The 101 response with the hook's extra headers. */
export function withHeaders(response: Uint8Array, headers: Headers): Uint8Array {
  let extra = "";
  for (const [name, value] of headers) extra += `${name}: ${value}\r\n`;
  const head = new TextDecoder().decode(response);
  return new TextEncoder().encode(head.slice(0, -2) + extra + "\r\n");
}

const TOO_MANY = formatPlainResponse({
  status: 429,
  headers: { "retry-after": "1" },
  body: "too many connections from your address: retry later\n",
});

/**
 * The 429 a client over a per-address limit gets, before any request is
 * read. Its request is read and dropped for a moment (bounded) so that
 * closing does not reset the connection under the answer.
 */
export async function tooManyRequests(socket: Deno.Conn): Promise<void> {
  const timer = setTimeout(() => closeQuietly(socket), 200);
  try {
    await writeFull(socket, TOO_MANY);
    await socket.closeWrite();
    const sink = new Uint8Array(4096);
    for (let seen = 0; seen < 4 * sink.length;) {
      const n = await socket.read(sink);
      if (n === null) break;
      seen += n;
    }
  } catch {
    // Gone already.
  } finally {
    clearTimeout(timer);
  }
}
