/**
 * A slowloris TLS client: a record header announcing a 512-byte handshake
 * message, then one byte every 20 ms, so the peer is never idle and its
 * hello never finished. Only a handshake deadline on the server ends it.
 *
 * @module
 */
import { writeAll } from "../../io/mod.ts";

/** A trickle in progress (see {@linkcode trickleClientHello}). */
export interface Trickle {
  /** Bytes trickled after the header so far. */
  readonly sent: number;
  /** Settles once the trickle stopped: the writable failed, or `max` bytes went out. */
  readonly done: Promise<void>;
}

/**
 * Writes the record header to `conn`, then trickles a byte every `every` ms,
 * at most `max` (the hello then still lacks bytes), until a write fails.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { trickleClientHello } from "./slowloris.ts";
 *
 * const chunks: Uint8Array[] = [];
 * const writable = new WritableStream<Uint8Array>({ write: (c) => void chunks.push(c) });
 * const trickle = await trickleClientHello({ writable }, { every: 1, max: 3 });
 * await trickle.done;
 * assert.equal(trickle.sent, 3);
 * assert.deepEqual(chunks[0], new Uint8Array([0x16, 0x03, 0x01, 0x02, 0x00]));
 * assert.equal(chunks.length, 4);
 * ```
 */
export async function trickleClientHello(
  conn: { writable: WritableStream<Uint8Array> },
  { every = 20, max = 500 }: { every?: number; max?: number } = {},
): Promise<Trickle> {
  // Handshake record, TLS 1.0 framing, 0x0200 = 512 bytes to follow.
  await writeAll(conn.writable, new Uint8Array([0x16, 0x03, 0x01, 0x02, 0x00]));
  let sent = 0;
  const done = (async () => {
    while (sent < max) {
      await new Promise((r) => setTimeout(r, every));
      try {
        await writeAll(conn.writable, new Uint8Array([0x01]));
      } catch {
        return; // Closed by the server.
      }
      sent++;
    }
  })();
  return {
    get sent() {
      return sent;
    },
    done,
  };
}
