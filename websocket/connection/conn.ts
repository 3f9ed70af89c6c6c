/**
 * {@linkcode WebSocketConn}: one WebSocket connection, as a netkit `Conn` and
 * with everything a message transport adds — text and binary messages,
 * close codes, ping, topics and a send backlog.
 *
 * @module
 */
import type { Addr, Conn } from "../../conn.ts";
import { BufferedReader } from "../../io/buffered_reader.ts";
import { RawWritableStream } from "../../internal/raw_writable.ts";
import { CloseCode, DEFAULT_HIGH_WATER_MARK } from "../codec/constants.ts";
import { WebSocketError } from "../errors.ts";
import type { BroadcastHub, PublishResult, SendStatus, Subscriber } from "../fanout/hub.ts";
import type { PreparedMessage } from "../fanout/prepared_message.ts";
import { isValidCloseCode } from "../codec/validation.ts";

/** A message: a string for text, bytes for binary. */
export type Message = string | Uint8Array;

/**
 * Where a {@linkcode WebSocketConn} hands its messages and what it asks of
 * its transport. Internal: netkit has two engines, its own RFC 6455 framing
 * over a socket (`serve`, `connect`) and `Deno.upgradeWebSocket` (`upgrade`).
 */
export interface EngineSink {
  /**
   * A message arrived: a string (text, with its UTF-8 `bytes` when known) or
   * bytes (binary). A returned promise pauses reading until it settles.
   */
  message(data: Message, bytes: Uint8Array | undefined): void | Promise<void>;
  /** No more messages: the peer's close frame (its code and reason), or the connection ended. */
  end(code: number, reason: string): void;
  /** The send backlog emptied. */
  drain(): void;
  /** The connection is released (what `closed` resolves on). */
  released(): void;
}

/** The transport under a {@linkcode WebSocketConn}. Internal. */
export interface WebSocketEngine {
  /** This end's address. */
  readonly localAddr: Addr;
  /** The peer's address. */
  readonly remoteAddr: Addr;
  /** Resolves once the connection is released. */
  readonly closed: Promise<void>;
  /** Bytes queued and not yet handed to the OS. */
  readonly bufferedAmount: number;
  /** Messages dropped by `policy: "drop"`. */
  readonly dropped: number;
  /** Counts reads and writes. */
  readonly activity: number;
  /** Whether the TLS peer ended the stream without a close_notify. */
  readonly truncated: boolean;
  /** Bytes received on the wire so far (0 where the engine does not count). */
  readonly bytesRead: number;
  /** Bytes sent on the wire so far. */
  readonly bytesWritten: number;
  /** Whether this end has sent its close frame (or the connection is gone). */
  readonly closing: boolean;
  /**
   * Names who hears about messages, the end and the release. Called once,
   * by the connection that owns the engine, before `start`.
   */
  attach(sink: EngineSink): void;
  /** Starts reading and writing. */
  start(): void;
  /** Queues a message. */
  sendData(data: Message, binary: boolean): SendStatus;
  /** Queues a message encoded once for many connections. */
  sendPrepared(message: PreparedMessage): SendStatus;
  /** Resolves once the backlog is at most `bytes` (or the connection is gone). */
  waitBelow(bytes: number): Promise<void>;
  /** Pings; resolves with the round trip in milliseconds. */
  ping(): Promise<number>;
  /** Sends the close frame (code `undefined`: none) and resolves once released. */
  close(code: number | undefined, reason: string): Promise<void>;
  /** Releases everything at once. */
  destroy(): void;
}

/**
 * Where a served connection's messages go (a server's handler object): one
 * object for every connection, each call naming the connection. Internal.
 */
export interface MessageTarget<T> {
  /** A message; a returned promise pauses the connection's reading until it settles. */
  message(ws: WebSocketConn<T>, data: Message): void | Promise<void>;
  /** No more messages: what to do before the session ends (close, the `close` callback). */
  ended(ws: WebSocketConn<T>): void | Promise<void>;
  /**
   * The session is over: reported with what `ended` returned (a server's
   * bookkeeping: `kServe` keeps no promise or closure per connection for it).
   */
  finished(ws: WebSocketConn<T>, ended: void | Promise<void>): void;
}

