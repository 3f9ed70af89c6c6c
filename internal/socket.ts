/**
 * Small socket helpers every layer needs, written once.
 *
 * @module
 */

/** Writes all of `bytes`: Deno's `write` may take only part of them. */
export async function writeFull(socket: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let off = await socket.write(bytes);
  while (off < bytes.length) off += await socket.write(bytes.subarray(off));
}

/** Closes a socket or listener that may already be closed. */
export function closeQuietly(closable: { close(): void }): void {
  try {
    closable.close();
  } catch {
    // Already closed.
  }
}

/** Yields `accept()`'s connections until the listener is closed (BadResource ends it). */
export async function* acceptAll<C>(accept: () => Promise<C>): AsyncGenerator<C, void, void> {
  for (;;) {
    try {
      yield await accept();
    } catch (err) {
      if (err instanceof Deno.errors.BadResource) return;
      throw err;
    }
  }
}
