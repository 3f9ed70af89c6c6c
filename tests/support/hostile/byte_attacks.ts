/**
 * Bytes-level attacks every server faces, with the outcome each server kind
 * must show: garbage, the wrong protocol, a handshake cut short or
 * trickled, resets, half-closes, and peers that vanish or stop reading.
 *
 * @module
 */
import {
  type Attack,
  halfClose,
  resetMidWrite,
  sendBytes,
  stopReading,
  trickle,
  vanish,
} from "./attacks.ts";
import { isTls, isWs } from "./target.ts";
import { garbage, upgradeRequest } from "./wire.ts";

const encoder = new TextEncoder();

// Outcomes that mean "closed at once, nothing served": a FIN or a RST, no delay.
// (Well before the 1 s handshake timeout, also on a loaded machine.)
const CLOSED_AT_ONCE =
  /^(no answer|TLS alert \d+ \(\w+\)), (closed \(FIN\)( after 0\.\ds)?|reset \(RST\))$/;
const NOT_TLS = /not speaking TLS/;

/**
 * Bytes-level attacks every server faces: garbage, the wrong protocol, a
 * handshake cut short, resets, half-closes and peers that vanish.
 * `hello` is a real ClientHello ({@linkcode captureClientHello}).
 */
// A plain WebSocket port answers bytes that cannot start an HTTP request
// line with 400 as they arrive, not at the handshake timeout.
const NOT_HTTP_AT_ONCE = /^HTTP 400 "this is not an HTTP request", closed \(FIN\)$/;

