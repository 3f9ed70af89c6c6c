// The netkit.v1 subprotocol end to end: positions with every broadcast,
// resume after a drop (exactly once, in order, also when publishes race the
// resume), recovered:false when the history cannot cover the gap (trimmed,
// another epoch) — never a silent gap — and plain clients unchanged to the
// byte.
import assert from "node:assert/strict";
import {
  connect,
  ReconnectingWebSocket,
  serve,
  type ServeOptions,
  type WebSocketConn,
  type WebSocketHandler,
} from "../websocket/mod.ts";
import {
  decodeServerMessage,
  encodeClientEnvelope,
  formatResumeUrl,
  NETKIT_V1,
  type NetkitV1Event,
} from "../websocket/codec/mod.ts";
import { delay, until } from "./support/time.ts";
import { RawClient } from "./ws_helpers.ts";

const noop = () => {};
const TOPIC = "chat";

/** A broadcast room: everyone on TOPIC, every message to everyone (the sender included). */
function room(conns?: Set<WebSocketConn>): WebSocketHandler {
  return {
    open(ws) {
      conns?.add(ws);
      ws.subscribe(TOPIC);
    },
    message: (ws, data) => void ws.publish(TOPIC, data, { includeSelf: true }),
    close: (ws) => void conns?.delete(ws),
  };
}

function history(options: Partial<ServeOptions> = {}): ServeOptions {
  return { port: 0, onEvent: noop, historySize: 1000, ...options };
}

/** The next netkit.v1 event on a library client (throws at the end of the stream). */
async function next(ws: WebSocketConn): Promise<NetkitV1Event> {
  const msg = await ws.receive();
  if (msg === null) throw new Error(`closed (${ws.closeCode} ${ws.closeReason})`);
  const event = decodeServerMessage(msg);
  assert.notEqual(event, null);
  return event!;
}

/** A netkit.v1 client on `url` asking to resume TOPIC after `offset` of `epoch`. */
function resumeAt(url: string, epoch: string, offset: number): Promise<WebSocketConn> {
  return connect(formatResumeUrl(url, { [TOPIC]: { epoch, offset } }), {
    protocols: [NETKIT_V1],
  });
}

/** Reads `count` data messages on TOPIC; checks that they are contiguous after `after`. */
async function readRun(ws: WebSocketConn, after: number, count: number): Promise<string[]> {
  const got: string[] = [];
  let offset = after;
  while (got.length < count) {
    const e = await next(ws);
    assert.equal(e.type, "message", JSON.stringify(e));
    if (e.type !== "message") continue;
    assert.equal(e.offset, offset + 1, `a gap or a duplicate after offset ${offset}`);
    offset = e.offset!;
    got.push(String(e.data));
  }
  return got;
}

const range = (from: number, to: number) =>
  Array.from({ length: to - from + 1 }, (_, i) => `m${from + i}`);

Deno.test("plain clients get the same bytes from a server with history as from one without", async () => {
  const transcript = async (historySize: number) => {
    await using server = serve({ port: 0, onEvent: noop, historySize }, room());
    await using raw = await RawClient.connect(server.addr.port);
    await raw.write(
      [
        "GET / HTTP/1.1",
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        "",
        "",
      ].join("\r\n"),
    );
    const head = await raw.readHead();
    await raw.send(0x1, "hello");
    const frames = [await raw.readFrame()];
    await raw.send(0x2, new Uint8Array([1, 2, 3]));
    frames.push(await raw.readFrame());
    server.publish(TOPIC, "from the server");
    frames.push(await raw.readFrame());
    return { head, frames };
  };
  const off = await transcript(0);
  const on = await transcript(1000);
  assert.equal(on.head, off.head);
  assert.doesNotMatch(on.head, /sec-websocket-protocol/i);
  assert.deepEqual(on.frames, off.frames);
  assert.deepEqual(on.frames.map((f) => f!.opcode), [1, 2, 1]);
});

