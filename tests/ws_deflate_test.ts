// permessage-deflate (RFC 7692): the negotiation on both sides, the
// compressor and decompressor (round trips, context takeover, the
// shared-compressor property, bombs, corrupt streams), and interop with
// Node's `ws` over real sockets in both directions for each parameter
// combination.
import assert from "node:assert/strict";
import type { Buffer } from "node:buffer";
// @ts-types="@types/ws"
import WebSocket, { type RawData, WebSocketServer } from "ws";
import {
  acceptDeflateResponse,
  DeflateContext,
  deflateContextOptions,
  type DeflateOptions,
  type DeflateParams,
  formatDeflateOffer,
  negotiateDeflate,
  parseExtensions,
} from "../websocket/codec/permessage_deflate.ts";
import { acceptKey, applyMask, encodeFrame, Opcode } from "../websocket/codec/mod.ts";
import { concat, equalBytes, pseudoRandomBytes } from "./support/bytes.ts";
import { jsonMessage } from "./support/messages.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const TRAILER = new Uint8Array([0x00, 0x00, 0xff, 0xff]);
const DEFAULTS: DeflateParams = {
  serverNoContextTakeover: false,
  clientNoContextTakeover: false,
  serverMaxWindowBits: 15,
  clientMaxWindowBits: 15,
};

/** Half pseudo-random, half repetitive text: compressible, but not trivially. */
function sample(n: number, seed = 1): Uint8Array {
  const out = pseudoRandomBytes(n, seed);
  const text = encoder.encode(`{"seq":${seed},"type":"update","items":[1,2,3]} `);
  for (let i = 0; i < n; i += 2 * text.length) {
    out.set(text.subarray(0, Math.min(text.length, n - i)), i);
  }
  return out;
}

/** A JSON-like message of about 640 bytes, different for every `i`. */
function jsonBytes(i: number): Uint8Array {
  return encoder.encode(jsonMessage(i, 12));
}

// ---------------------------------------------------------------------------
// Header syntax.

Deno.test("parseExtensions() reads tokens, quoted tokens, whitespace and empty list elements", () => {
  assert.deepEqual(parseExtensions(null), []);
  assert.deepEqual(parseExtensions(""), []);
  assert.deepEqual(parseExtensions(" , ,"), []);
  assert.deepEqual(
    parseExtensions(
      'Permessage-Deflate ;\tServer_Max_Window_Bits = "1\\0" ; client_max_window_bits,, foo',
    ),
    [
      {
        name: "permessage-deflate",
        params: [
          { name: "server_max_window_bits", value: "10" },
          { name: "client_max_window_bits", value: undefined },
        ],
      },
      { name: "foo", params: [] },
    ],
  );
  // Several header lines arrive joined with ", " by Headers.get().
  const headers = new Headers();
  headers.append("sec-websocket-extensions", "permessage-deflate; server_no_context_takeover");
  headers.append("sec-websocket-extensions", "permessage-deflate");
  assert.equal(parseExtensions(headers.get("sec-websocket-extensions")).length, 2);
});

Deno.test("parseExtensions() refuses bad syntax with ERR_WS_BAD_EXTENSIONS_HEADER", () => {
  for (
    const header of [
      "permessage-deflate;",
      "; a",
      "a b",
      "a; b=",
      "a; =1",
      'a; b="x y"',
      'a; b=""',
      'a; b="unterminated',
      "a; b=c d",
      "a; b=c=d",
      "a,; b",
      "pérmessage-deflate",
      "a; b=@",
    ]
  ) {
    assert.throws(() => parseExtensions(header), (err: Error & { code?: string }) => {
      assert.equal(err.code, "ERR_WS_BAD_EXTENSIONS_HEADER", header);
      return true;
    });
  }
});

// ---------------------------------------------------------------------------
// Server-side negotiation.

interface ServerRow {
  offer: string;
  options?: DeflateOptions;
  response: string | null;
  params?: Partial<DeflateParams>;
}

/** `param` asked for in the offer, or imposed by the server's `option` on a bare offer: agreed. */
function askedOrImposed(
  param: string,
  option: DeflateOptions & Partial<DeflateParams>,
): ServerRow[] {
  const agreed = `permessage-deflate; ${param}`;
  return [
    { offer: agreed, response: agreed, params: option },
    { offer: "permessage-deflate", options: option, response: agreed, params: option },
  ];
}

/**
 * `<side>_max_window_bits`: offered with a value, bare, or not at all
 * (`offer` left out); capped by the server's option (`cap`) or not; `agreed`
 * is what the response names.
 */
function windowBits(
  side: "server" | "client",
  { offer, cap, agreed }: { offer?: number | "bare"; cap?: number; agreed: number },
): ServerRow {
  const param = `${side}_max_window_bits`;
  const key = side === "server" ? "serverMaxWindowBits" : "clientMaxWindowBits";
  return {
    offer: offer === undefined
      ? "permessage-deflate"
      : `permessage-deflate; ${param}${offer === "bare" ? "" : `=${offer}`}`,
    options: cap === undefined ? undefined : { [key]: cap },
    response: `permessage-deflate; ${param}=${agreed}`,
    params: { [key]: agreed },
  };
}

