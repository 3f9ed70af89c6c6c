/**
 * WebSocket attacks: upgrade requests a server must refuse (each with its
 * HTTP status) and frames that break RFC 6455 or a limit (each with its
 * close code); and, for the echo servers, all of their bytes in one
 * exchange, which must come back exactly.
 *
 * @module
 */
import { encodeFrame } from "../../../websocket/codec/mod.ts";
import { concat, pseudoRandomBytes } from "../bytes.ts";
import { type Attack, echoExchange, hit, sendBytes } from "./attacks.ts";
import { upgradeRequest, withRsv } from "./wire.ts";

const encoder = new TextEncoder();

/**
 * For the echo servers: every WebSocket attack's bytes, back to back, in one
 * half-closed exchange; they must come back exactly.
 */
export function wsBytesToEchoServer(attacks: Attack[]): Attack {
  const data = concat(attacks.flatMap((a) => (a.bytes ? [a.bytes] : [])));
  const want = new RegExp(`^echoed all ${data.length} bytes, closed \\(FIN\\)$`);
  return {
    name: `the bytes of all ${attacks.length} WebSocket attacks (upgrades and frames), then FIN`,
    expect: { tcp: want, tls: want, "tls-deno": want },
    run: (t) => echoExchange(t, data),
  };
}

/** Upgrade requests a WebSocket server must refuse, each with its status. */
export function upgradeAttacks(): Attack[] {
  const both = (re: RegExp) => ({ ws: re, wss: re });
  const request = (name: string, head: string, status: RegExp): Attack => ({
    name,
    expect: both(status),
    bytes: encoder.encode(head),
    run: (t) => sendBytes(t, "native", head),
  });
  return [
    request(
      "upgrade without an Upgrade header (a plain GET)",
      upgradeRequest({ drop: ["Upgrade"] }),
      /^HTTP 200 .*closed \(FIN\)$/,
    ),
    request(
      "upgrade without Connection: Upgrade",
      upgradeRequest({ drop: ["Connection"] }),
      /^HTTP 400 "no Connection: Upgrade header", closed \(FIN\)$/,
    ),
    request(
      "upgrade without Sec-WebSocket-Key",
      upgradeRequest({ drop: ["Sec-WebSocket-Key"] }),
      /^HTTP 400 "Sec-WebSocket-Key missing.*, closed \(FIN\)$/,
    ),
    request(
      "upgrade with a Sec-WebSocket-Key that is not 16 bytes",
      upgradeRequest({ drop: ["Sec-WebSocket-Key"], extra: ["Sec-WebSocket-Key: c2hvcnQ="] }),
      /^HTTP 400 "Sec-WebSocket-Key missing.*, closed \(FIN\)$/,
    ),
    request(
      "upgrade without Host",
      upgradeRequest({ drop: ["Host"] }),
      /^HTTP 400 "no Host header", closed \(FIN\)$/,
    ),
    request(
      "upgrade with Sec-WebSocket-Version: 8",
      upgradeRequest({ drop: ["Sec-WebSocket-Version"], extra: ["Sec-WebSocket-Version: 8"] }),
      /^HTTP 426 "Sec-WebSocket-Version 8: only 13 is supp.*closed \(FIN\)$/,
    ),
    request(
      "upgrade without Sec-WebSocket-Version",
      upgradeRequest({ drop: ["Sec-WebSocket-Version"] }),
      /^HTTP 426 "no Sec-WebSocket-Version header", closed \(FIN\)$/,
    ),
    request(
      "upgrade with method POST",
      upgradeRequest({ method: "POST" }),
      /^HTTP 405 .*closed \(FIN\)$/,
    ),
    request(
      "upgrade over HTTP/1.0",
      upgradeRequest({ version: "1.0" }),
      /^HTTP 400 .*closed \(FIN\)$/,
    ),
    request(
      "upgrade on another path",
      upgradeRequest({ path: "/nope" }),
      /^HTTP 404 .*closed \(FIN\)$/,
    ),
    request(
      "a request line of garbage",
      "\x01\x02 nonsense \x7f\r\nHost: x\r\n\r\n",
      /^HTTP 400 .*closed \(FIN\)$/,
    ),
    request(
      "a header line without a colon",
      upgradeRequest({ extra: ["this is not a header"] }),
      /^HTTP 400 .*closed \(FIN\)$/,
    ),
    request(
      "a request head over maxHeadSize (16 KiB, io readUntil limit)",
      upgradeRequest({ extra: [`X-Pad: ${"a".repeat(17 * 1024)}`] }),
      /^HTTP 431 .*closed \(FIN\)$/,
    ),
  ];
}

// A served attacker goes silent after its message: the idle timeout (0.5 s)
// may begin to close it before the look ends.
const IDLE_MAYBE = '(, close 1001 "idle timeout")?';