Deno.test("a netkit.v1 client is told its position, then gets each message in an envelope, type kept", async () => {
  await using server = serve(history(), {
    open(ws) {
      ws.subscribe(TOPIC);
      void ws.send("welcome"); // to this connection alone: an envelope without a position
    },
    message(ws, data) {
      // "quiet" is published without includeSelf: the sender gets the position only.
      ws.publish(TOPIC, data, { includeSelf: data !== "quiet" });
    },
  });
  server.publish(TOPIC, "before"); // offset 1
  await using ws = await connect(server.url, { protocols: [NETKIT_V1] });
  assert.equal(ws.protocol, NETKIT_V1);
  const epoch = server.hub.position(TOPIC)!.epoch;
  assert.deepEqual(await next(ws), { type: "subscribed", topic: TOPIC, epoch, offset: 1 });
  assert.deepEqual(await next(ws), { type: "message", data: "welcome" });
  await ws.send(encodeClientEnvelope("hi"));
  assert.deepEqual(await next(ws), { type: "message", data: "hi", topic: TOPIC, epoch, offset: 2 });
  await ws.send(encodeClientEnvelope(new Uint8Array([7, 8])));
  assert.deepEqual(await next(ws), {
    type: "message",
    data: new Uint8Array([7, 8]),
    topic: TOPIC,
    epoch,
    offset: 3,
  });
  await ws.send(encodeClientEnvelope("quiet"));
  assert.deepEqual(await next(ws), { type: "skip", topic: TOPIC, epoch, offset: 4 });
  // A plain client in the same room sees the messages as they were sent.
  await using plain = await connect(server.url);
  assert.equal(plain.protocol, "");
  assert.equal(await plain.receive(), "welcome");
  await plain.send("plain");
  assert.equal(await plain.receive(), "plain");
  assert.deepEqual(await next(ws), {
    type: "message",
    data: "plain",
    topic: TOPIC,
    epoch,
    offset: 5,
  });
});

Deno.test("a netkit.v1 client dropped mid-stream and resuming gets every message exactly once, in order", async () => {
  await using server = serve(history(), room());
  await using first = await connect(server.url, { protocols: [NETKIT_V1] });
  const sub = await next(first);
  assert.equal(sub.type, "subscribed");
  for (let i = 1; i <= 100; i++) server.publish(TOPIC, `m${i}`);
  assert.deepEqual(await readRun(first, 0, 40), range(1, 40));
  // Dropped after the 40th message it read (the rest it had were in flight).
  first.destroy();
  for (let i = 101; i <= 150; i++) server.publish(TOPIC, `m${i}`);
  const since = { [TOPIC]: { epoch: sub.type === "subscribed" ? sub.epoch : "", offset: 40 } };
  await using again = await connect(formatResumeUrl(server.url, since), {
    protocols: [NETKIT_V1],
  });
  assert.deepEqual(await next(again), {
    type: "subscribed",
    topic: TOPIC,
    epoch: since[TOPIC].epoch,
    offset: 40,
    recovered: true,
  });
  const replayed = readRun(again, 40, 130);
  // Live messages after the replay continue the same run.
  for (let i = 151; i <= 170; i++) server.publish(TOPIC, `m${i}`);
  assert.deepEqual(await replayed, range(41, 170));
});

Deno.test("a position older than the history is answered recovered:false (trimmed), then live", async () => {
  await using server = serve(history({ historySize: 10 }), room());
  server.publish(TOPIC, "m1");
  const epoch = server.hub.position(TOPIC)!.epoch;
  for (let i = 2; i <= 30; i++) server.publish(TOPIC, `m${i}`);
  await using ws = await resumeAt(server.url, epoch, 1);
  assert.deepEqual(await next(ws), {
    type: "subscribed",
    topic: TOPIC,
    epoch,
    offset: 30,
    recovered: false,
    reason: "trimmed",
  });
  server.publish(TOPIC, "m31");
  assert.deepEqual(await readRun(ws, 30, 1), ["m31"]);
  // The oldest offset still kept resumes in full.
  await using edge = await resumeAt(server.url, epoch, 21);
  const answer = await next(edge);
  assert.equal(answer.type === "subscribed" && answer.recovered, true);
  assert.deepEqual(await readRun(edge, 21, 10), range(22, 31));
});

