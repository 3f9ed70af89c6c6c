import assert from "node:assert/strict";
import { echo } from "../echo.ts";
import { NetkitError } from "../errors.ts";
import { connect, listen, serve, type ServerEvent, TlsError } from "../tls/mod.ts";
import * as tcp from "../tcp/mod.ts";
import { readLine, writeAll } from "../io/mod.ts";
import { createCA, createClientCert, createDevCerts, createServerCert } from "../certs/mod.ts";
import { pseudoRandomBytes, readAll } from "./_helpers.ts";
import { trickleClientHello } from "./support/slowloris.ts";
import { until } from "./support/time.ts";
import { cuttableTlsClient, expiredCert, notYetValidCert } from "./tls_helpers.ts";

const { ca, caKey, cert, key } = await createDevCerts({ hosts: ["localhost", "127.0.0.1", "::1"] });
const authority = { cert: ca, key: caKey };
const otherCa = await createCA({ commonName: "some other CA" });
const exampleCom = await createServerCert(authority, { hosts: ["example.com", "www.example.com"] });

/** A server that logs nothing. */
const quiet = { onEvent: () => {} };

/** Collects a server's error events. */
function errorLog(): {
  events: ServerEvent[];
  onEvent: (e: ServerEvent) => void;
  errors(): unknown[];
} {
  const events: ServerEvent[] = [];
  return {
    events,
    onEvent: (e) => void events.push(e),
    errors: () => events.flatMap((e) => e.type === "error" ? [e.error] : []),
  };
}

async function rejectsWith(promise: Promise<unknown>, code: string): Promise<TlsError> {
  const err = await promise.then(() => undefined, (e) => e);
  assert.ok(err instanceof TlsError, `expected a TlsError ${code}, got ${err}`);
  assert.ok(err instanceof NetkitError);
  assert.equal(err.code, code, err.message);
  return err;
}

Deno.test("tls.serve() with the TCP echo handler: round trip, big transfer, half-close", async () => {
  await using server = serve({ port: 0, cert, key }, echo);
  assert.equal(server.addr.hostname, "127.0.0.1");
  assert.notEqual(server.addr.port, 0);
  await using conn = await connect({
    hostname: "localhost",
    port: server.addr.port,
    caCerts: [ca],
  });
  assert.equal(conn.alpnProtocol, null);
  await writeAll(conn.writable, "hello\n");
  assert.equal(await readLine(conn.readable), "hello");
  const big = pseudoRandomBytes(2 * 1024 * 1024 + 3);
  const [, back] = await Promise.all([
    writeAll(conn.writable, big).then(() => conn.closeWrite()),
    readAll(conn.readable),
  ]);
  assert.deepEqual(back, big);
});

Deno.test("tls.connect() verifies an IP address against the certificate's IP SANs, and IPv6 works", async () => {
  await using server = serve({ port: 0, cert, key }, echo);
  await using conn = await connect({ port: server.addr.port, caCerts: [ca] });
  await writeAll(conn.writable, "by ip\n");
  assert.equal(await readLine(conn.readable), "by ip");
  let v6: ReturnType<typeof serve> | undefined;
  try {
    v6 = serve({ hostname: "::1", port: 0, cert, key }, echo);
  } catch {
    return; // No IPv6 loopback here.
  }
  await using _v6 = v6;
  await using conn6 = await connect({ hostname: "::1", port: v6.addr.port, caCerts: [ca] });
  await writeAll(conn6.writable, "v6\n");
  assert.equal(await readLine(conn6.readable), "v6");
});

Deno.test("tls.serve() handles many clients at once", async () => {
  await using server = serve({ port: 0, cert, key }, echo);
  await Promise.all(Array.from({ length: 12 }, async (_, i) => {
    await using conn = await connect({
      hostname: "localhost",
      port: server.addr.port,
      caCerts: [ca],
    });
    const data = pseudoRandomBytes(40_000 + i, i + 1);
    const [, back] = await Promise.all([
      writeAll(conn.writable, data).then(() => conn.closeWrite()),
      readAll(conn.readable),
    ]);
    assert.deepEqual(back, data);
  }));
});