export function byteAttacks(hello: Uint8Array): Attack[] {
  const plaintext = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
  return [
    {
      name: "garbage bytes (64 KiB), then FIN",
      expect: {
        tcp: /^echoed all 65536 bytes, closed \(FIN\)$/,
        tls: CLOSED_AT_ONCE,
        "tls-deno": CLOSED_AT_ONCE,
        ws: NOT_HTTP_AT_ONCE,
        wss: CLOSED_AT_ONCE,
      },
      logged: { tls: NOT_TLS, "tls-deno": NOT_TLS, wss: NOT_TLS, ws: /not an HTTP request/ },
      run: (t) => sendBytes(t, "tcp", garbage(64 * 1024, 1), { fin: true }),
    },
    {
      name: "garbage bytes (300), then silence",
      expect: {
        tcp: /^echoed all 300 bytes, closed \(FIN\)/,
        tls: CLOSED_AT_ONCE,
        "tls-deno": CLOSED_AT_ONCE,
        ws: NOT_HTTP_AT_ONCE,
        wss: CLOSED_AT_ONCE,
      },
      logged: { tcp: /closed idle/, tls: NOT_TLS, "tls-deno": NOT_TLS, wss: NOT_TLS },
      run: (t) => sendBytes(t, "tcp", garbage(300, 2)),
    },
    {
      name: "a TLS ClientHello to a plain port",
      expect: {
        tcp: new RegExp(`^echoed all ${hello.length} bytes, closed \\(FIN\\)`),
        ws: NOT_HTTP_AT_ONCE,
      },
      run: (t) => sendBytes(t, "tcp", hello),
    },
    {
      name: "plaintext HTTP to a TLS port",
      expect: { tls: CLOSED_AT_ONCE, "tls-deno": CLOSED_AT_ONCE, wss: CLOSED_AT_ONCE },
      logged: { tls: NOT_TLS, "tls-deno": NOT_TLS, wss: NOT_TLS },
      run: (t) => sendBytes(t, "tcp", plaintext),
    },
    {
      name: "a truncated TLS handshake (half a ClientHello), then FIN",
      expect: {
        tcp: /^echoed all 100 bytes, closed \(FIN\)$/,
        tls: CLOSED_AT_ONCE,
        "tls-deno": CLOSED_AT_ONCE,
        ws: NOT_HTTP_AT_ONCE,
        wss: CLOSED_AT_ONCE,
      },
      run: (t) => sendBytes(t, "tcp", hello.subarray(0, 100), { fin: true }),
    },
    {
      name: "a truncated TLS handshake (half a ClientHello), then silence",
      expect: {
        tcp: /^echoed all 100 bytes, closed \(FIN\)/,
        tls: /^no answer, closed \(FIN\) after [12]\.\ds$/,
        "tls-deno": /^no answer, (still open|closed \(FIN\) after [12]\.\ds)$/,
        ws: NOT_HTTP_AT_ONCE,
        wss: /^no answer, closed \(FIN\) after [12]\.\ds$/,
      },
      logged: {
        tcp: /closed idle/,
        tls: /did not finish its TLS handshake within 1s/,
        "tls-deno": /did not finish its TLS handshake within 1s/,
        wss: /no complete TLS handshake and WebSocket upgrade within 1s/,
      },
      run: (t) => sendBytes(t, "tcp", hello.subarray(0, 100), { timeout: 2500 }),
    },
    {
      name: "slowloris: the handshake a byte per 100 ms",
      expect: {
        tcp: /not cut off: \d+ bytes in [12]\.\ds$/,
        tls: /^cut off after \d+ bytes in [12]\.\ds$/,
        "tls-deno": /cut off after \d+ bytes in [12]\.\ds$|not cut off/,
        ws: /cut off after \d+ bytes in [12]\.\ds$/,
        wss: /cut off after \d+ bytes in [12]\.\ds$/,
      },
      logged: {
        tls: /within 1s/,
        "tls-deno": /within 1s/,
        ws: /within 1s/,
        wss: /within 1s/,
      },
      run: (t) =>
        trickle(
          t,
          "tcp",
          isWs(t.kind) && !isTls(t.kind) ? encoder.encode(upgradeRequest()) : hello,
          {
            maxMs: t.kind === "tcp" ? 1500 : 3000,
          },
        ),
    },
    {
      name: "a peer that resets mid-write (RST with the echo unread)",
      expect: {
        tcp: /^RST sent/,
        tls: /^RST sent/,
        "tls-deno": /^RST sent/,
        ws: /^RST sent/,
        wss: /^RST sent/,
      },
      // ws: less than --max-buffered, or the slow-consumer policy ends it first.
      run: (t) =>
        isWs(t.kind)
          ? resetMidWrite(t, "upgraded", { total: 768 * 1024, afterMs: 100 })
          : resetMidWrite(t, "native"),
    },
    {
      name: "a peer that half-closes after sending",
      expect: {
        tcp: /^echoed all 262144 bytes, closed \(FIN\)$/,
        tls: /^echoed all 262144 bytes, closed \(FIN\)$/,
        "tls-deno": /^echoed all 262144 bytes, closed \(FIN\)$/,
        ws: /^3 messages back \(180000 B\)(, close [^,]+)?, closed \(FIN\)$/,
        wss: /^3 messages back \(180000 B\)(, close [^,]+)?, closed \(FIN\)$/,
      },
      run: (t) => halfClose(t),
    },
    {
      name: "a peer that vanishes without a FIN (silent, never reads)",
      expect: {
        tcp: /server ended it after [0-2]\.\ds$/,
        tls: /server ended it after [0-2]\.\ds$/,
        "tls-deno": /server ended it after [0-2]\.\ds$/,
        ws: /server ended it after \d\.\ds$/,
        wss: /server ended it after \d\.\ds$/,
      },
      logged: {
        tcp: /closed idle/,
        tls: /closed idle/,
        "tls-deno": /closed idle/,
        ws: /idle/,
        wss: /idle/,
      },
      run: (t) => vanish(t, isWs(t.kind) ? "upgraded" : "native"),
    },
    {
      name: "a peer that stops reading while the server writes",
      expect: {
        tcp: /server ended it \(idle timeout\) after [0-3]\.\ds$/,
        tls: /server ended it \(idle timeout\) after [0-3]\.\ds$/,
        "tls-deno": /server ended it \(idle timeout\) after [0-3]\.\ds$/,
        ws: /server ended it \(slow-consumer policy\)/,
        wss: /server ended it \(slow-consumer policy\)/,
      },
      run: (t) => stopReading(t, isWs(t.kind) ? "upgraded" : "native"),
    },
  ];
}
