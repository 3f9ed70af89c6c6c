/**
 * The WebSocket server: `ws://` over TCP, `wss://` over TLS, with netkit's
 * own RFC 6455 engine.
 *
 * @module
 */
import { type Addr, type ConnHandler, formatAddr, type NetAddr, type Server } from "../../conn.ts";
import { NetkitError } from "../../errors.ts";
import {
  guarded,
  type ServerEvent,
  type ServerOptions,
  type ServerStats,
  SESSION_PENDING,
  StreamServer,
} from "../../internal/stream_server.ts";
import { SocketConn } from "../../internal/socket_conn.ts";
import { listenSocket } from "../../tcp/listen.ts";
import {
  type Accepting,
  type Acceptor,
  openAcceptor,
  type TlsListenOptions,
} from "../../tls/acceptor.ts";
import type { CertificateReload, ServedCertificate } from "../../tls/mod.ts";
import { CidrSet, parseIp } from "../../internal/cidr.ts";
import {
  CloseCode,
  DEFAULT_COMPRESSION_THRESHOLD,
  DEFAULT_HANDSHAKE_TIMEOUT,
  DEFAULT_MAX_BUFFERED,
  DEFAULT_MAX_HEAD_SIZE,
} from "../codec/constants.ts";
import {
  DeflateContext,
  deflateContextOptions,
  negotiateDeflate,
  parseExtensions,
} from "../codec/permessage_deflate.ts";
import {
  kDiscard,
  kOnDrain,
  kServe,
  kStart,
  kWrap,
  type Message,
  type MessageTarget,
  WebSocketConn,
} from "../connection/conn.ts";
import {
  type ConnectionOptions,
  type EngineDeflate,
  FramedEngine,
  type Hooks,
} from "../connection/_engine.ts";

const NOOP = (): void => {};
import { HandshakeError } from "../errors.ts";
import {
  answer,
  AnsweredRequest,
  isRefusal,
  readRequestHead,
  reject,
  requestUrl,
  tooManyRequests,
  toPlainResponse,
  withHeaders,
} from "./_http_front.ts";
import { type PlainResponse, type RequestHead, splitList } from "../../internal/http_head.ts";
import {
  formatAcceptNow,
  isUpgradeRequest,
  type UpgradeInfo,
  type UpgradeRequest,
  validateUpgrade,
} from "../codec/handshake.ts";
import {
  ackBegin,
  ackEnd,
  ackForget,
  attachResume,
  BroadcastHub,
  type PublishResult,
} from "../fanout/hub.ts";
import {
  decodeClientEnvelope,
  encodeServerEnvelope,
  NETKIT_V1,
  parseResumeUrl,
} from "../codec/netkit_v1.ts";
import { PreparedMessage } from "../fanout/prepared_message.ts";
import type { BroadcastBus } from "../fanout/bus.ts";
import { hostPort } from "../../internal/host.ts";

/**
 * What the `upgrade` hook decides: accept (`undefined`, `true`, or
 * `{ data, protocol, headers }`), refuse with 403 (`false`), or refuse with
 * a response of its own (`{ status: 401, body: "token?" }` or a `Response`).
 */
export type UpgradeDecision<T> =
  | void
  | boolean
  | PlainResponse
  | Response
  | {
    /** Per-connection data, as `ws.data`. */
    data?: T;
    /** The subprotocol to agree on: one the client offered. */
    protocol?: string;
    /** Extra headers for the 101 response. */
    headers?: HeadersInit;
  };

/** The `upgrade` hook: sees the request before the handshake completes. */
export type UpgradeHook<T> = (
  request: UpgradeRequest,
  info: UpgradeInfo,
) => UpgradeDecision<T> | Promise<UpgradeDecision<T>>;

/**
 * A handler object, as Bun's `websocket` handlers: callbacks per event.
 * Messages are handled one at a time, in order, straight from the read
 * loop: a `message` that returns a promise holds the next ones back until it
 * settles (they wait in a bounded inbox; when that is full, reading from the
 * client pauses). Control frames are still read meanwhile, so a handler may
 * await `ws.ping()`.
 */
export interface WebSocketHandler<T = unknown> {
  /** Decides on each upgrade request; see {@linkcode UpgradeDecision}. Default: accept. */
  upgrade?: UpgradeHook<T>;
  /** The connection is open (topics subscribed here get every later publish). */
  open?(ws: WebSocketConn<T>): void | Promise<void>;
  /** A message arrived: a `string` for text (`isBinary` false), bytes for binary. */
  message?(ws: WebSocketConn<T>, data: Message, isBinary: boolean): void | Promise<void>;
  /** The connection closed, with the code and reason of {@linkcode WebSocketConn.closeCode}. */
  close?(ws: WebSocketConn<T>, code: number, reason: string): void | Promise<void>;
  /** A send backlog over the high-water mark has emptied. */
  drain?(ws: WebSocketConn<T>): void;
}

