/**
 * Making development certificates in memory: a CA, server and client
 * certificates signed by it, or both at once with {@linkcode createDevCerts}.
 *
 * Everything comes back as PEM strings: certificates as
 * `-----BEGIN CERTIFICATE-----`, private keys as PKCS#8
 * `-----BEGIN PRIVATE KEY-----`, ready for `Deno.listenTls`,
 * `Deno.connectTls({ caCerts })`, Node's `tls` or any other TLS stack.
 *
 * @module
 */
import { parseHosts } from "./_hosts.ts";
import {
  commonName as checkCommonName,
  ExtKeyUsage,
  generateKeyPair,
  type Issuer,
  type KeyAlgorithm,
  keyAlgorithm,
  KeyUsage,
  privateKeyPem,
  readIssuer,
  signCertificate,
  validity,
  validityDays,
} from "./_x509.ts";

export type { KeyAlgorithm } from "./_x509.ts";

/** A certificate and its private key, as PEM, with the facts worth showing. */
export interface CertificateAndKey {
  /** The certificate, PEM (`-----BEGIN CERTIFICATE-----`). */
  cert: string;
  /** Its private key, PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`). Keep it private. */
  key: string;
  /** The serial number, lower-case hex. */
  serialNumber: string;
  /** The start of validity: an hour before the certificate was made, for clock skew. */
  notBefore: Date;
  /** The end of validity. */
  notAfter: Date;
}

/**
 * A certificate authority: a self-signed CA certificate and its key. Trust
 * `cert` in clients (`caCerts: [ca.cert]`); hand the whole object to
 * {@linkcode createServerCert} or {@linkcode createClientCert} to issue
 * certificates. A CA read back from files (`{ cert, key }` PEM strings) works
 * too.
 */
export type CertificateAuthority = CertificateAndKey;

/** Options for {@linkcode createCA}. */
export interface CreateCAOptions {
  /** The CA's subject common name. Default `"netkit development CA"`. */
  commonName?: string;
  /** Days of validity, a whole number from 1 to 36500. Default `30`. */
  days?: number;
  /** The key type: `"ECDSA"` (P-256) or `"RSA"` (2048 bits). Default `"ECDSA"`. */
  algorithm?: KeyAlgorithm;
}

/** Options for {@linkcode createServerCert}. */
export interface CreateServerCertOptions {
  /**
   * The DNS names and IP addresses (IPv4 or IPv6, e.g. `"::1"`) the server
   * answers to; each becomes a subjectAltName entry. At least one; no default.
   * A leading `*.` label makes a wildcard name.
   */
  hosts: string[];
  /** Days of validity, a whole number from 1 to 36500. Default `30`. */
  days?: number;
  /** The subject common name (informational: clients match `hosts`). Default the first host. */
  commonName?: string;
  /** The key type: `"ECDSA"` (P-256) or `"RSA"` (2048 bits). Default `"ECDSA"`. */
  algorithm?: KeyAlgorithm;
}

/** Options for {@linkcode createClientCert}. */
export interface CreateClientCertOptions {
  /** Who the client is: the subject common name a server sees. Required. */
  commonName: string;
  /** Days of validity, a whole number from 1 to 36500. Default `30`. */
  days?: number;
  /** The key type: `"ECDSA"` (P-256) or `"RSA"` (2048 bits). Default `"ECDSA"`. */
  algorithm?: KeyAlgorithm;
}

/** Options for {@linkcode createDevCerts}. */
export interface CreateDevCertsOptions {
  /** The DNS names and IP addresses the server certificate covers. Default `["localhost", "127.0.0.1", "::1"]`. */
  hosts?: string[];
  /** Days of validity of both certificates, a whole number from 1 to 36500. Default `30`. */
  days?: number;
  /** The key type of both: `"ECDSA"` (P-256) or `"RSA"` (2048 bits). Default `"ECDSA"`. */
  algorithm?: KeyAlgorithm;
}

/** What {@linkcode createDevCerts} makes: a CA and a server certificate it signed, as PEM. */
export interface DevCerts {
  /** The CA certificate: what clients trust (`caCerts: [ca]`). */
  ca: string;
  /** The CA's private key, PKCS#8 PEM, to issue more certificates. */
  caKey: string;
  /** The server certificate. */
  cert: string;
  /** The server's private key, PKCS#8 PEM. */
  key: string;
  /** The hosts the server certificate covers, duplicates dropped. */
  hosts: string[];
  /** When the server certificate expires. */
  notAfter: Date;
}

/**
 * The hosts a development certificate covers unless told otherwise: the
 * loopback name and addresses, `["localhost", "127.0.0.1", "::1"]`.
 *
 * @example
 * ```ts
 * import { createDevCerts, DEFAULT_HOSTS } from "@netkit/netkit/certs";
 * import assert from "node:assert/strict";
 *
 * const certs = await createDevCerts({ hosts: [...DEFAULT_HOSTS, "app.localhost"] });
 * assert.deepEqual(certs.hosts, ["localhost", "127.0.0.1", "::1", "app.localhost"]);
 * ```
 */
