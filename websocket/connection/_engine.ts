// netkit's own WebSocket engine: RFC 6455 framing over a netkit SocketConn
// (TCP, or TLS for wss). One outbound queue per connection whose small
// frames are coalesced into one socket write; shared frames for fan-out;
// backpressure into the socket on the way in; permessage-deflate when the
// handshake agreed on it. Internal.
import type { Addr } from "../../conn.ts";
import { ReadSizes } from "../../internal/read_sizes.ts";
import { SOCKET_IDLE_READ_SIZE, type SocketConn } from "../../internal/socket_conn.ts";
import {
  CloseCode,
  COALESCE_LIMIT,
  DEFAULT_CLOSE_TIMEOUT,
  DEFAULT_HIGH_WATER_MARK,
  DEFAULT_MAX_BUFFERED,
  DEFAULT_MAX_FRAGMENTS,
  DEFAULT_MAX_PAYLOAD,
  Opcode,
} from "../codec/constants.ts";
import type { EngineSink, Message, WebSocketEngine } from "./conn.ts";
import { WebSocketError } from "../errors.ts";
import type { SendStatus } from "../fanout/hub.ts";
import { kDeflatedFrame, type PreparedMessage } from "../fanout/prepared_message.ts";
import { Receiver } from "../codec/receiver.ts";
import { encodeClose, encodeFrame, fitCloseReason } from "../codec/sender.ts";
import type { DeflateContext } from "../codec/permessage_deflate.ts";

const encoder = new TextEncoder();

/** What to do with a connection whose unsent backlog passes `maxBuffered`. */
export type SlowConsumerPolicy = "close" | "drop";

/** What a slow consumer did, for logs. */
export type SlowEvent = "closed" | "dropping" | "drained";

/** The limits and timers of one connection. */
export interface ConnectionOptions {
  /** Largest message received, in bytes. @default {1048576} */
  maxPayload?: number;
  /** Most frames per message. @default {1024} */
  maxFragments?: number;
  /** Unsent backlog allowed before `policy` applies, in bytes. @default {1048576} */
  maxBuffered?: number;
  /**
   * What happens to a connection whose unsent backlog passes `maxBuffered`:
   * `"close"` (1008), or `"drop"` (skipped until it drains). @default {"close"}
   */
  policy?: "close" | "drop";
  /**
   * Milliseconds without input (not even a pong) after which the connection
   * is closed with 1001. A silent connection is pinged halfway, so a quiet
   * peer that is alive stays. 0: never. @default {0}
   */
  idleTimeout?: number;
  /** How long to wait for the peer's close frame (and FIN) in ms. @default {5000} */
  closeTimeout?: number;
  /** Backlog over which `send()` waits; `drain` fires when a backlog over it empties. @default {65536} */
  highWaterMark?: number;
}

/**
 * permessage-deflate as agreed in one connection's handshake (RFC 7692).
 * Internal: `serve` and `connect` make it.
 */
export interface EngineDeflate {
  /** Compresses this end's messages (RSV1 on their first frame). */
  send: DeflateContext;
  /** Inflates the peer's compressed messages. */
  receive: DeflateContext;
  /**
   * `send` is shared by many connections (no context takeover): a
   * {@linkcode PreparedMessage}'s compressed frame is made once for all.
   */
  shared: boolean;
  /** Contexts that are this connection's own, closed when it is released. */
  owned: DeflateContext[];
}

/**
 * What an engine reports, to its owner (one object for a whole server: each
 * call names the engine, rather than a closure per connection naming it).
 */
export interface Hooks {
  /** A slow consumer was closed, started being skipped, or drained. */
  onSlow?: (engine: FramedEngine, event: SlowEvent, dropped: number) => void;
  /** The idle timeout closed the connection. */
  onIdle?: (engine: FramedEngine) => void;
  /** A pong answered a ping after `ms` milliseconds. */
  onRoundTrip?: (engine: FramedEngine, ms: number) => void;
}

interface PendingPing {
  id: number;
  start: number;
  resolve: (ms: number) => void;
  reject: (err: unknown) => void;
}