const SERVER_TABLE: ServerRow[] = [
  // The plain offers.
  { offer: "permessage-deflate", response: "permessage-deflate" },
  { offer: "permessage-deflate; client_max_window_bits", response: "permessage-deflate" },
  // server_no_context_takeover: asked, or imposed by the server.
  ...askedOrImposed("server_no_context_takeover", { serverNoContextTakeover: true }),
  // client_no_context_takeover: offered (echoed), or imposed.
  ...askedOrImposed("client_no_context_takeover", { clientNoContextTakeover: true }),
  // server_max_window_bits: the smaller of the offer's and the server's.
  windowBits("server", { offer: 10, agreed: 10 }),
  windowBits("server", { offer: 10, cap: 12, agreed: 10 }),
  windowBits("server", { offer: 12, cap: 9, agreed: 9 }),
  windowBits("server", { cap: 11, agreed: 11 }),
  {
    offer: 'permessage-deflate; server_max_window_bits="15"',
    response: "permessage-deflate; server_max_window_bits=15",
  },
  // 8 is agreed (and compressed with zlib's 9, which stays within 256 bytes).
  windowBits("server", { offer: 8, agreed: 8 }),
  // client_max_window_bits: echoed, capped, or imposed when offered bare.
  windowBits("client", { offer: 12, agreed: 12 }),
  windowBits("client", { offer: "bare", cap: 10, agreed: 10 }),
  windowBits("client", { offer: 12, cap: 10, agreed: 10 }),
  windowBits("client", { offer: 9, cap: 10, agreed: 9 }),
  // A cap on the client's window needs the client to have offered the parameter.
  { offer: "permessage-deflate", options: { clientMaxWindowBits: 10 }, response: null },
  // Everything at once.
  {
    offer: "permessage-deflate; server_no_context_takeover; client_no_context_takeover; " +
      "server_max_window_bits=9; client_max_window_bits=11",
    response: "permessage-deflate; server_no_context_takeover; client_no_context_takeover; " +
      "server_max_window_bits=9; client_max_window_bits=11",
    params: {
      serverNoContextTakeover: true,
      clientNoContextTakeover: true,
      serverMaxWindowBits: 9,
      clientMaxWindowBits: 11,
    },
  },
  // Names are case-insensitive.
  {
    offer: "PerMessage-Deflate; Server_No_Context_Takeover",
    response: "permessage-deflate; server_no_context_takeover",
    params: { serverNoContextTakeover: true },
  },
  // Offers the server must decline: the handshake goes on without the extension.
  { offer: "permessage-deflate; server_max_window_bits", response: null },
  { offer: "permessage-deflate; server_max_window_bits=16", response: null },
  { offer: "permessage-deflate; server_max_window_bits=7", response: null },
  { offer: "permessage-deflate; server_max_window_bits=08", response: null },
  { offer: "permessage-deflate; server_max_window_bits=abc", response: null },
  { offer: "permessage-deflate; client_max_window_bits=16", response: null },
  { offer: "permessage-deflate; client_max_window_bits=1e1", response: null },
  { offer: "permessage-deflate; server_no_context_takeover=1", response: null },
  { offer: "permessage-deflate; client_no_context_takeover=true", response: null },
  {
    offer: "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
    response: null,
  },
  {
    offer: "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
    response: null,
  },
  { offer: "permessage-deflate; x_unknown", response: null },
  { offer: "x-webkit-deflate-frame", response: null },
  { offer: "", response: null },
  // Several offers: the first acceptable one, in the client's order.
  {
    offer: "permessage-deflate; server_max_window_bits=16, " +
      "permessage-deflate; server_no_context_takeover, permessage-deflate",
    response: "permessage-deflate; server_no_context_takeover",
    params: { serverNoContextTakeover: true },
  },
  {
    offer: "permessage-deflate; x_foo, permessage-deflate; server_max_window_bits=10, " +
      "permessage-deflate",
    response: "permessage-deflate; server_max_window_bits=10",
    params: { serverMaxWindowBits: 10 },
  },
  {
    offer: "x-webkit-deflate-frame; no_context_takeover, permessage-deflate; " +
      "client_max_window_bits",
    response: "permessage-deflate",
  },
  {
    offer: "permessage-deflate, permessage-deflate; client_max_window_bits",
    options: { clientMaxWindowBits: 9 },
    response: "permessage-deflate; client_max_window_bits=9",
    params: { clientMaxWindowBits: 9 },
  },
  {
    offer: "permessage-deflate; client_max_window_bits=16, permessage-deflate; bad=1",
    response: null,
  },
];

Deno.test("negotiateDeflate() answers every parameter, falls back across offers, declines bad ones", () => {
  for (const row of SERVER_TABLE) {
    const result = negotiateDeflate(parseExtensions(row.offer), row.options);
    const label = `${row.offer} with ${JSON.stringify(row.options ?? {})}`;
    if (row.response === null) {
      assert.equal(result, null, label);
      continue;
    }
    assert.ok(result, label);
    assert.equal(result.response, row.response, label);
    assert.deepEqual(result.params, { ...DEFAULTS, ...row.params }, label);
  }
});

