// Finds the BufferedReader behind any readable, so that io calls on the same
// stream share one buffer and never lose bytes between them. Internal.
import { BufferedReader, bufferedReaderOf } from "./buffered_reader.ts";

const readers = new WeakMap<ReadableStream<Uint8Array>, BufferedReader>();

/** Something the io functions read from. */
export type Readable = ReadableStream<Uint8Array> | BufferedReader;

/**
 * Runs `fn` with the reader for `source`: the reader itself, the one behind a
 * netkit stream, or one kept for a generic stream between calls (its lock is
 * released after each call, its leftovers kept for the next).
 */
export async function withReader<T>(
  source: Readable,
  fn: (r: BufferedReader) => Promise<T>,
): Promise<T> {
  if (source instanceof BufferedReader) return await fn(source);
  const own = bufferedReaderOf(source);
  if (own !== undefined) {
    if (source.locked) throw new TypeError("the stream is locked: release its reader first");
    return await fn(own);
  }
  let reader = readers.get(source);
  if (reader === undefined) {
    reader = new BufferedReader(source);
    readers.set(source, reader);
  }
  try {
    return await fn(reader);
  } finally {
    reader.releaseLock();
  }
}
