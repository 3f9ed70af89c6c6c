// What serve() and listen() share: a listener, and the handshake each
// accepted socket goes through (Deno.listenTls, or node:tls when client
// certificates are required), with its deadline. Internal.
import { formatAddr } from "../conn.ts";
import { listenError } from "../tcp/errors.ts";
import { listenSocket } from "../tcp/listen.ts";
import {
  type CertificateOptions,
  type CertificateSet,
  certificateSources,
  checkWithDeno,
  credentialsError,
  loadCertificateSet,
  reloadCertificateSet,
  type ServedCertificate,
} from "./_credentials.ts";
import { handshakeWithin } from "./_handshake.ts";
import { NodeTlsServer, secureContext } from "./_node_tls.ts";
import type tls from "node:tls";
import { TlsSocketConn } from "./_tls_conn.ts";
import { TlsError } from "./errors.ts";
import { handshakeTimedOut, serverHandshakeError } from "./_translate.ts";

export { checkWithDeno };
export type { ServedCertificate };

/**
 * What a certificate reload did, as {@linkcode TlsListenOptions.onCertificateReload}
 * sees it: `"reloaded"`, the new set is in service; `"kept"`, one
 * certificate or key could not be used (`error` names the file and why) and
 * the old set is still in service, unchanged.
 */
export type CertificateReloadEvent =
  | { type: "reloaded"; certificates: ServedCertificate[]; changed: number }
  | { type: "kept"; certificates: ServedCertificate[]; error: TlsError };

/** What `reloadCertificates()` resolves to once the new set is in service. */
export interface CertificateReload {
  /** The certificates now in service, in the order given, the default first. */
  certificates: ServedCertificate[];
  /** How many of them differ from before (a new file content: SHA-256 fingerprint or key). */
  changed: number;
}

