// Building, signing, encoding and reading X.509 certificates: the internals
// behind create.ts. PKI.js does the ASN.1; WebCrypto makes keys and signs.
import { asn1js, pkijs } from "./_deps.ts";
import { BadCertificateAuthorityError, InvalidCertOptionError } from "./errors.ts";
import type { SubjectAltName } from "./_hosts.ts";

/** The key types certs makes: ECDSA on P-256 (the default) or RSA 2048. */
export type KeyAlgorithm = "ECDSA" | "RSA";

// PKI.js leaves the parameters out of an RSA signature's AlgorithmIdentifier;
// RFC 4055 says they MUST be NULL, and strict verifiers (rustls' webpki, used
// by Deno) compare those bytes exactly.
class Engine extends pkijs.CryptoEngine {
  override async getSignatureParameters(
    privateKey: CryptoKey,
    hashAlgorithm?: string,
  ): Promise<pkijs.CryptoEngineSignatureParams> {
    const params = await super.getSignatureParameters(privateKey, hashAlgorithm);
    if (privateKey.algorithm.name === "RSASSA-PKCS1-v1_5") {
      params.signatureAlgorithm.algorithmParams = new asn1js.Null();
    }
    return params;
  }
}

const engine = new Engine({ name: "netkit", crypto: globalThis.crypto });

const OID = {
  commonName: "2.5.4.3",
  subjectKeyIdentifier: "2.5.29.14",
  keyUsage: "2.5.29.15",
  subjectAltName: "2.5.29.17",
  basicConstraints: "2.5.29.19",
  authorityKeyIdentifier: "2.5.29.35",
  extKeyUsage: "2.5.29.37",
  serverAuth: "1.3.6.1.5.5.7.3.1",
  clientAuth: "1.3.6.1.5.5.7.3.2",
  ecPublicKey: "1.2.840.10045.2.1",
  p256: "1.2.840.10045.3.1.7",
  p384: "1.2.840.10045.3.1.34",
  rsaEncryption: "1.2.840.113549.1.1.1",
} as const;

/** keyUsage bits, numbered as in RFC 5280 (bit 0 is the most significant). */
export const KeyUsage = {
  digitalSignature: 0,
  keyEncipherment: 2,
  keyCertSign: 5,
  cRLSign: 6,
} as const;

/** Extended key usages a leaf certificate can have. */
export const ExtKeyUsage = { serverAuth: OID.serverAuth, clientAuth: OID.clientAuth } as const;

/** Checks `algorithm` (undefined means ECDSA). */
export function keyAlgorithm(algorithm: unknown): KeyAlgorithm {
  if (algorithm === undefined) return "ECDSA";
  if (algorithm === "ECDSA" || algorithm === "RSA") return algorithm;
  throw new InvalidCertOptionError(
    "algorithm",
    `algorithm must be "ECDSA" (P-256, the default) or "RSA" (2048 bits), got ${
      JSON.stringify(algorithm)
    }`,
  );
}

/** Checks `days` (undefined means 30): a whole number from 1 to 36500. */
export function validityDays(days: unknown): number {
  if (days === undefined) return 30;
  if (typeof days !== "number" || !Number.isInteger(days) || days < 1 || days > 36500) {
    throw new InvalidCertOptionError(
      "days",
      `days must be a whole number from 1 to 36500, got ${String(days)}`,
    );
  }
  return days;
}

/** Checks a common name: 1 to 64 characters. */
export function commonName(name: unknown, option = "commonName"): string {
  if (typeof name !== "string" || name.trim() === "" || name.length > 64) {
    throw new InvalidCertOptionError(
      option,
      `${option} must be a non-empty string of at most 64 characters, got ${JSON.stringify(name)}`,
    );
  }
  return name;
}

/** A fresh extractable key pair of the given kind. */
export async function generateKeyPair(algorithm: KeyAlgorithm): Promise<CryptoKeyPair> {
  const params = algorithm === "RSA"
    ? {
      name: "RSASSA-PKCS1-v1_5",
      modulusLength: 2048,
      publicExponent: new Uint8Array([1, 0, 1]),
      hash: "SHA-256",
    }
    : { name: "ECDSA", namedCurve: "P-256" };
  return await crypto.subtle.generateKey(params, true, ["sign", "verify"]) as CryptoKeyPair;
}

