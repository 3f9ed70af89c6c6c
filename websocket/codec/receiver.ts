/**
 * The frame parser: bytes in (as they arrive from the socket, in any
 * chunking), validated frames and whole messages out. It enforces every rule
 * of RFC 6455 §5 a receiver must — masking, RSV bits, opcodes, control-frame
 * size, continuation order, UTF-8 of text (also across fragments) and close
 * codes — and the size limits, checked on each frame header before its
 * payload is buffered. With permessage-deflate negotiated (RFC 7692) it
 * also takes compressed messages: RSV1 on a message's first frame, the
 * fragments inflated once the last one is in, with `maxPayload` counting
 * the inflated bytes.
 *
 * @module
 */
import { CloseCode, DEFAULT_MAX_FRAGMENTS, DEFAULT_MAX_PAYLOAD, Opcode } from "./constants.ts";
import { WebSocketError } from "../errors.ts";
import { applyMask } from "./sender.ts";
import { decodeUtf8, isValidCloseCode } from "./validation.ts";
import type { DeflateContext } from "./permessage_deflate.ts";

/** What {@linkcode Receiver.next} returns: a whole message or a control frame. */
export type ReceivedFrame =
  | {
    /** A whole data message (fragments already joined). */
    type: "message";
    /** Binary (`true`) or text. */
    binary: boolean;
    /** The payload; for text, its UTF-8 bytes. */
    data: Uint8Array;
    /** The decoded text of a text message. */
    text?: string;
  }
  | {
    /** A ping or pong. */
    type: "ping" | "pong";
    /** Its payload (at most 125 bytes). */
    data: Uint8Array;
  }
  | {
    /** The peer's close frame. */
    type: "close";
    /** Its code; 1005 when the frame had none. */
    code: number;
    /** Its reason (may be empty). */
    reason: string;
  };

/** Options for {@linkcode Receiver}. */
export interface ReceiverOptions {
  /**
   * Parse frames sent by a client: they must be masked. A client's receiver
   * (`false`) rejects masked frames instead.
   */
  server: boolean;
  /**
   * The largest message, in bytes, counting every fragment. Checked on each
   * frame header, before the payload is buffered.
   * @default {1048576}
   */
  maxPayload?: number;
  /** The most frames one message may be split into. @default {1024} */
  maxFragments?: number;
  /**
   * The decompressor of a negotiated permessage-deflate (RFC 7692): RSV1 on
   * the first frame of a message marks it compressed, and its fragments go
   * through `decompressor.decompress` once the last one is in (a message
   * that inflates past `maxPayload` is `ERR_WS_MESSAGE_TOO_BIG`, a corrupt
   * stream `ERR_WS_INVALID_DEFLATE`). Without it, any RSV bit is a
   * protocol error. RSV1 on a continuation or a control frame, and RSV2 or
   * RSV3, always are. Default: none.
   */
  decompressor?: DeflateContext;
}

const EMPTY = new Uint8Array(0);
// Shared empty lists, replaced by a connection's own on first use (never pushed to).
const NONE: Uint8Array[] = [];
const NO_TEXT: string[] = [];

function protocolError(code: string, message: string): WebSocketError {
  return new WebSocketError(code, message, CloseCode.ProtocolError);
}

/**
 * An incremental RFC 6455 frame parser. Feed it the bytes read from the
 * socket with {@linkcode Receiver.push}, then call {@linkcode Receiver.next}
 * until it returns `undefined` (more bytes needed). Protocol violations throw
 * a {@linkcode WebSocketError} whose `closeCode` is what to send the peer.
 *
 * Payloads are unmasked in place: the chunks pushed become the parser's.
 *
 * @example Parsing a masked client frame
 * ```ts
 * import { encodeFrame, Opcode, Receiver } from "@netkit/netkit/websocket/codec";
 * import assert from "node:assert/strict";
 *
 * const receiver = new Receiver({ server: true });
 * receiver.push(encodeFrame(Opcode.Text, "hello", { mask: true }));
 * const frame = receiver.next();
 * assert.ok(frame?.type === "message");
 * assert.equal(frame.text, "hello");
 * ```
 */
