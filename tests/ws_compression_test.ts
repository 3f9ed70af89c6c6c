// permessage-deflate (RFC 7692) in netkit's own engine: serve({ compression })
// and connect({ compression }) end to end, and raw frames over a TCP socket for
// what a real peer never sends — fragments of every size, context takeover over
// thousands of messages, decompression bombs, RSV bits where they do not
// belong, corrupt streams — plus the shared mode's promise: a broadcast is
// compressed once for every subscriber that negotiated the extension.
import assert from "node:assert/strict";
import { BufferedReader } from "../io/mod.ts";
import { connect, serve, type WebSocketConn, type WebSocketServerEvent } from "../websocket/mod.ts";
import {
  acceptDeflateResponse,
  acceptKey,
  DeflateContext,
  deflateContextOptions,
  type DeflateParams,
  encodeFrame,
  negotiateDeflate,
  Opcode,
  parseExtensions,
} from "../websocket/codec/mod.ts";
import { RawClient, upgradeRequest } from "./ws_helpers.ts";
import { concat, equalBytes, pseudoRandomBytes } from "./support/bytes.ts";
import { until } from "./support/time.ts";
import { jsonMessage } from "./support/messages.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const OFFER = "permessage-deflate; client_max_window_bits";
const SHARED_ANSWER = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/** An echo server (handler object) with the given compression mode. */
function echoServer(
  compression: "off" | "shared" | "dedicated",
  extra: Parameters<typeof serve>[0] = {},
) {
  return serve({ port: 0, compression, ...extra }, {
    message: (ws, data) => void ws.send(data),
  });
}

// ---------------------------------------------------------------------------
// Raw frames.

interface RawFrame {
  fin: boolean;
  rsv1: boolean;
  opcode: number;
  payload: Uint8Array;
}

/** Reads one frame (unmasking a masked one); `null` at the end of the stream. */
async function readFrame(reader: BufferedReader): Promise<RawFrame | null> {
  const head = await reader.readExact(2);
  if (head === null) return null;
  let length = head[1] & 0x7f;
  if (length === 126) {
    const ext = (await reader.readExact(2))!;
    length = (ext[0] << 8) | ext[1];
  } else if (length === 127) {
    const ext = (await reader.readExact(8))!;
    length = Number(new DataView(ext.buffer, ext.byteOffset, 8).getBigUint64(0));
  }
  const mask = head[1] & 0x80 ? (await reader.readExact(4))!.slice() : undefined;
  const payload = length === 0 ? new Uint8Array(0) : (await reader.readExact(length))!.slice();
  if (mask) { for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i & 3]; }
  return {
    fin: (head[0] & 0x80) !== 0,
    rsv1: (head[0] & 0x40) !== 0,
    opcode: head[0] & 0x0f,
    payload,
  };
}

/** A whole data message: the first frame's RSV1 and opcode, its fragments' payloads. */
async function readMessage(
  reader: BufferedReader,
): Promise<{ rsv1: boolean; opcode: number; fragments: Uint8Array[] }> {
  const first = await readFrame(reader);
  if (first === null) throw new Error("the connection ended before a message");
  const fragments = [first.payload];
  for (let last = first; !last.fin;) {
    last = (await readFrame(reader))!;
    assert.equal(last.rsv1, false, "RSV1 on the first frame only");
    fragments.push(last.payload);
  }
  return { rsv1: first.rsv1, opcode: first.opcode, fragments };
}

/** `payload` as one message in frames of at most `size` bytes; RSV1 on the first when `rsv1`. */
function fragmented(
  opcode: number,
  payload: Uint8Array,
  size: number,
  { rsv1 = true, mask = true }: { rsv1?: boolean; mask?: boolean } = {},
): Uint8Array {
  const frames: Uint8Array[] = [];
  let off = 0;
  do {
    const part = payload.subarray(off, off + size);
    off += size;
    frames.push(encodeFrame(frames.length === 0 ? opcode : Opcode.Continuation, part, {
      mask,
      fin: off >= payload.length,
      rsv1: rsv1 && frames.length === 0,
    }));
  } while (off < payload.length);
  return concat(frames);
}

