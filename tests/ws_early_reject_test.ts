// A plain ws:// port answers bytes that cannot be an HTTP request with 400 at
// once — not when the handshake timeout fires — and stays up for real clients.
import assert from "node:assert/strict";
import { connect as tcpConnect } from "../tcp/mod.ts";
import { connect, serve, type WebSocketServerEvent } from "../websocket/mod.ts";
import { readAll } from "./_helpers.ts";

const decoder = new TextDecoder();

async function send(port: number, bytes: Uint8Array | string): Promise<string> {
  await using conn = await tcpConnect({ port });
  const writer = conn.writable.getWriter();
  await writer.write(typeof bytes === "string" ? new TextEncoder().encode(bytes) : bytes);
  writer.releaseLock();
  // No FIN: the server must answer on the bytes alone.
  return decoder.decode(await readAll(conn.readable));
}

for (
  const [what, bytes] of [
    ["a TLS ClientHello", new Uint8Array([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc])],
    ["binary garbage", new Uint8Array([0x00, 0xff, 0x13, 0x37])],
    ["a method with a control byte", "GE\x01T / HTTP/1.1\r\n"],
    ["a line that starts with a space", " GET / HTTP/1.1\r\n"],
  ] as const
) {
  Deno.test(`ws:// answers ${what} with 400 at once, not at the handshake timeout`, async () => {
    const events: WebSocketServerEvent[] = [];
    // At the handshake timeout the server closes without an answer: only an early 400 passes.
    await using server = serve(
      { port: 0, handshakeTimeout: 20_000, onEvent: (e) => events.push(e) },
      { message: (ws, data) => void ws.send(data) },
    );
    const answer = await send(server.addr.port, bytes);
    assert.match(answer, /^HTTP\/1\.1 400 Bad Request\r\n/);
    assert.match(answer, /\r\n\r\nthis is not an HTTP request\n$/);
    // Reported once the client has read the answer and gone.
    let rejected = events.find((e) => e.type === "rejected");
    for (let i = 0; rejected === undefined && i < 200; i++) {
      await new Promise((r) => setTimeout(r, 10));
      rejected = events.find((e) => e.type === "rejected");
    }
    assert.equal(rejected?.type === "rejected" ? rejected.status : 0, 400);
    // And the server still upgrades a real client.
    await using ws = await connect(server.url);
    await ws.send("still here");
    assert.equal(await ws.receive(), "still here");
  });
}

Deno.test("ws:// waits for a request that arrives a byte at a time (a valid method is not garbage)", async () => {
  await using server = serve({ port: 0 }, (ws) => void ws.send("hi"));
  await using conn = await tcpConnect({ port: server.addr.port });
  const writer = conn.writable.getWriter();
  const request = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
  for (const ch of request) await writer.write(new TextEncoder().encode(ch));
  writer.releaseLock();
  const reader = conn.readable.getReader();
  const { value } = await reader.read();
  assert.match(decoder.decode(value), /^HTTP\/1\.1 101 Switching Protocols\r\n/);
  reader.releaseLock();
});