/** How a {@linkcode WebSocketConn} is made. Internal. */
export interface WebSocketConnInit<T> {
  /** Called once the connection is released (a server's bookkeeping: no closure per connection). */
  onReleased?: (ws: WebSocketConn<T>) => void;
  /** The transport. */
  engine: WebSocketEngine;
  /** The subprotocol agreed on, `""` if none. */
  protocol?: string;
  /** The extensions agreed on (`Sec-WebSocket-Extensions` as answered), `""` if none. */
  extensions?: string;
  /** The request target (server) or URL (client). */
  url?: string;
  /** Per-connection data. */
  data?: T;
  /** The hub `subscribe`/`publish` use. */
  hub?: BroadcastHub;
  /** `send()` waits while the backlog is over this. */
  highWaterMark?: number;
  /** The client's address, when not the socket's (a trusted proxy's X-Forwarded-For). */
  remoteAddr?: Addr;
}

/** Options for {@linkcode WebSocketConn.send}. */
export interface SendOptions {
  /**
   * Overrides the message type: `true` sends a string's UTF-8 as binary,
   * `false` sends bytes as text (they must be valid UTF-8).
   */
  binary?: boolean;
}

interface Inbound {
  data: Message;
  bytes: Uint8Array | undefined;
}

// A connection's private steps, for its engine sink (set in a static block).
let deliver: (
  ws: WebSocketConn<unknown>,
  data: Message,
  bytes: Uint8Array | undefined,
) => void | Promise<void>;
let endOf: (ws: WebSocketConn<unknown>, code: number, reason: string) => void;
let releasedOf: (ws: WebSocketConn<unknown>) => void;

const NO_INBOX: (Inbound | undefined)[] = [];
const NO_READERS: (() => void)[] = [];
const encoder = new TextEncoder();
const TRUE = Promise.resolve(true);
const FALSE = Promise.resolve(false);
// The inbox pauses the socket when this many messages or bytes wait unread.
const INBOX_MESSAGES = 16;
const INBOX_BYTES = 256 * 1024;
// Once this end has sent its close frame, the inbox may grow this many times
// larger before reading pauses: 256 messages or 4 MiB.
const CLOSING_FACTOR = 16;
// How long a peer's close frame may wait for the application before netkit
// answers it anyway (normally the answer goes once the last message is read).
const CLOSE_REPLY_DELAY = 1000;

/** Internal hooks of a {@linkcode WebSocketConn}. */
export const kStart: unique symbol = Symbol("netkit.ws.start");
/** Internal: drops unread messages. */
export const kDiscard: unique symbol = Symbol("netkit.ws.discard");
/** Internal: hand every message straight to a callback (a server's handler object). */
export const kServe: unique symbol = Symbol("netkit.ws.serve");
/** Internal: the drain callback of a handler object. */
export const kOnDrain: unique symbol = Symbol("netkit.ws.onDrain");
/** Internal: what `send` and `writable` queue goes through it (a `netkit.v1` envelope). */
export const kWrap: unique symbol = Symbol("netkit.ws.wrap");

/**
 * One WebSocket connection. It is a netkit {@linkcode Conn} — each message
 * received is one chunk of `readable` (text as its UTF-8 bytes), each chunk
 * written to `writable` one binary message, closing `writable` sends close
 * 1000 — so a handler written for TCP serves WebSocket unchanged. It adds
 * what a message transport has to say:
 *
 * - `for await (const msg of ws)` yields messages: a `string` for text, a
 *   `Uint8Array` for binary; it ends at the peer's close frame. A slow
 *   consumer pauses reading from the socket (backpressure), it does not
 *   buffer without bound.
 * - `send(data)` queues a message and resolves once the backlog is below
 *   the high-water mark (64 KiB by default); `bufferedAmount` is the backlog.
 * - `close(code, reason)`, then `closeCode`/`closeReason` say how it ended
 *   (1006 when without a close frame).
 * - `ping()` resolves with the round trip in milliseconds.
 * - `subscribe(topic)`, `publish(topic, message)` on the server's hub.
 *
 * @example An echo that keeps message types
 * ```ts
 * import { connect, serve } from "@netkit/netkit/websocket";
 * import assert from "node:assert/strict";
 *
 * await using server = serve({ port: 0 }, async (ws) => {
 *   for await (const msg of ws) await ws.send(msg);
 * });
 * await using ws = await connect(`ws://127.0.0.1:${server.addr.port}/`);
 * await ws.send("hello");
 * assert.equal(await ws.receive(), "hello");
 * await ws.send(new Uint8Array([1, 2]));
 * assert.deepEqual(await ws.receive(), new Uint8Array([1, 2]));
 * ```
 */
