import assert from "node:assert/strict";
import { echo } from "../echo.ts";
import type { Conn } from "../conn.ts";
import {
  acceptTls,
  connect as tlsConnect,
  serve as tlsServe,
  startTls,
  TlsError,
} from "../tls/mod.ts";
import * as tcp from "../tcp/mod.ts";
import { readLine, writeAll } from "../io/mod.ts";
import { createCA, createDevCerts, writeDevCerts } from "../certs/mod.ts";
import { readAll } from "./_helpers.ts";
import { runCommand } from "./support/process.ts";
import { hasTool } from "./support/tools.ts";

const { ca, cert, key } = await createDevCerts();
const otherCa = await createCA({ commonName: "some other CA" });
const quiet = { onEvent: () => {} };

async function rejectsWith(promise: Promise<unknown>, code: string): Promise<TlsError> {
  const err = await promise.then(() => undefined, (e) => e);
  assert.ok(err instanceof TlsError, `expected a TlsError ${code}, got ${err}`);
  assert.equal(err.code, code, err.message);
  return err;
}

/**
 * A small SMTP-like server on netkit: a 220 greeting, EHLO answered with
 * 250-…/250 STARTTLS, STARTTLS answered with 220 and then TLS (acceptTls);
 * after TLS it answers one command with a 250 and closes.
 */
function smtpServer(options: { handshakeTimeout?: number; onError?: (err: unknown) => void } = {}) {
  return tcp.serve({ port: 0, ...quiet }, async (plain) => {
    await writeAll(plain.writable, "220 netkit.test ESMTP ready\r\n");
    let line: string | null;
    while ((line = await readLine(plain.readable)) !== null) {
      const verb = line.split(" ")[0].toUpperCase();
      if (verb === "EHLO") {
        await writeAll(
          plain.writable,
          "250-netkit.test greets you\r\n250-SIZE 1000000\r\n250 STARTTLS\r\n",
        );
      } else if (verb === "STARTTLS") {
        await writeAll(plain.writable, "220 2.0.0 Ready to start TLS\r\n");
        let conn: Conn;
        try {
          conn = await acceptTls(plain, { cert, key, handshakeTimeout: options.handshakeTimeout });
        } catch (err) {
          options.onError?.(err);
          return;
        }
        const command = await readLine(conn.readable);
        await writeAll(conn.writable, `250 2.0.0 OK over TLS: ${command}\r\n`);
        return; // The server closes the upgraded connection (handOver).
      } else if (verb === "QUIT") {
        await writeAll(plain.writable, "221 bye\r\n");
        return;
      } else {
        await writeAll(plain.writable, "502 5.5.2 not implemented\r\n");
      }
    }
  });
}

/** The client side of the exchange above, up to the STARTTLS go-ahead. */
async function plaintextExchange(port: number): Promise<Conn> {
  const plain = await tcp.connect({ port });
  assert.match((await readLine(plain.readable))!, /^220 /);
  await writeAll(plain.writable, "EHLO client.test\r\n");
  let line: string | null;
  const extensions: string[] = [];
  do {
    line = await readLine(plain.readable);
    extensions.push(line!.slice(4));
  } while (line!.startsWith("250-"));
  assert.ok(extensions.includes("STARTTLS"));
  await writeAll(plain.writable, "STARTTLS\r\n");
  assert.equal(await readLine(plain.readable), "220 2.0.0 Ready to start TLS");
  return plain;
}

/**
 * The smallest STARTTLS protocol: the client says STARTTLS, the server says
 * GO, both upgrade. A server on a free port that hands each upgraded
 * connection to `secured`, with `options` for tcp.serve().
 */
function goAheadServer(
  options: { gracePeriod?: number; idleTimeout?: number; onEvent?: (e: tcp.ServerEvent) => void },
  secured: (conn: Conn) => Promise<void>,
) {
  return tcp.serve({ port: 0, ...options }, async (plain) => {
    assert.equal(await readLine(plain.readable), "STARTTLS");
    await writeAll(plain.writable, "GO\n");
    await secured(await acceptTls(plain, { cert, key }));
  });
}

