import { toBytes } from "./_bytes.ts";
import { rawSinkOf } from "../internal/raw_writable.ts";

/**
 * Writes every byte of `bytes` to `writable`, in order, waiting while the
 * stream applies backpressure, and releases the stream's lock when done
 * (also when the write fails), so calls can be interleaved with other
 * writers of the same stream.
 *
 * On a netkit `Conn`'s writable with nothing queued, the bytes go straight
 * to the socket, skipping the web-streams queue.
 *
 * @param writable The stream.
 * @param bytes Bytes, or a string sent as UTF-8.
 *
 * @example Sending an HTTP request
 * ```ts
 * import { writeAll } from "@netkit/netkit/io";
 * import assert from "node:assert/strict";
 *
 * const chunks: Uint8Array[] = [];
 * const sink = new WritableStream<Uint8Array>({ write: (c) => void chunks.push(c) });
 * const request = "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n";
 * await writeAll(sink, request);
 * assert.equal(chunks.length, 1); // one write, the whole request
 * assert.equal(new TextDecoder().decode(chunks[0]), request);
 * ```
 */
export async function writeAll(
  writable: WritableStream<Uint8Array>,
  bytes: Uint8Array | string,
): Promise<void> {
  const data = toBytes(bytes);
  const writer = writable.getWriter();
  try {
    const raw = rawSinkOf(writable);
    if (raw !== undefined && writer.desiredSize === 1) {
      // Nothing queued or in flight, and we hold the lock: nobody can overtake.
      await raw.write(data);
    } else {
      await writer.ready;
      await writer.write(data);
    }
  } finally {
    writer.releaseLock();
  }
}