export class WebSocketConn<T = unknown> implements Conn, Subscriber, AsyncIterable<Message> {
  /** The subprotocol agreed on in the handshake, `""` if none. */
  readonly protocol: string;
  /**
   * The extensions agreed on in the handshake, as the server answered them
   * in `Sec-WebSocket-Extensions` (e.g. `"permessage-deflate;
   * server_no_context_takeover"`), `""` if none — as `WebSocket.extensions`.
   */
  readonly extensions: string;
  /** The request target (`/chat?room=1`) on the server, the URL on the client. */
  readonly url: string;
  /** Per-connection data: what the server's `upgrade` hook returned as `data`. */
  data: T;

  #engine: WebSocketEngine;
  #hub: BroadcastHub | undefined;
  #hwm: number;
  // Shared empty lists until first use: a served connection's messages go
  // straight to its handler, and a server holds one of these per connection.
  #inbox: (Inbound | undefined)[] = NO_INBOX;
  #head = 0;
  #inboxBytes = 0;
  #discard = false;
  #ended = false;
  #replied = false;
  #closeCode: number | undefined;
  #closeReason = "";
  #readers: (() => void)[] = NO_READERS;
  #room: (() => void) | undefined;
  #roomPromise: Promise<void> | undefined;
  #replyTimer: ReturnType<typeof setTimeout> | undefined;
  #readable: ReadableStream<Uint8Array> | undefined;
  #writable: RawWritableStream | undefined;
  #started = false;
  #finished = false;
  #received = 0;
  /** Internal: the handler object's `drain`. */
  [kOnDrain]: ((ws: WebSocketConn<T>) => void) | undefined;
  /** Internal: wraps each message `send` and `writable` queue (`netkit.v1`). */
  [kWrap]: ((data: Message, binary: boolean) => Message) | undefined;
  // Set by [kServe]: messages go straight to it, not through the inbox.
  #direct: MessageTarget<T> | undefined;
  // Served directly and not finished yet: the end still goes to #direct.
  #serving = false;
  // A direct handler's promise is pending: messages wait in the inbox (the
  // socket is still read, so a pong or a close the handler awaits arrives).
  #busy = false;

  // The client's address when a trusted proxy named it (X-Forwarded-For).
  #remote: Addr | undefined;

  static {
    deliver = (ws, data, bytes) => ws.#deliver(data, bytes);
    endOf = (ws, code, reason) => ws.#end(code, reason);
    releasedOf = (ws) => ws.#released();
  }

  /** Made by `serve`, `connect` and `upgrade`; not meant to be called directly. */
  constructor(init: WebSocketConnInit<T>) {
    this.#engine = init.engine;
    this.#remote = init.remoteAddr;
    this.protocol = init.protocol ?? "";
    this.extensions = init.extensions ?? "";
    this.url = init.url ?? "";
    this.data = init.data as T;
    this.#hub = init.hub;
    this.#hwm = init.highWaterMark ?? DEFAULT_HIGH_WATER_MARK;
    this.#onReleased = init.onReleased;
    this.#engine.attach(new ConnSink(this as unknown as WebSocketConn<unknown>));
  }

  #onReleased: ((ws: WebSocketConn<T>) => void) | undefined;

  #released(): void {
    this.#finished = true;
    clearTimeout(this.#replyTimer);
    this.#hub?.unsubscribeAll(this);
    this.#finishDirect();
    this.#onReleased?.(this);
  }

