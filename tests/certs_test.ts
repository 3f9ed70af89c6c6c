// The certs library: certificates made in memory must work in real TLS
// handshakes (Deno's rustls, Node's OpenSSL), carry the extensions OpenSSL
// expects, and bad options must fail with typed errors.
import assert from "node:assert/strict";
import {
  BadCertificateAuthorityError,
  CertFileExistsError,
  createCA,
  createClientCert,
  createDevCerts,
  createServerCert,
  InvalidCertOptionError,
  writeDevCerts,
} from "../certs/mod.ts";
import { NetkitError } from "../errors.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

async function commandWorks(cmd: string, args: string[]): Promise<boolean> {
  try {
    const { success } = await new Deno.Command(cmd, { args, stdout: "null", stderr: "null" })
      .output();
    return success;
  } catch {
    return false;
  }
}

function hasIPv6Loopback(): boolean {
  try {
    Deno.listen({ hostname: "::1", port: 0 }).close();
    return true;
  } catch {
    return false;
  }
}

const HAS_OPENSSL = await commandWorks("openssl", ["version"]);
const HAS_NODE = await commandWorks("node", ["--version"]);
const HAS_IPV6 = hasIPv6Loopback();

// One CA and server certificate for the default hosts, shared by the tests
// that only read them.
const dev = await createDevCerts();

/** How rustls refuses a certificate that does not cover the name asked for. */
const NOT_VALID_FOR_NAME = /NotValidForName|not valid for/i;

async function readFull(conn: Deno.Conn, size: number): Promise<string> {
  const buf = new Uint8Array(size);
  let filled = 0;
  while (filled < size) {
    const n = await conn.read(buf.subarray(filled));
    if (n === null) break;
    filled += n;
  }
  return decoder.decode(buf.subarray(0, filled));
}

async function readAll(conn: Deno.Conn): Promise<string> {
  let text = "";
  const buf = new Uint8Array(1024);
  for (;;) {
    const n = await conn.read(buf);
    if (n === null) return text;
    text += decoder.decode(buf.subarray(0, n));
  }
}

/**
 * A TLS server on `listen` with `cert`/`key`; a client connects over TCP to
 * the same address, starts TLS verifying `servername` against `caCerts`,
 * sends "ping" and reads the server's "pong". Returns what the client read;
 * rejects as the client's handshake does. Every resource is closed.
 * Unless told otherwise: the shared development certificates (`dev`), trusted
 * by their CA, on 127.0.0.1.
 */
async function pingPong(opts: {
  cert?: string;
  key?: string;
  caCerts?: string[];
  listen?: string;
  servername: string;
}): Promise<string> {
  const { cert = dev.cert, key = dev.key, caCerts = [dev.ca], listen = "127.0.0.1" } = opts;
  using listener = Deno.listenTls({ hostname: listen, port: 0, cert, key });
  const serverSide = (async () => {
    using conn = await listener.accept();
    await conn.handshake();
    assert.equal(await readFull(conn, 4), "ping");
    await conn.write(encoder.encode("pong"));
  })();
  try {
    const tcp = await Deno.connect({ hostname: listen, port: listener.addr.port });
    using tls = await Deno.startTls(tcp, { hostname: opts.servername, caCerts });
    await tls.handshake();
    await tls.write(encoder.encode("ping"));
    return await readFull(tls, 4);
  } finally {
    // On a failed handshake the server side fails too; that is expected.
    await Promise.allSettled([serverSide]);
  }
}

Deno.test("createDevCerts: TLS to 127.0.0.1 verifying the name localhost", async () => {
  const reply = await pingPong({ servername: "localhost" });
  assert.equal(reply, "pong");
});

Deno.test("createDevCerts: TLS verifying the address 127.0.0.1", async () => {
  const reply = await pingPong({ servername: "127.0.0.1" });
  assert.equal(reply, "pong");
});