/** The client side of {@linkcode goAheadServer}: STARTTLS, GO, then startTls() verifying localhost. */
async function startTlsAfterGo(plain: Conn): Promise<Conn> {
  await writeAll(plain.writable, "STARTTLS\n");
  assert.equal(await readLine(plain.readable), "GO");
  return await startTls(plain, { serverName: "localhost", caCerts: [ca] });
}

Deno.test("startTls() and acceptTls() upgrade one connection after a plaintext exchange", async () => {
  await using server = smtpServer();
  await using plain = await plaintextExchange(server.addr.port);
  await using conn = await startTls(plain, { serverName: "localhost", caCerts: [ca] });
  await writeAll(conn.writable, "NOOP\r\n");
  assert.equal(await readLine(conn.readable), "250 2.0.0 OK over TLS: NOOP");
  // The server closed its side after answering, with a close_notify.
  assert.equal(await readLine(conn.readable), null);
});

Deno.test("an upgraded connection is the same Conn: the TCP echo handler serves it", async () => {
  await using server = goAheadServer({}, echo);
  await using plain = await tcp.connect({ port: server.addr.port });
  await using conn = await startTlsAfterGo(plain);
  const data = new Uint8Array(500_000).map((_, i) => i * 7);
  const [, back] = await Promise.all([
    writeAll(conn.writable, data).then(() => conn.closeWrite()),
    readAll(conn.readable),
  ]);
  assert.deepEqual(back, data);
});

Deno.test("startTls() refuses when plaintext bytes are buffered after the go-ahead (injection)", async () => {
  // A man in the middle appends a command to the server's 220 reply: it
  // arrives in the same segment and sits in the client's buffer.
  await using server = tcp.serve({ port: 0 }, async (plain) => {
    await readLine(plain.readable);
    await writeAll(plain.writable, "220 Ready to start TLS\r\n250 injected reply\r\n");
    await readAll(plain.readable); // Until the client hangs up.
  });
  await using plain = await tcp.connect({ port: server.addr.port });
  await writeAll(plain.writable, "STARTTLS\r\n");
  assert.equal(await readLine(plain.readable), "220 Ready to start TLS");
  const err = await rejectsWith(
    startTls(plain, { serverName: "localhost", caCerts: [ca] }),
    "ERR_TLS_PLAINTEXT_BUFFERED",
  );
  assert.match(
    err.message,
    /^refusing to start TLS: 20 plaintext bytes from 127\.0\.0\.1:\d+ arrived/,
  );
  assert.match(err.message, /CVE-2021-23222/);
  assert.match(err.message, /close this connection/);
  // The connection was left as it was: the bytes are still there.
  assert.equal(await readLine(plain.readable), "250 injected reply");
});

Deno.test("acceptTls() refuses when the client pipelined a command after STARTTLS (injection)", async () => {
  let refusal: unknown;
  await using server = tcp.serve({ port: 0 }, async (plain) => {
    assert.equal(await readLine(plain.readable), "STARTTLS");
    try {
      await acceptTls(plain, { cert, key });
    } catch (err) {
      refusal = err;
      await writeAll(plain.writable, "554 refused\r\n");
    }
  });
  await using plain = await tcp.connect({ port: server.addr.port });
  // Both lines in one write: the second is buffered when the server reads the first.
  await writeAll(plain.writable, "STARTTLS\r\nMAIL FROM:<attacker@example.com>\r\n");
  assert.equal(await readLine(plain.readable), "554 refused");
  assert.ok(refusal instanceof TlsError);
  assert.equal(refusal.code, "ERR_TLS_PLAINTEXT_BUFFERED");
  assert.match(refusal.message, /^refusing to start TLS: 34 plaintext bytes from 127\.0\.0\.1:\d+/);
});

