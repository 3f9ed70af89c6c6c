// Several certificates on one TLS server, chosen by the name the client asks
// for (SNI): real handshakes from node:tls (which shows the certificate it
// got), from netkit's own client (which verifies the name against it) and
// from openssl s_client when the machine has it.
import assert from "node:assert/strict";
import { echo } from "../mod.ts";
import {
  type CertificateAndKey,
  createCA,
  createClientCert,
  createServerCert,
} from "../certs/mod.ts";
import { connect, listen, serve, type TlsConn, TlsError } from "../tls/mod.ts";
import { readLine, writeAll } from "../io/mod.ts";
import { servedSerial } from "./support/served_cert.ts";
import { hasTool } from "./support/tools.ts";

const ca = await createCA();
// A is the default; each certificate's CN is its first name, for openssl.
const A = await createServerCert(ca, { hosts: ["a.test", "localhost", "127.0.0.1"] });
const B = await createServerCert(ca, { hosts: ["b.test", "www.b.test"] });
const W = await createServerCert(ca, { hosts: ["*.w.test"] });
const LABELS = new Map([[A, "A"], [B, "B"], [W, "W"]].map(([c, l]) => [
  (c as CertificateAndKey).serialNumber,
  l as string,
]));

const quiet = { onEvent: () => {} };

/** Which certificate (by label) a node:tls client is served for `servername`. */
async function servedTo(port: number, servername?: string): Promise<string> {
  const serial = await servedSerial(port, servername);
  return LABELS.get(serial) ?? `unknown serial ${serial}`;
}

Deno.test("serve() with several certificates serves each SNI name its own certificate", async () => {
  await using server = serve({ port: 0, certificates: [A, B, W], ...quiet }, echo);
  const port = server.addr.port;
  assert.equal(await servedTo(port, "a.test"), "A");
  assert.equal(await servedTo(port, "b.test"), "B");
  assert.equal(await servedTo(port, "www.b.test"), "B");
  assert.equal(await servedTo(port, "B.Test"), "B", "names compare without case");
});

Deno.test("a client without SNI, or asking a name no certificate covers, gets the first certificate", async () => {
  await using server = serve({ port: 0, certificates: [A, B, W], ...quiet }, echo);
  const port = server.addr.port;
  assert.equal(await servedTo(port), "A", "no SNI (an IP address is never sent as SNI)");
  assert.equal(await servedTo(port, "unknown.test"), "A");
  assert.equal(await servedTo(port, "c.b.test"), "A", "b.test's exact names are not wildcards");
});

Deno.test("a wildcard certificate covers exactly one label under its name", async () => {
  await using server = serve({ port: 0, certificates: [A, B, W], ...quiet }, echo);
  const port = server.addr.port;
  assert.equal(await servedTo(port, "x.w.test"), "W");
  assert.equal(await servedTo(port, "api.w.test"), "W");
  assert.equal(await servedTo(port, "w.test"), "A", "the bare name is not covered");
  assert.equal(await servedTo(port, "a.x.w.test"), "A", "two labels are not covered");
});

Deno.test("an exact name wins over a wildcard, and a name in two certificates goes to the first listed", async () => {
  const exact = await createServerCert(ca, { hosts: ["x.w.test"] });
  const dup = await createServerCert(ca, { hosts: ["b.test"] });
  LABELS.set(exact.serialNumber, "exact");
  LABELS.set(dup.serialNumber, "dup");
  await using server = serve({ port: 0, certificates: [A, W, B, exact, dup], ...quiet }, echo);
  const port = server.addr.port;
  assert.equal(await servedTo(port, "x.w.test"), "exact");
  assert.equal(await servedTo(port, "y.w.test"), "W");
  assert.equal(await servedTo(port, "b.test"), "B");
});

Deno.test("netkit's client verifies each name against the certificate served for it", async () => {
  await using server = serve({ port: 0, certificates: [A, B, W], ...quiet }, echo);
  for (const serverName of ["a.test", "b.test", "www.b.test", "x.w.test"]) {
    await using conn = await connect({
      hostname: "127.0.0.1",
      port: server.addr.port,
      serverName,
      caCerts: [ca.cert],
    });
    await writeAll(conn.writable, `${serverName}\n`);
    assert.equal(await readLine(conn.readable), serverName);
  }
  // An unknown name is served the default, which does not cover it.
  await assert.rejects(
    connect({
      hostname: "127.0.0.1",
      port: server.addr.port,
      serverName: "unknown.test",
      caCerts: [ca.cert],
    }),
    (err) => err instanceof TlsError && err.code === "ERR_TLS_CERT_NAME_MISMATCH",
  );
});

