// The engine's write path, as a fan-out uses it: frames queued while a
// write is out leave together in the next socket write, in order; a burst
// published to many connections is joined once and shared; the
// slow-consumer policy, `drain` and release work as before. Real sockets:
// the server end's socket is the accepted Deno.Conn, with its writes
// recorded on the way through.
import assert from "node:assert/strict";
import { SocketConn } from "../internal/socket_conn.ts";
import {
  type ConnectionOptions,
  FramedEngine,
  type Hooks,
} from "../websocket/connection/_engine.ts";
import type { EngineSink } from "../websocket/connection/conn.ts";
import { BroadcastHub } from "../websocket/mod.ts";
import { within } from "./support/time.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

interface Pair {
  engine: FramedEngine;
  /** Every buffer the engine handed to the socket's `write`, as handed. */
  writes: Uint8Array[];
  client: Deno.Conn;
  drains: number;
  [Symbol.asyncDispose](): Promise<void>;
}

/** A server engine over a real accepted socket (writes recorded) and the raw client socket. */
async function pair(options: ConnectionOptions = {}, hooks: Hooks = {}): Promise<Pair> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const client = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
  const accepted = await listener.accept();
  listener.close();
  const writes: Uint8Array[] = [];
  const socket = new Proxy(accepted, {
    get(target, key) {
      if (key === "write") {
        return (bytes: Uint8Array) => {
          writes.push(bytes);
          return target.write(bytes);
        };
      }
      const value = Reflect.get(target, key);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  const engine = new FramedEngine(new SocketConn(socket), true, options, hooks);
  const result: Pair = {
    engine,
    writes,
    client,
    drains: 0,
    async [Symbol.asyncDispose]() {
      engine.destroy();
      await within(5000, engine.closed, "the engine's release");
      client.close();
    },
  };
  const sink: EngineSink = {
    message() {},
    end() {},
    drain() {
      result.drains++;
    },
    released() {},
  };
  engine.attach(sink);
  engine.start();
  return result;
}

/** Reads `n` unmasked server frames from `conn`: their opcodes and payloads. */
async function readFrames(
  conn: Deno.Conn,
  n: number,
): Promise<{ opcode: number; payload: Uint8Array }[]> {
  const frames: { opcode: number; payload: Uint8Array }[] = [];
  let pending = new Uint8Array(0);
  const buf = new Uint8Array(256 * 1024);
  while (frames.length < n) {
    const got = await conn.read(buf);
    if (got === null) throw new Error(`the connection ended after ${frames.length} of ${n} frames`);
    const joined = new Uint8Array(pending.length + got);
    joined.set(pending);
    joined.set(buf.subarray(0, got), pending.length);
    let at = 0;
    for (;;) {
      if (joined.length - at < 2) break;
      let len = joined[at + 1] & 0x7f;
      let header = 2;
      if (len === 126) {
        if (joined.length - at < 4) break;
        len = (joined[at + 2] << 8) | joined[at + 3];
        header = 4;
      } else if (len === 127) {
        if (joined.length - at < 10) break;
        len = Number(new DataView(joined.buffer, at + 2, 8).getBigUint64(0));
        header = 10;
      }
      if (joined.length - at < header + len) break;
      frames.push({
        opcode: joined[at] & 0x0f,
        payload: joined.slice(at + header, at + header + len),
      });
      at += header + len;
    }
    pending = joined.slice(at);
  }
  assert.equal(pending.length, 0, "no bytes beyond the frames expected");
  return frames;
}

const texts = (frames: { payload: Uint8Array }[]) => frames.map((f) => decoder.decode(f.payload));
const names = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}${i}`);

Deno.test("frames queued while a write is out leave in the next socket write, all of them, in order", async () => {
  await using p = await pair();
  assert.equal(p.engine.sendData("m0", false), "sent");
  // The write of m0 is issued from the microtask its send scheduled, and
  // is out until the event loop has written it: what is sent now waits.
  await null;
  assert.equal(p.writes.length, 1);
  for (let i = 1; i < 10; i++) assert.equal(p.engine.sendData(`m${i}`, false), "sent");
  assert.equal(p.writes.length, 1, "nothing more written while the first write is out");
  assert.equal(p.engine.bufferedAmount, 10 * 4, "every frame counted until its write completes");
  const frames = await within(5000, readFrames(p.client, 10), "ten frames");
  assert.deepEqual(texts(frames), names("m", 10));
  await within(5000, p.engine.waitBelow(0), "the backlog to empty");
  assert.equal(p.writes.length, 2, "the nine frames queued meanwhile went out in one write");
  assert.equal(p.writes[1].length, 9 * 4);
  assert.equal(p.engine.bufferedAmount, 0);
  assert.equal(p.engine.bytesWritten, 10 * 4);
});

Deno.test("a burst published to many connections is one write each, joined once and shared", async () => {
  const hub = new BroadcastHub();
  const pairs: Pair[] = [];
  try {
    for (let i = 0; i < 6; i++) {
      const p = await pair();
      pairs.push(p);
      hub.subscribe(p.engine, "t");
    }
    for (const m of names("a", 5)) {
      assert.deepEqual(hub.publish("t", m), { delivered: 6, dropped: 0 });
    }
    for (const p of pairs) {
      const frames = await within(5000, readFrames(p.client, 5), "the burst");
      assert.deepEqual(texts(frames), names("a", 5));
      await within(5000, p.engine.waitBelow(0), "the backlog to empty");
      assert.equal(p.writes.length, 1, "the five frames in one write");
      assert.equal(p.writes[0].length, 5 * 4);
    }
    // The first connection joins the run into its own buffer; every later
    // one that writes the same frames uses one shared copy.
    const shared = pairs.slice(1).map((p) => p.writes[0].buffer);
    assert.equal(new Set(shared).size, 1, "one buffer for the other five");
    assert.notEqual(pairs[0].writes[0].buffer, shared[0]);
    for (const p of pairs) assert.deepEqual(p.writes[0], pairs[0].writes[0]);

    // Another burst, of other frames: written anew (never the old bytes), in order.
    for (const m of names("b", 3)) hub.publish("t", m);
    hub.publish("t", new Uint8Array([1, 2, 3]));
    for (const p of pairs) {
      const frames = await within(5000, readFrames(p.client, 4), "the second burst");
      assert.deepEqual(texts(frames.slice(0, 3)), names("b", 3));
      assert.equal(frames[3].opcode, 2);
      assert.deepEqual(frames[3].payload, new Uint8Array([1, 2, 3]));
      await within(5000, p.engine.waitBelow(0), "the backlog to empty");
      assert.equal(p.writes.length, 2);
    }
  } finally {
    for (const p of pairs) {
      hub.unsubscribeAll(p.engine);
      await p[Symbol.asyncDispose]();
    }
  }
});

Deno.test("connections in different states share nothing they should not: each gets its own frames, in order", async () => {
  // One connection is behind (a frame of its own queued first), so its run
  // differs from the others' and is joined on its own.
  const hub = new BroadcastHub();
  await using a = await pair();
  await using b = await pair();
  await using c = await pair();
  for (const p of [a, b, c]) hub.subscribe(p.engine, "t");
  assert.equal(b.engine.sendData("own", false), "sent");
  for (const m of names("x", 3)) hub.publish("t", m);
  const [fa, fb, fc] = await within(
    5000,
    Promise.all([readFrames(a.client, 3), readFrames(b.client, 4), readFrames(c.client, 3)]),
    "every connection's frames",
  );
  assert.deepEqual(texts(fa), names("x", 3));
  assert.deepEqual(texts(fb), ["own", ...names("x", 3)]);
  assert.deepEqual(texts(fc), names("x", 3));
  for (const p of [a, b, c]) hub.unsubscribeAll(p.engine);
});

Deno.test("a write the socket takes in parts goes on from where it stopped: a large message and small ones after it arrive whole, in order", async () => {
  await using p = await pair({ maxBuffered: 64 * 1024 * 1024 });
  const big = new Uint8Array(8 * 1024 * 1024);
  for (let i = 0; i < big.length; i += 4096) big[i] = (i / 4096) & 0xff;
  assert.equal(p.engine.sendData(big, true), "sent");
  for (const m of names("after", 3)) assert.equal(p.engine.sendData(m, false), "sent");
  const frames = await within(10_000, readFrames(p.client, 4), "the large message and the rest");
  assert.equal(frames[0].opcode, 2);
  assert.deepEqual(frames[0].payload, big);
  assert.deepEqual(texts(frames.slice(1)), names("after", 3));
  await within(5000, p.engine.waitBelow(0), "the backlog to empty");
  assert.equal(p.engine.bufferedAmount, 0);
  assert.equal(p.drains, 1, "drain once the backlog over the high-water mark emptied");
});

Deno.test("policy drop: a burst over maxBuffered is cut where it passes, the rest goes out in order, then drained", async () => {
  const events: [string, number][] = [];
  await using p = await pair(
    { maxBuffered: 10 * 1024, policy: "drop" },
    { onSlow: (_engine, event, dropped) => events.push([event, dropped]) },
  );
  const payload = "y".repeat(1000); // a 1004-byte frame
  const statuses = names("", 20).map(() => p.engine.sendData(payload, false));
  // Nothing is written within the turn: the backlog holds what fits in 10 KiB.
  assert.deepEqual(statuses, [...Array(10).fill("sent"), ...Array(10).fill("dropped")]);
  assert.deepEqual(events, [["dropping", 1]]);
  const frames = await within(5000, readFrames(p.client, 10), "what was queued");
  assert.equal(frames.length, 10);
  await within(5000, p.engine.waitBelow(0), "the backlog to empty");
  assert.deepEqual(events, [["dropping", 1], ["drained", 10]]);
  assert.equal(p.engine.dropped, 10);
  assert.equal(p.engine.sendData("again", false), "sent");
  assert.deepEqual(texts(await within(5000, readFrames(p.client, 1), "the next frame")), ["again"]);
});

Deno.test("policy close: a burst over maxBuffered closes with 1008 after what was already out", async () => {
  const events: string[] = [];
  await using p = await pair(
    { maxBuffered: 4 * 1024, policy: "close" },
    { onSlow: (_engine, event) => events.push(event) },
  );
  assert.equal(p.engine.sendData("first", false), "sent");
  await null; // "first" is out
  const payload = "z".repeat(1000);
  const statuses = names("", 6).map(() => p.engine.sendData(payload, false));
  assert.deepEqual(statuses, ["sent", "sent", "sent", "sent", "closed", "closed"]);
  assert.deepEqual(events, ["closed"]);
  // "first" was in flight; the backlog behind it is discarded, the close frame follows.
  const frames = await within(5000, readFrames(p.client, 2), "the first frame and the close");
  assert.deepEqual(texts(frames.slice(0, 1)), ["first"]);
  assert.equal(frames[1].opcode, 8);
  assert.equal((frames[1].payload[0] << 8) | frames[1].payload[1], 1008);
});

Deno.test("an engine destroyed with a write due or out is released, and writes nothing more", async () => {
  {
    await using p = await pair();
    assert.equal(p.engine.sendData("never", false), "sent");
    p.engine.destroy(); // before the microtask that would have written it
    await within(5000, p.engine.closed, "the release");
    assert.equal(p.writes.length, 0);
    assert.equal(p.engine.bufferedAmount, 0);
  }
  {
    await using p = await pair();
    assert.equal(p.engine.sendData("out", false), "sent");
    await null; // the write is out
    assert.equal(p.writes.length, 1);
    assert.equal(p.engine.sendData("behind", false), "sent");
    p.engine.destroy();
    await within(5000, p.engine.closed, "the release once the write settles");
    assert.equal(p.writes.length, 1, "what was queued behind it is not written");
    assert.equal(p.engine.sendData("late", false), "closed");
  }
});

Deno.test("many engines kicked in one turn: each writes its own frames (one microtask for all)", async () => {
  const pairs: Pair[] = [];
  try {
    for (let i = 0; i < 20; i++) pairs.push(await pair());
    pairs.forEach((p, i) => {
      for (let k = 0; k < 3; k++) p.engine.sendData(`c${i}-${k}`, false);
    });
    await null;
    for (const p of pairs) assert.equal(p.writes.length, 1, "every engine's write is out");
    for (const [i, p] of pairs.entries()) {
      const frames = await within(5000, readFrames(p.client, 3), `connection ${i}'s frames`);
      assert.deepEqual(texts(frames), [0, 1, 2].map((k) => `c${i}-${k}`));
      const expected = texts(frames).flatMap((t) => [0x81, t.length, ...encoder.encode(t)]);
      assert.deepEqual(p.writes[0], new Uint8Array(expected));
    }
  } finally {
    for (const p of pairs) await p[Symbol.asyncDispose]();
  }
});
