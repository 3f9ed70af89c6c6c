import type { Conn } from "../conn.ts";
import type { BufferedReader } from "../io/buffered_reader.ts";
import { bufferedReaderOf } from "../io/buffered_reader.ts";
import { LimitExceededError, UnexpectedEofError } from "../io/errors.ts";
import { HttpError } from "./errors.ts";
import { HeadSyntaxError, parseResponseHead, type ResponseHead } from "../internal/http_head.ts";

/** Limits for {@linkcode readResponse}. */
export interface ReadResponseOptions {
  /** The largest response head (status line and headers). @default {65536} */
  maxHeadSize?: number;
  /** The largest chunk-size or trailer line of a chunked body. @default {4096} */
  maxLineSize?: number;
  /** Whether the request was `HEAD` (the response then has no body). @default {false} */
  head?: boolean;
}

/** An HTTP/1.1 response whose body is still on the wire. */
export interface HttpResponse {
  /** The status code, e.g. 200. */
  status: number;
  /** The reason phrase, e.g. `"OK"`. */
  statusText: string;
  /** The response headers. */
  headers: Headers;
  /** The head exactly as received, up to and including the blank line. */
  rawHead: Uint8Array;
  /** How the body is framed: by length, chunked, until close, or not at all. */
  framing: "content-length" | "chunked" | "close" | "none";
  /** The body bytes, de-chunked; it ends where the framing says, not at close. */
  body: ReadableStream<Uint8Array>;
}

const decoder = new TextDecoder();
const PIECE = 64 * 1024;

/**
 * Reads an HTTP/1.1 response from a connection: the head with
 * `readUntil("\r\n\r\n")`, then a body stream framed by `Content-Length`,
 * chunked transfer encoding, or the end of the connection — so it works
 * when the server keeps the connection open.
 *
 * @throws {HttpError} A malformed or oversized head.
 *
 * @example
 * ```ts
 * import { readResponse } from "@netkit/netkit/http";
 * import { connect } from "@netkit/netkit/tcp";
 * import { writeAll } from "@netkit/netkit/io";
 * import assert from "node:assert/strict";
 *
 * await using server = Deno.serve({ port: 0, onListen() {} }, () => new Response("hi"));
 * await using conn = await connect({ port: server.addr.port });
 * await writeAll(conn.writable, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
 * const response = await readResponse(conn);
 * assert.equal(response.status, 200);
 * assert.equal(await new Response(response.body).text(), "hi");
 * ```
 */
export async function readResponse(
  conn: Conn,
  options: ReadResponseOptions = {},
): Promise<HttpResponse> {
  const reader = bufferedReaderOf(conn.readable);
  if (reader === undefined) throw new TypeError("readResponse needs a netkit Conn");
  const maxHeadSize = options.maxHeadSize ?? 65536;
  // Interim 1xx responses (100 Continue, 103 Early Hints) come before the
  // final one and have no body: skip them (RFC 9110 §15.2). A 101 is final.
  let rawHead: Uint8Array;
  let head: ResponseHead;
  for (let interim = 0;; interim++) {
    rawHead = await readHead(reader, maxHeadSize);
    head = parseHead(rawHead);
    if (head.status >= 200 || head.status === 101) break;
    if (interim >= MAX_INTERIM) {
      throw new HttpError(
        "ERR_HTTP_MALFORMED",
        `the server sent more than ${MAX_INTERIM} interim (1xx) responses and no final one`,
      );
    }
  }
  const { status, headers } = head;
  const base = { status, statusText: head.statusText, headers, rawHead };
  const noBody = options.head || status === 101 || status === 204 || status === 304;
  if (noBody) return { ...base, framing: "none", body: ReadableStream.from([]) };
  const encoding = headers.get("transfer-encoding");
  if (encoding !== null) {
    // Chunked only when it is the last coding; any other transfer coding is
    // read to the close, never by Content-Length (RFC 9112 §6.3).
    return /(^|,)\s*chunked\s*$/i.test(encoding)
      ? { ...base, framing: "chunked", body: chunkedBody(reader, options.maxLineSize ?? 4096) }
      : { ...base, framing: "close", body: closeBody(reader) };
  }
  const length = headers.get("content-length");
  if (length !== null) {
    if (!/^\d+$/.test(length.trim())) {
      throw new HttpError("ERR_HTTP_MALFORMED", `bad Content-Length: ${JSON.stringify(length)}`);
    }
    return { ...base, framing: "content-length", body: lengthBody(reader, Number(length.trim())) };
  }
  return { ...base, framing: "close", body: closeBody(reader) };
}

