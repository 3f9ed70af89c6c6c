// The client: ws and wss, failures named clearly, big messages, and
// reconnection across a server restart.
import assert from "node:assert/strict";
import { createDevCerts } from "../certs/mod.ts";
import { NetkitError } from "../errors.ts";
import { connect, ReconnectingWebSocket, serve, type WebSocketConn } from "../websocket/mod.ts";
import { pseudoRandomBytes } from "./_helpers.ts";

const certs = await createDevCerts({ hosts: ["localhost", "127.0.0.1"] });

function echoServer(options: Parameters<typeof serve>[0] = {}) {
  return serve({ port: 0, ...options }, async (ws) => {
    for await (const msg of ws) await ws.send(msg);
  });
}

Deno.test("wss: the client trusts the development CA and round-trips over TLS", async () => {
  await using server = echoServer({ cert: certs.cert, key: certs.key });
  assert.ok(server.secure);
  assert.match(server.url, /^wss:\/\/127\.0\.0\.1:\d+$/);
  await using ws = await connect(`wss://localhost:${server.addr.port}/`, { caCerts: [certs.ca] });
  await ws.send("over tls");
  assert.equal(await ws.receive(), "over tls");
  const data = pseudoRandomBytes(200_000);
  await ws.send(data);
  assert.deepEqual(await ws.receive(), data);
  await ws.close();
  assert.equal(ws.closeCode, 1000);
});

Deno.test("wss failures are named: untrusted certificate, name mismatch, plaintext server", async () => {
  await using server = echoServer({ cert: certs.cert, key: certs.key, onEvent: () => {} });
  const port = server.addr.port;
  await assert.rejects(connect(`wss://localhost:${port}/`), (err: unknown) => {
    assert.ok(err instanceof NetkitError);
    assert.equal(err.code, "ERR_TLS_CERT_UNTRUSTED");
    return true;
  });
  await assert.rejects(
    connect(`wss://127.0.0.1:${port}/`, { caCerts: [certs.ca], serverName: "example.com" }),
    (err: unknown) => err instanceof NetkitError && err.code === "ERR_TLS_CERT_NAME_MISMATCH",
  );
  await using plain = echoServer({ onEvent: () => {} });
  await assert.rejects(
    connect(`wss://127.0.0.1:${plain.addr.port}/`, { caCerts: [certs.ca], timeout: 300 }),
    (err: unknown) => err instanceof NetkitError && err.code.startsWith("ERR_TLS"),
  );
  // The TLS server survived all of that.
  await using ws = await connect(`wss://127.0.0.1:${port}/`, { caCerts: [certs.ca] });
  await ws.send("ok");
  assert.equal(await ws.receive(), "ok");
});

Deno.test("a refused connection and an aborted one fail clearly", async () => {
  const server = echoServer();
  const port = server.addr.port;
  await server.close();
  await assert.rejects(connect(`ws://127.0.0.1:${port}/`), (err: unknown) => {
    assert.ok(err instanceof NetkitError);
    assert.equal(err.code, "ECONNREFUSED");
    return true;
  });
  const aborted = new AbortController();
  aborted.abort(new Error("stop"));
  await assert.rejects(connect(`ws://127.0.0.1:${port}/`, { signal: aborted.signal }), /stop/);
});

Deno.test("big messages pass when both sides raise maxPayload; send() waits on the backlog", async () => {
  await using server = echoServer({ maxPayload: 8 << 20 });
  await using ws = await connect(server.url, { maxPayload: 8 << 20 });
  const data = pseudoRandomBytes(5 << 20, 9);
  const sent = ws.send(data);
  assert.ok(ws.bufferedAmount > 0, "queued, not yet written");
  assert.equal(await sent, true);
  assert.ok(ws.bufferedAmount <= 64 * 1024);
  assert.deepEqual(await ws.receive(), data);
  // The same message over the client's default 1 MiB: the client closes with 1009.
  await using small = await connect(server.url);
  await small.send(new Uint8Array(2 << 20));
  assert.equal(await small.receive(), null);
  assert.equal(small.closeCode, 1009);
});

Deno.test("the writable sends binary messages; the readable yields each message as one chunk", async () => {
  await using server = echoServer();
  await using ws = await connect(server.url);
  const writer = ws.writable.getWriter();
  await writer.write(new Uint8Array([1, 2, 3]));
  await writer.write(new Uint8Array([4]));
  writer.releaseLock();
  const reader = ws.readable.getReader();
  assert.deepEqual((await reader.read()).value, new Uint8Array([1, 2, 3]));
  assert.deepEqual((await reader.read()).value, new Uint8Array([4]));
  await ws.writable.close(); // close 1000
  assert.equal((await reader.read()).done, true);
  assert.equal(ws.closeCode, 1000);
});

Deno.test("ReconnectingWebSocket reconnects with backoff after the server goes away and comes back", async () => {
  const first = echoServer();
  const port = first.addr.port;
  const reconnected: WebSocketConn[] = [];
  const disconnects: number[] = [];
  await using rws = new ReconnectingWebSocket(`ws://127.0.0.1:${port}/`, {
    reconnect: {
      minDelay: 20,
      maxDelay: 100,
      onReconnect: (ws) => void reconnected.push(ws),
      onDisconnect: (code) => void disconnects.push(code),
    },
  });
  await rws.ready();
  await rws.send("one");
  assert.equal(await rws.receive(), "one");
  await first.close(); // clients get 1001
  while (disconnects.length === 0) await new Promise((r) => setTimeout(r, 5));
  assert.deepEqual(disconnects, [1001]);
  assert.equal(await rws.send("lost"), false, "nothing to send on while disconnected");
  // Let a few attempts fail against the closed port, then come back on it.
  await new Promise((r) => setTimeout(r, 150));
  await using second = echoServer({ port });
  const ws = await rws.ready();
  assert.equal(reconnected.length, 1);
  assert.equal(reconnected[0], ws);
  assert.equal(rws.reconnects, 1);
  await rws.send("two");
  assert.equal(await rws.receive(), "two");
  await rws.close();
  assert.equal(await rws.receive(), null);
  await assert.rejects(rws.ready());
  await second.close();
});

Deno.test("ReconnectingWebSocket gives up after maxAttempts and says why", async () => {
  const server = echoServer();
  const port = server.addr.port;
  await server.close();
  const rws = new ReconnectingWebSocket(`ws://127.0.0.1:${port}/`, {
    reconnect: { minDelay: 1, maxDelay: 5, maxAttempts: 3 },
  });
  await rws.closed;
  assert.ok(rws.error instanceof NetkitError);
  assert.equal((rws.error as NetkitError).code, "ECONNREFUSED");
  assert.equal(await rws.receive(), null);
});
