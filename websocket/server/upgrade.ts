/**
 * The `Deno.upgradeWebSocket` adapter: inside your own `Deno.serve` handler,
 * {@linkcode upgrade} turns a request into the same {@linkcode WebSocketConn}
 * that `serve()` hands out, so Conn handlers, topics and the rest work there
 * too — within what Deno's engine allows.
 *
 * @module
 */
import type { Addr } from "../../conn.ts";
import { CloseCode, DEFAULT_MAX_BUFFERED, DEFAULT_MAX_PAYLOAD } from "../codec/constants.ts";
import {
  type EngineSink,
  kStart,
  type Message,
  WebSocketConn,
  type WebSocketEngine,
} from "../connection/conn.ts";
import type { SlowConsumerPolicy } from "../connection/_engine.ts";
import { HandshakeError, WebSocketError } from "../errors.ts";
import type { BroadcastHub, SendStatus } from "../fanout/hub.ts";
import type { PreparedMessage } from "../fanout/prepared_message.ts";
import { splitList } from "../../internal/http_head.ts";

const encoder = new TextEncoder();

/** Options for {@linkcode upgrade}. Times are milliseconds. */
export interface UpgradeOptions<T = unknown> {
  /** The subprotocol to agree on; it must be one the client offered. */
  protocol?: string;
  /** `Deno.serve`'s handler info: gives the connection its `remoteAddr`. */
  info?: Deno.ServeHandlerInfo;
  /** This end's address, if you want it right (default: from the request's Host). */
  localAddr?: Addr;
  /** Per-connection data, as `ws.data`. */
  data?: T;
  /** The hub for `subscribe`/`publish` (share it between connections). */
  hub?: BroadcastHub;
  /**
   * Largest message accepted: a bigger one closes the connection with 1009.
   * Deno's engine reads the whole message (up to its own 64 MiB) before
   * netkit sees its size. @default {1048576}
   */
  maxPayload?: number;
  /**
   * Backlog allowed each way: unsent bytes (then `policy` applies), and
   * received bytes not yet consumed (Deno's engine cannot pause reading, so
   * a consumer that far behind gets close 1008). @default {1048576}
   */
  maxBuffered?: number;
  /** `"close"` (1008) or `"drop"` for a connection over `maxBuffered`. @default {"close"} */
  policy?: "close" | "drop";
  /** `send()` waits while the backlog is over this. @default {65536} */
  highWaterMark?: number;
  /**
   * Milliseconds without input before Deno's engine pings, then closes if
   * still silent (Deno counts whole seconds: rounded, at least 1 s).
   * Default: Deno's (120 s).
   */
  idleTimeout?: number;
}

/**
 * Upgrades a request inside your own `Deno.serve` handler with
 * `Deno.upgradeWebSocket`, and wraps the socket as a
 * {@linkcode WebSocketConn}: messages, `readable`/`writable`, `send`,
 * `close`, topics (with `hub`).
 *
 * Deno's engine sets limits netkit's own (`serve`) does not have: no
 * `ping()` (it rejects with `ERR_WS_UNSUPPORTED`; Deno pings by itself,
 * see `idleTimeout`), no backpressure into the socket (a consumer over
 * `maxBuffered` behind is closed with 1008), `maxPayload` checked only after
 * Deno read the message, and one runtime call per send.
 *
 * @returns `response`: return it from your `Deno.serve` handler; `conn`: the
 *   connection, open once the response is sent.
 * @throws {HandshakeError} The request is not a WebSocket upgrade (`status` 426).
 *
 * @example A Conn handler inside `Deno.serve`
 * ```ts
 * import { echo } from "@netkit/netkit";
 * import { connect, upgrade } from "@netkit/netkit/websocket";
 * import assert from "node:assert/strict";
 *
 * await using server = Deno.serve({ port: 0, onListen() {} }, (request, info) => {
 *   const { response, conn } = upgrade(request, { info });
 *   void echo(conn);
 *   return response;
 * });
 * await using ws = await connect(`ws://127.0.0.1:${server.addr.port}/`);
 * await ws.send("hi");
 * assert.deepEqual(await ws.receive(), new TextEncoder().encode("hi")); // a Conn sends bytes
 * ```
 */
