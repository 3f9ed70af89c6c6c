// Helpers for the WebSocket tests: a raw TCP client that speaks the upgrade
// and frames byte by byte, so tests can send what a real client never would.
import { BufferedReader } from "../io/buffered_reader.ts";
import { encodeFrame } from "../websocket/codec/sender.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The RFC 6455 sample key and its accept value. */
export const SAMPLE_KEY = "dGhlIHNhbXBsZSBub25jZQ==";
export const SAMPLE_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/** A valid upgrade request, with `extra` header lines. */
export function upgradeRequest(path = "/", extra: string[] = []): string {
  return [
    `GET ${path} HTTP/1.1`,
    "Host: 127.0.0.1",
    "Upgrade: websocket",
    "Connection: Upgrade",
    `Sec-WebSocket-Key: ${SAMPLE_KEY}`,
    "Sec-WebSocket-Version: 13",
    ...extra,
    "",
    "",
  ].join("\r\n");
}

/** A raw TCP connection to a test server. */
export class RawClient implements AsyncDisposable {
  readonly socket: Deno.TcpConn;
  readonly reader: BufferedReader;

  private constructor(socket: Deno.TcpConn) {
    this.socket = socket;
    this.reader = new BufferedReader(socket);
  }

  /** Connects to 127.0.0.1:`port`. */
  static async connect(port: number): Promise<RawClient> {
    return new RawClient(await Deno.connect({ hostname: "127.0.0.1", port }));
  }

  /** Connects and completes a valid upgrade; returns the client after the 101 head. */
  static async upgraded(port: number, path = "/"): Promise<RawClient> {
    const client = await RawClient.connect(port);
    await client.write(upgradeRequest(path));
    const head = await client.readHead();
    if (!head.startsWith("HTTP/1.1 101 ")) throw new Error(`no upgrade: ${head}`);
    return client;
  }

  /** Writes bytes (or a string as UTF-8). */
  async write(data: string | Uint8Array): Promise<void> {
    const bytes = typeof data === "string" ? encoder.encode(data) : data;
    let off = 0;
    while (off < bytes.length) off += await this.socket.write(bytes.subarray(off));
  }

  /** Reads a response head (up to the blank line) as text. */
  async readHead(): Promise<string> {
    const head = await this.reader.readUntil("\r\n\r\n");
    if (head === null) throw new Error("closed before a response");
    return decoder.decode(head);
  }

  /** Reads a whole response (head and Content-Length body). */
  async readResponse(): Promise<{ status: number; head: string; body: string }> {
    const head = await this.readHead();
    const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1]);
    const length = Number(/\r\ncontent-length: (\d+)/i.exec(head)?.[1] ?? "0");
    const body = length > 0 ? decoder.decode((await this.reader.readExact(length))!) : "";
    return { status, head, body };
  }

  /** Reads one (unmasked, server) frame; `null` at the end of the stream. */
  async readFrame(): Promise<{ fin: boolean; opcode: number; payload: Uint8Array } | null> {
    const head = await this.reader.readExact(2);
    if (head === null) return null;
    let length = head[1] & 0x7f;
    if (head[1] & 0x80) throw new Error("a server frame is masked");
    if (length === 126) {
      const ext = (await this.reader.readExact(2))!;
      length = (ext[0] << 8) | ext[1];
    } else if (length === 127) {
      const ext = (await this.reader.readExact(8))!;
      length = Number(new DataView(ext.buffer).getBigUint64(0));
    }
    const payload = length === 0 ? new Uint8Array(0) : (await this.reader.readExact(length))!;
    return { fin: (head[0] & 0x80) !== 0, opcode: head[0] & 0x0f, payload };
  }

  /**
   * Reads frames until a close frame; resolves to its code and reason, or
   * `null` if the stream ended first.
   */
  async readClose(): Promise<{ code: number; reason: string } | null> {
    for (;;) {
      const frame = await this.readFrame();
      if (frame === null) return null;
      if (frame.opcode === 0x8) {
        const p = frame.payload;
        return p.length >= 2
          ? { code: (p[0] << 8) | p[1], reason: decoder.decode(p.subarray(2)) }
          : { code: 1005, reason: "" };
      }
    }
  }

  /** Resolves to `true` when the server has closed its side (reads nothing more). */
  async ended(): Promise<boolean> {
    try {
      for (;;) {
        const chunk = await this.reader.readChunk();
        if (chunk === null) return true;
      }
    } catch {
      return true;
    }
  }

  /** Sends a masked client frame. */
  async send(opcode: number, payload: string | Uint8Array = "", fin = true): Promise<void> {
    await this.write(encodeFrame(opcode, payload, { mask: true, fin }));
  }

  close(): void {
    try {
      this.socket.close();
    } catch {
      // Already closed.
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }
}

/** A masked close frame payload. */
export function closeBody(code: number, reason = ""): Uint8Array {
  const r = encoder.encode(reason);
  const out = new Uint8Array(2 + r.length);
  out[0] = code >> 8;
  out[1] = code & 0xff;
  out.set(r, 2);
  return out;
}

/** Text of a message that may be bytes. */
export function text(msg: string | Uint8Array | null): string | null {
  return msg === null ? null : typeof msg === "string" ? msg : decoder.decode(msg);
}
