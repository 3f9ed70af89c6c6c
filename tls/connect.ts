import { formatAddr } from "../conn.ts";
import { connectError, timedOut } from "../tcp/errors.ts";
import { connectSocket } from "../tcp/connect.ts";
import { TlsError } from "./errors.ts";
import { clientHandshakeError, handshakeTimedOut } from "./_translate.ts";
import { handshakeWithin } from "./_handshake.ts";
import { type TlsConn, TlsSocketConn } from "./_tls_conn.ts";

/** Options for {@linkcode connect}. */
export interface ConnectOptions {
  /** The host name or IP address to connect to. @default {"127.0.0.1"} */
  hostname?: string;
  /** The port. */
  port: number;
  /**
   * The name the server's certificate must cover, also sent as SNI.
   * Defaults to `hostname`. Use it to connect to an address while verifying
   * a name: `{ hostname: "127.0.0.1", serverName: "example.com" }`.
   */
  serverName?: string;
  /**
   * Extra CA certificates (PEM) to trust. They are **added** to Deno's root
   * store, never a replacement for it: Deno offers no way to trust only
   * these. The root store is Mozilla's (webpki-roots) by default, or the
   * system's when Deno runs with `DENO_TLS_CA_STORE=system`.
   */
  caCerts?: string[];
  /**
   * Whether a server that closes without a TLS close_notify is an error
   * (reading fails with `ERR_TLS_TRUNCATED`), for protocols without their own
   * framing. By default the stream just ends, as in Node, Python and curl,
   * and `conn.truncated` says so. @default {false}
   */
  requireCloseNotify?: boolean;

  /** ALPN protocols to offer, most preferred first; see `conn.alpnProtocol`. */
  alpnProtocols?: string[];
  /** A client certificate (PEM), for servers that ask for one. Needs `key`. */
  cert?: string;
  /** The client certificate's private key (PEM). */
  key?: string;
  /**
   * Milliseconds for the whole connect, TCP and TLS handshake together;
   * 0 waits as long as the OS and the server do. @default {0}
   */
  timeout?: number;
  /** Gives up when aborted; the promise rejects with the signal's reason. */
  signal?: AbortSignal;
  /**
   * Connect through this proxy: `http://[user:pass@]host:port` (HTTP
   * CONNECT) or `socks5://[user:pass@]host:port`. TLS runs end to end
   * through the tunnel, so the proxy sees only ciphertext. Not with a client
   * certificate (`Deno.startTls` cannot present one).
   */
  proxy?: string | URL;
}

/**
 * Connects to a TLS server, verifies its certificate and resolves to a
 * {@linkcode TlsConn} — the same `Conn` as TCP, so code written for TCP
 * (`readUntil`/`writeAll`, `relay`, an echo handler) runs unchanged.
 *
 * The handshake is finished before the promise resolves, so every
 * certificate problem surfaces here as a {@linkcode TlsError} whose message
 * names the cause and the fix.
 *
 * Built on `Deno.connect` + `Deno.startTls` (and `Deno.connectTls` when a
 * client certificate is given).
 *
 * @throws {TlsError} `ERR_TLS_CERT_UNTRUSTED`, `ERR_TLS_CERT_NAME_MISMATCH`,
 *   `ERR_TLS_CERT_EXPIRED`, `ERR_TLS_CERT_NOT_YET_VALID`, `ERR_TLS_NOT_TLS`,
 *   `ERR_TLS_HANDSHAKE_TIMEOUT`, `ERR_TLS_HANDSHAKE_FAILED`, …
 * @throws {NetworkError} `ECONNREFUSED`, `ETIMEDOUT`, `ENOTFOUND`, … before
 *   TLS starts.
 *
 * @example A TLS echo round trip with a development CA
 * ```ts
 * import { connect, serve } from "@netkit/netkit/tls";
 * import { echo } from "@netkit/netkit";
 * import { readUntil, writeAll } from "@netkit/netkit/io";
 * import { createDevCerts } from "@netkit/netkit/certs";
 * import assert from "node:assert/strict";
 *
 * const { ca, cert, key } = await createDevCerts();
 * await using server = serve({ port: 0, cert, key }, echo);
 * const port = server.addr.port;
 * await using conn = await connect({ hostname: "localhost", port, caCerts: [ca] });
 * await writeAll(conn.writable, "hello\n");
 * assert.equal(new TextDecoder().decode((await readUntil(conn.readable, "\n"))!), "hello\n");
 * ```
 */