/** A raw client upgraded with `extensions` offered; the server's answer and contexts for it. */
async function rawUpgrade(port: number, extensions?: string) {
  const client = await RawClient.connect(port);
  await client.write(
    upgradeRequest(
      "/",
      extensions === undefined ? [] : [`Sec-WebSocket-Extensions: ${extensions}`],
    ),
  );
  const head = await client.readHead();
  assert.match(head, /^HTTP\/1\.1 101 /);
  const answer = /\r\nsec-websocket-extensions: ([^\r]*)/i.exec(head)?.[1] ?? null;
  return { client, answer };
}

/** The client's contexts for what a server answered. */
function clientContexts(answer: string): { send: DeflateContext; receive: DeflateContext } {
  const params: DeflateParams = acceptDeflateResponse(answer)!;
  const { send, receive } = deflateContextOptions(params, "client", { threshold: 0 });
  return { send: new DeflateContext(send), receive: new DeflateContext(receive) };
}

/** Reads frames until a close frame; its code, or `null` when the stream ended first. */
async function closeCode(client: RawClient): Promise<number | null> {
  for (;;) {
    const frame = await readFrame(client.reader);
    if (frame === null) return null;
    if (frame.opcode === Opcode.Close) {
      return frame.payload.length >= 2 ? (frame.payload[0] << 8) | frame.payload[1] : 1005;
    }
  }
}

// ---------------------------------------------------------------------------
// The library end to end.

Deno.test("serve({ compression }) agrees as each mode says, and messages of every size cross it", async () => {
  const sizes = [0, 1, 1023, 1024, 5000, 70_000, 300_000];
  const expected = { off: "", shared: SHARED_ANSWER, dedicated: "permessage-deflate" };
  for (const mode of ["off", "shared", "dedicated"] as const) {
    let serverSide = "unset";
    await using server = serve({ port: 0, compression: mode }, {
      open: (ws) => void (serverSide = ws.extensions),
      message: (ws, data) => void ws.send(data),
    });
    await using client = await connect(server.url, { compression: true });
    await using plain = await connect(server.url);
    assert.equal(client.extensions, expected[mode], mode);
    assert.equal(plain.extensions, "", mode);
    for (const n of sizes) {
      const bytes = pseudoRandomBytes(n, n + 1);
      const text = "é" + jsonMessage(n).repeat(Math.ceil(n / 1200)).slice(0, n);
      for (const ws of [client, plain]) {
        await ws.send(bytes);
        assert.ok(equalBytes((await ws.receive()) as Uint8Array, bytes), `${mode} ${n} binary`);
        await ws.send(text);
        assert.equal(await ws.receive(), text, `${mode} ${n} text`);
      }
    }
    assert.equal(serverSide, "");
  }
});

Deno.test("the server's ws.extensions is what it answered", async () => {
  const seen: string[] = [];
  await using server = serve({ port: 0, compression: "dedicated" }, {
    open: (ws) => void seen.push(ws.extensions),
  });
  await using a = await connect(server.url, { compression: true });
  await using b = await connect(server.url);
  await a.ping();
  await b.ping();
  assert.deepEqual(seen.sort(), ["", "permessage-deflate"]);
});

Deno.test("messages under compressionThreshold go uncompressed, at and over it compressed", async () => {
  for (const mode of ["shared", "dedicated"] as const) {
    await using server = echoServer(mode, { compressionThreshold: 100 });
    const { client, answer } = await rawUpgrade(server.addr.port, OFFER);
    const { send, receive } = clientContexts(answer!);
    try {
      for (const n of [99, 100]) {
        const message = encoder.encode("a".repeat(n));
        await client.write(encodeFrame(Opcode.Text, message, { mask: true }));
        const reply = await readMessage(client.reader);
        assert.equal(reply.rsv1, n >= 100, `${mode}: ${n} bytes`);
        const data = reply.rsv1 ? receive.decompress(reply.fragments) : concat(reply.fragments);
        assert.equal(decoder.decode(data), "a".repeat(n));
      }
    } finally {
      send.close();
      receive.close();
      client.close();
    }
  }
});

