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

/**
 * Bounds a promise: a test never waits on the network forever. Rejects
 * naming `what` if `promise` has not settled within `ms` (the timer cleared
 * either way).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { within } from "./time.ts";
 *
 * assert.equal(await within(1000, Promise.resolve(1), "one"), 1);
 * const never = new Promise<never>(() => {});
 * await assert.rejects(within(10, never, "an answer"), /an answer: no answer within 10 ms/);
 * ```
 */
export function within<T>(ms: number, promise: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/**
 * Resolves to whether `promise` settled (resolved or rejected) within `ms`;
 * never rejects, and the timer is cleared either way. For a caller that does
 * something else when the wait runs out (a SIGKILL after a polite signal)
 * rather than fail: otherwise {@linkcode within}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { settlesWithin } from "./time.ts";
 *
 * assert.equal(await settlesWithin(Promise.resolve(), 1000), true);
 * assert.equal(await settlesWithin(Promise.reject(new Error("no")), 1000), true);
 * assert.equal(await settlesWithin(new Promise(() => {}), 10), false);
 * ```
 */
export async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<false>((resolve) => timer = setTimeout(() => resolve(false), ms));
  try {
    return await Promise.race([promise.then(() => true, () => true), late]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Polls `check` every `every` ms until it holds. Not a timing assertion: the
 * deadline (`ms`, 15 s by default) only turns a hang into a failure that
 * says what was awaited.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { until } from "./time.ts";
 *
 * let n = 0;
 * await until(() => ++n === 3, "the third look");
 * assert.equal(n, 3);
 * await assert.rejects(until(() => false, "never", 20), /timed out waiting for never/);
 * ```
 */
export async function until(
  check: () => boolean | Promise<boolean>,
  what: string,
  ms = 15_000,
  every = 5,
): Promise<void> {
  const deadline = performance.now() + ms;
  while (!(await check())) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await delay(every);
  }
}