export function upgrade<T = unknown>(
  request: Request,
  options: UpgradeOptions<T> = {},
): { response: Response; conn: WebSocketConn<T> } {
  if (!splitList(request.headers.get("upgrade")).some((t) => t.toLowerCase() === "websocket")) {
    throw new HandshakeError("ERR_WS_HANDSHAKE", "not a WebSocket upgrade request", 426);
  }
  const offered = splitList(request.headers.get("sec-websocket-protocol"));
  if (options.protocol !== undefined && !offered.includes(options.protocol)) {
    throw new TypeError(`subprotocol "${options.protocol}" was not offered by the client`);
  }
  // The handler info is only readable before the upgrade takes the request.
  const remote = options.info?.remoteAddr;
  const remoteAddr: Addr = remote && remote.transport === "tcp"
    ? { transport: "tcp", hostname: remote.hostname, port: remote.port }
    : { transport: "tcp", hostname: "", port: 0 };
  const url = new URL(request.url);
  const { socket, response } = Deno.upgradeWebSocket(request, {
    protocol: options.protocol,
    idleTimeout: options.idleTimeout === undefined
      ? undefined
      : Math.max(1, Math.round(options.idleTimeout / 1000)),
  });
  const localAddr: Addr = options.localAddr ?? {
    transport: "tcp",
    hostname: url.hostname.replace(/^\[|\]$/g, ""),
    port: Number(url.port || (url.protocol === "https:" ? 443 : 80)),
  };
  const engine = new DenoEngine(socket, localAddr, remoteAddr, options);
  const conn = new WebSocketConn<T>({
    engine,
    protocol: options.protocol ?? "",
    url: url.pathname + url.search,
    data: options.data,
    hub: options.hub,
    highWaterMark: options.highWaterMark,
  });
  conn[kStart]();
  return { response, conn };
}

/** A WebSocketEngine over Deno's WebSocket. */
class DenoEngine implements WebSocketEngine {
  readonly localAddr: Addr;
  readonly remoteAddr: Addr;
  readonly closed: Promise<void>;

  #socket: WebSocket;
  #maxPayload: number;
  #maxBuffered: number;
  #policy: SlowConsumerPolicy;
  #sink: EngineSink | undefined;
  #early: (string | Uint8Array)[] = [];
  #earlyBytes = 0;
  #closeCalled = false;
  #done = false;
  #activity = 0;
  #dropping = false;
  #dropped = 0;
  #unread = 0;
  #waiters: { bytes: number; resolve: () => void }[] = [];
  #poll: ReturnType<typeof setTimeout> | undefined;
  #resolveClosed!: () => void;

