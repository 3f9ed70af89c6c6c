// The opening handshake, from both sides: raw requests against the server,
// and the client against servers that refuse or misbehave.
import assert from "node:assert/strict";
import { serve as serveTcp } from "../tcp/serve.ts";
import { connect, HandshakeError, serve, type WebSocketServerEvent } from "../websocket/mod.ts";
import { RawClient, SAMPLE_ACCEPT, SAMPLE_KEY, upgradeRequest } from "./ws_helpers.ts";

const noop = () => {};

/** Sends `request` raw and reads the response. */
async function ask(port: number, request: string) {
  await using client = await RawClient.connect(port);
  await client.write(request);
  const res = await client.readResponse();
  assert.ok(await client.ended(), "the server closes after answering");
  return res;
}

function request(lines: string[]): string {
  return [...lines, "", ""].join("\r\n");
}

Deno.test("a valid upgrade gets 101 with the right Sec-WebSocket-Accept", async () => {
  await using server = serve({ port: 0, onEvent: noop }, (ws) => ws.close());
  await using client = await RawClient.connect(server.addr.port);
  await client.write(upgradeRequest("/chat?room=1"));
  const head = await client.readHead();
  assert.match(head, /^HTTP\/1\.1 101 Switching Protocols\r\n/);
  assert.match(head, /\r\nupgrade: websocket\r\n/i);
  assert.match(head, /\r\nconnection: upgrade\r\n/i);
  assert.ok(head.includes(`Sec-WebSocket-Accept: ${SAMPLE_ACCEPT}\r\n`), head);
  assert.ok(!/sec-websocket-protocol/i.test(head), "no subprotocol when none was offered");
  assert.deepEqual(await client.readClose(), { code: 1000, reason: "" });
});

Deno.test("bad upgrade requests get the right status, and the server keeps serving", async () => {
  const events: WebSocketServerEvent[] = [];
  await using server = serve(
    { port: 0, path: "/ws", maxHeadSize: 2048, onEvent: (e) => events.push(e) },
    (ws) => ws.close(),
  );
  const port = server.addr.port;
  const base = [
    "Host: x",
    "Upgrade: websocket",
    "Connection: Upgrade",
    `Sec-WebSocket-Key: ${SAMPLE_KEY}`,
    "Sec-WebSocket-Version: 13",
  ];
  const without = (name: string) => base.filter((l) => !l.startsWith(name));
  const cases: [string, string, number][] = [
    ["POST", request(["POST /ws HTTP/1.1", ...base]), 405],
    ["HTTP/1.0", request(["GET /ws HTTP/1.0", ...base]), 400],
    ["no Host", request(["GET /ws HTTP/1.1", ...without("Host")]), 400],
    ["no Connection", request(["GET /ws HTTP/1.1", ...without("Connection")]), 400],
    [
      "Connection: keep-alive",
      request(["GET /ws HTTP/1.1", ...without("Connection"), "Connection: keep-alive"]),
      400,
    ],
    ["no key", request(["GET /ws HTTP/1.1", ...without("Sec-WebSocket-Key")]), 400],
    [
      "short key",
      request(["GET /ws HTTP/1.1", ...without("Sec-WebSocket-Key"), "Sec-WebSocket-Key: abc="]),
      400,
    ],
    ["two keys", request(["GET /ws HTTP/1.1", ...base, `Sec-WebSocket-Key: ${SAMPLE_KEY}`]), 400],
    [
      "version 8",
      request([
        "GET /ws HTTP/1.1",
        ...without("Sec-WebSocket-Version"),
        "Sec-WebSocket-Version: 8",
      ]),
      426,
    ],
    ["no version", request(["GET /ws HTTP/1.1", ...without("Sec-WebSocket-Version")]), 426],
    ["bad protocol", request(["GET /ws HTTP/1.1", ...base, "Sec-WebSocket-Protocol: a b"]), 400],
    ["not an upgrade", request(["GET /ws HTTP/1.1", "Host: x"]), 426],
    ["other path", request(["GET /other HTTP/1.1", ...base]), 404],
    ["garbage", "\x16\x03\x01\x00\xa5hello\r\n\r\n", 400],
    ["folded header", request(["GET /ws HTTP/1.1", ...base, " folded"]), 400],
    ["head too big", request(["GET /ws HTTP/1.1", ...base, "X-Big: " + "a".repeat(3000)]), 431],
  ];
  for (const [name, text, status] of cases) {
    const res = await ask(port, text);
    assert.equal(res.status, status, `${name}: ${res.head}`);
    if (status === 426 && name !== "not an upgrade") {
      assert.match(res.head, /\r\nsec-websocket-version: 13\r\n/i, name);
    }
    if (status === 405) assert.match(res.head, /\r\nallow: GET\r\n/i);
  }
  // Still serving.
  await using ws = await connect(`ws://127.0.0.1:${port}/ws`);
  assert.equal(await ws.receive(), null);
  assert.equal(ws.closeCode, 1000);
  const rejected = events.filter((e) => e.type === "rejected");
  assert.equal(rejected.length, cases.length);
  assert.ok(events.every((e) => e.type !== "error"), "bad requests are not server errors");
});