Deno.test({
  name: "createDevCerts: TLS on [::1] verifying the address ::1",
  ignore: !HAS_IPV6,
  async fn() {
    const reply = await pingPong({ listen: "::1", servername: "::1" });
    assert.equal(reply, "pong");
  },
});

Deno.test("createDevCerts: Deno.connectTls by name trusts caCerts", async () => {
  // The plain way a test connects: connectTls with the hostname it verifies.
  using listener = Deno.listenTls({ hostname: "127.0.0.1", port: 0, cert: dev.cert, key: dev.key });
  const accepted = listener.accept();
  using client = await Deno.connectTls({
    hostname: "127.0.0.1",
    port: listener.addr.port,
    caCerts: [dev.ca],
  });
  using server = await accepted;
  const [, received] = await Promise.all([
    client.write(encoder.encode("hello")),
    readFull(server, 5),
  ]);
  assert.equal(received, "hello");
});

Deno.test("createDevCerts: a name not in the certificate is refused", async () => {
  await assert.rejects(pingPong({ servername: "example.com" }), NOT_VALID_FOR_NAME);
  // Nor an address it does not list.
  await assert.rejects(pingPong({ servername: "127.0.0.2" }), NOT_VALID_FOR_NAME);
});

Deno.test("createDevCerts: a client trusting another CA refuses the server", async () => {
  const other = await createCA({ commonName: "some other CA" });
  await assert.rejects(
    pingPong({ caCerts: [other.cert], servername: "localhost" }),
    /UnknownIssuer|unknown issuer/i,
  );
});

Deno.test("createDevCerts: RSA 2048 certificates work too", async () => {
  const rsa = await createDevCerts({ algorithm: "RSA", hosts: ["localhost"] });
  const reply = await pingPong({
    cert: rsa.cert,
    key: rsa.key,
    caCerts: [rsa.ca],
    servername: "localhost",
  });
  assert.equal(reply, "pong");
});

Deno.test("createServerCert: custom hosts, wildcard, and a CA read back from PEM", async () => {
  const ca = await createCA({ days: 2 });
  // A plain copy of the PEM strings, as if read from ca.pem and ca-key.pem.
  const fromFiles = { cert: `${ca.cert}`, key: `${ca.key}` };
  const server = await createServerCert(fromFiles, {
    hosts: ["app.example.test", "*.svc.example.test", "127.0.0.1"],
    days: 1,
  });
  const trusted = { cert: server.cert, key: server.key, caCerts: [ca.cert] };
  for (const servername of ["app.example.test", "api.svc.example.test", "127.0.0.1"]) {
    assert.equal(await pingPong({ ...trusted, servername }), "pong", servername);
  }
  await assert.rejects(pingPong({ ...trusted, servername: "localhost" }), NOT_VALID_FOR_NAME);
});

Deno.test("certificates: PEM shapes, positive random serials, validity", async () => {
  const before = Date.now();
  const ca = await createCA({ days: 10 });
  const a = await createServerCert(ca, { hosts: ["localhost"], days: 5 });
  const b = await createServerCert(ca, { hosts: ["localhost"], days: 5 });
  for (const item of [ca, a, b]) {
    assert.match(
      item.cert,
      /^-----BEGIN CERTIFICATE-----\n[A-Za-z0-9+/=\n]+-----END CERTIFICATE-----\n$/,
    );
    assert.match(
      item.key,
      /^-----BEGIN PRIVATE KEY-----\n[A-Za-z0-9+/=\n]+-----END PRIVATE KEY-----\n$/,
    );
    assert.match(item.serialNumber, /^[0-7][0-9a-f]{31}$/); // 16 bytes, top bit clear
  }
  assert.notEqual(a.serialNumber, b.serialNumber);
  assert.notEqual(a.key, b.key);
  const hour = 60 * 60 * 1000;
  const day = 24 * hour;
  assert.ok(a.notBefore.getTime() <= before - hour + 1000, "notBefore is an hour back");
  assert.ok(Math.abs(a.notAfter.getTime() - before - 5 * day) < 60_000, "notAfter is 5 days on");
  assert.ok(Math.abs(ca.notAfter.getTime() - before - 10 * day) < 60_000);
});