  constructor(
    socket: WebSocket,
    localAddr: Addr,
    remoteAddr: Addr,
    options: UpgradeOptions<unknown>,
  ) {
    this.#socket = socket;
    this.localAddr = localAddr;
    this.remoteAddr = remoteAddr;
    this.#maxPayload = options.maxPayload ?? DEFAULT_MAX_PAYLOAD;
    this.#maxBuffered = options.maxBuffered ?? DEFAULT_MAX_BUFFERED;
    this.#policy = options.policy ?? "close";
    this.closed = new Promise((resolve) => (this.#resolveClosed = resolve));
    socket.binaryType = "arraybuffer";
    socket.onopen = () => {
      for (const data of this.#early.splice(0)) socket.send(data);
      this.#earlyBytes = 0;
    };
    socket.onmessage = (event) => this.#onMessage(event.data);
    socket.onclose = (event) => this.#onClose(event.code, event.reason);
    socket.onerror = () => {};
  }

  get bufferedAmount(): number {
    return this.#socket.bufferedAmount + this.#earlyBytes;
  }

  get dropped(): number {
    return this.#dropped;
  }

  get activity(): number {
    return this.#activity;
  }

  get bytesRead(): number {
    return 0; // Deno's engine does not say.
  }

  get bytesWritten(): number {
    return 0;
  }

  get truncated(): boolean {
    return false; // Deno's engine does not say.
  }

  get closing(): boolean {
    return this.#closeCalled || this.#done || this.#socket.readyState >= WebSocket.CLOSING;
  }

  attach(sink: EngineSink): void {
    this.#sink = sink;
    if (this.#done) sink.released();
  }

  start(): void {
    // Deno's socket reads by itself; messages go to the sink from attach on.
  }

  sendData(data: Message, binary: boolean): SendStatus {
    if (this.closing) return "closed";
    const payload = binary && typeof data === "string"
      ? encoder.encode(data)
      : !binary && typeof data !== "string"
      ? new TextDecoder().decode(data)
      : data;
    return this.#send(payload);
  }

  sendPrepared(message: PreparedMessage): SendStatus {
    if (this.closing) return "closed";
    return this.#send(message.binary ? message.payload : String(message.data));
  }

  #send(data: string | Uint8Array): SendStatus {
    const size = typeof data === "string" ? data.length : data.length;
    if (this.#dropping) {
      if (this.bufferedAmount > 0) {
        this.#dropped++;
        return "dropped";
      }
      this.#dropping = false;
    }
    const queued = this.bufferedAmount;
    if (queued > 0 && queued + size > this.#maxBuffered) {
      if (this.#policy === "drop") {
        this.#dropping = true;
        this.#dropped++;
        return "dropped";
      }
      void this.close(CloseCode.PolicyViolation, "slow consumer: send backlog over maxBuffered");
      return "closed";
    }
    this.#activity++;
    if (this.#socket.readyState === WebSocket.CONNECTING) {
      this.#early.push(data);
      this.#earlyBytes += size;
    } else {
      this.#socket.send(data);
    }
    return "sent";
  }

  waitBelow(bytes: number): Promise<void> {
    if (this.bufferedAmount <= bytes || this.#done) return Promise.resolve();
    return new Promise((resolve) => {
      this.#waiters.push({ bytes, resolve });
      this.#schedulePoll();
    });
  }

  // Deno's WebSocket has no drain event: poll bufferedAmount while someone waits.
  #schedulePoll(): void {
    if (this.#poll !== undefined) return;
    this.#poll = setTimeout(() => {
      this.#poll = undefined;
      const amount = this.bufferedAmount;
      this.#waiters = this.#waiters.filter((w) => {
        if (this.#done || amount <= w.bytes) {
          w.resolve();
          return false;
        }
        return true;
      });
      if (this.#waiters.length > 0) this.#schedulePoll();
      else if (amount === 0) this.#sink?.drain();
    }, 5);
  }

  ping(): Promise<number> {
    return Promise.reject(
      new WebSocketError(
        "ERR_WS_UNSUPPORTED",
        "Deno.upgradeWebSocket has no ping API: use netkit's serve() for ping(), or Deno's idleTimeout",
      ),
    );
  }

  close(code: number | undefined, reason: string): Promise<void> {
    if (this.#closeCalled || this.#done) return this.closed;
    this.#closeCalled = true;
    try {
      this.#socket.close(code, reason);
    } catch {
      // Already closing.
    }
    return this.closed;
  }

  destroy(): void {
    if (this.#done) return;
    this.#sink?.end(CloseCode.Abnormal, "");
    void this.close(undefined, "");
  }

  #onMessage(data: string | ArrayBuffer): void {
    this.#activity++;
    if (this.#closeCalled) return;
    const size = typeof data === "string" ? data.length : data.byteLength;
    if (size > this.#maxPayload) {
      this.#sink?.end(
        CloseCode.MessageTooBig,
        `a message over maxPayload (${this.#maxPayload} bytes)`,
      );
      void this.close(CloseCode.MessageTooBig, "message too big");
      return;
    }
    const message = typeof data === "string" ? data : new Uint8Array(data);
    const pending = this.#sink?.message(message, undefined);
    if (pending !== undefined) {
      // The consumer is behind and Deno cannot pause: count what piles up.
      this.#unread += size;
      if (this.#unread > this.#maxBuffered) {
        this.#sink?.end(
          CloseCode.PolicyViolation,
          "consumer too slow: unread messages over maxBuffered",
        );
        void this.close(CloseCode.PolicyViolation, "consumer too slow");
      }
      pending.then(() => (this.#unread = 0));
    }
  }

  #onClose(code: number, reason: string): void {
    this.#done = true;
    clearTimeout(this.#poll);
    for (const w of this.#waiters.splice(0)) w.resolve();
    this.#sink?.end(code === 0 ? CloseCode.Abnormal : code, reason);
    this.#resolveClosed();
    this.#sink?.released();
  }
}
