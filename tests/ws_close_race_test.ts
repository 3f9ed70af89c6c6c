// Every message a peer sent before its close frame reaches the application,
// in order, also when this end closed first and the peer answers slowly
// (issue: ws-client printed "one" and the long line, never "three").
import assert from "node:assert/strict";
import { connect, type Message, serve, type WebSocketConn } from "../websocket/mod.ts";
import { pseudoRandomBytes } from "./support/bytes.ts";
import { delay } from "./support/time.ts";
import { runProgram, startServer } from "./_helpers.ts";

/** An echo server that takes `ms` per message: its answers trail our close frame. */
function slowEcho(ms: number) {
  return serve({ port: 0 }, {
    async message(ws, data) {
      await delay(ms);
      await ws.send(data);
    },
  });
}

async function readAllMessages(ws: WebSocketConn, pause = 0): Promise<Message[]> {
  const got: Message[] = [];
  for await (const msg of ws) {
    got.push(msg);
    if (pause > 0) await delay(pause);
  }
  return got;
}

Deno.test("close() right after sending still delivers every echo the slow peer sends before its close frame", async () => {
  await using server = slowEcho(30);
  await using ws = await connect(server.url);
  const big = "x".repeat(300_000); // over the inbox's 256 KiB
  const sent = ["one", big, "three"];
  for (const msg of sent) await ws.send(msg);
  const closing = ws.close(1000);
  await delay(200); // all three echoes arrive before anything is read
  const got = await readAllMessages(ws);
  await closing;
  assert.deepEqual(got.map((m) => (m as string).length), sent.map((m) => m.length));
  assert.deepEqual(got, sent);
  assert.equal(ws.closeCode, 1000);
});

Deno.test("after close(), a slow reader still gets every message the peer sent first (more than the inbox holds)", async () => {
  const count = 200;
  await using server = serve({ port: 0 }, {
    async message(ws) {
      // On the first message, burst `count` messages, then wait for our close.
      for (let i = 0; i < count; i++) void ws.send(`m${i}`);
      await delay(0);
    },
  });
  await using ws = await connect(server.url);
  await ws.send("go");
  const first = await ws.receive();
  assert.equal(first, "m0");
  const closing = ws.close(1000);
  const rest = await readAllMessages(ws, 1);
  await closing;
  assert.deepEqual([first, ...rest], Array.from({ length: count }, (_, i) => `m${i}`));
});

Deno.test("closeWrite() then reading to the end gets binary messages byte-exact, in order", async () => {
  await using server = slowEcho(20);
  await using ws = await connect(server.url);
  const sent = [pseudoRandomBytes(1), pseudoRandomBytes(400_000, 7), pseudoRandomBytes(10, 9)];
  for (const msg of sent) await ws.send(msg);
  await ws.closeWrite();
  const got = await readAllMessages(ws);
  assert.deepEqual(got, sent);
});

Deno.test("ws-client stdin mode prints every echoed line, the last one after a 270 KB line included", async () => {
  await using server = await startServer("cli/ws_server.ts", ["--mode", "echo", "--port", "0"]);
  const long = Array.from(pseudoRandomBytes(270_000, 3), (b) => (b % 36).toString(36)).join("");
  const run = await runProgram("cli/ws_client.ts", [
    "--url",
    `ws://127.0.0.1:${server.port}/`,
  ], { stdin: `one\n${long}\nthree\n` });
  assert.equal(run.code, 0, run.stderr);
  assert.equal(run.stdout, `one\n${long}\nthree\n`);
  await server.stop("SIGTERM");
});
