/**
 * {@linkcode PreparedMessage}: one message, encoded once for many
 * connections.
 *
 * @module
 */
import { Opcode } from "../codec/constants.ts";
import { encodeFrame } from "../codec/sender.ts";
import type { DeflateContext } from "../codec/permessage_deflate.ts";

const encoder = new TextEncoder();

/**
 * Internal: the message's frame compressed by a compressor without context
 * takeover, computed once per compressor and shared by every connection that
 * negotiated permessage-deflate with that window (a server in
 * `compression: "shared"` mode).
 */
export const kDeflatedFrame: unique symbol = Symbol("netkit.ws.deflatedFrame");

/**
 * Internal: a message made from its payload bytes whose payload is a view of
 * its frame — one buffer kept, not two (the envelopes a history keeps).
 */
export let preparedFromPayload: (payload: Uint8Array, binary: boolean) => PreparedMessage;

/**
 * A message encoded once for many connections: its payload bytes and its
 * unmasked (server) frame are computed on first use and shared — and, on a
 * server with `compression: "shared"`, its compressed frame too, for every
 * subscriber that negotiated permessage-deflate. Publishing
 * makes one for you; make one yourself to send the same message to
 * connections you pick.
 *
 * @example
 * ```ts
 * import { PreparedMessage } from "@netkit/netkit/websocket";
 * import assert from "node:assert/strict";
 *
 * const msg = new PreparedMessage("hello");
 * assert.equal(msg.binary, false);
 * assert.equal(msg.frame.length, 7); // a 2-byte header and "hello", framed once for everyone
 * ```
 */
export class PreparedMessage {
  /** The message as given: a string (text) or bytes (binary). */
  readonly data: string | Uint8Array;
  /** Whether it goes out as a binary message. */
  readonly binary: boolean;
  #payload: Uint8Array | undefined;
  #frame: Uint8Array | undefined;
  // The compressed frame of the compressor used first; others (servers with
  // other windows or levels sharing a hub) in a map, made when needed.
  #deflatedBy: DeflateContext | undefined;
  #deflated: Uint8Array | undefined;
  #moreDeflated: Map<DeflateContext, Uint8Array> | undefined;

  static {
    preparedFromPayload = (payload, binary) => {
      const frame = encodeFrame(binary ? Opcode.Binary : Opcode.Text, payload);
      const message = new PreparedMessage(frame.subarray(frame.length - payload.length), binary);
      message.#frame = frame;
      return message;
    };
  }

  /**
   * Wraps a message; nothing is encoded until a connection needs it.
   *
   * @param data A string (sent as text) or bytes (sent as binary).
   * @param binary Overrides the type: `true` sends a string's UTF-8 as binary,
   *   `false` sends bytes as text (they must be UTF-8).
   */
  constructor(data: string | Uint8Array, binary?: boolean) {
    this.data = data;
    this.binary = binary ?? typeof data !== "string";
  }

  /** The payload bytes (text as UTF-8). */
  get payload(): Uint8Array {
    return this.#payload ??= typeof this.data === "string" ? encoder.encode(this.data) : this.data;
  }

  /** The whole unmasked frame, as a server sends it; encoded once. */
  get frame(): Uint8Array {
    if (this.#frame !== undefined) return this.#frame;
    const payload = this.payload;
    const frame = encodeFrame(this.binary ? Opcode.Binary : Opcode.Text, payload);
    // A string's UTF-8 was made here: from now on it is a view of the frame,
    // so one buffer is kept, not two (a history keeps messages for minutes).
    if (typeof this.data === "string") {
      this.#payload = frame.subarray(frame.length - payload.length);
    }
    return this.#frame = frame;
  }

  /**
   * Internal: the unmasked frame with the payload compressed by `ctx` (which
   * must have no context takeover: its output depends on the message alone)
   * and RSV1 set; compressed once per compressor.
   */
  [kDeflatedFrame](ctx: DeflateContext): Uint8Array {
    if (this.#deflatedBy === ctx) return this.#deflated!;
    if (this.#deflatedBy === undefined) {
      this.#deflated = this.#deflate(ctx);
      this.#deflatedBy = ctx;
      return this.#deflated;
    }
    const more = this.#moreDeflated ??= new Map();
    let frame = more.get(ctx);
    if (frame === undefined) more.set(ctx, frame = this.#deflate(ctx));
    return frame;
  }

  #deflate(ctx: DeflateContext): Uint8Array {
    const opcode = this.binary ? Opcode.Binary : Opcode.Text;
    return encodeFrame(opcode, ctx.compress(this.payload), { rsv1: true });
  }
}
