// The frame layer without a network: encoder, parser, validation, hub.
import assert from "node:assert/strict";
import {
  BroadcastHub,
  CloseCode,
  type PreparedMessage,
  type Subscriber,
  WebSocketError,
} from "../websocket/mod.ts";
import {
  acceptKey,
  applyMask,
  closePayload,
  encodeFrame,
  isValidCloseCode,
  isValidKey,
  isValidUtf8,
  Opcode,
  type ReceivedFrame,
  Receiver,
} from "../websocket/codec/mod.ts";
import { pseudoRandomBytes } from "./_helpers.ts";
import { SAMPLE_ACCEPT, SAMPLE_KEY } from "./ws_helpers.ts";
import { concat } from "./support/bytes.ts";

const enc = new TextEncoder();

/** Parses all `bytes`, pushed in chunks of `step`, into frames. */
function parseAll(bytes: Uint8Array, step: number, server = true, opts = {}): ReceivedFrame[] {
  const r = new Receiver({ server, ...opts });
  const out: ReceivedFrame[] = [];
  for (let i = 0; i < bytes.length; i += step) {
    r.push(bytes.slice(i, i + step));
    for (let f; (f = r.next()) !== undefined;) out.push(f);
  }
  return out;
}

/** Expects parsing to fail with `code` and `closeCode`. */
function assertFails(bytes: Uint8Array, code: string, closeCode: number, server = true, opts = {}) {
  assert.throws(
    () => parseAll(bytes, bytes.length || 1, server, opts),
    (err: unknown) => {
      assert.ok(err instanceof WebSocketError, String(err));
      assert.equal(err.code, code);
      assert.equal(err.closeCode, closeCode);
      return true;
    },
  );
}

Deno.test("frames of every length class round-trip, masked and not, in any chunking", () => {
  for (const size of [0, 1, 125, 126, 127, 65535, 65536, 200_000]) {
    const payload = pseudoRandomBytes(size, size + 1);
    for (const mask of [true, false]) {
      const frame = encodeFrame(Opcode.Binary, payload, { mask });
      const headerLen = 2 + (size < 126 ? 0 : size < 65536 ? 2 : 8) + (mask ? 4 : 0);
      assert.equal(frame.length, headerLen + size);
      for (const step of size > 1000 ? [frame.length, 4093] : [1, 3, frame.length]) {
        const frames = parseAll(frame, step, mask);
        assert.equal(frames.length, 1);
        const f = frames[0];
        assert.ok(f.type === "message" && f.binary);
        assert.deepEqual(f.data, payload);
      }
    }
  }
});

Deno.test("text keeps a leading BOM and multi-byte characters split across fragments", () => {
  const textBytes = enc.encode("\uFEFFhé🎉 done");
  const frames = concat([
    encodeFrame(Opcode.Text, textBytes.subarray(0, 5), { mask: true, fin: false }),
    encodeFrame(Opcode.Ping, "p", { mask: true }),
    encodeFrame(Opcode.Continuation, textBytes.subarray(5, 7), { mask: true, fin: false }),
    encodeFrame(Opcode.Continuation, textBytes.subarray(7), { mask: true }),
  ]);
  const out = parseAll(frames, 1);
  assert.equal(out.length, 2);
  assert.equal(out[0].type, "ping");
  const msg = out[1];
  assert.ok(msg.type === "message" && !msg.binary);
  assert.equal(msg.text, "\uFEFFhé🎉 done");
  assert.deepEqual(msg.data, textBytes);
});

