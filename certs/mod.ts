/**
 * Development certificates: a CA and server (or client) certificates signed
 * by it, made in memory or written to a folder, for TLS servers, clients and
 * tests that never depend on hand-made files.
 *
 * Keys are ECDSA P-256 by default (RSA 2048 on request), made with WebCrypto;
 * certificates and keys come back as PEM (`-----BEGIN CERTIFICATE-----`,
 * PKCS#8 `-----BEGIN PRIVATE KEY-----`). Server certificates cover any mix of
 * DNS names and IPv4/IPv6 addresses.
 *
 * The package's `./certs` entry point is both this library and, run, the
 * `certs` program (`cli/certs.ts`, which re-exports this module):
 * `deno run -A jsr:@netkit/netkit/certs --out certs --hosts localhost,127.0.0.1,::1`.
 *
 * @example A TLS server a client trusts, all in memory
 * ```ts
 * import { createDevCerts } from "@netkit/netkit/certs";
 *
 * const { ca, cert, key } = await createDevCerts({ hosts: ["localhost", "127.0.0.1", "::1"] });
 * using listener = Deno.listenTls({ hostname: "127.0.0.1", port: 0, cert, key });
 * const accepted = listener.accept();
 * using client = await Deno.connectTls({
 *   hostname: "localhost",
 *   port: listener.addr.port,
 *   caCerts: [ca],
 * });
 * using server = await accepted;
 * // Both ends handshake; the client trusts the certificate for "localhost".
 * await Promise.all([client.handshake(), server.handshake()]);
 * ```
 *
 * @module
 */
export {
  type CertificateAndKey,
  type CertificateAuthority,
  createCA,
  type CreateCAOptions,
  createClientCert,
  type CreateClientCertOptions,
  createDevCerts,
  type CreateDevCertsOptions,
  createServerCert,
  type CreateServerCertOptions,
  DEFAULT_HOSTS,
  type DevCerts,
  type KeyAlgorithm,
} from "./create.ts";
export {
  DEV_CERT_FILES,
  writeDevCerts,
  type WriteDevCertsOptions,
  type WrittenDevCerts,
} from "./write.ts";
export {
  BadCertificateAuthorityError,
  CertFileExistsError,
  InvalidCertOptionError,
} from "./errors.ts";