/** Frames that break RFC 6455 or a limit, each with the close code it must get. */
export function frameAttacks(maxPayload: number): Attack[] {
  const both = (re: RegExp) => ({ ws: re, wss: re });
  const code = (c: number) => new RegExp(`(^|, )close ${c}\\b.*closed \\(FIN\\)$`);
  const frame = (name: string, bytes: Uint8Array, want: RegExp): Attack => ({
    name,
    expect: both(want),
    bytes,
    // An attack the server must serve leaves the connection open: look briefly.
    run: (t) =>
      sendBytes(t, "upgraded", bytes, { timeout: /still open/.test(want.source) ? 1200 : 3000 }),
  });
  const masked = (op: number, payload: string | Uint8Array, fin = true) =>
    encodeFrame(op, payload, { mask: true, fin });
  const closeWith = (c: number, reason: Uint8Array = new Uint8Array(0)) => {
    const p = new Uint8Array(2 + reason.length);
    p[0] = c >> 8;
    p[1] = c & 0xff;
    p.set(reason, 2);
    return masked(0x8, p);
  };
  const badUtf8 = new Uint8Array([0x68, 0xc3, 0x28]);
  const bigHeader = (len: bigint) => {
    const h = new Uint8Array(14);
    h[0] = 0x82;
    h[1] = 0xff;
    new DataView(h.buffer).setBigUint64(2, len);
    h.set([1, 2, 3, 4], 10);
    return h;
  };
  const fragments = (count: number, bytesEach: number) =>
    concat([
      masked(0x2, new Uint8Array(bytesEach), false),
      ...Array.from(
        { length: count - 1 },
        (_, i) => masked(0x0, new Uint8Array(bytesEach), i === count - 2),
      ),
    ]);
  const attacks: Attack[] = [
    frame("an unmasked client frame", encodeFrame(0x1, "hi", { mask: false }), code(1002)),
    frame("RSV1 set (no extension agreed)", withRsv(masked(0x1, "hi"), 0x40), code(1002)),
    frame("RSV2 set", withRsv(masked(0x1, "hi"), 0x20), code(1002)),
    frame("RSV3 set", withRsv(masked(0x1, "hi"), 0x10), code(1002)),
    frame("reserved data opcode 0x3", masked(0x3, "hi"), code(1002)),
    frame("reserved data opcode 0x7", masked(0x7, "hi"), code(1002)),
    frame("reserved control opcode 0xB", masked(0xb, ""), code(1002)),
    frame("reserved control opcode 0xF", masked(0xf, ""), code(1002)),
    frame("invalid UTF-8 in a text message", masked(0x1, badUtf8), code(1007)),
    frame(
      "invalid UTF-8 split across fragments",
      concat([masked(0x1, new Uint8Array([0x68, 0xe2, 0x82]), false), masked(0x0, badUtf8)]),
      code(1007),
    ),
    frame("invalid UTF-8 in a close reason", closeWith(1000, badUtf8), code(1007)),
    frame(
      `a message of exactly --max-payload (${maxPayload} B): served`,
      masked(0x2, pseudoRandomBytes(maxPayload, 3)),
      new RegExp(`^1 message back \\(${maxPayload} B\\)${IDLE_MAYBE}, still open$`),
    ),
    frame(
      `a message one byte over --max-payload (${maxPayload + 1} B)`,
      masked(0x2, new Uint8Array(maxPayload + 1)),
      code(1009),
    ),
    frame("a frame header announcing 1 TiB (no payload sent)", bigHeader(1n << 40n), code(1009)),
    frame("a 64-bit length with its top bit set", bigHeader(1n << 63n), code(1002)),
    frame(
      "1024 one-byte fragments (maxFragments): served",
      fragments(1024, 1),
      new RegExp(`^1 message back \\(1024 B\\)${IDLE_MAYBE}, still open$`),
    ),
    frame("a stream of 1025 empty fragments", fragments(1025, 0), code(1009)),
    frame("a 1-byte close payload", masked(0x8, new Uint8Array([3])), code(1002)),
    frame("a ping with FIN clear (fragmented control)", masked(0x9, "x", false), code(1002)),
    frame("a ping over 125 bytes", masked(0x9, "x".repeat(126)), code(1002)),
    frame("a continuation with nothing to continue", masked(0x0, "x"), code(1002)),
    frame(
      "a new message inside a fragmented one",
      concat([masked(0x1, "a", false), masked(0x1, "b")]),
      code(1002),
    ),
    frame("a valid close code (4000): echoed", closeWith(4000), /^close 4000, closed \(FIN\)$/),
  ];
  for (const c of [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000]) {
    attacks.push(frame(`a close frame with invalid code ${c}`, closeWith(c), code(1002)));
  }
  attacks.push({
    name: "a ping flood (20,000 pings, pongs never read)",
    // Every ping answered; the peer goes silent after the flood, so the idle
    // timeout (0.5 s) may start closing it before the look ends.
    expect: both(/^20000 pongs(, close 1001 "idle timeout")?, still open$/),
    run: (t) =>
      hit(t, "upgraded", async (peer) => {
        const ping = masked(0x9, "flood");
        const batch = concat(Array.from({ length: 1000 }, () => ping));
        for (let i = 0; i < 20; i++) await peer.write(batch);
      }, { timeout: 1500 }),
  });
  return attacks;
}
