/**
 * TCP (and Unix socket) servers and clients that speak netkit's
 * {@linkcode Conn}.
 *
 * @example An echo server and a client
 * ```ts
 * import { connect, serve } from "@netkit/netkit/tcp";
 * import { readUntil, writeAll } from "@netkit/netkit/io";
 * import assert from "node:assert/strict";
 *
 * await using server = serve({ port: 0 }, (conn) => conn.readable.pipeTo(conn.writable));
 * await using conn = await connect({ port: server.addr.port });
 * await writeAll(conn.writable, "ping\n");
 * assert.equal(new TextDecoder().decode((await readUntil(conn.readable, "\n"))!), "ping\n");
 * ```
 *
 * @module
 */
import type { Conn } from "../conn.ts";

export type { Conn };
export { connect, type ConnectOptions } from "./connect.ts";
export { listen, Listener, type ListenOptions } from "./listen.ts";
export {
  type RefusalReason,
  serve,
  type ServeOptions,
  type ServerEvent,
  type ServerOptions,
  type ServerStats,
  type TcpServer,
} from "./serve.ts";
export { NetworkError } from "./errors.ts";