Deno.test("an upgrade is refused while the readable or writable is locked, or for a non-TCP Conn", async () => {
  await using server = tcp.serve(
    { port: 0 },
    async (plain) => void (await readAll(plain.readable)),
  );
  await using plain = await tcp.connect({ port: server.addr.port });
  const reader = plain.readable.getReader();
  const err = await rejectsWith(startTls(plain, { caCerts: [ca] }), "ERR_TLS_CONN_BUSY");
  assert.match(err.message, /its readable is locked/);
  await rejectsWith(acceptTls(plain, { cert, key }), "ERR_TLS_CONN_BUSY");
  reader.releaseLock();
  const writer = plain.writable.getWriter();
  await rejectsWith(startTls(plain, { caCerts: [ca] }), "ERR_TLS_CONN_BUSY");
  writer.releaseLock();

  await using tlsServer = tlsServe({ port: 0, cert, key }, echo);
  await using secure = await tlsConnect({
    hostname: "localhost",
    port: tlsServer.addr.port,
    caCerts: [ca],
  });
  const already = await rejectsWith(startTls(secure, { caCerts: [ca] }), "ERR_TLS_NOT_UPGRADABLE");
  assert.match(already.message, /already speaks TLS/);
  const stranger: Conn = {
    readable: new ReadableStream(),
    writable: new WritableStream(),
    localAddr: { transport: "tcp", hostname: "127.0.0.1", port: 1 },
    remoteAddr: { transport: "tcp", hostname: "127.0.0.1", port: 2 },
    closed: Promise.resolve(),
    closeWrite: () => Promise.resolve(),
    close: () => Promise.resolve(),
    [Symbol.asyncDispose]: () => Promise.resolve(),
  };
  await rejectsWith(startTls(stranger), "ERR_TLS_NOT_UPGRADABLE");
});

Deno.test("startTls() verifies the server: untrusted CA and wrong name are typed errors", async () => {
  {
    await using server = smtpServer();
    const plain = await plaintextExchange(server.addr.port);
    const err = await rejectsWith(
      startTls(plain, { serverName: "localhost", caCerts: [otherCa.cert] }),
      "ERR_TLS_CERT_UNTRUSTED",
    );
    assert.match(err.message, /pass --ca \(caCerts\) with the CA that signed it/);
  }
  {
    await using server = smtpServer();
    const plain = await plaintextExchange(server.addr.port);
    const err = await rejectsWith(
      startTls(plain, { serverName: "mail.example.com", caCerts: [ca] }),
      "ERR_TLS_CERT_NAME_MISMATCH",
    );
    assert.match(
      err.message,
      /^certificate for "localhost", "127\.0\.0\.1", "::1" does not cover "mail\.example\.com"/,
    );
  }
});

Deno.test("acceptTls() closes a client that never finishes its handshake (handshakeTimeout)", async () => {
  let failure: unknown;
  await using server = smtpServer({ handshakeTimeout: 200, onError: (err) => (failure = err) });
  await using plain = await plaintextExchange(server.addr.port);
  // Say STARTTLS, then send half a ClientHello and stall.
  await writeAll(plain.writable, new Uint8Array([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]));
  assert.equal((await readAll(plain.readable).catch(() => new Uint8Array(0))).length, 0);
  assert.ok(failure instanceof TlsError);
  assert.equal(failure.code, "ERR_TLS_HANDSHAKE_TIMEOUT");
  assert.match(failure.message, /did not finish its TLS handshake within 0\.2s/);
});

Deno.test("a server's shutdown reaches connections upgraded with acceptTls()", async () => {
  const server = goAheadServer({ gracePeriod: 0 }, async (conn) => {
    await writeAll(conn.writable, "secure\n");
    await conn.closed; // Never ends by itself: only the server can close it.
  });
  await using plain = await tcp.connect({ port: server.addr.port });
  await using conn = await startTlsAfterGo(plain);
  assert.equal(await readLine(conn.readable), "secure");
  await server.close();
  // The upgraded connection was destroyed by the server's forced close.
  await readAll(conn.readable).catch(() => {});
});

