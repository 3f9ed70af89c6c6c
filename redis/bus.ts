/**
 * {@linkcode RedisBus}: a broadcast bus over Redis pub/sub, so that a
 * publish on any server reaches the subscribers of every server sharing the
 * Redis — each exactly once, type and per-publisher order kept.
 *
 * It speaks RESP2 itself, over netkit's own `tcp`/`tls` connect and io
 * reads (every read bounded), with two connections per bus: one publishes
 * (commands pipelined in order, so Redis keeps this process's order), one
 * subscribes (one upstream subscription per topic, however many clients).
 *
 * The wire envelope, one Redis message per publish, on channel
 * `<prefix><topic>` (prefix `netkit:ws:` by default):
 *
 * | bytes | what |
 * | --- | --- |
 * | 0–1 | `"n"`, version `1` |
 * | 2–9 | origin: random per bus (per process), so a bus skips its own messages |
 * | 10–13 | sequence number (big-endian), per origin: gaps are counted as missed |
 * | 14 | WebSocket opcode: 1 text, 2 binary |
 * | 15– | payload |
 *
 * @module
 */
import type { Conn } from "../conn.ts";
import { NetkitError } from "../errors.ts";
import { hostPort } from "../internal/host.ts";
import { writeAll } from "../io/mod.ts";
import type { ManagedConn } from "../internal/socket_conn.ts";
import { connect as tcpConnect } from "../tcp/connect.ts";
import { connect as tlsConnect } from "../tls/connect.ts";
import { type BroadcastBus, busClosed, type BusListener } from "../websocket/fanout/bus.ts";
import { DEFAULT_MAX_PAYLOAD } from "../websocket/codec/constants.ts";
import { PreparedMessage } from "../websocket/fanout/prepared_message.ts";
import {
  encodeCommand,
  OversizedBulk,
  replyText,
  RespError,
  RespProtocolError,
  RespReader,
  type RespValue,
} from "./_resp.ts";
import { decodeUtf8 } from "../websocket/codec/validation.ts";
import { isMasterRole, notMaster, viaSentinels } from "./_sentinel.ts";
import {
  type RedisAddress,
  type RedisConnectionOptions,
  type RedisTarget,
  redisTarget,
} from "./url.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

// Where a Redis is: moved to url.ts, still exported from here for the
// programs that import it from this file.
export { parseRedisUrl, type RedisTarget } from "./url.ts";

/**
 * Options for {@linkcode RedisBus.connect}. Times are milliseconds. Besides
 * these, where and how to connect ({@linkcode RedisConnectionOptions}):
 * `timeout`, `reconnectDelay`, `maxReconnectDelay`, `caCerts`, and the
 * Sentinel ones (`sentinels`, `masterName`, …).
 */
export interface RedisBusOptions extends RedisConnectionOptions {
  /** Channels are `<prefix><topic>`; buses that should hear each other share it. @default {"netkit:ws:"} */
  prefix?: string;
  /**
   * The largest payload relayed, both ways; a bigger publish is not relayed
   * (counted as dropped), a bigger incoming message is skipped unread.
   * Match the servers' `maxPayload`. @default {1048576}
   */
  maxPayload?: number;
  /**
   * Bytes waiting to be written to Redis; publishes beyond it are dropped and
   * counted until Redis catches up. @default {16777216}
   */
  maxQueued?: number;
  /** PING each connection this often; one that has not answered by the next is dropped. @default {5000} */
  pingInterval?: number;
  /** Called for what happens to the connection; programs log these. */
  onEvent?: (event: RedisBusEvent) => void;
}

/** What a {@linkcode RedisBus} reports. */
export type RedisBusEvent =
  | {
    /** The connection to Redis was lost; local delivery goes on, and the bus reconnects. */
    type: "lost";
    error: unknown;
    /** Publishes sent but not acknowledged, counted as not relayed. */
    inFlight: number;
  }
  | {
    /** A reconnect attempt failed; the next comes after `delay` ms. */
    type: "retry";
    attempt: number;
    delay: number;
    error: unknown;
  }
  | {
    /** Connected and resubscribed again after `downtime` ms; `dropped` publishes were not relayed meanwhile. */
    type: "back";
    downtime: number;
    dropped: number;
    attempts: number;
  }
  | {
    /** Another process's messages did not all arrive: a gap of `count` in its sequence. */
    type: "missed";
    count: number;
  }
  | {
    /** Redis fell behind: `dropped` publishes were over `maxQueued`, now written again. */
    type: "backlog";
    dropped: number;
  }
  | {
    /** Something to know that costs nothing but a message: an error reply, a malformed or oversized message. */
    type: "error";
    error: unknown;
  };