  /** Starts the engine (after the server's `open` ran). Internal. */
  [kStart](): void {
    if (this.#started) return;
    this.#started = true;
    this.#engine.start();
  }

  /** This end's address. */
  get localAddr(): Addr {
    return this.#engine.localAddr;
  }

  /** The peer's address. */
  get remoteAddr(): Addr {
    return this.#remote ?? this.#engine.remoteAddr;
  }

  /** Resolves once the connection is closed and its socket released. */
  get closed(): Promise<void> {
    return this.#engine.closed;
  }

  /**
   * `1` (open), `2` (closing: a close frame was sent or received) or `3`
   * (closed), as `WebSocket.readyState`.
   */
  get readyState(): 1 | 2 | 3 {
    if (this.#finished) return 3;
    return this.#engine.closing || this.#ended ? 2 : 1;
  }

  /**
   * How the connection ended: the code of the peer's close frame (1005 if it
   * had none), the code netkit closed with after a protocol violation (1002,
   * 1007, 1009), or 1006 when it ended without a close frame. `undefined`
   * while the connection is open.
   */
  get closeCode(): number | undefined {
    return this.#closeCode;
  }

  /** The reason that came with {@linkcode WebSocketConn.closeCode}; may be empty. */
  get closeReason(): string {
    return this.#closeReason;
  }

  /** Bytes queued to send and not yet handed to the OS. */
  get bufferedAmount(): number {
    return this.#engine.bufferedAmount;
  }

  /** Messages not sent because this connection was over `maxBuffered` with `policy: "drop"`. */
  get dropped(): number {
    return this.#engine.dropped;
  }

  /**
   * How many messages have arrived so far (read or not). A client that wants
   * "the first message after mine" skips this many.
   */
  get messagesReceived(): number {
    return this.#received;
  }

  /**
   * `wss:`: whether the server ended the TLS stream without a close_notify
   * (after the close handshake that is harmless; a program may warn).
   */
  get truncated(): boolean {
    return this.#engine.truncated;
  }

  /** Bytes received on the wire so far, frames and handshake included. */
  get bytesRead(): number {
    return this.#engine.bytesRead;
  }

  /** Bytes sent on the wire so far. */
  get bytesWritten(): number {
    return this.#engine.bytesWritten;
  }

  /** Counts reads and writes; a server uses it to tell idle connections. */
  get activity(): number {
    return this.#engine.activity;
  }

  /**
   * Queues a message: a string goes as text, bytes as binary. Resolves to
   * `true` once the backlog is at or below the high-water mark (at once,
   * usually), or to `false` when the message was not queued: the connection
   * is closing, or it is over `maxBuffered` (dropped under `policy: "drop"`,
   * closed with 1008 under `policy: "close"`). Never rejects, so an
   * un-awaited `send` is safe.
   *
   * @example
   * ```ts
   * import { connect, serve } from "@netkit/netkit/websocket";
   * import assert from "node:assert/strict";
   *
   * await using server = serve({ port: 0 }, async (ws) => {
   *   await ws.send("welcome");
   *   await ws.send(new Uint8Array([1, 2, 3]));
   * });
   * await using ws = await connect(`ws://127.0.0.1:${server.addr.port}/`);
   * assert.equal(await ws.receive(), "welcome"); // text arrives as a string
   * assert.deepEqual(await ws.receive(), new Uint8Array([1, 2, 3])); // binary as bytes
   * ```
   */
  send(data: Message, options?: SendOptions): Promise<boolean> {
    const binary = options?.binary ?? typeof data !== "string";
    if (this[kWrap] !== undefined) data = this[kWrap](data, binary);
    if (this.#engine.sendData(data, binary) !== "sent") return FALSE;
    if (this.#engine.bufferedAmount <= this.#hwm) return TRUE;
    return this.#engine.waitBelow(this.#hwm).then(() => true);
  }

  /**
   * Queues a {@linkcode PreparedMessage} (encoded once for many connections).
   * Used by hubs; says whether it was queued, dropped or the connection is
   * closing.
   */
  sendPrepared(message: PreparedMessage): "sent" | "dropped" | "closed" {
    return this.#engine.sendPrepared(message);
  }

  /**
   * Resolves with the next message (a `string` for text, a `Uint8Array` for
   * binary), or `null` once the peer has closed.
   *
   * @example
   * ```ts
   * import { connect, serve } from "@netkit/netkit/websocket";
   * import assert from "node:assert/strict";
   *
   * await using server = serve({ port: 0 }, (ws) => void ws.send("hi"));
   * await using ws = await connect(`ws://127.0.0.1:${server.addr.port}/`);
   * assert.equal(await ws.receive(), "hi");
   * ```
   */
  async receive(): Promise<Message | null> {
    const msg = await this.#next();
    return msg === null ? null : msg.data;
  }

  /** Messages until the peer closes: `string` for text, `Uint8Array` for binary. */
  [Symbol.asyncIterator](): AsyncIterableIterator<Message> {
    const it: AsyncIterableIterator<Message> = {
      next: async () => {
        const msg = await this.#next();
        return msg === null ? { done: true, value: undefined } : { done: false, value: msg.data };
      },
      return: () => Promise.resolve({ done: true, value: undefined }),
      [Symbol.asyncIterator]: () => it,
    };
    return it;
  }

  /**
   * Each message received as one chunk, text as its UTF-8 bytes; ends at the
   * peer's close frame. Cancelling it discards further messages.
   */
  get readable(): ReadableStream<Uint8Array> {
    // Behind a BufferedReader, as a socket's readable is: bytes an io call
    // (readUntil, readExact, readLine) read past its record stay buffered for
    // whatever reads this stream next — another io call, or a pipe or a
    // framing transform — instead of being lost with io's private reader.
    return this.#readable ??= new BufferedReader(
      new ReadableStream<Uint8Array>({
        pull: async (controller) => {
          const msg = await this.#next();
          if (msg === null) {
            controller.close();
            return;
          }
          const { data, bytes } = msg;
          controller.enqueue(typeof data === "string" ? bytes ?? encoder.encode(data) : data);
        },
        cancel: () => this[kDiscard](),
      }, { highWaterMark: 0 }),
    ).readable;
  }

  /**
   * Each chunk written goes as one binary message; closing it sends close
   * 1000 (and `readable` goes on until the peer's close frame); aborting it
   * ends the connection at once.
   */
  get writable(): WritableStream<Uint8Array> {
    return this.#writable ??= new RawWritableStream({
      write: async (chunk) => {
        const data = this[kWrap]?.(chunk, true) ?? chunk;
        if (this.#engine.sendData(data, true) === "closed") {
          throw new WebSocketError("ERR_WS_CLOSED", "the WebSocket is closing: cannot write");
        }
        if (this.#engine.bufferedAmount > this.#hwm) await this.#engine.waitBelow(this.#hwm);
      },
      close: () => this.closeWrite(),
      abort: () => Promise.resolve(this.destroy()),
    });
  }

  /**
   * Sends close 1000 after what was already queued, and resolves once it is
   * handed to the OS; messages keep arriving until the peer's close frame.
   */
  async closeWrite(): Promise<void> {
    this.#replied = true;
    void this.#engine.close(this.#defaultCode(), "");
    this.#releaseRoom();
    await this.#engine.waitBelow(0);
  }

  /**
   * Closes: sends a close frame after what was already queued, waits for the
   * peer's (up to `closeTimeout`), then releases the socket. Resolves once
   * closed. Idempotent.
   *
   * @param code A close code: 1000 (the default; or the peer's code when it
   *   closed first), 1001, …, 3000–4999.
   * @param reason At most 123 bytes of UTF-8.
   * @throws {RangeError} An invalid code or a reason too long.
   */
  close(code?: number, reason = ""): Promise<void> {
    if (code !== undefined && !isValidCloseCode(code)) {
      return Promise.reject(new RangeError(`invalid close code ${code}`));
    }
    if (encoder.encode(reason).length > 123) {
      return Promise.reject(new RangeError("a close reason may be at most 123 bytes of UTF-8"));
    }
    this.#replied = true;
    const closed = this.#engine.close(code ?? this.#defaultCode(), reason);
    this.#releaseRoom();
    return closed;
  }

  /** Ends the connection at once, without a close handshake. */
  destroy(): void {
    this.#engine.destroy();
  }

  /** Pings the peer and resolves with the round trip in milliseconds. */
  ping(): Promise<number> {
    return this.#engine.ping();
  }

  /** Subscribes to `topic` on the server's hub; `false` if already subscribed (or closing). */
  subscribe(topic: string): boolean {
    if (this.#ended || this.#engine.closing) return false;
    return this.#requireHub().subscribe(this, topic);
  }

  /** Unsubscribes from `topic`; `false` if not subscribed. */
  unsubscribe(topic: string): boolean {
    return this.#requireHub().unsubscribe(this, topic);
  }

  /** Whether this connection is subscribed to `topic`. */
  isSubscribed(topic: string): boolean {
    return this.#hub?.isSubscribed(this, topic) ?? false;
  }

  /** The topics this connection is subscribed to. */
  get topics(): string[] {
    return this.#hub?.topicsOf(this) ?? [];
  }

  /**
   * Sends `message` to every subscriber of `topic`, encoded once; not to this
   * connection unless `includeSelf`.
   *
   * @example A chat room
   * ```ts
   * import { connect, serve } from "@netkit/netkit/websocket";
   * import assert from "node:assert/strict";
   *
   * await using server = serve({ port: 0 }, {
   *   open: (ws) => void ws.subscribe("room"),
   *   message: (ws, data) => void ws.publish("room", data, { includeSelf: true }),
   * });
   * await using alice = await connect(server.url);
   * await using bob = await connect(server.url);
   * await alice.send("hi all");
   * assert.equal(await bob.receive(), "hi all");
   * assert.equal(await alice.receive(), "hi all"); // includeSelf: the sender gets it too
   * ```
   */
  publish(
    topic: string,
    message: Message | PreparedMessage,
    options?: SendOptions & { includeSelf?: boolean },
  ): PublishResult {
    return this.#requireHub().publish(topic, message, {
      except: options?.includeSelf ? undefined : this,
      binary: options?.binary,
    });
  }

  /** Closes (1000), as {@linkcode WebSocketConn.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #requireHub(): BroadcastHub {
    if (this.#hub === undefined) {
      throw new TypeError(
        "this connection has no hub: topics work on connections from serve(), or from upgrade() given a hub",
      );
    }
    return this.#hub;
  }

  #defaultCode(): number | undefined {
    if (this.#ended && this.#closeCode !== undefined) {
      // Echo the peer's code; a close frame without one gets one without one.
      return this.#closeCode === CloseCode.NoStatus || !isValidCloseCode(this.#closeCode)
        ? undefined
        : this.#closeCode;
    }
    return CloseCode.Normal;
  }

  #deliver(data: Message, bytes: Uint8Array | undefined): void | Promise<void> {
    this.#received++;
    if (this.#discard) return;
    const direct = this.#direct;
    if (direct !== undefined && !this.#busy) {
      // Straight from the read loop to the handler: no inbox, no iterator
      // hops, so many subscribers' writes coalesce per read.
      const pending = direct.message(this, data);
      if (pending !== undefined) this.#await(pending);
      return;
    }
    // Every message before the peer's close frame is the application's, also
    // after this end sent its own: never dropped, only paused on. After our
    // close the inbox may hold more before reading pauses (CLOSING_FACTOR),
    // so a close handshake is not held up by a few unread messages.
    if (this.#inbox === NO_INBOX) this.#inbox = [];
    this.#inbox.push({ data, bytes });
    this.#inboxBytes += data.length;
    this.#readers.shift()?.();
    if (this.#full(this.#engine.closing ? CLOSING_FACTOR : 1)) {
      return this.#roomPromise ??= new Promise((resolve) => (this.#room = resolve));
    }
  }

  #full(factor: number): boolean {
    return this.#inbox.length - this.#head >= INBOX_MESSAGES * factor ||
      this.#inboxBytes >= INBOX_BYTES * factor;
  }

  /** Drops unread and further messages (a handler that failed). Internal. */
  [kDiscard](): void {
    this.#discard = true;
    this.#inbox = NO_INBOX;
    this.#head = 0;
    this.#inboxBytes = 0;
    this.#releaseRoom();
  }

  #releaseRoom(): void {
    const room = this.#room;
    this.#room = undefined;
    this.#roomPromise = undefined;
    room?.();
  }

