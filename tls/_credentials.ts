// Reading a certificate and key given as PEM strings or as file paths, with
// errors that say which one is wrong and how to get a good one; and a
// server's set of certificates: each one checked (parses, key belongs to it,
// Deno's TLS takes it), the names it answers to, and the one a client's SNI
// name picks. Internal.
import { createPrivateKey, type KeyObject, X509Certificate } from "node:crypto";
import type { PeerCertificate } from "./_tls_conn.ts";
import { TlsError } from "./errors.ts";

/** A certificate and its key: PEM strings, or paths to PEM files. */
export interface CertificateOptions {
  /** The certificate chain, PEM (`-----BEGIN CERTIFICATE-----`). Or give `certFile`. */
  cert?: string;
  /** Its private key, PEM (`-----BEGIN PRIVATE KEY-----` or EC/RSA). Or give `keyFile`. */
  key?: string;
  /** A path to read `cert` from (read again by a server's `reloadCertificates()`). */
  certFile?: string;
  /** A path to read `key` from (read again by a server's `reloadCertificates()`). */
  keyFile?: string;
}

/**
 * A certificate a server is serving: what its client sees, the names it is
 * chosen for, and where it was read from.
 */
export interface ServedCertificate extends PeerCertificate {
  /**
   * The names a client's SNI picks it for, lower case: its subjectAltName DNS
   * entries (wildcards as `*.example.com`), or its subject CN when it has no
   * DNS entries. Empty when it has neither (then only the default is served
   * by it).
   */
  names: string[];
  /** The file it was read from, when given as `certFile`. */
  certFile?: string;
  /** The file its key was read from, when given as `keyFile`. */
  keyFile?: string;
}

const MAKE_CERTS = "make development certificates with `deno task certs` (or createDevCerts)";

/** Reads a PEM file, or throws a TlsError naming it. */
type Reader = (path: string, what: "certificate" | "key") => string;

function readError(path: string, what: string, err: unknown): TlsError {
  const why = err instanceof Deno.errors.NotFound
    ? "not found"
    : err instanceof Deno.errors.PermissionDenied
    ? "permission denied"
    : err instanceof Error
    ? err.message
    : String(err);
  return new TlsError(
    "ERR_TLS_BAD_CREDENTIALS",
    `cannot read the ${what} file ${path}: ${why}; ${MAKE_CERTS}`,
    { cause: err, file: path },
  );
}

function readPem(path: string, what: "certificate" | "key"): string {
  try {
    return Deno.readTextFileSync(path);
  } catch (err) {
    throw readError(path, what, err);
  }
}

function resolvePair(
  options: CertificateOptions,
  required: boolean,
  read: Reader,
): { cert: string; key: string } | undefined {
  const cert = options.cert ??
    (options.certFile === undefined ? undefined : read(options.certFile, "certificate"));
  const key = options.key ??
    (options.keyFile === undefined ? undefined : read(options.keyFile, "key"));
  if (cert === undefined && key === undefined) {
    if (!required) return undefined;
    throw new TlsError(
      "ERR_TLS_BAD_CREDENTIALS",
      `a TLS server needs a certificate and key: pass cert and key (PEM) or certFile and keyFile; ${MAKE_CERTS}`,
    );
  }
  if (cert === undefined || key === undefined) {
    throw new TlsError(
      "ERR_TLS_BAD_CREDENTIALS",
      `${
        cert === undefined
          ? `a key${
            options.keyFile ? ` (${options.keyFile})` : ""
          } was given without its certificate`
          : `a certificate${
            options.certFile ? ` (${options.certFile})` : ""
          } was given without its key`
      }: pass both cert and key (or certFile and keyFile)`,
    );
  }
  const fromCertFile = options.cert === undefined ? options.certFile : undefined;
  const fromKeyFile = options.key === undefined ? options.keyFile : undefined;
  if (!/-----BEGIN [A-Z ]*CERTIFICATE-----/.test(cert)) {
    throw new TlsError(
      "ERR_TLS_BAD_CREDENTIALS",
      fromCertFile !== undefined
        ? `the certificate file ${fromCertFile} is not PEM (no "-----BEGIN CERTIFICATE-----"): ` +
          "pass the certificate file, e.g. certs/server.pem"
        : `the certificate is not PEM (no "-----BEGIN CERTIFICATE-----"): ` +
          (!cert.includes("-----")
            ? "to read it from a file, pass certFile instead of cert"
            : "pass the certificate file, e.g. certs/server.pem"),
      { file: fromCertFile },
    );
  }
  if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(key)) {
    throw new TlsError(
      "ERR_TLS_BAD_CREDENTIALS",
      fromKeyFile !== undefined
        ? `the key file ${fromKeyFile} is not a PEM private key (no "-----BEGIN PRIVATE KEY-----"): ` +
          "pass the key file, e.g. certs/server-key.pem"
        : `the key is not a PEM private key (no "-----BEGIN PRIVATE KEY-----"): ` +
          (!key.includes("-----")
            ? "to read it from a file, pass keyFile instead of key"
            : "pass the key file, e.g. certs/server-key.pem"),
      { file: fromKeyFile },
    );
  }
  return { cert, key };
}

