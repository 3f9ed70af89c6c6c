/**
 * Reading and writing byte streams: records up to a delimiter
 * ({@linkcode readUntil}), exact counts ({@linkcode readExact}), lines
 * ({@linkcode readLine}, {@linkcode readLines}), whole writes
 * ({@linkcode writeAll}), a buffered reader that owns its buffer
 * ({@linkcode BufferedReader}), and framing transforms: delimited
 * ({@linkcode DelimiterStream}) and length-prefixed
 * ({@linkcode LengthPrefixedEncoderStream}, {@linkcode LengthPrefixedDecoderStream}).
 *
 * Every read that buffers has a limit with a default; going over it is a
 * {@linkcode LimitExceededError}. A stream that ends mid-record is an
 * {@linkcode UnexpectedEofError} carrying the bytes that did arrive.
 *
 * @example Reading a head, then a line, from one stream
 * ```ts
 * import { readLine, readUntil } from "@netkit/netkit/io";
 * import assert from "node:assert/strict";
 *
 * const stream = ReadableStream.from([new TextEncoder().encode("HEAD\r\n\r\nbody line\n")]);
 * assert.equal(new TextDecoder().decode((await readUntil(stream, "\r\n\r\n"))!), "HEAD\r\n\r\n");
 * assert.equal(await readLine(stream), "body line");
 * assert.equal(await readLine(stream), null);
 * ```
 *
 * @module
 */

export {
  BufferedReader,
  type BufferedReaderOptions,
  type ByteSource,
  DEFAULT_MAX_BYTES,
  type ReadUntilOptions,
} from "./buffered_reader.ts";
export type { Readable } from "./_reader_for.ts";
export { readUntil } from "./read_until.ts";
export { readExact } from "./read_exact.ts";
export { readLine, readLines } from "./read_lines.ts";
export { writeAll } from "./write_all.ts";
export { LimitExceededError, UnexpectedEofError } from "./errors.ts";
export {
  DEFAULT_MAX_DELIMITED_FRAME_SIZE,
  DelimiterStream,
  type DelimiterStreamOptions,
} from "./delimiter_stream.ts";
export {
  DEFAULT_MAX_FRAME_SIZE,
  encodeLengthPrefixed,
  LengthPrefixedDecoderStream,
  LengthPrefixedEncoderStream,
  type LengthPrefixedOptions,
} from "./length_prefixed.ts";
