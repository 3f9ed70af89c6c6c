import type { Conn } from "../conn.ts";
import { checkWithDeno } from "./acceptor.ts";
import { type CertificateOptions, loadCredentials } from "./_credentials.ts";
import { NodeTlsServer } from "./_node_tls.ts";
import type { TlsConn } from "./_tls_conn.ts";
import { checkUpgradable } from "./_upgrade.ts";

/** Options for {@linkcode acceptTls}: the server's certificate and handshake rules. */
export interface AcceptTlsOptions extends CertificateOptions {
  /** ALPN protocols to accept, most preferred first. */
  alpnProtocols?: string[];
  /**
   * Milliseconds the client gets to finish the handshake, however slowly it
   * trickles bytes; 0 = no limit. @default {10000}
   */
  handshakeTimeout?: number;
  /**
   * Requires the client to present a certificate signed by one of these CAs
   * (PEM); it is then `conn.peerCertificate`.
   */
  clientCaCerts?: string[];
  /** Gives up on the handshake when aborted. */
  signal?: AbortSignal;
}

/**
 * Upgrades a plain TCP connection to TLS as the **server** — the server side
 * of STARTTLS — after a plaintext exchange on the same connection (e.g. an
 * SMTP server's `220 Ready to start TLS`). Resolves to a
 * {@linkcode TlsConn} once the handshake has finished.
 *
 * `Deno.startTls` is client-only, so this runs the handshake through Deno's
 * `node:tls` (a `tls.Server` taking over the socket); the result is the same
 * `Conn` as every other transport.
 *
 * The same refusals as {@linkcode startTls}: plaintext bytes received but
 * not read (`ERR_TLS_PLAINTEXT_BUFFERED` — a client that pipelines a command
 * after `STARTTLS` is either broken or an injection, CVE-2021-23222 class:
 * close it), a locked readable or writable (`ERR_TLS_CONN_BUSY`), or not a
 * plain netkit TCP connection (`ERR_TLS_NOT_UPGRADABLE`).
 *
 * On a connection from `tcp.serve`, the server keeps managing the upgraded
 * connection: its idle timeout, shutdown and end-of-handler close reach it.
 *
 * @throws {TlsError} The refusals above, `ERR_TLS_BAD_CREDENTIALS`, or a
 *   handshake failure (`ERR_TLS_NOT_TLS`, `ERR_TLS_HANDSHAKE_TIMEOUT`,
 *   `ERR_TLS_HANDSHAKE_FAILED`, `ERR_TLS_CLIENT_CERT_REQUIRED`, …).
 *
 * @example The server side of an SMTP-style STARTTLS
 * ```ts
 * import { acceptTls, startTls } from "@netkit/netkit/tls";
 * import { connect, serve } from "@netkit/netkit/tcp";
 * import { readLine, writeAll } from "@netkit/netkit/io";
 * import { createDevCerts } from "@netkit/netkit/certs";
 * import assert from "node:assert/strict";
 *
 * const { ca, cert, key } = await createDevCerts();
 * await using server = serve({ port: 0 }, async (plain) => {
 *   await writeAll(plain.writable, "220 ready\r\n");
 *   if ((await readLine(plain.readable)) !== "STARTTLS") return;
 *   await writeAll(plain.writable, "220 go ahead\r\n");
 *   await using conn = await acceptTls(plain, { cert, key, handshakeTimeout: 5000 });
 *   await writeAll(conn.writable, "250 secure now\r\n");
 * });
 *
 * await using plain = await connect({ port: server.addr.port });
 * await readLine(plain.readable);
 * await writeAll(plain.writable, "STARTTLS\r\n");
 * await readLine(plain.readable);
 * await using conn = await startTls(plain, { serverName: "localhost", caCerts: [ca] });
 * assert.equal(await readLine(conn.readable), "250 secure now");
 * ```
 */
export async function acceptTls(conn: Conn, options: AcceptTlsOptions): Promise<TlsConn> {
  const credentials = loadCredentials(options, true)!;
  const server = serverFor(credentials, options);
  const { plain, peer } = checkUpgradable(conn);
  options.signal?.throwIfAborted();
  const socket = plain.detach();
  const handshake = server.handshake(socket, options.handshakeTimeout ?? 10_000, peer);
  plain.handOver(handshake);
  const onAbort = () => handshake.destroy();
  options.signal?.addEventListener("abort", onAbort, { once: true });
  try {
    const upgraded = await handshake.done;
    plain.handOver(upgraded);
    return upgraded;
  } catch (err) {
    if (options.signal?.aborted) throw options.signal.reason;
    throw err;
  } finally {
    options.signal?.removeEventListener("abort", onAbort);
  }
}

// The server-side TLS of the certificates a program upgrades with, each
// checked once and made once: a busy STARTTLS server neither re-checks its
// one pair nor makes a node:tls context for every upgrade.
const servers = new Map<string, NodeTlsServer>();

/** The {@linkcode NodeTlsServer} for these credentials and options (tests: it is shared). */
export function serverFor(
  credentials: { cert: string; key: string },
  options: { alpnProtocols?: string[]; clientCaCerts?: string[] },
): NodeTlsServer {
  const id = JSON.stringify([
    credentials.cert,
    credentials.key,
    options.alpnProtocols ?? null,
    options.clientCaCerts ?? null,
  ]);
  let server = servers.get(id);
  if (server !== undefined) return server;
  checkWithDeno(credentials);
  server = new NodeTlsServer({
    ...credentials,
    alpnProtocols: options.alpnProtocols,
    clientCaCerts: options.clientCaCerts,
  });
  if (servers.size >= 32) servers.clear();
  servers.set(id, server);
  return server;
}