/**
 * Resolves `cert`/`key` (or `certFile`/`keyFile`) to PEM strings.
 * `required`: a server needs them; a client may go without.
 */
export function loadCredentials(
  options: CertificateOptions,
  required: boolean,
): { cert: string; key: string } | undefined {
  return resolvePair(options, required, readPem);
}

/** Turns Deno's complaint about a certificate or key into a {@linkcode TlsError}. */
export function credentialsError(err: unknown, file?: string): unknown {
  if (err instanceof TlsError) return err;
  const message = err instanceof Error ? err.message : String(err);
  if (
    /certificate|key|pem|decode|private/i.test(message) && !(err instanceof Deno.errors.AddrInUse)
  ) {
    return new TlsError(
      "ERR_TLS_BAD_CREDENTIALS",
      `${
        file === undefined ? "the certificate or key" : `the certificate or key in ${file}`
      } cannot be used (${message}): check that they are PEM and belong together; ${MAKE_CERTS}`,
      { cause: err, file },
    );
  }
  return err;
}

/** Throws a {@linkcode TlsError} when Deno's TLS cannot use this certificate and key. */
export function checkWithDeno(credentials: { cert: string; key: string }, file?: string): void {
  try {
    Deno.listenTls({ hostname: "127.0.0.1", port: 0, ...credentials }).close();
  } catch (err) {
    const translated = credentialsError(err, file);
    if (translated !== err) throw translated;
    // Not a credentials problem (no loopback?): leave it to the handshakes.
  }
}

/** One certificate of a server's set, checked, with where it came from. */
export interface LoadedCertificate {
  cert: string;
  key: string;
  /** What it is, for `server.certificates` and logs. */
  info: ServedCertificate;
  /** The option it came from, read again on reload. */
  source: CertificateOptions;
}

function attributes(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const eq = line.indexOf("=");
    if (eq > 0) out[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return out;
}

/** A name as SNI compares it: lower case, no trailing dot. */
function normalName(name: string): string {
  return name.toLowerCase().replace(/\.$/, "");
}

const DNS_NAME = /^(\*\.)?[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$/;

/** The DNS names of a certificate: subjectAltName DNS entries, else a CN that is a name. */
function namesOf(x509: X509Certificate, subject: Record<string, string>): string[] {
  const names: string[] = [];
  // node's format: `DNS:a.test, DNS:*.b.test, IP Address:127.0.0.1` (an
  // entry with a comma or quote in it is JSON-quoted; no DNS name has one).
  for (const entry of (x509.subjectAltName ?? "").split(", ")) {
    if (!entry.startsWith("DNS:")) continue;
    const name = normalName(entry.slice(4));
    if (DNS_NAME.test(name) && !names.includes(name)) names.push(name);
  }
  if (names.length > 0) return names;
  // RFC 6125: the CN counts only when there is no DNS subjectAltName.
  const cn = subject.CN === undefined ? "" : normalName(subject.CN);
  return DNS_NAME.test(cn) ? [cn] : [];
}

/**
 * Reads (when given as files) and checks one certificate and its key: the
 * certificate parses, the key parses and belongs to it, and Deno's TLS takes
 * the pair. Every error is a TlsError naming the file at fault.
 */
export function loadCertificate(
  source: CertificateOptions,
  read: Reader = readPem,
): LoadedCertificate {
  const pair = resolvePair(source, true, read)!;
  const certAt = source.cert === undefined ? source.certFile : undefined;
  const keyAt = source.key === undefined ? source.keyFile : undefined;
  const certWhere = certAt === undefined ? "the certificate" : `the certificate file ${certAt}`;
  const keyWhere = keyAt === undefined ? "the key" : `the key file ${keyAt}`;
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(pair.cert);
  } catch (err) {
    throw new TlsError(
      "ERR_TLS_BAD_CREDENTIALS",
      `${certWhere} holds no certificate that can be parsed (${
        err instanceof Error ? err.message : err
      }): pass a PEM certificate; ${MAKE_CERTS}`,
      { cause: err, file: certAt },
    );
  }
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(pair.key);
  } catch (err) {
    throw new TlsError(
      "ERR_TLS_BAD_CREDENTIALS",
      `${keyWhere} holds no private key that can be parsed (${
        err instanceof Error ? err.message : err
      }): pass an unencrypted PEM private key; ${MAKE_CERTS}`,
      { cause: err, file: keyAt },
    );
  }
  if (!x509.checkPrivateKey(privateKey)) {
    throw new TlsError(
      "ERR_TLS_BAD_CREDENTIALS",
      `${keyWhere} does not belong to ${certWhere}: pass the key made with that certificate ` +
        "(a certificate and key replaced one at a time do not match until both are written)",
      { file: keyAt ?? certAt },
    );
  }
  // What node:crypto takes, rustls may still refuse (key types, chains).
  checkWithDeno(pair, certAt ?? keyAt);
  const subject = attributes(x509.subject);
  return {
    ...pair,
    source,
    info: {
      names: namesOf(x509, subject),
      subject,
      issuer: attributes(x509.issuer),
      serialNumber: x509.serialNumber,
      validFrom: new Date(x509.validFrom),
      validTo: new Date(x509.validTo),
      fingerprint256: x509.fingerprint256,
      ...(source.cert === undefined && source.certFile !== undefined
        ? { certFile: source.certFile }
        : {}),
      ...(source.key === undefined && source.keyFile !== undefined
        ? { keyFile: source.keyFile }
        : {}),
    },
  };
}

