import type { Conn } from "./conn.ts";
import { SocketConn } from "./internal/socket_conn.ts";

/**
 * The echo handler: every byte the peer sends goes back, in order; when the
 * peer half-closes, the echo finishes and this side closes too. It serves
 * every transport unchanged — TCP, TLS, Unix sockets and WebSocket — and on
 * netkit sockets runs as a plain read/write loop.
 *
 * @example
 * ```ts
 * import { echo } from "@netkit/netkit";
 * import { connect, serve } from "@netkit/netkit/tcp";
 * import { readLine, writeAll } from "@netkit/netkit/io";
 * import assert from "node:assert/strict";
 *
 * await using server = serve({ port: 0 }, echo);
 * await using conn = await connect({ port: server.addr.port });
 * await writeAll(conn.writable, "hello\n");
 * assert.equal(await readLine(conn.readable), "hello");
 * ```
 */
export function echo(conn: Conn): Promise<void> {
  // A netkit socket echoes with a plain read/write loop on the socket, and
  // makes no streams: an idle echo connection then holds what a hand-written
  // loop would (see bench/README.md, "Connections and memory").
  if (conn instanceof SocketConn) {
    const direct = conn.echoDirect();
    if (direct !== undefined) return direct;
  }
  return conn.readable.pipeTo(conn.writable);
}
