// Reading a certificate and key given as PEM strings or as file paths, with
// errors that say which one is wrong and how to get a good one. Internal.
import { TlsError } from "./errors.ts";

/** A certificate and its key: PEM strings, or paths to PEM files. */
export interface CertificateOptions {
  /** The certificate chain, PEM (`-----BEGIN CERTIFICATE-----`). Or give `certFile`. */
  cert?: string;
  /** Its private key, PEM (`-----BEGIN PRIVATE KEY-----` or EC/RSA). Or give `keyFile`. */
  key?: string;
  /** A path to read `cert` from. */
  certFile?: string;
  /** A path to read `key` from. */
  keyFile?: string;
}

const MAKE_CERTS = "make development certificates with `deno task certs` (or createDevCerts)";

function readPem(path: string, what: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch (err) {
    const why = err instanceof Deno.errors.NotFound
      ? "not found"
      : err instanceof Deno.errors.PermissionDenied
      ? "permission denied"
      : err instanceof Error
      ? err.message
      : String(err);
    throw new TlsError(
      "ERR_TLS_BAD_CREDENTIALS",
      `cannot read the ${what} file ${path}: ${why}; ${MAKE_CERTS}`,
      { cause: err },
    );
  }
}

/**
 * Resolves `cert`/`key` (or `certFile`/`keyFile`) to PEM strings.
 * `required`: a server needs them; a client may go without.
 */
export function loadCredentials(
  options: CertificateOptions,
  required: boolean,
): { cert: string; key: string } | undefined {
  const cert = options.cert ??
    (options.certFile === undefined ? undefined : readPem(options.certFile, "certificate"));
  const key = options.key ??
    (options.keyFile === undefined ? undefined : readPem(options.keyFile, "key"));
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
          ? "a key was given without its certificate"
          : "a certificate was given without its key"
      }: pass both cert and key (or certFile and keyFile)`,
    );
  }
  if (!/-----BEGIN [A-Z ]*CERTIFICATE-----/.test(cert)) {
    throw new TlsError(
      "ERR_TLS_BAD_CREDENTIALS",
      `the certificate is not PEM (no "-----BEGIN CERTIFICATE-----"): ` +
        (options.cert !== undefined && !options.cert.includes("-----")
          ? "to read it from a file, pass certFile instead of cert"
          : "pass the certificate file, e.g. certs/server.pem"),
    );
  }
  if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(key)) {
    throw new TlsError(
      "ERR_TLS_BAD_CREDENTIALS",
      `the key is not a PEM private key (no "-----BEGIN PRIVATE KEY-----"): ` +
        (options.key !== undefined && !options.key.includes("-----")
          ? "to read it from a file, pass keyFile instead of key"
          : "pass the key file, e.g. certs/server-key.pem"),
    );
  }
  return { cert, key };
}

/** Turns Deno's complaint about a certificate or key into a {@linkcode TlsError}. */
export function credentialsError(err: unknown): unknown {
  if (err instanceof TlsError) return err;
  const message = err instanceof Error ? err.message : String(err);
  if (
    /certificate|key|pem|decode|private/i.test(message) && !(err instanceof Deno.errors.AddrInUse)
  ) {
    return new TlsError(
      "ERR_TLS_BAD_CREDENTIALS",
      `the certificate or key cannot be used (${message}): check that they are PEM and belong together; ${MAKE_CERTS}`,
      { cause: err },
    );
  }
  return err;
}