Deno.test("history trimmed under a slow client: closed by its backlog, it resumes to recovered:false, never a silent gap", async () => {
  await using server = serve(
    history({ historySize: 50, maxBuffered: 64 * 1024, policy: "close" }),
    room(),
  );
  await using slow = await connect(server.url, { protocols: [NETKIT_V1] });
  const sub = await next(slow);
  assert.equal(sub.type, "subscribed");
  const big = "x".repeat(4096);
  for (let i = 1; i <= 400; i++) server.publish(TOPIC, `${i} ${big}`);
  // Whatever arrived before the close is contiguous from 1; then 1008.
  let offset = 0;
  for (;;) {
    const msg = await slow.receive();
    if (msg === null) break;
    const e = decodeServerMessage(msg)!;
    assert.equal(e.type === "message" && e.offset, offset + 1);
    offset++;
  }
  assert.equal(slow.closeCode, 1008);
  assert.ok(offset < 350, `the slow client read ${offset}`);
  const epoch = sub.type === "subscribed" ? sub.epoch : "";
  await using back = await resumeAt(server.url, epoch, offset);
  assert.deepEqual(await next(back), {
    type: "subscribed",
    topic: TOPIC,
    epoch,
    offset: 400,
    recovered: false,
    reason: "trimmed",
  });
});

Deno.test("policy drop: a slow netkit.v1 client catches up from the log once it drains; a plain one misses messages", async () => {
  await using server = serve(history({ maxBuffered: 8 * 1024, policy: "drop" }), room());
  await using v1 = await connect(server.url, { protocols: [NETKIT_V1] });
  await using plain = await connect(server.url);
  assert.equal((await next(v1)).type, "subscribed");
  const body = "y".repeat(1000);
  for (let i = 1; i <= 300; i++) server.publish(TOPIC, `m${i} ${body}`);
  const got = await readRun(v1, 0, 300);
  assert.deepEqual(got.map((m) => m.split(" ")[0]), range(1, 300));
  // The plain client got fewer: the policy skipped it while it was behind.
  let plainGot = 0;
  server.publish(TOPIC, "end");
  for (let msg; (msg = await plain.receive()) !== "end";) {
    assert.notEqual(msg, null);
    plainGot++;
  }
  assert.ok(plainGot < 300, `the plain client got ${plainGot}`);
  assert.deepEqual(await readRun(v1, 300, 1), ["end"]);
});

Deno.test("policy drop with a short history: the client is told recovered:false (trimmed) mid-stream and goes on live", async () => {
  await using server = serve(
    history({ historySize: 5, maxBuffered: 4 * 1024, policy: "drop" }),
    room(),
  );
  await using ws = await connect(server.url, { protocols: [NETKIT_V1] });
  assert.equal((await next(ws)).type, "subscribed");
  const body = "z".repeat(1000);
  for (let i = 1; i <= 200; i++) server.publish(TOPIC, `m${i} ${body}`);
  let offset = 0;
  let told = false;
  while (!told) {
    const e = await next(ws);
    if (e.type === "subscribed") {
      assert.equal(e.recovered, false);
      assert.equal(e.reason, "trimmed");
      assert.ok(e.offset > offset);
      offset = e.offset;
      told = true;
    } else {
      assert.equal(e.type === "message" && e.offset, offset + 1, "a silent gap");
      offset++;
    }
  }
  server.publish(TOPIC, "after");
  const rest = await readRun(ws, offset, 200 - offset + 1);
  assert.equal(rest.at(-1), "after");
});

