// A client that trusts one development CA, and a server whose certificate
// another CA of the same name signed (two createDevCerts() runs, or
// `deno task certs --force` on one side only): rustls finds the trusted CA by
// the issuer name, and its key does not verify the signature. The error must
// say so — the CA files differ — not that the certificate is unusable.
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { acceptTls, connect, serve, type ServerEvent, startTls, TlsError } from "../tls/mod.ts";
import * as tcp from "../tcp/mod.ts";
import { readLine, writeAll } from "../io/mod.ts";
import { createCA, createClientCert, createDevCerts, createServerCert } from "../certs/mod.ts";
import { runProgram, startServer } from "./_helpers.ts";
import { tempDevCerts } from "./support/certs.ts";
import { until, within } from "./support/time.ts";

const DEV_CA = "netkit development CA";
// Two runs: two CAs named alike, with different keys.
const before = await createDevCerts();
const after = await createDevCerts();
const otherCa = await createCA({ commonName: "some other CA" });

/** Waits at most 10 s for a handshake that should finish (or fail) at once. */
function bounded<T>(promise: Promise<T>, what: string): Promise<T> {
  return within(10_000, promise, what);
}

async function rejectsWith(promise: Promise<unknown>, code: string): Promise<TlsError> {
  const err = await promise.then(() => undefined, (e) => e);
  assert.ok(err instanceof TlsError, `expected a TlsError ${code}, got ${err}`);
  assert.equal(err.code, code, err.message);
  return err;
}

/** The message a client gets when its CA of `name` is not the one that signed. */
function assertOtherCaOfSameName(err: TlsError, name = DEV_CA): void {
  assert.ok(
    err.message.startsWith(
      `the server's certificate names its issuer "${name}", but the CA of that name this client ` +
        "trusts did not sign it: the two CA files differ",
    ),
    err.message,
  );
  assert.match(
    err.message,
    /pass --ca \(caCerts\) with the CA that signed the server's certificate$/,
  );
}

/** A server that says one line and closes, with its error events kept. */
function lineServer(
  options: { cert: string; key: string; engine?: "node" | "deno"; clientCaCerts?: string[] },
) {
  const errors: unknown[] = [];
  const server = serve(
    {
      port: 0,
      ...options,
      onEvent: (e: ServerEvent) => void (e.type === "error" && errors.push(e.error)),
    },
    async (conn) => {
      await writeAll(conn.writable, "hello\n");
      await conn.close();
    },
  );
  return { server, errors };
}

Deno.test("two createDevCerts() runs make two CAs of the same name with different keys", () => {
  const [a, b] = [new X509Certificate(before.ca), new X509Certificate(after.ca)];
  assert.equal(a.subject, `CN=${DEV_CA}`);
  assert.equal(b.subject, a.subject);
  assert.equal(new X509Certificate(after.cert).issuer, a.subject);
  assert.notEqual(
    a.publicKey.export({ format: "der", type: "spki" }).toString("hex"),
    b.publicKey.export({ format: "der", type: "spki" }).toString("hex"),
  );
});