Deno.test("a compressed message in fragments of every size from 1 byte is reassembled", async () => {
  for (const mode of ["shared", "dedicated"] as const) {
    await using server = echoServer(mode, { compressionThreshold: 0 });
    const { client, answer } = await rawUpgrade(server.addr.port, OFFER);
    const { send, receive } = clientContexts(answer!);
    try {
      let longest = 0;
      for (let size = 1;; size++) {
        const message = encoder.encode(jsonMessage(size));
        const payload = send.compress(message);
        longest = Math.max(longest, payload.length);
        await client.write(fragmented(Opcode.Text, payload, size));
        const reply = await readMessage(client.reader);
        assert.equal(reply.opcode, Opcode.Text);
        assert.equal(reply.rsv1, true);
        assert.equal(
          decoder.decode(receive.decompress(reply.fragments)),
          jsonMessage(size),
          `${size}`,
        );
        if (size >= payload.length) break; // the last one went in a single frame
      }
      assert.ok(longest > 100, `payloads of ${longest} bytes: fragments of many sizes were tried`);
      // Empty fragments, an empty first frame and an empty message too.
      const message = encoder.encode(jsonMessage(7));
      const payload = send.compress(message);
      await client.write(concat([
        encodeFrame(Opcode.Binary, new Uint8Array(0), { mask: true, fin: false, rsv1: true }),
        encodeFrame(Opcode.Continuation, payload.subarray(0, 10), { mask: true, fin: false }),
        encodeFrame(Opcode.Continuation, new Uint8Array(0), { mask: true, fin: false }),
        encodeFrame(Opcode.Continuation, payload.subarray(10), { mask: true }),
        encodeFrame(Opcode.Binary, send.compress(new Uint8Array(0)), { mask: true, rsv1: true }),
      ]));
      const first = await readMessage(client.reader);
      assert.equal(decoder.decode(receive.decompress(first.fragments)), jsonMessage(7));
      const empty = await readMessage(client.reader);
      assert.equal(empty.opcode, Opcode.Binary);
      // Threshold 0: the empty reply is compressed too, as the single byte 00 (§7.2.3.6).
      assert.equal(empty.rsv1, true);
      assert.deepEqual(receive.decompress(empty.fragments), new Uint8Array(0));
    } finally {
      send.close();
      receive.close();
      client.close();
    }
  }
});

Deno.test("context takeover holds over 5,000 messages each way (dedicated mode)", async () => {
  await using server = echoServer("dedicated", { compressionThreshold: 0 });
  const { client, answer } = await rawUpgrade(server.addr.port, OFFER);
  assert.equal(answer, "permessage-deflate");
  const { send, receive } = clientContexts(answer!);
  try {
    const messages = Array.from({ length: 5000 }, (_, i) => jsonMessage(i % 700));
    let repeatBytes = 0;
    for (let start = 0; start < messages.length; start += 100) {
      const batch = messages.slice(start, start + 100);
      await client.write(
        concat(
          batch.map((m) =>
            encodeFrame(Opcode.Text, send.compress(encoder.encode(m)), { mask: true, rsv1: true })
          ),
        ),
      );
      for (const [k, m] of batch.entries()) {
        const reply = await readMessage(client.reader);
        assert.equal(reply.rsv1, true);
        assert.equal(decoder.decode(receive.decompress(reply.fragments)), m, `${start + k}`);
        // The server kept its window: a message it sent 700 messages ago is
        // gone, but what repeats inside the window costs little.
        if (start + k >= 700) repeatBytes += concat(reply.fragments).length;
      }
    }
    using fresh = new DeflateContext();
    const firstSize = fresh.compress(encoder.encode(jsonMessage(99_999))).length;
    assert.ok(
      repeatBytes / 4300 < firstSize,
      "takeover: later messages refer back to earlier ones",
    );
    // The same message twice in a row: the second is a few bytes with takeover.
    const twice = encoder.encode(jsonMessage(123_456));
    for (let i = 0; i < 2; i++) {
      await client.write(
        encodeFrame(Opcode.Text, send.compress(twice), { mask: true, rsv1: true }),
      );
    }
    const a = await readMessage(client.reader);
    const b = await readMessage(client.reader);
    assert.equal(decoder.decode(receive.decompress(a.fragments)), jsonMessage(123_456));
    assert.equal(decoder.decode(receive.decompress(b.fragments)), jsonMessage(123_456));
    assert.ok(
      concat(b.fragments).length < 30,
      `a repeat compressed to ${concat(b.fragments).length} B`,
    );
  } finally {
    send.close();
    receive.close();
    client.close();
  }
});