Deno.test("negotiateDeflate() and friends refuse options outside 8..15 with RangeError", () => {
  assert.throws(() => negotiateDeflate([], { serverMaxWindowBits: 16 }), RangeError);
  assert.throws(() => negotiateDeflate([], { clientMaxWindowBits: 7 }), RangeError);
  assert.throws(() => formatDeflateOffer({ serverMaxWindowBits: 9.5 }), RangeError);
  assert.throws(() => acceptDeflateResponse(null, { clientMaxWindowBits: 20 }), RangeError);
});

// ---------------------------------------------------------------------------
// Client side: the offer and the check of the server's answer.

Deno.test("formatDeflateOffer() writes each parameter the client asks for", () => {
  assert.equal(formatDeflateOffer(), "permessage-deflate; client_max_window_bits");
  assert.equal(formatDeflateOffer({ clientMaxWindowBits: false }), "permessage-deflate");
  assert.equal(
    formatDeflateOffer({
      serverNoContextTakeover: true,
      clientNoContextTakeover: true,
      serverMaxWindowBits: 9,
      clientMaxWindowBits: 12,
    }),
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover; " +
      "server_max_window_bits=9; client_max_window_bits=12",
  );
});

interface ClientRow {
  response: string | null;
  options?: DeflateOptions;
  params?: Partial<DeflateParams> | null;
  error?: boolean;
}

/**
 * A response naming `<side>_max_window_bits=<response>` (left out: not
 * named) to an offer that asked for `offered` (left out: not asked; `false`:
 * for the client's, not offered): accepted with `agreed`, or refused when
 * `agreed` is left out.
 */
function windowAnswer(
  side: "server" | "client",
  { response, offered, agreed }: { response?: number; offered?: number | false; agreed?: number },
): ClientRow {
  const key = side === "server" ? "serverMaxWindowBits" : "clientMaxWindowBits";
  return {
    response: response === undefined
      ? "permessage-deflate"
      : `permessage-deflate; ${side}_max_window_bits=${response}`,
    options: offered === undefined ? undefined : { [key]: offered },
    ...(agreed === undefined ? { error: true } : { params: { [key]: agreed } }),
  };
}

const CLIENT_TABLE: ClientRow[] = [
  { response: null, params: null },
  { response: "", params: null },
  { response: "permessage-deflate", params: {} },
  // A server may impose either no_context_takeover unasked.
  {
    response: "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
    params: { serverNoContextTakeover: true, clientNoContextTakeover: true },
  },
  // server_max_window_bits: any value unasked, at most the asked value otherwise.
  { response: "permessage-deflate; server_max_window_bits=9", params: { serverMaxWindowBits: 9 } },
  windowAnswer("server", { response: 10, offered: 10, agreed: 10 }),
  windowAnswer("server", { response: 8, offered: 10, agreed: 8 }),
  windowAnswer("server", { response: 12, offered: 10 }),
  { response: "permessage-deflate", options: { serverMaxWindowBits: 10 }, error: true },
  { response: "permessage-deflate", options: { serverNoContextTakeover: true }, error: true },
  // client_max_window_bits: only when offered, at most the offered value.
  windowAnswer("client", { response: 9, agreed: 9 }),
  windowAnswer("client", { response: 9, offered: 10, agreed: 9 }),
  windowAnswer("client", { offered: 10, agreed: 10 }),
  windowAnswer("client", { response: 11, offered: 10 }),
  windowAnswer("client", { response: 10, offered: false }),
  // Values a response must not carry, or must carry.
  { response: "permessage-deflate; client_max_window_bits", error: true },
  { response: "permessage-deflate; server_max_window_bits", error: true },
  { response: "permessage-deflate; server_max_window_bits=16", error: true },
  { response: "permessage-deflate; server_max_window_bits=07", error: true },
  { response: "permessage-deflate; server_no_context_takeover=yes", error: true },
  {
    response: "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
    error: true,
  },
  { response: "permessage-deflate; x_unknown", error: true },
  // Something not offered at all.
  { response: "x-webkit-deflate-frame", error: true },
  { response: "permessage-deflate, permessage-deflate", error: true },
  { response: "permessage-deflate; a=b=c", error: true },
];

Deno.test("acceptDeflateResponse() takes what was offered and refuses anything else", () => {
  for (const row of CLIENT_TABLE) {
    const label = `${row.response} for ${JSON.stringify(row.options ?? {})}`;
    if (row.error) {
      assert.throws(
        () => acceptDeflateResponse(row.response, row.options),
        (err: Error & { code?: string; status?: number }) => {
          assert.equal(err.code, "ERR_WS_BAD_EXTENSION_RESPONSE", label);
          assert.equal(err.status, 101, label);
          return true;
        },
      );
      continue;
    }
    const params = acceptDeflateResponse(row.response, row.options);
    if (row.params === null) assert.equal(params, null, label);
    else assert.deepEqual(params, { ...DEFAULTS, ...row.params }, label);
  }
});

