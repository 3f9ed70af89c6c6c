import { type Framer, framingPair } from "./_framing_pair.ts";
import { describeDelimiter, indexOfBytes, toDelimiter } from "./_bytes.ts";
import { LimitExceededError, UnexpectedEofError } from "./errors.ts";

/** Options for {@linkcode DelimiterStream}. */
export interface DelimiterStreamOptions {
  /**
   * What happens to the delimiter: `"discard"` emits each frame without it,
   * `"suffix"` emits it at the end of each frame.
   * @default {"discard"}
   */
  disposition?: "discard" | "suffix";
  /**
   * The most bytes one frame may have, **not** counting its delimiter (as
   * Netty's `DelimiterBasedFrameDecoder`), whatever the `disposition`. A
   * longer frame errors the stream with a {@linkcode LimitExceededError}
   * (`limit` `"maxFrameSize"`) as soon as it is certain to be too long, so
   * at most `maxFrameSize + delimiter.length - 1` bytes are ever held.
   * @default {65536} (64 KiB)
   */
  maxFrameSize?: number;
}

/** The default of {@linkcode DelimiterStreamOptions.maxFrameSize}: 64 KiB. */
export const DEFAULT_MAX_DELIMITED_FRAME_SIZE = 64 * 1024;

const EMPTY = new Uint8Array(0);

/**
 * Splits a byte stream into frames ended by a delimiter: lines, NUL-ended
 * records, `"\r\n\r\n"`-ended heads. The delimiter may have several bytes,
 * and may be split across input chunks.
 *
 * - Every delimiter ends a frame, so two delimiters in a row make an empty
 *   frame.
 * - A frame that lies whole inside one input chunk is emitted as a view of
 *   that chunk, without a copy; only a frame spread over several chunks is
 *   gathered into a new buffer, which never holds more than
 *   `maxFrameSize + delimiter.length - 1` bytes.
 * - A frame longer than `maxFrameSize` errors the stream with a
 *   {@linkcode LimitExceededError} (code `ERR_LIMIT_EXCEEDED`, `limit`
 *   `"maxFrameSize"`).
 * - At the end of the input, bytes after the last delimiter are not a frame:
 *   if there are any, the stream errors with an
 *   {@linkcode UnexpectedEofError} (code `ERR_UNEXPECTED_EOF`) whose `partial`
 *   holds them. A stream that ends right after a delimiter (or is empty)
 *   closes cleanly.
 * - Errors reach the reader only after every frame before them: a reader
 *   sees `"a"` and `"b"` from `"a\nb\npartial"`, then the
 *   {@linkcode UnexpectedEofError}. (A plain `TransformStream` would drop the
 *   frames still queued when it errors; this is a `TransformStream` in type
 *   and behaviour otherwise, backpressure included.)
 *
 * @example Splitting lines that arrive in pieces
 * ```ts
 * import { DelimiterStream } from "@netkit/netkit/io";
 * import assert from "node:assert/strict";
 *
 * const chunks = ["one\r\ntw", "o\r", "\n"].map((s) => new TextEncoder().encode(s));
 * const frames = ReadableStream.from(chunks)
 *   .pipeThrough(new DelimiterStream("\r\n"))
 *   .pipeThrough(new TextDecoderStream());
 * assert.deepEqual(await Array.fromAsync(frames), ["one", "two"]);
 * ```
 *
 * @example Keeping the delimiter, and limiting the frame length
 * ```ts
 * import { DelimiterStream, LimitExceededError } from "@netkit/netkit/io";
 * import assert from "node:assert/strict";
 *
 * const bytes = new Uint8Array([1, 2, 0, 3, 4, 5, 6, 0]);
 * const nul = new Uint8Array([0]);
 * const frames = ReadableStream.from([bytes])
 *   .pipeThrough(new DelimiterStream(nul, { disposition: "suffix", maxFrameSize: 3 }));
 * const reader = frames.getReader();
 * assert.deepEqual((await reader.read()).value, new Uint8Array([1, 2, 0]));
 * await assert.rejects(reader.read(), LimitExceededError); // [3, 4, 5, 6] is over 3 bytes
 * ```
 */
export class DelimiterStream implements TransformStream<Uint8Array, Uint8Array> {
  /** The frames. */
  readonly readable: ReadableStream<Uint8Array>;
  /** The bytes to split. */
  readonly writable: WritableStream<Uint8Array>;

  /**
   * Creates a splitter for one stream of bytes.
   *
   * @param delimiter The bytes that end a frame: a string (matched as UTF-8)
   *   or bytes; not empty.
   * @param options `disposition` (default `"discard"`) and `maxFrameSize`
   *   (default 64 KiB).
   * @throws {TypeError} The delimiter is empty, or `disposition` is unknown.
   * @throws {RangeError} `maxFrameSize` is not a non-negative integer.
   */
  constructor(delimiter: string | Uint8Array, options: DelimiterStreamOptions = {}) {
    ({ readable: this.readable, writable: this.writable } = framingPair(
      new Splitter(toDelimiter(delimiter), options),
    ));
  }
}

/** The state of one {@linkcode DelimiterStream}. */
class Splitter implements Framer {
  readonly #delim: Uint8Array;
  readonly #suffix: boolean;
  readonly #max: number;
  // The start of the current frame, gathered from earlier chunks. It never
  // holds a whole delimiter.
  #pending: Uint8Array = EMPTY;
  #pendingLength = 0;

