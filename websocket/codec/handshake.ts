/**
 * The HTTP/1.1 upgrade (RFC 6455 §4): parsing and validating a client's
 * request, the `Sec-WebSocket-Accept` computation, the client's request and
 * the checks on the server's answer.
 *
 * @module
 */
import { createHash } from "node:crypto";
import type { Addr } from "../../conn.ts";
import { WEBSOCKET_GUID } from "./constants.ts";
import { HandshakeError } from "../errors.ts";
import { isValidKey } from "./validation.ts";
import {
  hasToken,
  HeadSyntaxError,
  isToken,
  parseRequestHead as parseHead,
  parseResponseHead as parseHttpResponseHead,
  type RequestHead,
  type ResponseHead,
  splitList,
} from "../../internal/http_head.ts";

const encoder = new TextEncoder();

/** An HTTP request as the server's `upgrade` and `onRequest` hooks see it. */
export interface UpgradeRequest {
  /** The method, e.g. `"GET"`. */
  method: string;
  /** The full URL: `ws:`/`wss:` scheme, the `Host` header, the request target. */
  url: URL;
  /** The request target as sent: path and query, e.g. `"/chat?room=1"`. */
  target: string;
  /** The path of the target, without the query: `"/chat"`. */
  path: string;
  /** The request headers. */
  headers: Headers;
  /** The subprotocols the client offered (`Sec-WebSocket-Protocol`), in its order. */
  protocols: string[];
}

/** Who is asking, for the server's hooks. */
export interface UpgradeInfo {
  /** The client's address. */
  remoteAddr: Addr;
  /** The server's address the client connected to. */
  localAddr: Addr;
  /** Whether the connection is TLS (`wss:`). */
  secure: boolean;
}

function badRequest(message: string, status = 400): HandshakeError {
  return new HandshakeError("ERR_WS_HANDSHAKE", message, status);
}

/**
 * Parses an HTTP/1.x request head (up to and including the blank line).
 *
 * @throws {HandshakeError} With `status` 400 for anything malformed.
 */
export function parseRequestHead(bytes: Uint8Array): RequestHead {
  try {
    return parseHead(bytes);
  } catch (err) {
    if (err instanceof HeadSyntaxError) throw badRequest(err.message);
    throw err;
  }
}

/** Whether a request asks to upgrade to WebSocket (has `Upgrade: websocket`). */
export function isUpgradeRequest(head: RequestHead): boolean {
  return hasToken(head.headers, "upgrade", "websocket");
}

/** What a valid upgrade request carries. */
export interface ValidUpgrade {
  /** `Sec-WebSocket-Key`. */
  key: string;
  /** The offered subprotocols. */
  protocols: string[];
}

/**
 * Checks an upgrade request strictly: method GET, HTTP/1.1, `Host`,
 * `Upgrade: websocket`, `Connection: Upgrade`, a 16-byte base64
 * `Sec-WebSocket-Key`, `Sec-WebSocket-Version: 13` and well-formed
 * subprotocols.
 *
 * @throws {HandshakeError} `status` says what to answer: 405 (method), 426
 *   (version, with `Sec-WebSocket-Version: 13`) or 400 (the rest).
 *
 * @example
 * ```ts
 * import { parseRequestHead, validateUpgrade } from "@netkit/netkit/websocket/codec";
 * import assert from "node:assert/strict";
 *
 * const head = parseRequestHead(new TextEncoder().encode(
 *   "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
 *     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
 * ));
 * assert.equal(validateUpgrade(head).key, "dGhlIHNhbXBsZSBub25jZQ==");
 * ```
 */
export function validateUpgrade(head: RequestHead): ValidUpgrade {
  const { headers } = head;
  if (head.method !== "GET") {
    throw badRequest(`method ${head.method}: an upgrade must be a GET`, 405);
  }
  if (head.version !== "1.1") throw badRequest(`HTTP/${head.version}: an upgrade needs HTTP/1.1`);
  if (!headers.has("host")) throw badRequest("no Host header");
  if (!isUpgradeRequest(head)) throw badRequest("no Upgrade: websocket header");
  if (!hasToken(headers, "connection", "upgrade")) {
    throw badRequest("no Connection: Upgrade header");
  }
  const version = headers.get("sec-websocket-version");
  if (version !== "13") {
    throw badRequest(
      version === null
        ? "no Sec-WebSocket-Version header"
        : `Sec-WebSocket-Version ${version}: only 13 is supported`,
      426,
    );
  }
  const key = headers.get("sec-websocket-key");
  if (key === null || !isValidKey(key)) {
    throw badRequest("Sec-WebSocket-Key missing or not the base64 of 16 bytes");
  }
  const protocols = splitList(headers.get("sec-websocket-protocol"));
  if (!protocols.every(isToken)) throw badRequest("malformed Sec-WebSocket-Protocol");
  return { key, protocols };
}

