/**
 * Byte helpers the tests share: joining, comparing, and deterministic
 * pseudo-random payloads.
 *
 * @module
 */

/**
 * Joins byte arrays into one new array.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { concat } from "./bytes.ts";
 *
 * assert.deepEqual(
 *   concat([new Uint8Array([1, 2]), new Uint8Array(0), new Uint8Array([3])]),
 *   new Uint8Array([1, 2, 3]),
 * );
 * ```
 */
export function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/**
 * Byte-for-byte equality (without `assert`'s diff of large arrays).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { equalBytes } from "./bytes.ts";
 *
 * assert.equal(equalBytes(new Uint8Array([1, 2]), new Uint8Array([1, 2])), true);
 * assert.equal(equalBytes(new Uint8Array([1, 2]), new Uint8Array([1])), false);
 * ```
 */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * `n` deterministic pseudo-random bytes (xorshift32 from `seed`): the same
 * seed gives the same bytes, so a test can check an echo without keeping a
 * second copy.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { pseudoRandomBytes } from "./bytes.ts";
 *
 * assert.deepEqual(pseudoRandomBytes(16, 7), pseudoRandomBytes(16, 7));
 * assert.notDeepEqual(pseudoRandomBytes(16, 7), pseudoRandomBytes(16, 8));
 * ```
 */
export function pseudoRandomBytes(n: number, seed = 1): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}
