/**
 * A raw attacking peer: a plain TCP connection to the target (or TLS after
 * the handshake, or a finished WebSocket upgrade) that writes whatever it is
 * told, reads frames and heads by hand, and reports what the server answered
 * and how the connection ended.
 *
 * @module
 */
import { BufferedReader } from "../../../io/mod.ts";
import { encodeFrame } from "../../../websocket/codec/mod.ts";
import { concat } from "../bytes.ts";
import { describeBytes, describeFrames, type End, endText } from "./describe.ts";
import { isTls, type Target } from "./target.ts";
import { upgradeRequest } from "./wire.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A raw connection to a target: TCP, or TLS for the TLS kinds when `tls` is set. */
export class RawPeer implements AsyncDisposable {
  readonly conn: Deno.Conn;
  readonly reader: BufferedReader;
  readonly localPort: number;
  #closed = false;

  private constructor(conn: Deno.Conn, localPort: number) {
    this.conn = conn;
    this.localPort = localPort;
    this.reader = new BufferedReader(conn);
  }

  /** A plain TCP connection to the target's port. */
  static async tcp(port: number): Promise<RawPeer> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    return new RawPeer(conn, conn.localAddr.port);
  }

  /** A TLS connection (handshake done) to a TLS target, trusting its CA. */
  static async tls(target: Target): Promise<RawPeer> {
    const tcp = await Deno.connect({ hostname: "127.0.0.1", port: target.port });
    const localPort = tcp.localAddr.port;
    const conn = await Deno.startTls(tcp, { hostname: "localhost", caCerts: [target.caPem] });
    await conn.handshake();
    return new RawPeer(conn, localPort);
  }

  /** The transport the target speaks after its handshake: TLS or TCP. */
  static open(target: Target): Promise<RawPeer> {
    return isTls(target.kind) ? RawPeer.tls(target) : RawPeer.tcp(target.port);
  }

  /** Opens the transport and completes a valid WebSocket upgrade. */
  static async upgraded(target: Target): Promise<RawPeer> {
    const peer = await RawPeer.open(target);
    await peer.write(upgradeRequest());
    const head = await peer.readHead();
    if (!head.startsWith("HTTP/1.1 101 ")) throw new Error(`no upgrade: ${head}`);
    return peer;
  }

  /** Writes everything; rejects if the peer is gone. */
  async write(data: string | Uint8Array): Promise<void> {
    const bytes = typeof data === "string" ? encoder.encode(data) : data;
    let off = 0;
    while (off < bytes.length) off += await this.conn.write(bytes.subarray(off));
  }

  /** Sends a masked client frame. */
  send(opcode: number, payload: string | Uint8Array = "", fin = true): Promise<void> {
    return this.write(encodeFrame(opcode, payload, { mask: true, fin }));
  }

  /** Half-closes (FIN, or close_notify and FIN). */
  async closeWrite(): Promise<void> {
    await this.conn.closeWrite();
  }

  /** Reads a response head, as text. */
  async readHead(): Promise<string> {
    const head = await this.reader.readUntil("\r\n\r\n");
    if (head === null) throw new Error("closed before a response");
    return decoder.decode(head);
  }

  /** Reads one server frame; `null` at the end of the stream. */
  async readFrame(): Promise<{ fin: boolean; opcode: number; payload: Uint8Array } | null> {
    const head = await this.reader.readExact(2);
    if (head === null) return null;
    let length = head[1] & 0x7f;
    if (length === 126) {
      const ext = (await this.reader.readExact(2))!;
      length = (ext[0] << 8) | ext[1];
    } else if (length === 127) {
      const ext = (await this.reader.readExact(8))!;
      length = Number(new DataView(ext.buffer, ext.byteOffset, 8).getBigUint64(0));
    }
    const payload = length === 0 ? new Uint8Array(0) : (await this.reader.readExact(length))!;
    return { fin: (head[0] & 0x80) !== 0, opcode: head[0] & 0x0f, payload };
  }

  /**
   * Reads until the end of the connection or `timeoutMs`; resolves to the
   * bytes and how it ended. A timeout leaves the connection open.
   */
  async drain(timeoutMs = 3000): Promise<{ bytes: Uint8Array; end: End; error?: string }> {
    const parts: Uint8Array[] = [];
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<"timeout">((
      r,
    ) => (timer = setTimeout(() => r("timeout"), timeoutMs)));
    let end: End;
    let error: string | undefined;
    try {
      for (;;) {
        const chunk = await Promise.race([this.reader.readChunk(), timeout]);
        if (chunk === "timeout") {
          end = "timeout";
          break;
        }
        if (chunk === null) {
          end = "fin";
          break;
        }
        parts.push(chunk.slice());
      }
    } catch (err) {
      end = err instanceof Deno.errors.ConnectionReset ? "reset" : "closed";
      error = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    } finally {
      clearTimeout(timer);
    }
    return { bytes: concat(parts), end, error };
  }

  /**
   * Reads what the server answers until it ends the connection (bounded by
   * `timeoutMs`) and describes it: the HTTP status, the close frame, a TLS
   * alert, echoed bytes, and how the connection ended.
   */
  async observe(
    timeoutMs = 3000,
    sent?: Uint8Array,
    frames = false,
  ): Promise<string> {
    const started = performance.now();
    const { bytes, end } = await this.drain(timeoutMs);
    const ms = performance.now() - started;
    const parts: string[] = [];
    if (bytes.length > 0) parts.push(frames ? describeFrames(bytes) : describeBytes(bytes, sent));
    else parts.push("no answer");
    parts.push(endText(end, ms));
    return parts.join(", ");
  }

  /** Closes the socket (a RST if received bytes are still unread). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.conn.close();
    } catch {
      // Already closed.
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
    await this.reader.cancel().catch(() => {});
  }
}
