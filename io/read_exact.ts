import { type Readable, withReader } from "./_reader_for.ts";

/**
 * Reads exactly `n` bytes from `readable` (Go's `io.ReadFull`, asyncio's
 * `readexactly`), keeping any bytes after them for the next read.
 *
 * @param readable The stream, or a {@linkcode BufferedReader}.
 * @param n How many bytes; the caller's limit, so check it before asking
 *   for a length a peer announced.
 * @returns A copy of the bytes; `null` if the stream ended before the first.
 * @throws {UnexpectedEofError} The stream ended after some of them.
 *
 * @example Reading a 4-byte big-endian length, then the payload
 * ```ts
 * import { readExact } from "@netkit/netkit/io";
 * import assert from "node:assert/strict";
 *
 * const stream = ReadableStream.from([new Uint8Array([0, 0, 0, 2, 104]), new Uint8Array([105])]);
 * const header = (await readExact(stream, 4))!;
 * const length = new DataView(header.buffer, header.byteOffset).getUint32(0);
 * assert.equal(length, 2);
 * assert.equal(new TextDecoder().decode((await readExact(stream, length))!), "hi");
 * ```
 */
export function readExact(readable: Readable, n: number): Promise<Uint8Array | null> {
  return withReader(readable, (reader) => reader.readExact(n));
}
