import type { Conn, ConnHandler, Server } from "../conn.ts";
import { SocketConn } from "../internal/socket_conn.ts";
import {
  type RefusalReason,
  type ServerEvent,
  type ServerOptions,
  type ServerStats,
  StreamServer,
} from "../internal/stream_server.ts";
import { type ListenOptions, listenSocket } from "./listen.ts";

export type { RefusalReason, ServerEvent, ServerOptions, ServerStats };

/** Options for {@linkcode serve}: where to listen, and the server's limits. */
export type ServeOptions = ListenOptions & ServerOptions & {
  /**
   * Disables Nagle's algorithm on accepted TCP connections, so a reply
   * that ends in a small segment is not held back waiting for an ACK.
   * @default {true}
   */
  noDelay?: boolean;
};

/** A running TCP (or Unix socket) server. */
export interface TcpServer extends Server {
  /** How many connections are open now. */
  readonly connections: number;
  /** Counters so far: accepted, open, refused by reason, idle-closed, failed setups. */
  stats(): ServerStats;
}

/**
 * Serves TCP (or a Unix socket): each connection gets its own session
 * running `handler`, many at once. A handler that throws or rejects closes
 * its own connection only; when a handler returns, its connection is closed
 * gracefully.
 *
 * The server stops accepting when `signal` aborts or `close()` is called,
 * lets open sessions finish for `gracePeriod`, closes the rest, then
 * resolves `finished`.
 *
 * @throws {NetworkError} The address is in use or not available.
 *
 * @example An echo server on a free port
 * ```ts
 * import { serve } from "@netkit/netkit/tcp";
 * import assert from "node:assert/strict";
 *
 * await using server = serve({ port: 0 }, (conn) => conn.readable.pipeTo(conn.writable));
 * assert.equal(server.addr.hostname, "127.0.0.1");
 * assert.notEqual(server.addr.port, 0); // the port the system picked
 * ```
 */
export function serve(options: ServeOptions, handler: ConnHandler<Conn>): TcpServer {
  const listener = listenSocket(options);
  const noDelay = options.noDelay !== false && options.path === undefined;
  const wrap = (socket: Deno.Conn) => {
    if (noDelay) (socket as Deno.TcpConn).setNoDelay(true);
    return new SocketConn(socket);
  };
  return new StreamServer(listener, wrap, handler, options);
}