Deno.test("every client offer × server setting: both ends agree on the same parameters", () => {
  const bits = [undefined, 8, 10, 15];
  const clientSettings: DeflateOptions[] = [];
  for (const serverNoContextTakeover of [false, true]) {
    for (const clientNoContextTakeover of [false, true]) {
      for (const serverMaxWindowBits of bits) {
        for (const clientMaxWindowBits of [true, false, 9, 15]) {
          clientSettings.push({
            serverNoContextTakeover,
            clientNoContextTakeover,
            serverMaxWindowBits,
            clientMaxWindowBits,
          });
        }
      }
    }
  }
  const serverSettings = clientSettings.map((c) => ({
    ...c,
    clientMaxWindowBits: c.clientMaxWindowBits === false ? true : c.clientMaxWindowBits,
  }));
  let agreed = 0;
  for (const client of clientSettings) {
    for (const server of serverSettings) {
      const label = `client ${JSON.stringify(client)} server ${JSON.stringify(server)}`;
      const result = negotiateDeflate(parseExtensions(formatDeflateOffer(client)), server);
      if (result === null) {
        // The only refusal: a server capping a client that did not offer the cap.
        assert.equal(typeof server.clientMaxWindowBits, "number", label);
        assert.equal(client.clientMaxWindowBits, false, label);
        continue;
      }
      agreed++;
      assert.deepEqual(acceptDeflateResponse(result.response, client), result.params, label);
      if (client.serverNoContextTakeover || server.serverNoContextTakeover) {
        assert.equal(result.params.serverNoContextTakeover, true, label);
      }
      assert.ok(
        result.params.serverMaxWindowBits <=
          Math.min(client.serverMaxWindowBits ?? 15, server.serverMaxWindowBits ?? 15),
        label,
      );
    }
  }
  assert.ok(agreed > clientSettings.length * serverSettings.length * 0.8);
});

Deno.test("deflateContextOptions() gives each direction its own window and takeover", () => {
  const params: DeflateParams = {
    serverNoContextTakeover: true,
    clientNoContextTakeover: false,
    serverMaxWindowBits: 9,
    clientMaxWindowBits: 12,
  };
  const server = deflateContextOptions(params, "server", { level: 6, threshold: 10 });
  const client = deflateContextOptions(params, "client");
  assert.deepEqual(server.send, {
    level: 6,
    memLevel: undefined,
    threshold: 10,
    windowBits: 9,
    noContextTakeover: true,
  });
  assert.equal(server.receive.windowBits, 12);
  assert.equal(server.receive.noContextTakeover, false);
  assert.deepEqual(client.send.windowBits, server.receive.windowBits);
  assert.deepEqual(client.receive.noContextTakeover, server.send.noContextTakeover);
});

// ---------------------------------------------------------------------------
// Compression.

const SIZES = [0, 1, 1023, 1024, 64 * 1024, 1024 * 1024];

Deno.test("compress() → decompress() round trips sizes 0 B to 1 MiB, whole and in fragments", () => {
  for (const windowBits of [8, 12, 15]) {
    for (const noContextTakeover of [false, true]) {
      using sender = new DeflateContext({ windowBits, noContextTakeover });
      using receiver = new DeflateContext({ windowBits, noContextTakeover });
      for (const size of SIZES) {
        const label = `${size} B, windowBits ${windowBits}, takeover ${!noContextTakeover}`;
        const message = sample(size, size + windowBits);
        const compressed = sender.compress(message);
        if (size === 0) assert.deepEqual(compressed, new Uint8Array([0]), label);
        // maxPayload is inclusive: a message of exactly maxPayload bytes passes.
        assert.ok(equalBytes(receiver.decompress(compressed, size), message), label);
        // The same message again, cut into fragments (1 byte each when small).
        const again = sender.compress(message);
        const step = size <= 1024 ? 1 : Math.ceil(again.length / 7);
        const fragments: Uint8Array[] = [];
        for (let i = 0; i < again.length; i += step) fragments.push(again.subarray(i, i + step));
        assert.ok(equalBytes(receiver.decompress(fragments, size), message), label);
      }
    }
  }
});

Deno.test("compress() and decompress() read views at any offset and never keep the caller's bytes", () => {
  using sender = new DeflateContext();
  using receiver = new DeflateContext();
  const backing = sample(10_000, 4);
  const view = backing.subarray(1234, 7777);
  const compressed = sender.compress(view);
  const copy = compressed.slice();
  const framed = concat([new Uint8Array(3), compressed, new Uint8Array(5)]);
  const message = receiver.decompress(framed.subarray(3, 3 + compressed.length));
  assert.ok(equalBytes(message, view));
  // The results are fresh arrays: later calls do not overwrite them.
  const next = sender.compress(sample(5000, 99));
  assert.deepEqual(compressed, copy);
  receiver.decompress(next);
  assert.ok(equalBytes(message, view));
  assert.throws(() => receiver.decompress(compressed, -1), RangeError);
});

Deno.test("decompress() counts maxPayload in inflated bytes: one byte over is ERR_WS_MESSAGE_TOO_BIG", () => {
  using ctx = new DeflateContext({ noContextTakeover: true });
  for (const size of [1, 1023, 1024, 64 * 1024 + 1, 1024 * 1024]) {
    const compressed = ctx.compress(sample(size));
    assert.throws(() => ctx.decompress(compressed, size - 1), {
      code: "ERR_WS_MESSAGE_TOO_BIG",
      closeCode: 1009,
    });
    // The shared decompressor is reset after the error and serves the next message.
    assert.equal(ctx.decompress(compressed, size).length, size);
  }
  assert.equal(ctx.decompress(ctx.compress(new Uint8Array(0)), 0).length, 0);
});

