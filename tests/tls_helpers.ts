// Certificates outside their validity window, for the expired / not yet
// valid tests. The certs module's public API only makes certificates valid
// from now (days >= 1), so these go through its X.509 layer (certs/_x509.ts)
// with explicit dates: still made by the certs module, never by hand.
import {
  ExtKeyUsage,
  generateKeyPair,
  KeyUsage,
  privateKeyPem,
  readIssuer,
  signCertificate,
} from "../certs/_x509.ts";
import { parseHosts } from "../certs/_hosts.ts";

const DAY = 24 * 60 * 60 * 1000;

/** A server certificate for `localhost` signed by `ca`, valid from `notBefore` to `notAfter`. */
export async function certValidBetween(
  ca: { cert: string; key: string },
  notBefore: Date,
  notAfter: Date,
): Promise<{ cert: string; key: string; notBefore: Date; notAfter: Date }> {
  const issuer = await readIssuer(ca.cert, ca.key);
  const keys = await generateKeyPair("ECDSA");
  const signed = await signCertificate({
    commonName: "localhost",
    publicKey: keys.publicKey,
    issuer,
    notBefore,
    notAfter,
    ca: false,
    keyUsage: [KeyUsage.digitalSignature],
    extKeyUsage: [ExtKeyUsage.serverAuth],
    subjectAltNames: parseHosts(["localhost", "127.0.0.1"]),
  });
  return { cert: signed.pem, key: await privateKeyPem(keys.privateKey), notBefore, notAfter };
}

function wholeSeconds(ms: number): Date {
  return new Date(Math.floor(ms / 1000) * 1000);
}

/** Expired yesterday (valid for the ten days before). */
export function expiredCert(ca: { cert: string; key: string }) {
  const now = Date.now();
  return certValidBetween(ca, wholeSeconds(now - 10 * DAY), wholeSeconds(now - DAY));
}

/** Valid from tomorrow. */
export function notYetValidCert(ca: { cert: string; key: string }) {
  const now = Date.now();
  return certValidBetween(ca, wholeSeconds(now + DAY), wholeSeconds(now + 10 * DAY));
}

/**
 * A TLS client (Deno's node:tls over a raw Deno TCP connection) whose TCP
 * connection can be cut without a TLS close_notify, as a crashed or killed
 * peer does. Deno's own TLS client always sends close_notify on close.
 */
export async function cuttableTlsClient(
  port: number,
  ca: string,
): Promise<{ write(text: string): Promise<void>; cut(): void }> {
  const { default: tls } = await import("node:tls");
  const { Duplex } = await import("node:stream");
  const { Buffer } = await import("node:buffer");
  const raw = await Deno.connect({ hostname: "127.0.0.1", port });
  let reading = false;
  let closed = false;
  const duplex = new Duplex({
    read() {
      if (reading || closed) return;
      reading = true;
      const buf = new Uint8Array(16384);
      raw.read(buf).then(
        (n) => {
          reading = false;
          this.push(n === null ? null : Buffer.from(buf.buffer, 0, n));
        },
        () => {
          reading = false;
          this.push(null);
        },
      );
    },
    write(chunk, _encoding, callback) {
      raw.write(chunk).then(() => callback(), callback);
    },
  });
  const socket = tls.connect({ socket: duplex, servername: "localhost", ca: [ca] });
  socket.on("error", () => {});
  await new Promise((resolve) => socket.once("secureConnect", resolve));
  return {
    write: (text) => new Promise((resolve) => socket.write(text, () => resolve())),
    cut() {
      closed = true;
      raw.close();
      socket.destroy();
    },
  };
}
