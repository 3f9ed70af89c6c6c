import { toBytes } from "./_bytes.ts";
import { LimitExceededError, UnexpectedEofError } from "./errors.ts";
import { type Framer, framingPair } from "./_framing_pair.ts";

/** Options for length-prefixed framing; both ends must agree on them. */
export interface LengthPrefixedOptions {
  /**
   * How many bytes the length header has: a big-endian unsigned integer of
   * 1, 2 or 4 bytes, counting the payload only (not the header itself).
   * @default {4}
   */
  headerSize?: 1 | 2 | 4;
  /**
   * The largest payload, in bytes, not counting the header. The decoder
   * errors with a {@linkcode LimitExceededError} (`limit` `"maxFrameSize"`)
   * as soon as a header announces more — before buffering any of it — and
   * the encoder refuses to send more.
   * @default {1048576} (1 MiB)
   */
  maxFrameSize?: number;
}

/** The default of {@linkcode LengthPrefixedOptions.maxFrameSize}: 1 MiB. */
export const DEFAULT_MAX_FRAME_SIZE = 1024 * 1024;

const EMPTY = new Uint8Array(0);

interface Settings {
  headerSize: 1 | 2 | 4;
  maxFrameSize: number;
}

function settings(options: LengthPrefixedOptions, who: string): Settings {
  const { headerSize = 4, maxFrameSize = DEFAULT_MAX_FRAME_SIZE } = options;
  if (headerSize !== 1 && headerSize !== 2 && headerSize !== 4) {
    throw new RangeError(`${who}: headerSize must be 1, 2 or 4, got ${headerSize}`);
  }
  if (!Number.isSafeInteger(maxFrameSize) || maxFrameSize < 0) {
    throw new RangeError(
      `${who}: maxFrameSize must be a non-negative integer, got ${maxFrameSize}`,
    );
  }
  return { headerSize, maxFrameSize };
}

function limitError(max: number, what: string): LimitExceededError {
  return new LimitExceededError("maxFrameSize", max, what);
}

/**
 * Frames one payload: its length as a big-endian header of `headerSize`
 * bytes, then the payload, in one new buffer.
 *
 * @param payload The payload: bytes, or a string sent as UTF-8.
 * @param options `headerSize` (default 4) and `maxFrameSize` (default 1 MiB).
 * @returns The header and the payload.
 * @throws {LimitExceededError} The payload is over `maxFrameSize` (code
 *   `ERR_LIMIT_EXCEEDED`, `limit` `"maxFrameSize"`).
 * @throws {RangeError} The payload's length does not fit in `headerSize`
 *   bytes (over 255 bytes for 1, 65535 for 2), or an option is invalid.
 *
 * @example
 * ```ts
 * import { encodeLengthPrefixed } from "@netkit/netkit/io";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(encodeLengthPrefixed("hi"), new Uint8Array([0, 0, 0, 2, 104, 105]));
 * const frame = encodeLengthPrefixed(new Uint8Array([7]), { headerSize: 2 });
 * assert.deepEqual(frame, new Uint8Array([0, 1, 7]));
 * ```
 */
export function encodeLengthPrefixed(
  payload: Uint8Array | string,
  options: LengthPrefixedOptions = {},
): Uint8Array {
  return encode(toBytes(payload), settings(options, "encodeLengthPrefixed"));
}

function encode(payload: Uint8Array, { headerSize, maxFrameSize }: Settings): Uint8Array {
  const n = payload.length;
  if (n > maxFrameSize) {
    throw limitError(maxFrameSize, `a ${n}-byte payload is too large to send`);
  }
  const fits = headerSize === 4 ? 0xffff_ffff : headerSize === 2 ? 0xffff : 0xff;
  if (n > fits) {
    throw new RangeError(
      `a ${n}-byte payload does not fit a ${headerSize}-byte length header ` +
        `(at most ${fits}); use a larger headerSize`,
    );
  }
  const frame = new Uint8Array(headerSize + n);
  const view = new DataView(frame.buffer);
  if (headerSize === 4) view.setUint32(0, n);
  else if (headerSize === 2) view.setUint16(0, n);
  else view.setUint8(0, n);
  frame.set(payload, headerSize);
  return frame;
}

