// Interoperability with an independent WebSocket implementation: Node's
// `ws` (npm:ws, run inside Deno through its Node compatibility). `ws` is the
// client of netkit's server (the library's `serve` and the `ws-server`
// program) and the server of netkit's client (`connect` and the `ws-client`
// program), over ws:// and wss://.
import assert from "node:assert/strict";
import type { Buffer } from "node:buffer";
import type { IncomingMessage } from "node:http";
import http from "node:http";
import https from "node:https";
import type { AddressInfo } from "node:net";
// @ts-types="@types/ws"
import WebSocket, { type RawData, WebSocketServer } from "ws";
import { createDevCerts } from "../certs/mod.ts";
import { connect, serve } from "../websocket/mod.ts";
import { pseudoRandomBytes, runProgram, startServer } from "./_helpers.ts";
import { tempDevCerts } from "./support/certs.ts";

const SERVER = "cli/ws_server.ts";
const CLIENT = "cli/ws_client.ts";
const encoder = new TextEncoder();
const decoder = new TextDecoder();

// ---------------------------------------------------------------------------
// Small helpers around npm:ws's events.

/** A queue whose `next()` waits for the next item pushed. */
class Inbox<T> {
  #items: T[] = [];
  #waiters: ((item: T) => void)[] = [];

  push(item: T): void {
    const waiter = this.#waiters.shift();
    if (waiter) waiter(item);
    else this.#items.push(item);
  }

