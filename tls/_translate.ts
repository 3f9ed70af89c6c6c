// Turning what Deno (rustls) and node:tls say about a failed handshake into
// TlsErrors whose message names the cause and the fix. Internal.
import { NetkitError } from "../errors.ts";
import { TlsError } from "./errors.ts";
import { Buffer } from "node:buffer";
import { X509Certificate } from "node:crypto";
import { caStore } from "./system_roots.ts";

/** What a client was doing when its handshake failed: for messages. */
export interface ClientContext {
  /** `host:port` connected to. */
  at: string;
  /** The name the certificate was checked against. */
  serverName: string;
  /**
   * The CA certificates (PEM) the client was given to trust (`caCerts`), if
   * any: a certificate signed by another CA of the same name is explained by
   * naming them.
   */
  caCerts?: readonly string[];
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

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/g;

/** The base64 bodies of the certificates in PEM strings (each may hold several). */
function pemBodies(pems: readonly string[]): string[] {
  const bodies: string[] = [];
  for (const pem of pems) {
    for (const block of pem.matchAll(PEM_CERTIFICATE)) bodies.push(block[1].replace(/\s+/g, ""));
  }
  return bodies;
}

/**
 * The subject common names of base64 DER certificates, each once, in order;
 * unreadable ones left out. Parsed by `node:crypto` (no ASN.1 of ours).
 */
function commonNames(bodies: readonly string[]): string[] {
  const names = new Set<string>();
  for (const body of bodies) {
    try {
      const subject = new X509Certificate(Buffer.from(body, "base64")).subject;
      for (const part of subject.split("\n")) {
        if (part.startsWith("CN=")) names.add(part.slice(3));
      }
    } catch {
      // Not a readable certificate: Deno's own check reports it, not this one.
    }
  }
  return [...names];
}

/**
 * The names of the CAs in `trusted` that were given on purpose: the
 * programs add the system's CAs to `--ca` (tls/system_roots.ts), and
 * naming a hundred public roots would hide the one that matters. When every
 * one is a system or bundled root (a development CA installed in the
 * system), all of them.
 */
function givenCaNames(trusted: readonly string[]): string[] {
  const everywhere = new Set<string>();
  for (const store of ["system", "bundled"] as const) {
    try {
      for (const body of pemBodies(caStore(store))) everywhere.add(body);
    } catch {
      // Older runtimes, or no access to the store: name more.
    }
  }
  const all = pemBodies(trusted);
  const given = all.filter((body) => !everywhere.has(body));
  return commonNames(given.length > 0 ? given : all);
}

/**
 * Certificate verification errors, the same wording on both sides. `whose`
 * is "the server's" or "the client's"; `trusted` the CA certificates (PEM)
 * this side was given, for naming them.
 */
function certificateError(
  message: string,
  err: unknown,
  whose: string,
  serverName: string | undefined,
  fix: { ca: string; self: string; signer: string },
  trusted?: readonly string[],
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
  // A signature that does not verify, or made with another kind of key than
  // the issuer's: a verifier only checks it against a CA whose name is the
  // one the certificate gives as its issuer, so a CA of that name but another
  // key is trusted — most often a development CA made again under the same
  // name (a second createDevCerts(), deno task certs --force) while the other
  // side kept the certificate signed by the first. rustls says BadSignature
  // (InvalidSignatureForPublicKey in older ones), or
  // UnsupportedSignatureAlgorithmForPublicKey when the two keys are of
  // different types (ECDSA, RSA); OpenSSL says "certificate signature
  // failure" (when no key identifiers tell the CAs apart first).
  if (
    /BadSignature|InvalidSignatureForPublicKey|UnsupportedSignatureAlgorithmForPublicKey|certificate signature failure|CERT_SIGNATURE_FAILURE/i
      .test(message)
  ) {
    const names = trusted === undefined ? [] : givenCaNames(trusted);
    const issuer = names.length === 1
      ? `names its issuer "${names[0]}", but the CA of that name ${fix.self} trusts did not sign it`
      : names.length > 1 && names.length <= 3
      ? `names as its issuer one of the CAs ${fix.self} trusts (${
        quoteList(names)
      }), but that CA did not sign it`
      : `names as its issuer a CA ${fix.self} trusts, but that CA did not sign it`;
    return new TlsError(
      "ERR_TLS_CERT_INVALID",
      `${whose} certificate ${issuer}: the two CA files differ (were the certificates made again, ` +
        `e.g. by another deno task certs or createDevCerts()?); ${fix.signer}`,
      { cause: err },
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
    signer: "pass --ca (caCerts) with the CA that signed the server's certificate",
  }, context.caCerts);
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
    signer: "give the server (clientCaCerts) the CA that signed the client's certificate",
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
  if (alert?.[1] === "DecryptError") {
    // What rustls and OpenSSL clients send when a signature in the
    // certificate chain does not verify (see certificateError): with a
    // server that has loaded a key matching its certificate, almost always
    // a CA of the same name but another key on the client's side.
    return new TlsError(
      "ERR_TLS_CERT_REJECTED",
      "the client could not verify the signature on this server's certificate (alert DecryptError): " +
        "it most likely trusts another CA of the same name as the one that signed it (were the " +
        "certificates made again?); give the client (--ca) the CA that signed this server's certificate",
      { cause: err },
    );
  }
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