/** What a WebSocket server reports as it runs; programs log these to stderr. */
export type WebSocketServerEvent =
  | ServerEvent
  | {
    /** A request that was not a valid upgrade (or never finished), and what was answered (0: nothing). */
    type: "rejected";
    remoteAddr: Addr;
    status: number;
    error: HandshakeError;
  }
  | {
    /** A plain HTTP request answered by `onRequest`, or an upgrade the `upgrade` hook refused. */
    type: "request";
    remoteAddr: Addr;
    method: string;
    target: string;
    status: number;
  }
  | {
    /** A pong answered a ping (`ws.ping()` or the idle timeout's) after `roundTrip` ms. */
    type: "ping";
    remoteAddr: Addr;
    roundTrip: number;
  }
  | {
    /** A slow consumer over `maxBuffered`: closed, skipped from now on, or caught up after `dropped` messages. */
    type: "slow";
    remoteAddr: Addr;
    action: "closed" | "dropping" | "drained";
    dropped: number;
  };

/**
 * Options for {@linkcode serve}: where to listen and, for `wss://`, the TLS
 * options of `tls.serve` (`cert`/`key` or `certFile`/`keyFile`,
 * `clientCaCerts`, `alpnProtocols`, `engine`); the server options of
 * `tcp.serve` (`maxConnections`, `gracePeriod`, `signal`); each
 * connection's limits; and what is WebSocket's own. Every limit has a
 * default; times are milliseconds.
 */
export interface ServeOptions<T = unknown>
  extends
    ConnectionOptions,
    Omit<TlsListenOptions, "handshakeTimeout">,
    Omit<ServerOptions, "idleTimeout" | "onEvent"> {
  /** Only this path upgrades (and reaches `onRequest`); others get 404. Default: every path. */
  path?: string;
  /**
   * Proxies (CIDRs) whose `X-Forwarded-For` is believed: when the direct
   * peer is in one, the client's address is the right-most entry not in
   * them — it becomes `ws.remoteAddr`, and `maxConnectionsPerIp` /
   * `acceptRate` apply to it (over them: 429). Default: none.
   */
  trustProxy?: string[];
  /**
   * The subprotocols the server speaks, preferred first; the first the client
   * also offers is agreed on unless `upgrade` picks one. @default {[]}
   */
  protocols?: string[];
  /**
   * Milliseconds from accept to a finished upgrade, the TLS handshake
   * included; a client that trickles its request slower is closed.
   * @default {10000}
   */
  handshakeTimeout?: number;
  /** The largest request head (request line and headers); over it: 431. @default {16384} */
  maxHeadSize?: number;
  /**
   * Called for connection events and errors. By default errors are logged
   * with `console.error` and the rest ignored.
   */
  onEvent?: (event: WebSocketServerEvent) => void;
  /**
   * Answers requests on the path that are not upgrades (a page, a health
   * check). Without it they get `426 Upgrade Required`.
   */
  onRequest?: (
    request: UpgradeRequest,
    info: UpgradeInfo,
  ) => PlainResponse | Response | Promise<PlainResponse | Response>;
  /** The `upgrade` hook for a plain `Conn` handler (a handler object has its own). */
  upgrade?: UpgradeHook<T>;
  /** The hub for topics; share one between servers. Default: a new one. */
  hub?: BroadcastHub;
  /**
   * For the server's own hub (when `hub` is not given): messages kept per
   * topic, so that clients speaking the `netkit.v1` subprotocol resume
   * after a reconnect with nothing lost or are told they cannot (see
   * `BroadcastHub` and docs/netkit-v1.md). With history the server agrees
   * on `netkit.v1` for a handler object when the client offers it (and
   * neither `protocols` nor the `upgrade` hook picked another); other
   * clients see no difference. 0: no history, no `netkit.v1`.
   * @default {0}
   */
  historySize?: number;
  /**
   * With `historySize`: milliseconds a message is kept; 0 = no age limit.
   * @default {300000}
   */
  historyTtl?: number;
  /** With `historySize`: payload bytes kept per topic. @default {16777216} */
  maxHistoryBytes?: number;
  /**
   * The bus for the server's own hub (when `hub` is not given): publishes
   * reach the subscribers of every server on the bus — in this process
   * (`InProcessBus`) or in every process sharing a Redis (`RedisBus`). The
   * server leaves the bus when it stops; closing the bus is yours.
   */
  bus?: BroadcastBus;
  /**
   * permessage-deflate (RFC 7692), which every browser offers:
   *
   * - `"off"`: declined; the handshake goes on without it (as `ws` and
   *   uWebSockets by default).
   * - `"shared"`: accepted with no context takeover either way
   *   (`server_no_context_takeover; client_no_context_takeover`): one
   *   compressor per window size and one decompressor serve the whole
   *   server, and a published message is compressed **once** for every
   *   subscriber that negotiated it (the others get the plain frame, also
   *   made once). A few hundred KiB per server, not per connection; each
   *   message is compressed on its own, so the ratio is lower than with a
   *   context kept between messages.
   * - `"dedicated"`: accepted as the client offers it: each connection gets
   *   its own compressor and decompressor, context kept between messages
   *   (the best ratio on repetitive feeds), at about 350 KiB per connection
   *   with the default 32 KiB window (measured; freed when it closes) and
   *   one compression per subscriber for every broadcast.
   *
   * An offer that cannot be honoured, or a malformed header, is declined:
   * never a failed upgrade. Received compressed messages count against
   * `maxPayload` inflated; inflation stops there (close 1009).
   * Not available through `upgrade()` (`Deno.upgradeWebSocket` has none).
   * @default {"off"}
   */
  compression?: "off" | "shared" | "dedicated";
  /**
   * With compression agreed: messages shorter than this many bytes go
   * uncompressed (the bytes saved would not pay for the compressor call).
   * @default {1024}
   */
  compressionThreshold?: number;
}