Deno.test("a server's idle timeout reaches connections upgraded with acceptTls()", async () => {
  const events: string[] = [];
  await using server = goAheadServer({
    idleTimeout: 200,
    onEvent: (e) => void events.push(e.type),
  }, echo);
  await using plain = await tcp.connect({ port: server.addr.port });
  await using conn = await startTlsAfterGo(plain);
  await writeAll(conn.writable, "echo\n");
  assert.equal(await readLine(conn.readable), "echo");
  // Then silence: the server closes the upgraded connection as idle.
  await readAll(conn.readable).catch(() => {});
  assert.ok(events.includes("idle"), events.join());
});

Deno.test(
  "openssl s_client -starttls smtp upgrades against netkit's acceptTls and verifies the certificate",
  { ignore: !hasTool("openssl") },
  async () => {
    const dir = await Deno.makeTempDir();
    try {
      // The CA file openssl trusts, from the certs module (in memory above).
      await Deno.writeTextFile(`${dir}/ca.pem`, ca);
      await using server = smtpServer();
      // s_client reads stdin only after the handshake; the server answers and
      // closes, which ends s_client. Stdin stays open until the answer is in.
      const { stdout, stderr } = await runCommand({
        command: "openssl",
        args: [
          "s_client",
          "-starttls",
          "smtp",
          "-connect",
          `127.0.0.1:${server.addr.port}`,
          "-CAfile",
          `${dir}/ca.pem`,
          "-verify_hostname",
          "localhost",
          "-verify_return_error",
          "-crlf",
        ],
        stdin: "NOOP\n",
        holdStdinUntil: "OK over TLS: NOOP",
        timeout: 20_000,
      });
      assert.match(stdout, /Verify return code: 0 \(ok\)/, stdout + stderr);
      assert.match(stdout, /250 2\.0\.0 OK over TLS: NOOP/, stdout + stderr);
      assert.match(stdout, /subject=CN ?= ?localhost/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test("startTls() against a non-netkit STARTTLS server (Node's tls on a real Node)", {
  ignore: !hasTool("node"),
}, async () => {
  const dir = await Deno.makeTempDir();
  try {
    const written = await writeDevCerts({ out: dir });
    // A Node.js SMTP-like server: 220, STARTTLS -> 220, TLS, then one reply.
    const script = `
      const net = require("net"), tls = require("tls"), fs = require("fs");
      const ctx = tls.createSecureContext({ cert: fs.readFileSync(process.argv[1]), key: fs.readFileSync(process.argv[2]) });
      const server = net.createServer((socket) => {
        socket.write("220 node ESMTP\\r\\n");
        socket.once("data", () => {
          socket.write("220 go ahead\\r\\n", () => {
            const secure = new tls.TLSSocket(socket, { isServer: true, secureContext: ctx });
            secure.once("data", (d) => secure.end("250 node says " + String(d).trim() + "\\r\\n"));
            secure.on("error", () => {});
          });
        });
      });
      server.listen(0, "127.0.0.1", () => console.log(server.address().port));
      process.stdin.on("end", () => process.exit(0)); process.stdin.resume();
    `;
    const child = new Deno.Command("node", {
      args: ["-e", script, written.files.cert, written.files.key],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    try {
      const port = Number(await readLine(child.stdout));
      await using plain = await tcp.connect({ port });
      assert.equal(await readLine(plain.readable), "220 node ESMTP");
      await writeAll(plain.writable, "STARTTLS\r\n");
      assert.equal(await readLine(plain.readable), "220 go ahead");
      const caPem = await Deno.readTextFile(written.files.ca);
      await using conn = await startTls(plain, { serverName: "localhost", caCerts: [caPem] });
      await writeAll(conn.writable, "NOOP\r\n");
      assert.equal(await readLine(conn.readable), "250 node says NOOP");
    } finally {
      await child.stdin.close();
      await child.status;
      await child.stdout.cancel().catch(() => {});
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