Deno.test("shared mode: one publish to many subscribers compresses once; the others get the plain frame", async () => {
  const calls = { compress: 0 };
  const original = DeflateContext.prototype.compress;
  DeflateContext.prototype.compress = function (data: Uint8Array) {
    calls.compress++;
    return original.call(this, data);
  };
  const raws: { client: RawClient; answer: string | null }[] = [];
  const libs: WebSocketConn[] = [];
  try {
    await using server = serve({ port: 0, compression: "shared" }, {
      open: (ws) => void ws.subscribe("feed"),
    });
    const port = server.addr.port;
    for (let i = 0; i < 6; i++) raws.push(await rawUpgrade(port, OFFER));
    for (let i = 0; i < 4; i++) raws.push(await rawUpgrade(port));
    for (let i = 0; i < 2; i++) libs.push(await connect(server.url, { compression: true }));
    libs.push(await connect(server.url));
    for (const ws of libs) await ws.ping(); // opened and subscribed
    await until(() => server.hub.subscriberCount("feed") >= 13, "13 subscribers");

    for (const [i, message] of [jsonMessage(1).repeat(3), "small"].entries()) {
      calls.compress = 0;
      const result = server.publish("feed", message);
      assert.deepEqual(result, { delivered: 13, dropped: 0 });
      assert.equal(
        calls.compress,
        i === 0 ? 1 : 0,
        "compressed once, and never under the threshold",
      );
      const compressed: Uint8Array[] = [];
      for (const { client, answer } of raws) {
        const got = await readMessage(client.reader);
        const negotiated = answer !== null && i === 0;
        assert.equal(got.rsv1, negotiated);
        if (negotiated) {
          assert.equal(answer, SHARED_ANSWER);
          compressed.push(concat(got.fragments));
        } else {
          assert.equal(decoder.decode(concat(got.fragments)), message);
        }
      }
      // Every subscriber that negotiated got the same bytes: one frame for all.
      for (const c of compressed) assert.ok(equalBytes(c, compressed[0]));
      if (compressed.length) {
        using inflate = new DeflateContext({ noContextTakeover: true });
        assert.equal(decoder.decode(inflate.decompress(compressed[0])), message);
      }
      for (const ws of libs) assert.equal(await ws.receive(), message);
    }
    // Before the server's disposal, which would wait for these to answer its close.
    for (const { client } of raws) client.close();
    for (const ws of libs) await ws.close();
  } finally {
    DeflateContext.prototype.compress = original;
    for (const { client } of raws) client.close();
    for (const ws of libs) await ws.close();
  }
});

Deno.test("dedicated mode compresses a publish per subscriber, and frees each connection's contexts when it closes", async () => {
  const calls = { compress: 0, close: 0 };
  const compress = DeflateContext.prototype.compress;
  const close = DeflateContext.prototype.close;
  DeflateContext.prototype.compress = function (data: Uint8Array) {
    calls.compress++;
    return compress.call(this, data);
  };
  DeflateContext.prototype.close = function () {
    calls.close++;
    return close.call(this);
  };
  try {
    await using server = serve({ port: 0, compression: "dedicated" }, {
      open: (ws) => void ws.subscribe("feed"),
    });
    const clients: WebSocketConn[] = [];
    for (let i = 0; i < 4; i++) clients.push(await connect(server.url, { compression: true }));
    clients.push(await connect(server.url));
    for (const ws of clients) await ws.ping();
    await until(() => server.hub.subscriberCount("feed") >= 5, "5 subscribers");
    const message = jsonMessage(5).repeat(2);
    server.publish("feed", message);
    for (const ws of clients) assert.equal(await ws.receive(), message);
    assert.equal(calls.compress, 4);
    calls.close = 0;
    for (const ws of clients) await ws.close();
    await until(() => server.connections === 0, "every connection gone");
    // A compressor and a decompressor per compressed connection, on both ends.
    assert.equal(calls.close, 4 * 2 * 2);
  } finally {
    DeflateContext.prototype.compress = compress;
    DeflateContext.prototype.close = close;
  }
});

// ---------------------------------------------------------------------------
// Limits and protocol errors.

Deno.test("a decompression bomb closes with 1009, and the server keeps serving", async () => {
  using bomb = new DeflateContext({ noContextTakeover: true, level: 9 });
  const payload = bomb.compress(new Uint8Array(32 * 1024 * 1024)); // about 32 KiB of deflate
  assert.ok(payload.length < 128 * 1024, `${payload.length}`);
  for (const mode of ["shared", "dedicated"] as const) {
    await using server = echoServer(mode, { maxPayload: 1024 * 1024 });
    const { client } = await rawUpgrade(server.addr.port, OFFER);
    await client.write(encodeFrame(Opcode.Binary, payload, { mask: true, rsv1: true }));
    assert.equal(await closeCode(client), 1009, mode);
    client.close();
    // Fragmented, the same.
    const { client: again } = await rawUpgrade(server.addr.port, OFFER);
    await again.write(fragmented(Opcode.Binary, payload, 4096));
    assert.equal(await closeCode(again), 1009, mode);
    again.close();
    await using ok = await connect(server.url, { compression: true });
    await ok.send(jsonMessage(1));
    assert.equal(await ok.receive(), jsonMessage(1));
  }
});

