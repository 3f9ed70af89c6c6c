/**
 * Realistic WebSocket payloads for the compression tests: JSON-like text with
 * repeated keys and varying numbers, compressible but not trivially.
 *
 * @module
 */

/**
 * A JSON-like "trades" message of `items` entries (about 50 bytes each:
 * some 740 bytes for the default 14), different for every `i` and the same
 * for the same `i`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { jsonMessage } from "./messages.ts";
 *
 * assert.equal(jsonMessage(7), jsonMessage(7));
 * assert.notEqual(jsonMessage(7), jsonMessage(8));
 * assert.equal(JSON.parse(jsonMessage(7, 3)).items.length, 3);
 * assert.ok(jsonMessage(1).length > 700);
 * ```
 */
export function jsonMessage(i: number, items = 14): string {
  const list = Array.from({ length: items }, (_, k) => ({
    id: (i * 7919 + k * 104729) % 1_000_003,
    sym: ["AAPL", "MSFT", "GOOG", "AMZN"][(i + k) % 4],
    px: ((i * 31 + k * 17) % 100_000) / 100,
    side: (i + k) % 3 === 0 ? "buy" : "sell",
  }));
  return JSON.stringify({ type: "trades", seq: i, items: list });
}
