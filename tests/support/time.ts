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

/** Bounds a promise: a test never waits on the network forever. */
export function within<T>(ms: number, promise: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}
