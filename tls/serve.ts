import type { ConnHandler, Server } from "../conn.ts";
import {
  type RefusalReason,
  type ServerEvent,
  type ServerOptions,
  type ServerStats,
  StreamServer,
} from "../internal/stream_server.ts";
import {
  type Acceptor,
  type CertificateReload,
  openAcceptor,
  type ServedCertificate,
  type TlsListenOptions,
  type TlsReloadable,
} from "./acceptor.ts";
export type { TlsListenOptions };
import type { TlsConn } from "./_tls_conn.ts";
import { TlsError } from "./errors.ts";

export type { RefusalReason, ServerEvent, ServerOptions, ServerStats };

/** Options for {@linkcode serve}: where to listen, the certificate, the handshake rules and the server's limits. */
export type ServeOptions = TlsListenOptions & ServerOptions;

/** A running TLS server; `certificates` and `reloadCertificates()` as {@linkcode TlsReloadable}. */
export interface TlsServer extends Server, TlsReloadable {
  /** How many connections are open now, handshakes in progress included. */
  readonly connections: number;
  /** Counters so far: accepted, open, refused by reason, idle-closed, failed handshakes. */
  stats(): ServerStats;
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
 * Several certificates (`certificates`, node engine): each handshake gets
 * the one whose names cover the name the client asks for (SNI), the first
 * when none does or the client sent no name. `server.reloadCertificates()`
 * reads the files again and swaps the whole set for new handshakes, or —
 * when any file is unusable — keeps the old set in service and rejects
 * naming the file (see {@linkcode TlsReloadable}).
 *
 * @throws {TlsError} `ERR_TLS_BAD_CREDENTIALS`: no certificate or key, a
 *   file that cannot be read, or PEM that Deno cannot use.
 * @throws {TlsError} `ERR_TLS_ENGINE_UNSUPPORTED`: several certificates with
 *   `engine: "deno"`.
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
 *
 * @example Two certificates on one port, chosen by the name the client asks for
 * ```ts
 * import { connect, serve } from "@netkit/netkit/tls";
 * import { echo } from "@netkit/netkit";
 * import { createCA, createServerCert } from "@netkit/netkit/certs";
 * import assert from "node:assert/strict";
 *
 * const ca = await createCA();
 * const site = await createServerCert(ca, { hosts: ["localhost"] });
 * const api = await createServerCert(ca, { hosts: ["api.localhost", "*.api.localhost"] });
 * await using server = serve({ port: 0, certificates: [site, api] }, echo);
 * assert.deepEqual(server.certificates.map((c) => c.names), [
 *   ["localhost"],
 *   ["api.localhost", "*.api.localhost"],
 * ]);
 * // A client that verifies "v1.api.localhost" is served the wildcard certificate.
 * await using conn = await connect({
 *   hostname: "127.0.0.1",
 *   port: server.addr.port,
 *   serverName: "v1.api.localhost",
 *   caCerts: [ca.cert],
 * });
 * ```
 */
export function serve(options: ServeOptions, handler: ConnHandler<TlsConn>): TlsServer {
  if (options.proxyProtocol && options.engine === "deno") {
    // Deno.listenTls reads the first bytes itself: no header can come before TLS.
    throw new TlsError(
      "ERR_TLS_ENGINE_UNSUPPORTED",
      'proxyProtocol needs the "node" TLS engine: Deno.listenTls starts the handshake on the ' +
        'first bytes, so a PROXY header cannot come first; drop engine: "deno"',
    );
  }
  const acceptor = openAcceptor(options);
  return new TlsStreamServer(
    acceptor,
    acceptor.listener,
    (socket) => acceptor.handshake(socket).done,
    handler,
    options,
  );
}

/** The stream server, with its acceptor's certificates and their reload. */
class TlsStreamServer extends StreamServer<TlsConn> implements TlsServer {
  #acceptor: Acceptor;

  constructor(acceptor: Acceptor, ...args: ConstructorParameters<typeof StreamServer<TlsConn>>) {
    super(...args);
    this.#acceptor = acceptor;
  }

  get certificates(): ServedCertificate[] {
    return this.#acceptor.certificates;
  }

  reloadCertificates(): Promise<CertificateReload> {
    return this.#acceptor.reloadCertificates();
  }
}