Deno.test("RSV bits where they do not belong are protocol errors (1002)", async () => {
  using ctx = new DeflateContext({ noContextTakeover: true });
  const payload = ctx.compress(encoder.encode(jsonMessage(3)));
  const cases: [string, "off" | "shared" | "dedicated", string | undefined, Uint8Array][] = [
    [
      "RSV1 on a server with compression off",
      "off",
      OFFER,
      encodeFrame(Opcode.Text, payload, { mask: true, rsv1: true }),
    ],
    [
      "RSV1 from a client that did not negotiate",
      "shared",
      undefined,
      encodeFrame(Opcode.Text, payload, { mask: true, rsv1: true }),
    ],
    [
      "RSV1 on a continuation frame",
      "shared",
      OFFER,
      concat([
        encodeFrame(Opcode.Text, payload.subarray(0, 5), { mask: true, fin: false, rsv1: true }),
        encodeFrame(Opcode.Continuation, payload.subarray(5), { mask: true, rsv1: true }),
      ]),
    ],
    [
      "RSV1 on a continuation of an uncompressed message",
      "dedicated",
      OFFER,
      concat([
        encodeFrame(Opcode.Text, "abc", { mask: true, fin: false }),
        encodeFrame(Opcode.Continuation, "def", { mask: true, rsv1: true }),
      ]),
    ],
    [
      "RSV1 on a ping",
      "shared",
      OFFER,
      encodeFrame(Opcode.Ping, "x", { mask: true, rsv1: true }),
    ],
    [
      "RSV1 on a close frame",
      "dedicated",
      OFFER,
      (() => {
        const f = encodeFrame(Opcode.Close, new Uint8Array([3, 232]), { mask: true });
        f[0] |= 0x40;
        return f;
      })(),
    ],
    [
      "RSV2 with the extension negotiated",
      "shared",
      OFFER,
      (() => {
        const f = encodeFrame(Opcode.Text, "hi", { mask: true });
        f[0] |= 0x20;
        return f;
      })(),
    ],
    [
      "RSV3 with the extension negotiated",
      "dedicated",
      OFFER,
      (() => {
        const f = encodeFrame(Opcode.Binary, "hi", { mask: true });
        f[0] |= 0x10;
        return f;
      })(),
    ],
  ];
  for (const [label, mode, offer, bytes] of cases) {
    await using server = echoServer(mode);
    const { client } = await rawUpgrade(server.addr.port, offer);
    await client.write(bytes);
    assert.equal(await closeCode(client), 1002, label);
    client.close();
  }
});

Deno.test("a corrupt deflate stream, or text that inflates to bad UTF-8, closes with 1007", async () => {
  using ctx = new DeflateContext({ noContextTakeover: true });
  const badUtf8 = ctx.compress(new Uint8Array([0x68, 0x69, 0xff, 0xfe, 0x20]));
  const corrupt = new Uint8Array([0xff, 0xff, 0x00, 0x01, 0x02]);
  for (const mode of ["shared", "dedicated"] as const) {
    await using server = echoServer(mode);
    for (
      const [label, bytes] of [
        ["corrupt", encodeFrame(Opcode.Binary, corrupt, { mask: true, rsv1: true })],
        ["corrupt, fragmented", fragmented(Opcode.Binary, corrupt, 2)],
        ["bad UTF-8", encodeFrame(Opcode.Text, badUtf8, { mask: true, rsv1: true })],
        ["bad UTF-8, fragmented", fragmented(Opcode.Text, badUtf8, 3)],
      ] as const
    ) {
      const { client } = await rawUpgrade(server.addr.port, OFFER);
      await client.write(bytes);
      assert.equal(await closeCode(client), 1007, `${mode}: ${label}`);
      client.close();
    }
    // The shared decompressor recovered: others are served.
    await using ok = await connect(server.url, { compression: true });
    const text = jsonMessage(9).repeat(2);
    await ok.send(text);
    assert.equal(await ok.receive(), text);
  }
});

