/**
 * Topics: a {@linkcode BroadcastHub} keeps who is subscribed to what, and
 * publishes a message to every subscriber of a topic with the frame encoded
 * once — one buffer written to many sockets.
 *
 * @module
 */
import type { BroadcastBus, BusListener, BusPosition, BusPositionListener } from "./bus.ts";
import { PreparedMessage } from "./prepared_message.ts";
import { History, LogEntry, type TopicLog } from "./history.ts";
import {
  encodeServerEnvelope,
  formatSubscribed,
  type NetkitV1Position,
} from "../codec/netkit_v1.ts";

/** What happened to a message sent to one connection. Internal: public signatures spell it out. */
export type SendStatus = "sent" | "dropped" | "closed";

/** Anything a hub can deliver to: every {@linkcode WebSocketConn}. */
export interface Subscriber {
  /** Queues a prepared message; says whether it was queued, dropped (slow consumer) or the connection is closing. */
  sendPrepared(message: PreparedMessage): "sent" | "dropped" | "closed";
}

/**
 * A `netkit.v1` connection, as the hub sees it: where to send envelopes,
 * its backlog, and the positions it asked to resume from. Internal: made by
 * the server for each connection that agreed on `netkit.v1`.
 */
export interface ResumeLink {
  /** Queues a message as it is (an envelope or an answer): the connection's `sendPrepared`. */
  send(message: PreparedMessage): SendStatus;
  /** The connection's unsent backlog, in bytes. */
  readonly bufferedAmount: number;
  /** Resolves once the backlog is at most `bytes` (or the connection is gone). */
  waitBelow(bytes: number): Promise<void>;
  /** A replay keeps the backlog under this many bytes (below `maxBuffered`). */
  readonly window: number;
  /** Ends the connection: it cannot be told what it needs to know (a `sub` dropped). */
  fail(reason: string): void;
  /** Positions asked for in the upgrade URL, by topic; each is used by the first subscribe to it. */
  readonly since: Map<string, NetkitV1Position>;
}

/** A `netkit.v1` connection's state in a hub. */
interface Session {
  link: ResumeLink;
  /**
   * Topics this connection is being fed from the log rather than live (a
   * resume, or catching up after messages were dropped), each with the
   * offsets to send as positions only (its own, without `includeSelf`).
   */
  replaying: Map<string, Set<number>>;
}

/** Registers a `netkit.v1` connection with a hub. Internal: the server's. */
export let attachResume: (hub: BroadcastHub, conn: Subscriber, link: ResumeLink) => void;

/**
 * Acknowledged publishes (`netkit.v1` messages with an `id`). Internal: the
 * server calls `ackBegin` before handing such a message to the
 * application — it returns the answer already given when the id was seen
 * within the window (the message is then not handled again) — and
 * `ackEnd` right after the handler's synchronous part: the first publish
 * it made is the one acknowledged, with its position.
 */
export let ackBegin: (hub: BroadcastHub, id: string) => string | undefined;
/**
 * See {@linkcode ackBegin}: the answer to send, and whether the handler
 * published. With a sequenced bus (Redis Streams) the position is known
 * only once the log has the message: `durable` resolves with the answer to
 * send then (`undefined`: the publish was dropped — send nothing, the
 * client retries), and `answer` is the position-less stand-in for a server
 * that cannot wait.
 */
export let ackEnd: (
  hub: BroadcastHub,
) => { answer: string; published: boolean; durable?: Promise<string | undefined> };
/** Forgets an id whose handler failed before publishing, so that a retry is handled. */
export let ackForget: (hub: BroadcastHub, id: string) => void;

const decoder = new TextDecoder();

