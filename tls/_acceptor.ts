// What serve() and listen() share: a listener, and the handshake each
// accepted socket goes through (Deno.listenTls, or node:tls when client
// certificates are required), with its deadline. Internal.
import { formatAddr } from "../conn.ts";
import { listenError } from "../tcp/errors.ts";
import { listenSocket } from "../tcp/listen.ts";
import { type CertificateOptions, credentialsError, loadCredentials } from "./_credentials.ts";
import { handshakeWithin } from "./_handshake.ts";
import { nodeServerHandshake } from "./_node_tls.ts";
import { TlsSocketConn } from "./_tls_conn.ts";
import { handshakeTimedOut, serverHandshakeError, TlsError } from "./errors.ts";

/** Where a TLS server listens, with which certificate, and its handshake rules. */
export interface TlsListenOptions extends CertificateOptions {
  /** The address to bind. @default {"127.0.0.1"} */
  hostname?: string;
  /** The port; 0 picks a free one. @default {0} */
  port?: number;
  /** Lets several processes bind the same port (Linux). @default {false} */
  reusePort?: boolean;
  /** ALPN protocols to accept, most preferred first; see `conn.alpnProtocol`. */
  alpnProtocols?: string[];
  /**
   * Milliseconds a connection gets to finish its TLS handshake, counted from
   * accept; one that has not finished by then is closed, however slowly it
   * trickles bytes (a slowloris peer). 0 = no limit. @default {10000}
   */
  handshakeTimeout?: number;
  /**
   * Requires every client to present a certificate signed by one of these
   * CAs (PEM): mutual TLS. The handler sees it as `conn.peerCertificate`.
   *
   * `Deno.listenTls` cannot ask clients for certificates, so with this
   * option the server runs its handshakes through Deno's `node:tls` instead
   * (measured: handshakes and bulk transfer are slower than `Deno.listenTls`;
   * see the tls module's notes).
   */
  clientCaCerts?: string[];
  /** Which TLS implementation runs the server's handshakes. */
  engine?: "deno" | "node";
}

/** The default of {@linkcode TlsListenOptions.handshakeTimeout}: 10 s. */
export const DEFAULT_HANDSHAKE_TIMEOUT = 10_000;

/** A handshake in progress on an accepted socket. */
export interface Accepting {
  /** Reads and writes so far (for a server's idle bookkeeping). */
  readonly activity: number;
  /** Closes the socket, ending the handshake. */
  destroy(): void;
  /** The handshaken connection, or a {@linkcode TlsError}. */
  readonly done: Promise<TlsSocketConn>;
}

/** A listener and the handshake for its sockets. */
export interface Acceptor {
  listener: Deno.Listener;
  handshake(socket: Deno.Conn): Accepting;
}

/** Opens the listener described by `options`. */
export function openAcceptor(options: TlsListenOptions): Acceptor {
  const credentials = loadCredentials(options, true)!;
  const hostname = options.hostname ?? "127.0.0.1";
  const port = options.port ?? 0;
  const timeout = options.handshakeTimeout ?? DEFAULT_HANDSHAKE_TIMEOUT;
  if (!(timeout >= 0)) throw new RangeError(`handshakeTimeout must be 0 or more, got ${timeout}`);
  if (options.clientCaCerts !== undefined || options.engine === "node") {
    if (options.clientCaCerts?.length === 0) {
      throw new TlsError(
        "ERR_TLS_BAD_CREDENTIALS",
        "clientCaCerts is empty: list the CA certificates (PEM) whose clients to accept",
      );
    }
    const listener = listenSocket({ hostname, port, reusePort: options.reusePort });
    const nodeOptions = {
      ...credentials,
      alpnProtocols: options.alpnProtocols,
      clientCaCerts: options.clientCaCerts,
    };
    return {
      listener,
      handshake: (socket) =>
        nodeServerHandshake(
          socket,
          nodeOptions,
          timeout,
          formatAddr(socket.remoteAddr as Deno.NetAddr),
        ),
    };
  }
  let listener: Deno.TlsListener;
  try {
    listener = Deno.listenTls({
      hostname,
      port,
      reusePort: options.reusePort,
      alpnProtocols: options.alpnProtocols,
      ...credentials,
    });
  } catch (err) {
    const translated = credentialsError(err);
    if (translated !== err) throw translated;
    throw listenError(err, { hostname, port });
  }
  return { listener, handshake: (socket) => denoServerHandshake(socket as Deno.TlsConn, timeout) };
}

function denoServerHandshake(socket: Deno.TlsConn, timeout: number): Accepting {
  const peer = formatAddr(socket.remoteAddr);
  let destroyed = false;
  const destroy = () => {
    if (destroyed) return;
    destroyed = true;
    try {
      socket.close();
    } catch {
      // Already closed.
    }
  };
  const done = handshakeWithin(
    socket,
    timeout,
    () => handshakeTimedOut(peer, timeout, "server"),
    (err) => serverHandshakeError(err),
  ).then((info) =>
    new TlsSocketConn(socket, { alpnProtocol: info.alpnProtocol, peerCertificate: null })
  );
  done.catch(() => {});
  return { activity: 0, destroy, done };
}
