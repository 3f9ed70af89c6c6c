/**
 * The frame encoder: a whole frame (header and payload) in one buffer, so a
 * frame is encoded once and the same bytes can be written to any number of
 * connections. Server frames are unmasked; client frames are masked with
 * fresh random keys (drawn from `crypto.getRandomValues` in batches).
 *
 * @module
 */
import { Opcode } from "./constants.ts";

const encoder = new TextEncoder();
const EMPTY = new Uint8Array(0);

/** Options for {@linkcode encodeFrame}. */
export interface EncodeFrameOptions {
  /** Mask the payload, as a client must. @default {false} */
  mask?: boolean;
  /** The last frame of its message. @default {true} */
  fin?: boolean;
  /**
   * Sets RSV1: the first frame of a message compressed with a negotiated
   * permessage-deflate (RFC 7692). @default {false}
   */
  rsv1?: boolean;
}

// Mask keys come from a pool filled 4 KiB at a time: one system call per
// 1024 frames.
const maskPool = new Uint8Array(4096);
let maskOffset = maskPool.length;

function nextMask(): number {
  if (maskOffset === maskPool.length) {
    crypto.getRandomValues(maskPool);
    maskOffset = 0;
  }
  const at = maskOffset;
  maskOffset += 4;
  return at;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** The 4 mask bytes starting at `m[off + shift]` as one word in platform order. */
function maskWord(m: Uint8Array, off: number, shift: number): number {
  const b0 = m[off + (shift & 3)];
  const b1 = m[off + ((shift + 1) & 3)];
  const b2 = m[off + ((shift + 2) & 3)];
  const b3 = m[off + ((shift + 3) & 3)];
  return LITTLE_ENDIAN
    ? (b0 | (b1 << 8) | (b2 << 16) | (b3 << 24)) >>> 0
    : ((b0 << 24) | (b1 << 16) | (b2 << 8) | b3) >>> 0;
}

/**
 * XORs `data` in place with the 4-byte key at `mask[maskAt..maskAt+4]`
 * (masking and unmasking are the same operation). Long payloads go a word
 * at a time.
 *
 * @example
 * ```ts
 * import { applyMask } from "@netkit/netkit/websocket/codec";
 * import assert from "node:assert/strict";
 *
 * const data = new TextEncoder().encode("hello");
 * const key = new Uint8Array([1, 2, 3, 4]);
 * applyMask(data, key);
 * assert.deepEqual(data, new Uint8Array([105, 103, 111, 104, 110])); // masked in place
 * applyMask(data, key);
 * assert.equal(new TextDecoder().decode(data), "hello"); // masking twice restores it
 * ```
 */
export function applyMask(data: Uint8Array, mask: Uint8Array, maskAt = 0): void {
  const n = data.length;
  let i = 0;
  if (n >= 32) {
    const head = (4 - (data.byteOffset & 3)) & 3;
    for (; i < head; i++) data[i] ^= mask[maskAt + (i & 3)];
    const words = (n - i) >>> 2;
    const view = new Uint32Array(data.buffer, data.byteOffset + i, words);
    const w = maskWord(mask, maskAt, i);
    for (let k = 0; k < words; k++) view[k] ^= w;
    i += words * 4;
  }
  for (; i < n; i++) data[i] ^= mask[maskAt + (i & 3)];
}

/**
 * Encodes one frame, header and payload in one buffer.
 *
 * @param opcode The frame's opcode (see {@linkcode Opcode}).
 * @param payload The payload; a string is sent as UTF-8.
 * @returns The frame's bytes, ready to write (and to share between sockets
 *   when unmasked).
 *
 * @example A server's text frame
 * ```ts
 * import { encodeFrame, Opcode } from "@netkit/netkit/websocket/codec";
 * import assert from "node:assert/strict";
 *
 * // FIN + text, length 2 (unmasked), then "hi".
 * assert.deepEqual(encodeFrame(Opcode.Text, "hi"), new Uint8Array([0x81, 2, 104, 105]));
 * ```
 */
export function encodeFrame(
  opcode: number,
  payload: Uint8Array | string,
  options: EncodeFrameOptions = {},
): Uint8Array {
  const { mask = false, fin = true, rsv1 = false } = options;
  if (typeof payload === "string" && !mask && payload.length <= SMALL_TEXT) {
    return encodeSmallText(opcode, payload, fin, rsv1);
  }
  const data = typeof payload === "string" ? encoder.encode(payload) : payload;
  const len = data.length;
  const lenBytes = len < 126 ? 0 : len < 65536 ? 2 : 8;
  const headerLen = 2 + lenBytes + (mask ? 4 : 0);
  // Masked frames start so that the payload is word-aligned for applyMask.
  const pad = mask ? (4 - (headerLen & 3)) & 3 : 0;
  const frame = new Uint8Array(new ArrayBuffer(pad + headerLen + len), pad, headerLen + len);
  frame[0] = (fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | (opcode & 0x0f);
  if (lenBytes === 0) {
    frame[1] = len;
  } else if (lenBytes === 2) {
    frame[1] = 126;
    frame[2] = len >>> 8;
    frame[3] = len & 0xff;
  } else {
    frame[1] = 127;
    const hi = Math.floor(len / 0x100000000);
    const lo = len >>> 0;
    frame[2] = hi >>> 24;
    frame[3] = (hi >>> 16) & 0xff;
    frame[4] = (hi >>> 8) & 0xff;
    frame[5] = hi & 0xff;
    frame[6] = lo >>> 24;
    frame[7] = (lo >>> 16) & 0xff;
    frame[8] = (lo >>> 8) & 0xff;
    frame[9] = lo & 0xff;
  }
  if (mask) {
    frame[1] |= 0x80;
    const at = nextMask();
    const keyAt = 2 + lenBytes;
    frame[keyAt] = maskPool[at];
    frame[keyAt + 1] = maskPool[at + 1];
    frame[keyAt + 2] = maskPool[at + 2];
    frame[keyAt + 3] = maskPool[at + 3];
    if (len > 0) {
      const body = frame.subarray(headerLen);
      body.set(data);
      applyMask(body, frame, keyAt);
    }
  } else if (len > 0) {
    frame.set(data, headerLen);
  }
  return frame;
}

/**
 * The payload of a close frame: the code (big-endian) and the reason (UTF-8).
 * A code of `undefined` gives an empty payload (reported as 1005).
 *
 * @throws {RangeError} The reason is over 123 bytes as UTF-8.
 *
 * @example
 * ```ts
 * import { closePayload } from "@netkit/netkit/websocket/codec";
 * import assert from "node:assert/strict";
 *
 * // 1000 as two big-endian bytes, then "bye" in UTF-8.
 * assert.deepEqual(closePayload(1000, "bye"), new Uint8Array([3, 232, 98, 121, 101]));
 * ```
 */
export function closePayload(code: number | undefined, reason = ""): Uint8Array {
  if (code === undefined) return EMPTY;
  const text = encoder.encode(reason);
  if (text.length > 123) {
    throw new RangeError(`a close reason may be at most 123 bytes as UTF-8, got ${text.length}`);
  }
  const out = new Uint8Array(2 + text.length);
  out[0] = code >>> 8;
  out[1] = code & 0xff;
  out.set(text, 2);
  return out;
}

/** Cuts `reason` so that it fits a close frame (123 bytes of UTF-8), on a character boundary. */
export function fitCloseReason(reason: string): string {
  if (encoder.encode(reason).length <= 123) return reason;
  let out = "";
  let bytes = 0;
  for (const ch of reason) {
    const n = encoder.encode(ch).length;
    if (bytes + n > 120) break;
    out += ch;
    bytes += n;
  }
  return out + "...";
}

/** A whole close frame. */
export function encodeClose(code: number | undefined, reason: string, mask: boolean): Uint8Array {
  return encodeFrame(Opcode.Close, closePayload(code, reason), { mask });
}

// Up to this many UTF-16 units, text is encoded straight into the frame.
const SMALL_TEXT = 16 * 1024;

/**
 * An unmasked text frame encoded with one allocation: the UTF-8 goes
 * straight behind room for the longest header it could need, and the
 * header is written right before it.
 */
function encodeSmallText(opcode: number, text: string, fin: boolean, rsv1: boolean): Uint8Array {
  const most = text.length * 3;
  const room = most < 126 ? 2 : 4; // SMALL_TEXT * 3 < 65536: never an 8-byte length
  const buf = new Uint8Array(room + most);
  const n = encoder.encodeInto(text, buf.subarray(room)).written;
  const header = n < 126 ? 2 : 4;
  const start = room - header;
  buf[start] = (fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | (opcode & 0x0f);
  if (header === 2) {
    buf[start + 1] = n;
  } else {
    buf[start + 1] = 126;
    buf[start + 2] = n >>> 8;
    buf[start + 3] = n & 0xff;
  }
  return buf.subarray(start, room + n);
}
