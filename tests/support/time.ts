/**
 * Waiting in tests. (Never for a timing assertion: only to let something
 * happen, or to poll for it with a bound.)
 *
 * @module
 */

/**
 * Resolves after `ms` milliseconds.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { delay } from "./time.ts";
 *
 * assert.equal(await delay(1), undefined);
 * ```
 */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
