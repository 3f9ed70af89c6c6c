/**
 * TLS servers and clients that speak netkit's {@linkcode Conn} — direct
 * ({@linkcode serve}, {@linkcode listen}, {@linkcode connect}) or upgraded
 * from plain TCP with STARTTLS ({@linkcode startTls} as the client,
 * {@linkcode acceptTls} as the server). A handler written for TCP serves TLS
 * unchanged.
 *
 * Every handshake finishes before a connection is handed out, and every
 * failure is a {@linkcode TlsError} with a stable `code` and a message that
 * names the cause and the fix: an untrusted CA, a certificate that does not
 * cover the name asked for (naming both), an expired or not yet valid
 * certificate (with the dates), a peer that does not speak TLS, a handshake
 * timeout, or a STARTTLS upgrade refused because plaintext bytes were
 * waiting (command injection, CVE-2021-23222 class).
 *
 * ## What Deno can and cannot do here
 * - **Aborting a server handshake.** `Deno.listenTls` runs each handshake in
 *   a background task that closing the connection does not stop: the TCP
 *   socket stays open until the peer finishes or gives up (measured: a peer
 *   trickling a ClientHello kept its socket for as long as it trickled). So
 *   {@linkcode serve} and {@linkcode listen} default to `engine: "node"`:
 *   a plain `Deno.listen` socket with Deno's built-in `node:tls` doing the
 *   TLS, where `handshakeTimeout` really closes the socket. `engine: "deno"`
 *   (`Deno.listenTls`, rustls) costs about half the CPU per byte and per
 *   handshake (figures in `bench/README.md`) but only abandons a slow
 *   handshake.
 * - **Several certificates (SNI) and reloading them.** `Deno.listenTls`
 *   takes one certificate, fixed for the listener's life: Deno 2 has no
 *   public SNI resolver, and its internal one (`unstableSniResolver`) asks
 *   once per name and keeps every answer for good — no reload, and one
 *   entry per name a client cares to send. So `certificates` (several) and
 *   `reloadCertificates()` need the node engine, where each handshake picks
 *   from the set in service (node:tls `SNICallback`) and a reload swaps the
 *   set for new handshakes; `engine: "deno"` refuses them with
 *   `ERR_TLS_ENGINE_UNSUPPORTED`.
 * - **Client certificates.** `Deno.listenTls` cannot ask for them;
 *   `clientCaCerts` (node engine, and {@linkcode acceptTls}) can, and the
 *   handler sees the verified certificate as `conn.peerCertificate`.
 *   `Deno.startTls` takes no client certificate, so {@linkcode startTls}
 *   cannot present one ({@linkcode connect} can).
 * - **Server-side STARTTLS.** `Deno.startTls` is client-only, so
 *   {@linkcode acceptTls} runs through `node:tls`.
 * - **Trust.** `caCerts` are **added** to Deno's root store (Mozilla's roots
 *   by default, the system's with `DENO_TLS_CA_STORE=system`); Deno has no
 *   way to trust *only* the CAs given.
 * - **The server's certificate** is not shown to a Deno client; a name
 *   mismatch names the certificate's names from Deno's own error message.
 * - **Truncation.** Deno's TLS reports a peer that closed without a
 *   close_notify (`ERR_TLS_TRUNCATED` on read); `node:tls` treats it as the
 *   end of the stream, as Node and Python do by default.
 *
 * @example A TLS echo server and a client that trusts its development CA
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
 * await writeAll(conn.writable, "ping\n");
 * assert.equal(new TextDecoder().decode((await readUntil(conn.readable, "\n"))!), "ping\n");
 * ```
 *
 * @module
 */
import type { Conn } from "../conn.ts";

export type { Conn };
export { type PeerCertificate, type TlsConn } from "./_tls_conn.ts";
export {
  type CertificateReload,
  type CertificateReloadEvent,
  DEFAULT_HANDSHAKE_TIMEOUT,
  type TlsListenOptions,
  type TlsReloadable,
} from "./acceptor.ts";
export type { CertificateOptions, ServedCertificate } from "./_credentials.ts";
export {
  type RefusalReason,
  serve,
  type ServeOptions,
  type ServerEvent,
  type ServerOptions,
  type ServerStats,
  type TlsServer,
} from "./serve.ts";
export { listen, type ListenOptions, TlsListener } from "./listen.ts";
export { connect, type ConnectOptions } from "./connect.ts";
export { startTls, type StartTlsOptions } from "./start_tls.ts";
export { acceptTls, type AcceptTlsOptions } from "./accept_tls.ts";
export { TlsError, type TlsErrorCode } from "./errors.ts";
export { systemCaCerts, trustedCaCerts } from "./system_roots.ts";