// ---------------------------------------------------------------------------
// Negotiation through the server.

Deno.test("the server declines what it cannot honour and never fails the upgrade for it", async () => {
  const events: WebSocketServerEvent[] = [];
  await using server = serve({
    port: 0,
    compression: "dedicated",
    onEvent: (e) => void events.push(e),
  }, { message: (ws, data) => void ws.send(data) });
  const port = server.addr.port;
  const cases: [string, string | null][] = [
    ["permessage-deflate; a=b=c", null], // malformed: logged, no extension
    ['permessage-deflate; client_max_window_bits="1', null],
    ["x-webkit-deflate-frame", null],
    ["permessage-deflate; server_max_window_bits=16", null],
    [
      "permessage-deflate; x_foo, permessage-deflate; client_max_window_bits=10",
      "permessage-deflate; client_max_window_bits=10",
    ],
    [
      "foo, permessage-deflate; server_no_context_takeover; server_max_window_bits=9",
      "permessage-deflate; server_no_context_takeover; server_max_window_bits=9",
    ],
  ];
  for (const [offer, expected] of cases) {
    const { client, answer } = await rawUpgrade(port, offer);
    assert.equal(answer, expected, offer);
    // Still a working connection, compressed or not.
    const text = jsonMessage(2).repeat(2);
    const message = encoder.encode(text);
    if (answer === null) {
      await client.write(encodeFrame(Opcode.Text, message, { mask: true }));
      const reply = await readMessage(client.reader);
      assert.equal(reply.rsv1, false);
      assert.equal(decoder.decode(concat(reply.fragments)), text);
    } else {
      const { send, receive } = clientContexts(answer);
      await client.write(
        encodeFrame(Opcode.Text, send.compress(message), { mask: true, rsv1: true }),
      );
      const reply = await readMessage(client.reader);
      assert.equal(reply.rsv1, true);
      assert.equal(decoder.decode(receive.decompress(reply.fragments)), text);
      send.close();
      receive.close();
    }
    client.close();
  }
  const logged = events.filter((e) => e.type === "error").map((e) =>
    (e as { error: { code: string } }).error.code
  );
  assert.deepEqual(logged, ["ERR_WS_BAD_EXTENSIONS_HEADER", "ERR_WS_BAD_EXTENSIONS_HEADER"]);
});

Deno.test("serve() and connect() refuse bad compression options", async () => {
  assert.throws(
    // deno-lint-ignore no-explicit-any
    () => serve({ port: 0, compression: "gzip" as any }, () => {}),
    TypeError,
  );
  assert.throws(() => serve({ port: 0, compressionThreshold: -1 }, () => {}), RangeError);
  await assert.rejects(
    connect("ws://127.0.0.1:1/", { compression: true, compressionThreshold: -1 }),
    RangeError,
  );
});

// ---------------------------------------------------------------------------
// The client against a raw server that answers what we choose.

/** A one-connection raw server: answers the upgrade with `extensions`, then runs `talk`. */
function rawServer(
  extensions: string | null,
  talk: (reader: BufferedReader, conn: Deno.Conn, offer: string | null) => Promise<void>,
): { port: number; done: Promise<void> } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const done = (async () => {
    const conn = await listener.accept();
    listener.close();
    const reader = new BufferedReader(conn);
    try {
      const head = decoder.decode((await reader.readUntil("\r\n\r\n"))!);
      const key = /\r\nsec-websocket-key: ([^\r]*)/i.exec(head)![1];
      const offer = /\r\nsec-websocket-extensions: ([^\r]*)/i.exec(head)?.[1] ?? null;
      const answer = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n" +
        `Connection: Upgrade\r\nSec-WebSocket-Accept: ${await acceptKey(key)}\r\n` +
        (extensions === null ? "" : `Sec-WebSocket-Extensions: ${extensions}\r\n`) + "\r\n";
      await conn.write(encoder.encode(answer));
      await talk(reader, conn, offer);
    } finally {
      conn.close();
    }
  })();
  return { port: (listener.addr as Deno.NetAddr).port, done };
}

async function writeAllTo(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let off = 0; off < bytes.length;) off += await conn.write(bytes.subarray(off));
}