Deno.test("a position from another log (the server restarted) is answered recovered:false (epoch)", async () => {
  let epoch: string;
  {
    await using before = serve(history(), room());
    before.publish(TOPIC, "lost");
    epoch = before.hub.position(TOPIC)!.epoch;
  }
  await using after = serve(history(), room());
  after.publish(TOPIC, "new 1");
  await using ws = await resumeAt(after.url, epoch, 1);
  const now = after.hub.position(TOPIC)!;
  assert.notEqual(now.epoch, epoch);
  assert.deepEqual(await next(ws), {
    type: "subscribed",
    topic: TOPIC,
    epoch: now.epoch,
    offset: 1,
    recovered: false,
    reason: "epoch",
  });
});

Deno.test("the seam: publishes racing resume requests produce no duplicate and no gap (many iterations)", async () => {
  // A small send window makes every replay several rounds of awaits, and
  // publishes keep coming between them from another task.
  await using server = serve(
    history({ historySize: 100_000, maxBuffered: 2048, policy: "drop" }),
    room(),
  );
  let publishing = true;
  let n = 0;
  const publisher = (async () => {
    // Publishes land between the replay's steps both from timers and from
    // promise continuations (a replay that never waits on the socket runs
    // on the microtask queue alone).
    for (let round = 0; publishing; round++) {
      server.publish(TOPIC, `m${++n} ${"p".repeat(200)}`);
      if (round % 64 === 0) await delay(0);
      else await null;
    }
  })();
  try {
    await until(() => n >= 300, "300 publishes");
    const epoch = server.hub.position(TOPIC)!.epoch;
    for (let iteration = 0; iteration < 60; iteration++) {
      const head = server.hub.position(TOPIC)!.offset;
      const from = Math.max(0, head - 1 - Math.floor(Math.random() * 250));
      await using ws = await resumeAt(server.url, epoch, from);
      const answer = await next(ws);
      assert.equal(answer.type === "subscribed" && answer.recovered, true, JSON.stringify(answer));
      // Read past the head as it was when the answer came: through the seam.
      const until = server.hub.position(TOPIC)!.offset + 20;
      const got = await readRun(ws, from, until - from);
      assert.equal(got[0].split(" ")[0], `m${from + 1}`);
      assert.equal(got.at(-1)!.split(" ")[0], `m${until}`);
    }
  } finally {
    publishing = false;
    await publisher;
  }
});

Deno.test("ReconnectingWebSocket with resume: across server-side connection kills, every message once, in order", async () => {
  const conns = new Set<WebSocketConn>();
  await using server = serve(history({ historySize: 10_000 }), room(conns));
  const recovered: { topic: string; recovered: boolean; reason?: string }[] = [];
  await using rws = new ReconnectingWebSocket(server.url, {
    resume: true,
    reconnect: { minDelay: 5, maxDelay: 20, onRecovered: (e) => recovered.push(e) },
  });
  const ws = await rws.ready();
  assert.equal(ws.protocol, NETKIT_V1);
  // Wait until subscribed (its position is known), then publish, killing
  // the connection from the server side now and then.
  await until(() => rws.positions[TOPIC] !== undefined, "subscribed");
  const total = 600;
  const publisher = (async () => {
    for (let i = 1; i <= total; i++) {
      server.publish(TOPIC, `m${i}`);
      if (i % 150 === 0) { for (const c of conns) c.destroy(); }
      if (i % 10 === 0) await delay(1);
    }
  })();
  const got: string[] = [];
  while (got.length < total) got.push(String(await rws.receive()));
  await publisher;
  assert.deepEqual(got, range(1, total));
  assert.ok(rws.reconnects >= 1, "it reconnected");
  assert.ok(recovered.length >= 1);
  for (const e of recovered) assert.deepEqual(e, { topic: TOPIC, recovered: true });
  assert.equal(rws.positions[TOPIC].offset, total);
  // Its own messages travel in envelopes and come back unwrapped.
  assert.equal(await rws.send("mine"), true);
  assert.equal(await rws.receive(), "mine");
});