/**
 * Frames each payload written to it with its length (see
 * {@linkcode encodeLengthPrefixed}): one output chunk per input chunk, header
 * and payload together, so a message boundary survives any byte stream.
 * A payload over `maxFrameSize` errors the stream with a
 * {@linkcode LimitExceededError}.
 *
 * @example
 * ```ts
 * import { LengthPrefixedDecoderStream, LengthPrefixedEncoderStream } from "@netkit/netkit/io";
 * import assert from "node:assert/strict";
 *
 * const messages = ["hello", "", "world"].map((s) => new TextEncoder().encode(s));
 * const framed = ReadableStream.from(messages)
 *   .pipeThrough(new LengthPrefixedEncoderStream({ headerSize: 2 }));
 * // ... sent over any byte stream, which may split or merge chunks ...
 * const payloads = framed.pipeThrough(new LengthPrefixedDecoderStream({ headerSize: 2 }));
 * assert.deepEqual(await Array.fromAsync(payloads), messages);
 * ```
 */
export class LengthPrefixedEncoderStream extends TransformStream<Uint8Array, Uint8Array> {
  /**
   * Creates an encoder for one stream of payloads.
   *
   * @param options `headerSize` (default 4) and `maxFrameSize` (default
   *   1 MiB).
   * @throws {RangeError} An option is invalid.
   */
  constructor(options: LengthPrefixedOptions = {}) {
    const s = settings(options, "LengthPrefixedEncoderStream");
    super({ transform: (payload, controller) => controller.enqueue(encode(payload, s)) });
  }
}

/**
 * Splits a byte stream of length-prefixed frames (see
 * {@linkcode encodeLengthPrefixed}) back into payloads, whatever the input
 * chunking.
 *
 * - A payload that lies whole inside one input chunk is emitted as a view of
 *   that chunk, without a copy; one spread over several chunks is gathered
 *   into a buffer of exactly its size.
 * - A header that announces more than `maxFrameSize` errors the stream with a
 *   {@linkcode LimitExceededError} (code `ERR_LIMIT_EXCEEDED`, `limit`
 *   `"maxFrameSize"`) at once, before any of the payload is buffered.
 * - If the input ends inside a frame (a partial header or a partial payload),
 *   the stream errors with an {@linkcode UnexpectedEofError} (code
 *   `ERR_UNEXPECTED_EOF`) whose `partial` holds the bytes of that frame that
 *   did arrive, header included. Ending between frames closes cleanly.
 * - Errors reach the reader only after every payload before them (a plain
 *   `TransformStream` would drop the payloads still queued when it errors);
 *   otherwise this is a `TransformStream` in type and behaviour.
 *
 * @example Decoding frames that arrive in arbitrary pieces
 * ```ts
 * import { LengthPrefixedDecoderStream } from "@netkit/netkit/io";
 * import assert from "node:assert/strict";
 *
 * // A 3-byte payload, then an empty one, split at odd places.
 * const chunks = [[0, 0], [0, 3, 1, 2], [3, 0, 0, 0, 0]].map((b) => new Uint8Array(b));
 * const payloads = ReadableStream.from(chunks).pipeThrough(new LengthPrefixedDecoderStream());
 * const expected = [new Uint8Array([1, 2, 3]), new Uint8Array(0)];
 * assert.deepEqual(await Array.fromAsync(payloads), expected);
 * ```
 *
 * @example A peer announcing too much
 * ```ts
 * import { LengthPrefixedDecoderStream, LimitExceededError } from "@netkit/netkit/io";
 * import assert from "node:assert/strict";
 *
 * const payloads = ReadableStream.from([new Uint8Array([0xff, 0xff, 0xff, 0xff])])
 *   .pipeThrough(new LengthPrefixedDecoderStream({ maxFrameSize: 1024 }));
 * await assert.rejects(Array.fromAsync(payloads), LimitExceededError);
 * ```
 */