Deno.test("the receiver rejects what RFC 6455 forbids, with the right close code", () => {
  const P = CloseCode.ProtocolError;
  assertFails(encodeFrame(Opcode.Text, "x"), "ERR_WS_UNMASKED_FRAME", P);
  assertFails(encodeFrame(Opcode.Text, "x", { mask: true }), "ERR_WS_MASKED_FRAME", P, false);
  assertFails(encodeFrame(Opcode.Text, "x", { mask: true, rsv1: true }), "ERR_WS_RSV_BITS", P);
  assertFails(encodeFrame(0x3, "x", { mask: true }), "ERR_WS_BAD_OPCODE", P);
  assertFails(encodeFrame(0xb, "x", { mask: true }), "ERR_WS_BAD_OPCODE", P);
  assertFails(
    encodeFrame(Opcode.Ping, "x".repeat(126), { mask: true }),
    "ERR_WS_BAD_CONTROL_FRAME",
    P,
  );
  assertFails(
    encodeFrame(Opcode.Ping, "x", { mask: true, fin: false }),
    "ERR_WS_BAD_CONTROL_FRAME",
    P,
  );
  assertFails(encodeFrame(Opcode.Continuation, "x", { mask: true }), "ERR_WS_BAD_CONTINUATION", P);
  assertFails(
    concat([
      encodeFrame(Opcode.Text, "a", { mask: true, fin: false }),
      encodeFrame(Opcode.Binary, "b", { mask: true }),
    ]),
    "ERR_WS_BAD_CONTINUATION",
    P,
  );
  assertFails(
    encodeFrame(Opcode.Close, new Uint8Array([3]), { mask: true }),
    "ERR_WS_BAD_CLOSE_FRAME",
    P,
  );
  for (const code of [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000]) {
    assertFails(
      encodeFrame(Opcode.Close, closePayload(code), { mask: true }),
      "ERR_WS_INVALID_CLOSE_CODE",
      P,
    );
  }
  // A 64-bit length with its top bit set.
  const huge = new Uint8Array([0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4]);
  assertFails(huge, "ERR_WS_BAD_LENGTH", P);
});

Deno.test("invalid UTF-8 closes with 1007, in one frame, across fragments and in a close reason", () => {
  const I = CloseCode.InvalidPayload;
  assertFails(
    encodeFrame(Opcode.Text, new Uint8Array([0xff]), { mask: true }),
    "ERR_WS_INVALID_UTF8",
    I,
  );
  // A truncated sequence at the end of the last fragment.
  assertFails(
    concat([
      encodeFrame(Opcode.Text, "ok", { mask: true, fin: false }),
      encodeFrame(Opcode.Continuation, new Uint8Array([0xe2, 0x82]), { mask: true }),
    ]),
    "ERR_WS_INVALID_UTF8",
    I,
  );
  // Fails fast: the first fragment alone is already invalid.
  const r = new Receiver({ server: true });
  r.push(encodeFrame(Opcode.Text, new Uint8Array([0x61, 0xc0, 0x80]), { mask: true, fin: false }));
  assert.throws(() => r.next(), (e: unknown) => (e as WebSocketError).closeCode === I);
  const badReason = concat([new Uint8Array([0x03, 0xe8]), new Uint8Array([0xff, 0xfe])]);
  assertFails(encodeFrame(Opcode.Close, badReason, { mask: true }), "ERR_WS_INVALID_UTF8", I);
});

Deno.test("maxPayload is enforced on the frame header, before the payload arrives", () => {
  const r = new Receiver({ server: true, maxPayload: 1000 });
  const frame = encodeFrame(Opcode.Binary, new Uint8Array(1001), { mask: true });
  r.push(frame.subarray(0, 8)); // the header only
  assert.throws(() => r.next(), (e: unknown) => {
    assert.ok(e instanceof WebSocketError);
    assert.equal(e.code, "ERR_WS_MESSAGE_TOO_BIG");
    assert.equal(e.closeCode, 1009);
    return true;
  });
  // Across fragments: 600 + 600 > 1000.
  assertFails(
    concat([
      encodeFrame(Opcode.Binary, new Uint8Array(600), { mask: true, fin: false }),
      encodeFrame(Opcode.Continuation, new Uint8Array(600), { mask: true }),
    ]),
    "ERR_WS_MESSAGE_TOO_BIG",
    1009,
    true,
    { maxPayload: 1000 },
  );
  // Exactly at the limit is fine.
  assert.equal(
    parseAll(encodeFrame(Opcode.Binary, new Uint8Array(1000), { mask: true }), 100, true, {
      maxPayload: 1000,
    }).length,
    1,
  );
});

