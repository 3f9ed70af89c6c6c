// Reloading a running TLS server's certificates: files replaced on disk,
// reloadCertificates() called, new handshakes see the new certificate while
// open connections go on; a broken file (garbage, a key of another
// certificate, a missing file) is refused as a whole and the old
// certificates stay in service.
import assert from "node:assert/strict";
import { echo } from "../mod.ts";
import { type CertificateAndKey, createCA, createServerCert } from "../certs/mod.ts";
import {
  type CertificateReloadEvent,
  connect,
  listen,
  serve,
  type TlsConn,
  TlsError,
} from "../tls/mod.ts";
import { readLine, writeAll } from "../io/mod.ts";
import { servedSerial } from "./support/served_cert.ts";

const ca = await createCA();

/** A temporary folder with a.pem/a-key.pem and b.pem/b-key.pem, removed on dispose. */
async function certDir(a: CertificateAndKey, b: CertificateAndKey) {
  const dir = await Deno.makeTempDir({ prefix: "netkit-reload-" });
  const files = {
    aCert: `${dir}/a.pem`,
    aKey: `${dir}/a-key.pem`,
    bCert: `${dir}/b.pem`,
    bKey: `${dir}/b-key.pem`,
  };
  const write = async (which: "a" | "b", pair: CertificateAndKey) => {
    await Deno.writeTextFile(which === "a" ? files.aCert : files.bCert, pair.cert);
    await Deno.writeTextFile(which === "a" ? files.aKey : files.bKey, pair.key);
  };
  await write("a", a);
  await write("b", b);
  return {
    files,
    write,
    certificates: [
      { certFile: files.aCert, keyFile: files.aKey },
      { certFile: files.bCert, keyFile: files.bKey },
    ],
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }),
  };
}

const quiet = { onEvent: () => {} };

function badCredentials(file: string, message: RegExp) {
  return (err: unknown) => {
    assert.ok(err instanceof TlsError, String(err));
    assert.equal(err.code, "ERR_TLS_BAD_CREDENTIALS");
    assert.equal(err.file, file);
    assert.match(err.message, message);
    return true;
  };
}

Deno.test("reloadCertificates() serves a replaced certificate to new connections; one opened before goes on", async () => {
  const a1 = await createServerCert(ca, { hosts: ["a.test", "127.0.0.1"] });
  const b = await createServerCert(ca, { hosts: ["b.test"] });
  await using dir = await certDir(a1, b);
  await using server = serve({ port: 0, certificates: dir.certificates, ...quiet }, echo);
  const port = server.addr.port;
  await using before = await connect({ hostname: "127.0.0.1", port, caCerts: [ca.cert] });
  await writeAll(before.writable, "before\n");
  assert.equal(await readLine(before.readable), "before");

  const a2 = await createServerCert(ca, { hosts: ["a.test", "127.0.0.1"] });
  await dir.write("a", a2);
  const reload = await server.reloadCertificates();
  assert.equal(reload.changed, 1);
  assert.equal(reload.certificates[0].serialNumber.toLowerCase(), a2.serialNumber);
  assert.equal(reload.certificates[0].certFile, dir.files.aCert);
  assert.equal(server.certificates[0].serialNumber.toLowerCase(), a2.serialNumber);

  assert.equal(await servedSerial(port), a2.serialNumber, "no SNI: the new default");
  assert.equal(await servedSerial(port, "a.test"), a2.serialNumber);
  assert.equal(await servedSerial(port, "b.test"), b.serialNumber, "b is unchanged");
  // The connection made before the reload is untouched.
  await writeAll(before.writable, "still here\n");
  assert.equal(await readLine(before.readable), "still here");
});

Deno.test("a reload can change which names a certificate covers", async () => {
  const a = await createServerCert(ca, { hosts: ["a.test"] });
  const b1 = await createServerCert(ca, { hosts: ["b.test"] });
  await using dir = await certDir(a, b1);
  await using server = serve({ port: 0, certificates: dir.certificates, ...quiet }, echo);
  assert.equal(await servedSerial(server.addr.port, "new.test"), a.serialNumber);
  const b2 = await createServerCert(ca, { hosts: ["b.test", "new.test"] });
  await dir.write("b", b2);
  const { certificates } = await server.reloadCertificates();
  assert.deepEqual(certificates[1].names, ["b.test", "new.test"]);
  assert.equal(await servedSerial(server.addr.port, "new.test"), b2.serialNumber);
  await using conn = await connect({
    hostname: "127.0.0.1",
    port: server.addr.port,
    serverName: "new.test",
    caCerts: [ca.cert],
  });
  await writeAll(conn.writable, "new\n");
  assert.equal(await readLine(conn.readable), "new");
});