Deno.test("onRequest answers plain HTTP on the path; without it, 426", async () => {
  await using server = serve({
    port: 0,
    onEvent: noop,
    onRequest: (req) => ({
      status: 200,
      body: `page for ${req.path} ${req.url.searchParams.get("q")}`,
    }),
  }, noop);
  const res = await ask(server.addr.port, request(["GET /x?q=1 HTTP/1.1", "Host: a"]));
  assert.equal(res.status, 200);
  assert.equal(res.body, "page for /x 1");
  assert.match(res.head, /\r\ncontent-type: text\/plain; charset=utf-8\r\n/);
});

Deno.test("the upgrade hook refuses with its own response, 403, or accepts with data and a subprotocol", async () => {
  await using server = serve<{ user: string }>({ port: 0, onEvent: noop, protocols: ["chat.v1"] }, {
    upgrade(request, info) {
      assert.equal(info.remoteAddr.transport, "tcp");
      const token = request.headers.get("authorization");
      if (token === null) {
        return { status: 401, headers: { "www-authenticate": "Bearer" }, body: "token required" };
      }
      if (token === "Bearer nope") return false;
      if (token === "Bearer response") return new Response("teapot", { status: 418 });
      return {
        data: { user: token.slice(7) },
        protocol: request.protocols.includes("chat.v2") ? "chat.v2" : undefined,
      };
    },
    async open(ws) {
      await ws.send(`${ws.data.user} ${ws.protocol || "-"} ${ws.url}`);
      await ws.close();
    },
  });
  const url = `ws://127.0.0.1:${server.addr.port}/room?id=7`;
  await assert.rejects(connect(url), (err: unknown) => {
    assert.ok(err instanceof HandshakeError);
    assert.equal(err.code, "ERR_WS_HANDSHAKE_REJECTED");
    assert.equal(err.status, 401);
    assert.equal(err.body, "token required");
    assert.match(err.message, /401 Unauthorized/);
    return true;
  });
  await assert.rejects(
    connect(url, { headers: { authorization: "Bearer nope" } }),
    (err: unknown) => err instanceof HandshakeError && err.status === 403,
  );
  await assert.rejects(
    connect(url, { headers: { authorization: "Bearer response" } }),
    (err: unknown) => err instanceof HandshakeError && err.status === 418 && err.body === "teapot",
  );
  {
    await using ws = await connect(url, {
      headers: { authorization: "Bearer ann" },
      protocols: ["chat.v2", "chat.v1"],
    });
    assert.equal(ws.protocol, "chat.v2");
    assert.equal(await ws.receive(), "ann chat.v2 /room?id=7");
  }
  {
    // No choice by the hook: the server's own list decides.
    await using ws = await connect(url, {
      headers: { authorization: "Bearer bob" },
      protocols: ["x", "chat.v1"],
    });
    assert.equal(ws.protocol, "chat.v1");
    assert.equal(await ws.receive(), "bob chat.v1 /room?id=7");
  }
});

