// What an idle WebSocket connection does not need, proven by behaviour: the
// upgrade computes Sec-WebSocket-Accept without crypto.subtle (an op on
// Deno's blocking thread pool), and a handler object's session ends through
// the stream server's endSession — no promise kept per connection — with
// the same close callback, counters and error reports as before.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { connect, serve, type WebSocketServerEvent } from "../websocket/mod.ts";
import { acceptKey } from "../websocket/codec/mod.ts";
import { acceptKeyNow } from "../websocket/codec/handshake.ts";
import { SESSION_PENDING, StreamServer } from "../internal/stream_server.ts";
import { SocketConn } from "../internal/socket_conn.ts";
import type { ServerEvent } from "../internal/stream_server.ts";
import { RawClient, SAMPLE_ACCEPT, SAMPLE_KEY, upgradeRequest } from "./ws_helpers.ts";
import { delay, within } from "./support/time.ts";

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

Deno.test("the accept key is SHA-1 as node:crypto computes it, for keys of every length", async () => {
  assert.equal(acceptKeyNow(SAMPLE_KEY), SAMPLE_ACCEPT);
  assert.equal(await acceptKey(SAMPLE_KEY), SAMPLE_ACCEPT);
  // 0..150 characters (one, two and three SHA-1 blocks), some of them multi-byte.
  for (let n = 0; n <= 150; n++) {
    const key = "k".repeat(n) + "é".repeat(n % 3);
    const want = createHash("sha1").update(key + GUID).digest("base64");
    assert.equal(acceptKeyNow(key), want, `a key of ${n} characters`);
  }
});

Deno.test("an upgrade does not call crypto.subtle.digest (no op on Deno's blocking thread pool)", async () => {
  const subtle = crypto.subtle as SubtleCrypto & { digest: SubtleCrypto["digest"] };
  let calls = 0;
  const original = Object.getOwnPropertyDescriptor(subtle, "digest");
  Object.defineProperty(subtle, "digest", {
    configurable: true,
    value: (...args: Parameters<SubtleCrypto["digest"]>) => {
      calls++;
      return SubtleCrypto.prototype.digest.apply(subtle, args);
    },
  });
  try {
    await using server = serve({ port: 0 }, { message: (ws, data) => void ws.send(data) });
    await using raw = await RawClient.connect(server.addr.port);
    await raw.write(upgradeRequest());
    const head = await within(5000, raw.readHead(), "the 101");
    assert.match(head, /^HTTP\/1\.1 101 /);
    assert.match(
      head,
      new RegExp(`sec-websocket-accept: ${SAMPLE_ACCEPT.replace(/\+/g, "\\+")}`, "i"),
    );
    assert.equal(calls, 0);
  } finally {
    if (original) Object.defineProperty(subtle, "digest", original);
    else delete (subtle as { digest?: unknown }).digest;
  }
});

Deno.test("a handler object's session ends when the client closes: close callback once, connection counted out", async () => {
  const closes: number[] = [];
  const events: WebSocketServerEvent[] = [];
  await using server = serve({ port: 0, onEvent: (e) => events.push(e) }, {
    open: (ws) => void ws.subscribe("t"),
    close: (_ws, code) => void closes.push(code),
  });
  const ws = await connect(server.url);
  await within(5000, waitFor(() => server.stats().open === 1), "the connection counted in");
  await ws.close(4001, "bye");
  await within(5000, waitFor(() => server.stats().open === 0), "the session's end");
  assert.deepEqual(closes, [4001]);
  assert.equal(server.connections, 0);
  assert.deepEqual(
    events.filter((e) => e.type === "open" || e.type === "close").map((e) => e.type),
    [
      "open",
      "close",
    ],
  );
});

Deno.test("a close callback that throws is reported as the session's error, as a rejected session was", async () => {
  const errors: unknown[] = [];
  await using server = serve({
    port: 0,
    onEvent: (e) => e.type === "error" && errors.push(e.error),
  }, {
    close: () => {
      throw new Error("close callback broke");
    },
  });
  const ws = await connect(server.url);
  await ws.close();
  await within(5000, waitFor(() => server.stats().open === 0), "the session's end");
  assert.equal(errors.length, 1);
  assert.match((errors[0] as Error).message, /close callback broke/);
});

Deno.test("an async open: the session still ends through endSession, after messages queued meanwhile", async () => {
  const got: string[] = [];
  let closed = 0;
  await using server = serve({ port: 0 }, {
    open: () => delay(50),
    message: (_ws, data) => void got.push(String(data)),
    close: () => void closed++,
  });
  const ws = await connect(server.url);
  await ws.send("early");
  await ws.close();
  await within(5000, waitFor(() => server.stats().open === 0), "the session's end");
  assert.deepEqual(got, ["early"]);
  assert.equal(closed, 1);
});

Deno.test("StreamServer: a handler returning SESSION_PENDING is ended by endSession, fulfilled or failed", async () => {
  const events: ServerEvent[] = [];
  const held: SocketConn[] = [];
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const server = new StreamServer<SocketConn>(
    listener,
    (socket) => new SocketConn(socket),
    (conn) => {
      held.push(conn);
      return SESSION_PENDING;
    },
    { onEvent: (e) => events.push(e) },
  );
  try {
    const port = server.addr.port;
    const a = await Deno.connect({ hostname: "127.0.0.1", port });
    const b = await Deno.connect({ hostname: "127.0.0.1", port });
    await within(5000, waitFor(() => held.length === 2), "both sessions");
    assert.equal(server.stats().open, 2);
    // Fulfilled: the connection is closed gracefully (the client reads EOF).
    server.endSession(held[0]);
    assert.equal(await within(5000, readEnd(a), "EOF on the first"), null);
    // Failed: reported, the connection destroyed.
    server.endSession(held[1], new Error("session broke"), true);
    await within(5000, readEnd(b).catch(() => null), "the second closed");
    await within(5000, waitFor(() => server.stats().open === 0), "both counted out");
    const errors = events.filter((e) => e.type === "error");
    assert.equal(errors.length, 1);
    assert.match(String((errors[0] as { error: Error }).error.message), /session broke/);
    // Ending a session twice does nothing more.
    server.endSession(held[0]);
    assert.equal(server.stats().open, 0);
    a.close();
    b.close();
  } finally {
    await server.close();
  }
});

async function readEnd(conn: Deno.Conn): Promise<number | null> {
  const buf = new Uint8Array(16);
  for (;;) {
    const n = await conn.read(buf);
    if (n === null) return null;
  }
}

async function waitFor(ok: () => boolean): Promise<void> {
  while (!ok()) await delay(5);
}
