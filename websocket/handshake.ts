/**
 * The HTTP/1.1 upgrade (RFC 6455 §4): parsing and validating a client's
 * request, the `Sec-WebSocket-Accept` computation, the client's request and
 * the checks on the server's answer.
 *
 * @module
 */
import type { Addr } from "../conn.ts";
import { WEBSOCKET_GUID } from "./constants.ts";
import { HandshakeError } from "./errors.ts";
import { isToken, isValidKey, splitList } from "./validation.ts";

const encoder = new TextEncoder();
const latin1 = new TextDecoder("latin1");

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

/**
 * A plain HTTP response: what `onRequest` answers, or what `upgrade`
 * returns to refuse (`{ status: 401, body: "token required" }`). A
 * `Content-Length` is added and the connection is closed after it.
 */
export interface HttpResponse {
  /** The status, e.g. 200, 401, 403. */
  status: number;
  /** The headers. */
  headers?: HeadersInit;
  /** The body; a string is sent as UTF-8. */
  body?: string | Uint8Array;
}

const STATUS_TEXT: Record<number, string> = {
  101: "Switching Protocols",
  200: "OK",
  204: "No Content",
  301: "Moved Permanently",
  302: "Found",
  304: "Not Modified",
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  408: "Request Timeout",
  426: "Upgrade Required",
  429: "Too Many Requests",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  503: "Service Unavailable",
};

/** The reason phrase of an HTTP status. */
export function statusText(status: number): string {
  return STATUS_TEXT[status] ?? "";
}

/** A request line and its headers, parsed. */
export interface RequestHead {
  /** The method. */
  method: string;
  /** The target, as sent. */
  target: string;
  /** `"1.1"`, `"1.0"`, … */
  version: string;
  /** The headers. */
  headers: Headers;
}

function badRequest(message: string, status = 400): HandshakeError {
  return new HandshakeError("ERR_WS_HANDSHAKE", message, status);
}

/**
 * Parses an HTTP/1.x request head (up to and including the blank line).
 *
 * @throws {HandshakeError} With `status` 400 for anything malformed.
 *
 * @example
 * ```ts
 * import { parseRequestHead } from "@netkit/netkit/websocket";
 *
 * const head = parseRequestHead(new TextEncoder().encode("GET /chat HTTP/1.1\r\nHost: a\r\n\r\n"));
 * console.log(head.method, head.target, head.headers.get("host")); // GET /chat a
 * ```
 */
export function parseRequestHead(bytes: Uint8Array): RequestHead {
  const lines = latin1.decode(bytes).split("\r\n");
  const match = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+) (\S+) HTTP\/(\d\.\d)$/.exec(lines[0]);
  if (match === null) throw badRequest("malformed request line");
  const headers = parseHeaderLines(lines.slice(1));
  return { method: match[1], target: match[2], version: match[3], headers };
}

function parseHeaderLines(lines: string[]): Headers {
  const headers = new Headers();
  for (const line of lines) {
    if (line === "") continue;
    const colon = line.indexOf(":");
    const name = colon > 0 ? line.slice(0, colon) : "";
    if (!isToken(name)) throw badRequest(`malformed header line "${line.slice(0, 40)}"`);
    try {
      headers.append(name, line.slice(colon + 1).trim());
    } catch {
      throw badRequest(`invalid value in header ${name}`);
    }
  }
  return headers;
}