// What the read waiting on a quiet peer holds, for as long as it is quiet,
// on every open connection: 256 bytes, as a netkit socket's (a ping, a close,
// a short chat message whole). A bigger message grows the reads fourfold per
// full read (64 KiB four full reads in); after a short read they shrink back.
// 64 bytes saved 192 B per idle connection, but a publisher's burst then
// came in more pieces, each fanned out as a write per subscriber: fan-out
// to 10,000 subscribers measured 0.22-0.27x Bun against 0.27-0.35x.
const READ_IDLE_SIZE = SOCKET_IDLE_READ_SIZE;
const NO_WAITERS: { bytes: number; resolve: () => void }[] = [];
// The shared empty send queue (never pushed to): an idle engine keeps no array.
const NO_FRAMES: Uint8Array[] = [];
const NO_PINGS: PendingPing[] = [];

// The bits of FramedEngine's #flags.
const SERVER = 1;
const STARTED = 2;
const RELEASED = 4;
const WRITING = 8;
const PRESSURED = 16;
const DROPPING = 32;
const SENT_CLOSE = 64;
const GOT_CLOSE = 128;
const ENDED = 256;
const LINGERING = 512;
const DESTROYED = 1024;
const READING = 2048;
const DIRECT = 4096;
const IDLE_PROBE = 8192;
const PAUSED = 16384;

/** The limits an engine applies, resolved from its options once. */
interface Limits {
  maxBuffered: number;
  policy: SlowConsumerPolicy;
  idleTimeout: number;
  closeTimeout: number;
  highWaterMark: number;
}

// Resolved once per options object: a server hands every engine the same
// one, so its engines share one Limits (five fields fewer per connection).
const limitsCache = new WeakMap<ConnectionOptions, Limits>();
const NO_OPTIONS: ConnectionOptions = {};
const NO_HOOKS: Hooks = {};

function limitsOf(options: ConnectionOptions): Limits {
  let limits = limitsCache.get(options);
  if (limits === undefined) {
    limits = {
      maxBuffered: options.maxBuffered ?? DEFAULT_MAX_BUFFERED,
      policy: options.policy ?? "close",
      idleTimeout: options.idleTimeout ?? 0,
      closeTimeout: options.closeTimeout ?? DEFAULT_CLOSE_TIMEOUT,
      highWaterMark: options.highWaterMark ?? DEFAULT_HIGH_WATER_MARK,
    };
    limitsCache.set(options, limits);
  }
  return limits;
}

/** The RFC 6455 engine over a socket. */
export class FramedEngine implements WebSocketEngine {
  // The engine's yes/no state, one bit each (SERVER, STARTED, …; read with
  // #is): an engine per open connection, and 15 boolean fields would be
  // 120 bytes of it.
  #flags = 0;

  #conn: SocketConn;
  #socket: Deno.Conn;
  #written = 0;
  #receiver: Receiver;
  #hooks: Hooks;
  #limits: Limits;
  #sink: EngineSink | undefined;
  #deflate: EngineDeflate | undefined;

  // Outbound.
  #queue: Uint8Array[] = NO_FRAMES;
  // Joined small frames are copied here, reused write after write (each
  // write completes before the next is taken): no allocation per write.
  // Let go once the queue drains: an idle connection holds no write buffer.
  #joined: Uint8Array = EMPTY;
  #head = 0;
  #queued = 0;
  // The write in flight and how much of it the socket has taken.
  #chunk: Uint8Array = EMPTY;
  #off = 0;
  // The write's and the read's callbacks (see #makeCallbacks), made at
  // start and kept: a fan-out to 10,000 subscribers would otherwise make
  // them again for every publish (measured: slower).
  #onWrite: (result: unknown) => void = noop;
  #onRead: (result: unknown) => void = noop;
  // Shared empty lists until first use (a server holds an engine per connection).
  #waiters: { bytes: number; resolve: () => void }[] = NO_WAITERS;
  #dropped = 0;
  #droppedSince = 0;

  // State.
  #activity = 0;
  #endInfo: [number, string] | undefined;
  // The read side (see #startReading): reading the socket itself (not the
  // handshake's reader any more), into this buffer, sized by #sizes.
  #readBuf: Uint8Array = EMPTY;
  #sizes = new ReadSizes(READ_IDLE_SIZE);
  #closeTimer: ReturnType<typeof setTimeout> | undefined;
  // Made when someone asks for `closed` (the sink hears of the release anyway).
  #closed: Promise<void> | undefined;
  #resolveClosed: (() => void) | undefined;
  /** The client's address when a trusted proxy named it; reported in hooks. */
  clientAddr: Addr | undefined;

  // Pings and idle.
  #pings: PendingPing[] = NO_PINGS;
  #pingSeq = 0;
  #received = 0;
  #idleSeen = 0;
  #idleTimer: ReturnType<typeof setTimeout> | undefined;