/** Ids of acknowledged publishes remembered per hub, at most. */
const MAX_ACK_IDS = 65_536;
/** Messages read back from a sequenced bus's log per request, for a replay. */
const RANGE_PAGE = 500;
/** How long a resume from a position this process has not read yet waits for it. */
const AHEAD_WAIT = 5000;

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
 * subscribes a topic on the bus while it has local subscribers to it (and,
 * with history, while it keeps the topic's log).
 *
 * With `historySize`, the hub keeps a log per topic: every message published
 * (here or through the bus) gets a position — the log's epoch and an offset
 * — and clients that speak the `netkit.v1` subprotocol (serve() agrees on it
 * when its hub keeps history) get each message with its position, and resume
 * after a reconnect from the last one they saw: replayed from the log, then
 * live, with no duplicate and no gap; or told `recovered: false` when the
 * log no longer covers it. See docs/netkit-v1.md. Other clients see no
 * difference. The log keeps the published message itself (the object every
 * subscriber shares) and, once a `netkit.v1` client needs it, its envelope.
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
  // A connection's topics: the topic itself while it has one (most have
  // one, and a server holds an entry per connection), a Set beyond.
  #byConn = new Map<Subscriber, string | Set<string>>();
  #bus: BroadcastBus | undefined;
  #published = 0;
  #delivered = 0;
  #dropped = 0;
  #detach: (() => void) | undefined;
  #fromBus: BusListener = (topic, message, position, tag) => {
    if (this.#bus?.sequenced !== true) {
      this.#fanOut(topic, message, undefined, this.#record(topic, message));
    } else if (position === undefined) {
      // Published here (another hub on the bus) while the bus is down.
      this.#fanOutUnpositioned(topic, message, tag as Subscriber | undefined);
    } else {
      this.#fromLog(topic, message, position, tag as Subscriber | undefined);
    }
  };
  #onBusPosition: BusPositionListener = (topic, position) => this.#moveLog(topic, position);
  // netkit.v1 starts waiting for a sequenced bus to say where a topic's log stands.
  #deferred = new Map<string, { conn: Subscriber; session: Session; skips: Set<number> }[]>();
  // Topics subscribed on the bus (released when neither subscribers nor a log need them).
  #onBus = new Set<string>();
  #history: History | undefined;
  #sessions = new Map<Subscriber, Session>();
  // Acknowledged publishes: the id being handled, the first publish it made,
  // and the answers given (in order of time) for the dedupe window.
  #capture:
    | {
      id: string;
      entry: LogEntry | undefined;
      durable: Promise<BusPosition | undefined> | undefined;
    }
    | undefined;
  #acks = new Map<string, { answer: string; at: number }>();

  static {
    attachResume = (hub, conn, link) => {
      if (hub.#history !== undefined) hub.#sessions.set(conn, { link, replaying: new Map() });
    };
    ackBegin = (hub, id) => {
      const now = performance.now();
      const window = hub.#history?.bounds.historyTtl || 300_000;
      for (const [old, { at }] of hub.#acks) {
        if (now - at < window && hub.#acks.size < MAX_ACK_IDS) break;
        hub.#acks.delete(old);
      }
      const seen = hub.#acks.get(id);
      if (seen !== undefined) return seen.answer;
      hub.#capture = { id, entry: undefined, durable: undefined };
      return undefined;
    };
    ackEnd = (hub) => {
      const capture = hub.#capture!;
      hub.#capture = undefined;
      const entry = capture.entry;
      const answer = JSON.stringify(
        entry === undefined
          ? { ack: capture.id }
          : { ack: capture.id, t: entry.log.topic, e: entry.log.epoch, o: entry.offset },
      );
      const seen = { answer, at: performance.now() };
      hub.#acks.set(capture.id, seen);
      if (capture.durable === undefined) return { answer, published: entry !== undefined };
      const durable = capture.durable.then((position) => {
        if (position === undefined) {
          hub.#acks.delete(capture.id);
          return undefined;
        }
        const { topic, epoch, offset } = position as BusPosition & { topic: string };
        seen.answer = JSON.stringify({ ack: capture.id, t: topic, e: epoch, o: offset });
        return seen.answer;
      });
      return { answer, published: true, durable };
    };
    ackForget = (hub, id) => void hub.#acks.delete(id);
  }

  /**
   * Makes a hub, attached to `options.bus` if given, keeping history if
   * `options.historySize` is more than 0.
   *
   * @param options `bus` carries publishes beyond this hub (an `InProcessBus`
   *   or a `RedisBus`): what this hub publishes goes to the bus too, and what
   *   comes through the bus from elsewhere reaches this hub's subscribers.
   *   Default: none.
   *
   *   `historySize`: messages kept per topic for `netkit.v1` clients that
   *   resume; 0 keeps none and turns `netkit.v1` off. @default {0}
   *
   *   `historyTtl`: milliseconds a message is kept; 0 = no age limit (then
   *   a topic's log is never forgotten: use it with few topics). A topic's
   *   log is forgotten once it has had no subscriber for this long.
   *   @default {300000}
   *
   *   `maxHistoryBytes`: payload bytes kept per topic (the oldest messages
   *   go first). @default {16777216}
   * @throws {RangeError} A bound that is not a number in range.
   */
  constructor(
    options: {
      bus?: BroadcastBus | undefined;
      historySize?: number | undefined;
      historyTtl?: number | undefined;
      maxHistoryBytes?: number | undefined;
    } = {},
  ) {
    if ((options.historySize ?? 0) !== 0) this.#history = new History(options);
    this.#bus = options.bus;
    this.#detach = this.#bus?.attach(this.#fromBus, this.#onBusPosition);
  }

  /** Whether the hub keeps history (and so speaks `netkit.v1`). */
  get keepsHistory(): boolean {
    return this.#history !== undefined;
  }

  /**
   * The position of `topic`'s log: its epoch and the offset of the last
   * message published on it, and the oldest offset still kept; `undefined`
   * without history or before the topic's first publish or subscribe.
   *
   * @example
   * ```ts
   * import { BroadcastHub } from "@netkit/netkit/websocket";
   * import assert from "node:assert/strict";
   *
   * const hub = new BroadcastHub({ historySize: 2 });
   * for (const m of ["a", "b", "c"]) hub.publish("news", m); // kept even with no subscriber
   * const { epoch, offset, oldest } = hub.position("news")!;
   * assert.equal(offset, 3);
   * assert.equal(oldest, 2); // "a" went: the log keeps 2
   * assert.match(epoch, /^[\w-]{11}$/);
   * ```
   */
  position(topic: string): { epoch: string; offset: number; oldest: number } | undefined {
    const log = this.#history?.get(topic);
    return log && { epoch: log.epoch, offset: log.head, oldest: log.first };
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
    for (const topic of this.#onBus) bus.unsubscribe(topic);
    this.#onBus.clear();
  }

  /** Subscribes `conn` to `topic`; `false` if it already was. */
  subscribe(conn: Subscriber, topic: string): boolean {
    let subs = this.#topics.get(topic);
    if (subs === undefined) {
      this.#topics.set(topic, subs = new Set());
      if (this.#bus !== undefined && !this.#onBus.has(topic)) {
        this.#onBus.add(topic);
        this.#bus.subscribe(topic).catch(() => {});
      }
    }
    if (subs.has(conn)) return false;
    subs.add(conn);
    const topics = this.#byConn.get(conn);
    if (topics === undefined) this.#byConn.set(conn, topic);
    else if (typeof topics === "string") this.#byConn.set(conn, new Set([topics, topic]));
    else topics.add(topic);
    // With history a subscribed topic has a log (from the first subscriber
    // on, a client that drops can resume).
    if (this.#history !== undefined) this.#openLog(topic);
    const session = this.#sessions.get(conn);
    if (session !== undefined) this.#start(conn, session, topic);
    return true;
  }

  /** Unsubscribes `conn` from `topic`; `false` if it was not subscribed. */
  unsubscribe(conn: Subscriber, topic: string): boolean {
    const subs = this.#topics.get(topic);
    if (subs === undefined || !subs.delete(conn)) return false;
    this.#sessions.get(conn)?.replaying.delete(topic);
    if (subs.size === 0) this.#dropTopic(topic);
    const topics = this.#byConn.get(conn);
    if (typeof topics === "string") this.#byConn.delete(conn);
    else {
      topics?.delete(topic);
      if (topics?.size === 0) this.#byConn.delete(conn);
    }
    return true;
  }

  /** Unsubscribes `conn` from every topic (done for you when a connection closes). */
  unsubscribeAll(conn: Subscriber): void {
    this.#sessions.delete(conn);
    const held = this.#byConn.get(conn);
    if (held === undefined) return;
    for (const topic of typeof held === "string" ? [held] : held) {
      const subs = this.#topics.get(topic);
      subs?.delete(conn);
      if (subs?.size === 0) this.#dropTopic(topic);
    }
    this.#byConn.delete(conn);
  }

  #dropTopic(topic: string): void {
    this.#topics.delete(topic);
    const log = this.#history?.get(topic);
    // The log goes on recording what comes through the bus, for whoever
    // resumes: the bus subscription ends when the log is forgotten.
    if (log !== undefined) log.lastLeft = performance.now();
    else this.#leaveBus(topic);
  }

  #leaveBus(topic: string): void {
    if (this.#bus !== undefined && this.#onBus.delete(topic)) this.#bus.unsubscribe(topic);
  }

  /** Whether `conn` is subscribed to `topic`. */
  isSubscribed(conn: Subscriber, topic: string): boolean {
    return this.#topics.get(topic)?.has(conn) ?? false;
  }

  /** The topics `conn` is subscribed to. */
  topicsOf(conn: Subscriber): string[] {
    const topics = this.#byConn.get(conn);
    return typeof topics === "string" ? [topics] : [...(topics ?? [])];
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
    if (bus === undefined && this.#history === undefined && !this.#topics.has(topic)) {
      return { delivered: 0, dropped: 0 };
    }
    const prepared = message instanceof PreparedMessage
      ? message
      : new PreparedMessage(message, options.binary);
    this.#published++;
    if (bus?.sequenced === true) {
      // The bus gives the position: the message comes back through it, to
      // this hub too, and is delivered then (in the log's order). An
      // acknowledged publish's id is the bus's idempotency key.
      const capture = this.#capture;
      let onPosition: ((position: BusPosition | undefined) => void) | undefined;
      let idempotencyKey: string | undefined;
      if (capture !== undefined && capture.durable === undefined) {
        idempotencyKey = `ack:${capture.id}`;
        capture.durable = new Promise((resolve) => {
          onPosition = (position) => resolve(position && { ...position, topic } as BusPosition);
        });
      }
      const viaBus = bus.publish(topic, prepared, this.#fromBus, {
        tag: options.except,
        idempotencyKey,
        onPosition,
      });
      if (viaBus === true) return { delivered: 0, dropped: 0 };
      // The bus is down: delivered here at once, without a position.
      return this.#fanOutUnpositioned(topic, prepared, options.except);
    }
    const result = this.#fanOut(topic, prepared, options.except, this.#record(topic, prepared));
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

  /**
   * What the history keeps: topics with a log, messages and their payload
   * bytes (all zero without history).
   */
  historyStats(): { topics: number; messages: number; bytes: number } {
    return this.#history?.stats() ?? { topics: 0, messages: 0, bytes: 0 };
  }

  /** Appends a publish to its topic's log (with history), sweeping now and then. */
  #record(topic: string, prepared: PreparedMessage): LogEntry | undefined {
    const history = this.#history;
    if (history === undefined) return undefined;
    const now = performance.now();
    const entry = history.append(topic, prepared, now);
    if (this.#capture !== undefined) this.#capture.entry ??= entry;
    history.maybeSweep(now, (t) => this.#topics.has(t), (t) => this.#leaveBus(t));
    return entry;
  }

  /**
   * With a sequenced bus: the log of `topic`, made if need be, at the
   * position the bus knows; unsynced (waiting for the bus) if it knows none.
   */
  #openLog(topic: string): TopicLog {
    const history = this.#history!;
    const log = history.open(topic);
    if (this.#bus?.sequenced !== true || log.synced) return log;
    const at = this.#bus.position?.(topic);
    if (at === undefined) return log;
    return history.reset(topic, at);
  }

  /** A sequenced bus says where `topic`'s log stands (subscribed, or a new epoch). */
  #moveLog(topic: string, at: BusPosition): void {
    const history = this.#history;
    if (history === undefined) return;
    const log = history.get(topic);
    if (log === undefined || !log.synced) {
      history.reset(topic, at);
      this.#runDeferred(topic);
    } else if (log.epoch !== at.epoch) {
      this.#logMoved(topic, history.reset(topic, at), "epoch");
    } else if (at.offset > log.head) {
      log.skipTo(at.offset);
      this.#logMoved(topic, log, "trimmed");
    }
  }

  /**
   * The log of `topic` lost messages (a new epoch, or a gap): every live
   * `netkit.v1` subscriber is told `recovered: false` and where it now
   * stands (a replay in progress finds out by itself).
   */
  #logMoved(topic: string, log: TopicLog, reason: string): void {
    const subs = this.#topics.get(topic);
    if (subs === undefined || this.#sessions.size === 0) return;
    const answer = new PreparedMessage(
      formatSubscribed(topic, log.epoch, log.head, { recovered: false, reason }),
    );
    for (const conn of subs) {
      const session = this.#sessions.get(conn);
      if (session === undefined || session.replaying.has(topic)) continue;
      if (session.link.send(answer) === "dropped") session.link.fail("netkit.v1: cannot catch up");
    }
  }

  #runDeferred(topic: string): void {
    const waiting = this.#deferred.get(topic);
    if (waiting === undefined) return;
    this.#deferred.delete(topic);
    for (const { conn, session, skips } of waiting) {
      if (this.#sessions.get(conn) !== session || session.replaying.get(topic) !== skips) continue;
      session.replaying.delete(topic);
      this.#start(conn, session, topic);
    }
  }

  /** A message read from a sequenced bus's log: recorded at its position, then delivered. */
  #fromLog(
    topic: string,
    message: PreparedMessage,
    position: BusPosition,
    except: Subscriber | undefined,
  ): void {
    const history = this.#history;
    let entry: LogEntry | undefined;
    if (history !== undefined) {
      const now = performance.now();
      let log = history.get(topic, now);
      if (log === undefined || !log.synced) {
        log = history.reset(topic, { epoch: position.epoch, offset: position.offset - 1 }, now);
        this.#runDeferred(topic);
      } else if (log.epoch !== position.epoch) {
        log = history.reset(topic, { epoch: position.epoch, offset: position.offset - 1 }, now);
        this.#logMoved(topic, log, "epoch");
      } else if (position.offset <= log.head) {
        return; // had it already
      } else if (position.offset > log.head + 1) {
        log.skipTo(position.offset - 1);
        this.#logMoved(topic, log, "trimmed");
      }
      entry = log.append(message, now, history.bounds);
      history.maybeSweep(now, (t) => this.#topics.has(t), (t) => this.#leaveBus(t));
    }
    if (position.seen) {
      // Delivered already, without a position, while the bus was down:
      // netkit.v1 subscribers learn its position (and skip it in a replay).
      const subs = this.#topics.get(topic);
      if (subs === undefined || entry === undefined) return;
      for (const conn of subs) {
        const session = this.#sessions.get(conn);
        if (session !== undefined) this.#sendEntry(conn, session, topic, entry, true);
      }
      return;
    }
    this.#fanOut(topic, message, except, entry);
  }

  /**
   * Delivery without a position (a sequenced bus is down): plain
   * subscribers get the message, `netkit.v1` ones a position-less envelope
   * (`{"d":…}`); its position follows once the log has it.
   */
  #fanOutUnpositioned(
    topic: string,
    prepared: PreparedMessage,
    except: Subscriber | undefined,
  ): PublishResult {
    const result: PublishResult = { delivered: 0, dropped: 0 };
    const subs = this.#topics.get(topic);
    if (subs === undefined) return result;
    let envelope: PreparedMessage | undefined;
    for (const conn of subs) {
      if (conn === except) continue;
      let message = prepared;
      if (this.#sessions.has(conn)) {
        envelope ??= prepared.binary
          ? new PreparedMessage(encodeServerEnvelope(prepared.payload), true)
          : new PreparedMessage(
            encodeServerEnvelope(
              typeof prepared.data === "string" ? prepared.data : decoder.decode(prepared.data),
            ),
          );
        message = envelope;
      }
      if (conn.sendPrepared(message) === "sent") result.delivered++;
      else result.dropped++;
    }
    this.#delivered += result.delivered;
    this.#dropped += result.dropped;
    return result;
  }

  #fanOut(
    topic: string,
    prepared: PreparedMessage,
    except: Subscriber | undefined,
    entry: LogEntry | undefined,
  ): PublishResult {
    const result: PublishResult = { delivered: 0, dropped: 0 };
    const subs = this.#topics.get(topic);
    if (subs === undefined) return result;
    const sessions = entry !== undefined && this.#sessions.size > 0 ? this.#sessions : undefined;
    // A subscriber closed by its policy may unsubscribe during the loop,
    // which a Set's iteration allows.
    for (const conn of subs) {
      const session = sessions?.get(conn);
      if (session !== undefined) {
        const status = this.#sendEntry(conn, session, topic, entry!, conn === except);
        if (status === "sent") result.delivered++;
        else if (status !== undefined) result.dropped++;
        continue;
      }
      if (conn === except) continue;
      if (conn.sendPrepared(prepared) === "sent") result.delivered++;
      else result.dropped++;
    }
    this.#delivered += result.delivered;
    this.#dropped += result.dropped;
    return result;
  }

  /**
   * A live message to a `netkit.v1` connection: its envelope (or its
   * position alone, to the publisher without `includeSelf`); nothing while
   * the topic is being replayed to it (the replay will get there from the
   * log). A message dropped (`policy: "drop"`) switches the topic to a
   * replay from the log, so the connection catches up once it drains.
   */
  #sendEntry(
    conn: Subscriber,
    session: Session,
    topic: string,
    entry: LogEntry,
    own: boolean,
  ): SendStatus | undefined {
    const skips = session.replaying.get(topic);
    if (skips !== undefined) {
      if (own) skips.add(entry.offset);
      return undefined;
    }
    const status = session.link.send(own ? entry.skip() : entry.envelope());
    if (status === "dropped") {
      const log = this.#history!.get(topic)!;
      session.replaying.set(topic, new Set(own ? [entry.offset] : []));
      void this.#replay(conn, session, log, entry.offset - 1);
    }
    return own ? undefined : status;
  }

  /**
   * A `netkit.v1` connection has just been subscribed to `topic`: tells it
   * its position there, and resumes it if it asked to (the answer first,
   * then the replay, then live).
   */
  #start(conn: Subscriber, session: Session, topic: string): void {
    const log = this.#openLog(topic);
    const sequenced = this.#bus?.sequenced === true;
    if (sequenced && !log.synced) {
      // Where the log stands is the bus's to say: wait for it (live
      // messages held back meanwhile, as during a replay).
      const skips = new Set<number>();
      session.replaying.set(topic, skips);
      const waiting = this.#deferred.get(topic);
      if (waiting === undefined) this.#deferred.set(topic, [{ conn, session, skips }]);
      else waiting.push({ conn, session, skips });
      return;
    }
    const asked = session.link.since.get(topic);
    session.link.since.delete(topic);
    if (
      sequenced && asked !== undefined && asked.epoch === log.epoch &&
      (asked.offset > log.head || (asked.offset < log.first - 1 && this.#bus!.range))
    ) {
      // The log is shared by every process: a position this one has not
      // read yet is waited for; one older than this process keeps is read
      // back from the bus. The answer comes once it is known.
      session.replaying.set(topic, new Set());
      void this.#replay(conn, session, log, asked.offset, undefined, true);
      return;
    }
    // The answer, and the offset after which messages go out.
    let answer: string;
    let from = log.head;
    if (asked === undefined) {
      answer = formatSubscribed(topic, log.epoch, log.head);
    } else if (asked.epoch !== log.epoch || asked.offset > log.head) {
      answer = formatSubscribed(topic, log.epoch, log.head, { recovered: false, reason: "epoch" });
    } else if (asked.offset < log.first - 1) {
      answer = formatSubscribed(topic, log.epoch, log.head, {
        recovered: false,
        reason: "trimmed",
      });
    } else {
      answer = formatSubscribed(topic, log.epoch, asked.offset, { recovered: true });
      from = asked.offset;
    }
    const message = new PreparedMessage(answer);
    const status = session.link.send(message);
    if (status === "closed" || (status === "sent" && from === log.head)) return;
    // A replay to do, or an answer that must wait for room (the connection
    // is behind, skipped by `policy: "drop"`): both from the log, live
    // messages of the topic held back meanwhile.
    session.replaying.set(topic, new Set());
    void this.#replay(conn, session, log, from, status === "sent" ? undefined : message);
  }

  /**
   * Reads back from a sequenced bus the messages of `log` right after
   * `cursor` that the log no longer keeps (a page); `undefined` when the
   * bus cannot (none, trimmed there too, another epoch, down).
   */
  async #readBack(log: TopicLog, cursor: number): Promise<LogEntry[] | undefined> {
    const bus = this.#bus;
    if (bus?.sequenced !== true || bus.range === undefined) return undefined;
    const to = Math.min(log.first - 1, cursor + RANGE_PAGE);
    const got = await bus.range(log.topic, log.epoch, cursor + 1, to, to - cursor);
    if (got === undefined || got.length === 0 || got[0].offset !== cursor + 1) return undefined;
    const now = performance.now();
    const out: LogEntry[] = [];
    let next = cursor + 1;
    for (const { offset, message } of got) {
      if (offset !== next) break; // contiguous only; the rest on the next page
      out.push(new LogEntry(log, offset, now, message, message.payload.length));
      next++;
    }
    return out;
  }

  /**
   * Feeds a `netkit.v1` connection `log`'s messages after `cursor` (after
   * `answer`, if one is still to be sent), keeping its backlog under the
   * link's window, until it has them all — then, in the same turn (no
   * publish can come between), it is live again. If the log is trimmed past
   * the cursor meanwhile (a client slower than the history is long), it is
   * told `recovered: false` and goes on from the head: never a silent gap.
   */
  async #replay(
    conn: Subscriber,
    session: Session,
    log: TopicLog,
    cursor: number,
    answer?: PreparedMessage,
    undecided = false,
  ): Promise<void> {
    const { topic } = log;
    const skips = session.replaying.get(topic)!;
    const link = session.link;
    const history = this.#history!;
    const aheadUntil = performance.now() + AHEAD_WAIT;
    let drops = 0;
    // Whether the connection is still this replay's.
    const current = () =>
      this.#sessions.get(conn) === session && session.replaying.get(topic) === skips;
    const decided = (recovered: boolean, reason?: string) => {
      undecided = false;
      if (recovered) {
        answer = new PreparedMessage(
          formatSubscribed(topic, log.epoch, cursor, { recovered: true }),
        );
      } else {
        answer = new PreparedMessage(
          formatSubscribed(topic, log.epoch, log.head, { recovered: false, reason }),
        );
        cursor = log.head;
      }
    };
    try {
      for (;;) {
        // Gone, unsubscribed, or subscribed anew (another replay, or live).
        if (!current()) return;
        const now = performance.now();
        const latest = history.get(topic, now);
        if (latest !== undefined && latest !== log) {
          // A sequenced bus started a new epoch meanwhile.
          log = latest;
          decided(false, "epoch");
        }
        log.trim(now, history.bounds);
        if (undecided && cursor > log.head) {
          // Asked from a position this process has not read yet.
          if (now > aheadUntil) decided(false, "epoch");
          else {
            await new Promise((resolve) => setTimeout(resolve, 20));
            continue;
          }
        }
        if (cursor < log.first - 1) {
          // Without a sequenced bus no await here: trimmed is decided in this turn.
          const page = this.#bus?.sequenced === true
            ? await this.#readBack(log, cursor)
            : undefined;
          if (!current()) return;
          if (history.get(topic) !== log) continue;
          if (page === undefined) {
            decided(false, "trimmed");
          } else {
            if (undecided) decided(true);
            // The answer (if still to send), then the page, within the window.
            let i = 0;
            while (answer !== undefined || i < page.length) {
              const entry = answer === undefined ? page[i] : undefined;
              const message = answer ?? entry!.envelope();
              const size = message.frame.length;
              const buffered = link.bufferedAmount;
              if (buffered > 0 && buffered + size > link.window) {
                await link.waitBelow(Math.max(0, link.window - size));
                if (!current()) return;
                continue;
              }
              const status = link.send(message);
              if (status === "closed") return;
              if (status === "dropped") {
                if (++drops > 3) return link.fail("netkit.v1: cannot catch up");
                await link.waitBelow(0);
                if (!current()) return;
                continue;
              }
              drops = 0;
              if (entry === undefined) answer = undefined;
              else {
                i++;
                cursor = entry.offset;
              }
            }
            continue;
          }
        }
        if (undecided) decided(true);
        let wait = -1;
        while (answer !== undefined || cursor < log.head) {
          const entry = answer === undefined ? log.at(cursor + 1)! : undefined;
          const message = answer ?? (skips.has(entry!.offset) ? entry!.skip() : entry!.envelope());
          const size = message.frame.length;
          const buffered = link.bufferedAmount;
          if (buffered > 0 && buffered + size > link.window) {
            wait = Math.max(0, link.window - size);
            break;
          }
          const status = link.send(message);
          if (status === "closed") return;
          if (status === "dropped") {
            // Dropping ends once the backlog has drained; if it does not, give up.
            if (++drops > 3) return link.fail("netkit.v1: cannot catch up");
            wait = 0;
            break;
          }
          drops = 0;
          if (entry === undefined) {
            answer = undefined;
          } else {
            skips.delete(entry.offset);
            cursor++;
          }
        }
        if (answer === undefined && cursor >= log.head) return;
        await link.waitBelow(wait);
      }
    } finally {
      // Synchronously after the last check: the next publish goes out live.
      if (session.replaying.get(topic) === skips) session.replaying.delete(topic);
    }
  }
}