export class Receiver {
  #server: boolean;
  #maxPayload: number;
  #maxFragments: number;
  // Received bytes not parsed yet; the shared empty list whenever nothing
  // is buffered, so that an idle connection keeps no array's capacity.
  #chunks: Uint8Array[] = NONE;
  #buffered = 0;
  // A header parsed whose payload has not fully arrived yet.
  #pending:
    | { fin: boolean; rsv1: boolean; opcode: number; mask: Uint8Array | undefined; length: number }
    | null = null;
  // A fragmented message in progress.
  #fragOpcode = -1;
  // Made for the first fragmented message: most connections never see one,
  // and a server holds a receiver per open connection.
  #fragments: Uint8Array[] = NONE;
  #fragBytes = 0;
  #fragCount = 0;
  #textParts: string[] = NO_TEXT;
  #decoder: TextDecoder | undefined;
  #failed = false;
  #decompressor: DeflateContext | undefined;
  // The fragmented message in progress is compressed (its first frame had RSV1).
  #fragCompressed = false;

  /**
   * Makes a parser for one connection.
   *
   * @param options Who sent the frames, and the limits.
   */
  constructor(options: ReceiverOptions) {
    this.#server = options.server;
    this.#maxPayload = options.maxPayload ?? DEFAULT_MAX_PAYLOAD;
    this.#maxFragments = options.maxFragments ?? DEFAULT_MAX_FRAGMENTS;
    this.#decompressor = options.decompressor;
    if (!(this.#maxPayload >= 0)) throw new RangeError("maxPayload must be 0 or more");
    if (!(this.#maxFragments >= 1)) throw new RangeError("maxFragments must be 1 or more");
  }

  /** Bytes pushed and not parsed yet. */
  get buffered(): number {
    return this.#buffered;
  }

  /** Adds bytes read from the socket. */
  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    if (this.#chunks === NONE) this.#chunks = [chunk];
    else this.#chunks.push(chunk);
    this.#buffered += chunk.length;
  }

  /**
   * Parses the next whole message or control frame, or returns `undefined`
   * when more bytes are needed. Continuation frames are absorbed until their
   * message is complete.
   *
   * @throws {WebSocketError} A protocol violation or a limit; after one, the
   *   receiver stays failed.
   */
  next(): ReceivedFrame | undefined {
    if (this.#failed) return undefined;
    try {
      return this.#next();
    } catch (err) {
      this.#failed = true;
      this.#chunks = NONE;
      this.#buffered = 0;
      this.#fragments = NONE;
      this.#textParts = NO_TEXT;
      throw err;
    }
  }

  #next(): ReceivedFrame | undefined {
    for (;;) {
      if (this.#pending === null && !this.#parseHeader()) return undefined;
      const header = this.#pending!;
      if (this.#buffered < header.length) return undefined;
      this.#pending = null;
      const payload = this.#consume(header.length);
      if (header.mask !== undefined && payload.length > 0) applyMask(payload, header.mask);
      const frame = this.#frame(header.fin, header.rsv1, header.opcode, payload);
      if (frame !== undefined) return frame;
    }
  }

  /** Reads a header if all of it is there; validates as early as possible. */
  #parseHeader(): boolean {
    if (this.#buffered < 2) return false;
    const b0 = this.#byte(0);
    const b1 = this.#byte(1);
    const fin = (b0 & 0x80) !== 0;
    const opcode = b0 & 0x0f;
    const masked = (b1 & 0x80) !== 0;
    let length = b1 & 0x7f;
    const control = opcode >= 0x8;
    const rsv1 = (b0 & 0x40) !== 0;
    if ((b0 & 0x70) !== 0) {
      // RFC 7692 §6: RSV1 is permessage-deflate's, on a data message's
      // first frame only; RSV2 and RSV3 belong to no extension netkit speaks.
      if (this.#decompressor === undefined) {
        throw protocolError(
          "ERR_WS_RSV_BITS",
          "RSV bits set in a frame, but no extension was negotiated",
        );
      }
      if ((b0 & 0x30) !== 0) {
        throw protocolError(
          "ERR_WS_RSV_BITS",
          "RSV2 or RSV3 set in a frame: no extension that uses them was negotiated",
        );
      }
      if (control) {
        throw protocolError("ERR_WS_RSV_BITS", "RSV1 set on a control frame");
      }
      if (opcode === Opcode.Continuation) {
        throw protocolError(
          "ERR_WS_RSV_BITS",
          "RSV1 set on a continuation frame (only a message's first frame may carry it)",
        );
      }
    }
    if (control) {
      if (opcode > Opcode.Pong) {
        throw protocolError("ERR_WS_BAD_OPCODE", `unknown opcode 0x${opcode.toString(16)}`);
      }
      if (!fin) throw protocolError("ERR_WS_BAD_CONTROL_FRAME", "a fragmented control frame");
      if (length > 125) {
        throw protocolError(
          "ERR_WS_BAD_CONTROL_FRAME",
          "a control frame with a payload over 125 bytes",
        );
      }
    } else if (opcode > Opcode.Binary) {
      throw protocolError("ERR_WS_BAD_OPCODE", `unknown opcode 0x${opcode.toString(16)}`);
    } else if (opcode === Opcode.Continuation) {
      if (this.#fragOpcode < 0) {
        throw protocolError(
          "ERR_WS_BAD_CONTINUATION",
          "a continuation frame with no fragmented message to continue",
        );
      }
    } else if (this.#fragOpcode >= 0) {
      throw protocolError(
        "ERR_WS_BAD_CONTINUATION",
        "a new message started before the fragmented one before it was finished",
      );
    }
    if (masked !== this.#server) {
      throw this.#server
        ? protocolError("ERR_WS_UNMASKED_FRAME", "a client frame that is not masked")
        : protocolError("ERR_WS_MASKED_FRAME", "a server frame that is masked");
    }
    const lenBytes = length === 126 ? 2 : length === 127 ? 8 : 0;
    const headerLen = 2 + lenBytes + (masked ? 4 : 0);
    if (this.#buffered < 2 + lenBytes) return false;
    if (lenBytes === 2) {
      length = (this.#byte(2) << 8) | this.#byte(3);
    } else if (lenBytes === 8) {
      const top = this.#byte(2);
      if (top & 0x80) {
        throw protocolError("ERR_WS_BAD_LENGTH", "a 64-bit frame length with its top bit set");
      }
      let hi = 0;
      for (let i = 2; i < 6; i++) hi = hi * 256 + this.#byte(i);
      let lo = 0;
      for (let i = 6; i < 10; i++) lo = lo * 256 + this.#byte(i);
      length = hi * 0x100000000 + lo;
    }
    if (!control) {
      const total = this.#fragBytes + length;
      if (total > this.#maxPayload) {
        throw new WebSocketError(
          "ERR_WS_MESSAGE_TOO_BIG",
          `a message over maxPayload (${this.#maxPayload} bytes)`,
          CloseCode.MessageTooBig,
        );
      }
      if (this.#fragOpcode >= 0 && this.#fragCount + 1 > this.#maxFragments) {
        throw new WebSocketError(
          "ERR_WS_TOO_MANY_FRAGMENTS",
          `a message in more than maxFragments (${this.#maxFragments}) frames`,
          CloseCode.MessageTooBig,
        );
      }
    }
    if (this.#buffered < headerLen) return false;
    const header = this.#consume(headerLen);
    // The mask only unmasks this frame's payload, right away: a view will do.
    const mask = masked ? header.subarray(headerLen - 4) : undefined;
    this.#pending = { fin, rsv1, opcode, mask, length };
    return true;
  }

  /** Turns one validated frame into an event, or absorbs a fragment. */
  #frame(
    fin: boolean,
    rsv1: boolean,
    opcode: number,
    payload: Uint8Array,
  ): ReceivedFrame | undefined {
    switch (opcode) {
      case Opcode.Ping:
      case Opcode.Pong:
        return { type: opcode === Opcode.Ping ? "ping" : "pong", data: payload };
      case Opcode.Close:
        return this.#close(payload);
    }
    if (opcode !== Opcode.Continuation) {
      if (fin) {
        // The common case: a whole message in one frame.
        const data = rsv1 ? this.#decompressor!.decompress(payload, this.#maxPayload) : payload;
        if (opcode === Opcode.Binary) return { type: "message", binary: true, data };
        const text = decodeUtf8(data);
        if (text === undefined) throw invalidUtf8("a text message");
        return { type: "message", binary: false, data, text };
      }
      this.#fragOpcode = opcode;
      this.#fragCount = 0;
      this.#fragCompressed = rsv1;
    }
    this.#fragCount++;
    if (payload.length > 0) {
      if (this.#fragments === NONE) this.#fragments = [];
      this.#fragments.push(payload);
      this.#fragBytes += payload.length;
    }
    if (this.#fragOpcode === Opcode.Text && !this.#fragCompressed) {
      // Validate as the fragments come: bad UTF-8 fails fast.
      try {
        this.#decoder ??= new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
        const part = this.#decoder.decode(payload, { stream: !fin });
        if (part !== "") {
          if (this.#textParts === NO_TEXT) this.#textParts = [];
          this.#textParts.push(part);
        }
      } catch {
        throw invalidUtf8("a text message");
      }
    }
    if (!fin) return undefined;
    const binary = this.#fragOpcode === Opcode.Binary;
    let data: Uint8Array;
    let text: string | undefined;
    if (this.#fragCompressed) {
      // Inflated once, all fragments together: the limit counts inflated
      // bytes, and text is checked as UTF-8 only once it is text.
      data = this.#decompressor!.decompress(this.#fragments, this.#maxPayload);
      if (!binary) {
        text = decodeUtf8(data);
        if (text === undefined) throw invalidUtf8("a text message");
      }
    } else {
      data = join(this.#fragments, this.#fragBytes);
      text = binary ? undefined : this.#textParts.join("");
    }
    this.#fragOpcode = -1;
    this.#fragments = NONE;
    this.#fragBytes = 0;
    this.#fragCount = 0;
    this.#textParts = NO_TEXT;
    this.#fragCompressed = false;
    return binary ? { type: "message", binary, data } : { type: "message", binary, data, text };
  }

  #close(payload: Uint8Array): ReceivedFrame {
    if (payload.length === 0) return { type: "close", code: CloseCode.NoStatus, reason: "" };
    if (payload.length === 1) {
      throw protocolError("ERR_WS_BAD_CLOSE_FRAME", "a close frame with a 1-byte payload");
    }
    const code = (payload[0] << 8) | payload[1];
    if (!isValidCloseCode(code)) {
      throw protocolError("ERR_WS_INVALID_CLOSE_CODE", `invalid close code ${code}`);
    }
    const reason = decodeUtf8(payload.subarray(2));
    if (reason === undefined) throw invalidUtf8("a close reason");
    return { type: "close", code, reason };
  }

  /** The byte at `index` of the buffered bytes. */
  #byte(index: number): number {
    for (const chunk of this.#chunks) {
      if (index < chunk.length) return chunk[index];
      index -= chunk.length;
    }
    return 0;
  }

  /** Removes and returns the next `n` buffered bytes (a view when they sit in one chunk). */
  #consume(n: number): Uint8Array {
    if (n === 0) return EMPTY;
    this.#buffered -= n;
    const first = this.#chunks[0];
    if (n === first.length) {
      if (this.#buffered === 0) this.#chunks = NONE;
      else this.#chunks.shift();
      return first;
    }
    if (n < first.length) {
      this.#chunks[0] = first.subarray(n);
      // A small record out of a big read is copied, so that keeping it does
      // not keep the whole read buffer alive.
      return n < 4096 && n < first.buffer.byteLength / 4 ? first.slice(0, n) : first.subarray(0, n);
    }
    const out = new Uint8Array(n);
    let off = 0;
    while (off < n) {
      const chunk = this.#chunks[0];
      const take = Math.min(chunk.length, n - off);
      out.set(take === chunk.length ? chunk : chunk.subarray(0, take), off);
      off += take;
      if (take === chunk.length) this.#chunks.shift();
      else this.#chunks[0] = chunk.subarray(take);
    }
    if (this.#buffered === 0) this.#chunks = NONE;
    return out;
  }
}

function invalidUtf8(what: string): WebSocketError {
  return new WebSocketError(
    "ERR_WS_INVALID_UTF8",
    `${what} that is not valid UTF-8`,
    CloseCode.InvalidPayload,
  );
}

function join(parts: Uint8Array[], total: number): Uint8Array {
  if (parts.length === 1) return parts[0];
  const out = new Uint8Array(total);
  let off = 0;
  for (const part of parts) {
    out.set(part, off);
    off += part.length;
  }
  return out;
}