  next(): Promise<T> {
    if (this.#items.length > 0) return Promise.resolve(this.#items.shift()!);
    return new Promise((resolve) => this.#waiters.push(resolve));
  }
}

interface Received {
  bytes: Uint8Array;
  binary: boolean;
}

interface Closed {
  code: number;
  reason: string;
}

/** A plain copy of what `ws` hands a listener (a Buffer, by default). */
function bytesOf(data: RawData): Uint8Array {
  if (Array.isArray(data)) return Uint8Array.from(data.flatMap((b) => [...b]));
  return Uint8Array.from(new Uint8Array(data));
}

/** One `ws` socket (client or server end) with its events as promises. */
class WsPeer {
  readonly messages = new Inbox<Received>();
  readonly pongs = new Inbox<Uint8Array>();
  readonly errors: Error[] = [];
  readonly closed: Promise<Closed>;

  constructor(readonly socket: WebSocket) {
    socket.on(
      "message",
      (data: RawData, binary: boolean) => this.messages.push({ bytes: bytesOf(data), binary }),
    );
    socket.on("pong", (data: Buffer) => this.pongs.push(bytesOf(data)));
    socket.on("error", (err: Error) => this.errors.push(err));
    this.closed = new Promise((resolve) => {
      socket.once(
        "close",
        (code: number, reason: Buffer) => resolve({ code, reason: reason.toString() }),
      );
    });
  }

  /** Connects a `ws` client and waits for it to open. */
  static open(url: string, options: WebSocket.ClientOptions = {}): Promise<WsPeer> {
    const socket = new WebSocket(url, options);
    const peer = new WsPeer(socket);
    return new Promise((resolve, reject) => {
      socket.once("open", () => resolve(peer));
      socket.once("error", reject);
    });
  }

  /** The next message, which must be text. */
  async text(): Promise<string> {
    const msg = await this.messages.next();
    assert.equal(msg.binary, false, "expected a text message");
    return decoder.decode(msg.bytes);
  }

  /** The next message, which must be binary. */
  async binary(): Promise<Uint8Array> {
    const msg = await this.messages.next();
    assert.equal(msg.binary, true, "expected a binary message");
    return msg.bytes;
  }

  /** Sends and resolves once `ws` has written it. */
  send(
    data: string | Uint8Array,
    options: { binary?: boolean; fin?: boolean } = {},
  ): Promise<void> {
    return new Promise((resolve, reject) => {
      this.socket.send(data, options, (err?: Error) => (err ? reject(err) : resolve()));
    });
  }

  /** Closes (if still open) and waits for the close event. */
  async close(code?: number, reason?: string): Promise<Closed> {
    if (this.socket.readyState === WebSocket.OPEN) this.socket.close(code, reason);
    return await this.closed;
  }
}

/** A `ws` server over node:http or node:https; each connection is handed to `onConnection`. */
async function wsServer(
  onConnection: (peer: WsPeer, request: IncomingMessage) => void,
  { tls, handleProtocols }: {
    tls?: { cert: string; key: string };
    handleProtocols?: (protocols: Set<string>) => string | false;
  } = {},
): Promise<{ port: number; peers: WsPeer[]; requests: IncomingMessage[] } & AsyncDisposable> {
  const server = tls ? https.createServer(tls) : http.createServer();
  const wss = new WebSocketServer({ server, handleProtocols });
  const peers: WsPeer[] = [];
  const requests: IncomingMessage[] = [];
  wss.on("connection", (socket: WebSocket, request: IncomingMessage) => {
    const peer = new WsPeer(socket);
    peers.push(peer);
    requests.push(request);
    onConnection(peer, request);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    port,
    peers,
    requests,
    async [Symbol.asyncDispose]() {
      // ws 8 leaves open connections alone on close(): end them first.
      for (const peer of peers) peer.socket.terminate();
      await Promise.all(peers.map((p) => p.closed));
      await new Promise((resolve) => wss.close(resolve));
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

// A check mark split across two fragments: the split falls inside its UTF-8.
const CHECK = encoder.encode("✓"); // e2 9c 93
const UNICODE = "héllo, wörld 🌍";

// ---------------------------------------------------------------------------
// npm:ws as the CLIENT of netkit's server.

/** An echo `serve` that records close events and obeys a few commands. */
function echoServer(options: { cert?: string; key?: string; maxPayload?: number } = {}) {
  const closes = new Inbox<Closed>();
  const server = serve({ hostname: "127.0.0.1", port: 0, ...options }, {
    message: async (ws, data) => {
      if (data === "leave") return void (await ws.close(1001, "going away"));
      if (data === "ping me") {
        const rtt = await ws.ping();
        return void (await ws.send(rtt >= 0 ? "pong came" : "no pong"));
      }
      await ws.send(data);
    },
    close: (_ws, code, reason) => closes.push({ code, reason }),
  });
  return { server, closes };
}

async function clientRoundTrips(url: string, options: WebSocket.ClientOptions = {}) {
  const peer = await WsPeer.open(url, options);
  // Text and binary, their type kept, bytes exact.
  await peer.send(UNICODE);
  assert.equal(await peer.text(), UNICODE);
  const binary = new Uint8Array([0, 1, 0x7f, 0x80, 0xfe, 0xff, 0xc3, 0x28]); // not UTF-8
  await peer.send(binary);
  assert.deepEqual(await peer.binary(), binary);
  await peer.send("");
  assert.equal(await peer.text(), "");
  await peer.send(new Uint8Array(0));
  assert.deepEqual(await peer.binary(), new Uint8Array(0));
  // Text sent as binary stays binary (and the reverse).
  await peer.send(encoder.encode("as bytes"), { binary: true });
  assert.deepEqual(await peer.binary(), encoder.encode("as bytes"));
  await peer.send(encoder.encode("as text"), { binary: false });
  assert.equal(await peer.text(), "as text");
  // A large one: 64-bit length, many socket reads.
  const big = pseudoRandomBytes(300_000, 7);
  await peer.send(big);
  assert.deepEqual(await peer.binary(), big);
  // Fragmented by ws: continuation frames reassembled, a code point split across them.
  await peer.send("frag", { fin: false });
  await peer.send("men", { fin: false });
  await peer.send(CHECK.subarray(0, 2), { binary: false, fin: false });
  await peer.send(CHECK.subarray(2), { binary: false, fin: true });
  assert.equal(await peer.text(), "fragmen✓");
  await peer.send(new Uint8Array([1, 2]), { binary: true, fin: false });
  await peer.send(new Uint8Array([3]), { binary: true, fin: false });
  await peer.send(new Uint8Array([4, 5]), { binary: true, fin: true });
  assert.deepEqual(await peer.binary(), new Uint8Array([1, 2, 3, 4, 5]));
  // Ping from ws: the pong carries the same payload.
  peer.socket.ping(encoder.encode("are you there"));
  assert.deepEqual(await peer.pongs.next(), encoder.encode("are you there"));
  // Ping from netkit: ws answers it.
  await peer.send("ping me");
  assert.equal(await peer.text(), "pong came");
  return peer;
}

Deno.test("npm:ws client ↔ serve(): text, binary, fragments, ping, over ws:// and wss://", async (t) => {
  await t.step("ws://", async () => {
    const { server, closes } = echoServer();
    await using _server = server;
    const peer = await clientRoundTrips(`ws://127.0.0.1:${server.addr.port}/`);
    assert.equal(peer.socket.extensions, "", "no extension was agreed on");
    assert.deepEqual(await peer.close(1000, "done"), { code: 1000, reason: "" });
    assert.deepEqual(await closes.next(), { code: 1000, reason: "done" });
    assert.deepEqual(peer.errors, []);
  });
  await t.step("wss:// trusting the dev CA", async () => {
    const { ca, cert, key } = await createDevCerts();
    const { server, closes } = echoServer({ cert, key });
    await using _server = server;
    const peer = await clientRoundTrips(`wss://127.0.0.1:${server.addr.port}/`, { ca });
    assert.deepEqual(await peer.close(1000), { code: 1000, reason: "" });
    assert.equal((await closes.next()).code, 1000);
    assert.deepEqual(peer.errors, []);
  });
});

Deno.test("npm:ws client ↔ serve(): maxPayload, close codes and reasons both ways", async () => {
  const { server, closes } = echoServer({ maxPayload: 1000 });
  await using _server = server;
  const url = `ws://127.0.0.1:${server.addr.port}/`;

  // Exactly maxPayload passes; one byte more closes with 1009, which ws sees.
  const big = await WsPeer.open(url);
  const limit = pseudoRandomBytes(1000, 3);
  await big.send(limit);
  assert.deepEqual(await big.binary(), limit);
  await big.send("x".repeat(1000));
  assert.equal(await big.text(), "x".repeat(1000));
  await big.send(pseudoRandomBytes(1001, 4));
  assert.equal((await big.closed).code, 1009);
  assert.equal((await closes.next()).code, 1009);
  // The same over fragments: 600 + 401 bytes.
  const frags = await WsPeer.open(url);
  await frags.send(new Uint8Array(600), { fin: false });
  await frags.send(new Uint8Array(401), { fin: true });
  assert.equal((await frags.closed).code, 1009);
  assert.equal((await closes.next()).code, 1009);

  // ws closes with 4001 "bye": the handler sees both; ws gets the code echoed.
  const a = await WsPeer.open(url);
  await a.send("still here");
  assert.equal(await a.text(), "still here");
  assert.equal((await a.close(4001, "bye")).code, 4001);
  assert.deepEqual(await closes.next(), { code: 4001, reason: "bye" });

  // netkit closes with 1001 and a reason: ws sees both.
  const b = await WsPeer.open(url);
  await b.send("leave");
  assert.deepEqual(await b.closed, { code: 1001, reason: "going away" });
  assert.equal((await closes.next()).code, 1001);

  // Shutting the server down sends 1001 to a client still open.
  const c = await WsPeer.open(url);
  await c.send("one more");
  assert.equal(await c.text(), "one more");
  const stopped = server.close();
  assert.deepEqual(await c.closed, { code: 1001, reason: "server shutting down" });
  await stopped;
  for (const peer of [big, frags, a, b, c]) assert.deepEqual(peer.errors, []);
});

Deno.test("npm:ws clients ↔ ws-server: broadcast to every client incl. the sender, 1009, ws:// and wss://", async (t) => {
  async function broadcast(url: string, options: WebSocket.ClientOptions = {}) {
    const peers = [
      await WsPeer.open(url, options),
      await WsPeer.open(url, options),
      await WsPeer.open(url, options),
    ];
    const [a, b, c] = peers;
    await a.send("hello, all");
    for (const p of peers) assert.equal(await p.text(), "hello, all");
    const bytes = new Uint8Array([0, 0xff, 0x80, 1]);
    await b.send(bytes);
    for (const p of peers) assert.deepEqual(await p.binary(), bytes);
    // Per-sender order, and type, kept; fragments reassembled before the broadcast.
    for (let i = 0; i < 5; i++) await c.send(`c${i}`);
    await c.send(new Uint8Array([9]), { fin: false });
    await c.send(new Uint8Array([8]), { fin: true });
    for (const p of peers) {
      for (let i = 0; i < 5; i++) assert.equal(await p.text(), `c${i}`);
      assert.deepEqual(await p.binary(), new Uint8Array([9, 8]));
    }
    // Over --max-payload (100): that client only is closed with 1009.
    await a.send("y".repeat(101));
    assert.equal((await a.closed).code, 1009);
    await b.send("after");
    for (const p of [b, c]) assert.equal(await p.text(), "after");
    for (const p of [b, c]) assert.equal((await p.close(1000)).code, 1000);
    for (const p of peers) assert.deepEqual(p.errors, []);
  }

  await t.step("ws://", async () => {
    await using server = await startServer(SERVER, ["--port", "0", "--max-payload", "100"]);
    await broadcast(`ws://127.0.0.1:${server.port}/`);
    const { code, stderr } = await server.stop();
    assert.equal(code, 0, stderr);
  });
  await t.step("wss://", async () => {
    await using certs = await tempDevCerts();
    await using server = await startServer(SERVER, [
      "--port",
      "0",
      "--max-payload",
      "100",
      ...certs.serverArgs,
    ]);
    assert.match(server.line, /^listening on wss:\/\/127\.0\.0\.1:\d+$/);
    await broadcast(`wss://127.0.0.1:${server.port}/`, { ca: certs.ca });
    const { code, stderr } = await server.stop();
    assert.equal(code, 0, stderr);
  });
});

// ---------------------------------------------------------------------------
// npm:ws as the SERVER of netkit's client.

/** What the test `ws` server does, by request path. */
function behave(peer: WsPeer, request: IncomingMessage): void {
  const socket = peer.socket;
  const path = request.url ?? "/";
  socket.on("message", (data: RawData, binary: boolean) => {
    const bytes = bytesOf(data);
    const text = binary ? "" : decoder.decode(bytes);
    if (path === "/twice") {
      socket.send(`reply 1: ${text}`);
      socket.send("reply 2");
    } else if (path === "/prefix") {
      socket.send(`got: ${text}`);
    } else if (path === "/who") {
      socket.send(`${socket.protocol || "-"} ${request.headers["x-token"] ?? "-"}`);
    } else if (path === "/refuse") {
      socket.close(4000, "not today");
    } else if (text === "fragments") {
      socket.send("frag", { fin: false });
      socket.send("men", { fin: false });
      socket.send(CHECK.subarray(0, 1), { binary: false, fin: false });
      socket.send(CHECK.subarray(1), { binary: false, fin: true });
      socket.send(new Uint8Array([1, 2]), { binary: true, fin: false });
      socket.send(new Uint8Array([3]), { binary: true, fin: true });
    } else if (text === "ping you") {
      socket.ping(encoder.encode("server ping"));
    } else if (text === "close me") {
      socket.close(4002, "server says bye");
    } else {
      socket.send(bytes, { binary }); // echo, type kept
    }
  });
}

const pickV2 = (protocols: Set<string>) => (protocols.has("chat.v2") ? "chat.v2" : false);

Deno.test("connect() ↔ npm:ws server: text, binary, fragments, ping, close codes, protocol, headers, ws:// and wss://", async (t) => {
  async function exercise(scheme: "ws" | "wss") {
    const certs = scheme === "wss" ? await createDevCerts() : undefined;
    await using server = await wsServer(behave, {
      handleProtocols: pickV2,
      tls: certs && { cert: certs.cert, key: certs.key },
    });
    const host = scheme === "wss" ? "localhost" : "127.0.0.1";
    const base = `${scheme}://${host}:${server.port}`;
    const caCerts = certs ? [certs.ca] : undefined;

    const ws = await connect(`${base}/`, {
      caCerts,
      protocols: ["chat.v1", "chat.v2"],
      headers: { "X-Token": "abc" },
      timeout: 10_000,
    });
    const [peer] = server.peers;
    // The subprotocol ws picked; the request header ws saw.
    assert.equal(ws.protocol, "chat.v2");
    assert.equal(peer.socket.protocol, "chat.v2");
    assert.equal(server.requests[0].headers["x-token"], "abc");
    assert.equal(server.requests[0].headers["sec-websocket-protocol"], "chat.v1, chat.v2");
    // Text and binary echoed by ws, type and bytes kept.
    await ws.send(UNICODE);
    assert.equal(await ws.receive(), UNICODE);
    const binary = new Uint8Array([0xff, 0, 0xc3, 0x28, 0x80]);
    await ws.send(binary);
    assert.deepEqual(await ws.receive(), binary);
    const big = pseudoRandomBytes(200_000, 11);
    await ws.send(big);
    assert.deepEqual(await ws.receive(), big);
    // What ws received from netkit: masked frames, decoded with the right type.
    assert.deepEqual(await peer.messages.next(), { bytes: encoder.encode(UNICODE), binary: false });
    assert.deepEqual(await peer.messages.next(), { bytes: binary, binary: true });
    assert.deepEqual((await peer.messages.next()).bytes, big);
    // Fragmented messages from ws, reassembled (a code point split across two).
    await ws.send("fragments");
    assert.equal(await ws.receive(), "fragmen✓");
    assert.deepEqual(await ws.receive(), new Uint8Array([1, 2, 3]));
    // ws pings: netkit answers with the same payload, by itself.
    await ws.send("ping you");
    assert.deepEqual(await peer.pongs.next(), encoder.encode("server ping"));
    // netkit pings: ws answers.
    assert.ok((await ws.ping()) >= 0);
    // ws closes with 4002 and a reason: netkit surfaces both.
    await ws.send("close me");
    assert.equal(await ws.receive(), null);
    assert.equal(ws.closeCode, 4002);
    assert.equal(ws.closeReason, "server says bye");
    await ws.closed;
    assert.equal((await peer.closed).code, 4002, "netkit echoes the code");

    // netkit closes with 4003 and a reason: ws sees both.
    const second = await connect(`${base}/`, { caCerts, headers: [["x-token", "t2"]] });
    assert.equal(second.protocol, "", "no protocol offered, none agreed");
    assert.equal(server.requests[1].headers["x-token"], "t2");
    await second.close(4003, "client bye");
    assert.deepEqual(await server.peers[1].closed, { code: 4003, reason: "client bye" });
    assert.equal(second.closeCode, 4003);
    for (const p of server.peers) assert.deepEqual(p.errors, []);
  }

  await t.step("ws://", () => exercise("ws"));
  await t.step("wss:// with caCerts", () => exercise("wss"));
});

Deno.test("ws-client ↔ npm:ws server: --message, stdin mode, --protocol, --header, close codes, wss --ca", async () => {
  await using certs = await tempDevCerts();
  await using plain = await wsServer(behave, { handleProtocols: pickV2 });
  await using secure = await wsServer(behave, {
    handleProtocols: pickV2,
    tls: { cert: certs.cert, key: certs.key },
  });
  const url = `ws://127.0.0.1:${plain.port}`;
  let seen = 0;
  const nextPeer = () => plain.peers[seen++];

  // --message: prints the first message that arrives after its own, only that one.
  const one = await runProgram(CLIENT, ["--url", `${url}/twice`, "--message", "hello"]);
  assert.equal(one.code, 0, one.stderr);
  assert.equal(one.stdout, "reply 1: hello\n");
  const onePeer = nextPeer();
  assert.deepEqual(await onePeer.messages.next(), {
    bytes: encoder.encode("hello"),
    binary: false,
  });
  assert.equal((await onePeer.closed).code, 1000);

  // stdin mode: each line a text message, each message a line; close 1000 at the end.
  const lines = await runProgram(CLIENT, ["--url", `${url}/prefix`], {
    stdin: "one\ntwo\nthree ✓\n",
  });
  assert.equal(lines.code, 0, lines.stderr);
  assert.equal(lines.stdout, "got: one\ngot: two\ngot: three ✓\n");
  const linesPeer = nextPeer();
  for (const line of ["one", "two", "three ✓"]) assert.equal(await linesPeer.text(), line);
  assert.equal((await linesPeer.closed).code, 1000);

  // --protocol (repeatable and comma-separated) and --header, as ws saw them.
  const who = await runProgram(CLIENT, [
    "--url",
    `${url}/who`,
    "--protocol",
    "chat.v1,chat.v2",
    "--protocol",
    "chat.v3",
    "--header",
    "X-Token: s3cret",
    "--message",
    "who?",
  ]);
  assert.equal(who.code, 0, who.stderr);
  assert.equal(who.stdout, "chat.v2 s3cret\n");
  const whoPeer = nextPeer();
  assert.equal(whoPeer.socket.protocol, "chat.v2");
  await whoPeer.closed;

  // The server closes with 4000 before replying: exit 1, the code and reason on stderr.
  const refused = await runProgram(CLIENT, ["--url", `${url}/refuse`, "--message", "hi"]);
  assert.equal(refused.code, 1);
  assert.equal(refused.stdout, "");
  assert.match(refused.stderr, /4000 \(not today\)/);
  assert.equal(refused.stderr.trim().split("\n").length, 1, refused.stderr);
  await nextPeer().closed;

  // wss:// with --ca; without it the certificate is not trusted: one line, exit 1.
  const wssUrl = `wss://localhost:${secure.port}/twice`;
  const tls = await runProgram(CLIENT, [
    "--url",
    wssUrl,
    "--ca",
    certs.files.ca,
    "--message",
    "over tls",
  ]);
  assert.equal(tls.code, 0, tls.stderr);
  assert.equal(tls.stdout, "reply 1: over tls\n");
  assert.equal((await secure.peers[0].closed).code, 1000);
  const untrusted = await runProgram(CLIENT, ["--url", wssUrl, "--message", "x"]);
  assert.equal(untrusted.code, 1);
  assert.match(untrusted.stderr, /certificate/i);
  assert.equal(untrusted.stderr.trim().split("\n").length, 1, untrusted.stderr);
  assert.equal(secure.peers.length, 1);
  for (const p of [...plain.peers, ...secure.peers]) assert.deepEqual(p.errors, []);
});
