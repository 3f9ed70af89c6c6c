// The Conn behind TCP, TLS and Unix sockets: a Deno.Conn with a buffered
// reader and a writable whose pipes and writeAll reach the socket directly.
// Internal: users see the Conn interface.
import type { Addr, Conn } from "../conn.ts";
import { BufferedReader, type ByteSource } from "../io/buffered_reader.ts";
import { RawWritableStream } from "./raw_writable.ts";
import { writeFull } from "./socket.ts";
import { toAddr } from "./addr.ts";
import { ReadSizes } from "./read_sizes.ts";

/** A Conn a server can manage: force-close it and see whether it made progress. */
export interface ManagedConn extends Conn {
  /** Closes at once, dropping anything unsent. Idempotent. */
  destroy(): void;
  /** Counts reads and writes started; unchanged over time means idle. */
  readonly activity: number;
  /** Bytes received so far (for a server's metrics; absent where not counted). */
  readonly bytesRead?: number;
  /** Bytes sent so far. */
  readonly bytesWritten?: number;
}

/** Options for {@linkcode SocketConn}. */
export interface SocketConnOptions {
  /**
   * The read buffer of a quiet connection, in bytes: it grows fourfold up
   * to 64 KiB while reads fill it and goes back to this size after a short
   * read (see `BufferedReaderOptions.bufferSize`). Small, because it is
   * what the read waiting on a silent peer holds, for as long as the peer
   * is silent, on every open connection: a request, a ping or a chat
   * message fits, and a bulk transfer reaches 64 KiB reads four reads in.
   * @default {256}
   */
  bufferSize?: number;
}

/** The default of {@linkcode SocketConnOptions.bufferSize}. */
export const SOCKET_IDLE_READ_SIZE = 256;

// Everything a SocketConn holds is paid once per open connection, and a
// server may hold 100,000 of them: fields are plain values, the promise and
// streams are made on first use, and nothing is a per-instance closure.
const RESOLVED = Promise.resolve();

/** A netkit {@linkcode Conn} over a `Deno.Conn` (TCP, TLS or Unix). */
export class SocketConn<S extends Deno.Conn = Deno.Conn> implements ManagedConn {
  #localAddr: Addr | undefined;
  #remoteAddr: Addr | undefined;

  #activity = 0;
  // The connection that took the socket over (a TLS upgrade), if any.
  #successor:
    | Pick<ManagedConn, "activity" | "close" | "destroy" | "bytesRead" | "bytesWritten">
    | undefined;

  #socket: S;
  // Made on first use: the echo handler's direct loop never needs one.
  #reader: BufferedReader | undefined;
  #bufferSize: number | undefined;
  #echoing = false;
  #writable: RawWritableStream | undefined;
  #pendingWrite: Promise<void> | undefined;
  #writeShut: Promise<void> | undefined;
  #closing: Promise<void> | undefined;
  #released = false;
  // Made when someone asks for `closed` before the connection is released.
  #closed: Promise<void> | undefined;
  #resolveClosed: (() => void) | undefined;
  #bytesIn = 0;
  #bytesOut = 0;

  constructor(socket: S, options: SocketConnOptions = {}) {
    this.#socket = socket;
    this.#bufferSize = options.bufferSize;
  }

  get localAddr(): Addr {
    return this.#localAddr ??= toAddr(this.#socket.localAddr);
  }

  get remoteAddr(): Addr {
    return this.#remoteAddr ??= toAddr(this.#socket.remoteAddr);
  }

