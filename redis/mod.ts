/**
 * Redis for netkit: {@linkcode RedisBus}, a broadcast bus that carries a
 * WebSocket server's topics between every process sharing one Redis, over
 * netkit's own RESP2 client (every reply bounded, nothing queued while
 * offline). Give it to `websocket.serve({ bus })`.
 *
 * In a server: `await using bus = await RedisBus.connect("redis://127.0.0.1:6379")`,
 * then `serve({ port: 0, bus }, handler)`; a publish on any server sharing
 * that Redis reaches the subscribers of all of them, exactly once.
 * {@linkcode RedisStreamBus} does the same through a Redis Stream per topic,
 * with positions a client can resume from on any server.
 *
 * Where Redis is: `redis://host:port` (`rediss://` for TLS), several such
 * URLs for a Redis Cluster's seeds (RedisStreamBus), or, for a master that
 * Redis Sentinel watches,
 * `redis+sentinel://[:password@]host:port[,host:port…]/mastername` — the
 * buses ask the Sentinels for the master, check it with ROLE, and ask again
 * after every lost connection, so a failover is ridden out like a restart
 * (see {@linkcode parseRedisUrl}).
 *
 * @example Where a bus connects to
 * ```ts
 * import { parseRedisUrl } from "@netkit/netkit/redis";
 * import assert from "node:assert/strict";
 *
 * const target = parseRedisUrl("rediss://cache.internal:6380");
 * assert.equal(target.hostname, "cache.internal");
 * assert.equal(target.port, 6380);
 * assert.equal(target.tls, true);
 * ```
 *
 * @module
 */
export {
  RedisBus,
  RedisBusError,
  type RedisBusEvent,
  type RedisBusOptions,
  type RedisBusStats,
} from "./bus.ts";
export {
  parseRedisUrl,
  type RedisAddress,
  type RedisConnectionOptions,
  type RedisSentinelTarget,
  type RedisTarget,
} from "./url.ts";
export {
  RedisStreamBus,
  RedisStreamBusError,
  type RedisStreamBusEvent,
  type RedisStreamBusOptions,
  type RedisStreamBusStats,
} from "./stream_bus.ts";
// What a sequenced bus (one that gives every message a log position, as
// RedisStreamBus does) hands a hub: for writing one's own bus.
export type {
  BusEntry,
  BusListener,
  BusPosition,
  BusPositionListener,
  BusPublishOptions,
} from "../websocket/fanout/bus.ts";
