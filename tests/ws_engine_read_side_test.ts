// The WebSocket engine's read side is a then-callback loop (no async frame
// kept per idle connection): what an `await` loop gave for free — a
// handler's promise holding the next frames back, a failing handler or a
// reset ending the connection, the peer's FIN ending it once — is proved
// here on real sockets, at the engine's own interface.
import assert from "node:assert/strict";
import { SocketConn } from "../internal/socket_conn.ts";
import { FramedEngine } from "../websocket/connection/_engine.ts";
import type { EngineSink, Message } from "../websocket/connection/conn.ts";
import { CloseCode, encodeFrame, Opcode } from "../websocket/codec/mod.ts";
import { until, within } from "./support/time.ts";
import { concat } from "./support/bytes.ts";

interface Pair {
  engine: FramedEngine;
  /** What the sink heard, in order: messages as `m:<text>`, then `end:<code>`, `released`. */
  events: string[];
  client: Deno.Conn;
  /** Set by a test that closed the client itself. */
  clientClosed: boolean;
  [Symbol.asyncDispose](): Promise<void>;
}

async function pair(
  onMessage: (text: string) => void | Promise<void> = () => {},
): Promise<Pair> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const client = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
  const accepted = await listener.accept();
  listener.close();
  const engine = new FramedEngine(new SocketConn(accepted), true);
  const events: string[] = [];
  const sink: EngineSink = {
    message(data: Message) {
      events.push(`m:${data as string}`);
      return onMessage(data as string);
    },
    end(code) {
      events.push(`end:${code}`);
    },
    drain() {},
    released() {
      events.push("released");
    },
  };
  engine.attach(sink);
  engine.start();
  const p: Pair = {
    engine,
    events,
    client,
    clientClosed: false,
    async [Symbol.asyncDispose]() {
      engine.destroy();
      await within(5000, engine.closed, "the engine's release");
      if (!p.clientClosed) client.close();
    },
  };
  return p;
}

const text = (s: string) => encodeFrame(Opcode.Text, new TextEncoder().encode(s), { mask: true });

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let off = 0; off < bytes.length;) off += await conn.write(bytes.subarray(off));
}

Deno.test("a message handler's promise holds the frames after it back until it settles", async () => {
  let release!: () => void;
  const held = new Promise<void>((resolve) => release = resolve);
  await using p = await pair((t) => t === "one" ? held : undefined);
  // One write: both frames come in the same read.
  await writeAll(p.client, concat([text("one"), text("two"), text("three")]));
  await until(() => p.events.length >= 1, "the first message", 5000);
  // Another read's worth arrives while the handler holds the rest back.
  await writeAll(p.client, text("four"));
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(p.events, ["m:one"], "nothing after the held message is handled");
  release();
  await until(() => p.events.length >= 4, "the rest of the messages", 5000);
  assert.deepEqual(p.events, ["m:one", "m:two", "m:three", "m:four"]);
});

Deno.test("a message handler whose promise rejects ends the connection (1006) and releases it", async () => {
  await using p = await pair((t) =>
    t === "bad" ? Promise.reject(new Error("handler failed")) : undefined
  );
  await writeAll(p.client, concat([text("ok"), text("bad"), text("never")]));
  await within(5000, p.engine.closed, "the release");
  assert.deepEqual(p.events, ["m:ok", "m:bad", `end:${CloseCode.Abnormal}`, "released"]);
});

Deno.test("a message handler that throws ends the connection (1006), once", async () => {
  await using p = await pair((t) => {
    if (t === "boom") throw new Error("handler threw");
  });
  await writeAll(p.client, concat([text("boom"), text("never")]));
  await within(5000, p.engine.closed, "the release");
  assert.deepEqual(p.events, ["m:boom", `end:${CloseCode.Abnormal}`, "released"]);
});

Deno.test("the peer's FIN after its messages: every message, then one end (1006) and the release", async () => {
  await using p = await pair();
  await writeAll(p.client, concat([text("a"), text("b")]));
  await p.client.closeWrite();
  // The server half-closes once its queue is out; the client reads to the end.
  const sink = new Uint8Array(64);
  while ((await within(5000, p.client.read(sink), "the server's FIN")) !== null) { /* drain */ }
  await within(5000, p.engine.closed, "the release");
  assert.deepEqual(p.events, ["m:a", "m:b", `end:${CloseCode.Abnormal}`, "released"]);
});

Deno.test("a connection reset while a read waits ends the connection once and releases it", async () => {
  await using p = await pair();
  await writeAll(p.client, text("x"));
  await until(() => p.events.length === 1, "the message", 5000);
  // A ping the client never reads: closing with unread bytes makes its
  // kernel send a reset, not a FIN, so the engine's waiting read fails.
  const pong = p.engine.ping().catch((err: Error) => err.message);
  await new Promise((r) => setTimeout(r, 50));
  p.client.close();
  p.clientClosed = true;
  await within(5000, p.engine.closed, "the release");
  assert.deepEqual(p.events, ["m:x", `end:${CloseCode.Abnormal}`, "released"]);
  assert.equal(await pong, "the WebSocket closed before the pong");
});