/** Where a TLS server listens, with which certificate, and its handshake rules. */
export interface TlsListenOptions extends CertificateOptions {
  /**
   * Several certificates, chosen by the name the client asks for (SNI),
   * instead of the single `cert`/`key` (which is a one-element list): an
   * exact name from a certificate's subjectAltName DNS entries, then a
   * wildcard (`*.example.com` covers `a.example.com`), else the first, the
   * default — also for clients that send no name (IP addresses are never
   * sent as SNI). A name in two certificates goes to the one listed first.
   *
   * Needs the `"node"` engine: `Deno.listenTls` takes one certificate (Deno
   * 2 has no public SNI resolver; its internal one caches each name's
   * answer for the listener's lifetime, so a reload could not reach it).
   */
  certificates?: CertificateOptions[];
  /**
   * Called after each `reloadCertificates()` with what it did, so a program
   * can log "reloaded 2 certificates" or why it kept the old ones. A
   * callback that throws is reported with `console.error` and otherwise
   * ignored.
   */
  onCertificateReload?: (event: CertificateReloadEvent) => void;
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
   *   No client certificates, one certificate only (no SNI), no reload.
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

/** A listener, the handshake for its sockets, and its certificates. */
export interface Acceptor {
  listener: Deno.Listener;
  handshake(socket: Deno.Conn): Accepting;
  /** The certificates in service, the default first. */
  readonly certificates: ServedCertificate[];
  /** Reads the certificate files again and swaps all or nothing; see {@linkcode TlsReloadable}. */
  reloadCertificates(): Promise<CertificateReload>;
  /**
   * The node engine's server-side TLS now in service, shared by every
   * handshake until a reload replaces it (tests look at it); `undefined`
   * with the `"deno"` engine.
   */
  readonly nodeServer?: NodeTlsServer;
}

/**
 * What a TLS server offers for its certificates: what it serves, and a
 * reload without a restart.
 */
export interface TlsReloadable {
  /** The certificates in service, in the order given, the default first. */
  readonly certificates: ServedCertificate[];
  /**
   * Reads the certificate and key files again (certificates given as PEM
   * strings stay as they are), checks every one — the certificate parses,
   * the key parses and belongs to it, Deno's TLS accepts the pair — and
   * then swaps them in at once: handshakes that start afterwards use the
   * new set, connections already open (or mid-handshake) are untouched.
   *
   * If any file is missing or unusable nothing is swapped: the old
   * certificates stay in service and it rejects with a `TlsError`
   * (`ERR_TLS_BAD_CREDENTIALS`) whose message and `file` name the file at
   * fault. With `engine: "deno"` it rejects with `ERR_TLS_ENGINE_UNSUPPORTED`:
   * `Deno.listenTls` keeps the certificate it was opened with. Reloads run
   * one at a time, in call order. `onCertificateReload` hears of each.
   */
  reloadCertificates(): Promise<CertificateReload>;
}

/** Opens the listener described by `options`. */
export function openAcceptor(options: TlsListenOptions): Acceptor {
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
  const sources = certificateSources(options);
  if (engine === "deno" && sources.length > 1) {
    throw new TlsError(
      "ERR_TLS_ENGINE_UNSUPPORTED",
      `several certificates (chosen by SNI) need the "node" TLS engine: Deno.listenTls serves ` +
        `one certificate; drop engine: "deno" (or pass one certificate)`,
    );
  }
  const onReload = options.onCertificateReload;
  const report = (event: CertificateReloadEvent) => {
    if (onReload === undefined) return;
    try {
      onReload(event);
    } catch (err) {
      // deno-lint-ignore no-console
      console.error(
        `netkit: the onCertificateReload callback threw: ${
          err instanceof Error ? err.message : err
        }`,
      );
    }
  };
  if (engine === "node") {
    // node:tls takes any PEM without a word and fails every handshake later:
    // every certificate is checked up front (and again on each reload).
    const served = new ServedSet(loadCertificateSet(sources), options);
    const listener = listenSocket({ hostname, port, reusePort: options.reusePort });
    let reloading: Promise<unknown> = Promise.resolve();
    return {
      listener,
      // An arrow: servers take it detached. The server as it is now: a
      // reload during this handshake does not change what this connection
      // is served.
      handshake: (socket) =>
        served.current.server.handshake(
          socket,
          timeout,
          formatAddr(socket.remoteAddr as Deno.NetAddr),
        ),
      get nodeServer() {
        return served.current.server;
      },
      get certificates() {
        return served.current.set.served;
      },
      reloadCertificates() {
        const run = reloading.then(async () => {
          const before = served.current.set;
          let next: CertificateSet;
          let prepared: ServedSet["current"];
          try {
            next = await reloadCertificateSet(sources);
            prepared = served.prepare(next);
          } catch (err) {
            const error = err instanceof TlsError ? err : credentialsError(err);
            if (error instanceof TlsError) {
              report({ type: "kept", certificates: before.served, error });
            }
            throw error;
          }
          served.current = prepared;
          const changed = next.entries.filter((entry, i) =>
            entry.info.fingerprint256 !== before.entries[i]?.info.fingerprint256 ||
            entry.key !== before.entries[i]?.key
          ).length;
          const certificates = next.served;
          report({ type: "reloaded", certificates, changed });
          return { certificates, changed };
        });
        reloading = run.catch(() => {});
        return run;
      },
    };
  }
  if (options.clientCaCerts !== undefined) {
    throw new TlsError(
      "ERR_TLS_BAD_CREDENTIALS",
      'clientCaCerts needs engine "node": Deno.listenTls cannot ask clients for certificates',
    );
  }
  // Read and checked here too, for the names and for errors that name the
  // file; Deno.listenTls checks the pair once more.
  const set = loadCertificateSet(sources);
  const { cert, key } = set.entries[0];
  let listener: Deno.TlsListener;
  try {
    listener = Deno.listenTls({
      hostname,
      port,
      reusePort: options.reusePort,
      alpnProtocols: options.alpnProtocols,
      cert,
      key,
    });
  } catch (err) {
    const translated = credentialsError(err);
    if (translated !== err) throw translated;
    throw listenError(err, { hostname, port });
  }
  return {
    listener,
    handshake: (socket) => denoServerHandshake(socket as Deno.TlsConn, timeout),
    get certificates() {
      return set.served;
    },
    reloadCertificates() {
      const error = new TlsError(
        "ERR_TLS_ENGINE_UNSUPPORTED",
        `reloading certificates needs the "node" TLS engine: Deno.listenTls keeps the ` +
          `certificate it was opened with; restart the server, or drop engine: "deno"`,
      );
      report({ type: "kept", certificates: set.served, error });
      return Promise.reject(error);
    },
  };
}

/**
 * The node engine's certificates in service, with the server-side TLS that
 * every handshake shares (one node:tls context per certificate, made once),
 * replaced whole on reload.
 */
class ServedSet {
  #clientCaCerts: string[] | undefined;
  #alpnProtocols: string[] | undefined;
  current: { set: CertificateSet; server: NodeTlsServer };

  constructor(
    set: CertificateSet,
    options: { clientCaCerts?: string[]; alpnProtocols?: string[] },
  ) {
    this.#clientCaCerts = options.clientCaCerts;
    this.#alpnProtocols = options.alpnProtocols;
    this.current = this.prepare(set);
  }

  /** What serving `set` takes; throws a TlsError when node:tls cannot use it. */
  prepare(set: CertificateSet): { set: CertificateSet; server: NodeTlsServer } {
    const { cert, key } = set.entries[0];
    let sni: ((serverName: string) => tls.SecureContext | undefined) | undefined;
    if (set.entries.length > 1) {
      // The default (index 0) is the server's own context: `undefined`.
      const contexts = set.entries.map((entry, i) =>
        i === 0 ? undefined : secureContext(entry, this.#clientCaCerts)
      );
      sni = (serverName) => contexts[set.indexFor(serverName)];
    }
    return {
      set,
      server: new NodeTlsServer({
        cert,
        key,
        alpnProtocols: this.#alpnProtocols,
        clientCaCerts: this.#clientCaCerts,
        sni,
      }),
    };
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