Deno.test("context takeover holds over 5,000 messages: a repeat compresses to a few bytes", () => {
  using sender = new DeflateContext();
  using receiver = new DeflateContext();
  using fresh = new DeflateContext({ noContextTakeover: true });
  let wire = 0;
  let plain = 0;
  let alone = 0;
  for (let i = 0; i < 5000; i++) {
    const message = jsonBytes(i);
    const compressed = sender.compress(message);
    wire += compressed.length;
    plain += message.length;
    alone += fresh.compress(message).length;
    assert.ok(equalBytes(receiver.decompress(compressed), message), `message ${i}`);
  }
  // The window carries across messages: less on the wire than compressing each alone.
  assert.ok(wire < alone * 0.9, `takeover ${wire} B vs alone ${alone} B for ${plain} B`);
  const last = pseudoRandomBytes(2000, 5000); // incompressible on its own
  const first = sender.compress(last);
  const second = sender.compress(last);
  assert.ok(first.length >= 2000);
  assert.ok(second.length < 40, `the repeat took ${second.length} bytes`);
  assert.ok(equalBytes(receiver.decompress(first), last));
  assert.ok(equalBytes(receiver.decompress(second), last));
});

Deno.test("no context takeover: identical input gives identical bytes (one compressor for every subscriber)", () => {
  using shared = new DeflateContext({ noContextTakeover: true });
  using other = new DeflateContext({ noContextTakeover: true });
  const message = pseudoRandomBytes(1500, 7);
  const reference = shared.compress(message);
  for (let i = 0; i < 200; i++) {
    shared.compress(jsonBytes(i)); // unrelated traffic in between
    assert.deepEqual(shared.compress(message), reference);
  }
  assert.deepEqual(other.compress(message), reference);
  // Each subscriber's own decompressor, with or without takeover, reads it.
  using subscriber = new DeflateContext();
  for (let i = 0; i < 3; i++) assert.ok(equalBytes(subscriber.decompress(reference), message));
});

/** ~65 KiB that inflates to 64 MiB of zeros, built without holding 64 MiB. */
function bomb64MiB(): Uint8Array {
  using ctx = new DeflateContext({ level: 9 });
  const zeros = new Uint8Array(1024 * 1024);
  const parts: Uint8Array[] = [];
  for (let i = 0; i < 64; i++) {
    // compress() strips each message's 00 00 ff ff; inside one stream it goes back.
    if (i > 0) parts.push(TRAILER);
    parts.push(ctx.compress(zeros));
  }
  return concat(parts);
}

Deno.test("a decompression bomb stops at maxPayload: 65 KiB → 64 MiB refused at 1 MiB without inflating it", () => {
  // DEFLATE cannot beat ~1032:1, so 64 MiB needs ~64 KiB of input (not 1 KiB).
  const bomb = bomb64MiB();
  assert.ok(bomb.length < 70 * 1024, `${bomb.length} bytes`);
  using ctx = new DeflateContext();
  const before = Deno.memoryUsage().rss;
  for (const input of [bomb, [bomb.subarray(0, 1000), bomb.subarray(1000)]]) {
    assert.throws(() => ctx.decompress(input, 1024 * 1024), {
      code: "ERR_WS_MESSAGE_TOO_BIG",
      closeCode: 1009,
    });
  }
  const grown = Deno.memoryUsage().rss - before;
  assert.ok(grown < 24 * 1024 * 1024, `RSS grew by ${grown} bytes`);
  // It is a real 64 MiB bomb: with room for it, it inflates whole.
  assert.equal(ctx.decompress(bomb, 64 * 1024 * 1024).length, 64 * 1024 * 1024);
});

Deno.test("a corrupt deflate stream is ERR_WS_INVALID_DEFLATE (close 1007), and the context recovers", () => {
  using ctx = new DeflateContext({ noContextTakeover: true });
  using takeover = new DeflateContext();
  const message = sample(3000, 3);
  takeover.compress(message);
  const needsWindow = takeover.compress(message); // refers to the previous message
  for (
    const corrupt of [
      new Uint8Array([0x07]), // block type 3 is reserved
      new Uint8Array([0x00, 0x05, 0x00, 0x00, 0x00]), // stored block with LEN != ~NLEN
      new Uint8Array([0xff, 0xff, 0xff, 0xff]),
      needsWindow, // a distance beyond what a fresh window holds
    ]
  ) {
    assert.throws(() => ctx.decompress(corrupt), {
      code: "ERR_WS_INVALID_DEFLATE",
      closeCode: 1007,
    });
    assert.ok(equalBytes(ctx.decompress(ctx.compress(message)), message));
  }
});

