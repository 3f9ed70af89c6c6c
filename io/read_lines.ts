import type { ReadUntilOptions } from "./buffered_reader.ts";
import { type Readable, withReader } from "./_reader_for.ts";

/**
 * Reads one line, ended by `"\n"` or `"\r\n"`, decoded as UTF-8 and without
 * its ending. A last line with no ending is returned as it is.
 *
 * @param readable The stream, or a {@linkcode BufferedReader}.
 * @param options `maxBytes`, the longest line accepted (default 64 KiB).
 * @returns The line, or `null` at the end of the stream.
 * @throws {LimitExceededError} The line is longer than `maxBytes`.
 *
 * @example
 * ```ts
 * import { readLine } from "@netkit/netkit/io";
 * import assert from "node:assert/strict";
 *
 * const stream = ReadableStream.from([new TextEncoder().encode("HELO x\r\nQUIT\r\n")]);
 * assert.equal(await readLine(stream), "HELO x");
 * assert.equal(await readLine(stream), "QUIT");
 * assert.equal(await readLine(stream), null); // the end of the stream
 * ```
 */
export function readLine(readable: Readable, options?: ReadUntilOptions): Promise<string | null> {
  return withReader(readable, (reader) => reader.readLine(options));
}

/**
 * Iterates over the lines of `readable` (see {@linkcode readLine}). Breaking
 * out of the loop leaves the rest of the stream unread and unlocked: a
 * protocol can read a few lines, then hand the stream on.
 *
 * @example
 * ```ts
 * import { readLines } from "@netkit/netkit/io";
 * import assert from "node:assert/strict";
 *
 * const stream = ReadableStream.from([new TextEncoder().encode("a\nb\r\nc")]);
 * const lines: string[] = [];
 * for await (const line of readLines(stream)) lines.push(line);
 * assert.deepEqual(lines, ["a", "b", "c"]);
 * ```
 */
export async function* readLines(
  readable: Readable,
  options?: ReadUntilOptions,
): AsyncGenerator<string, void, undefined> {
  for (;;) {
    const line = await readLine(readable, options);
    if (line === null) return;
    yield line;
  }
}
