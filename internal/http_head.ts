/**
 * HTTP/1.1 heads, parsed and formatted once for every layer: the WebSocket
 * server's request head, the WebSocket client's and `http`'s response head,
 * the plain responses a server answers with. Callers turn a
 * {@linkcode HeadSyntaxError} into their own typed error (a 400, a failed
 * handshake, a malformed response).
 *
 * @module
 */

const encoder = new TextEncoder();
// Header bytes are ISO-8859-1 (RFC 9110 §5.5): never a decoding error.
const latin1 = new TextDecoder("latin1");

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** Whether `value` is an HTTP token (RFC 9110 §5.6.2): a method, a header name, a subprotocol. */
export function isToken(value: string): boolean {
  return TOKEN.test(value);
}

/** Splits a comma-separated header value into its trimmed, non-empty items. */
export function splitList(value: string | null): string[] {
  if (value === null) return [];
  return value.split(",").map((item) => item.trim()).filter((item) => item !== "");
}

/** Whether the comma-separated header `name` lists `token` (case-insensitive). */
export function hasToken(headers: Headers, name: string, token: string): boolean {
  return splitList(headers.get(name)).some((item) => item.toLowerCase() === token);
}

/** A head that is not HTTP/1.x; `message` says which line and why. */
export class HeadSyntaxError extends Error {
  /** @param message What is wrong, quoting at most 80 characters of the line. */
  constructor(message: string) {
    super(message);
    this.name = "HeadSyntaxError";
  }
}

/** A request line and its headers. */
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

/** A status line and its headers. */
export interface ResponseHead {
  /** The status code. */
  status: number;
  /** The reason phrase (may be empty). */
  statusText: string;
  /** The headers. */
  headers: Headers;
}

function quote(line: string): string {
  return JSON.stringify(line.slice(0, 80));
}

/** The start line and headers of a head, with or without its blank line. */
function splitHead(bytes: Uint8Array): [string, Headers] {
  const lines = latin1.decode(bytes).split("\r\n");
  const headers = new Headers();
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i];
    if (line === "") continue;
    const colon = line.indexOf(":");
    const name = colon > 0 ? line.slice(0, colon) : "";
    if (!isToken(name)) throw new HeadSyntaxError(`malformed header line ${quote(line)}`);
    try {
      headers.append(name, line.slice(colon + 1).trim());
    } catch {
      throw new HeadSyntaxError(`invalid value in header ${name}`);
    }
  }
  return [lines[0], headers];
}

/**
 * Parses an HTTP/1.x request head (up to and including the blank line).
 *
 * @throws {HeadSyntaxError} A malformed request line or header line.
 */
export function parseRequestHead(bytes: Uint8Array): RequestHead {
  const [line, headers] = splitHead(bytes);
  const match = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+) (\S+) HTTP\/(\d\.\d)$/.exec(line);
  if (match === null) throw new HeadSyntaxError(`malformed request line ${quote(line)}`);
  return { method: match[1], target: match[2], version: match[3], headers };
}

/**
 * Parses an HTTP/1.x response head (up to and including the blank line).
 *
 * @throws {HeadSyntaxError} Not an HTTP/1.x status line, or a malformed header line.
 */
export function parseResponseHead(bytes: Uint8Array): ResponseHead {
  const [line, headers] = splitHead(bytes);
  const match = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/.exec(line);
  if (match === null) throw new HeadSyntaxError(`not an HTTP/1.x status line: ${quote(line)}`);
  return { status: Number(match[1]), statusText: match[2] ?? "", headers };
}

/**
 * Whether a request line could still be coming: the bytes so far are a
 * prefix of `METHOD SP`, i.e. an HTTP token followed by a space. Lets a
 * server answer 400 to garbage at once instead of waiting for a CRLF.
 */
export function couldBeRequestLine(bytes: Uint8Array): boolean {
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i];
    if (b === 0x20) return i > 0;
    if (b < 0x21 || b > 0x7e || !TOKEN.test(String.fromCharCode(b))) return false;
  }
  return true;
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

/** The reason phrase of an HTTP status (`""` when unknown). */
export function statusText(status: number): string {
  return STATUS_TEXT[status] ?? "";
}

/**
 * A plain HTTP response: what a server's `onRequest` answers, or what an
 * `upgrade` hook returns to refuse (`{ status: 401, body: "token required" }`).
 * A `Content-Length` is added and the connection is closed after it.
 */
export interface PlainResponse {
  /** The status, e.g. 200, 401, 403. */
  status: number;
  /** The headers. */
  headers?: HeadersInit;
  /** The body; a string is sent as UTF-8. */
  body?: string | Uint8Array;
}

/** Serializes a response head (and body) as HTTP/1.1. */
export function formatResponseHead(
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

/** A complete {@linkcode PlainResponse} that closes the connection (no body for `HEAD`). */
export function formatPlainResponse(response: PlainResponse, method = "GET"): Uint8Array {
  const headers = new Headers(response.headers);
  const body = typeof response.body === "string"
    ? encoder.encode(response.body)
    : response.body ?? new Uint8Array(0);
  if (!headers.has("content-type") && typeof response.body === "string" && body.length > 0) {
    headers.set("content-type", "text/plain; charset=utf-8");
  }
  headers.set("content-length", String(body.length));
  headers.set("connection", "close");
  return formatResponseHead(response.status, headers, method === "HEAD" ? undefined : body);
}