function hasToken(headers: Headers, name: string, token: string): boolean {
  return splitList(headers.get(name)).some((item) => item.toLowerCase() === token);
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
 * import { parseRequestHead, validateUpgrade } from "@netkit/netkit/websocket";
 *
 * const head = parseRequestHead(new TextEncoder().encode(
 *   "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
 *     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
 * ));
 * console.log(validateUpgrade(head).key); // dGhlIHNhbXBsZSBub25jZQ==
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
 * import { acceptKey } from "@netkit/netkit/websocket";
 *
 * console.log(await acceptKey("dGhlIHNhbXBsZSBub25jZQ==")); // s3pPLMBiTxaQ9kYGzzhZRbK+xOo=
 * ```
 */
export async function acceptKey(key: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-1", encoder.encode(key + WEBSOCKET_GUID));
  return toBase64(new Uint8Array(digest));
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

/** Serializes an HTTP/1.1 response head (and body). */
export function formatResponse(
  status: number,
  headers: Headers,
  body?: Uint8Array,
): Uint8Array {
  let head = `HTTP/1.1 ${status} ${statusText(status)}\r\n`;
  for (const [name, value] of headers) head += `${name}: ${value}\r\n`;
  head += "\r\n";
  const headBytes = encoder.encode(head);
  if (body === undefined || body.length === 0) return headBytes;
  const out = new Uint8Array(headBytes.length + body.length);
  out.set(headBytes);
  out.set(body, headBytes.length);
  return out;
}

/** A complete plain-HTTP response that closes the connection. */
export function formatHttpResponse(response: HttpResponse, method = "GET"): Uint8Array {
  const headers = new Headers(response.headers);
  const body = typeof response.body === "string"
    ? encoder.encode(response.body)
    : response.body ?? new Uint8Array(0);
  if (!headers.has("content-type") && typeof response.body === "string" && body.length > 0) {
    headers.set("content-type", "text/plain; charset=utf-8");
  }
  headers.set("content-length", String(body.length));
  headers.set("connection", "close");
  return formatResponse(response.status, headers, method === "HEAD" ? undefined : body);
}

/** The `101 Switching Protocols` answer. */
export async function formatAccept(key: string, protocol: string): Promise<Uint8Array> {
  let head = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
    `Sec-WebSocket-Accept: ${await acceptKey(key)}\r\n`;
  if (protocol !== "") head += `Sec-WebSocket-Protocol: ${protocol}\r\n`;
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

/** A response status line and headers, parsed. */
export interface ResponseHead {
  /** The status code. */
  status: number;
  /** The reason phrase. */
  statusText: string;
  /** The headers. */
  headers: Headers;
}

/** Parses an HTTP/1.x response head. */
export function parseResponseHead(bytes: Uint8Array): ResponseHead {
  const lines = latin1.decode(bytes).split("\r\n");
  const match = /^HTTP\/\d\.\d (\d{3})(?: (.*))?$/.exec(lines[0]);
  if (match === null) {
    throw new HandshakeError(
      "ERR_WS_HANDSHAKE",
      `the server did not answer with HTTP (got "${
        lines[0].slice(0, 40)
      }"): is it a WebSocket server?`,
    );
  }
  let headers: Headers;
  try {
    headers = parseHeaderLines(lines.slice(1));
  } catch {
    throw new HandshakeError(
      "ERR_WS_HANDSHAKE",
      "the server's upgrade response has malformed headers",
    );
  }
  return { status: Number(match[1]), statusText: match[2] ?? "", headers };
}

/**
 * Checks the server's `101` answer: `Upgrade`, `Connection`,
 * `Sec-WebSocket-Accept`, a subprotocol we offered, no extension.
 * Resolves to the agreed subprotocol (`""` if none).
 */
export async function verifyAccept(
  head: ResponseHead,
  key: string,
  protocols: string[],
): Promise<string> {
  const fail = (what: string) =>
    new HandshakeError("ERR_WS_HANDSHAKE", `invalid upgrade response: ${what}`, head.status);
  if (!hasToken(head.headers, "upgrade", "websocket")) throw fail("no Upgrade: websocket");
  if (!hasToken(head.headers, "connection", "upgrade")) throw fail("no Connection: Upgrade");
  if (head.headers.get("sec-websocket-accept") !== await acceptKey(key)) {
    throw fail("Sec-WebSocket-Accept does not match the key");
  }
  if (head.headers.has("sec-websocket-extensions")) throw fail("an extension nobody asked for");
  const protocol = head.headers.get("sec-websocket-protocol") ?? "";
  if (protocol !== "" && !protocols.includes(protocol)) {
    throw fail(`subprotocol "${protocol}" was not offered`);
  }
  return protocol;
}