Deno.test("a garbage certificate file is refused: the error names it and the old certificate stays in service", async () => {
  const a = await createServerCert(ca, { hosts: ["a.test"] });
  const b = await createServerCert(ca, { hosts: ["b.test"] });
  await using dir = await certDir(a, b);
  await using server = serve({ port: 0, certificates: dir.certificates, ...quiet }, echo);
  await Deno.writeTextFile(dir.files.bCert, "this is not a certificate\n");
  await assert.rejects(
    server.reloadCertificates(),
    badCredentials(dir.files.bCert, /the certificate file .*b\.pem is not PEM/),
  );
  // PEM armour around garbage is refused too.
  await Deno.writeTextFile(
    dir.files.bCert,
    "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
  );
  await assert.rejects(
    server.reloadCertificates(),
    badCredentials(dir.files.bCert, /b\.pem holds no certificate that can be parsed/),
  );
  assert.equal(await servedSerial(server.addr.port, "b.test"), b.serialNumber);
  assert.equal(server.certificates[1].serialNumber.toLowerCase(), b.serialNumber);
});

Deno.test("a key that does not belong to its certificate (a pair half replaced) is refused, naming the key file", async () => {
  const a = await createServerCert(ca, { hosts: ["a.test"] });
  const b1 = await createServerCert(ca, { hosts: ["b.test"] });
  await using dir = await certDir(a, b1);
  await using server = serve({ port: 0, certificates: dir.certificates, ...quiet }, echo);
  // The new certificate is written, its key not yet.
  const b2 = await createServerCert(ca, { hosts: ["b.test"] });
  await Deno.writeTextFile(dir.files.bCert, b2.cert);
  await assert.rejects(
    server.reloadCertificates(),
    badCredentials(dir.files.bKey, /b-key\.pem does not belong to the certificate file .*b\.pem/),
  );
  assert.equal(await servedSerial(server.addr.port, "b.test"), b1.serialNumber);
  // Once the key is there too, the reload goes through.
  await Deno.writeTextFile(dir.files.bKey, b2.key);
  assert.equal((await server.reloadCertificates()).changed, 1);
  assert.equal(await servedSerial(server.addr.port, "b.test"), b2.serialNumber);
});

Deno.test("a missing file is refused, naming it", async () => {
  const a = await createServerCert(ca, { hosts: ["a.test"] });
  const b = await createServerCert(ca, { hosts: ["b.test"] });
  await using dir = await certDir(a, b);
  await using server = serve({ port: 0, certificates: dir.certificates, ...quiet }, echo);
  await Deno.remove(dir.files.aKey);
  await assert.rejects(
    server.reloadCertificates(),
    badCredentials(dir.files.aKey, /cannot read the key file .*a-key\.pem: not found/),
  );
  assert.equal(await servedSerial(server.addr.port), a.serialNumber);
});

Deno.test("a reload is all or nothing: one broken file keeps every old certificate", async () => {
  const a1 = await createServerCert(ca, { hosts: ["a.test"] });
  const b = await createServerCert(ca, { hosts: ["b.test"] });
  await using dir = await certDir(a1, b);
  await using server = serve({ port: 0, certificates: dir.certificates, ...quiet }, echo);
  const a2 = await createServerCert(ca, { hosts: ["a.test"] });
  await dir.write("a", a2); // good
  await Deno.writeTextFile(dir.files.bKey, "garbage"); // bad
  await assert.rejects(server.reloadCertificates(), badCredentials(dir.files.bKey, /b-key\.pem/));
  assert.equal(await servedSerial(server.addr.port, "a.test"), a1.serialNumber);
  assert.equal(server.certificates[0].serialNumber.toLowerCase(), a1.serialNumber);
});

