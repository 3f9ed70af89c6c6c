/**
 * {@linkcode PreparedMessage}: one message, encoded once for many
 * connections.
 *
 * @module
 */
import { Opcode } from "../codec/constants.ts";
import { encodeFrame } from "../codec/sender.ts";

const encoder = new TextEncoder();

/**
 * A message encoded once for many connections: its payload bytes and its
 * unmasked (server) frame are computed on first use and shared. Publishing
 * makes one for you; make one yourself to send the same message to
 * connections you pick.
 *
 * @example
 * ```ts
 * import { PreparedMessage } from "@netkit/netkit/websocket";
 *
 * const msg = new PreparedMessage("hello");
 * console.log(msg.binary, msg.frame.length); // false 7
 * ```
 */
export class PreparedMessage {
  /** The message as given: a string (text) or bytes (binary). */
  readonly data: string | Uint8Array;
  /** Whether it goes out as a binary message. */
  readonly binary: boolean;
  #payload: Uint8Array | undefined;
  #frame: Uint8Array | undefined;

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
    return this.#frame ??= encodeFrame(this.binary ? Opcode.Binary : Opcode.Text, this.payload);
  }
}
