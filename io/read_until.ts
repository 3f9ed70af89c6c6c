import type { ReadUntilOptions } from "./buffered_reader.ts";
import { type Readable, withReader } from "./_reader_for.ts";

/**
 * Reads from `readable` up to and including the first `delimiter`, as
 * asyncio's `readuntil`, Go's `ReadBytes` and Asio's `read_until` do.
 *
 * Bytes that arrived after the delimiter are kept: the next io call on the
 * same stream returns them first, and on a netkit `Conn` (or a
 * {@linkcode BufferedReader}'s `readable`) so does anything the stream is
 * handed to later (`pipeTo`, a framing transform, a TLS upgrade). The stream
 * is not left locked between calls.
 *
 * @param readable The stream, or a {@linkcode BufferedReader}.
 * @param delimiter A string (UTF-8) or bytes; not empty.
 * @param options `maxBytes`, the largest record accepted (default 64 KiB).
 * @returns A copy of the record with its delimiter; `null` at a clean end of
 *   the stream.
 * @throws {LimitExceededError} The record would exceed `maxBytes` (code
 *   `ERR_LIMIT_EXCEEDED`); the bytes stay buffered.
 * @throws {UnexpectedEofError} The stream ended mid-record (code
 *   `ERR_UNEXPECTED_EOF`); `partial` holds the bytes that came.
 *
 * @example Reading an HTTP response head
 * ```ts
 * import { readUntil } from "@netkit/netkit/io";
 * import assert from "node:assert/strict";
 *
 * const response = ReadableStream.from([
 *   new TextEncoder().encode("HTTP/1.1 204 No Content\r\nServer: x\r\n\r\n"),
 * ]);
 * const head = await readUntil(response, "\r\n\r\n");
 * assert.equal(new TextDecoder().decode(head!), "HTTP/1.1 204 No Content\r\nServer: x\r\n\r\n");
 * ```
 */
export function readUntil(
  readable: Readable,
  delimiter: string | Uint8Array,
  options?: ReadUntilOptions,
): Promise<Uint8Array | null> {
  return withReader(readable, (reader) => reader.readUntil(delimiter, options));
}
