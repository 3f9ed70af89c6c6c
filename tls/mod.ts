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
 * - `caCerts` are **added** to Deno's root store (Mozilla's roots by
 *   default, the system's with `DENO_TLS_CA_STORE=system`); Deno has no way
 *   to trust *only* the CAs given.
 * - `Deno.listenTls` cannot ask clients for certificates. With
 *   `clientCaCerts`, {@linkcode serve} and {@linkcode acceptTls} run their
 *   handshakes through Deno's `node:tls` instead, which can; it is slower
 *   than `Deno.listenTls`.
 * - `Deno.startTls` is client-only, so the server side of STARTTLS
 *   ({@linkcode acceptTls}) also runs through `node:tls`. `Deno.startTls`
 *   takes no client certificate, so {@linkcode startTls} cannot present one.
 * - Deno does not show a client the server's certificate; name-mismatch
 *   errors take the names from Deno's own error message.
 *
 * @example A TLS echo server and a client that trusts its development CA
 * ```ts
 * import { connect, serve } from "@netkit/netkit/tls";
 * import { echo } from "@netkit/netkit";
 * import { readUntil, writeAll } from "@netkit/netkit/io";
 * import { createDevCerts } from "@netkit/netkit/certs";
 *
 * const { ca, cert, key } = await createDevCerts();
 * await using server = serve({ port: 0, cert, key }, echo);
 * await using conn = await connect({ hostname: "localhost", port: server.addr.port, caCerts: [ca] });
 * await writeAll(conn.writable, "ping\n");
 * await readUntil(conn.readable, "\n"); // "ping\n"
 * ```
 *
 * @module
 */
import type { Conn } from "../conn.ts";

export type { Conn };
export { type PeerCertificate, type TlsConn } from "./_tls_conn.ts";
export { DEFAULT_HANDSHAKE_TIMEOUT, type TlsListenOptions } from "./_acceptor.ts";
export type { CertificateOptions } from "./_credentials.ts";
export {
  serve,
  type ServeOptions,
  type ServerEvent,
  type ServerOptions,
  type TlsServer,
} from "./serve.ts";
export { listen, type ListenOptions, TlsListener } from "./listen.ts";
export { connect, type ConnectOptions } from "./connect.ts";
export { startTls, type StartTlsOptions } from "./start_tls.ts";
export { acceptTls, type AcceptTlsOptions } from "./accept_tls.ts";
export { TlsError, type TlsErrorCode } from "./errors.ts";
