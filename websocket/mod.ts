/**
 * WebSocket servers and clients that speak netkit's {@linkcode Conn}, on
 * netkit's own RFC 6455 engine: `ws://` over TCP and `wss://` over TLS.
 *
 * - {@linkcode serve} takes a plain `Conn` handler (the TCP echo handler
 *   serves WebSocket unchanged) or a handler object with `upgrade`, `open`,
 *   `message`, `close` and `drain`; topics with `subscribe`/`publish`
 *   encode each published message once for every subscriber.
 * - {@linkcode connect} is the client; {@linkcode ReconnectingWebSocket}
 *   keeps one connected with backoff.
 * - {@linkcode upgrade} adapts `Deno.upgradeWebSocket` inside your own
 *   `Deno.serve` handler.
 * - A bus carries topics beyond one hub: {@linkcode InProcessBus} between
 *   servers in one process, {@linkcode RedisBus} between processes sharing a
 *   Redis (`serve({ bus })`).
 * - Every limit has a default: `maxPayload` 1 MiB (close 1009),
 *   `maxFragments` 1024, `maxBuffered` 1 MiB (close 1008 or drop),
 *   `maxHeadSize` 16 KiB (431), `handshakeTimeout` 10 s.
 *
 * @example A broadcast server and two clients
 * ```ts
 * import { connect, serve } from "@netkit/netkit/websocket";
 *
 * await using server = serve({ port: 0 }, {
 *   open: (ws) => void ws.subscribe("all"),
 *   message: (ws, data) => void ws.publish("all", data, { includeSelf: true }),
 * });
 * await using a = await connect(server.url);
 * await using b = await connect(server.url);
 * await a.send("hello");
 * console.log(await a.receive(), await b.receive()); // hello hello
 * ```
 *
 * @module
 */
import type { Addr, Conn, ConnHandler, NetAddr, Server, UnixAddr } from "../conn.ts";
import type { ServerEvent } from "../tcp/_server.ts";

export type { Addr, Conn, ConnHandler, NetAddr, Server, ServerEvent, UnixAddr };
export { NetkitError } from "../errors.ts";
export {
  serve,
  type ServeHandler,
  type ServeOptions,
  type UpgradeDecision,
  type UpgradeHook,
  type WebSocketHandler,
  WebSocketServer,
  type WebSocketServerEvent,
} from "./server.ts";
export { connect, type ConnectOptions, parseWebSocketUrl } from "./client.ts";
export {
  type ReconnectingOptions,
  ReconnectingWebSocket,
  type ReconnectOptions,
} from "./reconnect.ts";
export { upgrade, type Upgraded, type UpgradeOptions } from "./upgrade.ts";
export {
  type EngineSink,
  type Message,
  type PublishOptions,
  type SendOptions,
  WebSocketConn,
  type WebSocketConnInit,
  type WebSocketEngine,
} from "./conn.ts";
export type { EngineOptions, SlowConsumerPolicy, SlowEvent } from "./engine.ts";
export {
  BroadcastHub,
  type BroadcastHubOptions,
  type HubPublishOptions,
  PreparedMessage,
  type PublishResult,
  type SendStatus,
  type Subscriber,
} from "./hub.ts";
export { type BroadcastBus, type BusListener, InProcessBus } from "./bus.ts";
export {
  parseRedisUrl,
  RedisBus,
  RedisBusError,
  type RedisBusEvent,
  type RedisBusOptions,
  type RedisBusStats,
  type RedisTarget,
} from "./redis_bus.ts";
export {
  acceptKey,
  type HttpResponse,
  parseRequestHead,
  type RequestHead,
  type UpgradeInfo,
  type UpgradeRequest,
  validateUpgrade,
  type ValidUpgrade,
} from "./handshake.ts";
export { HandshakeError, WebSocketError } from "./errors.ts";
export { type ReceivedFrame, Receiver, type ReceiverOptions } from "./receiver.ts";
export { applyMask, closePayload, encodeFrame, type EncodeFrameOptions } from "./sender.ts";
export { isToken, isValidCloseCode, isValidKey, isValidUtf8 } from "./validation.ts";
export {
  CloseCode,
  DEFAULT_CLOSE_TIMEOUT,
  DEFAULT_HANDSHAKE_TIMEOUT,
  DEFAULT_HIGH_WATER_MARK,
  DEFAULT_MAX_BUFFERED,
  DEFAULT_MAX_FRAGMENTS,
  DEFAULT_MAX_HEAD_SIZE,
  DEFAULT_MAX_PAYLOAD,
  Opcode,
  WEBSOCKET_GUID,
} from "./constants.ts";