const COMPRESSION_MODES = ["off", "shared", "dedicated"];
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * permessage-deflate for one server: the negotiation of each upgrade and,
 * in shared mode, the contexts every connection uses.
 */
class ServerCompression {
  readonly mode: "shared" | "dedicated";
  readonly threshold: number;
  // Shared mode: one compressor per server_max_window_bits agreed (almost
  // always 15 alone), one decompressor for every client.
  #send = new Map<number, DeflateContext>();
  #receive: DeflateContext | undefined;

  constructor(mode: "shared" | "dedicated", threshold: number) {
    this.mode = mode;
    this.threshold = threshold;
  }

  /**
   * The answer to a request's `Sec-WebSocket-Extensions` and the contexts
   * of its connection; `null` when no offer can be accepted.
   *
   * @throws {HandshakeError} `ERR_WS_BAD_EXTENSIONS_HEADER` for bad syntax.
   */
  negotiate(header: string | null): { response: string; deflate: EngineDeflate } | null {
    const offers = parseExtensions(header);
    if (this.mode === "shared") {
      const agreed = negotiateDeflate(offers, {
        serverNoContextTakeover: true,
        clientNoContextTakeover: true,
      });
      if (agreed === null) return null;
      const bits = agreed.params.serverMaxWindowBits;
      let send = this.#send.get(bits);
      if (send === undefined) {
        send = new DeflateContext({
          windowBits: bits,
          noContextTakeover: true,
          threshold: this.threshold,
        });
        this.#send.set(bits, send);
      }
      // The client resets its compressor after every message, so a window of
      // 15 inflates whatever window it compresses with.
      const receive = this.#receive ??= new DeflateContext({
        windowBits: 15,
        noContextTakeover: true,
      });
      return { response: agreed.response, deflate: { send, receive, shared: true, owned: [] } };
    }
    const agreed = negotiateDeflate(offers);
    if (agreed === null) return null;
    const contexts = deflateContextOptions(agreed.params, "server", { threshold: this.threshold });
    const send = new DeflateContext(contexts.send);
    const receive = new DeflateContext(contexts.receive);
    return {
      response: agreed.response,
      deflate: { send, receive, shared: false, owned: [send, receive] },
    };
  }

  /** Frees the shared contexts (once the last connection is gone). */
  close(): void {
    for (const ctx of this.#send.values()) ctx.close();
    this.#send.clear();
    this.#receive?.close();
    this.#receive = undefined;
  }
}

function checkCompression(options: ServeOptions<unknown>): void {
  const mode = options.compression ?? "off";
  if (!COMPRESSION_MODES.includes(mode)) {
    throw new TypeError(
      `compression must be "off", "shared" or "dedicated", got ${JSON.stringify(mode)}`,
    );
  }
  const threshold = options.compressionThreshold ?? DEFAULT_COMPRESSION_THRESHOLD;
  if (!(threshold >= 0)) {
    throw new RangeError(`compressionThreshold must be 0 or more, got ${threshold}`);
  }
}

/** A plain handler (any netkit `Conn` handler), or a {@linkcode WebSocketHandler} object. */
export type ServeHandler<T = unknown> = ConnHandler<WebSocketConn<T>> | WebSocketHandler<T>;

function defaultOnEvent(event: WebSocketServerEvent): void {
  if (event.type !== "error") return;
  const from = event.remoteAddr ? ` (${formatAddr(event.remoteAddr)})` : "";
  const message = event.error instanceof Error ? event.error.message : String(event.error);
  // deno-lint-ignore no-console
  console.error(`netkit: connection error${from}: ${message}`);
}

/**
 * A running WebSocket server: a netkit {@linkcode Server} plus topics.
 */
export class WebSocketServer<T = unknown> implements Server {
  /** The address listened on; `port` is the real one when 0 was asked for. */
  readonly addr: { hostname: string; port: number };
  /** Resolves once the server has stopped and its last connection is gone. */
  readonly finished: Promise<void>;
  /** The hub behind `subscribe`/`publish`. */
  readonly hub: BroadcastHub;
  /** Whether the server speaks `wss://`. */
  readonly secure: boolean;

  #stream: StreamServer<WebSocketConn<T>>;
  #options: ServeOptions<T>;
  #handler: ServeHandler<T>;
  #upgrade: UpgradeHook<T> | undefined;
  #emit: (event: WebSocketServerEvent) => void;
  #open = new Set<WebSocketConn<T>>();
  #handshaking = new Set<() => void>();
  #closing = false;
  #tlsHandshake: ((socket: Deno.Conn) => Accepting) | undefined;
  #compression: ServerCompression | undefined;
  #onAbort = () => void this.close();
  #trustProxy: CidrSet | undefined;
  #acceptor: Acceptor | undefined;