Deno.test("tls.serve() takes certFile/keyFile paths, and says what is wrong with bad ones", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/server.pem`, cert);
    await Deno.writeTextFile(`${dir}/server-key.pem`, key);
    {
      await using server = serve({
        port: 0,
        certFile: `${dir}/server.pem`,
        keyFile: `${dir}/server-key.pem`,
      }, echo);
      await using conn = await connect({
        hostname: "localhost",
        port: server.addr.port,
        caCerts: [ca],
      });
      await writeAll(conn.writable, "files\n");
      assert.equal(await readLine(conn.readable), "files");
    }
    const missing = assert.throws(
      () => serve({ port: 0, certFile: `${dir}/nope.pem`, keyFile: `${dir}/server-key.pem` }, echo),
      (err: unknown) => err instanceof TlsError && err.code === "ERR_TLS_BAD_CREDENTIALS",
    );
    void missing;
    assert.throws(
      () => serve({ port: 0, certFile: `${dir}/nope.pem`, keyFile: `${dir}/server-key.pem` }, echo),
      /nope\.pem: not found; make development certificates with `deno task certs`/,
    );
    assert.throws(() => serve({ port: 0 }, echo), /needs a certificate and key/);
    assert.throws(
      () => serve({ port: 0, cert: `${dir}/server.pem`, key }, echo),
      /pass certFile instead of cert/,
    );
    assert.throws(
      () =>
        serve({
          port: 0,
          cert,
          key: "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        }, echo),
      (
        err: unknown,
      ) => err instanceof TlsError && err.code === "ERR_TLS_BAD_CREDENTIALS",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("an untrusted CA is ERR_TLS_CERT_UNTRUSTED, telling to pass the CA; the server logs the rejection", async () => {
  const log = errorLog();
  await using server = serve({ port: 0, cert, key, onEvent: log.onEvent }, echo);
  const err = await rejectsWith(
    connect({ hostname: "localhost", port: server.addr.port, caCerts: [otherCa.cert] }),
    "ERR_TLS_CERT_UNTRUSTED",
  );
  assert.match(err.message, /not trusted/);
  assert.match(err.message, /pass --ca \(caCerts\) with the CA that signed it/);
  // Without caCerts at all: Deno's root store does not know the dev CA either.
  await rejectsWith(
    connect({ hostname: "localhost", port: server.addr.port }),
    "ERR_TLS_CERT_UNTRUSTED",
  );
  await until(() => log.errors().length >= 2, "the server's error events", 10_000);
  for (const e of log.errors()) {
    assert.ok(e instanceof TlsError);
    assert.equal(e.code, "ERR_TLS_CERT_REJECTED");
    assert.match(e.message, /the client rejected this server's certificate \(alert UnknownCA\)/);
  }
});

Deno.test("a name the certificate does not cover is ERR_TLS_CERT_NAME_MISMATCH, naming both", async () => {
  await using server = serve(
    { port: 0, cert: exampleCom.cert, key: exampleCom.key, ...quiet },
    echo,
  );
  const err = await rejectsWith(
    connect({ hostname: "localhost", port: server.addr.port, caCerts: [ca] }),
    "ERR_TLS_CERT_NAME_MISMATCH",
  );
  assert.match(
    err.message,
    /^certificate for "example\.com", "www\.example\.com" does not cover "localhost"/,
  );
  assert.deepEqual(err.names, ["example.com", "www.example.com"]);
  // serverName picks the name to verify, independently of where we connect.
  await using conn = await connect({
    hostname: "127.0.0.1",
    port: server.addr.port,
    serverName: "www.example.com",
    caCerts: [ca],
  });
  await writeAll(conn.writable, "sni\n");
  assert.equal(await readLine(conn.readable), "sni");
  // And the other way round: a dev cert does not cover example.com.
  await using dev = serve({ port: 0, cert, key, ...quiet }, echo);
  const err2 = await rejectsWith(
    connect({ port: dev.addr.port, serverName: "example.com", caCerts: [ca] }),
    "ERR_TLS_CERT_NAME_MISMATCH",
  );
  assert.match(
    err2.message,
    /^certificate for "localhost", "127\.0\.0\.1", "::1" does not cover "example\.com"/,
  );
});

Deno.test("an expired certificate is ERR_TLS_CERT_EXPIRED with its date", async () => {
  const expired = await expiredCert(authority);
  await using server = serve({ port: 0, ...expired, ...quiet }, echo);
  const err = await rejectsWith(
    connect({ hostname: "localhost", port: server.addr.port, caCerts: [ca] }),
    "ERR_TLS_CERT_EXPIRED",
  );
  assert.equal(err.notAfter?.getTime(), expired.notAfter.getTime());
  assert.ok(
    err.message.includes(`expired on ${expired.notAfter.toISOString().replace(".000Z", "Z")}`),
    err.message,
  );
  assert.match(err.message, /renew it/);
});

Deno.test("a not yet valid certificate is ERR_TLS_CERT_NOT_YET_VALID with its date", async () => {
  const future = await notYetValidCert(authority);
  await using server = serve({ port: 0, ...future, ...quiet }, echo);
  const err = await rejectsWith(
    connect({ hostname: "localhost", port: server.addr.port, caCerts: [ca] }),
    "ERR_TLS_CERT_NOT_YET_VALID",
  );
  assert.equal(err.notBefore?.getTime(), future.notBefore.getTime());
  assert.ok(
    err.message.includes(
      `not valid yet until ${future.notBefore.toISOString().replace(".000Z", "Z")}`,
    ),
    err.message,
  );
  assert.match(err.message, /check the clocks/);
});

Deno.test("a server that does not speak TLS is ERR_TLS_NOT_TLS (plaintext greeting, or an echo)", async () => {
  await using greeter = tcp.serve({ port: 0 }, async (conn) => {
    await writeAll(conn.writable, "220 smtp.example.com ESMTP ready\r\n");
  });
  const err = await rejectsWith(
    connect({ hostname: "localhost", port: greeter.addr.port, caCerts: [ca] }),
    "ERR_TLS_NOT_TLS",
  );
  assert.match(err.message, new RegExp(`^localhost:${greeter.addr.port} is not speaking TLS`));
  await using echoer = tcp.serve({ port: 0 }, echo);
  await rejectsWith(
    connect({ hostname: "localhost", port: echoer.addr.port, caCerts: [ca] }),
    "ERR_TLS_NOT_TLS",
  );
});

Deno.test("a silent server is ERR_TLS_HANDSHAKE_TIMEOUT within the connect timeout; a refused port is ECONNREFUSED", async () => {
  await using silent = tcp.serve({ port: 0, gracePeriod: 0 }, (conn) => conn.closed);
  const err = await rejectsWith(
    connect({ hostname: "localhost", port: silent.addr.port, caCerts: [ca], timeout: 200 }),
    "ERR_TLS_HANDSHAKE_TIMEOUT",
  );
  assert.match(err.message, /^no TLS handshake from localhost:\d+ within 0\.2s/);
  await silent.close();
  const refused = await connect({ port: silent.addr.port, caCerts: [ca] }).then(
    () => undefined,
    (e) => e,
  );
  assert.ok(refused instanceof tcp.NetworkError);
  assert.equal(refused.code, "ECONNREFUSED");
});

Deno.test("an aborted signal stops connect() with its reason", async () => {
  await using silent = tcp.serve({ port: 0, gracePeriod: 0 }, (conn) => conn.closed);
  const controller = new AbortController();
  const attempt = connect({
    hostname: "localhost",
    port: silent.addr.port,
    caCerts: [ca],
    signal: controller.signal,
  });
  setTimeout(() => controller.abort(new Error("user gave up")), 50);
  await assert.rejects(attempt, /user gave up/);
});

Deno.test("a plaintext client and garbage bytes cost their own connection only", async () => {
  const log = errorLog();
  await using server = serve({ port: 0, cert, key, onEvent: log.onEvent }, echo);
  {
    await using plain = await tcp.connect({ port: server.addr.port });
    await writeAll(plain.writable, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    // The server answers with a TLS alert (bytes starting 0x15) and closes.
    const answer = await readAll(plain.readable).catch(() => new Uint8Array(0));
    if (answer.length > 0) assert.equal(answer[0], 0x15);
  }
  {
    await using garbage = await tcp.connect({ port: server.addr.port });
    await writeAll(garbage.writable, pseudoRandomBytes(4096, 99));
    await readAll(garbage.readable).catch(() => new Uint8Array(0));
  }
  {
    // Hangs up in the middle of a ClientHello.
    await using cut = await tcp.connect({ port: server.addr.port });
    await writeAll(cut.writable, new Uint8Array([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]));
  }
  await until(() => log.errors().length >= 3, "three handshake errors", 10_000);
  const codes = log.errors().map((e) => (e as TlsError).code);
  assert.equal(codes[0], "ERR_TLS_NOT_TLS");
  assert.match((log.errors()[0] as Error).message, /the client is not speaking TLS/);
  assert.ok(
    codes.every((c) => c === "ERR_TLS_NOT_TLS" || c === "ERR_TLS_HANDSHAKE_FAILED"),
    codes.join(),
  );
  // Still serving.
  await using conn = await connect({
    hostname: "localhost",
    port: server.addr.port,
    caCerts: [ca],
  });
  await writeAll(conn.writable, "still here\n");
  assert.equal(await readLine(conn.readable), "still here");
});

Deno.test("handshakeTimeout closes a slowloris peer that trickles a ClientHello, and others are served meanwhile", async () => {
  const log = errorLog();
  await using server = serve(
    { port: 0, cert, key, handshakeTimeout: 300, onEvent: log.onEvent },
    echo,
  );
  await using slow = await tcp.connect({ port: server.addr.port });
  // A record header announcing 512 bytes, then one byte every 20 ms: never
  // idle, never finished.
  const trickle = await trickleClientHello(slow);
  // A normal client is served while the slow one holds its session.
  {
    await using conn = await connect({
      hostname: "localhost",
      port: server.addr.port,
      caCerts: [ca],
    });
    await writeAll(conn.writable, "fast\n");
    assert.equal(await readLine(conn.readable), "fast");
  }
  // The slow one is closed: its read ends (or is reset) long before it could finish.
  await readAll(slow.readable).catch(() => {});
  assert.ok(trickle.sent < 500, "the slow peer was cut off before finishing its hello");
  await until(() => log.errors().length >= 1, "the timeout error event", 10_000);
  const err = log.errors()[0] as TlsError;
  assert.equal(err.code, "ERR_TLS_HANDSHAKE_TIMEOUT");
  assert.match(err.message, /did not finish its TLS handshake within 0\.3s/);
  await slow.close();
  await trickle.done;
});

Deno.test("maxConnections closes a connection beyond the limit at once", async () => {
  const log = errorLog();
  await using server = serve({ port: 0, cert, key, maxConnections: 1, onEvent: log.onEvent }, echo);
  await using first = await connect({
    hostname: "localhost",
    port: server.addr.port,
    caCerts: [ca],
  });
  await writeAll(first.writable, "one\n");
  assert.equal(await readLine(first.readable), "one");
  const second = await connect({
    hostname: "localhost",
    port: server.addr.port,
    caCerts: [ca],
    timeout: 5000,
  })
    .then((c) => c, (e) => e);
  if (!(second instanceof Error)) {
    // The TCP accept raced the close: the conn must end without data.
    await assert.rejects(
      readAll(second.readable).then((b) =>
        b.length === 0 ? Promise.reject(new Error("closed")) : b
      ),
    );
    await second.close();
  }
  await until(() => log.events.some((e) => e.type === "refused"), "the refused event", 10_000);
});

Deno.test("ALPN: the protocol both sides prefer is agreed and shown on both conns", async () => {
  let serverSide: string | null | undefined;
  await using server = serve(
    { port: 0, cert, key, alpnProtocols: ["h2", "netkit/1"] },
    async (conn) => {
      serverSide = conn.alpnProtocol;
      await echo(conn);
    },
  );
  await using conn = await connect({
    hostname: "localhost",
    port: server.addr.port,
    caCerts: [ca],
    alpnProtocols: ["netkit/1"],
  });
  assert.equal(conn.alpnProtocol, "netkit/1");
  await writeAll(conn.writable, "x\n");
  await readLine(conn.readable);
  assert.equal(serverSide, "netkit/1");
});

Deno.test("clientCaCerts: mutual TLS through node:tls accepts a client the CA signed, refuses others", async () => {
  const alice = await createClientCert(authority, { commonName: "alice" });
  const mallory = await createClientCert(otherCa, { commonName: "mallory" });
  const log = errorLog();
  await using server = serve(
    { port: 0, cert, key, clientCaCerts: [ca], onEvent: log.onEvent },
    async (conn) => {
      await writeAll(conn.writable, `hello ${conn.peerCertificate?.subject.CN}\n`);
      await echo(conn);
    },
  );
  {
    await using conn = await connect({
      hostname: "localhost",
      port: server.addr.port,
      caCerts: [ca],
      cert: alice.cert,
      key: alice.key,
    });
    assert.equal(await readLine(conn.readable), "hello alice");
    const data = pseudoRandomBytes(300_000, 5);
    const [, back] = await Promise.all([
      writeAll(conn.writable, data).then(() => conn.closeWrite()),
      readAll(conn.readable),
    ]);
    assert.deepEqual(back, data);
  }
  {
    // By address, with the name to verify given apart (Deno.connectTls path).
    await using conn = await connect({
      hostname: "127.0.0.1",
      port: server.addr.port,
      serverName: "localhost",
      caCerts: [ca],
      cert: alice.cert,
      key: alice.key,
    });
    assert.equal(await readLine(conn.readable), "hello alice");
    await conn.closeWrite();
    await readAll(conn.readable);
  }
  await rejectsWith(
    connect({
      hostname: "127.0.0.1",
      port: server.addr.port,
      serverName: "example.com",
      caCerts: [ca],
      cert: alice.cert,
      key: alice.key,
    }),
    "ERR_TLS_CERT_NAME_MISMATCH",
  );
  // TLS 1.3: the client's handshake is done before the server checks its
  // certificate, so the refusal shows on the first read.
  for (const who of [mallory, undefined]) {
    const conn = await connect({
      hostname: "localhost",
      port: server.addr.port,
      caCerts: [ca],
      ...(who ? { cert: who.cert, key: who.key } : {}),
    }).catch((e) => e);
    if (conn instanceof Error) continue;
    // Refused: an alert (an error), or the socket cut without close_notify —
    // a flagged end, as `requireCloseNotify` is off by default. Never a line.
    const line = await readLine(conn.readable).catch((err) => err);
    assert.ok(line instanceof Error || (line === null && conn.truncated), `got ${line}`);
    await conn.close();
  }
  await until(() => log.errors().length >= 3, "three refusals", 10_000);
  const errors = log.errors() as TlsError[];
  const untrusted = errors.find((e) => e.code === "ERR_TLS_CERT_UNTRUSTED");
  assert.match(untrusted?.message ?? "", /the client's certificate is not trusted/);
  const missing = errors.find((e) => e.code === "ERR_TLS_CLIENT_CERT_REQUIRED");
  assert.match(missing?.message ?? "", /the client sent no certificate/);
});

Deno.test("tls.listen() hands out connections whose handshake finished, never blocked by a slow one", async () => {
  const failures: unknown[] = [];
  await using listener = listen({
    port: 0,
    cert,
    key,
    handshakeTimeout: 2000,
    onError: (e) => failures.push(e),
  });
  const port = (listener.addr as { port: number }).port;
  // A silent TCP peer connects first and never handshakes.
  await using silent = await tcp.connect({ port });
  // A plaintext peer fails its handshake: reported, skipped.
  await using plain = await tcp.connect({ port });
  await writeAll(plain.writable, "hello?\r\n");
  const [server, client] = await Promise.all([
    listener.accept(),
    connect({ hostname: "localhost", port, caCerts: [ca] }),
  ]);
  await writeAll(server.writable, "welcome\n");
  assert.equal(await readLine(client.readable), "welcome");
  await server.close();
  await client.close();
  await until(() => failures.length >= 1, "the plaintext failure", 10_000);
  assert.equal((failures[0] as TlsError).code, "ERR_TLS_NOT_TLS");
  void silent;
});

Deno.test("tls.listen() is async-iterable and stops on close", async () => {
  const listener = listen({ port: 0, cert, key });
  const port = (listener.addr as { port: number }).port;
  const served = (async () => {
    let n = 0;
    for await (const conn of listener) {
      await writeAll(conn.writable, `n=${++n}\n`);
      await conn.close();
    }
    return n;
  })();
  for (let i = 1; i <= 2; i++) {
    await using conn = await connect({ hostname: "localhost", port, caCerts: [ca] });
    assert.equal(await readLine(conn.readable), `n=${i}`);
  }
  listener.close();
  assert.equal(await served, 2);
});

Deno.test('engine "deno" (Deno.listenTls) serves the same Conn; a missing close_notify is ERR_TLS_TRUNCATED there', async () => {
  {
    await using server = serve({ port: 0, cert, key, engine: "deno" }, echo);
    await using conn = await connect({
      hostname: "localhost",
      port: server.addr.port,
      caCerts: [ca],
    });
    await writeAll(conn.writable, "deno engine\n");
    assert.equal(await readLine(conn.readable), "deno engine");
  }
  let readError: unknown;
  await using server = serve(
    { port: 0, cert, key, engine: "deno", ...quiet },
    async (conn) => {
      await readAll(conn.readable).catch((err) => void (readError = err));
    },
  );
  const client = await cuttableTlsClient(server.addr.port, ca);
  await client.write("bye\n");
  client.cut();
  await until(() => readError !== undefined, "the server's read error", 10_000);
  assert.ok(readError instanceof TlsError, String(readError));
  assert.equal(readError.code, "ERR_TLS_TRUNCATED");
  assert.match(readError.message, /without a TLS close_notify/);
  assert.throws(
    () => serve({ port: 0, cert, key, engine: "deno", clientCaCerts: [ca] }, echo),
    /clientCaCerts needs engine "node": Deno\.listenTls cannot ask clients for certificates/,
  );
});

Deno.test('engine "node" (the default) reads a missing close_notify as the end of the stream', async () => {
  const log = errorLog();
  let ended = false;
  await using server = serve({ port: 0, cert, key, onEvent: log.onEvent }, async (conn) => {
    await readAll(conn.readable);
    ended = true;
  });
  const client = await cuttableTlsClient(server.addr.port, ca);
  await client.write("bye\n");
  client.cut();
  await until(() => ended, "the end of the server's stream", 10_000);
  assert.deepEqual(log.errors(), []);
});