export const DEFAULT_HOSTS: readonly string[] = Object.freeze(["localhost", "127.0.0.1", "::1"]);

// CAs this process made or read, so issuing many certificates reads a CA once.
const issuers = new WeakMap<object, { cert: string; key: string; issuer: Promise<Issuer> }>();

function issuerOf(ca: { cert: string; key: string }): Promise<Issuer> {
  const cached = issuers.get(ca);
  if (cached && cached.cert === ca.cert && cached.key === ca.key) return cached.issuer;
  const issuer = readIssuer(ca?.cert, ca?.key);
  issuers.set(ca, { cert: ca.cert, key: ca.key, issuer });
  return issuer;
}

/**
 * Makes a development certificate authority: a self-signed CA certificate
 * (basicConstraints CA:TRUE critical; keyUsage keyCertSign and cRLSign,
 * critical; a subjectKeyIdentifier) and its private key.
 *
 * @param options The CA's name, lifetime and key type; all optional.
 * @returns The CA certificate and key as PEM.
 * @throws {InvalidCertOptionError} An option is out of range.
 *
 * @example A CA that signs a server certificate
 * ```ts
 * import { createCA, createServerCert } from "@netkit/netkit/certs";
 * import assert from "node:assert/strict";
 *
 * const ca = await createCA({ commonName: "my dev CA", days: 7 });
 * const server = await createServerCert(ca, { hosts: ["localhost"] });
 * assert.match(ca.cert, /^-----BEGIN CERTIFICATE-----/);
 * assert.match(server.key, /^-----BEGIN PRIVATE KEY-----/);
 * ```
 */
export async function createCA(options: CreateCAOptions = {}): Promise<CertificateAuthority> {
  const name = checkCommonName(options.commonName ?? "netkit development CA");
  const days = validityDays(options.days);
  const algorithm = keyAlgorithm(options.algorithm);
  const keys = await generateKeyPair(algorithm);
  const { notBefore, notAfter } = validity(days);
  const signed = await signCertificate({
    commonName: name,
    publicKey: keys.publicKey,
    selfKey: keys.privateKey,
    notBefore,
    notAfter,
    ca: true,
    keyUsage: [KeyUsage.keyCertSign, KeyUsage.cRLSign],
  });
  const ca: CertificateAuthority = {
    cert: signed.pem,
    key: await privateKeyPem(keys.privateKey),
    serialNumber: signed.serialNumber,
    notBefore,
    notAfter,
  };
  issuers.set(ca, {
    cert: ca.cert,
    key: ca.key,
    issuer: Promise.resolve({
      name: signed.certificate.subject,
      privateKey: keys.privateKey,
      keyId: signed.keyId,
    }),
  });
  return ca;
}

/**
 * Makes a TLS server certificate signed by `ca`, for the DNS names and IP
 * addresses in `hosts` (subjectAltName), with keyUsage digitalSignature (and
 * keyEncipherment for RSA), extendedKeyUsage serverAuth, basicConstraints
 * CA:FALSE, and subject and authority key identifiers.
 *
 * @param ca The CA that signs: from {@linkcode createCA}, or `{ cert, key }` PEM read from files.
 * @param options The hosts (required), lifetime, name and key type.
 * @returns The server certificate and key as PEM.
 * @throws {InvalidCertOptionError} No hosts, a bad host, or an option out of range.
 * @throws {BadCertificateAuthorityError} `ca` cannot issue certificates.
 *
 * @example A TLS server and client that trust each other
 * ```ts
 * import { createCA, createServerCert } from "@netkit/netkit/certs";
 * import assert from "node:assert/strict";
 *
 * const ca = await createCA();
 * const { cert, key } = await createServerCert(ca, { hosts: ["localhost", "127.0.0.1"] });
 * using listener = Deno.listenTls({ hostname: "127.0.0.1", port: 0, cert, key });
 * const accepted = listener.accept();
 * using client = await Deno.connectTls({
 *   hostname: "localhost",
 *   port: listener.addr.port,
 *   caCerts: [ca.cert],
 * });
 * using server = await accepted;
 * const [handshake] = await Promise.all([client.handshake(), server.handshake()]);
 * assert.equal(handshake.alpnProtocol, null); // the handshake worked; no ALPN was asked for
 * ```
 */
export async function createServerCert(
  ca: CertificateAuthority | { cert: string; key: string },
  options: CreateServerCertOptions,
): Promise<CertificateAndKey> {
  const subjectAltNames = parseHosts(options?.hosts);
  const days = validityDays(options.days);
  const algorithm = keyAlgorithm(options.algorithm);
  const first = subjectAltNames[0];
  const name = checkCommonName(
    options.commonName ?? (first.type === "dns" ? first.name : first.address).slice(0, 64),
  );
  return await issue(ca, {
    commonName: name,
    days,
    algorithm,
    extKeyUsage: [ExtKeyUsage.serverAuth],
    subjectAltNames,
  });
}