// Interim responses tolerated before the final one.
const MAX_INTERIM = 16;

async function readHead(reader: BufferedReader, maxHeadSize: number): Promise<Uint8Array> {
  let rawHead: Uint8Array | null;
  try {
    rawHead = await reader.readUntil("\r\n\r\n", { maxBytes: maxHeadSize });
  } catch (err) {
    if (err instanceof LimitExceededError) {
      throw new HttpError(
        "ERR_HTTP_HEAD_TOO_LARGE",
        `the response head is larger than ${maxHeadSize} bytes; is this an HTTP server?`,
        { cause: err },
      );
    }
    if (err instanceof UnexpectedEofError) {
      throw new HttpError(
        "ERR_HTTP_TRUNCATED",
        `the server closed the connection in the middle of the response head (${err.partial.length} bytes came)`,
        { cause: err },
      );
    }
    throw err;
  }
  if (rawHead === null) {
    throw new HttpError(
      "ERR_HTTP_TRUNCATED",
      "the server closed the connection without responding",
    );
  }
  return rawHead;
}

function parseHead(rawHead: Uint8Array): ResponseHead {
  try {
    return parseResponseHead(rawHead);
  } catch (err) {
    if (!(err instanceof HeadSyntaxError)) throw err;
    throw new HttpError("ERR_HTTP_MALFORMED", `${err.message}; is this an HTTP server?`);
  }
}

function lengthBody(reader: BufferedReader, length: number): ReadableStream<Uint8Array> {
  let remaining = length;
  return new ReadableStream({
    async pull(controller) {
      if (remaining === 0) return controller.close();
      const piece = new Uint8Array(Math.min(remaining, PIECE));
      const n = await reader.read(piece);
      if (n === null) {
        throw new HttpError(
          "ERR_HTTP_TRUNCATED",
          `the server closed the connection ${remaining} bytes before the end of the body (Content-Length: ${length})`,
        );
      }
      remaining -= n;
      controller.enqueue(piece.subarray(0, n));
    },
  }, { highWaterMark: 0 });
}

function chunkedBody(reader: BufferedReader, maxLineSize: number): ReadableStream<Uint8Array> {
  let remaining = 0; // bytes left in the current chunk
  let done = false;
  const line = async (what: string): Promise<string> => {
    let bytes: Uint8Array | null;
    try {
      bytes = await reader.readUntil("\r\n", { maxBytes: maxLineSize });
    } catch (err) {
      if (err instanceof LimitExceededError) {
        throw new HttpError("ERR_HTTP_MALFORMED", `${what} longer than ${maxLineSize} bytes`, {
          cause: err,
        });
      }
      throw truncated(what);
    }
    if (bytes === null) throw truncated(what);
    return decoder.decode(bytes.subarray(0, bytes.length - 2));
  };
  return new ReadableStream({
    async pull(controller) {
      if (done) return controller.close();
      if (remaining === 0) {
        const sizeLine = await line("a chunk-size line");
        const hex = sizeLine.split(";")[0].trim();
        if (!/^[0-9a-fA-F]{1,15}$/.test(hex)) {
          throw new HttpError(
            "ERR_HTTP_MALFORMED",
            `bad chunk size: ${JSON.stringify(sizeLine.slice(0, 40))}`,
          );
        }
        remaining = parseInt(hex, 16);
        if (remaining === 0) {
          // Trailers, up to the blank line that ends the message.
          for (let i = 0; (await line("the trailer")) !== ""; i++) {
            if (i > 100) throw new HttpError("ERR_HTTP_MALFORMED", "more than 100 trailer lines");
          }
          done = true;
          return controller.close();
        }
      }
      const piece = new Uint8Array(Math.min(remaining, PIECE));
      const n = await reader.read(piece);
      if (n === null) throw truncated("a chunk");
      remaining -= n;
      controller.enqueue(piece.subarray(0, n));
      if (remaining === 0 && (await line("the end of a chunk")) !== "") {
        throw new HttpError("ERR_HTTP_MALFORMED", "a chunk is longer than its size says");
      }
    },
  }, { highWaterMark: 0 });
}

function closeBody(reader: BufferedReader): ReadableStream<Uint8Array> {
  return new ReadableStream({
    async pull(controller) {
      const chunk = await reader.readChunk();
      if (chunk === null) controller.close();
      else controller.enqueue(chunk);
    },
  }, { highWaterMark: 0 });
}

function truncated(what: string): HttpError {
  return new HttpError(
    "ERR_HTTP_TRUNCATED",
    `the server closed the connection in the middle of ${what} of a chunked body`,
  );
}
