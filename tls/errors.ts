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
  | "ERR_TLS_BAD_CREDENTIALS";

/**
 * A TLS failure: a handshake that failed, a certificate that does not
 * verify, or a STARTTLS upgrade that was refused. `code` is one of
 * {@linkcode TlsErrorCode}; the message says what went wrong and what to do.
 * Certificate errors carry the details they know (`names`, `notBefore`,
 * `notAfter`).
 *
 * @example Telling an untrusted certificate from a name mismatch
 * ```ts
 * import { connect, TlsError } from "@netkit/netkit/tls";
 * import { serve } from "@netkit/netkit/tls";
 * import { createDevCerts } from "@netkit/netkit/certs";
 *
 * const { cert, key } = await createDevCerts();
 * await using server = serve({ port: 0, cert, key }, (conn) => conn.close());
 * try {
 *   // The dev CA is not passed in caCerts: the client does not trust it.
 *   await connect({ hostname: "localhost", port: server.addr.port });
 * } catch (err) {
 *   if (err instanceof TlsError && err.code === "ERR_TLS_CERT_UNTRUSTED") {
 *     console.error(err.message); // … pass --ca (caCerts) with the CA that signed it
 *   }
 * }
 * ```
 */
export class TlsError extends NetkitError {
  declare readonly code: TlsErrorCode;
  /** For `ERR_TLS_CERT_NAME_MISMATCH`: the names the certificate covers. */
  readonly names?: string[];
  /** For `ERR_TLS_CERT_NOT_YET_VALID`: when the certificate becomes valid. */
  readonly notBefore?: Date;
  /** For `ERR_TLS_CERT_EXPIRED`: when the certificate expired. */
  readonly notAfter?: Date;

  /**
   * @param code One of {@linkcode TlsErrorCode}.
   * @param message What went wrong and what to do about it.
   * @param options The underlying error as `cause`, and certificate details.
   */
  constructor(
    code: TlsErrorCode,
    message: string,
    options: ErrorOptions & { names?: string[]; notBefore?: Date; notAfter?: Date } = {},
  ) {
    super(code, message, options.cause === undefined ? undefined : { cause: options.cause });
    if (options.names) this.names = options.names;
    if (options.notBefore) this.notBefore = options.notBefore;
    if (options.notAfter) this.notAfter = options.notAfter;
  }
}

/** What a client was doing when its handshake failed: for messages. */
export interface ClientContext {
  /** `host:port` connected to. */
  at: string;
  /** The name the certificate was checked against. */
  serverName: string;
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function isoDate(unixSeconds: string): Date {
  return new Date(Number(unixSeconds) * 1000);
}

function day(date: Date): string {
  return date.toISOString().replace(/\.000Z$/, "Z");
}

/** The names in rustls' "certificate is only valid for …" list. */
export function presentedNames(message: string): string[] {
  const names: string[] = [];
  for (const m of message.matchAll(/DnsName\("([^"]*)"\)|IpAddress\(([^)]*)\)/g)) {
    names.push(m[1] ?? normalizeIp(m[2]));
  }
  return names;
}

function normalizeIp(text: string): string {
  // rustls prints IPv6 addresses oddly ("0::2"): let the URL parser tidy them.
  if (!text.includes(":")) return text;
  try {
    return new URL(`http://[${text}]/`).hostname.slice(1, -1);
  } catch {
    return text;
  }
}

function quoteList(names: string[]): string {
  return names.map((n) => `"${n}"`).join(", ");
}

/**
 * Certificate verification errors, the same wording on both sides. `whose`
 * is "the server's" or "the client's".
 */
function certificateError(
  message: string,
  err: unknown,
  whose: string,
  serverName: string | undefined,
  fix: { ca: string; self: string },
): TlsError | undefined {
  if (/UnknownIssuer|unknown issuer|self[- ]signed|unable to get (local )?issuer/i.test(message)) {
    return new TlsError(
      "ERR_TLS_CERT_UNTRUSTED",
      `${whose} certificate is not trusted: it was signed by a CA ${fix.self} does not know; ${fix.ca}`,
      { cause: err },
    );
  }
  const name = /not valid for name "([^"]*)"/.exec(message);
  if (name || /NotValidForName|hostname mismatch|altnames/i.test(message)) {
    const asked = name?.[1] ?? serverName ?? "(unknown)";
    const names = presentedNames(message);
    const covers = names.length === 0
      ? `${whose} certificate does not cover "${asked}"`
      : `certificate for ${quoteList(names)} does not cover "${asked}"`;
    return new TlsError(
      "ERR_TLS_CERT_NAME_MISMATCH",
      `${covers}: connect with a name it covers, or pass --servername (serverName) with one` +
        ", or make a certificate that includes it",
      { cause: err, names },
    );
  }
  const expired =
    /certificate expired(?:: verification time (\d+) \(UNIX\), but certificate is not valid after (\d+))?/i
      .exec(message);
  if (expired) {
    const notAfter = expired[2] ? isoDate(expired[2]) : undefined;
    const now = expired[1] ? isoDate(expired[1]) : new Date();
    const when = notAfter ? ` on ${day(notAfter)} (it is now ${day(now)})` : "";
    return new TlsError(
      "ERR_TLS_CERT_EXPIRED",
      `${whose} certificate expired${when}: renew it (deno task certs makes a fresh one), or check this machine's clock`,
      { cause: err, notAfter },
    );
  }
  const future =
    /certificate not valid yet(?:: verification time (\d+) \(UNIX\), but certificate is not valid before (\d+))?/i
      .exec(message);
  if (future) {
    const notBefore = future[2] ? isoDate(future[2]) : undefined;
    const now = future[1] ? isoDate(future[1]) : new Date();
    const when = notBefore ? ` until ${day(notBefore)} (it is now ${day(now)})` : "";
    return new TlsError(
      "ERR_TLS_CERT_NOT_YET_VALID",
      `${whose} certificate is not valid yet${when}: check the clocks of both machines, or make a certificate valid from now`,
      { cause: err, notBefore },
    );
  }
  if (/invalid peer certificate/i.test(message)) {
    const what = message.replace(/^.*invalid peer certificate:\s*/i, "");
    return new TlsError(
      "ERR_TLS_CERT_INVALID",
      `${whose} certificate is not acceptable (${what}): use a certificate made for this purpose, e.g. with deno task certs`,
      { cause: err },
    );
  }
  return undefined;
}

