import type { Conn } from "./conn.ts";

/**
 * The echo handler: every byte the peer sends goes back, in order; when the
 * peer half-closes, the echo finishes and this side closes too. It serves
 * every transport unchanged — TCP, TLS, Unix sockets and WebSocket — and on
 * netkit sockets runs as a plain read/write loop.
 *
 * @example
 * ```ts
 * import { echo } from "@netkit/netkit";
 * import { serve } from "@netkit/netkit/tcp";
 *
 * await using server = serve({ port: 0 }, echo);
 * ```
 */
export async function echo(conn: Conn): Promise<void> {
  await conn.readable.pipeTo(conn.writable);
}
