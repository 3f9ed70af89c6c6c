/**
 * The typed errors of netkit's TLS: every handshake failure, certificate
 * problem and refused STARTTLS upgrade is a {@linkcode TlsError} with a stable
 * `code` and a message that names the cause and the fix.
 *
 * @module
 */
import { NetkitError } from "../errors.ts";

/**
 * The stable codes a {@linkcode TlsError} carries.
 *
 * - `ERR_TLS_CERT_UNTRUSTED`: the peer's certificate was signed by a CA this
 *   side does not trust.
 * - `ERR_TLS_CERT_NAME_MISMATCH`: the certificate does not cover the name
 *   asked for.
 * - `ERR_TLS_CERT_EXPIRED`, `ERR_TLS_CERT_NOT_YET_VALID`: outside its dates.
 * - `ERR_TLS_CERT_INVALID`: any other certificate problem (bad signature,
 *   wrong usage, revoked, …).
 * - `ERR_TLS_CERT_REJECTED`: the peer refused this side's certificate (an
 *   alert such as `UnknownCA` during the handshake).
 * - `ERR_TLS_CLIENT_CERT_REQUIRED`: a server asking for a client certificate
 *   got none, or one it does not trust.
 * - `ERR_TLS_NOT_TLS`: the peer is not speaking TLS (plaintext, garbage, or
 *   an echo of our own hello).
 * - `ERR_TLS_HANDSHAKE_TIMEOUT`: the handshake did not finish in time.
 * - `ERR_TLS_HANDSHAKE_FAILED`: the handshake failed for another reason (the
 *   peer hung up, no common cipher or protocol version, …).
 * - `ERR_TLS_TRUNCATED`: on an established connection, the peer closed the
 *   TCP connection without a TLS close_notify, so what it sent may be cut
 *   short (a crashed or killed peer, or an attacker cutting the stream).
 * - `ERR_TLS_PLAINTEXT_BUFFERED`: a STARTTLS upgrade was refused because
 *   plaintext bytes were received but not read (command injection,
 *   CVE-2021-23222 class).
 * - `ERR_TLS_CONN_BUSY`: a STARTTLS upgrade was refused because the
 *   connection's readable or writable is locked (a read or pipe in progress).
 * - `ERR_TLS_NOT_UPGRADABLE`: the connection is not a plain netkit TCP
 *   connection (already TLS, WebSocket, closed, …).
 * - `ERR_TLS_BAD_CREDENTIALS`: the certificate or key given to a server (or a
 *   client) cannot be read or used.
 * - `ERR_TLS_ENGINE_UNSUPPORTED`: an option the chosen engine cannot honour
 *   (e.g. `proxyProtocol`, several `certificates` or `reloadCertificates()`
 *   with `engine: "deno"`).
 */
export type TlsErrorCode =
  | "ERR_TLS_CERT_UNTRUSTED"
  | "ERR_TLS_CERT_NAME_MISMATCH"
  | "ERR_TLS_CERT_EXPIRED"
  | "ERR_TLS_CERT_NOT_YET_VALID"
  | "ERR_TLS_CERT_INVALID"
  | "ERR_TLS_CERT_REJECTED"
  | "ERR_TLS_CLIENT_CERT_REQUIRED"
  | "ERR_TLS_NOT_TLS"
  | "ERR_TLS_HANDSHAKE_TIMEOUT"
  | "ERR_TLS_HANDSHAKE_FAILED"
  | "ERR_TLS_TRUNCATED"
  | "ERR_TLS_PLAINTEXT_BUFFERED"
  | "ERR_TLS_CONN_BUSY"
  | "ERR_TLS_NOT_UPGRADABLE"
  | "ERR_TLS_BAD_CREDENTIALS"
  | "ERR_TLS_ENGINE_UNSUPPORTED";

/**
 * A TLS failure: a handshake that failed, a certificate that does not
 * verify, or a STARTTLS upgrade that was refused. `code` is one of
 * {@linkcode TlsErrorCode}; the message says what went wrong and what to do.
 * Certificate errors carry the details they know (`names`, `notBefore`,
 * `notAfter`).
 *
 * @example Telling an untrusted certificate from a name mismatch
 * ```ts
 * import { connect, serve, TlsError } from "@netkit/netkit/tls";
 * import { createDevCerts } from "@netkit/netkit/certs";
 * import assert from "node:assert/strict";
 *
 * const { cert, key } = await createDevCerts();
 * // onEvent: keep the server quiet about the handshake the client refuses.
 * await using server = serve({ port: 0, cert, key, onEvent: () => {} }, (conn) => conn.close());
 * // The dev CA is not passed in caCerts: the client does not trust it.
 * await assert.rejects(connect({ hostname: "localhost", port: server.addr.port }), (err) => {
 *   assert.ok(err instanceof TlsError);
 *   assert.equal(err.code, "ERR_TLS_CERT_UNTRUSTED");
 *   assert.match(err.message, /pass --ca \(caCerts\) with the CA that signed it/);
 *   return true;
 * });
 * ```
 */
export class TlsError extends NetkitError {
  /** Which TLS failure this is; see {@linkcode TlsErrorCode}. */
  declare readonly code: TlsErrorCode;
  /** For `ERR_TLS_CERT_NAME_MISMATCH`: the names the certificate covers. */
  readonly names?: string[];
  /** For `ERR_TLS_CERT_NOT_YET_VALID`: when the certificate becomes valid. */
  readonly notBefore?: Date;
  /** For `ERR_TLS_CERT_EXPIRED`: when the certificate expired. */
  readonly notAfter?: Date;
  /** For `ERR_TLS_BAD_CREDENTIALS`: the certificate or key file at fault, when it was a file. */
  readonly file?: string;

  /**
   * Makes a TLS error; the message names the cause and the fix.
   *
   * @param code One of {@linkcode TlsErrorCode}.
   * @param message What went wrong and what to do about it.
   * @param options The underlying error as `cause`, certificate details, and the file at fault.
   */
  constructor(
    code: TlsErrorCode,
    message: string,
    options: ErrorOptions & {
      names?: string[];
      notBefore?: Date;
      notAfter?: Date;
      file?: string;
    } = {},
  ) {
    super(code, message, options.cause === undefined ? undefined : { cause: options.cause });
    if (options.names) this.names = options.names;
    if (options.notBefore) this.notBefore = options.notBefore;
    if (options.notAfter) this.notAfter = options.notAfter;
    if (options.file !== undefined) this.file = options.file;
  }
}
