import type { ConnHandler, Server } from "../conn.ts";
import { type ServerEvent, type ServerOptions, StreamServer } from "../internal/stream_server.ts";
import { openAcceptor, type TlsListenOptions } from "./acceptor.ts";
export type { TlsListenOptions };
import type { TlsConn } from "./_tls_conn.ts";

export type { ServerEvent, ServerOptions };

/** Options for {@linkcode serve}: where to listen, the certificate, the handshake rules and the server's limits. */
export type ServeOptions = TlsListenOptions & ServerOptions;

/** A running TLS server. */
export interface TlsServer extends Server {
  /** How many connections are open now, handshakes in progress included. */
  readonly connections: number;
}

/**
 * Serves TLS: each connection gets its own session, which first runs the
 * TLS handshake (bounded by `handshakeTimeout`, so a slow or silent peer
 * never holds up the others) and then `handler` with a {@linkcode TlsConn} —
 * the same `Conn` as TCP, so the TCP echo handler serves TLS unchanged.
 *
 * A failed handshake (a plaintext client, garbage bytes, a client that does
 * not trust the certificate, a handshake timeout) costs that connection
 * only: it is reported to `onEvent` as an `error` event carrying a
 * {@linkcode TlsError}, and the server keeps serving. `maxConnections`,
 * `idleTimeout`, `gracePeriod`, `signal` and `onEvent` work as for TCP.
 *
 * Two engines (`engine`): by default the handshake and encryption run in
 * Deno's built-in `node:tls` over a plain `Deno.listen` socket, so that
 * `handshakeTimeout` really closes a slow peer's socket and client
 * certificates (`clientCaCerts`) work; `engine: "deno"` uses
 * `Deno.listenTls` for about half the CPU per byte, but Deno cannot abort
 * a handshake in progress (see {@linkcode TlsListenOptions.engine}).
 *
 * @throws {TlsError} `ERR_TLS_BAD_CREDENTIALS`: no certificate or key, a
 *   file that cannot be read, or PEM that Deno cannot use.
 * @throws {NetworkError} The address is in use or not available.
 *
 * @example A TLS echo server on a free port, with development certificates
 * ```ts
 * import { serve } from "@netkit/netkit/tls";
 * import { echo } from "@netkit/netkit";
 * import { createDevCerts } from "@netkit/netkit/certs";
 * import assert from "node:assert/strict";
 *
 * const { cert, key } = await createDevCerts();
 * await using server = serve({ port: 0, cert, key, handshakeTimeout: 5000 }, echo);
 * assert.equal(server.addr.hostname, "127.0.0.1");
 * assert.notEqual(server.addr.port, 0); // the port the system picked
 * ```
 */
export function serve(options: ServeOptions, handler: ConnHandler<TlsConn>): TlsServer {
  const { listener, handshake } = openAcceptor(options);
  return new StreamServer<TlsConn>(
    listener,
    (socket) => handshake(socket).done,
    handler,
    options,
  );
}