/** The hash to sign with for a signing key. */
function signingHash(key: CryptoKey): string {
  const alg = key.algorithm as EcKeyAlgorithm | RsaHashedKeyAlgorithm;
  if ("namedCurve" in alg) return alg.namedCurve === "P-384" ? "SHA-384" : "SHA-256";
  return (alg as RsaHashedKeyAlgorithm).hash.name;
}

/** The validity window of a certificate that starts now. */
export function validity(days: number, now = Date.now()): { notBefore: Date; notAfter: Date } {
  // Whole seconds: X.509 times carry no fractions. An hour back for clock skew.
  const seconds = Math.floor(now / 1000) * 1000;
  return {
    notBefore: new Date(seconds - 60 * 60 * 1000),
    notAfter: new Date(seconds + days * 24 * 60 * 60 * 1000),
  };
}

/** Who signs a certificate: its name (as DER, byte for byte), key, and key id. */
export interface Issuer {
  name: pkijs.RelativeDistinguishedNames;
  privateKey: CryptoKey;
  keyId: Uint8Array;
}

/** What goes into a certificate. */
export interface CertificateSpec {
  commonName: string;
  publicKey: CryptoKey;
  notBefore: Date;
  notAfter: Date;
  /** A CA certificate (basicConstraints CA:TRUE) or a leaf. */
  ca: boolean;
  keyUsage: number[];
  extKeyUsage?: string[];
  subjectAltNames?: SubjectAltName[];
  /** The issuer; none for a self-signed certificate, which `selfKey` signs. */
  issuer?: Issuer;
  selfKey?: CryptoKey;
}

/** A signed certificate: its DER, PEM, serial number (hex) and key id. */
export interface SignedCertificate {
  der: Uint8Array;
  pem: string;
  serialNumber: string;
  keyId: Uint8Array;
  certificate: pkijs.Certificate;
}

/** Builds and signs a certificate. */
export async function signCertificate(spec: CertificateSpec): Promise<SignedCertificate> {
  const cert = new pkijs.Certificate();
  cert.version = 2; // v3
  const serial = randomSerial();
  cert.serialNumber = new asn1js.Integer({ valueHex: serial });

  const subject = nameOf(spec.commonName);
  cert.subject = subject;
  cert.issuer = spec.issuer ? spec.issuer.name : nameOf(spec.commonName);
  cert.notBefore = timeOf(spec.notBefore);
  cert.notAfter = timeOf(spec.notAfter);
  await cert.subjectPublicKeyInfo.importKey(spec.publicKey, engine);

  const keyId = new Uint8Array(
    await crypto.subtle.digest(
      "SHA-1",
      cert.subjectPublicKeyInfo.subjectPublicKey.valueBlock.valueHexView as Uint8Array<ArrayBuffer>,
    ),
  );

  const extensions: pkijs.Extension[] = [];
  const add = (extnID: string, critical: boolean, value: { toBER(): ArrayBuffer }) =>
    extensions.push(new pkijs.Extension({ extnID, critical, extnValue: value.toBER() }));

  add(OID.basicConstraints, spec.ca, new pkijs.BasicConstraints({ cA: spec.ca }).toSchema());
  add(OID.keyUsage, true, keyUsageBits(spec.keyUsage));
  if (spec.extKeyUsage?.length) {
    add(
      OID.extKeyUsage,
      false,
      new pkijs.ExtKeyUsage({ keyPurposes: spec.extKeyUsage }).toSchema(),
    );
  }
  add(OID.subjectKeyIdentifier, false, new asn1js.OctetString({ valueHex: keyId }));
  if (spec.issuer) {
    add(
      OID.authorityKeyIdentifier,
      false,
      new pkijs.AuthorityKeyIdentifier({
        keyIdentifier: new asn1js.OctetString({ valueHex: spec.issuer.keyId }),
      }).toSchema(),
    );
  }
  if (spec.subjectAltNames?.length) {
    const altNames = spec.subjectAltNames.map((san) =>
      san.type === "dns"
        ? new pkijs.GeneralName({ type: 2, value: san.name })
        : new pkijs.GeneralName({ type: 7, value: new asn1js.OctetString({ valueHex: san.bytes }) })
    );
    add(OID.subjectAltName, false, new pkijs.GeneralNames({ names: altNames }).toSchema());
  }
  cert.extensions = extensions;

  const signingKey = spec.issuer?.privateKey ?? spec.selfKey;
  if (!signingKey) throw new TypeError("signCertificate: no issuer and no selfKey");
  await cert.sign(signingKey, signingHash(signingKey), engine);

  const der = new Uint8Array(cert.toSchema(true).toBER());
  return {
    der,
    pem: toPem("CERTIFICATE", der),
    serialNumber: toHex(serial),
    keyId,
    // Re-read from DER so the subject keeps its exact bytes when used as an issuer.
    certificate: pkijs.Certificate.fromBER(der),
  };
}