/**
 * The `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`: base64(SHA-1(key +
 * GUID)).
 *
 * @example
 * ```ts
 * import { acceptKey } from "@netkit/netkit/websocket/codec";
 * import assert from "node:assert/strict";
 *
 * // The example of RFC 6455, section 1.3.
 * assert.equal(await acceptKey("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
 * ```
 */
export function acceptKey(key: string): Promise<string> {
  return Promise.resolve(acceptKeyNow(key));
}

/**
 * {@linkcode acceptKey}, computed at once with `node:crypto`'s synchronous
 * hash rather than `crypto.subtle.digest`, an asynchronous op that Deno runs
 * on its blocking thread pool: at a burst of upgrades that pool grows to
 * dozens of threads, each with its own malloc arena, and that memory stays
 * with the process after the burst.
 */
export function acceptKeyNow(key: string): string {
  return createHash("sha1").update(key + WEBSOCKET_GUID).digest("base64");
}

/** A fresh `Sec-WebSocket-Key`: 16 random bytes, base64. */
export function generateKey(): string {
  return toBase64(crypto.getRandomValues(new Uint8Array(16)));
}

function toBase64(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

/** The `101 Switching Protocols` answer, with the agreed subprotocol and extensions (`""`: none). */
export function formatAccept(
  key: string,
  protocol: string,
  extensions = "",
): Promise<Uint8Array> {
  return Promise.resolve(formatAcceptNow(key, protocol, extensions));
}

/** {@linkcode formatAccept}, made at once (the server's upgrade: no promise, no op). */
export function formatAcceptNow(key: string, protocol: string, extensions = ""): Uint8Array {
  let head = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
    `Sec-WebSocket-Accept: ${acceptKeyNow(key)}\r\n`;
  if (protocol !== "") head += `Sec-WebSocket-Protocol: ${protocol}\r\n`;
  if (extensions !== "") head += `Sec-WebSocket-Extensions: ${extensions}\r\n`;
  return encoder.encode(head + "\r\n");
}

/** The client's upgrade request. */
export function formatUpgradeRequest(
  url: URL,
  key: string,
  protocols: string[],
  extra: Headers,
): Uint8Array {
  const target = (url.pathname || "/") + url.search;
  const headers = new Headers(extra);
  if (!headers.has("host")) headers.set("host", url.host);
  headers.set("upgrade", "websocket");
  headers.set("connection", "Upgrade");
  headers.set("sec-websocket-key", key);
  headers.set("sec-websocket-version", "13");
  if (protocols.length > 0) headers.set("sec-websocket-protocol", protocols.join(", "));
  let head = `GET ${target} HTTP/1.1\r\n`;
  for (const [name, value] of headers) head += `${name}: ${value}\r\n`;
  return encoder.encode(head + "\r\n");
}

/** Parses the server's answer to an upgrade request. */
export function parseResponseHead(bytes: Uint8Array): ResponseHead {
  try {
    return parseHttpResponseHead(bytes);
  } catch (err) {
    if (!(err instanceof HeadSyntaxError)) throw err;
    throw new HandshakeError(
      "ERR_WS_HANDSHAKE",
      `the server did not answer with HTTP (${err.message}): is it a WebSocket server?`,
    );
  }
}

/**
 * Checks the server's `101` answer: `Upgrade`, `Connection`,
 * `Sec-WebSocket-Accept`, a subprotocol we offered, and no extension unless
 * `extensionsOffered` (then the caller checks the answer against its offer,
 * e.g. with `acceptDeflateResponse`). Resolves to the agreed subprotocol
 * (`""` if none).
 */
export async function verifyAccept(
  head: ResponseHead,
  key: string,
  protocols: string[],
  extensionsOffered = false,
): Promise<string> {
  const fail = (what: string) =>
    new HandshakeError("ERR_WS_HANDSHAKE", `invalid upgrade response: ${what}`, head.status);
  if (!hasToken(head.headers, "upgrade", "websocket")) throw fail("no Upgrade: websocket");
  if (!hasToken(head.headers, "connection", "upgrade")) throw fail("no Connection: Upgrade");
  if (head.headers.get("sec-websocket-accept") !== await acceptKey(key)) {
    throw fail("Sec-WebSocket-Accept does not match the key");
  }
  // An empty header selects nothing; anything else must answer an offer.
  const extensions = head.headers.get("sec-websocket-extensions");
  if (!extensionsOffered && extensions !== null && extensions.trim() !== "") {
    throw fail(`an extension nobody asked for (${extensions})`);
  }
  const protocol = head.headers.get("sec-websocket-protocol") ?? "";
  if (protocol !== "" && !protocols.includes(protocol)) {
    throw fail(`subprotocol "${protocol}" was not offered`);
  }
  return protocol;
}