  /** Made by {@linkcode serve}. */
  constructor(
    listener: Deno.Listener,
    options: ServeOptions<T>,
    handler: ServeHandler<T>,
    tlsHandshake?: (socket: Deno.Conn) => Accepting,
    acceptor?: Acceptor,
  ) {
    this.#tlsHandshake = tlsHandshake;
    this.#acceptor = acceptor;
    this.#trustProxy = options.trustProxy?.length ? new CidrSet(options.trustProxy) : undefined;
    this.#options = options;
    this.#handler = handler;
    this.#upgrade = typeof handler === "function"
      ? options.upgrade
      : handler.upgrade ?? options.upgrade;
    this.#emit = guarded(options.onEvent ?? defaultOnEvent);
    const mode = options.compression ?? "off";
    if (mode !== "off") {
      this.#compression = new ServerCompression(
        mode,
        options.compressionThreshold ?? DEFAULT_COMPRESSION_THRESHOLD,
      );
    }
    const ownHub = options.hub === undefined;
    this.hub = options.hub ?? new BroadcastHub({
      bus: options.bus,
      historySize: options.historySize,
      historyTtl: options.historyTtl,
      maxHistoryBytes: options.maxHistoryBytes,
    });
    this.secure = tlsHandshake !== undefined;
    this.#stream = new StreamServer<WebSocketConn<T>>(
      listener,
      (socket) => this.#accept(socket),
      (ws) => this.#run(ws),
      {
        maxConnections: options.maxConnections,
        gracePeriod: options.gracePeriod,
        idleTimeout: 0,
        onEvent: (event) => this.#onStreamEvent(event),
        maxConnectionsPerIp: options.maxConnectionsPerIp,
        acceptRate: options.acceptRate,
        proxyProtocol: options.proxyProtocol,
      },
      {
        // Over a per-address limit, a plain ws:// client is told so in HTTP.
        refuse: tlsHandshake === undefined ? tooManyRequests : undefined,
        // Behind a trusted proxy the client is named in X-Forwarded-For: the
        // limits wait for the request head.
        deferAdmission: this.#trustProxy && ((host) => this.#trustProxy!.has(host)),
      },
    );
    this.addr = this.#stream.addr;
    this.finished = this.#stream.finished.then(() => {
      options.signal?.removeEventListener("abort", this.#onAbort);
      if (ownHub) this.hub.detach();
      this.#compression?.close();
    });
    if (options.signal?.aborted) void this.close();
    else options.signal?.addEventListener("abort", this.#onAbort, { once: true });
  }

  /** How many WebSocket connections are open. */
  get connections(): number {
    return this.#open.size;
  }

  /** `wss://`: the certificates being served (see `tls.serve`); empty for `ws://`. */
  get certificates(): ServedCertificate[] {
    return this.#acceptor?.certificates ?? [];
  }

  /**
   * `wss://`: re-reads the certificate files and swaps them in for new
   * handshakes, all or nothing (see `tls.serve`'s `reloadCertificates`).
   * @throws {TypeError} A `ws://` server has no certificates.
   */
  reloadCertificates(): Promise<CertificateReload> {
    if (this.#acceptor === undefined) {
      return Promise.reject(new TypeError("a ws:// server has no certificates to reload"));
    }
    return this.#acceptor.reloadCertificates();
  }

  /** Connection counters so far (as `tcp.serve`'s), plus open WebSocket connections. */
  stats(): ServerStats & { websockets: number } {
    return { ...this.#stream.stats(), websockets: this.#open.size };
  }

  /** The server's URL without a path: `ws://127.0.0.1:8080`. */
  get url(): string {
    return `${this.secure ? "wss" : "ws"}://${hostPort(this.addr.hostname, this.addr.port)}`;
  }

  /**
   * Sends `message` to every subscriber of `topic`, encoded once.
   *
   * @returns How many got it queued and how many were skipped (slow or closing).
   */
  publish(
    topic: string,
    message: Message | PreparedMessage,
    options?: { binary?: boolean },
  ): PublishResult {
    return this.hub.publish(topic, message, options);
  }

  /**
   * Stops accepting, sends every open connection close 1001, waits for them
   * for the grace period, then ends the rest. Idempotent: returns `finished`.
   */
  close(): Promise<void> {
    if (!this.#closing) {
      this.#closing = true;
      void this.#stream.close();
      // Upgrades still in progress are not work worth waiting for.
      for (const abort of this.#handshaking) abort();
      for (const ws of this.#open) {
        ws.close(CloseCode.GoingAway, "server shutting down").catch(() => {});
      }
    }
    return this.finished;
  }

  /** Shuts down, as {@linkcode WebSocketServer.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #onStreamEvent(event: ServerEvent): void {
    if (event.type === "error" && event.remoteAddr !== undefined) {
      const { error, remoteAddr } = event;
      if (error instanceof AnsweredRequest) {
        const { method, target, status } = error;
        this.#emit({ type: "request", remoteAddr, method, target, status });
        return;
      }
      if (error instanceof HandshakeError) {
        this.#emit({ type: "rejected", remoteAddr, status: error.status, error });
        return;
      }
    }
    this.#emit(event);
  }

  async #accept(socket: Deno.Conn): Promise<WebSocketConn<T>> {
    const timeout = this.#options.handshakeTimeout ?? DEFAULT_HANDSHAKE_TIMEOUT;
    let timedOut = false;
    let accepting: Accepting | undefined;
    const abort = () => {
      accepting?.destroy();
      try {
        socket.close();
      } catch {
        // Already closed.
      }
    };
    const timer = setTimeout(() => {
      timedOut = true;
      abort();
    }, timeout);
    this.#handshaking.add(abort);
    try {
      let conn: SocketConn;
      if (this.#tlsHandshake !== undefined) {
        accepting = this.#tlsHandshake(socket);
        conn = await accepting.done;
      } else {
        conn = new SocketConn(socket);
      }
      return await this.#handshake(conn);
    } catch (err) {
      if (
        this.#closing && !timedOut &&
        !(err instanceof AnsweredRequest || err instanceof HandshakeError)
      ) {
        throw new HandshakeError(
          "ERR_WS_HANDSHAKE",
          "the server shut down during the upgrade",
          0,
          "",
          {
            cause: err,
          },
        );
      }
      if (timedOut && !(err instanceof AnsweredRequest)) {
        throw new HandshakeError(
          "ERR_WS_HANDSHAKE_TIMEOUT",
          `no complete ${this.secure ? "TLS handshake and " : ""}WebSocket upgrade within ${
            timeout / 1000
          }s: closed`,
        );
      }
      throw err;
    } finally {
      clearTimeout(timer);
      this.#handshaking.delete(abort);
    }
  }

  async #handshake(conn: SocketConn): Promise<WebSocketConn<T>> {
    const options = this.#options;
    const head = await readRequestHead(conn, options.maxHeadSize ?? DEFAULT_MAX_HEAD_SIZE);
    const client = this.#forwardedClient(conn.remoteAddr, head.headers);
    let release = NOOP;
    if (client !== undefined) {
      const admitted = this.#stream.admitLater(client.hostname, client);
      if ("refused" in admitted) {
        const body = "too many connections from your address: retry later\n";
        await answer(conn, { status: 429, headers: { "retry-after": "1" }, body }, head.method);
        throw new AnsweredRequest(head.method, head.target, 429);
      }
      release = admitted.release;
    }
    try {
      return await this.#open101(conn, head, client, release);
    } catch (err) {
      release();
      throw err;
    }
  }

  /**
   * The client's address from `X-Forwarded-For`, when the direct peer is a
   * trusted proxy: the right-most entry that is not one of them.
   */
  #forwardedClient(peer: Addr, headers: Headers): NetAddr | undefined {
    const trusted = this.#trustProxy;
    if (trusted === undefined || !("hostname" in peer) || !trusted.has(peer.hostname)) {
      return undefined;
    }
    const hops = splitList(headers.get("x-forwarded-for"));
    let client = peer.hostname;
    for (let i = hops.length - 1; i >= 0; i--) {
      const hop = hops[i].replace(/^\[(.*)\](:\d+)?$/, "$1");
      if (!isIp(hop)) break; // garbage stops the walk: keep the last good hop
      client = hop;
      if (!trusted.has(hop)) break;
    }
    return { transport: "tcp", hostname: client, port: 0 };
  }

  async #open101(
    conn: SocketConn,
    head: RequestHead,
    client: NetAddr | undefined,
    release: () => void,
  ): Promise<WebSocketConn<T>> {
    const options = this.#options;
    const info: UpgradeInfo = {
      remoteAddr: client ?? conn.remoteAddr,
      localAddr: conn.localAddr,
      secure: this.secure,
    };
    const url = requestUrl(head, conn.localAddr, this.secure);
    if (url === undefined) {
      return await reject(
        conn,
        new HandshakeError("ERR_WS_HANDSHAKE", "malformed request target", 400),
      );
    }
    if (options.path !== undefined && url.pathname !== options.path) {
      return await reject(
        conn,
        new HandshakeError("ERR_WS_HANDSHAKE", `no WebSocket endpoint at ${url.pathname}`, 404),
        head.method,
      );
    }
    const request: UpgradeRequest = {
      method: head.method,
      url,
      target: head.target,
      path: url.pathname,
      headers: head.headers,
      protocols: [],
    };
    if (!isUpgradeRequest(head) && options.onRequest !== undefined) {
      const response = await toPlainResponse(await options.onRequest(request, info));
      await answer(conn, response, head.method);
      throw new AnsweredRequest(head.method, head.target, response.status);
    }
    if (!isUpgradeRequest(head)) {
      return await reject(
        conn,
        new HandshakeError(
          "ERR_WS_HANDSHAKE",
          "this is a WebSocket endpoint: connect with a WebSocket client",
          426,
        ),
        head.method,
      );
    }
    let valid;
    try {
      valid = validateUpgrade(head);
    } catch (err) {
      return await reject(conn, err as HandshakeError, head.method);
    }
    request.protocols = valid.protocols;
    if (this.#closing) {
      return await reject(
        conn,
        new HandshakeError("ERR_WS_HANDSHAKE", "the server is shutting down", 503),
      );
    }
    let decision: UpgradeDecision<T> = undefined;
    if (this.#upgrade !== undefined) {
      try {
        decision = await this.#upgrade(request, info);
      } catch (err) {
        await answer(conn, { status: 500, body: "internal error\n" }, head.method);
        throw err;
      }
    }
    if (decision === false || isRefusal(decision)) {
      const response = decision === false
        ? { status: 403, body: "forbidden\n" }
        : await toPlainResponse(decision);
      await answer(conn, response, head.method);
      throw new AnsweredRequest(head.method, head.target, response.status);
    }
    const accepted = typeof decision === "object" && decision !== null ? decision : {};
    // netkit.v1 needs a hub with history and a handler object (it wraps and
    // unwraps messages: a plain Conn handler would see the envelopes).
    const v1 = this.hub.keepsHistory && typeof this.#handler !== "function" &&
      valid.protocols.includes(NETKIT_V1);
    const protocol = accepted.protocol ??
      valid.protocols.find((p) => options.protocols?.includes(p)) ?? (v1 ? NETKIT_V1 : "");
    if (protocol !== "" && !valid.protocols.includes(protocol)) {
      await answer(conn, { status: 500, body: "internal error\n" }, head.method);
      throw new NetkitError(
        "ERR_WS_BAD_PROTOCOL",
        `the upgrade hook chose subprotocol "${protocol}", which the client did not offer`,
      );
    }

    if (this.#closing) {
      return await reject(
        conn,
        new HandshakeError("ERR_WS_HANDSHAKE", "the server is shutting down", 503),
      );
    }
    let negotiated: { response: string; deflate: EngineDeflate } | null = null;
    if (this.#compression !== undefined) {
      try {
        negotiated = this.#compression.negotiate(head.headers.get("sec-websocket-extensions"));
      } catch (err) {
        // A malformed offer costs the compression, not the connection.
        this.#emit({
          type: "error",
          remoteAddr: client ?? conn.remoteAddr,
          error: new HandshakeError(
            "ERR_WS_BAD_EXTENSIONS_HEADER",
            `${(err as Error).message}; upgraded without compression`,
            0,
            "",
            { cause: err },
          ),
        });
      }
    }
    let response = formatAcceptNow(valid.key, protocol, negotiated?.response);
    if (accepted.headers !== undefined) {
      response = withHeaders(response, new Headers(accepted.headers));
    }
    const engine = new FramedEngine(
      conn,
      true,
      this.#engineOptions ??= this.#makeEngineOptions(),
      this.#hooks,
      negotiated?.deflate,
    );
    engine.clientAddr = client;
    engine.queueRaw(response);
    const ws = new WebSocketConn<T>({
      engine,
      protocol,
      extensions: negotiated?.response,
      url: head.target,
      data: accepted.data,
      hub: this.hub,
      highWaterMark: options.highWaterMark,
      remoteAddr: client,
      onReleased: this.#onReleased,
    });
    if (protocol === NETKIT_V1 && v1) this.#speakV1(ws, engine, url);
    this.#open.add(ws);
    if (release !== NOOP) this.#releases.set(ws, release);
    return ws;
  }

  /**
   * A `netkit.v1` connection: the hub sends it envelopes and resumes it from
   * the positions in its URL; what the application sends it directly goes
   * in an envelope too (its messages are unwrapped in #run).
   */
  #speakV1(ws: WebSocketConn<T>, engine: FramedEngine, url: URL): void {
    const maxBuffered = this.#options.maxBuffered ?? DEFAULT_MAX_BUFFERED;
    ws[kWrap] = (data, binary) => {
      if (binary) {
        return encodeServerEnvelope(typeof data === "string" ? encoder.encode(data) : data);
      }
      return encodeServerEnvelope(typeof data === "string" ? data : decoder.decode(data));
    };
    attachResume(this.hub, ws, {
      send: (message) => ws.sendPrepared(message),
      get bufferedAmount() {
        return ws.bufferedAmount;
      },
      waitBelow: (bytes) => engine.waitBelow(bytes),
      window: Math.max(1, Math.min(256 * 1024, Math.floor(maxBuffered / 2))),
      fail: (reason) => void ws.close(CloseCode.PolicyViolation, reason).catch(() => {}),
      since: parseResumeUrl(url),
    });
  }

  // Shared by every connection's engine (nothing in it is per connection).
  #engineOptions: ConnectionOptions | undefined;
  #hooks: Hooks = {
    onSlow: (engine, action, dropped) =>
      this.#emit({ type: "slow", remoteAddr: engine.reportedAddr, action, dropped }),
    onIdle: (engine) => this.#emit({ type: "idle", remoteAddr: engine.reportedAddr }),
    onRoundTrip: (engine, roundTrip) =>
      this.#emit({ type: "ping", remoteAddr: engine.reportedAddr, roundTrip }),
  };
  // Per-address admission releases made after the upgrade (trusted proxies).
  #releases = new Map<WebSocketConn<T>, () => void>();
  #onReleased = (ws: WebSocketConn<T>): void => {
    this.#open.delete(ws);
    const release = this.#releases.get(ws);
    if (release !== undefined) {
      this.#releases.delete(ws);
      release();
    }
  };

  #makeEngineOptions(): ConnectionOptions {
    const o = this.#options;
    return {
      maxPayload: o.maxPayload,
      maxFragments: o.maxFragments,
      maxBuffered: o.maxBuffered,
      policy: o.policy,
      idleTimeout: o.idleTimeout,
      closeTimeout: o.closeTimeout,
      highWaterMark: o.highWaterMark,
    };
  }

  /**
   * A connection's session. With a handler object no async function, promise
   * or closure waits per connection: the messages go from the read loop to
   * {@linkcode #target}, a single object for the whole server, and the end
   * of the session is reported by it (`finished`) to the stream server.
   */
  #run(ws: WebSocketConn<T>): void | Promise<void> | typeof SESSION_PENDING {
    const handler = this.#handler;
    if (typeof handler === "function") {
      try {
        return handler(ws);
      } finally {
        ws[kStart]();
      }
    }
    if (handler.drain) ws[kOnDrain] = this.#onDrain;
    let opened: void | Promise<void>;
    try {
      opened = handler.open?.(ws);
    } catch (error) {
      ws[kStart]();
      return this.#openFailed(ws, error);
    }
    ws[kStart]();
    if (opened !== undefined && typeof (opened as PromiseLike<void>).then === "function") {
      Promise.resolve(opened).then(
        () => ws[kServe](this.#target),
        (error) => this.#target.finished(ws, this.#openFailed(ws, error)),
      );
      return SESSION_PENDING;
    }
    ws[kServe](this.#target);
    return SESSION_PENDING;
  }

  /** `open` threw or rejected: reported, closed with 1011, then the `close` callback. */
  async #openFailed(ws: WebSocketConn<T>, error: unknown): Promise<void> {
    this.#emit({ type: "error", remoteAddr: ws.remoteAddr, error });
    ws[kDiscard]();
    await ws.close(CloseCode.InternalError, "internal error");
    await this.#target.ended(ws);
  }

  #onDrain = (conn: WebSocketConn<T>): void => {
    const handler = this.#handler as WebSocketHandler<T>;
    try {
      handler.drain!(conn);
    } catch (error) {
      // As for a message handler that throws: report it, close with 1011.
      this.#emit({ type: "error", remoteAddr: conn.remoteAddr, error });
      conn[kDiscard]();
      conn.close(CloseCode.InternalError, "internal error").catch(() => {});
    }
  };

  // Connections whose message handler failed: what follows is dropped.
  #failed = new WeakSet<WebSocketConn<T>>();

  /** Where every served connection's messages go (one object per server). */
  #target: MessageTarget<T> = {
    message: (ws, data) => this.#onMessage(ws, data),
    ended: async (ws) => {
      await ws.close();
      const handler = this.#handler as WebSocketHandler<T>;
      await handler.close?.(ws, ws.closeCode ?? CloseCode.Abnormal, ws.closeReason);
    },
    finished: (ws, ended) => {
      if (ended === undefined) return this.#stream.endSession(ws);
      ended.then(
        () => this.#stream.endSession(ws),
        (error) => this.#stream.endSession(ws, error, true),
      );
    },
  };

  /**
   * A message handler that throws or rejects costs its own connection:
   * report it, drop what follows, close with 1011.
   */
  #fail(ws: WebSocketConn<T>, error: unknown): void {
    if (this.#failed.has(ws)) return;
    this.#failed.add(ws);
    this.#emit({ type: "error", remoteAddr: ws.remoteAddr, error });
    ws[kDiscard]();
    ws.close(CloseCode.InternalError, "internal error").catch(() => {});
  }

  #handle(ws: WebSocketConn<T>, data: Message): void | Promise<void> {
    const handler = this.#handler as WebSocketHandler<T>;
    try {
      const pending = handler.message?.call(handler, ws, data, typeof data !== "string");
      if (pending === undefined) return;
      return Promise.resolve(pending).then(undefined, (error) => this.#fail(ws, error));
    } catch (error) {
      return this.#fail(ws, error);
    }
  }

  #onMessage(ws: WebSocketConn<T>, data: Message): void | Promise<void> {
    if (this.#failed.has(ws)) return;
    if (ws[kWrap] === undefined) return this.#handle(ws, data);
    // A netkit.v1 client's message comes in an envelope; anything else
    // is a broken client: closed with 1008, reported.
    let envelope;
    try {
      envelope = decodeClientEnvelope(data);
    } catch (error) {
      this.#failed.add(ws);
      this.#emit({ type: "error", remoteAddr: ws.remoteAddr, error });
      ws[kDiscard]();
      const reason = "netkit.v1: expected an envelope";
      ws.close(CloseCode.PolicyViolation, reason).catch(() => {});
      return;
    }
    const { id } = envelope;
    if (id === undefined) return this.#handle(ws, envelope.data);
    // An acknowledged publish: handled once per id (a retry gets the
    // first answer again), answered once the handler is done — after
    // the publish it made synchronously is in the log.
    const answered = ackBegin(this.hub, id);
    if (answered !== undefined) return void ws.sendPrepared(new PreparedMessage(answered));
    const pending = this.#handle(ws, envelope.data); // never throws: a failure is handled by #fail
    const { answer, published, durable } = ackEnd(this.hub);
    const acknowledge = () => {
      const failed = this.#failed.has(ws);
      if (failed && !published) return ackForget(this.hub, id);
      if (failed) return;
      // A sequenced bus (Redis Streams): acknowledged once the log has it, with its position.
      if (durable === undefined) return void ws.sendPrepared(new PreparedMessage(answer));
      void durable.then((text) => {
        if (text !== undefined) ws.sendPrepared(new PreparedMessage(text));
      });
    };
    if (pending === undefined) return acknowledge();
    return pending.then(acknowledge);
  }
}

