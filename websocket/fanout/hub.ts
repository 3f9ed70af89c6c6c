/**
 * Topics: a {@linkcode BroadcastHub} keeps who is subscribed to what, and
 * publishes a message to every subscriber of a topic with the frame encoded
 * once — one buffer written to many sockets.
 *
 * @module
 */
import type { BroadcastBus, BusListener } from "./bus.ts";
import { PreparedMessage } from "./prepared_message.ts";

/** What happened to a message sent to one connection. Internal: public signatures spell it out. */
export type SendStatus = "sent" | "dropped" | "closed";

/** Anything a hub can deliver to: every {@linkcode WebSocketConn}. */
export interface Subscriber {
  /** Queues a prepared message; says whether it was queued, dropped (slow consumer) or the connection is closing. */
  sendPrepared(message: PreparedMessage): "sent" | "dropped" | "closed";
}

/** How a publish went: how many subscribers got the message queued, and how many were skipped. */
export interface PublishResult {
  /** Subscribers the message was queued for. */
  delivered: number;
  /**
   * Subscribers that did not get it: slow consumers over `maxBuffered`
   * (skipped under `policy: "drop"`, closed under `policy: "close"`), or
   * connections already closing.
   */
  dropped: number;
}

/**
 * Topic subscriptions and fan-out. Every `serve()` has one (`server.hub`,
 * used by `ws.subscribe`, `ws.publish` and `server.publish`); make your own to
 * join connections from `upgrade()` or from several servers.
 *
 * A publish never waits: the message is queued on each subscriber, and a
 * subscriber whose backlog is over its `maxBuffered` is skipped or closed by
 * its policy without stalling the others.
 *
 * With a `bus`, publishes also reach the subscribers of every other hub on
 * the bus (other servers, other processes), each exactly once; the hub
 * subscribes a topic on the bus while it has local subscribers to it.
 *
 * @example
 * ```ts
 * import { BroadcastHub, type Subscriber } from "@netkit/netkit/websocket";
 * import assert from "node:assert/strict";
 *
 * const got: string[] = [];
 * const sub: Subscriber = {
 *   sendPrepared(m) {
 *     got.push(String(m.data));
 *     return "sent";
 *   },
 * };
 * const hub = new BroadcastHub();
 * hub.subscribe(sub, "news");
 * assert.deepEqual(hub.publish("news", "hello"), { delivered: 1, dropped: 0 });
 * assert.deepEqual(got, ["hello"]);
 * ```
 */
export class BroadcastHub {
  #topics = new Map<string, Set<Subscriber>>();
  #byConn = new Map<Subscriber, Set<string>>();
  #bus: BroadcastBus | undefined;
  #published = 0;
  #delivered = 0;
  #dropped = 0;
  #detach: (() => void) | undefined;
  #fromBus: BusListener = (topic, message) => void this.#fanOut(topic, message, undefined);

  /**
   * Makes a hub, attached to `options.bus` if given.
   *
   * @param options `bus` carries publishes beyond this hub (an `InProcessBus`
   *   or a `RedisBus`): what this hub publishes goes to the bus too, and what
   *   comes through the bus from elsewhere reaches this hub's subscribers.
   *   Default: none.
   */
  constructor(options: { bus?: BroadcastBus | undefined } = {}) {
    this.#bus = options.bus;
    this.#detach = this.#bus?.attach(this.#fromBus);
  }

  /** The bus this hub publishes to and hears from, if any. */
  get bus(): BroadcastBus | undefined {
    return this.#bus;
  }

