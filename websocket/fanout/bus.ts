/**
 * Buses: what carries a {@linkcode BroadcastHub}'s publishes beyond the hub.
 * A hub given a bus hands it every message it publishes, and delivers to its
 * own subscribers every message that comes through the bus from elsewhere —
 * another hub on the same bus, or (with {@linkcode RedisBus}) another process.
 *
 * The rules every bus keeps:
 * - a message reaches the hub that published it once: from the hub itself,
 *   never back through the bus — except on a *sequenced* bus (below);
 * - messages from one publisher arrive in the order they were published;
 * - `publish` never waits: what cannot be carried is dropped and counted;
 * - `subscribe`/`unsubscribe` are counted per topic: the first subscribe
 *   opens the upstream subscription, the last unsubscribe ends it. A hub
 *   subscribes a topic when it gets its first subscriber; subscribe one
 *   yourself (and await it) to keep a topic open whatever the clients do.
 *
 * A **sequenced** bus (`sequenced: true`, e.g. `RedisStreamBus`) gives every
 * message its position in the topic's log (an epoch and a consecutive
 * offset), the same in every process: `publish` returns `true` when the
 * message will come back through the bus — to the publishing hub too, with
 * its position (and the publish's `tag`) — and `false` when the hub must
 * deliver it itself at once, without a position (the bus is down: it queues
 * the message and relays it later). Such a bus tells each attached hub
 * where a topic's log stands (`onPosition`: when a subscription starts and
 * when the log was lost and began a new epoch) and can read back older
 * messages (`range`).
 *
 * @module
 */
import type { PreparedMessage } from "./prepared_message.ts";
import { NetkitError } from "../../errors.ts";

/**
 * A message's place in its topic's log, as a sequenced bus assigns it: the
 * log's epoch and the message's offset (consecutive, from 1).
 */
export interface BusPosition {
  /** Names one instance of the log; a new one means the earlier history is gone. */
  epoch: string;
  /** The message's offset (for `onPosition`: the last offset so far; 0 before the first). */
  offset: number;
  /**
   * The message was published here while the bus was down and each hub
   * already delivered it (without a position): record it, deliver nothing.
   */
  seen?: boolean;
}

/**
 * What a bus calls with a message: a hub's delivery to its subscribers.
 * `position` comes from a sequenced bus; `tag` is the publish's own tag,
 * handed back only to the listener that published it.
 */
export type BusListener = (
  topic: string,
  message: PreparedMessage,
  position?: BusPosition,
  tag?: unknown,
) => void;

/** What a sequenced bus tells a hub about a topic's log: where it stands now. */
export type BusPositionListener = (topic: string, position: BusPosition) => void;

/** Options of a publish on a sequenced bus (others ignore them). */
export interface BusPublishOptions {
  /**
   * Deduplicates the publish across processes within the bus's window: a
   * second publish with the same key is not added, and resolves with the
   * first one's position.
   */
  idempotencyKey?: string | undefined;
  /**
   * Called once the log has the message (with its position), or with
   * `undefined` if it never will (dropped: over the bus's bounds, or refused).
   */
  onPosition?: ((position: BusPosition | undefined) => void) | undefined;
  /** Handed back with the message to the publishing listener. */
  tag?: unknown;
}

/** A message read back from a sequenced bus's log. */
export interface BusEntry {
  /** Its offset. */
  offset: number;
  /** The message. */
  message: PreparedMessage;
}

/**
 * A broadcast bus. {@linkcode InProcessBus} joins hubs in one process;
 * {@linkcode RedisBus} joins processes through Redis pub/sub.
 */