Deno.test("connect({ compression }) offers what browsers do and honours each parameter a server answers", async () => {
  const answers = [
    "permessage-deflate",
    "permessage-deflate; server_no_context_takeover",
    "permessage-deflate; client_no_context_takeover",
    "permessage-deflate; server_max_window_bits=9",
    "permessage-deflate; client_max_window_bits=8",
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover; " +
    "server_max_window_bits=10; client_max_window_bits=11",
  ];
  for (const extensions of answers) {
    const params = negotiateDeflate(parseExtensions(extensions))!.params;
    const contexts = deflateContextOptions(params, "server", { threshold: 0 });
    const { port, done } = rawServer(extensions, async (reader, conn, offer) => {
      assert.equal(offer, OFFER);
      using send = new DeflateContext(contexts.send);
      using receive = new DeflateContext(contexts.receive);
      // Three compressed messages from the client (takeover as agreed), echoed compressed in two frames.
      for (let i = 0; i < 3; i++) {
        const got = await readMessage(reader);
        assert.equal(got.rsv1, true);
        const data = receive.decompress(got.fragments);
        await writeAllTo(conn, fragmented(Opcode.Text, send.compress(data), 50, { mask: false }));
      }
      // The client's close.
      const close = await readFrame(reader);
      assert.equal(close?.opcode, Opcode.Close);
      await writeAllTo(conn, encodeFrame(Opcode.Close, close!.payload));
    });
    const ws = await connect(`ws://127.0.0.1:${port}/`, { compression: true });
    assert.equal(ws.extensions, extensions);
    for (let i = 0; i < 3; i++) {
      const text = jsonMessage(i).repeat(2); // over the 1 KiB threshold
      await ws.send(text);
      assert.equal(await ws.receive(), text, extensions);
    }
    await ws.close();
    await done;
  }
});

Deno.test("the client fails the connection on an extension answer it did not offer", async () => {
  const cases: [boolean, string, string][] = [
    [false, "permessage-deflate", "ERR_WS_HANDSHAKE"],
    [true, "x-foo", "ERR_WS_BAD_EXTENSION_RESPONSE"],
    [true, "permessage-deflate; server_max_window_bits=10; foo", "ERR_WS_BAD_EXTENSION_RESPONSE"],
    [true, "permessage-deflate, permessage-deflate", "ERR_WS_BAD_EXTENSION_RESPONSE"],
    [true, "permessage-deflate; client_max_window_bits", "ERR_WS_BAD_EXTENSION_RESPONSE"],
  ];
  for (const [compression, extensions, code] of cases) {
    const { port, done } = rawServer(extensions, async (reader) => {
      await reader.readChunk().catch(() => null); // the client hangs up
    });
    await assert.rejects(connect(`ws://127.0.0.1:${port}/`, { compression }), { code }, extensions);
    await done;
  }
  // A server that declines: the connection goes on uncompressed.
  const { port, done } = rawServer(null, async (reader, conn, offer) => {
    assert.equal(offer, OFFER);
    const got = await readMessage(reader);
    assert.equal(got.rsv1, false);
    await writeAllTo(conn, encodeFrame(Opcode.Text, concat(got.fragments)));
    await readFrame(reader);
  });
  const ws = await connect(`ws://127.0.0.1:${port}/`, { compression: true });
  assert.equal(ws.extensions, "");
  await ws.send(jsonMessage(1).repeat(2));
  assert.equal(await ws.receive(), jsonMessage(1).repeat(2));
  ws.destroy();
  await done;
});

Deno.test("the client: a bomb from the server closes with 1009, a compressed ping is 1002", async () => {
  using bomb = new DeflateContext({ noContextTakeover: true, level: 9 });
  const payload = bomb.compress(new Uint8Array(8 * 1024 * 1024));
  for (
    const [label, frame, code] of [
      ["bomb", encodeFrame(Opcode.Binary, payload, { rsv1: true }), 1009],
      ["ping with RSV1", encodeFrame(Opcode.Ping, "x", { rsv1: true }), 1002],
    ] as const
  ) {
    const { port, done } = rawServer("permessage-deflate", async (reader, conn) => {
      await writeAllTo(conn, frame);
      const close = await readFrame(reader);
      assert.equal(close?.opcode, Opcode.Close);
      assert.equal((close!.payload[0] << 8) | close!.payload[1], code, label);
    });
    const ws = await connect(`ws://127.0.0.1:${port}/`, { compression: true, maxPayload: 1 << 20 });
    assert.equal(await ws.receive(), null);
    assert.equal(ws.closeCode, code, label);
    await done;
    ws.destroy();
    await ws.closed;
  }
});
