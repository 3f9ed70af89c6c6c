import { NetkitError } from "../errors.ts";

/**
 * A WebSocket failure. `code` is stable and machine-readable (e.g.
 * `"ERR_WS_UNMASKED_FRAME"`, `"ERR_WS_MESSAGE_TOO_BIG"`, `"ERR_WS_CLOSED"`);
 * `closeCode` is the WebSocket close code that goes with it (1002 for a
 * protocol violation, 1007 for invalid UTF-8, 1009 for a message too big,
 * 1006 when the connection simply ended).
 *
 * | code | closeCode | meaning |
 * | --- | --- | --- |
 * | `ERR_WS_UNMASKED_FRAME` | 1002 | a client frame without a mask |
 * | `ERR_WS_MASKED_FRAME` | 1002 | a server frame with a mask |
 * | `ERR_WS_RSV_BITS` | 1002 | RSV1–3 set without a negotiated extension; RSV1 on a continuation or control frame |
 * | `ERR_WS_BAD_OPCODE` | 1002 | an unknown opcode |
 * | `ERR_WS_BAD_CONTROL_FRAME` | 1002 | a control frame over 125 bytes or fragmented |
 * | `ERR_WS_BAD_CONTINUATION` | 1002 | a continuation with nothing to continue, or a new message inside one |
 * | `ERR_WS_BAD_LENGTH` | 1002 | a 64-bit length with its top bit set |
 * | `ERR_WS_BAD_CLOSE_FRAME` | 1002 | a close frame with a 1-byte payload |
 * | `ERR_WS_INVALID_CLOSE_CODE` | 1002 | a close code that may not be sent |
 * | `ERR_WS_INVALID_UTF8` | 1007 | text (or a close reason) that is not UTF-8 |
 * | `ERR_WS_MESSAGE_TOO_BIG` | 1009 | a message over `maxPayload` |
 * | `ERR_WS_TOO_MANY_FRAGMENTS` | 1009 | a message in more than `maxFragments` frames |
 * | `ERR_WS_INVALID_DEFLATE` | 1007 | a compressed message that is not a valid deflate stream |
 * | `ERR_WS_BAD_EXTENSION_RESPONSE` | 1006 | (client) the server answered an extension or parameter that was not offered |
 * | `ERR_WS_CLOSED` | 1006 | the connection closed before the operation finished |
 * | `ERR_WS_UNSUPPORTED` | 1006 | the engine cannot do it (`ping()` over `Deno.upgradeWebSocket`) |
 *
 * @example
 * ```ts
 * import { WebSocketError } from "@netkit/netkit/websocket";
 * import assert from "node:assert/strict";
 *
 * const err = new WebSocketError("ERR_WS_MESSAGE_TOO_BIG", "message over 1048576 bytes", 1009);
 * assert.equal(err.code, "ERR_WS_MESSAGE_TOO_BIG");
 * assert.equal(err.closeCode, 1009);
 * ```
 */
export class WebSocketError extends NetkitError {
  /** The WebSocket close code that goes with the error. */
  readonly closeCode: number;

  /**
   * Makes the error.
   *
   * @param code A stable identifier, e.g. `"ERR_WS_INVALID_UTF8"`.
   * @param message What went wrong and what to do about it.
   * @param closeCode The close code sent (or reported) for it. @default {1006}
   * @param options The underlying error, if any, as `cause`.
   */
  constructor(code: string, message: string, closeCode = 1006, options?: ErrorOptions) {
    super(code, message, options);
    this.closeCode = closeCode;
  }
}

/**
 * The opening handshake failed. On the client: the server answered with
 * something other than `101 Switching Protocols` (`status` is its HTTP status,
 * `body` the start of its body) or an invalid upgrade, or it took too long.
 * On the server (reported through `onEvent`): the request was not a valid
 * upgrade, and `status` is what the server answered (400, 404, 405, 426, 431,
 * …, or 0 when nothing could be answered).
 *
 * Codes: `ERR_WS_HANDSHAKE_REJECTED` (a non-101 status), `ERR_WS_HANDSHAKE`
 * (an invalid request or response), `ERR_WS_HANDSHAKE_TIMEOUT`.
 *
 * @example
 * ```ts
 * import { connect, HandshakeError, serve } from "@netkit/netkit/websocket";
 * import assert from "node:assert/strict";
 *
 * await using server = serve({ port: 0 }, { upgrade: () => ({ status: 401, body: "token?" }) });
 * await assert.rejects(connect(`ws://127.0.0.1:${server.addr.port}/`), (err) => {
 *   assert.ok(err instanceof HandshakeError);
 *   assert.equal(err.status, 401);
 *   assert.equal(err.body, "token?");
 *   return true;
 * });
 * ```
 */
export class HandshakeError extends WebSocketError {
  /** The HTTP status answered (or received); 0 when there was none. */
  readonly status: number;
  /** The start of the response body, as text (client side); may be empty. */
  readonly body: string;

  /**
   * Makes the error.
   *
   * @param code `ERR_WS_HANDSHAKE_REJECTED`, `ERR_WS_HANDSHAKE` or `ERR_WS_HANDSHAKE_TIMEOUT`.
   * @param message What went wrong.
   * @param status The HTTP status involved, 0 if none.
   * @param body The start of the response body, if any.
   * @param options The underlying error, as `cause`.
   */
  constructor(code: string, message: string, status = 0, body = "", options?: ErrorOptions) {
    super(code, message, 1006, options);
    this.status = status;
    this.body = body;
  }
}
