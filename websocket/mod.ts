/**
 * WebSocket servers and clients that speak netkit's `Conn`, on
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
 * - A {@linkcode BroadcastBus} carries topics beyond one hub:
 *   {@linkcode InProcessBus} between servers in one process, `RedisBus`
 *   (`@netkit/netkit/redis`) between processes sharing a Redis.
 * - permessage-deflate (RFC 7692): `serve({ compression: "shared" })`
 *   compresses a published message once for every subscriber that
 *   negotiated it, `"dedicated"` gives each connection its own context;
 *   `connect({ compression: true })` offers it. Off by default.
 * - Every limit has a default: `maxPayload` 1 MiB (close 1009),
 *   `maxFragments` 1024, `maxBuffered` 1 MiB (close 1008 or drop),
 *   `maxHeadSize` 16 KiB (431), `handshakeTimeout` 10 s.
 * - The wire format itself (frames, masking, the upgrade handshake,
 *   validation) is on its own sub-path, `@netkit/netkit/websocket/codec`.
 *
 * @example A broadcast server and two clients
 * ```ts
 * import { connect, serve } from "@netkit/netkit/websocket";
 * import assert from "node:assert/strict";
 *
 * await using server = serve({ port: 0 }, {
 *   open: (ws) => void ws.subscribe("all"),
 *   message: (ws, data) => void ws.publish("all", data, { includeSelf: true }),
 * });
 * await using a = await connect(server.url);
 * await using b = await connect(server.url);
 * await a.send("hello");
 * assert.equal(await a.receive(), "hello");
 * assert.equal(await b.receive(), "hello");
 * ```
 *
 * @module
 */
// Endpoints.
export {
  serve,
  type ServeHandler,
  type ServeOptions,
  type UpgradeDecision,
  type UpgradeHook,
  type WebSocketHandler,
  WebSocketServer,
  type WebSocketServerEvent,
} from "./server/server.ts";
export type { UpgradeInfo, UpgradeRequest } from "./codec/handshake.ts";
export type { PlainResponse } from "../internal/http_head.ts";
export { upgrade, type UpgradeOptions } from "./server/upgrade.ts";
export { connect, type ConnectOptions } from "./client/client.ts";
export { type ReconnectingOptions, ReconnectingWebSocket } from "./client/reconnect.ts";
// One connection.
export { type Message, type SendOptions, WebSocketConn } from "./connection/conn.ts";
export type { ConnectionOptions } from "./connection/_engine.ts";
// Fan-out.
export { BroadcastHub, type PublishResult, type Subscriber } from "./fanout/hub.ts";
export { PreparedMessage } from "./fanout/prepared_message.ts";
export { type BroadcastBus, InProcessBus } from "./fanout/bus.ts";
// Errors and codes.
export { HandshakeError, WebSocketError } from "./errors.ts";
export { CloseCode } from "./codec/constants.ts";