for (const engine of ["node", "deno"] as const) {
  Deno.test(`connect() (Deno.startTls) to a server whose same-name CA is another: ERR_TLS_CERT_INVALID naming the issuer; engine "${engine}" logs why`, async () => {
    const { server, errors } = lineServer({ cert: after.cert, key: after.key, engine });
    await using _server = server;
    const port = server.addr.port;
    const err = await rejectsWith(
      bounded(connect({ hostname: "localhost", port, caCerts: [before.ca] }), "the handshake"),
      "ERR_TLS_CERT_INVALID",
    );
    assertOtherCaOfSameName(err);
    assert.match(String((err.cause as Error).message), /BadSignature/);

    // Trusting another CA besides: both are named, as either could be the issuer.
    const both = await rejectsWith(
      bounded(
        connect({ hostname: "localhost", port, caCerts: [otherCa.cert, before.ca] }),
        "the handshake",
      ),
      "ERR_TLS_CERT_INVALID",
    );
    assert.ok(
      both.message.startsWith(
        `the server's certificate names as its issuer one of the CAs this client trusts ` +
          `("some other CA", "${DEV_CA}"), but that CA did not sign it: the two CA files differ`,
      ),
      both.message,
    );

    // The server's side of it: the client refused its certificate (alert DecryptError).
    await until(() => errors.length >= 2, "the server's error events");
    for (const e of errors) {
      assert.ok(e instanceof TlsError);
      assert.equal(e.code, "ERR_TLS_CERT_REJECTED", e.message);
      assert.match(
        e.message,
        /^the client could not verify the signature on this server's certificate \(alert DecryptError\): it most likely trusts another CA of the same name/,
      );
    }

    // Control: the CA that signed it connects, and so does trusting old and new together.
    for (const caCerts of [[after.ca], [before.ca, after.ca]]) {
      await using conn = await bounded(
        connect({ hostname: "localhost", port, caCerts }),
        "the handshake",
      );
      assert.equal(await bounded(readLine(conn.readable), "the greeting"), "hello");
    }
  });
}

Deno.test("connect() with a client certificate (Deno.connectTls): the same error for the server's certificate", async () => {
  const alice = await createClientCert({ cert: after.ca, key: after.caKey }, {
    commonName: "alice",
  });
  const { server } = lineServer({ cert: after.cert, key: after.key, clientCaCerts: [after.ca] });
  await using _server = server;
  const port = server.addr.port;
  const client = { cert: alice.cert, key: alice.key };
  const err = await rejectsWith(
    bounded(connect({ hostname: "localhost", port, caCerts: [before.ca], ...client }), "handshake"),
    "ERR_TLS_CERT_INVALID",
  );
  assertOtherCaOfSameName(err);
  // By address, with the name to verify given apart.
  const byAddress = await rejectsWith(
    bounded(
      connect({
        hostname: "127.0.0.1",
        port,
        serverName: "localhost",
        caCerts: [before.ca],
        ...client,
      }),
      "the handshake",
    ),
    "ERR_TLS_CERT_INVALID",
  );
  assertOtherCaOfSameName(byAddress);
  // Among more than three CAs given, none is named (any could be the issuer), the cause still is.
  const many = [
    otherCa.cert,
    ...await Promise.all(
      [1, 2, 3].map((n) => createCA({ commonName: `CA ${n}` }).then((c) => c.cert)),
    ),
    before.ca,
  ];
  const amongMany = await rejectsWith(
    bounded(connect({ hostname: "localhost", port, caCerts: many, ...client }), "the handshake"),
    "ERR_TLS_CERT_INVALID",
  );
  assert.ok(
    amongMany.message.startsWith(
      "the server's certificate names as its issuer a CA this client trusts, but that CA did not " +
        "sign it: the two CA files differ",
    ),
    amongMany.message,
  );

  await using conn = await bounded(
    connect({ hostname: "localhost", port, caCerts: [after.ca], ...client }),
    "the handshake",
  );
  assert.equal(await bounded(readLine(conn.readable), "the greeting"), "hello");
});

