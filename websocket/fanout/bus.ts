/**
 * Buses: what carries a {@linkcode BroadcastHub}'s publishes beyond the hub.
 * A hub given a bus hands it every message it publishes, and delivers to its
 * own subscribers every message that comes through the bus from elsewhere —
 * another hub on the same bus, or (with {@linkcode RedisBus}) another process.
 *
 * The rules every bus keeps:
 * - a message reaches the hub that published it once, from the hub itself,
 *   never back through the bus;
 * - messages from one publisher arrive in the order they were published;
 * - `publish` never waits: what cannot be carried is dropped and counted;
 * - `subscribe`/`unsubscribe` are counted per topic: the first subscribe
 *   opens the upstream subscription, the last unsubscribe ends it. A hub
 *   subscribes a topic when it gets its first subscriber; subscribe one
 *   yourself (and await it) to keep a topic open whatever the clients do.
 *
 * @module
 */
import type { PreparedMessage } from "./prepared_message.ts";
import { NetkitError } from "../../errors.ts";

/** What a bus calls with a message from elsewhere: a hub's delivery to its subscribers. */
export type BusListener = (topic: string, message: PreparedMessage) => void;

/**
 * A broadcast bus. {@linkcode InProcessBus} joins hubs in one process;
 * {@linkcode RedisBus} joins processes through Redis pub/sub.
 */
export interface BroadcastBus {
  /** Adds a listener (a hub's delivery); returns the function that removes it. */
  attach(listener: (topic: string, message: PreparedMessage) => void): () => void;
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
   * bus; `from` (the publishing hub's listener) is not called back. Never
   * waits and never throws.
   */
  publish(
    topic: string,
    message: PreparedMessage,
    from?: (topic: string, message: PreparedMessage) => void,
  ): void;
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

  attach(listener: (topic: string, message: PreparedMessage) => void): () => void {
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
    from?: (topic: string, message: PreparedMessage) => void,
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