Deno.test("ReconnectingWebSocket with resume reports recovered:false and goes on when the history cannot cover the gap", async () => {
  const conns = new Set<WebSocketConn>();
  await using server = serve(history({ historySize: 5 }), room(conns));
  const recovered: { topic: string; recovered: boolean; reason?: string }[] = [];
  let reconnected!: () => void;
  const back = new Promise<void>((resolve) => (reconnected = resolve));
  await using rws = new ReconnectingWebSocket(server.url, {
    resume: true,
    reconnect: {
      minDelay: 50,
      maxDelay: 50,
      jitter: 0,
      onRecovered: (e) => recovered.push(e),
      onReconnect: () => reconnected(),
    },
  });
  await rws.ready();
  await until(() => rws.positions[TOPIC] !== undefined, "subscribed");
  server.publish(TOPIC, "m1");
  assert.equal(await rws.receive(), "m1");
  for (const c of conns) c.destroy();
  // While it is away, more than the history holds.
  for (let i = 2; i <= 20; i++) server.publish(TOPIC, `m${i}`);
  await back;
  await until(() => recovered.length > 0, "the resume answer");
  assert.deepEqual(recovered, [{ topic: TOPIC, recovered: false, reason: "trimmed" }]);
  server.publish(TOPIC, "m21");
  assert.equal(await rws.receive(), "m21");
});

Deno.test("a netkit.v1 client's message that is not an envelope closes it with 1008", async () => {
  await using server = serve(history(), room());
  await using ws = await connect(server.url, { protocols: [NETKIT_V1] });
  assert.equal((await next(ws)).type, "subscribed");
  await ws.send("not an envelope");
  assert.equal(await ws.receive(), null);
  assert.equal(ws.closeCode, 1008);
  assert.match(ws.closeReason, /netkit\.v1/);
});

Deno.test("netkit.v1 is agreed only with history and a handler object; another protocol picked first wins", async () => {
  {
    await using server = serve({ port: 0, onEvent: noop }, room());
    await using ws = await connect(server.url, { protocols: [NETKIT_V1] });
    assert.equal(ws.protocol, "");
  }
  {
    await using server = serve(history(), (conn) => conn.readable.pipeTo(conn.writable));
    await using ws = await connect(server.url, { protocols: [NETKIT_V1] });
    assert.equal(ws.protocol, "");
  }
  {
    await using server = serve(history({ protocols: ["chat.v2"] }), room());
    await using ws = await connect(server.url, { protocols: [NETKIT_V1, "chat.v2"] });
    assert.equal(ws.protocol, "chat.v2");
    server.publish(TOPIC, "plain");
    assert.equal(await ws.receive(), "plain");
  }
});

Deno.test("an acknowledged publish is answered with its position once in the log; a repeated id is handled once", async () => {
  await using server = serve(history(), {
    open: (ws) => void ws.subscribe(TOPIC),
    message(ws, data) {
      if (data !== "say nothing") ws.publish(TOPIC, data, { includeSelf: true });
    },
  });
  await using ws = await connect(server.url, { protocols: [NETKIT_V1] });
  const sub = await next(ws);
  const epoch = sub.type === "subscribed" ? sub.epoch : "";
  await ws.send(encodeClientEnvelope("once", "id-1"));
  assert.deepEqual(await next(ws), {
    type: "message",
    data: "once",
    topic: TOPIC,
    epoch,
    offset: 1,
  });
  assert.deepEqual(await next(ws), { type: "ack", id: "id-1", topic: TOPIC, epoch, offset: 1 });
  // A retry of the same id (say after a reconnect) is not published again.
  await ws.send(encodeClientEnvelope("once", "id-1"));
  assert.deepEqual(await next(ws), { type: "ack", id: "id-1", topic: TOPIC, epoch, offset: 1 });
  assert.equal(server.hub.position(TOPIC)!.offset, 1);
  // Handled without a publish: acknowledged without a position.
  await ws.send(encodeClientEnvelope(new TextEncoder().encode("say nothing"), "id-2"));
  await ws.send(encodeClientEnvelope("say nothing", "id-3"));
  assert.deepEqual(await next(ws), {
    type: "message",
    data: new TextEncoder().encode("say nothing"),
    topic: TOPIC,
    epoch,
    offset: 2,
  });
  assert.deepEqual(await next(ws), { type: "ack", id: "id-2", topic: TOPIC, epoch, offset: 2 });
  assert.deepEqual(await next(ws), { type: "ack", id: "id-3" });
});