export class LengthPrefixedDecoderStream implements TransformStream<Uint8Array, Uint8Array> {
  /** The payloads. */
  readonly readable: ReadableStream<Uint8Array>;
  /** The framed bytes. */
  readonly writable: WritableStream<Uint8Array>;

  /**
   * Creates a decoder for one stream of frames.
   *
   * @param options `headerSize` (default 4) and `maxFrameSize` (default
   *   1 MiB).
   * @throws {RangeError} An option is invalid.
   */
  constructor(options: LengthPrefixedOptions = {}) {
    ({ readable: this.readable, writable: this.writable } = framingPair(
      new Decoder(settings(options, "LengthPrefixedDecoderStream")),
    ));
  }
}

/** The state of one {@linkcode LengthPrefixedDecoderStream}. */
class Decoder implements Framer {
  readonly #headerSize: 1 | 2 | 4;
  readonly #max: number;
  readonly #header: Uint8Array;
  #headerLength = 0; // header bytes gathered so far
  #payload: Uint8Array | null = null; // a payload being gathered
  #payloadLength = 0; // its bytes gathered so far

  constructor({ headerSize, maxFrameSize }: Settings) {
    this.#headerSize = headerSize;
    this.#max = maxFrameSize;
    this.#header = new Uint8Array(headerSize);
  }

  push(chunk: Uint8Array, emit: (frame: Uint8Array) => void): void {
    const hs = this.#headerSize;
    let pos = 0;
    while (pos < chunk.length) {
      if (this.#payload !== null) {
        // Gathering a payload spread over chunks.
        const payload = this.#payload;
        const n = Math.min(payload.length - this.#payloadLength, chunk.length - pos);
        payload.set(chunk.subarray(pos, pos + n), this.#payloadLength);
        this.#payloadLength += n;
        pos += n;
        if (this.#payloadLength === payload.length) {
          this.#payload = null;
          this.#payloadLength = 0;
          emit(payload);
        }
        continue;
      }
      let length: number;
      if (this.#headerLength === 0 && chunk.length - pos >= hs) {
        length = readLength(chunk, pos, hs);
        pos += hs;
      } else {
        const n = Math.min(hs - this.#headerLength, chunk.length - pos);
        this.#header.set(chunk.subarray(pos, pos + n), this.#headerLength);
        this.#headerLength += n;
        pos += n;
        if (this.#headerLength < hs) break;
        this.#headerLength = 0;
        length = readLength(this.#header, 0, hs);
      }
      if (length > this.#max) {
        throw limitError(this.#max, `a peer announced a ${length}-byte frame`);
      }
      if (chunk.length - pos >= length) {
        emit(length === 0 ? EMPTY.slice() : chunk.subarray(pos, pos + length));
        pos += length;
      } else {
        this.#payload = new Uint8Array(length);
        this.#payloadLength = 0;
      }
    }
  }

  end(): void {
    const hs = this.#headerSize;
    if (this.#payload !== null) {
      const partial = new Uint8Array(hs + this.#payloadLength);
      writeLength(partial, this.#payload.length, hs);
      partial.set(this.#payload.subarray(0, this.#payloadLength), hs);
      const expected = `the rest of a ${this.#payload.length}-byte frame payload`;
      this.#payload = null;
      throw new UnexpectedEofError(partial, expected);
    }
    if (this.#headerLength > 0) {
      const partial = this.#header.slice(0, this.#headerLength);
      this.#headerLength = 0;
      throw new UnexpectedEofError(partial, `the rest of a ${hs}-byte frame length header`);
    }
  }
}

function readLength(bytes: Uint8Array, at: number, headerSize: 1 | 2 | 4): number {
  if (headerSize === 1) return bytes[at];
  if (headerSize === 2) return (bytes[at] << 8) | bytes[at + 1];
  return ((bytes[at] << 24) >>> 0) + ((bytes[at + 1] << 16) | (bytes[at + 2] << 8) | bytes[at + 3]);
}

function writeLength(bytes: Uint8Array, length: number, headerSize: 1 | 2 | 4): void {
  for (let i = headerSize - 1; i >= 0; i--) {
    bytes[i] = length & 0xff;
    length = Math.floor(length / 256);
  }
}
