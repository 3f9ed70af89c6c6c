/**
 * What came back, in words for the outcome table: an HTTP status, a
 * WebSocket close code, a TLS alert, an echo, the frames after an upgrade,
 * and how the connection ended. The attacks' expectations are regular
 * expressions over these descriptions.
 *
 * @module
 */
import { equalBytes } from "../bytes.ts";

const decoder = new TextDecoder();

/** How a read on a raw peer ended. */
export type End = "fin" | "reset" | "timeout" | "closed";

/** How the connection ended, in words (a slow FIN says how long it took). */
export function endText(end: End, ms: number): string {
  switch (end) {
    case "fin":
      return `closed (FIN)${ms > 900 ? ` after ${(ms / 1000).toFixed(1)}s` : ""}`;
    case "reset":
      return "reset (RST)";
    case "closed":
      return "connection error";
    case "timeout":
      return "still open";
  }
}

/** What a server's bytes say: HTTP status, WebSocket close code, TLS alert, or an echo. */
export function describeBytes(bytes: Uint8Array, sent?: Uint8Array): string {
  if (sent !== undefined && equalBytes(bytes, sent)) return `echoed all ${bytes.length} bytes`;
  const text = decoder.decode(bytes.subarray(0, 200));
  const http = /^HTTP\/1\.1 (\d{3})[^\r]*\r\n/.exec(text);
  if (http) {
    const body = text.split("\r\n\r\n")[1]?.split("\n")[0] ?? "";
    const status = Number(http[1]);
    if (status === 101) {
      const close = closeFrameIn(bytes.subarray(text.indexOf("\r\n\r\n") + 4));
      return close ? `101, then close ${close}` : "101";
    }
    return `HTTP ${status}${body ? ` "${body.slice(0, 60)}"` : ""}`;
  }
  if (bytes[0] === 0x15 && bytes.length >= 7) {
    return `TLS alert ${bytes[6]} (${ALERTS[bytes[6]] ?? "?"})`;
  }
  if (bytes[0] === 0x16 && bytes[1] === 0x03) {
    return `TLS handshake records (${bytes.length} bytes)`;
  }
  const close = closeFrameIn(bytes);
  if (close) return `close ${close}`;
  return `${bytes.length} bytes`;
}

const ALERTS: Record<number, string> = {
  0: "close_notify",
  10: "unexpected_message",
  20: "bad_record_mac",
  22: "record_overflow",
  40: "handshake_failure",
  42: "bad_certificate",
  47: "illegal_parameter",
  50: "decode_error",
  70: "protocol_version",
  80: "internal_error",
  109: "missing_extension",
};

/**
 * The header of the unmasked frame at `off` (at least two bytes there): its
 * opcode, its payload length and where the payload starts.
 */
function frameHeader(
  bytes: Uint8Array,
  off: number,
): { opcode: number; length: number; at: number } {
  const opcode = bytes[off] & 0x0f;
  let length = bytes[off + 1] & 0x7f;
  let at = off + 2;
  if (length === 126) {
    length = (bytes[at] << 8) | bytes[at + 1];
    at += 2;
  } else if (length === 127) {
    length = Number(new DataView(bytes.buffer, bytes.byteOffset + at, 8).getBigUint64(0));
    at += 8;
  }
  return { opcode, length, at };
}

/** Server frames after an upgrade: the messages and pongs that came, then the close frame. */
export function describeFrames(bytes: Uint8Array): string {
  let off = 0;
  let messages = 0;
  let messageBytes = 0;
  let pongs = 0;
  let close: string | undefined;
  while (off + 2 <= bytes.length && close === undefined) {
    const { opcode, length, at } = frameHeader(bytes, off);
    if (at + length > bytes.length) break;
    if (opcode === 0x1 || opcode === 0x2) {
      messages++;
      messageBytes += length;
    } else if (opcode === 0xa) pongs++;
    else if (opcode === 0x8) close = closeFrameIn(bytes.subarray(off));
    off = at + length;
  }
  const parts: string[] = [];
  if (messages > 0) {
    parts.push(`${messages} message${messages > 1 ? "s" : ""} back (${messageBytes} B)`);
  }
  if (pongs > 0) parts.push(`${pongs} pongs`);
  if (close !== undefined) parts.push(`close ${close}`);
  return parts.length > 0 ? parts.join(", ") : `${bytes.length} bytes`;
}

/** The code (and reason) of the first close frame in a run of server frames, if any. */
function closeFrameIn(bytes: Uint8Array): string | undefined {
  let off = 0;
  while (off + 2 <= bytes.length) {
    const { opcode, length, at } = frameHeader(bytes, off);
    if (opcode === 0x8) {
      const p = bytes.subarray(at, at + length);
      if (p.length < 2) return "(no code)";
      const reason = decoder.decode(p.subarray(2));
      return `${(p[0] << 8) | p[1]}${reason ? ` "${reason}"` : ""}`;
    }
    off = at + length;
  }
  return undefined;
}

/** The code of the close frame in a server's answer, or undefined. */
export function closeCodeOf(outcome: string): number | undefined {
  const m = /close (\d{4})/.exec(outcome);
  return m ? Number(m[1]) : undefined;
}