/**
 * Serves WebSocket: `ws://` over TCP, or `wss://` when `cert` and `key` are
 * given. Each connection gets its own session, many at once; a session that
 * throws costs its own connection only.
 *
 * `handler` is either a plain netkit `Conn` handler — the TCP echo handler
 * serves WebSocket unchanged: each message is one chunk of `conn.readable`,
 * each chunk written one binary message — or a {@linkcode WebSocketHandler}
 * object with `upgrade`, `open`, `message`, `close` and `drain` callbacks.
 *
 * Requests that are not upgrades get `onRequest`'s answer, else 426; bad
 * upgrades get 400, 404 (another path), 405 (not GET), 426 (version not
 * 13) or 431 (head over `maxHeadSize`). Shutdown (`close()`, `signal`,
 * `await using`) stops accepting, sends close 1001 to every client, waits
 * `gracePeriod`, then ends the rest.
 *
 * | limit | default | over it |
 * | --- | --- | --- |
 * | `maxPayload` | 1 MiB | close 1009 |
 * | `maxFragments` | 1024 frames | close 1009 |
 * | `maxBuffered` | 1 MiB | close 1008 (`policy: "close"`) or skip until drained (`"drop"`) |
 * | `maxHeadSize` | 16 KiB | 431 |
 * | `handshakeTimeout` | 10 s | connection closed |
 * | `idleTimeout` | 0 (off) | ping; close 1001 if still silent |
 * | `closeTimeout` | 5 s | socket closed without the peer's close frame |
 *
 * @throws {NetworkError} The address is in use or not available.
 *
 * @example A broadcast chat
 * ```ts
 * import { serve } from "@netkit/netkit/websocket";
 * import assert from "node:assert/strict";
 *
 * await using server = serve({ port: 0 }, {
 *   open: (ws) => void ws.subscribe("chat"),
 *   message: (ws, data) => void ws.publish("chat", data, { includeSelf: true }),
 * });
 * assert.equal(server.url, `ws://127.0.0.1:${server.addr.port}`);
 * ```
 *
 * @example The TCP echo handler, unchanged
 * ```ts
 * import { echo } from "@netkit/netkit";
 * import { connect, serve } from "@netkit/netkit/websocket";
 * import assert from "node:assert/strict";
 *
 * await using server = serve({ port: 0 }, echo);
 * await using ws = await connect(server.url);
 * await ws.send("hi");
 * assert.deepEqual(await ws.receive(), new TextEncoder().encode("hi")); // a Conn sends bytes
 * ```
 */