Deno.test("a stream of tiny fragments hits maxFragments", () => {
  const parts = [encodeFrame(Opcode.Text, "", { mask: true, fin: false })];
  for (let i = 0; i < 20; i++) {
    parts.push(encodeFrame(Opcode.Continuation, "", { mask: true, fin: false }));
  }
  assertFails(concat(parts), "ERR_WS_TOO_MANY_FRAGMENTS", 1009, true, { maxFragments: 10 });
  // Within the limit the message arrives whole.
  const ok = [encodeFrame(Opcode.Text, "a", { mask: true, fin: false })];
  for (let i = 0; i < 8; i++) {
    ok.push(encodeFrame(Opcode.Continuation, "b", { mask: true, fin: false }));
  }
  ok.push(encodeFrame(Opcode.Continuation, "c", { mask: true }));
  const out = parseAll(concat(ok), 5, true, { maxFragments: 10 });
  assert.ok(out[0].type === "message");
  assert.equal(out[0].text, "abbbbbbbbc");
});

Deno.test("close frames parse to code and reason; an empty one is 1005", () => {
  const [a] = parseAll(encodeFrame(Opcode.Close, closePayload(4001, "bye ✓"), { mask: true }), 2);
  assert.deepEqual(a, { type: "close", code: 4001, reason: "bye ✓" });
  const [b] = parseAll(encodeFrame(Opcode.Close, new Uint8Array(0), { mask: true }), 1);
  assert.deepEqual(b, { type: "close", code: 1005, reason: "" });
  assert.throws(() => closePayload(1000, "x".repeat(124)), RangeError);
});

Deno.test("applyMask works at any alignment and undoes itself", () => {
  const key = new Uint8Array([0x12, 0x34, 0x56, 0x78]);
  for (const offset of [0, 1, 2, 3]) {
    const buf = new Uint8Array(offset + 100);
    const data = buf.subarray(offset);
    data.set(pseudoRandomBytes(100, offset + 3));
    const original = data.slice();
    applyMask(data, key);
    for (let i = 0; i < data.length; i++) assert.equal(data[i], original[i] ^ key[i & 3]);
    applyMask(data, key);
    assert.deepEqual(data, original);
  }
});

Deno.test("validation helpers and the RFC's Sec-WebSocket-Accept sample", async () => {
  assert.equal(await acceptKey(SAMPLE_KEY), SAMPLE_ACCEPT);
  assert.ok(isValidKey(SAMPLE_KEY));
  assert.ok(!isValidKey("dGhlIHNhbXBsZSBub25jZQ"));
  assert.ok(!isValidKey("dGhlIHNhbXBsZSBub25jZR=="));
  assert.ok(isValidCloseCode(1000) && isValidCloseCode(1014) && isValidCloseCode(4999));
  assert.ok(!isValidCloseCode(1005) && !isValidCloseCode(1015) && !isValidCloseCode(2000));
  assert.ok(isValidUtf8(enc.encode("✓")) && !isValidUtf8(new Uint8Array([0xed, 0xa0, 0x80])));
});

Deno.test("a hub encodes a published message once and hands the same frame to every subscriber", () => {
  const frames: Uint8Array[] = [];
  const make = (status: "sent" | "dropped"): Subscriber => ({
    sendPrepared(m: PreparedMessage) {
      frames.push(m.frame);
      return status;
    },
  });
  const hub = new BroadcastHub();
  const [a, b, c, slow] = [make("sent"), make("sent"), make("sent"), make("dropped")];
  for (const s of [a, b, c, slow]) hub.subscribe(s, "t");
  assert.equal(hub.subscribe(a, "t"), false);
  assert.deepEqual(hub.publish("t", "hi", { except: c }), { delivered: 2, dropped: 1 });
  assert.equal(frames.length, 3);
  assert.ok(frames.every((f) => f === frames[0]), "one buffer for all");
  assert.deepEqual([...frames[0]], [0x81, 2, 0x68, 0x69]);
  hub.unsubscribeAll(a);
  assert.equal(hub.subscriberCount("t"), 3);
  assert.deepEqual(hub.publish("nobody", "x"), { delivered: 0, dropped: 0 });
});