/** Counters of a {@linkcode RedisBus}. */
export interface RedisBusStats {
  /** Publishes handed to Redis. */
  published: number;
  /** Messages from other processes delivered here. */
  received: number;
  /** Publishes not relayed: Redis down, over `maxQueued` or `maxPayload`, or in flight when the connection dropped. */
  dropped: number;
  /** Messages from other processes that never arrived (sequence gaps). */
  missed: number;
  /** Incoming messages skipped: not netkit's envelope, bad UTF-8 text, or over `maxPayload`. */
  malformed: number;
  /** Times the connection was lost. */
  outages: number;
}

const PUB = 1;
const PING = 2;
const OTHER = 0;
const ENVELOPE = 15;
const MAX_BATCH = 256 * 1024;
const MAX_ORIGINS = 4096;
const MAX_CHANNELS = 1024;

/** The error for a Redis that cannot be used at start. */
export class RedisBusError extends NetkitError {}

/** One RESP connection: an ordered write queue and a reader. */
class Link {
  readonly conn: Conn;
  readonly reader: RespReader;
  readonly dead: Promise<unknown>;
  inflightPublishes = 0;
  awaitingPong = false;
  #resolveDead!: (cause: unknown) => void;
  #isDead = false;
  #queue: Uint8Array[] = [];
  #queued = 0;
  #flushing: Promise<void> | undefined;
  #writing = false;
  #kinds: number[] = [];
  #kindsHead = 0;
  #loop: Promise<void> | undefined;
  #onDrained: (() => void) | undefined;