  constructor(delim: Uint8Array, options: DelimiterStreamOptions) {
    const { disposition = "discard", maxFrameSize = DEFAULT_MAX_DELIMITED_FRAME_SIZE } = options;
    if (disposition !== "discard" && disposition !== "suffix") {
      throw new TypeError(
        `DelimiterStream: disposition must be "discard" or "suffix", got ${disposition}`,
      );
    }
    if (!Number.isSafeInteger(maxFrameSize) || maxFrameSize < 0) {
      throw new RangeError(
        `DelimiterStream: maxFrameSize must be a non-negative integer, got ${maxFrameSize}`,
      );
    }
    // Copy: the caller may reuse its array.
    this.#delim = delim.slice();
    this.#suffix = disposition === "suffix";
    this.#max = maxFrameSize;
  }

  push(chunk: Uint8Array, emit: (frame: Uint8Array) => void): void {
    const delim = this.#delim;
    const dl = delim.length;
    let pos = 0;
    if (this.#pendingLength > 0 && chunk.length > 0) pos = this.#finishPending(chunk, emit);
    if (pos < 0) return; // the whole chunk went to the pending frame
    const single = dl === 1 ? delim[0] : -1;
    for (;;) {
      const at = single >= 0
        ? chunk.indexOf(single, pos)
        : indexOfBytes(chunk, delim, pos, chunk.length);
      if (at < 0) break;
      if (at - pos > this.#max) throw this.#limitError();
      emit(chunk.subarray(pos, this.#suffix ? at + dl : at));
      pos = at + dl;
    }
    if (pos < chunk.length) this.#append(chunk.subarray(pos));
  }

  end(): void {
    if (this.#pendingLength === 0) return;
    const partial = this.#pending.slice(0, this.#pendingLength);
    this.#pending = EMPTY;
    this.#pendingLength = 0;
    throw new UnexpectedEofError(partial, `the delimiter ${describeDelimiter(this.#delim)}`);
  }

  /**
   * Ends the pending frame with the first delimiter of `pending ++ chunk`.
   * Returns where the rest of `chunk` starts, or -1 if `chunk` holds no end
   * of the frame (it was added to the pending bytes).
   */
  #finishPending(
    chunk: Uint8Array,
    emit: (frame: Uint8Array) => void,
  ): number {
    const delim = this.#delim;
    const dl = delim.length;
    const pl = this.#pendingLength;
    let frameLength = -1; // without the delimiter
    let used = 0; // bytes of chunk that belong to the frame and its delimiter
    if (dl > 1) {
      // A delimiter that starts in the pending bytes: it starts in their last
      // dl - 1 bytes, since they never hold a whole one.
      const k = Math.min(dl - 1, pl);
      const head = Math.min(dl - 1, chunk.length);
      const window = new Uint8Array(k + head);
      window.set(this.#pending.subarray(pl - k, pl));
      window.set(chunk.subarray(0, head), k);
      const at = indexOfBytes(window, delim, 0, window.length);
      if (at >= 0 && at < k) {
        frameLength = pl - k + at;
        used = at + dl - k;
      }
    }
    if (frameLength < 0) {
      const at = indexOfBytes(chunk, delim, 0, chunk.length);
      if (at < 0) {
        this.#append(chunk);
        return -1;
      }
      frameLength = pl + at;
      used = at + dl;
    }
    if (frameLength > this.#max) throw this.#limitError();
    const size = this.#suffix ? frameLength + dl : frameLength;
    const frame = new Uint8Array(size);
    const fromPending = Math.min(pl, size);
    frame.set(this.#pending.subarray(0, fromPending));
    if (size > fromPending) frame.set(chunk.subarray(0, size - fromPending), fromPending);
    this.#pendingLength = 0;
    emit(frame);
    return used;
  }

  /** Adds bytes that hold no delimiter end to the pending frame. */
  #append(bytes: Uint8Array): void {
    const length = this.#pendingLength + bytes.length;
    // Fail as soon as the frame is certain to be too long: the delimiter can
    // at best start in the last bytes, where they match its beginning.
    if (length - this.#delimPrefixAtEnd(bytes) > this.#max) throw this.#limitError();
    if (this.#pending.length < length) {
      const grown = new Uint8Array(
        Math.max(length, Math.min(this.#pending.length * 2, this.#max + this.#delim.length)),
      );
      grown.set(this.#pending.subarray(0, this.#pendingLength));
      this.#pending = grown;
    }
    this.#pending.set(bytes, this.#pendingLength);
    this.#pendingLength = length;
  }

  /**
   * How many bytes at the end of `pending ++ bytes` could be the start of a
   * delimiter: the longest proper prefix of the delimiter they end with.
   */
  #delimPrefixAtEnd(bytes: Uint8Array): number {
    const delim = this.#delim;
    const pl = this.#pendingLength;
    const total = pl + bytes.length;
    const byteAt = (i: number) => i < pl ? this.#pending[i] : bytes[i - pl];
    for (let k = Math.min(delim.length - 1, total); k > 0; k--) {
      let match = true;
      for (let j = 0; j < k; j++) {
        if (byteAt(total - k + j) !== delim[j]) {
          match = false;
          break;
        }
      }
      if (match) return k;
    }
    return 0;
  }

  #limitError(): LimitExceededError {
    this.#pending = EMPTY;
    this.#pendingLength = 0;
    return new LimitExceededError(
      "maxFrameSize",
      this.#max,
      `DelimiterStream: no delimiter ${describeDelimiter(this.#delim)} within the frame limit`,
    );
  }
}