Deno.test({
  name: "openssl reads the extensions: CA, server and client certificates",
  ignore: !HAS_OPENSSL,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "netkit_certs_" });
    try {
      const ca = await createCA({ commonName: "test CA", days: 12 });
      const server = await createServerCert(ca, {
        hosts: ["localhost", "127.0.0.1", "::1", "[2001:db8::5]", "Example.TEST."],
        days: 7,
      });
      const client = await createClientCert(ca, { commonName: "alice", days: 3 });
      const rsaServer = await createServerCert(ca, { hosts: ["rsa.test"], algorithm: "RSA" });
      const files = {
        ca: `${dir}/ca.pem`,
        server: `${dir}/server.pem`,
        client: `${dir}/client.pem`,
        rsa: `${dir}/rsa.pem`,
        key: `${dir}/server-key.pem`,
      };
      await Deno.writeTextFile(files.ca, ca.cert);
      await Deno.writeTextFile(files.server, server.cert);
      await Deno.writeTextFile(files.client, client.cert);
      await Deno.writeTextFile(files.rsa, rsaServer.cert);
      await Deno.writeTextFile(files.key, server.key);
      const openssl = async (...args: string[]) => {
        const out = await new Deno.Command("openssl", { args, stdout: "piped", stderr: "piped" })
          .output();
        assert.ok(out.success, `openssl ${args.join(" ")}: ${decoder.decode(out.stderr)}`);
        return decoder.decode(out.stdout);
      };

      const caText = await openssl("x509", "-noout", "-text", "-in", files.ca);
      assert.match(caText, /Signature Algorithm: ecdsa-with-SHA256/);
      assert.match(caText, /Issuer: CN = test CA/);
      assert.match(caText, /Subject: CN = test CA/);
      assert.match(caText, /NIST CURVE: P-256/);
      assert.match(caText, /X509v3 Basic Constraints: critical\s+CA:TRUE/);
      assert.match(caText, /X509v3 Key Usage: critical\s+Certificate Sign, CRL Sign/);
      assert.match(caText, /X509v3 Subject Key Identifier/);
      assert.doesNotMatch(caText, /Negative/);

      const text = await openssl("x509", "-noout", "-text", "-in", files.server);
      assert.match(text, /Version: 3/);
      assert.match(text, /Issuer: CN = test CA/);
      assert.match(text, /Subject: CN = localhost/);
      assert.match(text, /X509v3 Basic Constraints: \n\s+CA:FALSE/);
      assert.match(text, /X509v3 Key Usage: critical\s+Digital Signature\n/);
      assert.match(text, /X509v3 Extended Key Usage: \n\s+TLS Web Server Authentication\n/);
      assert.match(text, /X509v3 Subject Key Identifier/);
      assert.match(text, /X509v3 Authority Key Identifier/);
      const san = /X509v3 Subject Alternative Name: \n\s+(.*)\n/.exec(text)?.[1];
      assert.equal(
        san,
        "DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, " +
          "IP Address:2001:DB8:0:0:0:0:0:5, DNS:example.test",
      );
      // The authority key id of the leaf is the subject key id of the CA.
      const caSkid = /Subject Key Identifier: \n\s+(\S+)/.exec(caText)?.[1];
      const akid = /Authority Key Identifier: \n\s+(?:keyid:)?(\S+)/.exec(text)?.[1];
      assert.ok(caSkid);
      assert.equal(akid, caSkid);

      // Validity: notBefore about an hour back, notAfter `days` on.
      const dates = await openssl("x509", "-noout", "-dates", "-in", files.server);
      const notBefore = Date.parse(/notBefore=(.*)/.exec(dates)![1]);
      const notAfter = Date.parse(/notAfter=(.*)/.exec(dates)![1]);
      const hour = 60 * 60 * 1000;
      assert.ok(Math.abs(Date.now() - hour - notBefore) < 5 * 60_000, dates);
      assert.ok(Math.abs(Date.now() + 7 * 24 * hour - notAfter) < 5 * 60_000, dates);
      assert.equal(Math.round((notAfter - notBefore - hour) / (24 * hour)), 7);

      const clientText = await openssl("x509", "-noout", "-text", "-in", files.client);
      assert.match(clientText, /Subject: CN = alice/);
      assert.match(clientText, /X509v3 Extended Key Usage: \n\s+TLS Web Client Authentication\n/);
      assert.doesNotMatch(clientText, /Subject Alternative Name/);

      const rsaText = await openssl("x509", "-noout", "-text", "-in", files.rsa);
      assert.match(rsaText, /Public-Key: \(2048 bit\)/);
      assert.match(rsaText, /Digital Signature, Key Encipherment/);
      assert.match(rsaText, /Signature Algorithm: ecdsa-with-SHA256/); // signed by the EC CA

      // The chain verifies for its purpose, and the key is a PKCS#8 EC key.
      assert.match(
        await openssl("verify", "-CAfile", files.ca, "-purpose", "sslserver", files.server),
        /OK/,
      );
      assert.match(
        await openssl("verify", "-CAfile", files.ca, "-purpose", "sslclient", files.client),
        /OK/,
      );
      assert.match(await openssl("pkey", "-in", files.key, "-noout", "-text"), /NIST CURVE: P-256/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "Node's tls, an independent peer, trusts the server certificate",
  ignore: !HAS_NODE,
  async fn() {
    const script = `
      const tls = require("node:tls");
      const opts = { host: "127.0.0.1", port: Number(process.env.PORT), ca: process.env.CA };
      if (process.env.SERVERNAME) opts.servername = process.env.SERVERNAME;
      const socket = tls.connect(opts, () => {
        process.stdout.write(String(socket.authorized));
        socket.write("ping");
      });
      socket.on("data", (d) => { process.stdout.write(" " + d); socket.end(); });
      socket.on("error", (e) => { process.stdout.write("error " + (e.code || e.message)); });
    `;
    for (const servername of ["localhost", ""]) {
      using listener = Deno.listenTls({
        hostname: "127.0.0.1",
        port: 0,
        cert: dev.cert,
        key: dev.key,
      });
      const serverSide = (async () => {
        using conn = await listener.accept();
        assert.equal(await readFull(conn, 4), "ping");
        await conn.write(encoder.encode("pong"));
        await readAll(conn).catch(() => "");
      })();
      const out = await new Deno.Command("node", {
        args: ["-e", script],
        env: { PORT: String(listener.addr.port), CA: dev.ca, SERVERNAME: servername },
        stdout: "piped",
        stderr: "piped",
      }).output();
      await serverSide;
      assert.equal(
        decoder.decode(out.stdout),
        "true pong",
        `servername "${servername}": ${decoder.decode(out.stderr)}`,
      );
    }
  },
});