  constructor(conn: Conn, maxBulk: number) {
    this.conn = conn;
    this.reader = new RespReader(conn.readable, { maxBulk });
    this.dead = new Promise((resolve) => (this.#resolveDead = resolve));
  }

  get queuedBytes(): number {
    return this.#queued;
  }

  get isDead(): boolean {
    return this.#isDead;
  }

  /** Queues a command; `kind` is recorded when its reply is to be matched. */
  send(bytes: Uint8Array, kind?: number): void {
    if (this.#isDead) return;
    if (kind !== undefined) {
      this.#kinds.push(kind);
      if (kind === PUB) this.inflightPublishes++;
    }
    this.#queue.push(bytes);
    this.#queued += bytes.length;
    if (!this.#writing) this.#flushing = this.#flush();
  }

  /** Sends a command and reads its reply: for the handshake, before the read loop. */
  async request(args: (string | Uint8Array)[]): Promise<RespValue> {
    this.send(encodeCommand(args));
    const value = await this.reader.read();
    if (value === undefined) {
      throw new RedisBusError(
        "ECONNRESET",
        "the server closed the connection during the handshake",
      );
    }
    return value;
  }

  /** Resolves once everything queued is written (or the link is dead). */
  drained(): Promise<void> {
    if (!this.#writing || this.#isDead) return Promise.resolve();
    return new Promise((resolve) => {
      const prev = this.#onDrained;
      this.#onDrained = () => {
        prev?.();
        resolve();
      };
    });
  }

  async #flush(): Promise<void> {
    this.#writing = true;
    try {
      while (this.#queue.length > 0 && !this.#isDead) {
        let batch: Uint8Array;
        if (this.#queue.length === 1 || this.#queue[0].length >= MAX_BATCH) {
          batch = this.#queue.shift()!;
        } else {
          let n = 0;
          let size = 0;
          while (n < this.#queue.length && size + this.#queue[n].length <= MAX_BATCH) {
            size += this.#queue[n++].length;
          }
          batch = new Uint8Array(size);
          let at = 0;
          for (const part of this.#queue.splice(0, n)) {
            batch.set(part, at);
            at += part.length;
          }
        }
        this.#queued -= batch.length;
        await writeAll(this.conn.writable, batch);
      }
    } catch (err) {
      this.die(err);
    } finally {
      this.#writing = false;
      const drained = this.#onDrained;
      this.#onDrained = undefined;
      drained?.();
    }
  }

  /** The kind of the oldest command still waiting for its reply. */
  nextKind(): number {
    if (this.#kindsHead >= this.#kinds.length) return OTHER;
    const kind = this.#kinds[this.#kindsHead++];
    if (this.#kindsHead > 1024 && this.#kindsHead * 2 > this.#kinds.length) {
      this.#kinds = this.#kinds.slice(this.#kindsHead);
      this.#kindsHead = 0;
    }
    if (kind === PUB) this.inflightPublishes--;
    return kind;
  }

  /** Reads replies until the connection ends, handing each to `onReply`. */
  startLoop(onReply: (value: RespValue) => void): void {
    this.#loop = (async () => {
      try {
        for (;;) {
          const value = await this.reader.read();
          if (value === undefined) throw new Error("Redis closed the connection");
          onReply(value);
          if (this.#isDead) return;
        }
      } catch (err) {
        this.die(err);
      }
    })();
  }

  die(cause: unknown): void {
    if (this.#isDead) return;
    this.#isDead = true;
    this.#queue = [];
    this.#queued = 0;
    const managed = this.conn as Partial<ManagedConn>;
    if (typeof managed.destroy === "function") managed.destroy();
    else void this.conn.close().catch(() => {});
    this.#resolveDead(cause);
  }

  /** Waits for the read loop and the writer to stop (after `die`). */
  async settle(): Promise<void> {
    await this.#loop;
    await this.#flushing;
    await this.conn.closed.catch(() => {});
  }
}

function randomOrigin(): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(8));
}

function latin1(bytes: Uint8Array): string {
  return String.fromCharCode(...bytes);
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message.split("\n")[0] : String(err);
}

/**
 * A {@linkcode BroadcastBus} over Redis pub/sub: hubs (servers) in every
 * process sharing the Redis hear each other's publishes.
 *
 * - Exactly once: a publish reaches this process's subscribers from the hub
 *   itself, and every other process's through Redis; a bus skips its own
 *   messages coming back (each carries the bus's random origin id).
 * - Order: one publishing connection, commands pipelined in order, so the
 *   messages of one publisher arrive everywhere in the order published.
 * - One upstream subscription per topic per bus, however many clients.
 * - Watched: each connection is pinged; when one drops, local delivery goes
 *   on, publishes meanwhile are dropped and counted, and the bus reconnects
 *   with backoff (100 ms doubling to 5 s, with jitter) and resubscribes,
 *   reporting `lost`, `retry` and `back` (with the count) to `onEvent`.
 * - Sentinel (`redis+sentinel://…/mastername`, or the `sentinels` option):
 *   both connections go to the master the Sentinels name (ROLE checked),
 *   asked again on every reconnect, so a failover is an outage like any
 *   other; what other processes published meanwhile is counted as missed.
 *
 * @example Every server on one Redis, one broadcast
 * ```ts
 * import { RedisBus } from "@netkit/netkit/redis";
 * import { serve } from "@netkit/netkit/websocket";
 * import assert from "node:assert/strict";
 *
 * // Each server process: a bus on the shared Redis, given to serve().
 * async function chatServer(redisUrl: string) {
 *   const bus = await RedisBus.connect(redisUrl);
 *   await bus.subscribe("chat"); // keep the topic subscribed whatever the clients do
 *   return serve({ port: 0, bus }, {
 *     open: (ws) => void ws.subscribe("chat"),
 *     message: (ws, data) => void ws.publish("chat", data, { includeSelf: true }),
 *   });
 * }
 * // No Redis answers at this URL: connect() fails at once and says why.
 * await assert.rejects(chatServer("redis://127.0.0.1:1"), { code: "ECONNREFUSED" });
 * ```
 */
export class RedisBus implements BroadcastBus, AsyncDisposable {
  /** The Redis URL, without its password. */
  readonly url: string;
  /** This bus's origin id (hex), as its messages carry it. */
  readonly origin: string;

  #target: RedisTarget;
  #prefix: string;
  #maxPayload: number;
  #maxQueued: number;
  #timeout: number;
  #pingInterval: number;
  #reconnectDelay: number;
  #maxReconnectDelay: number;
  #caCerts: string[] | undefined;
  #onEvent: (event: RedisBusEvent) => void;

  #listeners = new Set<BusListener>();
  #interest = new Map<string, number>();
  #confirmed = new Set<string>();
  #expect = new Map<string, number>();
  #waiters = new Map<string, (() => void)[]>();
  #state: "connecting" | "up" | "down" | "closed" = "connecting";
  #pub: Link | undefined;
  #sub: Link | undefined;
  #seq = 0;
  #originBytes = randomOrigin();
  #originKey: string;
  #lastSeq = new Map<string, number>();
  #channels = new Map<string, Uint8Array>();
  #stats: RedisBusStats = {
    published: 0,
    received: 0,
    dropped: 0,
    missed: 0,
    malformed: 0,
    outages: 0,
  };
  #lostAt = 0;
  #downDropped = 0;
  #overflowDropped = 0;
  #pingTimer: ReturnType<typeof setInterval> | undefined;
  #sleepTimer: ReturnType<typeof setTimeout> | undefined;
  #wake: (() => void) | undefined;
  #reconnecting: Promise<void> | undefined;
  #closing: Promise<void> | undefined;
  #abort = new AbortController();
  #handshaking = new Set<Link>();
  #lastErrorAt = -Infinity;

  private constructor(target: RedisTarget, options: RedisBusOptions) {
    this.#target = target;
    this.url = target.display;
    this.#prefix = options.prefix ?? "netkit:ws:";
    this.#maxPayload = options.maxPayload ?? DEFAULT_MAX_PAYLOAD;
    this.#maxQueued = options.maxQueued ?? 16 * 1024 * 1024;
    this.#timeout = options.timeout ?? 5000;
    this.#pingInterval = options.pingInterval ?? 5000;
    this.#reconnectDelay = options.reconnectDelay ?? 100;
    this.#maxReconnectDelay = options.maxReconnectDelay ?? 5000;
    this.#caCerts = options.caCerts;
    this.#onEvent = options.onEvent ?? (() => {});
    this.#originKey = latin1(this.#originBytes);
    this.origin = [...this.#originBytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  }

  /**
   * Connects to the Redis at `url` (two connections: publish and subscribe)
   * and checks that it answers. With a `redis+sentinel://` URL (or the
   * `sentinels` option), to the master the Sentinels name, asked again on
   * every reconnect (a failover), and checked with ROLE.
   *
   * @throws {NetkitError} `ERR_REDIS_URL` for a malformed URL; a
   *   {@linkcode RedisBusError} when nothing answers at the URL (its `code`
   *   says why: `ECONNREFUSED`, `ETIMEDOUT`, `ENOTFOUND`, `ERR_REDIS_AUTH`,
   *   `ERR_REDIS_PROTOCOL`, `ERR_REDIS_SENTINEL`, …) with a message that
   *   names the URL.
   */
  static async connect(url: string | URL, options: RedisBusOptions = {}): Promise<RedisBus> {
    const bus = new RedisBus(redisTarget(url, options), options);
    try {
      await bus.#open();
    } catch (err) {
      await bus.close();
      throw bus.#startError(err);
    }
    return bus;
  }

  get #closed(): boolean {
    return this.#state === "closed";
  }

  /** Whether both connections are up (and subscribed). */
  get connected(): boolean {
    return this.#state === "up";
  }

  /** Counters since the bus was made. */
  get stats(): RedisBusStats {
    return { ...this.#stats };
  }

  /** The topics subscribed upstream (or to be, once the connection is back). */
  get topics(): string[] {
    return [...this.#interest.keys()];
  }

  attach(listener: (topic: string, message: PreparedMessage) => void): () => void {
    if (this.#state !== "closed") this.#listeners.add(listener);
    return () => void this.#listeners.delete(listener);
  }

  subscribe(topic: string): Promise<void> {
    if (this.#state === "closed") return Promise.reject(busClosed());
    const n = this.#interest.get(topic) ?? 0;
    this.#interest.set(topic, n + 1);
    if (n === 0 && this.#sub !== undefined && !this.#sub.isDead) this.#sendSubscribe([topic]);
    if (this.#confirmed.has(topic)) return Promise.resolve();
    return new Promise((resolve) => {
      const list = this.#waiters.get(topic);
      if (list === undefined) this.#waiters.set(topic, [resolve]);
      else list.push(resolve);
    });
  }

  unsubscribe(topic: string): void {
    const n = this.#interest.get(topic);
    if (n === undefined) return;
    if (n > 1) {
      this.#interest.set(topic, n - 1);
      return;
    }
    this.#interest.delete(topic);
    this.#confirmed.delete(topic);
    this.#resolveWaiters(topic);
    if (this.#sub !== undefined && !this.#sub.isDead) {
      this.#sub.send(encodeCommand(["UNSUBSCRIBE", this.#channel(topic)]));
    }
  }

  publish(
    topic: string,
    message: PreparedMessage,
    from?: (topic: string, message: PreparedMessage) => void,
  ): void {
    for (const listener of this.#listeners) {
      if (listener !== from) listener(topic, message);
    }
    if (this.#state === "closed") return;
    if (this.#state !== "up" || this.#pub!.isDead) {
      // Down, or just lost (#onLost is a tick away): not relayed.
      this.#downDropped++;
      this.#stats.dropped++;
      return;
    }
    const payload = message.payload;
    if (payload.length > this.#maxPayload) {
      this.#stats.dropped++;
      this.#error(
        new NetkitError(
          "ERR_LIMIT_EXCEEDED",
          `a message of ${payload.length} bytes on "${topic}" is over maxPayload (${this.#maxPayload}): not relayed`,
        ),
      );
      return;
    }
    const pub = this.#pub!;
    if (pub.queuedBytes > this.#maxQueued) {
      this.#overflowDropped++;
      this.#stats.dropped++;
      return;
    }
    pub.send(this.#encodePublish(topic, message.binary, payload), PUB);
    this.#stats.published++;
    if (this.#overflowDropped > 0) {
      this.#onEvent({ type: "backlog", dropped: this.#overflowDropped });
      this.#overflowDropped = 0;
    }
  }

  /**
   * Stops: what was published is flushed to Redis (for up to a second), then
   * both connections close and the listeners are dropped. Idempotent.
   */
  close(): Promise<void> {
    return this.#closing ??= (async () => {
      const wasUp = this.#state === "up";
      this.#state = "closed";
      this.#abort.abort(busClosed());
      for (const link of this.#handshaking) link.die(busClosed());
      clearInterval(this.#pingTimer);
      clearTimeout(this.#sleepTimer);
      this.#wake?.();
      const pub = this.#pub;
      const sub = this.#sub;
      if (wasUp && pub !== undefined) {
        let timer: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([
          pub.drained(),
          new Promise<void>((resolve) => (timer = setTimeout(resolve, 1000))),
        ]);
        clearTimeout(timer);
      }
      pub?.die(busClosed());
      sub?.die(busClosed());
      await Promise.all([pub?.settle(), sub?.settle(), this.#reconnecting]);
      this.#listeners.clear();
      for (const topic of [...this.#waiters.keys()]) this.#resolveWaiters(topic);
    })();
  }

  /** Closes, as {@linkcode RedisBus.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  // --- connection ------------------------------------------------------------

  async #connectLink(role: string, address: RedisAddress): Promise<Link> {
    const { hostname, port } = address;
    const { tls, sentinel } = this.#target;
    // Messages name the server: for a Sentinel URL, the master it gave.
    const where = sentinel === undefined
      ? this.url
      : `${tls ? "rediss" : "redis"}://${hostPort(hostname, port)}`;
    const timeout = this.#timeout;
    const signal = this.#abort.signal;
    const conn = tls
      ? await tlsConnect({ hostname, port, timeout, signal, caCerts: this.#caCerts })
      : await tcpConnect({ hostname, port, timeout, signal });
    const link = new Link(conn, this.#maxPayload + ENVELOPE);
    if (signal.aborted) link.die(signal.reason);
    this.#handshaking.add(link);
    // The handshake gets what is left of the timeout, then the socket is closed.
    const timer = setTimeout(
      () =>
        link.die(
          new RedisBusError(
            "ETIMEDOUT",
            `no answer from Redis at ${where} within ${timeout / 1000}s`,
          ),
        ),
      timeout,
    );
    try {
      const { username, password } = this.#target;
      if (password !== undefined) {
        const auth = await link.request(
          username === undefined ? ["AUTH", password] : ["AUTH", username, password],
        );
        if (auth instanceof RespError) {
          throw new RedisBusError(
            "ERR_REDIS_AUTH",
            `Redis at ${where} refused the credentials in the URL: ${auth.message}`,
          );
        }
        this.#expectOk(auth, "AUTH");
      }
      const pong = await link.request(["PING"]);
      if (pong instanceof RespError && /^NOAUTH/.test(pong.message)) {
        throw new RedisBusError(
          "ERR_REDIS_AUTH",
          `Redis at ${where} needs a password: put it in the URL, ` +
            (sentinel === undefined
              ? "redis://:PASSWORD@host:port"
              : "redis+sentinel://:PASSWORD@host:port[,host:port…]/mastername"),
        );
      }
      if (pong !== "PONG") {
        throw new RedisBusError(
          "ERR_REDIS_PROTOCOL",
          `unexpected answer to PING from ${where}: ${
            JSON.stringify(replyText(pong).slice(0, 60))
          }`,
        );
      }
      if (sentinel !== undefined) {
        // The address a Sentinel gave must really be the master.
        const reply = await link.request(["ROLE"]);
        if (!isMasterRole(reply)) throw notMaster(hostPort(hostname, port), reply);
      }
      // A name for CLIENT LIST; old servers without it are fine.
      await link.request(["CLIENT", "SETNAME", `netkit-ws-${this.origin}-${role}`]);
      return link;
    } catch (err) {
      // When the timer (or close) ended the link, that is the reason, not
      // the failed read it caused.
      const cause = link.isDead ? await link.dead : err;
      link.die(cause);
      await link.settle();
      throw cause;
    } finally {
      clearTimeout(timer);
      this.#handshaking.delete(link);
    }
  }

  #expectOk(value: RespValue | undefined, what: string): void {
    if (value !== "OK") {
      throw new RedisBusError(
        "ERR_REDIS_PROTOCOL",
        `unexpected answer to ${what} from ${this.url}: ${replyText(value).slice(0, 60)}`,
      );
    }
  }

  /** Opens both connections, resubscribes every topic, and marks the bus up. */
  async #open(): Promise<void> {
    const target = this.#target;
    let connecting: [Promise<Link>, Promise<Link>];
    if (target.sentinel !== undefined) {
      // The master as the Sentinels name it now: the publishing connection
      // finds it (ROLE checked), the subscribing one follows.
      const { link, master } = await viaSentinels(
        target.sentinel,
        {
          tls: target.tls,
          caCerts: this.#caCerts,
          timeout: this.#timeout,
          signal: this.#abort.signal,
        },
        async (master) => ({ link: await this.#connectLink("pub", master), master }),
      );
      connecting = [Promise.resolve(link), this.#connectLink("sub", master)];
    } else {
      connecting = [this.#connectLink("pub", target), this.#connectLink("sub", target)];
    }
    const results = await Promise.allSettled(connecting);
    const failed = results.find((r) => r.status === "rejected");
    if (failed !== undefined) {
      for (const r of results) {
        if (r.status === "fulfilled") {
          r.value.die(failed.reason);
          await r.value.settle();
        }
      }
      throw failed.reason;
    }
    const [pub, sub] = results.map((r) => (r as PromiseFulfilledResult<Link>).value);
    try {
      if (this.#state === "closed") throw busClosed();
      this.#pub = pub;
      this.#sub = sub;
      this.#confirmed.clear();
      this.#expect.clear();
      pub.startLoop((value) => this.#onPubReply(pub, value));
      sub.startLoop((value) => this.#onPush(value));
      const topics = [...this.#interest.keys()];
      if (topics.length > 0) {
        this.#sendSubscribe(topics);
        let timer: ReturnType<typeof setTimeout> | undefined;
        const all = Promise.all(topics.map((t) =>
          new Promise<void>((resolve) => {
            const list = this.#waiters.get(t);
            if (list === undefined) this.#waiters.set(t, [resolve]);
            else list.push(resolve);
          })
        ));
        const timeout = new Promise<never>((_, reject) => {
          timer = setTimeout(
            () =>
              reject(
                new RedisBusError(
                  "ETIMEDOUT",
                  `Redis at ${this.url} did not confirm SUBSCRIBE within ${this.#timeout / 1000}s`,
                ),
              ),
            this.#timeout,
          );
        });
        const died = Promise.race([pub.dead, sub.dead]).then((cause) => {
          throw cause;
        });
        try {
          await Promise.race([all, timeout, died]);
        } finally {
          clearTimeout(timer);
        }
      }
      if (this.#closed) throw busClosed();
      if (pub.isDead || sub.isDead) throw await Promise.race([pub.dead, sub.dead]);
    } catch (err) {
      pub.die(err);
      sub.die(err);
      await Promise.all([pub.settle(), sub.settle()]);
      throw err;
    }
    this.#state = "up";
    this.#pingTimer = setInterval(() => this.#ping(), this.#pingInterval);
    void Promise.race([pub.dead, sub.dead]).then((cause) => this.#onLost(cause, pub, sub));
  }

  #ping(): void {
    for (const link of [this.#pub, this.#sub]) {
      if (link === undefined || link.isDead) continue;
      if (link.awaitingPong) {
        link.die(
          new RedisBusError(
            "ETIMEDOUT",
            `Redis at ${this.url} did not answer PING within ${this.#pingInterval / 1000}s`,
          ),
        );
        continue;
      }
      link.awaitingPong = true;
      link.send(encodeCommand(["PING"]), link === this.#pub ? PING : undefined);
    }
  }

  #onLost(cause: unknown, pub: Link, sub: Link): void {
    if (this.#state !== "up" || this.#pub !== pub) return;
    this.#state = "down";
    clearInterval(this.#pingTimer);
    this.#lostAt = performance.now();
    const inFlight = pub.inflightPublishes;
    this.#downDropped += inFlight;
    this.#stats.dropped += inFlight;
    this.#stats.outages++;
    pub.die(cause);
    sub.die(cause);
    this.#confirmed.clear();
    this.#expect.clear();
    this.#onEvent({ type: "lost", error: cause, inFlight });
    this.#reconnecting = this.#reconnect(pub, sub);
  }

  async #reconnect(pub: Link, sub: Link): Promise<void> {
    await Promise.all([pub.settle(), sub.settle()]);
    let delay = this.#reconnectDelay;
    let attempts = 0;
    while (this.#state === "down") {
      const wait = Math.round(delay * (0.8 + Math.random() * 0.4));
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
        this.#sleepTimer = setTimeout(resolve, wait);
      });
      this.#wake = undefined;
      if (this.#state !== "down") return;
      attempts++;
      try {
        await this.#open();
      } catch (err) {
        if (this.#state !== "down") return;
        delay = Math.min(delay * 2, this.#maxReconnectDelay);
        this.#onEvent({ type: "retry", attempt: attempts, delay, error: err });
        continue;
      }
      const downtime = performance.now() - this.#lostAt;
      this.#onEvent({ type: "back", downtime, dropped: this.#downDropped, attempts });
      this.#downDropped = 0;
      return;
    }
  }

  #startError(err: unknown): unknown {
    if (err instanceof RedisBusError) return err;
    if (err instanceof RespProtocolError) {
      return new RedisBusError(
        "ERR_REDIS_PROTOCOL",
        `${this.url} does not speak the Redis protocol: ${err.message}`,
        { cause: err },
      );
    }
    if (err instanceof NetkitError) {
      return new RedisBusError(err.code, `cannot reach Redis at ${this.url}: ${err.message}`, {
        cause: err,
      });
    }
    return new RedisBusError(
      "ERR_REDIS_CONNECT",
      `cannot reach Redis at ${this.url}: ${errorText(err)}`,
      { cause: err },
    );
  }

  // --- traffic ---------------------------------------------------------------

  #channel(topic: string): Uint8Array {
    let channel = this.#channels.get(topic);
    if (channel === undefined) {
      channel = encoder.encode(this.#prefix + topic);
      if (this.#channels.size >= MAX_CHANNELS) this.#channels.clear();
      this.#channels.set(topic, channel);
    }
    return channel;
  }

  #sendSubscribe(topics: string[]): void {
    for (const topic of topics) this.#expect.set(topic, (this.#expect.get(topic) ?? 0) + 1);
    this.#sub!.send(encodeCommand(["SUBSCRIBE", ...topics.map((t) => this.#channel(t))]));
  }

  #resolveWaiters(topic: string): void {
    const list = this.#waiters.get(topic);
    if (list === undefined) return;
    this.#waiters.delete(topic);
    for (const resolve of list) resolve();
  }

  /** `*3 $7 PUBLISH $n channel $n envelope`, built in one buffer. */
  #encodePublish(topic: string, binary: boolean, payload: Uint8Array): Uint8Array {
    const channel = this.#channel(topic);
    const bodyLength = ENVELOPE + payload.length;
    const head = encoder.encode(`*3\r\n$7\r\nPUBLISH\r\n$${channel.length}\r\n`);
    const mid = encoder.encode(`\r\n$${bodyLength}\r\n`);
    const out = new Uint8Array(head.length + channel.length + mid.length + bodyLength + 2);
    let at = 0;
    out.set(head, at);
    at += head.length;
    out.set(channel, at);
    at += channel.length;
    out.set(mid, at);
    at += mid.length;
    out[at] = 0x6e; // "n"
    out[at + 1] = 1;
    out.set(this.#originBytes, at + 2);
    const seq = this.#seq;
    this.#seq = (seq + 1) >>> 0;
    new DataView(out.buffer, out.byteOffset + at + 10, 4).setUint32(0, seq);
    out[at + 14] = binary ? 2 : 1;
    out.set(payload, at + ENVELOPE);
    at += bodyLength;
    out[at] = 0x0d;
    out[at + 1] = 0x0a;
    return out;
  }

  #onPubReply(pub: Link, value: RespValue): void {
    const kind = pub.nextKind();
    if (kind === PING) pub.awaitingPong = false;
    if (value instanceof RespError) this.#error(new Error(`Redis: ${value.message}`));
  }

  /** Reports an error event, at most one a second: a broken peer must not flood the log. */
  #error(error: unknown): void {
    const now = performance.now();
    if (now - this.#lastErrorAt < 1000) return;
    this.#lastErrorAt = now;
    this.#onEvent({ type: "error", error });
  }

  #onPush(value: RespValue): void {
    const sub = this.#sub;
    if (!Array.isArray(value)) {
      // "+PONG" while nothing is subscribed, or an error reply.
      if (value === "PONG" && sub !== undefined) sub.awaitingPong = false;
      else if (value instanceof RespError) this.#error(new Error(`Redis: ${value.message}`));
      return;
    }
    const kind = value[0] instanceof Uint8Array ? decoder.decode(value[0]) : "";
    switch (kind) {
      case "message":
        this.#onMessage(value[1], value[2]);
        return;
      case "subscribe": {
        const topic = this.#topicOf(value[1]);
        if (topic === undefined) return;
        const left = (this.#expect.get(topic) ?? 1) - 1;
        if (left > 0) {
          this.#expect.set(topic, left);
          return;
        }
        this.#expect.delete(topic);
        if (this.#interest.has(topic)) {
          this.#confirmed.add(topic);
          this.#resolveWaiters(topic);
        }
        return;
      }
      case "pong":
        if (sub !== undefined) sub.awaitingPong = false;
        return;
      default:
        return; // "unsubscribe" confirmations
    }
  }

  #topicOf(channel: RespValue): string | undefined {
    if (!(channel instanceof Uint8Array)) return undefined;
    const name = decoder.decode(channel);
    return name.startsWith(this.#prefix) ? name.slice(this.#prefix.length) : undefined;
  }

  #onMessage(channel: RespValue, body: RespValue): void {
    const topic = this.#topicOf(channel);
    if (topic === undefined || !this.#interest.has(topic)) return;
    if (body instanceof OversizedBulk) {
      this.#malformed(`a message of ${body.length} bytes on "${topic}" over maxPayload: skipped`);
      return;
    }
    if (
      !(body instanceof Uint8Array) || body.length < ENVELOPE || body[0] !== 0x6e ||
      body[1] !== 1 || (body[14] !== 1 && body[14] !== 2)
    ) {
      this.#malformed(`a message on "${topic}" that is not netkit's: skipped`);
      return;
    }
    const origin = latin1(body.subarray(2, 10));
    if (origin === this.#originKey) return; // ours: local subscribers had it already
    const seq = new DataView(body.buffer, body.byteOffset + 10, 4).getUint32(0);
    this.#checkSequence(origin, seq);
    const payload = body.subarray(ENVELOPE);
    let data: string | Uint8Array = payload;
    if (body[14] === 1) {
      const text = decodeUtf8(payload);
      if (text === undefined) {
        this.#malformed(`a text message on "${topic}" that is not UTF-8: skipped`);
        return;
      }
      data = text;
    }
    this.#stats.received++;
    const message = new PreparedMessage(data, body[14] === 2);
    for (const listener of this.#listeners) {
      try {
        listener(topic, message);
      } catch (err) {
        // A listener's bug must not cost the connection everyone shares.
        this.#error(err);
      }
    }
  }

  #checkSequence(origin: string, seq: number): void {
    const last = this.#lastSeq.get(origin);
    if (last === undefined) {
      if (this.#lastSeq.size >= MAX_ORIGINS) {
        this.#lastSeq.delete(this.#lastSeq.keys().next().value!);
      }
    } else {
      const gap = (seq - last - 1) >>> 0;
      // A huge "gap" is a reordering or a restart, not a loss worth reporting.
      if (gap > 0 && gap < 0x80000000) {
        this.#stats.missed += gap;
        this.#onEvent({ type: "missed", count: gap });
      }
    }
    this.#lastSeq.set(origin, seq);
  }

  #malformed(message: string): void {
    this.#stats.malformed++;
    this.#error(new NetkitError("ERR_REDIS_MESSAGE", message));
  }
}
