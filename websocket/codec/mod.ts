/**
 * The WebSocket wire format (RFC 6455), for code that frames bytes itself:
 * a streaming frame {@linkcode Receiver} with its limits, frame encoding
 * and masking, the upgrade handshake's pieces (`Sec-WebSocket-Accept`,
 * request validation), validation helpers, the protocol's constants, and
 * permessage-deflate (RFC 7692): the `Sec-WebSocket-Extensions`
 * negotiation on both sides and {@linkcode DeflateContext}, the message
 * compressor. `@netkit/netkit/websocket` builds its servers and clients from these.
 * And netkit's own subprotocol, `netkit.v1` (positions and resume, see
 * docs/netkit-v1.md): its envelopes both ways and the resume URL.
 *
 * @example A frame round trip
 * ```ts
 * import { encodeFrame, Opcode, Receiver } from "@netkit/netkit/websocket/codec";
 * import assert from "node:assert/strict";
 *
 * const receiver = new Receiver({ server: true });
 * receiver.push(encodeFrame(Opcode.Text, "hi", { mask: true }));
 * const frame = receiver.next();
 * assert.equal(frame?.type, "message");
 * assert.equal(frame?.type === "message" ? frame.text : undefined, "hi");
 * ```
 *
 * @module
 */
export {
  CloseCode,
  DEFAULT_CLOSE_TIMEOUT,
  DEFAULT_COMPRESSION_THRESHOLD,
  DEFAULT_HANDSHAKE_TIMEOUT,
  DEFAULT_HIGH_WATER_MARK,
  DEFAULT_MAX_BUFFERED,
  DEFAULT_MAX_FRAGMENTS,
  DEFAULT_MAX_HEAD_SIZE,
  DEFAULT_MAX_PAYLOAD,
  Opcode,
  WEBSOCKET_GUID,
} from "./constants.ts";
export { type ReceivedFrame, Receiver, type ReceiverOptions } from "./receiver.ts";
export { applyMask, closePayload, encodeFrame, type EncodeFrameOptions } from "./sender.ts";
export { isValidCloseCode, isValidKey, isValidUtf8 } from "./validation.ts";
export {
  acceptKey,
  parseRequestHead,
  type UpgradeInfo,
  type UpgradeRequest,
  validateUpgrade,
  type ValidUpgrade,
} from "./handshake.ts";
export { isToken, type RequestHead } from "../../internal/http_head.ts";
export {
  acceptDeflateResponse,
  DeflateContext,
  type DeflateContextOptions,
  deflateContextOptions,
  type DeflateNegotiation,
  type DeflateOptions,
  type DeflateParams,
  type ExtensionOffer,
  type ExtensionParam,
  formatDeflateOffer,
  negotiateDeflate,
  parseExtensions,
} from "./permessage_deflate.ts";
export {
  decodeClientEnvelope,
  decodeServerMessage,
  encodeClientEnvelope,
  encodeServerEnvelope,
  formatResumeUrl,
  NETKIT_V1,
  NETKIT_V1_SINCE,
  type NetkitV1Event,
  type NetkitV1Position,
  parseResumeUrl,
} from "./netkit_v1.ts";
