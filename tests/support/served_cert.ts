/**
 * Which certificate a TLS server serves for a name, as an independent client
 * (node:tls, not verifying) sees it: the SNI tests and the reload tests ask
 * it after every change.
 *
 * @module
 */
import tls from "node:tls";

/**
 * The serial number (lower-case hex) of the certificate a node:tls client is
 * served by 127.0.0.1:`port` when it asks for `servername` (no SNI without
 * one). Rejects as the handshake does. The connection is closed either way.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { createCA, createServerCert } from "../../certs/mod.ts";
 * import { servedSerial } from "./served_cert.ts";
 *
 * const { cert, key, serialNumber } = await createServerCert(await createCA(), {
 *   hosts: ["localhost"],
 * });
 * using listener = Deno.listenTls({ hostname: "127.0.0.1", port: 0, cert, key });
 * const accepted = listener.accept().then(async (conn) => {
 *   await conn.handshake().catch(() => {});
 *   conn.close();
 * });
 * assert.equal(await servedSerial(listener.addr.port, "localhost"), serialNumber);
 * await accepted;
 * ```
 */
export async function servedSerial(port: number, servername?: string): Promise<string> {
  const { promise, resolve, reject } = Promise.withResolvers<string>();
  const socket = tls.connect(
    { host: "127.0.0.1", port, servername, rejectUnauthorized: false },
    () => resolve(socket.getPeerCertificate().serialNumber.toLowerCase()),
  );
  socket.on("error", reject);
  const closed = new Promise((done) => socket.once("close", done));
  try {
    return await promise;
  } finally {
    socket.destroy();
    await closed;
  }
}
