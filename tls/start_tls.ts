import type { Conn } from "../conn.ts";
import { handshakeWithin } from "./_handshake.ts";
import { type TlsConn, TlsSocketConn } from "./_tls_conn.ts";
import { checkUpgradable } from "./_upgrade.ts";
import { clientHandshakeError, handshakeTimedOut } from "./_translate.ts";
import { closeQuietly } from "../internal/socket.ts";

/** Options for {@linkcode startTls}. */
export interface StartTlsOptions {
  /**
   * The name the server's certificate must cover, also sent as SNI.
   * Defaults to the peer's IP address (the connection no longer knows the
   * name it was opened with), so pass the server's DNS name here.
   */
  serverName?: string;
  /**
   * Extra CA certificates (PEM) to trust, **added** to Deno's root store
   * (Mozilla's by default, the system's with `DENO_TLS_CA_STORE=system`).
   */
  caCerts?: string[];
  /** ALPN protocols to offer, most preferred first. */
  alpnProtocols?: string[];
  /** Milliseconds the handshake may take; 0 = no limit. @default {10000} */
  timeout?: number;
  /** Gives up on the handshake when aborted. */
  signal?: AbortSignal;
  /**
   * Whether a server that closes without a TLS close_notify is an error
   * (reading fails with `ERR_TLS_TRUNCATED`), for protocols without their own
   * framing. By default the stream just ends, as in Node, Python and curl,
   * and `conn.truncated` says so. @default {false}
   */
  requireCloseNotify?: boolean;
}

/**
 * Upgrades a plain TCP connection to TLS as the client — STARTTLS, as in
 * SMTP, IMAP, POP3, LDAP or PostgreSQL — after a plaintext exchange done on
 * the same connection with `readUntil`/`writeAll`. Resolves to a
 * {@linkcode TlsConn} once the handshake has finished and the server's
 * certificate is verified.
 *
 * It **refuses** (a {@linkcode TlsError}, the connection left as it is) when
 * plaintext bytes were received but not read (`ERR_TLS_PLAINTEXT_BUFFERED`):
 * anything the server sent after its "go ahead" reply and before the
 * handshake could have been injected by a man in the middle and would be
 * taken as protected data (CVE-2021-23222 class) — close the connection.
 * It also refuses while `conn.readable` or `conn.writable` is locked
 * (`ERR_TLS_CONN_BUSY`), and for anything but a plain netkit TCP connection
 * (`ERR_TLS_NOT_UPGRADABLE`).
 *
 * After the upgrade use the returned connection only: the plain one counts
 * as closed, and closing it closes the upgraded one too (so `await using`
 * on both is fine). If the handshake fails the socket is closed.
 *
 * Built on `Deno.startTls`, which takes no client certificate: a server
 * that requires one cannot be reached through this function.
 *
 * @throws {TlsError} The refusals above, or a handshake failure
 *   (`ERR_TLS_CERT_UNTRUSTED`, `ERR_TLS_CERT_NAME_MISMATCH`, …).
 *
 * @example The client side of an SMTP-style STARTTLS
 * ```ts
 * import { acceptTls, startTls } from "@netkit/netkit/tls";
 * import { connect, serve } from "@netkit/netkit/tcp";
 * import { readLine, writeAll } from "@netkit/netkit/io";
 * import { createDevCerts } from "@netkit/netkit/certs";
 * import assert from "node:assert/strict";
 *
 * const { ca, cert, key } = await createDevCerts();
 * // A tiny server: "220 ready", then TLS on "STARTTLS", then one line back.
 * await using server = serve({ port: 0 }, async (plain) => {
 *   await writeAll(plain.writable, "220 ready\r\n");
 *   if ((await readLine(plain.readable)) !== "STARTTLS") return;
 *   await writeAll(plain.writable, "220 go ahead\r\n");
 *   await using conn = await acceptTls(plain, { cert, key });
 *   await writeAll(conn.writable, `250 you said ${await readLine(conn.readable)}\r\n`);
 * });
 *
 * await using plain = await connect({ port: server.addr.port });
 * assert.equal(await readLine(plain.readable), "220 ready");
 * await writeAll(plain.writable, "STARTTLS\r\n");
 * assert.equal(await readLine(plain.readable), "220 go ahead");
 * await using conn = await startTls(plain, { serverName: "localhost", caCerts: [ca] });
 * await writeAll(conn.writable, "hello\r\n");
 * assert.equal(await readLine(conn.readable), "250 you said hello");
 * ```
 */
export async function startTls(conn: Conn, options: StartTlsOptions = {}): Promise<TlsConn> {
  const { plain, peer, hostname } = checkUpgradable(conn);
  options.signal?.throwIfAborted();
  const serverName = options.serverName ?? hostname;
  const timeout = options.timeout ?? 10_000;
  const context = { at: peer, serverName, caCerts: options.caCerts };
  const socket = plain.detach();
  let tls: Deno.TlsConn;
  try {
    tls = await Deno.startTls(socket as Deno.TcpConn, {
      hostname: serverName,
      caCerts: options.caCerts,
      alpnProtocols: options.alpnProtocols,
    });
  } catch (err) {
    try {
      socket.close();
    } catch {
      // Already closed.
    }
    throw clientHandshakeError(err, context);
  }
  plain.handOver({
    activity: 0,
    destroy: () => closeQuietly(tls),
    close: () => Promise.resolve(closeQuietly(tls)),
  });
  const info = await handshakeWithin(
    tls,
    timeout,
    () => handshakeTimedOut(peer, timeout, "client"),
    (err) => clientHandshakeError(err, context),
    options.signal,
  );
  const upgraded = new TlsSocketConn(tls, {
    alpnProtocol: info.alpnProtocol,
    peerCertificate: null,
    requireCloseNotify: options.requireCloseNotify ?? false,
  });
  plain.handOver(upgraded);
  return upgraded;
}
