/**
 * Topics: a {@linkcode BroadcastHub} keeps who is subscribed to what, and
 * publishes a message to every subscriber of a topic with the frame encoded
 * once — one buffer written to many sockets.
 *
 * @module
 */
import { Opcode } from "./constants.ts";
import { encodeFrame } from "./sender.ts";

const encoder = new TextEncoder();

/**
 * A message encoded once for many connections: its payload bytes and its
 * unmasked (server) frame are computed on first use and shared. Publishing
 * makes one for you; make one yourself to send the same message to
 * connections you pick.
 *
 * @example
 * ```ts
 * import { PreparedMessage } from "@netkit/netkit/websocket";
 *
 * const msg = new PreparedMessage("hello");
 * console.log(msg.binary, msg.frame.length); // false 7
 * ```
 */
export class PreparedMessage {
  /** The message as given: a string (text) or bytes (binary). */
  readonly data: string | Uint8Array;
  /** Whether it goes out as a binary message. */
  readonly binary: boolean;
  #payload: Uint8Array | undefined;
  #frame: Uint8Array | undefined;

  /**
   * Wraps a message; nothing is encoded until a connection needs it.
   *
   * @param data A string (sent as text) or bytes (sent as binary).
   * @param binary Overrides the type: `true` sends a string's UTF-8 as binary,
   *   `false` sends bytes as text (they must be UTF-8).
   */
  constructor(data: string | Uint8Array, binary?: boolean) {
    this.data = data;
    this.binary = binary ?? typeof data !== "string";
  }

  /** The payload bytes (text as UTF-8). */
  get payload(): Uint8Array {
    return this.#payload ??= typeof this.data === "string" ? encoder.encode(this.data) : this.data;
  }

  /** The whole unmasked frame, as a server sends it; encoded once. */
  get frame(): Uint8Array {
    return this.#frame ??= encodeFrame(this.binary ? Opcode.Binary : Opcode.Text, this.payload);
  }
}

/** What happened to a message sent to one connection. */
export type SendStatus = "sent" | "dropped" | "closed";

/** Anything a hub can deliver to: every {@linkcode WebSocketConn}. */
export interface Subscriber {
  /** Queues a prepared message; says whether it was queued, dropped (slow consumer) or the connection is closing. */
  sendPrepared(message: PreparedMessage): SendStatus;
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

/** Options for {@linkcode BroadcastHub.publish}. */
export interface HubPublishOptions {
  /** A subscriber that does not get the message (the sender, usually). */
  except?: Subscriber;
  /** Overrides the message type; see {@linkcode PreparedMessage}. */
  binary?: boolean;
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
 * @example
 * ```ts
 * import { BroadcastHub, type Subscriber } from "@netkit/netkit/websocket";
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
 * console.log(hub.publish("news", "hello"), got); // { delivered: 1, dropped: 0 } [ "hello" ]
 * ```
 */
export class BroadcastHub {
  #topics = new Map<string, Set<Subscriber>>();
  #byConn = new Map<Subscriber, Set<string>>();

  /** Subscribes `conn` to `topic`; `false` if it already was. */
  subscribe(conn: Subscriber, topic: string): boolean {
    let subs = this.#topics.get(topic);
    if (subs === undefined) this.#topics.set(topic, subs = new Set());
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
    if (subs.size === 0) this.#topics.delete(topic);
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
      if (subs?.size === 0) this.#topics.delete(topic);
    }
    this.#byConn.delete(conn);
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
   * encoding it once.
   *
   * @param message A string (text), bytes (binary), or a {@linkcode PreparedMessage}.
   * @returns How many subscribers got it queued, and how many were skipped.
   */
  publish(
    topic: string,
    message: string | Uint8Array | PreparedMessage,
    options: HubPublishOptions = {},
  ): PublishResult {
    const result: PublishResult = { delivered: 0, dropped: 0 };
    const subs = this.#topics.get(topic);
    if (subs === undefined) return result;
    const prepared = message instanceof PreparedMessage
      ? message
      : new PreparedMessage(message, options.binary);
    // A subscriber closed by its policy may unsubscribe during the loop,
    // which a Set's iteration allows.
    for (const conn of subs) {
      if (conn === options.except) continue;
      if (conn.sendPrepared(prepared) === "sent") result.delivered++;
      else result.dropped++;
    }
    return result;
  }
}
