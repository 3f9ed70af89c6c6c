/**
 * Checks on what peers send: close codes, UTF-8, subprotocol tokens and
 * handshake keys.
 *
 * @module
 */

/**
 * Whether `code` may appear in a close frame: 1000–1003, 1007–1014 and the
 * ranges for libraries (3000–3999) and applications (4000–4999). 1005, 1006
 * and 1015 are only ever reported, never sent.
 *
 * @example
 * ```ts
 * import { isValidCloseCode } from "@netkit/netkit/websocket/codec";
 * import assert from "node:assert/strict";
 *
 * assert.equal(isValidCloseCode(1000), true);
 * assert.equal(isValidCloseCode(1005), false); // "no status": never sent on the wire
 * assert.equal(isValidCloseCode(4001), true);
 * ```
 */
export function isValidCloseCode(code: number): boolean {
  return Number.isInteger(code) &&
    ((code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) ||
      (code >= 3000 && code <= 4999));
}

const strictDecoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * Whether `bytes` is valid UTF-8 (as RFC 6455 requires of text messages and
 * close reasons).
 *
 * @example
 * ```ts
 * import { isValidUtf8 } from "@netkit/netkit/websocket/codec";
 * import assert from "node:assert/strict";
 *
 * assert.equal(isValidUtf8(new Uint8Array([0x68, 0x69])), true);
 * assert.equal(isValidUtf8(new Uint8Array([0xff])), false);
 * ```
 */
export function isValidUtf8(bytes: Uint8Array): boolean {
  try {
    strictDecoder.decode(bytes);
    return true;
  } catch {
    return false;
  }
}

/**
 * Decodes UTF-8 strictly, keeping a leading byte order mark; `undefined` when
 * the bytes are not valid UTF-8.
 */
export function decodeUtf8(bytes: Uint8Array): string | undefined {
  try {
    return strictDecoder.decode(bytes);
  } catch {
    return undefined;
  }
}

const KEY = /^[A-Za-z0-9+/]{21}[AQgw]==$/;

/**
 * Whether `key` is a valid `Sec-WebSocket-Key`: the base64 of exactly 16
 * bytes.
 *
 * @example
 * ```ts
 * import { isValidKey } from "@netkit/netkit/websocket/codec";
 * import assert from "node:assert/strict";
 *
 * assert.equal(isValidKey("dGhlIHNhbXBsZSBub25jZQ=="), true);
 * assert.equal(isValidKey("abc"), false);
 * ```
 */
export function isValidKey(key: string): boolean {
  return KEY.test(key);
}