Deno.test("ReconnectingWebSocket.sendAcked: the ack lost with the connection, the retry is not published twice", async () => {
  let dropped = false;
  await using server = serve(history(), {
    open: (ws) => void ws.subscribe(TOPIC),
    message(ws, data) {
      ws.publish(TOPIC, data, { includeSelf: true });
      if (!dropped) {
        // Published, then the connection is gone before the ack goes out.
        dropped = true;
        ws.destroy();
      }
    },
  });
  await using rws = new ReconnectingWebSocket(server.url, {
    resume: true,
    reconnect: { minDelay: 5, maxDelay: 20 },
  });
  await rws.ready();
  await until(() => rws.positions[TOPIC] !== undefined, "subscribed");
  const at = await rws.sendAcked("exactly once");
  assert.equal(rws.reconnects, 1);
  assert.deepEqual(at, { topic: TOPIC, epoch: server.hub.position(TOPIC)!.epoch, offset: 1 });
  assert.equal(await rws.receive(), "exactly once");
  assert.equal(server.hub.position(TOPIC)!.offset, 1);
  await rws.sendAcked("next");
  assert.equal(await rws.receive(), "next");
  assert.equal(server.hub.position(TOPIC)!.offset, 2);
});

Deno.test("ReconnectingWebSocket.sendAcked needs netkit.v1, and rejects once closed", async () => {
  await using server = serve({ port: 0, onEvent: noop }, room());
  const rws = new ReconnectingWebSocket(server.url, { resume: true });
  assert.equal((await rws.ready()).protocol, "");
  await assert.rejects(rws.sendAcked("x"), { code: "ERR_NETKIT_V1_REQUIRED" });
  await rws.close();
  await assert.rejects(rws.sendAcked("x"));
});

Deno.test("unsubscribing during a replay stops it; subscribing again starts afresh at the head", async () => {
  await using server = serve(history({ maxBuffered: 2048, policy: "drop" }), {
    open: (ws) => void ws.subscribe(TOPIC),
    message(ws) {
      ws.unsubscribe(TOPIC);
      ws.subscribe(TOPIC);
    },
  });
  // 10 MB to replay: more than the socket buffers hold, so the server reads
  // the client's message while it is still replaying.
  for (let i = 1; i <= 500; i++) server.publish(TOPIC, `m${i} ${"r".repeat(20_000)}`);
  const { epoch } = server.hub.position(TOPIC)!;
  await using ws = await resumeAt(server.url, epoch, 0);
  const answer = await next(ws);
  assert.equal(answer.type === "subscribed" && answer.recovered, true);
  await ws.send(encodeClientEnvelope("rejoin"));
  // Replayed messages, contiguous from 1, until the fresh answer; then live from its offset.
  let offset = 0;
  for (;;) {
    const e = await next(ws);
    if (e.type === "subscribed") {
      assert.equal(e.recovered, undefined);
      assert.equal(e.offset, 500);
      break;
    }
    assert.equal(e.type === "message" && e.offset, ++offset);
  }
  server.publish(TOPIC, "live");
  assert.deepEqual(await readRun(ws, 500, 1), ["live"]);
});
