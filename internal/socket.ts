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