export async function connect(options: ConnectOptions): Promise<TlsConn> {
  const hostname = options.hostname ?? "127.0.0.1";
  const port = options.port;
  const serverName = stripBrackets(options.serverName ?? hostname);
  const timeout = options.timeout ?? 0;
  const started = performance.now();
  const at = formatAddr({ hostname: stripBrackets(hostname), port });
  const context = { at, serverName, caCerts: options.caCerts };
  options.signal?.throwIfAborted();
  if ((options.cert === undefined) !== (options.key === undefined)) {
    throw new TlsError(
      "ERR_TLS_BAD_CREDENTIALS",
      "a client certificate needs both cert and key (PEM)",
    );
  }

  if (options.cert !== undefined && options.proxy !== undefined) {
    throw new TlsError(
      "ERR_TLS_BAD_CREDENTIALS",
      "a client certificate cannot be presented through a proxy (Deno.startTls takes none): " +
        "connect without the proxy",
    );
  }

  let socket: Deno.TlsConn;
  if (options.cert !== undefined) {
    socket = await connectTlsWithCert(options, hostname, serverName, timeout, at);
  } else {
    const tcp = await connectSocket({
      hostname,
      port,
      timeout,
      signal: options.signal,
      proxy: options.proxy,
    });
    try {
      socket = await Deno.startTls(tcp as Deno.TcpConn, {
        hostname: serverName,
        caCerts: options.caCerts,
        alpnProtocols: options.alpnProtocols,
      });
    } catch (err) {
      tcp.close();
      throw clientHandshakeError(err, context);
    }
  }
  const left = timeout > 0 ? Math.max(1, timeout - (performance.now() - started)) : 0;
  const info = await handshakeWithin(
    socket,
    left,
    () => handshakeTimedOut(at, timeout, "client"),
    (err) => clientHandshakeError(err, context),
    options.signal,
  );
  return new TlsSocketConn(socket, {
    alpnProtocol: info.alpnProtocol,
    peerCertificate: null,
    requireCloseNotify: options.requireCloseNotify ?? false,
  });
}

function stripBrackets(host: string): string {
  return host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
}

// Deno.startTls takes no client certificate, so with one the TCP connect is
// Deno.connectTls's own; a separate server name rides on the symbol Deno's
// node:tls uses for it.
async function connectTlsWithCert(
  options: ConnectOptions,
  hostname: string,
  serverName: string,
  timeout: number,
  at: string,
): Promise<Deno.TlsConn> {
  const tlsOptions: Deno.ConnectTlsOptions & Deno.TlsCertifiedKeyPem = {
    hostname,
    port: options.port,
    caCerts: options.caCerts,
    alpnProtocols: options.alpnProtocols,
    cert: options.cert!,
    key: options.key!,
  };
  if (serverName !== stripBrackets(hostname)) {
    (tlsOptions as unknown as Record<symbol, string>)[Symbol.for("unstableServerName")] =
      serverName;
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  let gaveUp: unknown;
  let reject!: (reason: unknown) => void;
  const stop = new Promise<never>((_, r) => (reject = r));
  stop.catch(() => {});
  const giveUp = (reason: unknown) => {
    gaveUp ??= reason;
    reject(gaveUp);
  };
  const onAbort = () => giveUp(options.signal!.reason);
  if (timeout > 0) timer = setTimeout(() => giveUp(timedOut(at, timeout)), timeout);
  options.signal?.addEventListener("abort", onAbort, { once: true });
  const attempt = Deno.connectTls(tlsOptions);
  attempt.then((late) => gaveUp !== undefined && late.close(), () => {});
  try {
    return await Promise.race([attempt, stop]);
  } catch (err) {
    if (gaveUp !== undefined) throw gaveUp;
    if (err instanceof TypeError || /key|certificate/i.test(String(err))) {
      throw new TlsError(
        "ERR_TLS_BAD_CREDENTIALS",
        `the client certificate or key cannot be used: ${err instanceof Error ? err.message : err}`,
        { cause: err },
      );
    }
    throw connectError(err, { hostname, port: options.port }, timeout || undefined);
  } finally {
    clearTimeout(timer);
    options.signal?.removeEventListener("abort", onAbort);
  }
}