Deno.test("a client that trickles its request is closed at the handshake timeout", async () => {
  const events: WebSocketServerEvent[] = [];
  await using server = serve(
    { port: 0, handshakeTimeout: 150, onEvent: (e) => events.push(e) },
    noop,
  );
  await using client = await RawClient.connect(server.addr.port);
  const text = upgradeRequest();
  // A byte now and then: never idle, never done.
  let i = 0;
  const trickle = setInterval(() => {
    if (i < text.length - 2) client.write(text[i++]).catch(() => {});
  }, 20);
  try {
    assert.ok(await client.ended());
  } finally {
    clearInterval(trickle);
  }
  await server.close();
  const timeout = events.find((e) => e.type === "rejected");
  assert.ok(timeout?.type === "rejected");
  assert.equal(timeout.error.code, "ERR_WS_HANDSHAKE_TIMEOUT");
});

Deno.test("the client names a server that is not a WebSocket server, and one that never answers", async () => {
  // An echo server answers the request with the request itself.
  await using echoServer = serveTcp({ port: 0 }, (c) => c.readable.pipeTo(c.writable));
  await assert.rejects(connect(`ws://127.0.0.1:${echoServer.addr.port}/`), (err: unknown) => {
    assert.ok(err instanceof HandshakeError);
    assert.equal(err.code, "ERR_WS_HANDSHAKE");
    assert.match(err.message, /not answer with HTTP/);
    return true;
  });
  // A server that accepts and says nothing.
  await using silent = serveTcp({ port: 0 }, (c) => c.readable.pipeTo(new WritableStream()));
  await assert.rejects(
    connect(`ws://127.0.0.1:${silent.addr.port}/`, { timeout: 100 }),
    (err: unknown) => {
      assert.ok(err instanceof HandshakeError);
      assert.equal(err.code, "ERR_WS_HANDSHAKE_TIMEOUT");
      return true;
    },
  );
  // A wrong Sec-WebSocket-Accept.
  await using liar = serveTcp({ port: 0 }, async (c) => {
    const reader = c.readable.getReader();
    await reader.read();
    reader.releaseLock();
    const w = c.writable.getWriter();
    await w.write(new TextEncoder().encode(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
        `Sec-WebSocket-Accept: ${SAMPLE_ACCEPT}\r\n\r\n`,
    ));
    w.releaseLock();
    await c.readable.pipeTo(new WritableStream());
  });
  await assert.rejects(
    connect(`ws://127.0.0.1:${liar.addr.port}/`),
    /Sec-WebSocket-Accept does not match/,
  );
  await assert.rejects(
    connect("ftp://127.0.0.1/"),
    (err: unknown) => (err as HandshakeError).code === "ERR_WS_BAD_URL",
  );
});

Deno.test("frames sent right behind the request, before the 101 arrives, are not lost", async () => {
  await using server = serve({ port: 0 }, async (ws) => {
    for await (const msg of ws) await ws.send(msg);
  });
  await using client = await RawClient.connect(server.addr.port);
  const { encodeFrame } = await import("../websocket/codec/sender.ts");
  const frame = encodeFrame(0x1, "early", { mask: true });
  const req = new TextEncoder().encode(upgradeRequest());
  const both = new Uint8Array(req.length + frame.length);
  both.set(req);
  both.set(frame, req.length);
  await client.write(both);
  assert.match(await client.readHead(), /^HTTP\/1\.1 101/);
  const echo = await client.readFrame();
  assert.equal(echo?.opcode, 0x1);
  assert.equal(new TextDecoder().decode(echo!.payload), "early");
});