Deno.test("a peer's final block (BFINAL) and an empty payload are read; the context restarts after BFINAL", async () => {
  const { deflateRawSync } = await import("node:zlib");
  using receiver = new DeflateContext();
  const message = sample(5000, 9);
  const final = deflateRawSync(message); // ends with a final block, no sync flush
  assert.ok(equalBytes(receiver.decompress(final), message));
  assert.ok(equalBytes(receiver.decompress(final), message));
  using sender = new DeflateContext();
  assert.ok(equalBytes(receiver.decompress(sender.compress(message)), message));
  assert.equal(receiver.decompress(new Uint8Array(0)).length, 0);
  assert.equal(receiver.decompress(new Uint8Array([0x00])).length, 0);
  assert.ok(equalBytes(receiver.decompress(sender.compress(message)), message));
});

Deno.test("windowBits 8 compresses with 9 but never reaches past a 256-byte window", () => {
  using sender = new DeflateContext({ windowBits: 8 });
  using receiver = new DeflateContext({ windowBits: 8 });
  for (let i = 0; i < 500; i++) {
    const message = concat([jsonBytes(i), jsonBytes(i >> 1), sample(300, i)]);
    assert.ok(equalBytes(receiver.decompress(sender.compress(message)), message), `message ${i}`);
  }
});

Deno.test("DeflateContext checks its options and refuses work once closed", () => {
  assert.throws(() => new DeflateContext({ windowBits: 7 }), RangeError);
  assert.throws(() => new DeflateContext({ windowBits: 16 }), RangeError);
  assert.throws(() => new DeflateContext({ level: 10 }), RangeError);
  assert.throws(() => new DeflateContext({ memLevel: 0 }), RangeError);
  assert.throws(() => new DeflateContext({ threshold: -1 }), RangeError);
  const ctx = new DeflateContext({ threshold: 10 });
  assert.equal(ctx.shouldCompress(9), false);
  assert.equal(ctx.shouldCompress(10), true);
  ctx.compress(sample(100));
  ctx.close();
  ctx.close();
  assert.throws(() => ctx.compress(sample(100)), { code: "ERR_WS_DEFLATE_CLOSED" });
  assert.throws(() => ctx.decompress(new Uint8Array([0])), { code: "ERR_WS_DEFLATE_CLOSED" });
  assert.throws(() => ctx.decompress(new Uint8Array(0)), { code: "ERR_WS_DEFLATE_CLOSED" });
});

// ---------------------------------------------------------------------------
// Interop with npm:ws over real sockets: a minimal frame layer of our own on
// one side, `ws` with perMessageDeflate on the other.

interface Frame {
  fin: boolean;
  rsv1: boolean;
  opcode: number;
  payload: Uint8Array;
}

/** One raw TCP connection speaking just enough RFC 6455 for these tests. */
class RawPeer {
  #buf: Uint8Array = new Uint8Array(0);
  constructor(readonly conn: Deno.TcpConn) {}

