/**
 * A "process" of the Redis Streams broadcast bus, for tests: a
 * `RedisStreamBus` on a Redis, a `BroadcastHub` with history on it, and one
 * subscriber on a topic that records what it is sent.
 *
 * @module
 */
import { BroadcastHub, type PreparedMessage, type Subscriber } from "../../websocket/mod.ts";
import {
  RedisStreamBus,
  type RedisStreamBusEvent,
  type RedisStreamBusOptions,
} from "../../redis/mod.ts";

const decoder = new TextDecoder();

/** A subscriber that records what it is sent: text as it is, binary as `bin:<text>`. */
export class Recorder implements Subscriber {
  got: string[] = [];
  sendPrepared(m: PreparedMessage): "sent" {
    this.got.push(typeof m.data === "string" ? m.data : `bin:${decoder.decode(m.data)}`);
    return "sent";
  }
}

/** What {@linkcode streamBusNode} gives: dispose closes the bus. */
export interface StreamBusNode extends AsyncDisposable {
  bus: RedisStreamBus;
  hub: BroadcastHub;
  sub: Recorder;
  /** Everything the bus reported through `onEvent`, in order. */
  events: RedisStreamBusEvent[];
}

/**
 * Connects a bus to `url` (history 1,000, quick reconnects: 50 ms, at most
 * 200 ms; `options` override), puts a hub with history on it and one
 * {@linkcode Recorder} on `topic`.
 *
 * @example
 * ```ts ignore
 * await using a = await streamBusNode(redis.url, "room");
 * a.hub.publish("room", "hello");
 * ```
 */
export async function streamBusNode(
  url: string,
  topic: string,
  options: Omit<RedisStreamBusOptions, "onEvent"> = {},
): Promise<StreamBusNode> {
  const events: RedisStreamBusEvent[] = [];
  const bus = await RedisStreamBus.connect(url, {
    historySize: 1000,
    reconnectDelay: 50,
    maxReconnectDelay: 200,
    ...options,
    onEvent: (e) => events.push(e),
  });
  const hub = new BroadcastHub({ bus, historySize: 1000 });
  await bus.subscribe(topic);
  const sub = new Recorder();
  hub.subscribe(sub, topic);
  return { bus, hub, sub, events, [Symbol.asyncDispose]: () => bus.close() };
}