/**
 * Makes a TLS client certificate signed by `ca`, for mutual TLS: a server
 * that trusts `ca` accepts it. extendedKeyUsage clientAuth, keyUsage
 * digitalSignature (and keyEncipherment for RSA), basicConstraints CA:FALSE.
 *
 * @param ca The CA that signs: from {@linkcode createCA}, or `{ cert, key }` PEM read from files.
 * @param options The client's name (required), lifetime and key type.
 * @returns The client certificate and key as PEM.
 * @throws {InvalidCertOptionError} A missing name or an option out of range.
 * @throws {BadCertificateAuthorityError} `ca` cannot issue certificates.
 *
 * @example
 * ```ts
 * import { createCA, createClientCert } from "@netkit/netkit/certs";
 * import assert from "node:assert/strict";
 *
 * const ca = await createCA();
 * const client = await createClientCert(ca, { commonName: "alice" });
 * // Hand client.cert and client.key to a TLS client; a server checks them against ca.cert.
 * assert.match(client.cert, /^-----BEGIN CERTIFICATE-----/);
 * ```
 */
export async function createClientCert(
  ca: CertificateAuthority | { cert: string; key: string },
  options: CreateClientCertOptions,
): Promise<CertificateAndKey> {
  const name = checkCommonName(options?.commonName);
  return await issue(ca, {
    commonName: name,
    days: validityDays(options.days),
    algorithm: keyAlgorithm(options.algorithm),
    extKeyUsage: [ExtKeyUsage.clientAuth],
  });
}

/**
 * Makes a CA and a server certificate signed by it, in memory: what a test
 * needs for a TLS server and a client that trusts it.
 *
 * @param options The hosts, lifetime and key type; all optional.
 * @returns `{ ca, caKey, cert, key, hosts, notAfter }`, the certificates and keys as PEM.
 * @throws {InvalidCertOptionError} No hosts, a bad host, or an option out of range.
 *
 * @example A TLS round trip on 127.0.0.1
 * ```ts
 * import { createDevCerts } from "@netkit/netkit/certs";
 * import assert from "node:assert/strict";
 *
 * const { ca, cert, key } = await createDevCerts();
 * using listener = Deno.listenTls({ hostname: "127.0.0.1", port: 0, cert, key });
 * const accepted = listener.accept();
 * using client = await Deno.connectTls({
 *   hostname: "127.0.0.1",
 *   port: listener.addr.port,
 *   caCerts: [ca],
 * });
 * using server = await accepted;
 * const buf = new Uint8Array(2);
 * await Promise.all([client.write(new TextEncoder().encode("hi")), server.read(buf)]);
 * assert.equal(new TextDecoder().decode(buf), "hi");
 * ```
 */
export async function createDevCerts(options: CreateDevCertsOptions = {}): Promise<DevCerts> {
  const hosts = options.hosts ?? [...DEFAULT_HOSTS];
  // Check everything before spending time on keys.
  const names = parseHosts(hosts);
  const days = validityDays(options.days);
  const algorithm = keyAlgorithm(options.algorithm);
  const ca = await createCA({ days, algorithm });
  const server = await createServerCert(ca, { hosts, days, algorithm });
  return {
    ca: ca.cert,
    caKey: ca.key,
    cert: server.cert,
    key: server.key,
    hosts: names.map((san) => san.type === "dns" ? san.name : san.address),
    notAfter: server.notAfter,
  };
}

async function issue(
  ca: { cert: string; key: string },
  leaf: {
    commonName: string;
    days: number;
    algorithm: KeyAlgorithm;
    extKeyUsage: string[];
    subjectAltNames?: ReturnType<typeof parseHosts>;
  },
): Promise<CertificateAndKey> {
  const issuer = await issuerOf(ca);
  const keys = await generateKeyPair(leaf.algorithm);
  const { notBefore, notAfter } = validity(leaf.days);
  const keyUsage: number[] = [KeyUsage.digitalSignature];
  if (leaf.algorithm === "RSA") keyUsage.push(KeyUsage.keyEncipherment);
  const signed = await signCertificate({
    commonName: leaf.commonName,
    publicKey: keys.publicKey,
    issuer,
    notBefore,
    notAfter,
    ca: false,
    keyUsage,
    extKeyUsage: leaf.extKeyUsage,
    subjectAltNames: leaf.subjectAltNames,
  });
  return {
    cert: signed.pem,
    key: await privateKeyPem(keys.privateKey),
    serialNumber: signed.serialNumber,
    notBefore,
    notAfter,
  };
}