  #end(code: number, reason: string): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#closeCode = code;
    this.#closeReason = reason;
    this.#releaseRoom();
    for (const reader of this.#readers.splice(0)) reader();
    if (this.#direct !== undefined) {
      // Every message before the close frame has been handled already,
      // unless a handler is still busy: then #await finishes the job.
      if (!this.#busy) {
        this.#reply();
        this.#finishDirect();
      }
      return;
    }
    if (!this.#replied && !this.#engine.closing) {
      this.#replyTimer = setTimeout(() => this.#reply(), CLOSE_REPLY_DELAY);
    }
  }

  /** Answers the peer's close frame once the application has read up to it. */
  #reply(): void {
    clearTimeout(this.#replyTimer);
    if (this.#replied) return;
    this.#replied = true;
    void this.#engine.close(this.#defaultCode(), "");
  }

  /**
   * Hands every message to `target.message`, in order, straight from the
   * read loop, until the peer's close frame (or the end of the connection);
   * then calls `target.ended`, and reports the session's end to
   * `target.finished`. Messages that queued up before are handed over
   * first. Internal: the server's handler objects. While it serves, a
   * connection holds no promise or closure of its own. (The target's type is
   * written out, not `MessageTarget`: this method is part of a public
   * class's declared shape.)
   */
  [kServe](target: {
    message(ws: WebSocketConn<T>, data: Message): void | Promise<void>;
    ended(ws: WebSocketConn<T>): void | Promise<void>;
    finished(ws: WebSocketConn<T>, ended: void | Promise<void>): void;
  }): void {
    if (this.#head < this.#inbox.length) {
      // #serveQueued goes direct (and reports the end) once the inbox is empty.
      this.#serveQueued(target).catch((error) => target.finished(this, Promise.reject(error)));
      return;
    }
    if (this.#ended || this.#finished) {
      this.#reply();
      target.finished(this, target.ended(this));
      return;
    }
    this.#direct = target;
    this.#serving = true;
  }

  /** [kServe] with messages waiting in the inbox: those first, then direct. */
  async #serveQueued(target: MessageTarget<T>): Promise<void> {
    while (this.#head < this.#inbox.length) {
      const msg = await this.#next();
      if (msg !== null) await target.message(this, msg.data);
    }
    this[kServe](target);
  }