Deno.test({
  name: "createClientCert: a Node server requiring client certificates accepts it",
  ignore: !HAS_NODE,
  async fn() {
    const ca = await createCA();
    const server = await createServerCert(ca, { hosts: ["127.0.0.1"] });
    const alice = await createClientCert(ca, { commonName: "alice" });
    const stranger = await createClientCert(await createCA(), { commonName: "mallory" });
    const script = `
      const tls = require("node:tls");
      const server = tls.createServer({
        key: process.env.KEY, cert: process.env.CERT, ca: process.env.CA,
        requestCert: true, rejectUnauthorized: true,
      }, (socket) => socket.end("hello " + socket.getPeerCertificate().subject.CN));
      server.on("tlsClientError", () => {});
      server.listen(0, "127.0.0.1", () => console.log(server.address().port));
      process.stdin.on("end", () => process.exit(0)).resume();
    `;
    const child = new Deno.Command("node", {
      args: ["-e", script],
      env: { KEY: server.key, CERT: server.cert, CA: ca.cert },
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    try {
      let first = "";
      while (!first.includes("\n")) {
        const { value, done } = await lines.read();
        if (done) break;
        first += value;
      }
      const port = Number(first.trim());
      assert.ok(port > 0, `node printed ${JSON.stringify(first)}`);

      const connect = async (client?: { cert: string; key: string }) => {
        using conn = await Deno.connectTls({
          hostname: "127.0.0.1",
          port,
          caCerts: [ca.cert],
          ...client,
        });
        // Node ends without close_notify, which rustls reports as an error
        // at end of stream: read the bytes we expect rather than to the end.
        return await readFull(conn, "hello alice".length);
      };
      assert.equal(await connect(alice), "hello alice");
      // Signed by a CA the server does not trust: Node drops the connection.
      await assert.rejects(connect(stranger), /UnexpectedEof|alert/);
      // No client certificate at all.
      await assert.rejects(connect(), /CertificateRequired|alert/);
      // The server is still up: it was refusing, not crashing.
      assert.equal(await connect(alice), "hello alice");
    } finally {
      await child.stdin.close();
      await lines.cancel();
      await child.status;
    }
  },
});

Deno.test("options: bad hosts, days and algorithms are typed errors", async () => {
  const invalid = async (fn: () => Promise<unknown>, option: string, message: RegExp) => {
    await assert.rejects(fn, (err: unknown) => {
      assert.ok(err instanceof InvalidCertOptionError, String(err));
      assert.ok(err instanceof NetkitError);
      assert.equal(err.code, "EINVAL");
      assert.equal(err.option, option);
      assert.match(err.message, message);
      return true;
    });
  };
  await invalid(() => createDevCerts({ hosts: [] }), "hosts", /no hosts given/);
  for (
    const host of [
      "not a host",
      "",
      "127.0.0.256",
      "1.2.3",
      "-bad.test",
      "a..b",
      "::1::2",
      "fe80::1%eth0",
      "x_y.test",
    ]
  ) {
    await invalid(
      () => createDevCerts({ hosts: ["localhost", host] }),
      "hosts",
      new RegExp(
        `"${host.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}" is neither a DNS name nor an IP address`,
      ),
    );
  }
  for (const days of [0, -1, 1.5, Number.NaN, 40_000]) {
    await invalid(
      () => createDevCerts({ days }),
      "days",
      /days must be a whole number from 1 to 36500/,
    );
  }
  await invalid(
    // @ts-expect-error: a key type that is not offered
    () => createCA({ algorithm: "DSA" }),
    "algorithm",
    /algorithm must be "ECDSA"/,
  );
  await invalid(() => createCA({ commonName: "" }), "commonName", /commonName must be/);
  const ca = await createCA();
  await invalid(
    // @ts-expect-error: hosts is required
    () => createServerCert(ca, {}),
    "hosts",
    /no hosts given/,
  );
  await invalid(
    // @ts-expect-error: commonName is required
    () => createClientCert(ca, {}),
    "commonName",
    /commonName must be/,
  );
});

Deno.test("options: accepted host spellings", async () => {
  const { hosts } = await createDevCerts({
    hosts: [
      "Example.TEST.",
      "[::1]",
      "::ffff:127.0.0.1",
      "*.local.test",
      "localhost",
      "LOCALHOST",
      "0.0.0.0",
    ],
  });
  assert.deepEqual(hosts, [
    "example.test",
    "::1",
    "::ffff:127.0.0.1",
    "*.local.test",
    "localhost",
    "0.0.0.0",
  ]);
});

Deno.test("createServerCert: a CA that cannot issue is a typed error", async () => {
  const ca = await createCA();
  const other = await createCA();
  const leaf = await createServerCert(ca, { hosts: ["localhost"] });
  const bad = async (issuer: { cert: string; key: string }, message: RegExp) => {
    await assert.rejects(createServerCert(issuer, { hosts: ["localhost"] }), (err: unknown) => {
      assert.ok(err instanceof BadCertificateAuthorityError, String(err));
      assert.equal(err.code, "EBADCA");
      assert.match(err.message, message);
      return true;
    });
  };
  await bad({ cert: "not pem", key: ca.key }, /not PEM/);
  await bad({ cert: ca.cert, key: other.key }, /does not match/);
  await bad({ cert: leaf.cert, key: leaf.key }, /not a CA/);
  await bad({
    cert: ca.cert,
    key: "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
  }, /openssl pkcs8/);
  // The CA itself still works afterwards.
  await createServerCert(ca, { hosts: ["localhost"] });
});

Deno.test("writeDevCerts: writes four files, refuses to overwrite, force overwrites", async () => {
  const dir = await Deno.makeTempDir({ prefix: "netkit_certs_" });
  try {
    const out = `${dir}/nested/certs`;
    const written = await writeDevCerts({ out, hosts: ["localhost", "::1"], days: 2 });
    assert.deepEqual(written.files, {
      ca: `${out}/ca.pem`,
      caKey: `${out}/ca-key.pem`,
      cert: `${out}/server.pem`,
      key: `${out}/server-key.pem`,
    });
    assert.deepEqual(written.hosts, ["localhost", "::1"]);
    const before: Record<string, Uint8Array> = {};
    for (const path of Object.values(written.files)) before[path] = await Deno.readFile(path);
    if (Deno.build.os !== "windows") {
      assert.equal((await Deno.stat(written.files.key)).mode! & 0o777, 0o600);
      assert.equal((await Deno.stat(written.files.caKey)).mode! & 0o777, 0o600);
    }
    assert.deepEqual([...Deno.readDirSync(out)].map((e) => e.name).sort(), [
      "ca-key.pem",
      "ca.pem",
      "server-key.pem",
      "server.pem",
    ]);

    // The files on disk work: a server with them, a client trusting ca.pem.
    const reply = await pingPong({
      cert: await Deno.readTextFile(written.files.cert),
      key: await Deno.readTextFile(written.files.key),
      caCerts: [await Deno.readTextFile(written.files.ca)],
      servername: "localhost",
    });
    assert.equal(reply, "pong");

    await assert.rejects(writeDevCerts({ out }), (err: unknown) => {
      assert.ok(err instanceof CertFileExistsError);
      assert.equal(err.code, "EEXIST");
      assert.equal(err.path, written.files.ca);
      assert.match(err.message, /ca\.pem already exists: pass force: true to overwrite it/);
      return true;
    });
    for (const [path, bytes] of Object.entries(before)) {
      assert.deepEqual(await Deno.readFile(path), bytes, `${path} untouched`);
    }

    await writeDevCerts({ out, force: true });
    for (const [path, bytes] of Object.entries(before)) {
      assert.notDeepEqual(await Deno.readFile(path), bytes, `${path} overwritten`);
    }
    if (Deno.build.os !== "windows") {
      assert.equal((await Deno.stat(written.files.key)).mode! & 0o777, 0o600);
    }
    // No temporary files left behind.
    assert.equal([...Deno.readDirSync(out)].length, 4);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writeDevCerts: one file already there is enough to refuse, writing nothing", async () => {
  const dir = await Deno.makeTempDir({ prefix: "netkit_certs_" });
  try {
    await Deno.writeTextFile(`${dir}/server-key.pem`, "mine");
    await assert.rejects(writeDevCerts({ out: dir }), CertFileExistsError);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["server-key.pem"]);
    assert.equal(await Deno.readTextFile(`${dir}/server-key.pem`), "mine");
    // A bad option fails before anything is written, even into a new folder.
    await assert.rejects(writeDevCerts({ out: `${dir}/new`, hosts: [] }), InvalidCertOptionError);
    await assert.rejects(Deno.stat(`${dir}/new`), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
