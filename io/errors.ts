import { NetkitError } from "../errors.ts";

/**
 * A read needed to buffer more than its limit allows, so it stopped rather
 * than grow memory without bound. `limit` names the option that was hit
 * (`"maxBytes"`, `"maxFrameSize"`, `"maxFrameSize"`, …) and `value` its size.
 *
 * @example
 * ```ts
 * import { LimitExceededError, readUntil } from "@netkit/netkit/io";
 * import assert from "node:assert/strict";
 *
 * const stream = ReadableStream.from([new TextEncoder().encode("x".repeat(100))]);
 * await assert.rejects(readUntil(stream, "\n", { maxBytes: 10 }), (err) => {
 *   assert.ok(err instanceof LimitExceededError);
 *   assert.equal(err.limit, "maxBytes");
 *   assert.equal(err.value, 10);
 *   return true;
 * });
 * ```
 */
export class LimitExceededError extends NetkitError {
  /** The option whose limit was hit, e.g. `"maxBytes"`. */
  readonly limit: string;
  /** The limit's value, in bytes. */
  readonly value: number;

  /**
   * Makes the error for a limit that was hit.
   *
   * @param limit The option whose limit was hit.
   * @param value The limit's value in bytes.
   * @param message What was being read when the limit was hit.
   */
  constructor(limit: string, value: number, message: string) {
    super(
      "ERR_LIMIT_EXCEEDED",
      `${message}: over ${limit} (${value} bytes); raise ${limit} if the peer is right to send more`,
    );
    this.limit = limit;
    this.value = value;
  }
}

/**
 * The stream ended in the middle of a record: after some bytes of a line,
 * frame or exact-length read, but before it was complete. `partial` holds the
 * bytes that did arrive (as asyncio's `IncompleteReadError`).
 *
 * @example
 * ```ts
 * import { readUntil, UnexpectedEofError } from "@netkit/netkit/io";
 * import assert from "node:assert/strict";
 *
 * const stream = ReadableStream.from([new TextEncoder().encode("no newline")]);
 * await assert.rejects(readUntil(stream, "\n"), (err) => {
 *   assert.ok(err instanceof UnexpectedEofError);
 *   assert.equal(new TextDecoder().decode(err.partial), "no newline");
 *   return true;
 * });
 * ```
 */
export class UnexpectedEofError extends NetkitError {
  /** The bytes that arrived before the stream ended. */
  readonly partial: Uint8Array;

  /**
   * Makes the error for a stream that ended mid-record.
   *
   * @param partial The bytes that arrived before the end.
   * @param expected What was still missing, for the message.
   */
  constructor(partial: Uint8Array, expected: string) {
    super(
      "ERR_UNEXPECTED_EOF",
      `stream ended after ${partial.length} bytes, before ${expected}; the peer closed mid-record`,
    );
    this.partial = partial;
  }
}