  /** The direct handler saw its last message: on to `ended`, once. */
  #finishDirect(): void {
    if (!this.#serving) return;
    this.#serving = false;
    const target = this.#direct!;
    target.finished(this, target.ended(this));
  }

  /**
   * Waits for a direct handler's promise, then hands it what queued up
   * meanwhile, in order, before going direct again.
   */
  async #await(pending: Promise<void>): Promise<void> {
    this.#busy = true;
    try {
      await pending;
      for (let msg; this.#direct !== undefined && (msg = this.#shift()) !== undefined;) {
        const next = this.#direct.message(this, msg.data);
        if (next !== undefined) await next;
      }
    } catch {
      // The server's wrapper reports handler errors; nothing to add here.
    } finally {
      this.#busy = false;
    }
    if (this.#ended) {
      this.#reply();
      this.#finishDirect();
    }
  }

  /** Takes the next message out of the inbox, if any. */
  #shift(): Inbound | undefined {
    if (this.#head >= this.#inbox.length) return undefined;
    const msg = this.#inbox[this.#head]!;
    this.#inbox[this.#head++] = undefined;
    if (this.#head === this.#inbox.length) {
      this.#inbox = NO_INBOX;
      this.#head = 0;
    }
    this.#inboxBytes -= msg.data.length;
    if (
      this.#room !== undefined &&
      this.#inbox.length - this.#head <= INBOX_MESSAGES / 2 &&
      this.#inboxBytes < INBOX_BYTES / 2
    ) {
      this.#releaseRoom();
    }
    return msg;
  }

  async #next(): Promise<Inbound | null> {
    for (;;) {
      const msg = this.#shift();
      if (msg !== undefined) return msg;
      if (this.#ended) {
        this.#reply();
        return null;
      }
      if (this.#readers === NO_READERS) this.#readers = [];
      await new Promise<void>((resolve) => this.#readers.push(resolve));
    }
  }
}

/**
 * What an engine calls: one small object per connection with prototype
 * methods, rather than a closure per callback (a server holds one per open
 * connection).
 */
class ConnSink implements EngineSink {
  #ws: WebSocketConn<unknown>;
  constructor(ws: WebSocketConn<unknown>) {
    this.#ws = ws;
  }
  message(data: Message, bytes: Uint8Array | undefined): void | Promise<void> {
    return deliver(this.#ws, data, bytes);
  }
  end(code: number, reason: string): void {
    endOf(this.#ws, code, reason);
  }
  drain(): void {
    this.#ws[kOnDrain]?.(this.#ws);
  }
  released(): void {
    releasedOf(this.#ws);
  }
}