export function serve<T = unknown>(
  options: ServeOptions<T>,
  handler: ServeHandler<T>,
): WebSocketServer<T> {
  checkCompression(options);
  const hostname = options.hostname ?? "127.0.0.1";
  const port = options.port ?? 0;
  const tls = options.cert !== undefined || options.key !== undefined ||
    options.certFile !== undefined || options.keyFile !== undefined ||
    options.certificates !== undefined;
  if (!tls) {
    return new WebSocketServer(
      listenSocket({ hostname, port, reusePort: options.reusePort }),
      options,
      handler,
    );
  }
  // The TLS handshake runs inside the WebSocket handshake's deadline.
  const acceptor = openAcceptor({
    hostname,
    port,
    reusePort: options.reusePort,
    cert: options.cert,
    key: options.key,
    certFile: options.certFile,
    keyFile: options.keyFile,
    certificates: options.certificates,
    onCertificateReload: options.onCertificateReload,
    clientCaCerts: options.clientCaCerts,
    alpnProtocols: options.alpnProtocols,
    engine: options.engine,
    // The TLS handshake runs inside the upgrade's own deadline.
    handshakeTimeout: 0,
  });
  return new WebSocketServer(acceptor.listener, options, handler, acceptor.handshake, acceptor);
}

function isIp(text: string): boolean {
  try {
    parseIp(text);
    return true;
  } catch {
    return false;
  }
}