  /**
   * @param conn The socket, after the HTTP upgrade.
   * @param server Whether this is the server's end (unmasked frames out, masked in).
   * @param deflate permessage-deflate, when the handshake agreed on it.
   */
  constructor(
    conn: SocketConn,
    server: boolean,
    options: ConnectionOptions = NO_OPTIONS,
    hooks: Hooks = NO_HOOKS,
    deflate?: EngineDeflate,
  ) {
    this.#conn = conn;
    this.#socket = conn.socket;
    if (server) this.#flags |= SERVER;
    this.#deflate = deflate;
    this.#receiver = new Receiver({
      server,
      maxPayload: options.maxPayload ?? DEFAULT_MAX_PAYLOAD,
      maxFragments: options.maxFragments ?? DEFAULT_MAX_FRAGMENTS,
      decompressor: deflate?.receive,
    });
    this.#limits = limitsOf(options);
    this.#hooks = hooks;
  }

  #is(flag: number): boolean {
    return (this.#flags & flag) !== 0;
  }

  /** Resolves once the connection is released. */
  get closed(): Promise<void> {
    return this.#closed ??= this.#is(RELEASED)
      ? Promise.resolve()
      : new Promise((resolve) => (this.#resolveClosed = resolve));
  }

  /** The address hooks report: the client's, or the socket's peer. */
  get reportedAddr(): Addr {
    return this.clientAddr ?? this.#conn.remoteAddr;
  }

  get localAddr(): Addr {
    return this.#conn.localAddr;
  }

  get remoteAddr(): Addr {
    return this.#conn.remoteAddr;
  }

  get bufferedAmount(): number {
    return this.#queued;
  }

  get dropped(): number {
    return this.#dropped;
  }

  get activity(): number {
    return this.#activity;
  }

  get bytesRead(): number {
    return this.#conn.bytesRead;
  }

  get bytesWritten(): number {
    // Frames go straight to the socket, past the Conn's own counter.
    return this.#conn.bytesWritten + this.#written;
  }

  get truncated(): boolean {
    return (this.#conn as { truncated?: boolean }).truncated ?? false;
  }

  get closing(): boolean {
    return this.#is(SENT_CLOSE) || this.#is(DESTROYED);
  }

  /** Queues bytes to go out first, as they are (the server's 101 response). */
  queueRaw(bytes: Uint8Array): void {
    this.#enqueue(bytes);
  }

  attach(sink: EngineSink): void {
    this.#sink = sink;
    if (this.#endInfo) sink.end(...this.#endInfo);
    if (this.#is(RELEASED)) sink.released();
  }

  start(): void {
    if (this.#is(STARTED)) return;
    this.#flags |= STARTED;
    if (this.#is(DESTROYED)) return;
    this.#makeCallbacks();
    this.#kick();
    this.#startReading();
    this.#armIdle();
  }

  sendData(data: Message, binary: boolean): SendStatus {
    if (this.#is(SENT_CLOSE) || this.#is(DESTROYED)) return "closed";
    const opcode = binary ? Opcode.Binary : Opcode.Text;
    const deflate = this.#deflate;
    // A string's UTF-8 is at most 3 bytes per UTF-16 unit: one that short
    // stays under the threshold without being encoded to find out.
    if (
      deflate !== undefined &&
      (typeof data !== "string" || deflate.send.shouldCompress(data.length * 3))
    ) {
      const bytes = typeof data === "string" ? encoder.encode(data) : data;
      if (deflate.send.shouldCompress(bytes.length)) return this.#sendDeflated(opcode, bytes);
      data = bytes;
    }
    return this.#admit(encodeFrame(opcode, data, { mask: !this.#is(SERVER) }));
  }

  sendPrepared(message: PreparedMessage): SendStatus {
    if (this.#is(SENT_CLOSE) || this.#is(DESTROYED)) return "closed";
    const deflate = this.#deflate;
    if (deflate !== undefined && deflate.send.shouldCompress(message.payload.length)) {
      // Shared compressor: one compressed frame for every connection using it.
      if (deflate.shared && this.#is(SERVER)) {
        return this.#admit(message[kDeflatedFrame](deflate.send));
      }
      return this.#sendDeflated(message.binary ? Opcode.Binary : Opcode.Text, message.payload);
    }
    const frame = this.#is(SERVER)
      ? message.frame
      : encodeFrame(message.binary ? Opcode.Binary : Opcode.Text, message.payload, { mask: true });
    return this.#admit(frame);
  }

  /** Compresses one message with this connection's compressor and queues it (RSV1). */
  #sendDeflated(opcode: number, bytes: Uint8Array): SendStatus {
    const ctx = this.#deflate!.send;
    const mask = !this.#is(SERVER);
    if (ctx.noContextTakeover) {
      // Each message on its own: compressing one that is then dropped costs
      // CPU only, so the policy can judge the real (compressed) size.
      return this.#admit(encodeFrame(opcode, ctx.compress(bytes), { mask, rsv1: true }));
    }
    // With context takeover a message must reach the peer once compressed:
    // the next ones may refer to it. So the policy judges it before, by its
    // uncompressed size (an upper bound, give or take a header).
    const status = this.#room(bytes.length);
    if (status !== "sent") return status;
    this.#enqueue(encodeFrame(opcode, ctx.compress(bytes), { mask, rsv1: true }));
    return "sent";
  }

  waitBelow(bytes: number): Promise<void> {
    if (this.#queued <= bytes || this.#is(DESTROYED)) return Promise.resolve();
    if (this.#waiters === NO_WAITERS) this.#waiters = [];
    return new Promise((resolve) => this.#waiters.push({ bytes, resolve }));
  }

  ping(): Promise<number> {
    if (this.#is(SENT_CLOSE) || this.#is(DESTROYED)) {
      return Promise.reject(
        new WebSocketError("ERR_WS_CLOSED", "the WebSocket is closing: cannot ping"),
      );
    }
    const id = ++this.#pingSeq >>> 0;
    const payload = new Uint8Array(4);
    new DataView(payload.buffer).setUint32(0, id);
    return new Promise((resolve, reject) => {
      if (this.#pings === NO_PINGS) this.#pings = [];
      this.#pings.push({ id, start: performance.now(), resolve, reject });
      this.#enqueue(encodeFrame(Opcode.Ping, payload, { mask: !this.#is(SERVER) }));
    });
  }

  close(code: number | undefined, reason: string): Promise<void> {
    if (this.#is(SENT_CLOSE) || this.#is(DESTROYED)) return this.closed;
    this.#flags |= SENT_CLOSE;
    this.#enqueue(encodeClose(code, reason, !this.#is(SERVER)));
    if (this.#is(GOT_CLOSE)) {
      this.#finishClose();
    } else {
      this.#setCloseTimer();
    }
    return this.closed;
  }

  destroy(): void {
    if (this.#is(DESTROYED)) return;
    this.#flags |= DESTROYED;
    clearTimeout(this.#closeTimer);
    clearTimeout(this.#idleTimer);
    this.#end(CloseCode.Abnormal, "");
    const closedErr = new WebSocketError("ERR_WS_CLOSED", "the WebSocket closed before the pong");
    for (const ping of this.#pings.splice(0)) ping.reject(closedErr);
    this.#queue = NO_FRAMES;
    this.#head = 0;
    this.#queued = 0;
    this.#notify();
    this.#conn.destroy();
    this.#maybeClosed();
  }

  #maybeClosed(): void {
    if (this.#is(DESTROYED) && !this.#is(READING) && !this.#is(WRITING)) {
      if (!this.#is(RELEASED)) {
        this.#flags |= RELEASED;
        // Nothing reads or writes any more: a dedicated compressor's zlib
        // memory (hundreds of KiB) goes back now, not when GC finds it.
        for (const ctx of this.#deflate?.owned ?? []) ctx.close();
        this.#resolveClosed?.();
        this.#sink?.released();
      }
    }
  }

  #end(code: number, reason: string): void {
    if (this.#is(ENDED)) return;
    this.#flags |= ENDED;
    this.#endInfo = [code, reason];
    this.#sink?.end(code, reason);
  }

  #setCloseTimer(): void {
    clearTimeout(this.#closeTimer);
    this.#closeTimer = setTimeout(() => this.destroy(), this.#limits.closeTimeout);
  }

  /** Both close frames are out: the server closes the socket, the client waits for it to. */
  #finishClose(): void {
    if (this.#is(SERVER)) {
      this.#setCloseTimer();
      void this.waitBelow(0).then(() => this.#shutdown());
    } else {
      // The read loop ends at the server's FIN and destroys; the timer is the backstop.
      this.#flags |= LINGERING;
      this.#setCloseTimer();
    }
  }

  /**
   * Ends the connection gracefully once everything queued is out: half-close
   * first (a FIN; over TLS a close_notify, without which a strict peer sees a
   * truncation), then release the socket. The close timer bounds it.
   */
  async #shutdown(): Promise<void> {
    if (this.#is(DESTROYED)) return;
    try {
      await this.#conn.closeWrite();
    } catch {
      // The peer is gone already.
    }
    this.destroy();
  }

  /** A protocol violation: close with its code, let the peer read it, then go. */
  #fail(err: WebSocketError): void {
    this.#flags |= LINGERING;
    if (!this.#is(SENT_CLOSE) && !this.#is(DESTROYED)) {
      this.#flags |= SENT_CLOSE;
      this.#enqueue(encodeClose(err.closeCode, fitCloseReason(err.message), !this.#is(SERVER)));
    }
    this.#end(err.closeCode, err.message);
    this.#setCloseTimer();
    // Half-close once the close frame is out, and keep reading (discarding)
    // until the peer closes too: closing with unread input would send a
    // reset that can destroy the close frame before the peer reads it.
    void this.waitBelow(0).then(async () => {
      if (this.#is(DESTROYED)) return;
      try {
        await this.#conn.closeWrite();
      } catch {
        this.destroy();
      }
    });
  }

  /**
   * Starts the read side: a then-callback loop like the write side, not an
   * async function — a waiting `await` keeps a generator, its registers, a
   * promise and two resume closures per connection (~450 B), for as long as
   * the connection idles. Bytes the handshake read past its head go first,
   * through the reader; then the engine reads the socket itself into a
   * buffer of its own, small while the peer is quiet (what a waiting read
   * holds), 64 KiB in bulk.
   */
  #startReading(): void {
    this.#flags |= READING;
    if (this.#conn.releaseReader()) this.#flags |= DIRECT;
    if (this.#is(DIRECT)) this.#readBuf = new Uint8Array(this.#sizes.next);
    this.#readNext();
  }

  #readNext(): void {
    let read: Promise<number | Uint8Array | null>;
    try {
      read = this.#is(DIRECT)
        ? this.#conn.readSocket(this.#readBuf)
        : this.#conn.reader.readChunk();
    } catch (err) {
      this.#readFailed(err);
      return;
    }
    read.then(this.#onRead, this.#onRead);
  }

  #afterRead(result: number | Uint8Array | null): void {
    let chunk: Uint8Array | null;
    if (typeof result === "number") {
      const buf = this.#readBuf;
      const sizes = this.#sizes;
      this.#conn.countIn(result);
      // A copy: the receiver keeps partial frames, the buffer is reused.
      chunk = buf.slice(0, result);
      sizes.record(result, buf.length, buf.length);
      if (sizes.next !== buf.length) this.#readBuf = new Uint8Array(sizes.next);
    } else {
      chunk = result;
      if (!this.#is(DIRECT) && this.#conn.releaseReader()) {
        this.#flags |= DIRECT;
        this.#readBuf = new Uint8Array(this.#sizes.next);
      }
    }
    if (this.#is(DESTROYED)) {
      this.#readStopped();
      return;
    }
    if (chunk === null) {
      if (!this.#is(GOT_CLOSE)) this.#end(CloseCode.Abnormal, "");
      // The peer sends nothing more but may still read: what is queued
      // for it goes out first (bounded by the close timer), then the
      // connection ends.
      this.#setCloseTimer();
      void this.waitBelow(0).then(() => this.#shutdown());
      this.#readStopped();
      return;
    }
    this.#activity++;
    this.#received++;
    if (!this.#is(LINGERING)) {
      try {
        this.#receiver.push(chunk);
      } catch (err) {
        this.#readFailed(err);
        return;
      }
    }
    this.#proceed();
  }

  /**
   * Handles the frames complete so far (none once lingering), then reads
   * on — unless a message handler returned a promise: then reading waits
   * for it (it holds the rest back).
   */
  #proceed(): void {
    let pending: Promise<void> | undefined;
    try {
      pending = this.#frames();
    } catch (err) {
      this.#readFailed(err);
      return;
    }
    if (pending === undefined) {
      this.#readNext();
      return;
    }
    this.#flags |= PAUSED;
    pending.then(() => this.#resume(), (err) => this.#readFailed(err));
  }

  #resume(): void {
    this.#flags &= ~PAUSED;
    if (this.#is(DESTROYED)) this.#readStopped();
    else this.#proceed();
  }

  /** A reset, the socket closed under the read, or a handler that threw. */
  #readFailed(err: unknown): void {
    if (!this.#is(DESTROYED)) {
      this.#end(CloseCode.Abnormal, err instanceof Error ? err.message : "");
      this.destroy();
    }
    this.#readStopped();
  }

  #readStopped(): void {
    this.#flags &= ~READING;
    this.#readBuf = EMPTY;
    this.#maybeClosed();
  }

  /**
   * Handles the frames the receiver has complete, in order: until none is
   * left (undefined), or until a message's handler returns a promise — then
   * that, and #resume calls again once it settles.
   */
  #frames(): Promise<void> | undefined {
    while (!this.#is(LINGERING)) {
      let frame;
      try {
        frame = this.#receiver.next();
      } catch (err) {
        if (!(err instanceof WebSocketError)) throw err;
        this.#fail(err);
        return undefined;
      }
      if (frame === undefined) return undefined;
      switch (frame.type) {
        case "message": {
          if (this.#is(ENDED)) break;
          const pending = this.#sink!.message(
            frame.binary ? frame.data : frame.text!,
            frame.binary ? undefined : frame.data,
          );
          if (pending !== undefined) return pending;
          break;
        }
        case "ping":
          if (!this.#is(SENT_CLOSE)) {
            this.#admit(encodeFrame(Opcode.Pong, frame.data, { mask: !this.#is(SERVER) }));
          }
          break;
        case "pong":
          this.#onPong(frame.data);
          break;
        case "close":
          this.#flags |= GOT_CLOSE;
          this.#flags |= LINGERING;
          this.#end(frame.code, frame.reason);
          if (this.#is(SENT_CLOSE)) this.#finishClose();
          else this.#setCloseTimer();
          break;
      }
    }
    return undefined;
  }

  #onPong(data: Uint8Array): void {
    if (data.length !== 4 || this.#pings.length === 0) return;
    const id = new DataView(data.buffer, data.byteOffset, 4).getUint32(0);
    const now = performance.now();
    // A pong answers its ping and every earlier one (RFC 6455 §5.5.3).
    while (this.#pings.length > 0 && this.#pings[0].id <= id) {
      const ping = this.#pings.shift()!;
      ping.resolve(now - ping.start);
      this.#hooks.onRoundTrip?.(this, now - ping.start);
    }
  }

  #armIdle(): void {
    if (this.#limits.idleTimeout <= 0 || this.#is(DESTROYED)) return;
    // Two ticks per idleTimeout: the first silent one pings, the next closes.
    this.#idleTimer = setTimeout(() => this.#onIdle(), Math.max(1, this.#limits.idleTimeout / 2));
  }

  #onIdle(): void {
    if (this.#is(DESTROYED) || this.#is(SENT_CLOSE)) return;
    if (this.#received !== this.#idleSeen || this.#is(PAUSED)) {
      this.#idleSeen = this.#received;
      this.#flags &= ~IDLE_PROBE;
    } else if (!this.#is(IDLE_PROBE)) {
      this.#flags |= IDLE_PROBE;
      this.ping().catch(() => {});
    } else {
      this.#hooks.onIdle?.(this);
      void this.close(CloseCode.GoingAway, "idle timeout");
      return;
    }
    this.#armIdle();
  }

  /** Queues a data frame (or pong) unless the slow-consumer policy says no. */
  #admit(frame: Uint8Array): SendStatus {
    const status = this.#room(frame.length);
    if (status === "sent") this.#enqueue(frame);
    return status;
  }

  /**
   * Whether a frame of `length` bytes may be queued under the slow-consumer
   * policy (`"sent"`), or was dropped or closed the connection instead.
   */
  #room(length: number): SendStatus {
    if (this.#is(DROPPING)) {
      this.#dropped++;
      this.#droppedSince++;
      return "dropped";
    }
    if (this.#queued > 0 && this.#queued + length > this.#limits.maxBuffered) {
      if (this.#limits.policy === "drop") {
        this.#flags |= DROPPING;
        this.#dropped++;
        this.#droppedSince = 1;
        this.#hooks.onSlow?.(this, "dropping", this.#dropped);
        return "dropped";
      }
      this.#closeSlow();
      return "closed";
    }
    return "sent";
  }

  /** `policy: "close"`: drop the backlog not yet in flight and close with 1008. */
  #closeSlow(): void {
    let discarded = 0;
    for (let i = this.#head; i < this.#queue.length; i++) discarded += this.#queue[i].length;
    this.#queue = NO_FRAMES;
    this.#head = 0;
    this.#queued -= discarded;
    this.#hooks.onSlow?.(this, "closed", this.#dropped);
    void this.close(CloseCode.PolicyViolation, "slow consumer: send backlog over maxBuffered");
    this.#end(CloseCode.PolicyViolation, "slow consumer: send backlog over maxBuffered");
  }

  #enqueue(frame: Uint8Array): void {
    if (this.#queue === NO_FRAMES) this.#queue = [frame];
    else this.#queue.push(frame);
    this.#queued += frame.length;
    if (this.#queued > this.#limits.highWaterMark) this.#flags |= PRESSURED;
    this.#kick();
  }

  #kick(): void {
    if (
      this.#is(WRITING) || !this.#is(STARTED) || this.#is(DESTROYED) ||
      this.#head === this.#queue.length
    ) {
      return;
    }
    this.#flags |= WRITING;
    // The sends of this turn queue up and share one write: every engine
    // kicked in a turn starts its write from one microtask (a publish to
    // 10,000 subscribers schedules one, not 10,000 async calls).
    const due = FramedEngine.#due;
    due[FramedEngine.#dueCount++] = this;
    if (FramedEngine.#dueCount === 1) queueMicrotask(FramedEngine.#writeDue);
  }

  // Engines kicked this turn, written from one microtask. The array is
  // kept (entries cleared, not the array replaced): no allocation per turn.
  static #due: (FramedEngine | undefined)[] = [];
  static #dueCount = 0;
  static #writeDue = (): void => {
    const due = FramedEngine.#due;
    // A write that fails at once, or a drain, runs callers' code, which may
    // send and kick more engines: they join this walk.
    let i = 0;
    try {
      for (; i < FramedEngine.#dueCount; i++) {
        const engine = due[i]!;
        due[i] = undefined;
        engine.#writeNext();
      }
    } finally {
      // Normally all done; after a throw (a drain handler's) the rest go in
      // the next microtask, and the error goes on up.
      const rest = FramedEngine.#dueCount - Math.min(i + 1, FramedEngine.#dueCount);
      for (let k = 0; k < rest; k++) {
        due[k] = due[i + 1 + k];
        due[i + 1 + k] = undefined;
      }
      FramedEngine.#dueCount = rest;
      if (rest > 0) queueMicrotask(FramedEngine.#writeDue);
    }
  };

  /**
   * Writes what is queued (`#writing` is set): one socket write of the
   * frames queued so far, joined, whose completion writes whatever was
   * queued meanwhile — a then-callback loop, not an async function: no
   * frame or promise of ours per write, only the socket's.
   */
  #writeNext(): void {
    if (this.#is(DESTROYED) || this.#head === this.#queue.length) {
      this.#writeStopped();
      return;
    }
    const chunk = this.#take();
    this.#chunk = chunk;
    this.#off = 0;
    this.#issue(chunk);
  }

  #issue(bytes: Uint8Array): void {
    let wrote: Promise<number>;
    try {
      wrote = this.#socket.write(bytes);
    } catch (err) {
      this.#writeFailed(err);
      return;
    }
    // Made on the first write and kept.
    wrote.then(this.#onWrite, this.#onWrite);
  }

  /**
   * The socket callbacks, one per direction for both outcomes of a read or
   * a write, made together (one context for both): a write gives a number
   * of bytes; a read gives a number (bytes into the buffer), a chunk
   * (through the handshake's reader) or null (the end); anything else is
   * the error it failed with. An idle engine keeps two closures, not the
   * four that separate fulfilled and rejected callbacks would take.
   */
  #makeCallbacks(): void {
    this.#onWrite = (result: unknown) => {
      if (typeof result === "number") this.#wrote(result);
      else this.#writeFailed(result);
    };
    this.#onRead = (result: unknown) => {
      if (result === null || typeof result === "number" || result instanceof Uint8Array) {
        this.#afterRead(result);
      } else {
        this.#readFailed(result);
      }
    };
  }

  #wrote(n: number): void {
    const chunk = this.#chunk;
    this.#off += n;
    if (this.#off < chunk.length && !this.#is(DESTROYED)) {
      this.#issue(chunk.subarray(this.#off));
      return;
    }
    this.#chunk = EMPTY;
    this.#activity++;
    this.#written += chunk.length;
    if (this.#is(DESTROYED)) {
      this.#writeStopped();
      return;
    }
    this.#queued -= chunk.length;
    this.#notify();
    // What was queued while this write was out goes in the next one.
    this.#writeNext();
  }

  #writeFailed(err: unknown): void {
    this.#chunk = EMPTY;
    if (!this.#is(DESTROYED)) {
      this.#end(CloseCode.Abnormal, err instanceof Error ? err.message : "");
      this.destroy();
    }
    this.#writeStopped();
  }

  /** The queue is empty (or the connection gone): no write in flight any more. */
  #writeStopped(): void {
    this.#flags &= ~WRITING;
    if (this.#is(DESTROYED)) {
      this.#maybeClosed();
      return;
    }
    // Not while idle: neither the write buffer nor the queue array.
    this.#joined = EMPTY;
    if (this.#is(DROPPING)) {
      this.#flags &= ~DROPPING;
      this.#hooks.onSlow?.(this, "drained", this.#droppedSince);
      this.#droppedSince = 0;
    }
    if (this.#is(PRESSURED)) {
      this.#flags &= ~PRESSURED;
      if (!this.#is(SENT_CLOSE)) this.#sink?.drain();
    }
  }

  /** The next write: one frame, or several small ones joined. */
  #take(): Uint8Array {
    const queue = this.#queue;
    const start = this.#head;
    const first = queue[start];
    let end = start + 1;
    let total = first.length;
    if (total < COALESCE_LIMIT) {
      while (end < queue.length && total + queue[end].length <= COALESCE_LIMIT) {
        total += queue[end++].length;
      }
    }
    const out = end > start + 1 ? this.#join(queue, start, end, total) : first;
    if (end === queue.length) {
      this.#queue = NO_FRAMES;
      this.#head = 0;
    } else if (end > 1024) {
      this.#queue = queue.slice(end);
      this.#head = 0;
    } else {
      for (let i = start; i < end; i++) queue[i] = EMPTY;
      this.#head = end;
    }
    return out;
  }

  /**
   * `queue[start..end)` as one buffer of `total` bytes. A fan-out queues
   * the same frames (the same objects) on every subscriber: the run joined
   * last is remembered by identity, and from the second connection that
   * writes it on, all share one buffer of it (made once, never written to
   * again) instead of each copying it. Other runs are copied into the
   * engine's own buffer, kept while the queue is busy.
   */
  #join(queue: Uint8Array[], start: number, end: number, total: number): Uint8Array {
    const count = end - start;
    let same = count === shared.count;
    for (let i = 0; same && i < count; i++) same = queue[start + i] === shared.frames[i];
    if (same) return shared.joined ??= copyRun(new Uint8Array(total), queue, start, end);
    if (count <= SHARED_RUN_MAX) {
      for (let i = 0; i < count; i++) shared.frames[i] = queue[start + i];
      for (let i = count; i < shared.count; i++) shared.frames[i] = EMPTY;
      shared.count = count;
      shared.joined = undefined;
    }
    if (this.#joined.length < total) {
      // Sized to fit when this run drains the queue (the buffer is let go
      // then), with room for more when frames are waiting behind it.
      this.#joined = new Uint8Array(end === queue.length ? total : Math.max(total, 4096));
    }
    return copyRun(this.#joined.subarray(0, total), queue, start, end);
  }

  #notify(): void {
    if (this.#waiters.length === 0) return;
    const queued = this.#queued;
    const keep: { bytes: number; resolve: () => void }[] = [];
    for (const waiter of this.#waiters) {
      if (this.#is(DESTROYED) || queued <= waiter.bytes) waiter.resolve();
      else keep.push(waiter);
    }
    this.#waiters = keep;
  }
}

const EMPTY = new Uint8Array(0);
const noop = (): void => {};

/** Most frames in a run remembered for sharing (a fan-out burst is a few). */
const SHARED_RUN_MAX = 64;

/** The run of frames joined last, by identity, and its shared buffer once a second engine wants it. */
const shared: { frames: Uint8Array[]; count: number; joined: Uint8Array | undefined } = {
  frames: [],
  count: 0,
  joined: undefined,
};

/** Copies `queue[start..end)` into `out`, one after the other; returns `out`. */
function copyRun(out: Uint8Array, queue: Uint8Array[], start: number, end: number): Uint8Array {
  let off = 0;
  for (let i = start; i < end; i++) {
    out.set(queue[i], off);
    off += queue[i].length;
  }
  return out;
}