export interface BroadcastBus {
  /**
   * Whether the bus assigns positions (see the module doc); such a bus
   * implements `position` and `range` too.
   */
  readonly sequenced?: boolean;
  /**
   * Adds a listener (a hub's delivery) and, for a sequenced bus, what to call
   * when a topic's log position is set; returns the function that removes them.
   */
  attach(listener: BusListener, onPosition?: BusPositionListener): () => void;
  /**
   * Declares interest in `topic` (counted). Resolves once messages published
   * on it elsewhere will arrive (for Redis: once the upstream SUBSCRIBE is
   * confirmed, which may wait for a lost connection to come back).
   */
  subscribe(topic: string): Promise<void>;
  /** Withdraws one interest in `topic`; the last one ends the upstream subscription. */
  unsubscribe(topic: string): void;
  /**
   * Carries `message` to every other listener and every other process on the
   * bus; `from` (the publishing hub's listener) is not called back —
   * unless the bus is sequenced and returns `true`. Never waits and never
   * throws.
   *
   * @returns For a sequenced bus: whether the message will come back through
   *   the bus to `from` (else `from` delivers it itself, at once).
   */
  publish(
    topic: string,
    message: PreparedMessage,
    from?: BusListener,
    options?: BusPublishOptions,
  ): void | boolean;
  /**
   * A sequenced bus: where `topic`'s log stands as this process has read it
   * (the offset of the last message delivered), once subscribed.
   */
  position?(topic: string): BusPosition | undefined;
  /**
   * A sequenced bus: the messages of `topic`'s log with offsets from `from`
   * to `to` (at most `count`), if that log still has the epoch `epoch`;
   * `undefined` when it cannot tell (the epoch changed, the bus is down).
   * Entries trimmed away are simply missing: check the first offset.
   */
  range?(
    topic: string,
    epoch: string,
    from: number,
    to: number,
    count: number,
  ): Promise<BusEntry[] | undefined>;
  /** Stops the bus: listeners are dropped, connections closed. Idempotent. */
  close(): Promise<void>;
}

/**
 * The in-process bus: hubs attached to the same instance share their
 * publishes, in one process. Hubs without a bus behave as if each had its
 * own; use one to join the hubs of several servers (say a `ws://` and a
 * `wss://` one) without sharing a hub.
 *
 * @example Two servers, one broadcast
 * ```ts
 * import { BroadcastHub, InProcessBus, type Subscriber } from "@netkit/netkit/websocket";
 * import assert from "node:assert/strict";
 *
 * const bus = new InProcessBus();
 * const a = new BroadcastHub({ bus });
 * const b = new BroadcastHub({ bus });
 * const got: string[] = [];
 * const sub = (name: string): Subscriber => ({
 *   sendPrepared: (m) => (got.push(`${name}:${m.data}`), "sent"),
 * });
 * a.subscribe(sub("a"), "news");
 * b.subscribe(sub("b"), "news");
 * a.publish("news", "hello");
 * assert.deepEqual(got, ["a:hello", "b:hello"]);
 * ```
 */
export class InProcessBus implements BroadcastBus {
  #listeners = new Set<BusListener>();
  #interest = new Map<string, number>();
  #closed = false;

  attach(listener: BusListener): () => void {
    if (!this.#closed) this.#listeners.add(listener);
    return () => void this.#listeners.delete(listener);
  }

  subscribe(topic: string): Promise<void> {
    if (this.#closed) return Promise.reject(busClosed());
    this.#interest.set(topic, (this.#interest.get(topic) ?? 0) + 1);
    return Promise.resolve();
  }

  unsubscribe(topic: string): void {
    const n = this.#interest.get(topic);
    if (n === undefined) return;
    if (n <= 1) this.#interest.delete(topic);
    else this.#interest.set(topic, n - 1);
  }

  /** The topics with at least one interest. */
  get topics(): string[] {
    return [...this.#interest.keys()];
  }

  publish(
    topic: string,
    message: PreparedMessage,
    from?: BusListener,
  ): void {
    for (const listener of this.#listeners) {
      if (listener !== from) listener(topic, message);
    }
  }

  close(): Promise<void> {
    this.#closed = true;
    this.#listeners.clear();
    this.#interest.clear();
    return Promise.resolve();
  }
}

/** The error for using a bus after `close()`. Internal. */
export function busClosed(): NetkitError {
  return new NetkitError("ERR_BUS_CLOSED", "the broadcast bus is closed");
}
