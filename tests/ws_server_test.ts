// The server's behaviour with real clients: Conn handlers, broadcast, slow
// consumers, ping, idle timeout, shutdown, and the Deno.upgradeWebSocket adapter.
import assert from "node:assert/strict";
import { echo } from "../echo.ts";
import { readUntil, writeAll } from "../io/mod.ts";
import {
  BroadcastHub,
  connect,
  type Message,
  serve,
  upgrade,
  type WebSocketConn,
  type WebSocketError,
  type WebSocketServerEvent,
} from "../websocket/mod.ts";
import { Opcode } from "../websocket/codec/mod.ts";
import { pseudoRandomBytes } from "./_helpers.ts";
import { RawClient, text } from "./ws_helpers.ts";

const enc = new TextEncoder();
const quiet = () => {};

Deno.test("the TCP echo handler serves WebSocket unchanged: messages back as binary, close 1000 at the end", async () => {
  await using server = serve({ port: 0 }, echo);
  await using ws = await connect(server.url);
  const big = pseudoRandomBytes(300_000);
  await ws.send("hello");
  await ws.send(big);
  assert.deepEqual(await ws.receive(), enc.encode("hello"));
  assert.deepEqual(await ws.receive(), big);
  await ws.close();
  assert.equal(ws.closeCode, 1000);
});

Deno.test("a line-protocol Conn handler (readUntil/writeAll) runs over WebSocket", async () => {
  await using server = serve({ port: 0 }, async (conn) => {
    for (;;) {
      const line = await readUntil(conn.readable, "\n");
      if (line === null) break;
      await writeAll(conn.writable, new TextDecoder().decode(line).toUpperCase());
    }
  });
  await using ws = await connect(server.url);
  // Lines split across messages and several lines in one message.
  await ws.send("hel");
  await ws.send("lo\nwor");
  await ws.send("ld\nbye\n");
  const got = [await ws.receive(), await ws.receive(), await ws.receive()].map(text);
  assert.deepEqual(got, ["HELLO\n", "WORLD\n", "BYE\n"]);
  // The client half-closes with close 1000: the handler sees the end and returns.
  await ws.closeWrite();
  assert.equal(await ws.receive(), null);
  assert.equal(ws.closeCode, 1000);
});

Deno.test("broadcast: every message reaches every client, sender included, type and order kept", async () => {
  await using server = serve({ port: 0 }, {
    open: (ws) => void ws.subscribe("all"),
    message: (ws, data) => void ws.publish("all", data, { includeSelf: true }),
  });
  const N = 8, M = 25;
  const clients = await Promise.all(Array.from({ length: N }, () => connect(server.url)));
  try {
    const received = clients.map((ws) =>
      (async () => {
        const got: Message[] = [];
        while (got.length < N * M) got.push((await ws.receive())!);
        return got;
      })()
    );
    await Promise.all(clients.map(async (ws, i) => {
      for (let j = 0; j < M; j++) {
        await ws.send(j % 2 === 0 ? `c${i} m${j}` : enc.encode(`c${i} m${j}`));
      }
    }));
    for (const got of await Promise.all(received)) {
      for (let i = 0; i < N; i++) {
        const mine = got.filter((m) => text(m)!.startsWith(`c${i} `));
        assert.deepEqual(mine.map(text), Array.from({ length: M }, (_, j) => `c${i} m${j}`));
        assert.ok(mine.every((m, j) => (j % 2 === 0) === (typeof m === "string")), "types kept");
      }
    }
  } finally {
    await Promise.all(clients.map((ws) => ws.close()));
  }
});

Deno.test("server.publish reaches subscribers; ws.publish skips the sender unless includeSelf", async () => {
  const ready = Promise.withResolvers<void>();
  let opened = 0;
  await using server = serve({ port: 0 }, {
    open(ws) {
      ws.subscribe("news");
      if (++opened === 2) ready.resolve();
    },
    message: (ws, data) => void ws.publish("news", data),
  });
  await using a = await connect(server.url);
  await using b = await connect(server.url);
  await ready.promise;
  assert.deepEqual(server.publish("news", "from server"), { delivered: 2, dropped: 0 });
  assert.equal(await a.receive(), "from server");
  assert.equal(await b.receive(), "from server");
  await a.send("from a");
  assert.equal(await b.receive(), "from a");
  await b.send("from b");
  assert.equal(await a.receive(), "from b");
  assert.equal(server.hub.subscriberCount("news"), 2);
});