Deno.test("onCertificateReload hears every reload: reloaded (with what changed) and kept (with why)", async () => {
  const a = await createServerCert(ca, { hosts: ["a.test"] });
  const b = await createServerCert(ca, { hosts: ["b.test"] });
  await using dir = await certDir(a, b);
  const events: CertificateReloadEvent[] = [];
  await using server = serve({
    port: 0,
    certificates: dir.certificates,
    onCertificateReload: (event) => events.push(event),
    ...quiet,
  }, echo);
  await server.reloadCertificates();
  await Deno.writeTextFile(dir.files.aCert, "garbage");
  await server.reloadCertificates().catch(() => {});
  assert.equal(events.length, 2);
  assert.equal(events[0].type, "reloaded");
  assert.equal(events[0].type === "reloaded" && events[0].changed, 0, "same files: none changed");
  assert.equal(events[1].type, "kept");
  assert.equal(events[1].type === "kept" && events[1].error.file, dir.files.aCert);
  assert.equal(events[1].certificates[0].serialNumber.toLowerCase(), a.serialNumber);
});

Deno.test("reloads run one at a time, in call order: the second finds nothing more to change", async () => {
  const a1 = await createServerCert(ca, { hosts: ["a.test"] });
  const b = await createServerCert(ca, { hosts: ["b.test"] });
  await using dir = await certDir(a1, b);
  await using server = serve({ port: 0, certificates: dir.certificates, ...quiet }, echo);
  const a2 = await createServerCert(ca, { hosts: ["a.test"] });
  await dir.write("a", a2);
  const results = await Promise.all([server.reloadCertificates(), server.reloadCertificates()]);
  assert.deepEqual(results.map((r) => r.changed), [1, 0]);
  assert.equal(await servedSerial(server.addr.port), a2.serialNumber);
});

Deno.test("certificates given as PEM strings reload unchanged", async () => {
  const a = await createServerCert(ca, { hosts: ["a.test"] });
  await using server = serve({ port: 0, cert: a.cert, key: a.key, ...quiet }, echo);
  const reload = await server.reloadCertificates();
  assert.equal(reload.changed, 0);
  assert.equal(reload.certificates[0].serialNumber.toLowerCase(), a.serialNumber);
});

Deno.test("a single certFile/keyFile pair reloads like a list of one", async () => {
  const a1 = await createServerCert(ca, { hosts: ["localhost"] });
  const b = await createServerCert(ca, { hosts: ["b.test"] });
  await using dir = await certDir(a1, b);
  await using server = serve(
    { port: 0, certFile: dir.files.aCert, keyFile: dir.files.aKey, ...quiet },
    async (conn: TlsConn) => {
      await writeAll(conn.writable, "hi\n");
      await conn.close();
    },
  );
  const a2 = await createServerCert(ca, { hosts: ["localhost"] });
  await dir.write("a", a2);
  assert.equal((await server.reloadCertificates()).changed, 1);
  assert.equal(await servedSerial(server.addr.port), a2.serialNumber);
});

Deno.test("TlsListener.reloadCertificates() swaps the certificate for the next handshakes", async () => {
  const a1 = await createServerCert(ca, { hosts: ["a.test"] });
  const b = await createServerCert(ca, { hosts: ["b.test"] });
  await using dir = await certDir(a1, b);
  await using listener = listen({ port: 0, certificates: dir.certificates });
  const port = (listener.addr as { port: number }).port;
  const a2 = await createServerCert(ca, { hosts: ["a.test"] });
  await dir.write("a", a2);
  await listener.reloadCertificates();
  const [accepted, serial] = await Promise.all([listener.accept(), servedSerial(port, "a.test")]);
  await accepted.close();
  assert.equal(serial, a2.serialNumber);
  assert.equal(listener.certificates[0].serialNumber.toLowerCase(), a2.serialNumber);
});

Deno.test('engine "deno" cannot reload: it rejects saying so and keeps serving', async () => {
  const a = await createServerCert(ca, { hosts: ["localhost"] });
  const b = await createServerCert(ca, { hosts: ["b.test"] });
  await using dir = await certDir(a, b);
  const events: CertificateReloadEvent[] = [];
  await using server = serve({
    port: 0,
    engine: "deno",
    certFile: dir.files.aCert,
    keyFile: dir.files.aKey,
    onCertificateReload: (event) => events.push(event),
    ...quiet,
  }, echo);
  await assert.rejects(
    server.reloadCertificates(),
    (err) =>
      err instanceof TlsError && err.code === "ERR_TLS_ENGINE_UNSUPPORTED" &&
      /needs the "node" TLS engine/.test(err.message),
  );
  assert.deepEqual(events.map((e) => e.type), ["kept"]);
  await using conn = await connect({
    hostname: "localhost",
    port: server.addr.port,
    caCerts: [ca.cert],
  });
  await writeAll(conn.writable, "on\n");
  assert.equal(await readLine(conn.readable), "on");
});