async function opensslSubject(port: number, args: string[]): Promise<string> {
  const out = await new Deno.Command("openssl", {
    args: ["s_client", "-connect", `127.0.0.1:${port}`, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  const subject = text.match(/^subject=.*CN\s*=\s*([^\s,/]+)/m);
  assert.ok(subject, `no subject in openssl's output:\n${text}`);
  return subject[1];
}

Deno.test({
  name: "openssl s_client -servername gets each name's certificate, -noservername the default",
  ignore: !hasTool("openssl"),
  fn: async () => {
    await using server = serve({ port: 0, certificates: [A, B, W], ...quiet }, echo);
    const port = server.addr.port;
    assert.equal(await opensslSubject(port, ["-servername", "b.test"]), "b.test");
    assert.equal(await opensslSubject(port, ["-servername", "x.w.test"]), "*.w.test");
    assert.equal(await opensslSubject(port, ["-servername", "unknown.test"]), "a.test");
    assert.equal(await opensslSubject(port, ["-noservername"]), "a.test");
  },
});

Deno.test("server.certificates lists each certificate's names: DNS subjectAltNames, else the CN", async () => {
  // Only an IP address in its subjectAltName: its CN is the name SNI picks it by.
  const cnOnly = await createServerCert(ca, { hosts: ["127.0.0.2"], commonName: "cn-only.test" });
  LABELS.set(cnOnly.serialNumber, "cnOnly");
  await using server = serve({ port: 0, certificates: [A, B, W, cnOnly], ...quiet }, echo);
  assert.deepEqual(server.certificates.map((c) => c.names), [
    ["a.test", "localhost"],
    ["b.test", "www.b.test"],
    ["*.w.test"],
    ["cn-only.test"],
  ]);
  assert.deepEqual(server.certificates[1].subject, { CN: "b.test" });
  assert.equal(server.certificates[1].serialNumber.toLowerCase(), B.serialNumber);
  assert.equal(server.certificates[0].certFile, undefined, "given as PEM, not as a file");
  assert.equal(await servedTo(server.addr.port, "cn-only.test"), "cnOnly");
});

Deno.test("listen() picks the certificate by SNI too", async () => {
  await using listener = listen({ port: 0, certificates: [A, B] });
  const port = (listener.addr as { port: number }).port;
  const [accepted, name] = await Promise.all([listener.accept(), servedTo(port, "b.test")]);
  await accepted.close();
  assert.equal(name, "B");
});

Deno.test("client certificates are verified whichever certificate SNI picked", async () => {
  const alice = await createClientCert(ca, { commonName: "alice" });
  await using server = serve(
    { port: 0, certificates: [A, B], clientCaCerts: [ca.cert], ...quiet },
    async (conn: TlsConn) => {
      await writeAll(conn.writable, `${conn.peerCertificate?.subject.CN}\n`);
      await conn.close();
    },
  );
  for (const serverName of ["a.test", "b.test"]) {
    await using conn = await connect({
      hostname: "127.0.0.1",
      port: server.addr.port,
      serverName,
      caCerts: [ca.cert],
      cert: alice.cert,
      key: alice.key,
    });
    assert.equal(await readLine(conn.readable), "alice");
  }
});

Deno.test('engine "deno" refuses several certificates and serves one from the list', async () => {
  assert.throws(
    () => serve({ port: 0, engine: "deno", certificates: [A, B], ...quiet }, echo),
    (err) =>
      err instanceof TlsError && err.code === "ERR_TLS_ENGINE_UNSUPPORTED" &&
      /several certificates .* need the "node" TLS engine/.test(err.message),
  );
  await using server = serve({ port: 0, engine: "deno", certificates: [A], ...quiet }, echo);
  await using conn = await connect({
    hostname: "localhost",
    port: server.addr.port,
    caCerts: [ca.cert],
  });
  await writeAll(conn.writable, "one\n");
  assert.equal(await readLine(conn.readable), "one");
});

Deno.test("certificates refuses an empty list, and cert/key given beside it", () => {
  for (
    const options of [
      { certificates: [] },
      { cert: A.cert, key: A.key, certificates: [B] },
    ]
  ) {
    assert.throws(
      () => serve({ port: 0, ...options, ...quiet }, echo),
      (err) => err instanceof TlsError && err.code === "ERR_TLS_BAD_CREDENTIALS",
    );
  }
});

Deno.test("a broken certificate among several stops the start, naming its file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "netkit-sni-" });
  try {
    const files = {
      aCert: `${dir}/a.pem`,
      aKey: `${dir}/a-key.pem`,
      bCert: `${dir}/b.pem`,
      bKey: `${dir}/b-key.pem`,
    };
    await Deno.writeTextFile(files.aCert, A.cert);
    await Deno.writeTextFile(files.aKey, A.key);
    await Deno.writeTextFile(files.bCert, B.cert);
    await Deno.writeTextFile(files.bKey, A.key); // not B's key
    const certificates = [
      { certFile: files.aCert, keyFile: files.aKey },
      { certFile: files.bCert, keyFile: files.bKey },
    ];
    assert.throws(
      () => serve({ port: 0, certificates, ...quiet }, echo),
      (err) =>
        err instanceof TlsError && err.code === "ERR_TLS_BAD_CREDENTIALS" &&
        err.file === files.bKey && err.message.includes(`the key file ${files.bKey}`) &&
        err.message.includes(`does not belong to the certificate file ${files.bCert}`),
    );
    await Deno.writeTextFile(files.bKey, B.key);
    await using server = serve({ port: 0, certificates, ...quiet }, echo);
    assert.deepEqual(server.certificates.map((c) => c.certFile), [files.aCert, files.bCert]);
    assert.equal(await servedTo(server.addr.port, "b.test"), "B");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