/**
 * Publishes 64 KiB messages, letting the sockets work between them, until
 * `done()` (or `max` messages). Resolves to the publish results.
 */
async function publishUntil(
  server: { publish(topic: string, m: Message): { delivered: number; dropped: number } },
  done: (results: { delivered: number; dropped: number }[]) => boolean,
  max = 2000,
) {
  const chunk = new Uint8Array(64 * 1024);
  const results: { delivered: number; dropped: number }[] = [];
  while (!done(results) && results.length < max) {
    results.push(server.publish("t", chunk));
    await new Promise((r) => setTimeout(r, 0));
  }
  return results;
}

/** Reads binary messages until "end"; resolves to how many came before it. */
async function countUntilEnd(ws: WebSocketConn): Promise<number> {
  let n = 0;
  for (;;) {
    const msg = await ws.receive();
    if (msg === null) throw new Error(`closed early with ${ws.closeCode}`);
    if (msg === "end") return n;
    n++;
  }
}

Deno.test("a slow consumer is closed with 1008 under policy close, without stalling the others", async () => {
  const events: WebSocketServerEvent[] = [];
  const closes: number[] = [];
  let opened = 0;
  const two = Promise.withResolvers<void>();
  await using server = serve({
    port: 0,
    maxBuffered: 256 * 1024,
    closeTimeout: 100,
    onEvent: (e) => events.push(e),
  }, {
    open(ws) {
      ws.subscribe("t");
      if (++opened === 2) two.resolve();
    },
    close: (_ws, code) => void closes.push(code),
  });
  // A raw client that upgrades and never reads: its backlog only grows.
  await using stalled = await RawClient.upgraded(server.addr.port);
  await using good = await connect(server.url);
  await two.promise;
  const counted = countUntilEnd(good);
  const slowClosed = () => events.some((e) => e.type === "slow" && e.action === "closed");
  const results = await publishUntil(server, slowClosed);
  assert.ok(slowClosed(), `still open after ${results.length} messages`);
  server.publish("t", "end");
  assert.equal(await counted, results.length, "the good client got every message");
  assert.ok(results.every((r) => r.delivered >= 1));
  assert.equal(server.publish("t", "after").delivered, 1, "only the good client is left");
  stalled.close();
  await good.close();
  await server.close();
  assert.deepEqual(closes.sort(), [1000, 1008]);
});

Deno.test("under policy drop a slow consumer is skipped until it drains, and counted", async () => {
  let slowConn: WebSocketConn | undefined;
  let opened = 0;
  const two = Promise.withResolvers<void>();
  await using server = serve({ port: 0, maxBuffered: 256 * 1024, policy: "drop", onEvent: quiet }, {
    open(ws) {
      ws.subscribe("t");
      if (ws.url === "/slow") slowConn = ws;
      if (++opened === 2) two.resolve();
    },
  });
  await using stalled = await RawClient.upgraded(server.addr.port, "/slow");
  await using good = await connect(server.url);
  await two.promise;
  const counted = countUntilEnd(good);
  const sum = (rs: { dropped: number }[]) => rs.reduce((n, r) => n + r.dropped, 0);
  const results = await publishUntil(server, (rs) => sum(rs) >= 5);
  const dropped = sum(results);
  assert.ok(dropped >= 1, `nothing dropped after ${results.length} messages`);
  assert.equal(slowConn!.dropped, dropped);
  assert.equal(slowConn!.readyState, 1, "not closed, only skipped");
  server.publish("t", "end");
  assert.equal(await counted, results.length, "the good client got every message");
  // The stalled client finally reads: what was queued arrives, then "end"
  // (queued once the skipping stopped, or skipped), then it is back in.
  const queued = results.length - dropped;
  for (let i = 0; i < queued; i++) assert.equal((await stalled.readFrame())?.opcode, Opcode.Binary);
  while (slowConn!.bufferedAmount > 0) await new Promise((r) => setTimeout(r, 5));
  assert.equal(server.publish("t", "back").dropped, 0);
  let last;
  do last = await stalled.readFrame(); while (
    last !== null && new TextDecoder().decode(last.payload) === "end"
  );
  assert.equal(new TextDecoder().decode(last!.payload), "back");
  await good.close();
});