/** The peer is not speaking TLS: what Deno (rustls) and node:tls say. */
function notTls(message: string): boolean {
  return /corrupt message|InvalidContentType|got ClientHello when expecting|wrong version number|unknown protocol|http request|packet length too long|record overflow/i
    .test(message);
}

/** Turns a failed client handshake (Deno or node:tls) into a {@linkcode TlsError}. */
export function clientHandshakeError(err: unknown, context: ClientContext): unknown {
  if (err instanceof NetkitError) return err;
  const message = messageOf(err);
  const cert = certificateError(message, err, "the server's", context.serverName, {
    ca: "pass --ca (caCerts) with the CA that signed it",
    self: "this client",
  });
  if (cert) return cert;
  if (notTls(message)) {
    return new TlsError(
      "ERR_TLS_NOT_TLS",
      `${context.at} is not speaking TLS (it answered with something that is not a TLS handshake): ` +
        "check the port, or use a plaintext client (tcp-client) or STARTTLS",
      { cause: err },
    );
  }
  const alert = /received fatal alert: (\w+)/.exec(message);
  if (alert?.[1] === "CertificateRequired") {
    return new TlsError(
      "ERR_TLS_CLIENT_CERT_REQUIRED",
      `${context.at} requires a client certificate: pass cert and key (signed by a CA it trusts)`,
      { cause: err },
    );
  }
  if (alert) {
    return new TlsError(
      "ERR_TLS_HANDSHAKE_FAILED",
      `${context.at} ended the TLS handshake with the alert ${
        alert[1]
      }: check that both sides share a TLS version and cipher, and the server's logs`,
      { cause: err },
    );
  }
  if (
    /end of file|UnexpectedEof|close_notify|reset|broken pipe|hang up|ECONNRESET/i.test(message)
  ) {
    return new TlsError(
      "ERR_TLS_HANDSHAKE_FAILED",
      `${context.at} closed the connection during the TLS handshake: is it a TLS server, and does it accept this client? Check its logs`,
      { cause: err },
    );
  }
  return new TlsError(
    "ERR_TLS_HANDSHAKE_FAILED",
    `TLS handshake with ${context.at} failed: ${message}`,
    { cause: err },
  );
}

/** Turns a failed server-side handshake (Deno or node:tls) into a {@linkcode TlsError}. */
export function serverHandshakeError(err: unknown): unknown {
  if (err instanceof NetkitError) return err;
  const message = messageOf(err);
  const cert = certificateError(message, err, "the client's", undefined, {
    ca: "give the server (clientCaCerts) the CA that signed the client's certificate",
    self: "this server",
  });
  if (cert) return cert;
  if (notTls(message)) {
    return new TlsError(
      "ERR_TLS_NOT_TLS",
      `the client is not speaking TLS (it sent plaintext or garbage): point it at the plaintext port, or use a TLS client`,
      { cause: err },
    );
  }
  if (/peer sent no certificates|NoCertificatesPresented|certificate required/i.test(message)) {
    return new TlsError(
      "ERR_TLS_CLIENT_CERT_REQUIRED",
      `the client sent no certificate, and this server requires one: the client must pass cert and key signed by a CA in clientCaCerts`,
      { cause: err },
    );
  }
  const alert = /received fatal alert: (\w+)/.exec(message);
  if (alert) {
    const rejected =
      /UnknownCA|BadCertificate|CertificateUnknown|CertificateExpired|UnsupportedCertificate|AccessDenied/
        .test(alert[1]);
    return new TlsError(
      rejected ? "ERR_TLS_CERT_REJECTED" : "ERR_TLS_HANDSHAKE_FAILED",
      rejected
        ? `the client rejected this server's certificate (alert ${
          alert[1]
        }): give the client the CA that signed it (--ca), and check the name and dates it covers`
        : `the client ended the TLS handshake with the alert ${alert[1]}`,
      { cause: err },
    );
  }
  if (
    /end of file|UnexpectedEof|reset|broken pipe|hang up|ECONNRESET|close_notify/i.test(message)
  ) {
    return new TlsError(
      "ERR_TLS_HANDSHAKE_FAILED",
      `the client closed the connection during the TLS handshake (it may not trust this server's certificate)`,
      { cause: err },
    );
  }
  return new TlsError(
    "ERR_TLS_HANDSHAKE_FAILED",
    `TLS handshake with the client failed: ${message}`,
    {
      cause: err,
    },
  );
}

/** The error for a handshake that did not finish within its timeout. */
export function handshakeTimedOut(
  peer: string,
  timeoutMs: number,
  side: "client" | "server",
): TlsError {
  const seconds = timeoutMs / 1000;
  return new TlsError(
    "ERR_TLS_HANDSHAKE_TIMEOUT",
    side === "server"
      ? `the client did not finish its TLS handshake within ${seconds}s: closed it (raise --handshake-timeout for slow clients)`
      : `no TLS handshake from ${peer} within ${seconds}s: is it a TLS server (a plaintext server waits for the client to speak)? Raise --timeout for a slow one`,
  );
}
