// Frame-level protocol violations sent over raw sockets: each costs its own
// connection, with the right close code, and the server keeps serving.
import assert from "node:assert/strict";
import { connect, serve, type WebSocketConn } from "../websocket/mod.ts";
import { encodeFrame, Opcode } from "../websocket/codec/mod.ts";
import { closeBody, RawClient } from "./ws_helpers.ts";

const decoder = new TextDecoder();

/** An echo server (types kept) that records how each connection ended. */
function echoServer(options: { maxPayload?: number; maxFragments?: number } = {}) {
  const ends: { code: number; reason: string }[] = [];
  const server = serve({ port: 0, ...options, onEvent: () => {} }, {
    message: (ws, data) => void ws.send(data),
    close: (_ws, code, reason) => void ends.push({ code, reason }),
  });
  return { server, ends };
}

/** Sends `bytes` on a fresh upgraded raw connection; resolves to the server's close code. */
async function violate(port: number, bytes: Uint8Array): Promise<number | undefined> {
  await using client = await RawClient.upgraded(port);
  await client.write(bytes);
  const close = await client.readClose();
  assert.ok(await client.ended(), "the server closes the connection after its close frame");
  return close?.code;
}

async function stillServes(port: number): Promise<void> {
  await using ws = await connect(`ws://127.0.0.1:${port}/`);
  await ws.send("still here");
  assert.equal(await ws.receive(), "still here");
}

Deno.test("protocol violations close with 1002, 1007 or 1009, one connection each", async () => {
  const { server, ends } = echoServer({ maxPayload: 64 * 1024, maxFragments: 16 });
  await using _server = server;
  const port = server.addr.port;
  const cases: [string, Uint8Array, number][] = [
    ["unmasked frame", encodeFrame(Opcode.Text, "hi", { mask: false }), 1002],
    ["RSV1 without an extension", encodeFrame(Opcode.Text, "hi", { mask: true, rsv1: true }), 1002],
    ["opcode 0x3", encodeFrame(0x3, "hi", { mask: true }), 1002],
    ["opcode 0xc", encodeFrame(0xc, "", { mask: true }), 1002],
    [
      "invalid UTF-8",
      encodeFrame(Opcode.Text, new Uint8Array([0x68, 0xc3, 0x28]), { mask: true }),
      1007,
    ],
    ["close code 1005", encodeFrame(Opcode.Close, closeBody(1005), { mask: true }), 1002],
    ["close code 999", encodeFrame(Opcode.Close, closeBody(999), { mask: true }), 1002],
    ["ping over 125 bytes", encodeFrame(Opcode.Ping, "x".repeat(126), { mask: true }), 1002],
    ["stray continuation", encodeFrame(Opcode.Continuation, "x", { mask: true }), 1002],
  ];
  for (const [name, bytes, code] of cases) {
    assert.equal(await violate(port, bytes), code, name);
  }
  // Oversized: only the header of a 2 MiB frame is sent; the server does not wait for the payload.
  const header = encodeFrame(Opcode.Binary, new Uint8Array(2 * 1024 * 1024), { mask: true })
    .subarray(0, 14);
  assert.equal(await violate(port, header), 1009, "oversized");
  // A stream of empty fragments.
  const tiny = [encodeFrame(Opcode.Text, "", { mask: true, fin: false })];
  for (let i = 0; i < 100; i++) {
    tiny.push(encodeFrame(Opcode.Continuation, "", { mask: true, fin: false }));
  }
  const stream = new Uint8Array(tiny.reduce((n, f) => n + f.length, 0));
  tiny.reduce((off, f) => (stream.set(f, off), off + f.length), 0);
  assert.equal(await violate(port, stream), 1009, "too many fragments");
  await stillServes(port);
  // The server-side close handler saw each connection's code.
  const codes = ends.map((e) => e.code);
  for (const code of [1002, 1007, 1009]) assert.ok(codes.includes(code), `${code} in ${codes}`);
});

Deno.test("ping gets a pong with the same payload; fragments are joined; close is echoed", async () => {
  const { server, ends } = echoServer();
  await using _server = server;
  await using client = await RawClient.upgraded(server.addr.port);
  await client.send(Opcode.Ping, "are you there");
  const pong = await client.readFrame();
  assert.equal(pong?.opcode, Opcode.Pong);
  assert.equal(decoder.decode(pong!.payload), "are you there");

  await client.send(Opcode.Binary, new Uint8Array([1, 2]), false);
  await client.send(Opcode.Ping, "mid");
  await client.send(Opcode.Continuation, new Uint8Array([3]), true);
  const pong2 = await client.readFrame();
  assert.equal(pong2?.opcode, Opcode.Pong);
  const joined = await client.readFrame();
  assert.equal(joined?.opcode, Opcode.Binary);
  assert.deepEqual([...joined!.payload], [1, 2, 3]);

  await client.send(Opcode.Close, closeBody(4000, "done"));
  assert.deepEqual(await client.readClose(), { code: 4000, reason: "" });
  assert.ok(await client.ended());
  await server.close();
  assert.deepEqual(ends, [{ code: 4000, reason: "done" }]);
});

Deno.test("an oversized message costs its connection only: others keep their messages", async () => {
  const conns: WebSocketConn[] = [];
  await using server = serve({ port: 0, maxPayload: 1000, onEvent: () => {} }, {
    open: (ws) => void conns.push(ws),
    message: (ws, data) => void ws.send(data),
  });
  const url = `ws://127.0.0.1:${server.addr.port}/`;
  await using good = await connect(url, { maxPayload: 1 << 20 });
  await using bad = await connect(url);
  await good.send("before");
  assert.equal(await good.receive(), "before");
  await bad.send(new Uint8Array(1001));
  assert.equal(await bad.receive(), null);
  assert.equal(bad.closeCode, 1009);
  await good.send("after");
  assert.equal(await good.receive(), "after");
});