Deno.test("ping() resolves with the round trip, from either side", async () => {
  const rtt = Promise.withResolvers<number>();
  await using server = serve({ port: 0 }, {
    async open(ws) {
      rtt.resolve(await ws.ping());
    },
  });
  await using ws = await connect(server.url);
  const serverSide = await rtt.promise;
  assert.ok(serverSide >= 0 && Number.isFinite(serverSide));
  const clientSide = await ws.ping();
  assert.ok(clientSide >= 0 && Number.isFinite(clientSide));
  await ws.close();
  await assert.rejects(ws.ping(), (e: unknown) => (e as WebSocketError).code === "ERR_WS_CLOSED");
});

Deno.test("idle timeout: a silent peer is pinged, then closed with 1001; a live one stays", async () => {
  const events: WebSocketServerEvent[] = [];
  await using server = serve({ port: 0, idleTimeout: 60, onEvent: (e) => events.push(e) }, {});
  // A netkit client answers pings: it is never closed for idleness.
  await using live = await connect(server.url);
  // A raw client that reads but never answers.
  await using dead = await RawClient.upgraded(server.addr.port);
  const ping = await dead.readFrame();
  assert.equal(ping?.opcode, Opcode.Ping);
  const close = await dead.readClose();
  assert.deepEqual(close, { code: 1001, reason: "idle timeout" });
  assert.equal(live.readyState, 1);
  assert.ok(events.some((e) => e.type === "idle"));
  await live.close();
  assert.equal(live.closeCode, 1000);
});

Deno.test("graceful shutdown sends every client 1001, and ends the unresponsive after the grace period", async () => {
  const closes: number[] = [];
  const server = serve({ port: 0, gracePeriod: 200 }, {
    close: (_ws, code) => void closes.push(code),
  });
  const clients = await Promise.all([1, 2, 3].map(() => connect(server.url)));
  // A raw client that never answers the close frame.
  await using raw = await RawClient.upgraded(server.addr.port);
  while (server.connections < 4) await new Promise((r) => setTimeout(r, 5));
  const finished = server.close();
  for (const ws of clients) {
    assert.equal(await ws.receive(), null);
    assert.equal(ws.closeCode, 1001);
    assert.equal(ws.closeReason, "server shutting down");
  }
  assert.deepEqual(await raw.readClose(), { code: 1001, reason: "server shutting down" });
  await finished;
  assert.ok(await raw.ended(), "ended after the grace period");
  await Promise.all(clients.map((ws) => ws.closed));
  assert.deepEqual(closes.filter((c) => c === 1001).length, 3);
  // New connections are refused.
  await assert.rejects(connect(server.url));
});

Deno.test("closing with a code and reason reaches the other side, both ways", async () => {
  const seen = Promise.withResolvers<[number, string]>();
  await using server = serve({ port: 0 }, {
    message: (ws, data) => void (data === "kick" ? ws.close(4001, "kicked") : null),
    close: (_ws, code, reason) => seen.resolve([code, reason]),
  });
  await using a = await connect(server.url);
  await a.send("kick");
  assert.equal(await a.receive(), null);
  assert.equal(a.closeCode, 4001);
  assert.equal(a.closeReason, "kicked");
  await using b = await connect(server.url);
  await b.close(4002, "leaving");
  assert.deepEqual(await seen.promise, [4001, ""]);
  assert.equal(b.closeCode, 4002);
  assert.equal(await b.send("late"), false, "send after close resolves false");
  await assert.rejects(b.close(1005), RangeError);
});

