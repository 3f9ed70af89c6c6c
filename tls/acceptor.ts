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
import { TlsError } from "./errors.ts";
import { handshakeTimedOut, serverHandshakeError } from "./_translate.ts";

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
   * Needs the `"node"` engine: `Deno.listenTls` cannot ask clients for
   * certificates.
   */
  clientCaCerts?: string[];
  /**
   * Which TLS implementation runs the server side. @default {"node"}
   *
   * - `"node"`: a plain `Deno.listen` socket, with the handshake and
   *   encryption done by Deno's built-in `node:tls`. netkit owns the TCP
   *   socket, so `handshakeTimeout` really closes a peer that has not
   *   finished, and client certificates (`clientCaCerts`) work.
   * - `"deno"`: `Deno.listenTls` (rustls), about half the CPU per byte and
   *   per handshake (figures in `bench/README.md`). But Deno cannot abort a handshake in progress: closing the
   *   connection lets Deno's background handshake task run on, keeping the
   *   TCP socket open until the peer finishes or gives up. `handshakeTimeout`
   *   then frees the connection's session (and its `maxConnections` slot)
   *   and reports the timeout, but a slowloris peer keeps its socket open.
   *   No client certificates.
   */
  engine?: "node" | "deno";
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
  const engine = options.engine ?? "node";
  if (engine !== "node" && engine !== "deno") {
    throw new TypeError(`engine must be "node" or "deno", got ${JSON.stringify(engine)}`);
  }
  if (options.clientCaCerts?.length === 0) {
    throw new TlsError(
      "ERR_TLS_BAD_CREDENTIALS",
      "clientCaCerts is empty: list the CA certificates (PEM) whose clients to accept",
    );
  }
  if (engine === "node") {
    // node:tls takes any PEM without a word and fails every handshake later:
    // let Deno's parser check the pair once, up front.
    checkWithDeno(credentials);
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
  if (options.clientCaCerts !== undefined) {
    throw new TlsError(
      "ERR_TLS_BAD_CREDENTIALS",
      'clientCaCerts needs engine "node": Deno.listenTls cannot ask clients for certificates',
    );
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

/** Throws a {@linkcode TlsError} when Deno's TLS cannot use this certificate and key. */
export function checkWithDeno(credentials: { cert: string; key: string }): void {
  try {
    Deno.listenTls({ hostname: "127.0.0.1", port: 0, ...credentials }).close();
  } catch (err) {
    const translated = credentialsError(err);
    if (translated !== err) throw translated;
    // Not a credentials problem (no loopback?): leave it to the handshakes.
  }
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
