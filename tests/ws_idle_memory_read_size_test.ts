// What a quiet WebSocket connection's pending read holds: the engine reads
// the socket itself with a 256-byte buffer while the peer is quiet, grows to
// 64 KiB reads while a big message streams in, and goes back to 256 bytes
// after the next short read. Real sockets; the server end's reads are
// recorded (the size of every buffer handed to `read`).
import assert from "node:assert/strict";
import { SocketConn } from "../internal/socket_conn.ts";
import { MAX_READ_SIZE } from "../internal/read_sizes.ts";
import { SOCKET_IDLE_READ_SIZE as IDLE } from "../internal/socket_conn.ts";
import { FramedEngine } from "../websocket/connection/_engine.ts";
import type { EngineSink, Message } from "../websocket/connection/conn.ts";
import { encodeFrame, Opcode } from "../websocket/codec/mod.ts";
import { delay, within } from "./support/time.ts";

interface Pair {
  engine: FramedEngine;
  /** The length of every buffer the engine handed to the socket's `read`, in order. */
  reads: number[];
  messages: Message[];
  client: Deno.Conn;
  [Symbol.asyncDispose](): Promise<void>;
}

async function pair(): Promise<Pair> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const client = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
  const accepted = await listener.accept();
  listener.close();
  const reads: number[] = [];
  const socket = new Proxy(accepted, {
    get(target, key) {
      if (key === "read") {
        return (p: Uint8Array) => {
          reads.push(p.length);
          return target.read(p);
        };
      }
      const value = Reflect.get(target, key);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  const engine = new FramedEngine(new SocketConn(socket), true);
  const messages: Message[] = [];
  const sink: EngineSink = {
    message(data) {
      messages.push(data);
    },
    end() {},
    drain() {},
    released() {},
  };
  engine.attach(sink);
  engine.start();
  return {
    engine,
    reads,
    messages,
    client,
    async [Symbol.asyncDispose]() {
      engine.destroy();
      await within(5000, engine.closed, "the engine's release");
      client.close();
    },
  };
}

/** Sends a masked ping and reads the server's pong (2 + 4 bytes). */
async function pingPong(client: Deno.Conn): Promise<void> {
  await client.write(encodeFrame(Opcode.Ping, new Uint8Array([1, 2, 3, 4]), { mask: true }));
  const got = new Uint8Array(6);
  let have = 0;
  while (have < got.length) {
    const n = await client.read(got.subarray(have));
    if (n === null) throw new Error("the server closed before its pong");
    have += n;
  }
  assert.equal(got[0] & 0x0f, Opcode.Pong);
}

async function waitFor(ok: () => boolean): Promise<void> {
  while (!ok()) await delay(2);
}

Deno.test("a quiet WebSocket connection waits on a 256-byte read, from the first read on", async () => {
  await using p = await pair();
  await within(5000, waitFor(() => p.reads.length > 0), "the first read");
  assert.equal(p.reads[0], IDLE);
  await within(5000, pingPong(p.client), "the pong");
  await within(5000, waitFor(() => p.reads.length >= 2), "the next read");
  assert.equal(p.reads.at(-1), IDLE, "a ping does not grow the read");
});

Deno.test("a big message grows the reads to 64 KiB; the next short read brings them back to 256 bytes", async () => {
  await using p = await pair();
  const big = new Uint8Array(1024 * 1024).fill(7);
  const frame = encodeFrame(Opcode.Binary, big, { mask: true });
  for (let off = 0; off < frame.length;) off += await p.client.write(frame.subarray(off));
  await within(5000, waitFor(() => p.messages.length === 1), "the big message");
  assert.equal((p.messages[0] as Uint8Array).length, big.length);
  assert.ok(p.reads.includes(MAX_READ_SIZE), `reads reached 64 KiB: ${p.reads.join(",")}`);
  await within(5000, pingPong(p.client), "the pong");
  const count = p.reads.length;
  await within(5000, pingPong(p.client), "the second pong");
  await within(5000, waitFor(() => p.reads.length > count), "the read after it");
  assert.equal(p.reads.at(-1), IDLE, "quiet again: a 256-byte read waits");
});