Deno.test("maxConnections closes the connection beyond the limit at once", async () => {
  const events: WebSocketServerEvent[] = [];
  await using server = serve({ port: 0, maxConnections: 1, onEvent: (e) => events.push(e) }, {});
  await using a = await connect(server.url);
  await assert.rejects(connect(server.url));
  assert.ok(events.some((e) => e.type === "refused"));
  assert.equal(a.readyState, 1);
});

Deno.test("the Deno.upgradeWebSocket adapter gives the same Conn: echo handler, topics, no ping", async () => {
  const hub = new BroadcastHub();
  const conns: WebSocketConn[] = [];
  await using server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: quiet },
    (req, info) => {
      const path = new URL(req.url).pathname;
      const { response, conn } = upgrade(req, {
        info,
        hub,
        protocol: req.headers.get("sec-websocket-protocol") ? "p1" : undefined,
      });
      conns.push(conn);
      if (path === "/echo") {
        void echo(conn);
      } else {
        conn.subscribe("room");
        void (async () => {
          for await (const msg of conn) conn.publish("room", msg, { includeSelf: true });
        })();
      }
      return response;
    },
  );
  const base = `ws://127.0.0.1:${server.addr.port}`;
  {
    await using ws = await connect(`${base}/echo`, { protocols: ["p1"] });
    assert.equal(ws.protocol, "p1");
    await ws.send("hi");
    assert.deepEqual(await ws.receive(), enc.encode("hi"));
    await ws.close();
    assert.equal(ws.closeCode, 1000);
  }
  {
    await using a = await connect(`${base}/room`);
    await using b = await connect(`${base}/room`);
    while (hub.subscriberCount("room") < 2) await new Promise((r) => setTimeout(r, 5));
    await a.send("to the room");
    assert.equal(await a.receive(), "to the room");
    assert.equal(await b.receive(), "to the room");
    await b.send(new Uint8Array([7]));
    assert.deepEqual(await a.receive(), new Uint8Array([7]));
    await assert.rejects(
      conns.at(-1)!.ping(),
      (e: unknown) => (e as WebSocketError).code === "ERR_WS_UNSUPPORTED",
    );
  }
  await Promise.all(conns.map((c) => c.closed));
  assert.throws(() => upgrade(new Request("http://x/")), /not a WebSocket upgrade/);
});

Deno.test("a message handler that throws costs its connection only: close 1011, error reported", async () => {
  const events: WebSocketServerEvent[] = [];
  await using server = serve({ port: 0, onEvent: (e) => events.push(e) }, {
    message(ws, data) {
      if (data === "boom") throw new Error("handler bug");
      void ws.send(data);
    },
  });
  await using bad = await connect(server.url);
  await using good = await connect(server.url);
  // Messages queued behind the bad one do not hold up the close handshake.
  for (let i = 0; i < 40; i++) void bad.send(i === 0 ? "boom" : `after ${i}`);
  assert.equal(await bad.receive(), null);
  assert.equal(bad.closeCode, 1011);
  await good.send("fine");
  assert.equal(await good.receive(), "fine");
  const error = events.find((e) => e.type === "error");
  assert.ok(error?.type === "error" && (error.error as Error).message === "handler bug");
});

Deno.test("a Conn handler that stops reading still completes the close handshake", async () => {
  await using server = serve({ port: 0 }, async (ws) => {
    await ws.receive();
    await ws.close(4000, "enough");
  });
  await using ws = await connect(server.url);
  for (let i = 0; i < 100; i++) void ws.send(new Uint8Array(1000));
  assert.equal(await ws.receive(), null);
  assert.equal(ws.closeCode, 4000);
  assert.equal(ws.closeReason, "enough");
});

Deno.test("drain fires once a backlog over the high-water mark has been written", async () => {
  const drained = Promise.withResolvers<number>();
  await using server = serve({ port: 0, highWaterMark: 16 * 1024 }, {
    open(ws) {
      void ws.send(new Uint8Array(512 * 1024));
      assert.ok(ws.bufferedAmount > 16 * 1024);
    },
    drain: (ws) => drained.resolve(ws.bufferedAmount),
  });
  await using ws = await connect(server.url);
  assert.equal(((await ws.receive()) as Uint8Array).length, 512 * 1024);
  assert.equal(await drained.promise, 0);
});