/**
 * A server's certificates, the first the default, with the lookup from a
 * client's SNI name to the one to serve. Immutable: a reload builds a new set.
 */
export class CertificateSet {
  /** In the order given; `entries[0]` is the default. */
  readonly entries: readonly LoadedCertificate[];
  // Exact names, and wildcards by the part after `*.`; the first certificate
  // that names one wins.
  #exact = new Map<string, number>();
  #wildcard = new Map<string, number>();

  constructor(entries: LoadedCertificate[]) {
    this.entries = entries;
    entries.forEach((entry, i) => {
      for (const name of entry.info.names) {
        if (name.startsWith("*.")) {
          if (!this.#wildcard.has(name.slice(2))) this.#wildcard.set(name.slice(2), i);
        } else if (!this.#exact.has(name)) this.#exact.set(name, i);
      }
    });
  }

  /**
   * The index of the certificate for `serverName` (SNI): an exact name, then
   * a wildcard covering exactly one more label (`*.example.com` covers
   * `a.example.com`, not `example.com` nor `a.b.example.com`, as RFC 6125
   * has clients check it), else 0, the default. No name (`""`): the default.
   */
  indexFor(serverName: string | undefined): number {
    if (!serverName) return 0;
    const name = normalName(serverName);
    const exact = this.#exact.get(name);
    if (exact !== undefined) return exact;
    const dot = name.indexOf(".");
    if (dot > 0) {
      const wild = this.#wildcard.get(name.slice(dot + 1));
      if (wild !== undefined) return wild;
    }
    return 0;
  }

  /** What is served, for `server.certificates`. */
  get served(): ServedCertificate[] {
    return this.entries.map((entry) => ({ ...entry.info, names: [...entry.info.names] }));
  }
}

/** The certificates a server was given: `certificates`, or the single `cert`/`key` pair. */
export function certificateSources(
  options: CertificateOptions & { certificates?: CertificateOptions[] },
): CertificateOptions[] {
  const single = options.cert !== undefined || options.key !== undefined ||
    options.certFile !== undefined || options.keyFile !== undefined;
  if (options.certificates === undefined) return [options];
  if (!Array.isArray(options.certificates)) {
    throw new TypeError("certificates must be an array of { cert, key } or { certFile, keyFile }");
  }
  if (single) {
    throw new TlsError(
      "ERR_TLS_BAD_CREDENTIALS",
      "pass either cert and key (certFile and keyFile) or certificates, not both: " +
        "list every certificate in certificates, the default first",
    );
  }
  if (options.certificates.length === 0) {
    throw new TlsError(
      "ERR_TLS_BAD_CREDENTIALS",
      `certificates is empty: list at least one { certFile, keyFile } (or { cert, key }); ${MAKE_CERTS}`,
    );
  }
  return options.certificates.map((source) => ({
    cert: source.cert,
    key: source.key,
    certFile: source.certFile,
    keyFile: source.keyFile,
  }));
}

/** Loads and checks every certificate (synchronously: a server's start). */
export function loadCertificateSet(sources: CertificateOptions[]): CertificateSet {
  return new CertificateSet(sources.map((source) => loadCertificate(source)));
}

/**
 * Loads and checks every certificate again, reading the files
 * asynchronously first; throws (a TlsError naming the file) when any one is
 * unusable, so that a caller swaps all or nothing.
 */
export async function reloadCertificateSet(sources: CertificateOptions[]): Promise<CertificateSet> {
  const texts = new Map<string, string | TlsError>();
  const paths: [string, "certificate" | "key"][] = [];
  for (const source of sources) {
    if (source.cert === undefined && source.certFile !== undefined) {
      paths.push([source.certFile, "certificate"]);
    }
    if (source.key === undefined && source.keyFile !== undefined) {
      paths.push([source.keyFile, "key"]);
    }
  }
  await Promise.all(paths.map(async ([path, what]) => {
    if (texts.has(path)) return;
    try {
      texts.set(path, await Deno.readTextFile(path));
    } catch (err) {
      texts.set(path, readError(path, what, err));
    }
  }));
  const read: Reader = (path, what) => {
    const text = texts.get(path);
    if (text === undefined) return readPem(path, what);
    if (text instanceof TlsError) throw text;
    return text;
  };
  return new CertificateSet(sources.map((source) => loadCertificate(source, read)));
}