  /** Resolves once the connection is closed (or handed over with {@linkcode detach}). */
  get closed(): Promise<void> {
    if (this.#closed === undefined) {
      this.#closed = this.#released
        ? RESOLVED
        : new Promise((resolve) => (this.#resolveClosed = resolve));
    }
    return this.#closed;
  }

  /**
   * One read from the socket, counted as activity; its bytes are counted by
   * {@linkcode countIn} (no promise wrapped per read). Internal: the
   * reader's source.
   */
  readSocket(p: Uint8Array): Promise<number | null> {
    this.#activity++;
    return this.#socket.read(p);
  }

  /** Counts `n` bytes received. Internal: the reader's source. */
  countIn(n: number): void {
    this.#bytesIn += n;
  }

  /** Bytes received so far, the successor's (after STARTTLS) included. */
  get bytesRead(): number {
    return this.#bytesIn + (this.#successor?.bytesRead ?? 0);
  }

  /** Bytes sent so far, the successor's included. */
  get bytesWritten(): number {
    return this.#bytesOut + (this.#successor?.bytesWritten ?? 0);
  }

  /** Counts reads and writes started, the successor's included. */
  get activity(): number {
    return this.#activity + (this.#successor?.activity ?? 0);
  }

  /** The socket underneath. */
  get socket(): S {
    return this.#socket;
  }

  /** The reader that owns this connection's receive buffer. */
  get reader(): BufferedReader {
    if (this.#echoing) throw new TypeError("the connection is being echoed: its input is taken");
    return this.#reader ??= new BufferedReader(new SocketSource(this), {
      bufferSize: this.#bufferSize ?? SOCKET_IDLE_READ_SIZE,
    });
  }

  get readable(): ReadableStream<Uint8Array> {
    return this.reader.readable;
  }

  /**
   * Lets the reader go when it holds nothing (no buffered byte, no read
   * under way, no stream made from it), so that a protocol engine reading
   * the socket itself from now on keeps no second buffer. True when it did
   * (or there was none); the next `reader` access makes a new one.
   */
  releaseReader(): boolean {
    const reader = this.#reader;
    if (reader === undefined) return true;
    if (reader.directSource() === undefined || reader.hasReadable) return false;
    this.#reader = undefined;
    return true;
  }

  /**
   * The echo handler's loop, run straight on the socket when nothing has
   * touched the connection's streams yet: everything read is written back,
   * in order, and the end of input half-closes. No stream, reader or
   * closure is made — an idle echo connection holds this one pending read
   * and its small buffer, as a hand-written loop would. `undefined` when
   * the streams are in use (then the echo pipes them).
   */
  echoDirect(): Promise<void> | undefined {
    if (this.#reader !== undefined || this.#writable !== undefined || this.#released) {
      return undefined;
    }
    this.#echoing = true;
    return this.#echoLoop();
  }

  async #echoLoop(): Promise<void> {
    const sizes = new ReadSizes(Math.max(this.#bufferSize ?? SOCKET_IDLE_READ_SIZE, 64));
    let buf = new Uint8Array(sizes.next);
    try {
      for (;;) {
        this.#activity++;
        const n = await this.#socket.read(buf);
        if (n === null) break;
        this.#bytesIn += n;
        const chunk = n === buf.length ? buf : buf.subarray(0, n);
        this.#activity++;
        this.#bytesOut += n;
        await writeFull(this.#socket, chunk);
        sizes.record(n, buf.length, buf.length);
        if (sizes.next !== buf.length) buf = new Uint8Array(sizes.next);
      }
    } catch (err) {
      // As a pipe aborts its destination: the connection is done.
      this.destroy();
      throw err;
    }
    await this.#shutdownWrite();
  }

  get writable(): WritableStream<Uint8Array> {
    if (this.#echoing) throw new TypeError("the connection is being echoed: its output is taken");
    return this.#writable ??= new RawWritableStream({
      write: (chunk) => this.#write(chunk),
      close: () => this.#shutdownWrite(),
      abort: () => Promise.resolve(this.destroy()),
      writeSome: (chunk) =>
        this.#socket.write(chunk).then((n) => {
          this.#bytesOut += n;
          return n;
        }),
    });
  }

  #write(chunk: Uint8Array): Promise<void> {
    this.#activity++;
    this.#bytesOut += chunk.length;
    const done = writeFull(this.#socket, chunk);
    this.#pendingWrite = done;
    return done;
  }

  #shutdownWrite(): Promise<void> {
    return this.#writeShut ??= (async () => {
      await this.#pendingWrite?.catch(() => {});
      if (this.#released) return;
      try {
        await this.#socket.closeWrite();
      } catch (err) {
        // The peer may be gone already; the read side reports that.
        if (!(err instanceof Deno.errors.NotConnected || err instanceof Deno.errors.BadResource)) {
          throw err;
        }
      }
    })();
  }

  async closeWrite(): Promise<void> {
    if (this.#writable !== undefined && !this.#writable.locked) {
      // Through the stream, so its state says closed and queued chunks go first.
      try {
        await this.#writable.close();
        return;
      } catch {
        // Already closed or errored: fall through to the socket.
      }
    }
    await this.#shutdownWrite();
  }

  close(): Promise<void> {
    if (this.#successor !== undefined) return this.#successor.close();
    return this.#closing ??= (async () => {
      if (this.#writable !== undefined && !this.#writable.locked && this.#writeShut === undefined) {
        // Flush what was queued; a peer that stopped reading is the server's
        // idle timeout's business (destroy), not a reason to drop bytes here.
        await this.#writable.close().catch(() => {});
      } else {
        await this.#pendingWrite?.catch(() => {});
      }
      this.destroy();
    })();
  }

  destroy(): void {
    this.#successor?.destroy();
    if (this.#released) return;
    this.#released = true;
    try {
      this.#socket.close();
    } catch {
      // Already closed by Deno (e.g. after a TLS upgrade took it over).
    }
    this.#closing ??= RESOLVED;
    this.#resolveClosed?.();
  }

  /**
   * Hands the socket over (to a TLS upgrade): this Conn stops owning it and
   * counts as closed. Throws if bytes are still buffered and unread.
   */
  detach(): S {
    if (this.#released) throw new TypeError("the connection is closed");
    this.#released = true;
    this.#closing ??= RESOLVED;
    this.#resolveClosed?.();
    return this.#socket;
  }

  /**
   * After {@linkcode detach}: names the connection that took the socket over
   * (a TLS upgrade, or a stand-in while it handshakes), so that `close()`,
   * `destroy()` and `activity` reach it — a server's idle timeout, shutdown
   * and end-of-handler close keep managing the upgraded connection.
   */
  handOver(
    successor: Pick<ManagedConn, "activity" | "close" | "destroy" | "bytesRead" | "bytesWritten">,
  ): void {
    this.#successor = successor;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** The reader's byte source: a prototype method, not a closure per connection. */
class SocketSource implements ByteSource {
  #conn: SocketConn;
  constructor(conn: SocketConn) {
    this.#conn = conn;
  }
  read(p: Uint8Array): Promise<number | null> {
    return this.#conn.readSocket(p);
  }
  counted(n: number): void {
    this.#conn.countIn(n);
  }
}
