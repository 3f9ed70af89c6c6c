/**
 * Chunked input for the io and framing tests: bytes cut into chunks at
 * chosen places, fed back through a `ByteSource` (as a `Deno.Conn` reads) or
 * through a transform stream, so a test can prove chunking changes nothing.
 *
 * @module
 */
import type { ByteSource } from "../../io/mod.ts";

/**
 * Cuts `data` at the given positions (each taken modulo `data.length + 1`),
 * empty chunks included: joined again, the chunks are `data`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { chunk } from "./chunks.ts";
 *
 * const data = new Uint8Array([1, 2, 3, 4]);
 * assert.deepEqual(chunk(data, [3, 1, 6]), [
 *   new Uint8Array([1]),
 *   new Uint8Array([]), // 6 is 1 again, modulo 5
 *   new Uint8Array([2, 3]),
 *   new Uint8Array([4]),
 * ]);
 * ```
 */
export function chunk(data: Uint8Array, cuts: number[]): Uint8Array[] {
  const points = cuts.map((c) => c % (data.length + 1)).sort((a, b) => a - b);
  const out: Uint8Array[] = [];
  let prev = 0;
  for (const p of points) {
    out.push(data.slice(prev, p));
    prev = p;
  }
  out.push(data.slice(prev));
  return out;
}

/**
 * A `ByteSource` (as `Deno.Conn`) that fills the caller's buffer from a queue
 * of chunks, never more than one chunk a read, then ends (`null`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { byteSource } from "./chunks.ts";
 *
 * const source = byteSource([new Uint8Array([1, 2, 3]), new Uint8Array([4])]);
 * const buf = new Uint8Array(2);
 * assert.equal(await source.read(buf), 2);
 * assert.equal(await source.read(buf), 1);
 * assert.equal(await source.read(buf), 1);
 * assert.equal(await source.read(buf), null);
 * ```
 */
export function byteSource(chunks: Uint8Array[]): ByteSource {
  const queue = chunks.filter((c) => c.length > 0);
  return {
    read(p) {
      const head = queue[0];
      if (head === undefined) return Promise.resolve(null);
      const n = Math.min(p.length, head.length);
      p.set(head.subarray(0, n));
      if (n === head.length) queue.shift();
      else queue[0] = head.subarray(n);
      return Promise.resolve(n);
    },
  };
}

/**
 * Runs `chunks` through `transform`; returns the frames it produced (copied)
 * and the error it failed with, if any.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { collect } from "./chunks.ts";
 *
 * const upper = new TransformStream<Uint8Array, Uint8Array>({
 *   transform: (c, controller) => controller.enqueue(c.map((b) => b - 32)),
 * });
 * const { frames, error } = await collect(upper, [new TextEncoder().encode("ab")]);
 * assert.equal(new TextDecoder().decode(frames[0]), "AB");
 * assert.equal(error, undefined);
 * ```
 */
export async function collect(
  transform: TransformStream<Uint8Array, Uint8Array>,
  chunks: Uint8Array[],
): Promise<{ frames: Uint8Array[]; error?: unknown }> {
  const frames: Uint8Array[] = [];
  try {
    for await (const f of ReadableStream.from(chunks).pipeThrough(transform)) {
      frames.push(f.slice());
    }
    return { frames };
  } catch (error) {
    return { frames, error };
  }
}