Deno.test("startTls() (STARTTLS) with the other CA of the same name: the same error; the right CA upgrades", async () => {
  const upgrades: unknown[] = [];
  await using server = tcp.serve({ port: 0, onEvent: () => {} }, async (plain) => {
    await writeAll(plain.writable, "220 ready\r\n");
    if ((await readLine(plain.readable)) !== "STARTTLS") return;
    await writeAll(plain.writable, "220 go ahead\r\n");
    try {
      await using conn = await acceptTls(plain, { cert: after.cert, key: after.key });
      await writeAll(conn.writable, "250 over TLS\r\n");
      upgrades.push("ok");
    } catch (err) {
      upgrades.push(err);
    }
  });
  async function upgrade(caCerts: string[]) {
    const plain = await bounded(tcp.connect({ port: server.addr.port }), "the TCP connect");
    assert.equal(await bounded(readLine(plain.readable), "the greeting"), "220 ready");
    await writeAll(plain.writable, "STARTTLS\r\n");
    assert.equal(await bounded(readLine(plain.readable), "the go-ahead"), "220 go ahead");
    return await bounded(startTls(plain, { serverName: "localhost", caCerts }), "the handshake")
      .catch(async (err) => {
        await plain.close();
        throw err;
      });
  }

  const err = await rejectsWith(upgrade([before.ca]), "ERR_TLS_CERT_INVALID");
  assertOtherCaOfSameName(err);
  await until(() => upgrades.length >= 1, "the server's failed upgrade");
  assert.ok(upgrades[0] instanceof TlsError);
  assert.equal(upgrades[0].code, "ERR_TLS_CERT_REJECTED", upgrades[0].message);

  await using conn = await upgrade([after.ca]);
  assert.equal(await bounded(readLine(conn.readable), "the reply over TLS"), "250 over TLS");
});

Deno.test("a same-name CA with another key type (ECDSA trusted, RSA signed): the same error", async () => {
  // rustls says UnsupportedSignatureAlgorithmForPublicKey here, not BadSignature.
  const commonName = "Équipe dev CA";
  const ecdsaCa = await createCA({ commonName });
  const rsaCa = await createCA({ commonName, algorithm: "RSA" });
  const rsaSigned = await createServerCert(rsaCa, { hosts: ["localhost"] });
  const { server } = lineServer({ cert: rsaSigned.cert, key: rsaSigned.key });
  await using _server = server;
  const port = server.addr.port;
  const err = await rejectsWith(
    bounded(connect({ hostname: "localhost", port, caCerts: [ecdsaCa.cert] }), "the handshake"),
    "ERR_TLS_CERT_INVALID",
  );
  assertOtherCaOfSameName(err, commonName);
  assert.match(String((err.cause as Error).message), /UnsupportedSignatureAlgorithmForPublicKey/);

  await using conn = await bounded(
    connect({ hostname: "localhost", port, caCerts: [rsaCa.cert] }),
    "the handshake",
  );
  assert.equal(await bounded(readLine(conn.readable), "the greeting"), "hello");
});

Deno.test("tls-client --ca with the CA of an earlier `certs` run: names the CA among the system's, exits 1", async () => {
  // `deno task certs` twice: the server got the new files, the client kept the old ca.pem.
  await using old = await tempDevCerts({ prefix: "netkit-same-name-old-" });
  await using current = await tempDevCerts({ prefix: "netkit-same-name-new-" });
  await using server = await startServer("cli/tls_server.ts", [
    "--port",
    "0",
    ...current.serverArgs,
  ]);
  // tls-client trusts the system's CAs as well as --ca: only the one given is named.
  const run = await runProgram("cli/tls_client.ts", [
    "--port",
    String(server.port),
    "--ca",
    old.files.ca,
    "--message",
    "hi",
  ]);
  assert.equal(run.code, 1, run.stderr);
  assert.equal(run.stdout, "");
  assert.ok(
    run.stderr.startsWith(
      `tls-client: the server's certificate names its issuer "${DEV_CA}", but the CA of that ` +
        "name this client trusts did not sign it: the two CA files differ",
    ),
    run.stderr,
  );

  const right = await runProgram("cli/tls_client.ts", [
    "--port",
    String(server.port),
    "--ca",
    current.files.ca,
    "--message",
    "hi",
  ]);
  assert.equal(right.code, 0, right.stderr);
  assert.equal(right.stdout, "hi");
  const { stderr } = await server.stop("SIGTERM");
  assert.match(
    stderr,
    /error: 127\.0\.0\.1:\d+: the client could not verify the signature on this server's certificate \(alert DecryptError\)/,
  );
});