/** A private key as PKCS#8 PEM ("-----BEGIN PRIVATE KEY-----"). */
export async function privateKeyPem(key: CryptoKey): Promise<string> {
  return toPem("PRIVATE KEY", new Uint8Array(await crypto.subtle.exportKey("pkcs8", key)));
}

/** PEM armour around DER bytes, 64 base64 characters a line. */
export function toPem(label: string, der: Uint8Array): string {
  let binary = "";
  for (const byte of der) binary += String.fromCharCode(byte);
  const lines = btoa(binary).match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}

/** The DER inside the first PEM block labelled `label`, or null. */
export function fromPem(label: string, pem: string): Uint8Array<ArrayBuffer> | null {
  const match = new RegExp(
    `-----BEGIN ${label}-----([A-Za-z0-9+/=\\s]+)-----END ${label}-----`,
  ).exec(pem);
  if (!match) return null;
  try {
    return Uint8Array.from(atob(match[1].replace(/\s+/g, "")), (c) => c.charCodeAt(0));
  } catch {
    return null;
  }
}

/**
 * Reads a CA from its PEM certificate and PKCS#8 PEM key and checks it can
 * issue: a CA certificate whose key signs what its public key verifies.
 */
export async function readIssuer(certPem: string, keyPem: string): Promise<Issuer> {
  const certDer = typeof certPem === "string" ? fromPem("CERTIFICATE", certPem) : null;
  if (!certDer) {
    throw new BadCertificateAuthorityError(
      'the CA certificate is not PEM ("-----BEGIN CERTIFICATE-----"): pass the ca.pem that ' +
        "createCA or writeDevCerts made",
    );
  }
  let cert: pkijs.Certificate;
  try {
    cert = pkijs.Certificate.fromBER(certDer);
  } catch (err) {
    throw new BadCertificateAuthorityError(
      "the CA certificate does not parse as X.509: pass the ca.pem that createCA or " +
        "writeDevCerts made",
      { cause: err },
    );
  }
  const constraints = cert.extensions?.find((e) => e.extnID === OID.basicConstraints)
    ?.parsedValue;
  if (!(constraints instanceof pkijs.BasicConstraints) || !constraints.cA) {
    throw new BadCertificateAuthorityError(
      "the CA certificate is not a CA (no basicConstraints CA:TRUE): make one with createCA",
    );
  }

  const spki = cert.subjectPublicKeyInfo;
  const algorithmId = spki.algorithm.algorithmId;
  let importParams: EcKeyImportParams | RsaHashedImportParams;
  let verifyParams: EcdsaParams | Algorithm;
  if (algorithmId === OID.ecPublicKey) {
    const curveId = spki.algorithm.algorithmParams instanceof asn1js.ObjectIdentifier
      ? spki.algorithm.algorithmParams.valueBlock.toString()
      : "";
    const namedCurve = curveId === OID.p256 ? "P-256" : curveId === OID.p384 ? "P-384" : null;
    if (!namedCurve) {
      throw new BadCertificateAuthorityError(
        `the CA's EC key is on curve ${curveId || "(unnamed)"}: only P-256 and P-384 are ` +
          "supported, make a new CA with createCA",
      );
    }
    importParams = { name: "ECDSA", namedCurve };
    verifyParams = { name: "ECDSA", hash: namedCurve === "P-384" ? "SHA-384" : "SHA-256" };
  } else if (algorithmId === OID.rsaEncryption) {
    importParams = { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" };
    verifyParams = { name: "RSASSA-PKCS1-v1_5" };
  } else {
    throw new BadCertificateAuthorityError(
      `the CA's key type (${algorithmId}) is not supported: use an ECDSA or RSA CA, e.g. one ` +
        "from createCA",
    );
  }

  const keyDer = typeof keyPem === "string" ? fromPem("PRIVATE KEY", keyPem) : null;
  if (!keyDer) {
    const hint = typeof keyPem === "string" && /-----BEGIN (EC|RSA) PRIVATE KEY-----/.test(keyPem)
      ? ": convert it with `openssl pkcs8 -topk8 -nocrypt -in ca-key.pem`"
      : "";
    throw new BadCertificateAuthorityError(
      `the CA key is not a PKCS#8 PEM key ("-----BEGIN PRIVATE KEY-----")${hint}`,
    );
  }
  let privateKey: CryptoKey;
  let publicKey: CryptoKey;
  try {
    privateKey = await crypto.subtle.importKey("pkcs8", keyDer, importParams, false, ["sign"]);
    publicKey = await crypto.subtle.importKey(
      "spki",
      spki.toSchema().toBER(),
      importParams,
      false,
      ["verify"],
    );
  } catch (err) {
    throw new BadCertificateAuthorityError(
      `the CA key does not import as a ${importParams.name} key matching the CA certificate: ` +
        "pass the ca-key.pem made with this ca.pem",
      { cause: err },
    );
  }
  const probe = crypto.getRandomValues(new Uint8Array(32));
  const signature = await crypto.subtle.sign(verifyParams, privateKey, probe);
  if (!await crypto.subtle.verify(verifyParams, publicKey, signature, probe)) {
    throw new BadCertificateAuthorityError(
      "the CA key does not match the CA certificate: pass the ca-key.pem made with this ca.pem",
    );
  }

  const skid = cert.extensions?.find((e) => e.extnID === OID.subjectKeyIdentifier);
  const keyId = skid
    ? new Uint8Array(
      (asn1js.fromBER(skid.extnValue.valueBlock.valueHexView).result as asn1js.OctetString)
        .valueBlock.valueHexView,
    )
    : new Uint8Array(await cert.getKeyHash("SHA-1", engine));
  return { name: cert.subject, privateKey, keyId };
}

function nameOf(commonName: string): pkijs.RelativeDistinguishedNames {
  return new pkijs.RelativeDistinguishedNames({
    typesAndValues: [
      new pkijs.AttributeTypeAndValue({
        type: OID.commonName,
        value: new asn1js.Utf8String({ value: commonName }),
      }),
    ],
  });
}

function timeOf(date: Date): pkijs.Time {
  // RFC 5280: UTCTime through 2049, GeneralizedTime from 2050.
  return new pkijs.Time({ type: date.getUTCFullYear() < 2050 ? 0 : 1, value: date });
}

/** A KeyUsage BIT STRING in DER: trailing zero bits dropped and counted as unused. */
function keyUsageBits(bits: number[]): asn1js.BitString {
  const highest = Math.max(...bits);
  const bytes = new Uint8Array(Math.floor(highest / 8) + 1);
  for (const bit of bits) bytes[bit >> 3] |= 0x80 >> (bit & 7);
  return new asn1js.BitString({ valueHex: bytes, unusedBits: 7 - (highest & 7) });
}

/** 16 random bytes as a positive DER INTEGER with no leading zero byte. */
function randomSerial(): Uint8Array {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[0] = (bytes[0] & 0x7f) | 0x40;
  return bytes;
}

function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
