/**
 * Protocol constants and the defaults of every WebSocket limit.
 *
 * @module
 */

/** The GUID RFC 6455 appends to `Sec-WebSocket-Key` to make `Sec-WebSocket-Accept`. */
export const WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/**
 * Frame opcodes (RFC 6455 §5.2).
 *
 * @example
 * ```ts
 * import { Opcode } from "@netkit/netkit/websocket/codec";
 * import assert from "node:assert/strict";
 *
 * assert.equal(Opcode.Text, 1);
 * assert.equal(Opcode.Close, 8);
 * ```
 */
export const Opcode = {
  /** A continuation frame of a fragmented message. */
  Continuation: 0x0,
  /** A text message (UTF-8). */
  Text: 0x1,
  /** A binary message. */
  Binary: 0x2,
  /** The close frame. */
  Close: 0x8,
  /** A ping; the peer answers with a pong. */
  Ping: 0x9,
  /** A pong. */
  Pong: 0xa,
} as const;

/**
 * Close codes (RFC 6455 §7.4.1) netkit sends or reports.
 *
 * @example
 * ```ts
 * import { CloseCode } from "@netkit/netkit/websocket/codec";
 * import assert from "node:assert/strict";
 *
 * assert.equal(CloseCode.MessageTooBig, 1009);
 * ```
 */
export const CloseCode = {
  /** The purpose of the connection was fulfilled. */
  Normal: 1000,
  /** The server is shutting down (or the browser navigates away). */
  GoingAway: 1001,
  /** The peer broke the protocol: unmasked frame, RSV bits, bad opcode, … */
  ProtocolError: 1002,
  /** A kind of data the endpoint cannot accept. */
  UnsupportedData: 1003,
  /** Reported (never sent) when a close frame carried no code. */
  NoStatus: 1005,
  /** Reported (never sent) when the connection ended without a close frame. */
  Abnormal: 1006,
  /** A text message (or close reason) that is not valid UTF-8. */
  InvalidPayload: 1007,
  /** A policy was violated; netkit uses it for slow consumers (`policy: "close"`). */
  PolicyViolation: 1008,
  /** A message over `maxPayload` (or over `maxFragments` frames). */
  MessageTooBig: 1009,
  /** The client wanted an extension the server did not agree to. */
  MandatoryExtension: 1010,
  /** The server hit an unexpected condition (a message handler threw). */
  InternalError: 1011,
  /** The service is restarting. */
  ServiceRestart: 1012,
  /** Try again later: the server is overloaded. */
  TryAgainLater: 1013,
} as const;

/** Default `maxPayload`: the largest message accepted, 1 MiB. */
export const DEFAULT_MAX_PAYLOAD = 1024 * 1024;
/**
 * Default `maxFragments`: the most frames one message may be split into.
 * Fragments are validated and buffered as they come, so memory is bounded by
 * `maxPayload` anyway; the cap stops a peer from making the server do work
 * per tiny fragment forever.
 */
export const DEFAULT_MAX_FRAGMENTS = 1024;
/** Default `maxBuffered`: the unsent backlog a connection may build up, 1 MiB. */
export const DEFAULT_MAX_BUFFERED = 1024 * 1024;
/** Default `highWaterMark`: `send()` waits while the unsent backlog is above it, 64 KiB. */
export const DEFAULT_HIGH_WATER_MARK = 64 * 1024;
/** Default `handshakeTimeout` in milliseconds (TLS handshake and HTTP upgrade together). */
export const DEFAULT_HANDSHAKE_TIMEOUT = 10_000;
/** Default `closeTimeout` in milliseconds: how long to wait for the peer's close frame. */
export const DEFAULT_CLOSE_TIMEOUT = 5_000;
/** Default `maxHeadSize`: the largest HTTP upgrade head (request line and headers), 16 KiB. */
export const DEFAULT_MAX_HEAD_SIZE = 16 * 1024;
/**
 * Default `compressionThreshold`: with permessage-deflate negotiated, messages
 * shorter than this many bytes go out uncompressed (1 KiB, as `ws`): below it
 * deflate saves a few bytes at the price of a compressor call.
 */
export const DEFAULT_COMPRESSION_THRESHOLD = 1024;
/** Queued frames smaller than this are coalesced into one socket write. */
export const COALESCE_LIMIT = 64 * 1024;