  /**
   * Leaves the bus: its topics are unsubscribed there and nothing more comes
   * from it; the hub goes on locally. Idempotent; the bus stays open.
   */
  detach(): void {
    const bus = this.#bus;
    if (bus === undefined) return;
    this.#bus = undefined;
    this.#detach?.();
    for (const topic of this.#topics.keys()) bus.unsubscribe(topic);
  }

  /** Subscribes `conn` to `topic`; `false` if it already was. */
  subscribe(conn: Subscriber, topic: string): boolean {
    let subs = this.#topics.get(topic);
    if (subs === undefined) {
      this.#topics.set(topic, subs = new Set());
      this.#bus?.subscribe(topic).catch(() => {});
    }
    if (subs.has(conn)) return false;
    subs.add(conn);
    let topics = this.#byConn.get(conn);
    if (topics === undefined) this.#byConn.set(conn, topics = new Set());
    topics.add(topic);
    return true;
  }

  /** Unsubscribes `conn` from `topic`; `false` if it was not subscribed. */
  unsubscribe(conn: Subscriber, topic: string): boolean {
    const subs = this.#topics.get(topic);
    if (subs === undefined || !subs.delete(conn)) return false;
    if (subs.size === 0) this.#dropTopic(topic);
    const topics = this.#byConn.get(conn);
    topics?.delete(topic);
    if (topics?.size === 0) this.#byConn.delete(conn);
    return true;
  }

  /** Unsubscribes `conn` from every topic (done for you when a connection closes). */
  unsubscribeAll(conn: Subscriber): void {
    const topics = this.#byConn.get(conn);
    if (topics === undefined) return;
    for (const topic of topics) {
      const subs = this.#topics.get(topic);
      subs?.delete(conn);
      if (subs?.size === 0) this.#dropTopic(topic);
    }
    this.#byConn.delete(conn);
  }

  #dropTopic(topic: string): void {
    this.#topics.delete(topic);
    this.#bus?.unsubscribe(topic);
  }

  /** Whether `conn` is subscribed to `topic`. */
  isSubscribed(conn: Subscriber, topic: string): boolean {
    return this.#topics.get(topic)?.has(conn) ?? false;
  }

  /** The topics `conn` is subscribed to. */
  topicsOf(conn: Subscriber): string[] {
    return [...(this.#byConn.get(conn) ?? [])];
  }

  /** How many connections are subscribed to `topic`. */
  subscriberCount(topic: string): number {
    return this.#topics.get(topic)?.size ?? 0;
  }

  /** Every topic with at least one subscriber. */
  get topics(): string[] {
    return [...this.#topics.keys()];
  }

  /**
   * Sends `message` to every subscriber of `topic` (but `options.except`),
   * encoding it once; with a bus, also to the subscribers of every other hub
   * on it.
   *
   * @param message A string (text), bytes (binary), or a {@linkcode PreparedMessage}.
   * @param options `except`: a subscriber that does not get the message (the
   *   sender, usually); `binary` overrides the message type (see
   *   {@linkcode PreparedMessage}).
   * @returns How many of this hub's subscribers got it queued, and how many were skipped.
   */
  publish(
    topic: string,
    message: string | Uint8Array | PreparedMessage,
    options: { except?: Subscriber | undefined; binary?: boolean | undefined } = {},
  ): PublishResult {
    const bus = this.#bus;
    if (bus === undefined && !this.#topics.has(topic)) return { delivered: 0, dropped: 0 };
    const prepared = message instanceof PreparedMessage
      ? message
      : new PreparedMessage(message, options.binary);
    this.#published++;
    const result = this.#fanOut(topic, prepared, options.except);
    bus?.publish(topic, prepared, this.#fromBus);
    return result;
  }

  /**
   * Counters so far: messages published on this hub, deliveries queued to
   * subscribers (from this hub's publishes and the bus's), and deliveries
   * skipped (slow consumers, closing connections).
   */
  stats(): { published: number; delivered: number; dropped: number } {
    return { published: this.#published, delivered: this.#delivered, dropped: this.#dropped };
  }

  #fanOut(topic: string, prepared: PreparedMessage, except: Subscriber | undefined): PublishResult {
    const result: PublishResult = { delivered: 0, dropped: 0 };
    const subs = this.#topics.get(topic);
    if (subs === undefined) return result;
    // A subscriber closed by its policy may unsubscribe during the loop,
    // which a Set's iteration allows.
    for (const conn of subs) {
      if (conn === except) continue;
      if (conn.sendPrepared(prepared) === "sent") result.delivered++;
      else result.dropped++;
    }
    this.#delivered += result.delivered;
    this.#dropped += result.dropped;
    return result;
  }
}