  async #fill(): Promise<void> {
    const chunk = new Uint8Array(64 * 1024);
    const n = await this.conn.read(chunk);
    if (n === null) throw new Error("the peer closed the connection");
    this.#buf = concat([this.#buf, chunk.subarray(0, n)]);
  }

  async #take(n: number): Promise<Uint8Array> {
    while (this.#buf.length < n) await this.#fill();
    const out = this.#buf.subarray(0, n);
    this.#buf = this.#buf.subarray(n);
    return out;
  }

  /** The HTTP head, as lowercased header lines joined per name. */
  async head(): Promise<{ start: string; headers: Headers }> {
    for (;;) {
      const text = decoder.decode(this.#buf);
      const end = text.indexOf("\r\n\r\n");
      if (end >= 0) {
        this.#buf = this.#buf.subarray(end + 4);
        const [start, ...lines] = text.slice(0, end).split("\r\n");
        const headers = new Headers();
        for (const line of lines) {
          const colon = line.indexOf(":");
          headers.append(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
        }
        return { start, headers };
      }
      await this.#fill();
    }
  }

  async frame(): Promise<Frame> {
    const [b0, b1] = await this.#take(2);
    let length = b1 & 0x7f;
    if (length === 126) {
      const b = await this.#take(2);
      length = (b[0] << 8) | b[1];
    } else if (length === 127) {
      const b = await this.#take(8);
      length = Number(new DataView(b.buffer, b.byteOffset, 8).getBigUint64(0));
    }
    const mask = b1 & 0x80 ? (await this.#take(4)).slice() : undefined;
    const payload = (await this.#take(length)).slice();
    if (mask) applyMask(payload, mask);
    return { fin: (b0 & 0x80) !== 0, rsv1: (b0 & 0x40) !== 0, opcode: b0 & 0x0f, payload };
  }

  /** A whole data message: its frames' payloads and the first frame's RSV1 and opcode. */
  async message(): Promise<{ rsv1: boolean; opcode: number; fragments: Uint8Array[] }> {
    const first = await this.frame();
    const fragments = [first.payload];
    let last = first;
    while (!last.fin) {
      last = await this.frame();
      assert.equal(last.opcode, Opcode.Continuation);
      assert.equal(last.rsv1, false, "RSV1 is set on the first frame only");
      fragments.push(last.payload);
    }
    return { rsv1: first.rsv1, opcode: first.opcode, fragments };
  }

  async write(bytes: Uint8Array): Promise<void> {
    for (let off = 0; off < bytes.length;) off += await this.conn.write(bytes.subarray(off));
  }

  /** Sends one message, compressed when `ctx` is given, in `pieces` frames. */
  async send(data: Uint8Array, ctx: DeflateContext | null, mask: boolean, pieces = 1) {
    const payload = ctx ? ctx.compress(data) : data;
    const step = Math.max(1, Math.ceil(payload.length / pieces));
    const frames: Uint8Array[] = [];
    let off = 0;
    do {
      const part = payload.subarray(off, off + step);
      off += step;
      frames.push(encodeFrame(frames.length === 0 ? Opcode.Binary : Opcode.Continuation, part, {
        mask,
        fin: off >= payload.length,
        rsv1: ctx !== null && frames.length === 0,
      }));
    } while (off < payload.length);
    await this.write(concat(frames));
  }

  /** Sends a close frame and waits for the peer's close frame. */
  async closeHandshake(mask: boolean): Promise<void> {
    await this.write(encodeFrame(Opcode.Close, new Uint8Array([0x03, 0xe8]), { mask }));
    for (;;) {
      const frame = await this.frame();
      if (frame.opcode === Opcode.Close) return;
    }
  }
}

/** What each connection exchanges: sizes from empty to 200 KiB, repeats to use the window. */
function conversation(seed: number): Uint8Array[] {
  const list = [
    new Uint8Array(0),
    encoder.encode("x"),
    jsonBytes(seed),
    sample(1023, seed),
    jsonBytes(seed), // a repeat: the window holds it under takeover
    sample(70_000, seed + 1),
    pseudoRandomBytes(200_000, seed + 2),
    jsonBytes(seed + 1),
  ];
  return [...list, ...list.slice(1)];
}

/** Our client ↔ a `ws` server that echoes, with the given settings on each side. */
async function ourClientWithWsServer(
  client: DeflateOptions,
  server: WebSocket.PerMessageDeflateOptions,
): Promise<DeflateParams | null | "refused"> {
  const wss = new WebSocketServer({
    host: "127.0.0.1",
    port: 0,
    perMessageDeflate: { threshold: 0, ...server },
  });
  const serverErrors: Error[] = [];
  wss.on("connection", (socket: WebSocket) => {
    socket.on("error", (err: Error) => serverErrors.push(err));
    socket.on(
      "message",
      (data: RawData, binary: boolean) => socket.send(data as Buffer, { binary }),
    );
  });
  await new Promise<void>((resolve) => wss.once("listening", () => resolve()));
  const { port } = wss.address() as { port: number };
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const peer = new RawPeer(conn);
  try {
    await peer.write(encoder.encode(
      `GET / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\n` +
        `Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n` +
        `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: ${
          formatDeflateOffer(client)
        }\r\n\r\n`,
    ));
    const { start, headers } = await peer.head();
    // ws answers 400 to offers it cannot accept instead of going on uncompressed.
    if (/^HTTP\/1\.1 400 /.test(start)) return "refused";
    assert.match(start, /^HTTP\/1\.1 101 /);
    const params = acceptDeflateResponse(headers.get("sec-websocket-extensions"), client);
    const contexts = params && deflateContextOptions(params, "client", client);
    using send = new DeflateContext(contexts?.send);
    using receive = new DeflateContext(contexts?.receive);
    const messages = conversation(port);
    for (const [i, message] of messages.entries()) {
      await peer.send(message, params && send, true, i % 3 === 2 ? 3 : 1);
      const reply = await peer.message();
      assert.equal(reply.opcode, Opcode.Binary);
      assert.equal(reply.rsv1, params !== null, "ws compresses every reply once negotiated");
      const data = reply.rsv1
        ? receive.decompress(reply.fragments, 1 << 20)
        : concat(reply.fragments);
      assert.ok(equalBytes(data, message), `message ${i} (${message.length} B)`);
    }
    await peer.closeHandshake(true);
    assert.deepEqual(serverErrors, []);
    return params;
  } finally {
    conn.close();
    for (const socket of wss.clients) socket.terminate();
    await new Promise((resolve) => wss.close(resolve));
  }
}

/** A `ws` client ↔ our server that echoes, with the given settings on each side. */
async function wsClientWithOurServer(
  client: WebSocket.PerMessageDeflateOptions,
  server: DeflateOptions,
): Promise<{ response: string | null; params: DeflateParams | null }> {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  const serverSide = (async () => {
    const conn = await listener.accept();
    const peer = new RawPeer(conn);
    try {
      const { headers } = await peer.head();
      const agreed = negotiateDeflate(
        parseExtensions(headers.get("sec-websocket-extensions")),
        server,
      );
      await peer.write(encoder.encode(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
          `Sec-WebSocket-Accept: ${await acceptKey(headers.get("sec-websocket-key")!)}\r\n` +
          (agreed ? `Sec-WebSocket-Extensions: ${agreed.response}\r\n` : "") + "\r\n",
      ));
      const contexts = agreed && deflateContextOptions(agreed.params, "server", server);
      using send = new DeflateContext(contexts?.send);
      using receive = new DeflateContext(contexts?.receive);
      for (;;) {
        const first = await peer.frame();
        if (first.opcode === Opcode.Close) {
          await peer.write(encodeFrame(Opcode.Close, first.payload.subarray(0, 2)));
          break;
        }
        const fragments = [first.payload];
        for (let last = first; !last.fin;) {
          last = await peer.frame();
          fragments.push(last.payload);
        }
        assert.equal(first.rsv1, agreed !== null, "ws compresses every message once negotiated");
        const data = first.rsv1 ? receive.decompress(fragments, 1 << 20) : concat(fragments);
        // Echo: every other reply in two frames.
        await peer.send(data, agreed && send, false, data.length % 2 === 0 ? 2 : 1);
      }
      return agreed;
    } finally {
      conn.close();
    }
  })();
  const socket = new WebSocket(`ws://127.0.0.1:${port}/`, {
    perMessageDeflate: { threshold: 0, ...client },
  });
  const replies: Uint8Array[] = [];
  let wake: (() => void) | null = null;
  socket.on("message", (data: RawData) => {
    replies.push(new Uint8Array(data as Buffer));
    wake?.();
  });
  const closed = new Promise((resolve) => socket.once("close", resolve));
  try {
    await new Promise((resolve, reject) => {
      socket.once("open", resolve);
      socket.once("error", reject);
    });
    const messages = conversation(port);
    for (const [i, message] of messages.entries()) {
      socket.send(message, { binary: true });
      while (replies.length <= i) await new Promise<void>((resolve) => (wake = resolve));
      assert.ok(equalBytes(replies[i], message), `message ${i} (${message.length} B)`);
    }
    socket.close(1000);
    await closed;
    const agreed = await serverSide;
    return { response: agreed?.response ?? null, params: agreed?.params ?? null };
  } catch (err) {
    socket.terminate();
    await closed;
    await serverSide.catch(() => {});
    throw err;
  }
}

/** Every combination of the four parameters (windows: absent, 8, 10). */
function combinations(): DeflateOptions[] {
  const out: DeflateOptions[] = [];
  for (const serverNoContextTakeover of [false, true]) {
    for (const clientNoContextTakeover of [false, true]) {
      for (const serverMaxWindowBits of [undefined, 8, 10]) {
        for (const clientMaxWindowBits of [undefined, 9]) {
          out.push({
            serverNoContextTakeover,
            clientNoContextTakeover,
            serverMaxWindowBits,
            clientMaxWindowBits,
          });
        }
      }
    }
  }
  return out;
}

/** The same settings as `ws` spells them (it leaves out what is undefined). */
function asWs(options: DeflateOptions): WebSocket.PerMessageDeflateOptions {
  const out: WebSocket.PerMessageDeflateOptions = {};
  if (options.serverNoContextTakeover) out.serverNoContextTakeover = true;
  if (options.clientNoContextTakeover) out.clientNoContextTakeover = true;
  if (typeof options.serverMaxWindowBits === "number") {
    out.serverMaxWindowBits = options.serverMaxWindowBits;
  }
  if (typeof options.clientMaxWindowBits === "number") {
    out.clientMaxWindowBits = options.clientMaxWindowBits;
  }
  return out;
}

const SERVER_SIDES: DeflateOptions[] = [
  {}, // accept the offer as it comes
  { serverNoContextTakeover: true, clientNoContextTakeover: true }, // impose no takeover
  { serverMaxWindowBits: 9, clientMaxWindowBits: 9 }, // impose small windows
];

Deno.test("interop: our client's compression ↔ npm:ws server, each parameter combination", async () => {
  let negotiated = 0;
  for (const client of combinations()) {
    for (const server of SERVER_SIDES) {
      const label = `client ${JSON.stringify(client)}, ws server ${JSON.stringify(server)}`;
      const params = await ourClientWithWsServer(client, asWs(server)).catch((err) => {
        throw new Error(`${label}: ${err.message}`, { cause: err });
      });
      if (params === "refused") {
        // ws refuses (400, where RFC 7692 would go on uncompressed) an offer asking for a
        // smaller server window than its own setting: here 8 against its 9.
        assert.ok(client.serverMaxWindowBits! < server.serverMaxWindowBits!, label);
        continue;
      }
      assert.ok(params, `${label}: declined`);
      negotiated++;
      if (client.serverNoContextTakeover || server.serverNoContextTakeover) {
        assert.equal(params.serverNoContextTakeover, true, label);
      }
    }
  }
  // Refused: the 8 offers of server_max_window_bits=8 against the ws server set to 9.
  assert.equal(negotiated, combinations().length * SERVER_SIDES.length - 8);
});

Deno.test("interop: npm:ws client's compression ↔ our server, each parameter combination", async () => {
  let negotiated = 0;
  for (const client of combinations()) {
    for (const server of SERVER_SIDES) {
      const label = `ws client ${JSON.stringify(client)}, our server ${JSON.stringify(server)}`;
      const { response, params } = await wsClientWithOurServer(asWs(client), server).catch(
        (err) => {
          throw new Error(`${label}: ${err.message}`, { cause: err });
        },
      );
      assert.ok(response !== null && params !== null, `${label}: declined`);
      negotiated++;
      if (client.serverMaxWindowBits !== undefined) {
        assert.ok(params.serverMaxWindowBits <= client.serverMaxWindowBits, label);
      }
    }
  }
  assert.equal(negotiated, combinations().length * SERVER_SIDES.length);
});
