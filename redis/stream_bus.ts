/**
 * {@linkcode RedisStreamBus}: a broadcast bus that carries every publish
 * through one Redis Stream per topic, so that a message has the same
 * position (epoch + offset) in every process and a `netkit.v1` client can
 * resume against any of them.
 *
 * Keys, per topic, all with the hash tag `{<topic>}` (one Cluster slot):
 *
 * | key | what |
 * | --- | --- |
 * | `<prefix>{<topic>}:log` | the stream; entry ID `<offset>-0`, fields `e` epoch, `o` origin, `s` sequence, `y` type (`t`/`b`), `p` payload |
 * | `<prefix>{<topic>}:epoch` | the log's epoch: made when missing, so it changes when Redis loses its data |
 * | `<prefix>{<topic>}:seq` | the last offset given (INCR: consecutive across processes) |
 * | `<prefix>{<topic>}:origins` | per publishing process, the last sequence added: a retried publish is not added twice |
 * | `<prefix>{<topic>}:id:<key>` | an acknowledged publish's idempotency key (expires after the history TTL) |
 *
 * A publish is one Lua script (EVALSHA). Each process reads the streams of
 * its topics with XREAD BLOCK on a connection of its own (one per slot in
 * Cluster mode) from the last ID it read, and delivers what it reads — its
 * own publishes too, so every process sees one order and one set of
 * positions. While Redis is down, publishes are delivered locally at once
 * (without a position) and queued, bounded; once it is back they are added
 * (exactly once: the origin's sequence), and the readers go on from their
 * last ID — no gap — or, when the log was lost (a new epoch) or trimmed past
 * it, say so to the hubs, which answer resuming clients `recovered: false`.
 *
 * @module
 */
import { NetkitError } from "../errors.ts";
import type {
  BroadcastBus,
  BusEntry,
  BusListener,
  BusPosition,
  BusPositionListener,
  BusPublishOptions,
} from "../websocket/fanout/bus.ts";
import { busClosed } from "../websocket/fanout/bus.ts";
import { PreparedMessage } from "../websocket/fanout/prepared_message.ts";
import { DEFAULT_MAX_PAYLOAD } from "../websocket/codec/constants.ts";
import { decodeUtf8 } from "../websocket/codec/validation.ts";
import { RedisClient, type RedisConnection, slotOf } from "./_client.ts";
import { OversizedBulk, type RespValue } from "./_resp.ts";

const decoder = new TextDecoder();

/** Options for {@linkcode RedisStreamBus.connect}. Times are milliseconds. */
export interface RedisStreamBusOptions {
  /** Keys are `<prefix>{<topic>}:…`; buses that should hear each other share it. @default {"netkit:ws:"} */
  prefix?: string;
  /**
   * Messages each topic's stream keeps (MAXLEN): how far back a resume can
   * reach. At least 1000, whatever is asked: the stream is also what a
   * reader catches up from, and one that falls further behind than the
   * stream is long misses messages (counted, and said to the hubs).
   * @default {1000}
   */
  historySize?: number;
  /** How long an acknowledged publish's id is remembered (deduplicated). @default {300000} */
  historyTtl?: number;
  /** The largest payload relayed; a bigger publish is delivered locally only (counted). @default {1048576} */
  maxPayload?: number;
  /** Publishes queued while Redis is down (or behind), at most; past it dropped and counted. @default {10000} */
  maxQueued?: number;
  /** Payload bytes queued, at most. @default {16777216} */
  maxQueuedBytes?: number;
  /** Connecting, per attempt. @default {5000} */
  timeout?: number;
  /** The first reconnect delay; it doubles, with jitter, up to `maxReconnectDelay`. @default {100} */
  reconnectDelay?: number;
  /** The longest reconnect delay. @default {5000} */
  maxReconnectDelay?: number;
  /** For `rediss://`: CA certificates (PEM) to trust besides the system's. */
  caCerts?: string[];
  /** Called for what happens to the connection; programs log these. */
  onEvent?: (event: RedisStreamBusEvent) => void;
}

/** What a {@linkcode RedisStreamBus} reports. */
export type RedisStreamBusEvent =
  | {
    /** Redis cannot be reached: publishes are delivered locally and queued; the bus reconnects. */
    type: "lost";
    error: unknown;
  }
  | {
    /** A reconnect attempt failed; the next comes after `delay` ms. */
    type: "retry";
    attempt: number;
    delay: number;
    error: unknown;
  }
  | {
    /**
     * Reachable again after `downtime` ms: `queued` publishes made meanwhile
     * are being relayed; `dropped` were over the bounds and never will be.
     */
    type: "back";
    downtime: number;
    queued: number;
    dropped: number;
    attempts: number;
  }
  | {
    /** A topic's log was lost (Redis restarted without persistence, flushed): a new epoch. */
    type: "epoch";
    topic: string;
    epoch: string;
  }
  | {
    /** `count` messages of `topic` were trimmed from its stream before this process read them. */
    type: "missed";
    topic: string;
    count: number;
  }
  | {
    /** Something to know: an error reply, a malformed entry. */
    type: "error";
    error: unknown;
  };

/** Counters of a {@linkcode RedisStreamBus}. */
export interface RedisStreamBusStats {
  /** Publishes added to the log (retries not counted twice). */
  published: number;
  /** Messages read from the logs and delivered (this process's own included). */
  received: number;
  /** Publishes never relayed: over the queue bounds or `maxPayload`, or refused by Redis. */
  dropped: number;
  /** Messages trimmed before they were read, or lost with the log. */
  missed: number;
  /** Publishes made while Redis was down, delivered locally at once and queued. */
  queuedWhileDown: number;
  /** Entries skipped: not netkit's, bad UTF-8 text, over `maxPayload`. */
  malformed: number;
  /** Times Redis was lost. */
  outages: number;
}

/** The error for a Redis that cannot be used at start. */
export class RedisStreamBusError extends NetkitError {}

// The epoch: GET it, or make it (new log: no stream, seq 0). Shared by both scripts.
const EPOCH_LUA = `
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[2], epoch)
  redis.call('DEL', KEYS[1], KEYS[4])
  redis.call('SET', KEYS[3], 0)
end
`;

// KEYS: log, epoch, seq, origins [, id]. ARGV: new epoch, maxlen, ttl (s),
// origin, sequence, type, payload. Returns {epoch, offset, duplicate}.
const PUBLISH_LUA = EPOCH_LUA + `
if KEYS[5] then
  local prev = redis.call('GET', KEYS[5])
  if prev then
    local e, o = string.match(prev, '^(%S+) (%d+)$')
    if e == epoch then return {epoch, tonumber(o), 1} end
  end
end
local last = redis.call('HGET', KEYS[4], ARGV[4])
if last and tonumber(last) >= tonumber(ARGV[5]) then return {epoch, 0, 1} end
local offset = redis.call('INCR', KEYS[3])
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], offset .. '-0',
  'e', epoch, 'o', ARGV[4], 's', ARGV[5], 'y', ARGV[6], 'p', ARGV[7])
redis.call('HSET', KEYS[4], ARGV[4], ARGV[5])
redis.call('EXPIRE', KEYS[4], ARGV[3])
if KEYS[5] then redis.call('SET', KEYS[5], epoch .. ' ' .. offset, 'EX', ARGV[3]) end
return {epoch, offset, 0}
`;

// KEYS: log, epoch, seq, origins. ARGV: new epoch, the offset this process
// read up to in that epoch (or ""). Returns {epoch, seq}. A log that went
// back in time (restored from an older snapshot) gets a new epoch: the
// offsets it would give again were given already.
const POSITION_LUA = EPOCH_LUA + `
local seq = tonumber(redis.call('GET', KEYS[3]) or '0')
if ARGV[2] ~= '' and ARGV[3] == epoch and seq < tonumber(ARGV[2]) then
  epoch = ARGV[1]
  redis.call('SET', KEYS[2], epoch)
  redis.call('SET', KEYS[3], ARGV[2])
  seq = tonumber(ARGV[2])
end
return {epoch, seq}
`;

const WINDOW = 512; // publishes in flight at once
const MIN_STREAM_LENGTH = 1000;
const READ_COUNT = 1000; // entries per XREAD
const BLOCK_MS = 5000;
const RANGE_MAX = 1000;

/** A log's epoch: 64 random bits, base64url (11 characters), as the hub's. */
function newEpoch(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_")
    .replace(/=+$/, "");
}

function text(value: RespValue | undefined): string {
  if (value instanceof Uint8Array) return decoder.decode(value);
  if (typeof value === "number" || typeof value === "bigint") return String(value);
  return typeof value === "string" ? value : "";
}

interface Keys {
  log: string;
  epoch: string;
  seq: string;
  origins: string;
  id: string;
}

/** A publish on its way to the log. */
interface Pending {
  topic: string;
  keys: Keys;
  message: PreparedMessage;
  seq: number;
  from: BusListener | undefined;
  tag: unknown;
  idKey: string | undefined;
  onPosition: ((position: BusPosition | undefined) => void) | undefined;
  /** Published while down: already delivered here. */
  local: boolean;
  done: boolean;
  /** Once added: where. */
  position: BusPosition | undefined;
}

/** One subscribed topic. */
interface Topic {
  name: string;
  keys: Keys;
  interest: number;
  /** Known once the subscription is set up; `undefined` while (re)establishing. */
  epoch: string | undefined;
  /** The last offset read in that epoch. */
  cursor: number;
  /** The epoch last known, kept while re-establishing after a loss. */
  lastEpoch: string | undefined;
  ready: Promise<void>;
  group: Group | undefined;
  /** Own publishes added, in order, until read back (or passed). */
  confirmed: Pending[];
}

/** Topics read with one blocking XREAD (all of them; one slot's in Cluster mode). */
interface Group {
  id: number;
  topics: Set<Topic>;
  conn: RedisConnection | undefined;
  clientId: string | undefined;
  blocked: boolean;
  loop: Promise<void> | undefined;
  wake: (() => void) | undefined;
}

/**
 * A sequenced {@linkcode BroadcastBus} over Redis Streams: hubs in every
 * process sharing the Redis (single node or Cluster) share their publishes,
 * each message with one position in its topic's log everywhere, so
 * `netkit.v1` clients resume against any process — replayed from the
 * stream when the process's own history does not reach back far enough.
 *
 * Guarantees: while Redis is up, every message reaches every subscribed
 * process once, in the log's order. While it is down, each process goes on
 * broadcasting locally and queues its publishes (bounded by `maxQueued` and
 * `maxQueuedBytes`; past them, dropped and counted); once Redis is back they
 * are added to the log exactly once (a retried publish carries its origin
 * and sequence), reach the other processes, and the readers catch up from
 * their last ID. A log that Redis lost comes back with a new epoch.
 *
 * @example Connecting fails at once, and says why
 * ```ts
 * import { RedisStreamBus } from "@netkit/netkit/redis";
 * import assert from "node:assert/strict";
 *
 * // Each server process: `bus = await RedisStreamBus.connect(url)`, then
 * // `serve({ port: 0, bus, historySize: 1000 }, handler)`.
 * await assert.rejects(RedisStreamBus.connect("redis://127.0.0.1:1"), {
 *   code: "ERR_REDIS_CONNECT",
 * });
 * ```
 */
export class RedisStreamBus implements BroadcastBus, AsyncDisposable {
  /** Always: positions come from the log. */
  readonly sequenced = true;
  /** The Redis URL, without its password. */
  readonly url: string;
  /** This bus's origin id (hex), as its entries carry it. */
  readonly origin: string;

  #client: RedisClient;
  #prefix: string;
  #historySize: number;
  #ttlSeconds: string;
  #maxPayload: number;
  #maxQueued: number;
  #maxQueuedBytes: number;
  #reconnectDelay: number;
  #maxReconnectDelay: number;
  #onEvent: (event: RedisStreamBusEvent) => void;

  #listeners: { listener: BusListener; onPosition: BusPositionListener | undefined }[] = [];
  #topics = new Map<string, Topic>();
  #byLogKey = new Map<string, Topic>();
  #groups = new Map<number, Group>();
  #state: "up" | "down" | "closed" = "up";
  #seq = 0;
  #epochCandidate = newEpoch();
  // Publishes not yet added, in order (#head: the oldest not done).
  #queue: Pending[] = [];
  #head = 0;
  #next = 0;
  #queuedBytes = 0;
  #sending = 0;
  // Per topic and origin, the last sequence delivered.
  #lastSeq = new Map<string, number>();
  // Own publishes by sequence, until read back.
  #awaiting = new Map<number, Pending>();
  #stats: RedisStreamBusStats = {
    published: 0,
    received: 0,
    dropped: 0,
    missed: 0,
    queuedWhileDown: 0,
    malformed: 0,
    outages: 0,
  };
  #lostAt = 0;
  #downQueued = 0;
  #downDropped = 0;
  #recovering: Promise<void> | undefined;
  #sleeps = new Set<{ timer: ReturnType<typeof setTimeout>; resolve: () => void }>();
  #closing: Promise<void> | undefined;
  #flushed: (() => void) | undefined;

  private constructor(client: RedisClient, options: RedisStreamBusOptions) {
    this.#client = client;
    this.url = client.url;
    this.origin = [...crypto.getRandomValues(new Uint8Array(8))]
      .map((b) => b.toString(16).padStart(2, "0")).join("");
    this.#prefix = options.prefix ?? "netkit:ws:";
    this.#historySize = Math.max(MIN_STREAM_LENGTH, options.historySize ?? 0);
    this.#ttlSeconds = String(Math.max(1, Math.ceil((options.historyTtl ?? 300_000) / 1000)));
    this.#maxPayload = options.maxPayload ?? DEFAULT_MAX_PAYLOAD;
    this.#maxQueued = options.maxQueued ?? 10_000;
    this.#maxQueuedBytes = options.maxQueuedBytes ?? 16 * 1024 * 1024;
    this.#reconnectDelay = options.reconnectDelay ?? 100;
    this.#maxReconnectDelay = options.maxReconnectDelay ?? 5000;
    this.#onEvent = options.onEvent ?? (() => {});
  }

  /**
   * Connects to Redis (`redis://`, `rediss://`; several URLs are Cluster
   * seeds) and checks it answers.
   *
   * @throws {NetkitError} `ERR_REDIS_URL`, `ERR_REDIS_AUTH`, `ERR_REDIS_CONNECT`
   *   (nothing answers: the message names the URL and why).
   */
  static async connect(
    urls: string | string[],
    options: RedisStreamBusOptions = {},
  ): Promise<RedisStreamBus> {
    const maxPayload = options.maxPayload ?? DEFAULT_MAX_PAYLOAD;
    const client = await RedisClient.connect(urls, {
      caCerts: options.caCerts,
      timeout: options.timeout,
      // An entry is its payload plus a few short fields; XREAD replies are
      // arrays of up to READ_COUNT entries.
      maxBulkSize: maxPayload + 1024,
    });
    return new RedisStreamBus(client, options);
  }

  /** Whether the client talks to a Redis Cluster. */
  get cluster(): boolean {
    return this.#client.cluster;
  }

  /** Counters so far. */
  stats(): RedisStreamBusStats {
    return { ...this.#stats };
  }

  /** The topics subscribed (with at least one interest). */
  get topics(): string[] {
    return [...this.#topics.keys()];
  }

  attach(listener: BusListener, onPosition?: BusPositionListener): () => void {
    const entry = { listener, onPosition };
    if (!this.#isClosed()) this.#listeners.push(entry);
    return () => {
      this.#listeners = this.#listeners.filter((e) => e !== entry);
    };
  }

  subscribe(topic: string): Promise<void> {
    if (this.#isClosed()) return Promise.reject(busClosed());
    const known = this.#topics.get(topic);
    if (known !== undefined) {
      known.interest++;
      return known.ready;
    }
    const t: Topic = {
      name: topic,
      keys: this.#keys(topic),
      interest: 1,
      epoch: undefined,
      cursor: 0,
      lastEpoch: undefined,
      ready: Promise.resolve(),
      group: undefined,
      confirmed: [],
    };
    this.#topics.set(topic, t);
    this.#byLogKey.set(t.keys.log, t);
    t.ready = this.#establish(t);
    return t.ready;
  }

  unsubscribe(topic: string): void {
    const t = this.#topics.get(topic);
    if (t === undefined) return;
    if (--t.interest > 0) return;
    this.#topics.delete(topic);
    this.#byLogKey.delete(t.keys.log);
    const group = t.group;
    if (group !== undefined) {
      group.topics.delete(t);
      if (group.topics.size === 0) {
        this.#groups.delete(group.id);
        group.conn?.close();
        group.wake?.();
      }
    }
  }

  position(topic: string): BusPosition | undefined {
    const t = this.#topics.get(topic);
    return t?.epoch === undefined ? undefined : { epoch: t.epoch, offset: t.cursor };
  }

  async range(
    topic: string,
    epoch: string,
    from: number,
    to: number,
    count: number,
  ): Promise<BusEntry[] | undefined> {
    if (this.#state !== "up" || from > to) return this.#state === "up" ? [] : undefined;
    const keys = this.#keys(topic);
    let reply: RespValue;
    try {
      reply = await this.#client.call(keys.log, [
        "XRANGE",
        keys.log,
        String(from),
        String(to),
        "COUNT",
        String(Math.max(1, Math.min(count, RANGE_MAX))),
      ]);
    } catch {
      return undefined;
    }
    if (!Array.isArray(reply)) return undefined;
    const out: BusEntry[] = [];
    for (const item of reply) {
      const entry = this.#parseEntry(item);
      if (entry === undefined) continue;
      if (entry.epoch !== epoch) return undefined;
      const message = this.#decode(topic, entry);
      if (message !== undefined) out.push({ offset: entry.offset, message });
    }
    return out;
  }

  publish(
    topic: string,
    message: PreparedMessage,
    from?: BusListener,
    options: BusPublishOptions = {},
  ): boolean {
    if (this.#isClosed()) {
      options.onPosition?.(undefined);
      return false;
    }
    const size = message.payload.length;
    const over = size > this.#maxPayload ||
      this.#queue.length - this.#head >= this.#maxQueued ||
      this.#queuedBytes + size > this.#maxQueuedBytes;
    const down = this.#state === "down";
    if (over) {
      // Not relayed: local broadcast goes on.
      this.#stats.dropped++;
      if (down) this.#downDropped++;
      this.#deliverLocally(topic, message, from);
      options.onPosition?.(undefined);
      return false;
    }
    const p: Pending = {
      topic,
      keys: this.#keys(topic),
      message,
      seq: ++this.#seq,
      from,
      tag: options.tag,
      idKey: options.idempotencyKey,
      onPosition: options.onPosition,
      local: down,
      done: false,
      position: undefined,
    };
    this.#queue.push(p);
    this.#queuedBytes += size;
    this.#awaiting.set(p.seq, p);
    if (this.#awaiting.size > 2 * this.#maxQueued + WINDOW) {
      // Bounded: a read-back that never came (trimmed, or the log lost).
      this.#awaiting.delete(this.#awaiting.keys().next().value!);
    }
    if (down) {
      this.#stats.queuedWhileDown++;
      this.#downQueued++;
      this.#deliverLocally(topic, message, from);
      return false;
    }
    this.#pump();
    return true;
  }

  /**
   * Stops: what was queued is given up to a second to reach Redis, then the
   * connections close and the listeners are dropped. Idempotent.
   */
  close(): Promise<void> {
    return this.#closing ??= (async () => {
      if (this.#state === "up" && this.#head < this.#queue.length) {
        let timer: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([
          new Promise<void>((resolve) => (this.#flushed = resolve)),
          new Promise<void>((resolve) => (timer = setTimeout(resolve, 1000))),
        ]);
        clearTimeout(timer);
      }
      this.#state = "closed";
      for (const sleep of this.#sleeps) {
        clearTimeout(sleep.timer);
        sleep.resolve();
      }
      this.#sleeps.clear();
      for (const group of this.#groups.values()) {
        group.conn?.close();
        group.wake?.();
      }
      await this.#client.close();
      await Promise.all([...this.#groups.values()].map((g) => g.loop));
      await this.#recovering;
      for (const t of this.#topics.values()) await t.ready.catch(() => {});
      this.#listeners = [];
      for (let i = this.#head; i < this.#queue.length; i++) this.#queue[i].onPosition?.(undefined);
      this.#queue = [];
      this.#awaiting.clear();
    })();
  }

  /** Closes, as {@linkcode RedisStreamBus.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #isClosed(): boolean {
    return this.#state === "closed";
  }

  // --- keys ------------------------------------------------------------------

  #keys(topic: string): Keys {
    // The topic is the hash tag: every key of a topic in one slot. A topic
    // that would break the tag is written in hex.
    const tag = topic === "" || /[{}]/.test(topic)
      ? "~" + [...new TextEncoder().encode(topic)].map((b) => b.toString(16).padStart(2, "0"))
        .join("")
      : topic;
    const base = `${this.#prefix}{${tag}}:`;
    return {
      log: base + "log",
      epoch: base + "epoch",
      seq: base + "seq",
      origins: base + "origins",
      id: base + "id:",
    };
  }

  /**
   * A script, as EVAL — not EVALSHA: after a restart every EVALSHA in the
   * pipeline would get NOSCRIPT and be sent again, and a publish sent after
   * the script was loaded again could overtake an earlier one (which the
   * origin's sequence would then take for a retry). Redis keeps the
   * compiled script: what EVAL costs is the script's bytes on the wire.
   */
  #eval(script: string, keys: string[], args: (string | Uint8Array)[]): Promise<RespValue> {
    return this.#client.call(keys[0], ["EVAL", script, String(keys.length), ...keys, ...args]);
  }

  #candidate(used: string): void {
    if (used === this.#epochCandidate) this.#epochCandidate = newEpoch();
  }

  // --- publishing ------------------------------------------------------------

  #deliverLocally(topic: string, message: PreparedMessage, from: BusListener | undefined): void {
    for (const { listener } of this.#listeners) {
      if (listener === from) continue;
      try {
        listener(topic, message);
      } catch (err) {
        this.#onEvent({ type: "error", error: err });
      }
    }
  }

  #pump(): void {
    while (this.#state === "up" && this.#sending < WINDOW && this.#next < this.#queue.length) {
      const p = this.#queue[this.#next++];
      if (p.done) continue;
      this.#sending++;
      const keys = [p.keys.log, p.keys.epoch, p.keys.seq, p.keys.origins];
      if (p.idKey !== undefined) keys.push(p.keys.id + p.idKey);
      const epoch = this.#epochCandidate;
      this.#eval(PUBLISH_LUA, keys, [
        epoch,
        String(this.#historySize),
        this.#ttlSeconds,
        this.origin,
        String(p.seq),
        p.message.binary ? "b" : "t",
        p.message.payload,
      ]).then(
        (reply) => this.#added(p, reply, epoch),
        (err) => this.#failed(p, err),
      ).finally(() => {
        this.#sending--;
        if (this.#state === "up") this.#pump();
      });
    }
  }

  #added(p: Pending, reply: RespValue, candidate: string): void {
    if (!Array.isArray(reply) || reply.length < 3) {
      this.#failed(p, new NetkitError("ERR_REDIS_REPLY", `unexpected publish reply`));
      return;
    }
    const epoch = text(reply[0]);
    this.#candidate(candidate === epoch ? epoch : "");
    const offset = Number(reply[1]);
    const duplicate = Number(reply[2]) === 1;
    this.#settle(p);
    if (!duplicate) this.#stats.published++;
    if (offset > 0) {
      p.position = { epoch, offset };
      const t = this.#topics.get(p.topic);
      if (this.#awaiting.has(p.seq)) {
        // Not read back yet: kept until the reader reaches it (or passes it).
        if (t !== undefined) t.confirmed.push(p);
        else this.#awaiting.delete(p.seq);
      }
    }
    // (offset 0: a retry of a publish added before; its read-back matches it.)
    p.onPosition?.(offset > 0 ? { epoch, offset } : undefined);
  }

  #failed(p: Pending, err: unknown): void {
    if (this.#isClosed()) return;
    if (err instanceof NetkitError && err.code === "ERR_REDIS_REPLY") {
      // Refused (a script error, OOM …): not relayed; delivered here at least.
      this.#settle(p);
      this.#stats.dropped++;
      this.#awaiting.delete(p.seq);
      if (!p.local) {
        for (const { listener } of this.#listeners) {
          try {
            listener(p.topic, p.message, undefined, listener === p.from ? p.tag : undefined);
          } catch (error) {
            this.#onEvent({ type: "error", error });
          }
        }
      }
      p.onPosition?.(undefined);
      this.#onEvent({ type: "error", error: err });
      return;
    }
    // Down (or behind): it stays queued, retried in order once Redis is back.
    this.#down(err);
  }

  /** Marks a publish done and drops the done ones at the head of the queue. */
  #settle(p: Pending): void {
    if (p.done) return;
    p.done = true;
    this.#queuedBytes -= p.message.payload.length;
    const queue = this.#queue;
    while (this.#head < queue.length && queue[this.#head].done) queue[this.#head++] = undefined!;
    if (this.#head === queue.length) {
      this.#queue = [];
      this.#head = 0;
      this.#next = 0;
      this.#flushed?.();
    } else if (this.#head > 1024 && this.#head * 2 > queue.length) {
      this.#queue = queue.slice(this.#head);
      this.#next -= this.#head;
      this.#head = 0;
    }
  }

  // --- up and down -----------------------------------------------------------

  #down(err: unknown): void {
    if (this.#state !== "up") return;
    this.#state = "down";
    this.#lostAt = performance.now();
    this.#stats.outages++;
    this.#downQueued = 0;
    this.#downDropped = 0;
    this.#onEvent({ type: "lost", error: err });
    this.#recovering = this.#recover();
  }

  async #recover(): Promise<void> {
    let delay = this.#reconnectDelay;
    let attempts = 0;
    while (this.#state === "down") {
      await this.#sleep(Math.round(delay * (0.8 + Math.random() * 0.4)));
      if (this.#state !== "down") return;
      attempts++;
      try {
        await this.#client.call(undefined, ["PING"]);
      } catch (err) {
        if (this.#state !== "down") return;
        delay = Math.min(delay * 2, this.#maxReconnectDelay);
        this.#onEvent({ type: "retry", attempt: attempts, delay, error: err });
        continue;
      }
      // Publishes in flight when it went down have settled by now (their
      // connection died); retry everything not done, in order.
      while (this.#sending > 0 && this.#state === "down") await this.#sleep(5);
      if (this.#state !== "down") return;
      this.#state = "up";
      this.#next = this.#head;
      this.#onEvent({
        type: "back",
        downtime: performance.now() - this.#lostAt,
        queued: this.#downQueued,
        dropped: this.#downDropped,
        attempts,
      });
      this.#pump();
      for (const group of this.#groups.values()) group.wake?.();
      for (const t of this.#topics.values()) if (t.epoch === undefined) void this.#reestablish(t);
      return;
    }
  }

  #sleep(ms: number): Promise<void> {
    if (this.#isClosed()) return Promise.resolve();
    return new Promise((resolve) => {
      const sleep = {
        timer: setTimeout(() => {
          this.#sleeps.delete(sleep);
          resolve();
        }, ms),
        resolve,
      };
      this.#sleeps.add(sleep);
    });
  }

  // --- subscriptions and reading -----------------------------------------------

  /** Reads where `t`'s log stands (making its epoch if need be); retried until it works. */
  async #establish(t: Topic): Promise<void> {
    let delay = this.#reconnectDelay;
    for (;;) {
      if (this.#isClosed()) throw busClosed();
      if (this.#topics.get(t.name) !== t) return;
      try {
        await this.#readPosition(t);
        break;
      } catch (err) {
        if (this.#isClosed()) throw busClosed();
        if (err instanceof NetkitError && err.code !== "ERR_REDIS_REPLY") this.#down(err);
        await this.#sleep(Math.round(delay * (0.8 + Math.random() * 0.4)));
        delay = Math.min(delay * 2, this.#maxReconnectDelay);
      }
    }
    if (this.#topics.get(t.name) !== t) return;
    this.#join(t);
  }

  /** After a loss: the same as establishing, for a topic already read (it keeps its group). */
  async #reestablish(t: Topic): Promise<void> {
    try {
      await this.#readPosition(t);
    } catch (err) {
      if (!this.#isClosed()) this.#down(err);
      return;
    }
    t.group?.wake?.();
  }

  /**
   * The position script: the epoch (made if missing) and the last offset.
   * For a topic read before in the same epoch, the cursor stays (no gap);
   * a new epoch restarts it at 0 and tells the hubs.
   */
  async #readPosition(t: Topic): Promise<void> {
    const candidate = this.#epochCandidate;
    const known = t.epoch ?? t.lastEpoch;
    const reply = await this.#eval(
      POSITION_LUA,
      [t.keys.log, t.keys.epoch, t.keys.seq, t.keys.origins],
      [candidate, known === undefined ? "" : String(t.cursor), known ?? ""],
    );
    if (!Array.isArray(reply)) throw new NetkitError("ERR_REDIS_REPLY", "unexpected reply");
    const epoch = text(reply[0]);
    this.#candidate(epoch);
    const seq = Number(reply[1]);
    if (this.#topics.get(t.name) !== t) return;
    if (known === undefined) {
      t.epoch = epoch;
      t.cursor = seq;
    } else if (known !== epoch) {
      // The log was lost: a new one, read from its start.
      t.epoch = epoch;
      t.cursor = 0;
      this.#dropConfirmed(t, epoch);
      this.#onEvent({ type: "epoch", topic: t.name, epoch });
    } else {
      t.epoch = epoch;
      return; // the same log: go on from the cursor
    }
    t.lastEpoch = epoch;
    for (const { onPosition } of this.#listeners) {
      try {
        onPosition?.(t.name, { epoch, offset: t.cursor });
      } catch (error) {
        this.#onEvent({ type: "error", error });
      }
    }
  }

  /** Puts an established topic in its read group, starting the group's loop if need be. */
  #join(t: Topic): void {
    const id = this.#client.cluster ? slotOf(t.keys.log) : 0;
    let group = this.#groups.get(id);
    if (group === undefined) {
      group = {
        id,
        topics: new Set(),
        conn: undefined,
        clientId: undefined,
        blocked: false,
        loop: undefined,
        wake: undefined,
      };
      this.#groups.set(id, group);
    }
    t.group = group;
    group.topics.add(t);
    if (group.loop === undefined) {
      const g = group;
      g.loop = this.#readLoop(g).finally(() => (g.loop = undefined));
    } else if (group.blocked && group.clientId !== undefined) {
      // Its XREAD is blocked on the other topics: unblock it to add this one.
      this.#client.call(t.keys.log, ["CLIENT", "UNBLOCK", group.clientId]).catch(() => {});
    }
    group.wake?.();
  }

  async #readLoop(group: Group): Promise<void> {
    let delay = this.#reconnectDelay;
    let reconnected = false;
    while (!this.#isClosed() && this.#groups.get(group.id) === group) {
      const topics = [...group.topics].filter((t) => t.epoch !== undefined);
      if (group.conn === undefined) {
        try {
          const any = topics[0] ?? [...group.topics][0];
          group.conn = await this.#client.dedicated(any?.keys.log);
          group.clientId = text(await group.conn.call(["CLIENT", "ID"]));
        } catch (err) {
          group.conn?.close();
          group.conn = undefined;
          if (this.#isClosed()) return;
          this.#down(err);
          await this.#sleep(Math.round(delay * (0.8 + Math.random() * 0.4)));
          delay = Math.min(delay * 2, this.#maxReconnectDelay);
          reconnected = true;
          continue;
        }
        delay = this.#reconnectDelay;
        if (reconnected) {
          // Back after a loss: the same log goes on from the cursor; a lost
          // one starts again (new epoch).
          for (const t of group.topics) t.epoch = undefined;
          try {
            for (const t of [...group.topics]) await this.#readPosition(t);
          } catch (err) {
            group.conn.close();
            group.conn = undefined;
            if (!this.#isClosed()) this.#down(err);
            continue;
          }
          reconnected = false;
        }
        continue;
      }
      if (topics.length === 0) {
        await new Promise<void>((resolve) => (group.wake = resolve));
        group.wake = undefined;
        continue;
      }
      const args: string[] = ["XREAD", "COUNT", String(READ_COUNT), "BLOCK", String(BLOCK_MS)];
      args.push("STREAMS", ...topics.map((t) => t.keys.log));
      args.push(...topics.map((t) => `${t.cursor}-0`));
      const conn = group.conn;
      let reply: RespValue;
      group.blocked = true;
      try {
        reply = await conn.call(args);
      } catch (err) {
        group.blocked = false;
        conn.close();
        group.conn = undefined;
        if (this.#isClosed() || this.#groups.get(group.id) !== group) return;
        if (err instanceof NetkitError && err.code === "ERR_REDIS_REPLY") {
          this.#onEvent({ type: "error", error: err });
        } else {
          this.#down(err);
        }
        reconnected = true;
        continue;
      }
      group.blocked = false;
      if (Array.isArray(reply)) this.#onRead(reply);
    }
    group.conn?.close();
    group.conn = undefined;
  }

  #parseEntry(item: RespValue): ParsedEntry | undefined {
    if (!Array.isArray(item) || item.length < 2 || !Array.isArray(item[1])) return undefined;
    const id = text(item[0]);
    const offset = Number(id.slice(0, id.indexOf("-")));
    const fields = item[1];
    const entry: ParsedEntry = {
      offset,
      epoch: "",
      origin: "",
      seq: 0,
      type: "",
      payload: undefined,
    };
    for (let i = 0; i + 1 < fields.length; i += 2) {
      const name = text(fields[i]);
      const value = fields[i + 1];
      switch (name) {
        case "e":
          entry.epoch = text(value);
          break;
        case "o":
          entry.origin = text(value);
          break;
        case "s":
          entry.seq = Number(text(value));
          break;
        case "y":
          entry.type = text(value);
          break;
        case "p":
          entry.payload = value;
          break;
      }
    }
    return Number.isSafeInteger(offset) ? entry : undefined;
  }

  #decode(topic: string, entry: ParsedEntry): PreparedMessage | undefined {
    const payload = entry.payload;
    if (payload instanceof OversizedBulk || !(payload instanceof Uint8Array)) {
      this.#malformed(`an entry of "${topic}" without a payload, or over maxPayload: skipped`);
      return undefined;
    }
    if (entry.type === "b") return new PreparedMessage(payload, true);
    if (entry.type !== "t") {
      this.#malformed(`an entry of "${topic}" that is not netkit's: skipped`);
      return undefined;
    }
    const data = decodeUtf8(payload);
    if (data === undefined) {
      this.#malformed(`a text entry of "${topic}" that is not UTF-8: skipped`);
      return undefined;
    }
    return new PreparedMessage(data);
  }

  #malformed(message: string): void {
    this.#stats.malformed++;
    this.#onEvent({ type: "error", error: new NetkitError("ERR_REDIS_MESSAGE", message) });
  }

  /** An XREAD reply: `[[log key, [[id, [field, value, …]], …]], …]`. */
  #onRead(reply: RespValue[]): void {
    for (const stream of reply) {
      if (!Array.isArray(stream) || !Array.isArray(stream[1])) continue;
      const t = this.#byLogKey.get(text(stream[0]));
      if (t === undefined) continue;
      for (const item of stream[1]) {
        if (t.epoch === undefined || this.#topics.get(t.name) !== t) break;
        const entry = this.#parseEntry(item);
        if (entry === undefined) continue;
        if (entry.epoch !== t.epoch) {
          if (t.cursor === 0) continue; // left from an earlier epoch
          // The log was replaced under us (flushed): read where it stands.
          t.epoch = undefined;
          void this.#reestablish(t);
          break;
        }
        if (entry.offset <= t.cursor) continue;
        if (entry.offset > t.cursor + 1) {
          const count = entry.offset - t.cursor - 1;
          this.#stats.missed += count;
          this.#onEvent({ type: "missed", topic: t.name, count });
        }
        t.cursor = entry.offset;
        this.#deliver(t, entry);
      }
      this.#passConfirmed(t);
    }
  }

  #deliver(t: Topic, entry: ParsedEntry): void {
    let own: Pending | undefined;
    if (entry.origin === this.origin) {
      own = this.#awaiting.get(entry.seq);
      if (own !== undefined) this.#awaiting.delete(entry.seq);
    }
    const message = own?.message ?? this.#decode(t.name, entry);
    if (message === undefined) return;
    this.#stats.received++;
    // A publish added again after Redis lost it (its reply was lost with the
    // connection, so it was retried into the new log) was delivered here
    // already: recorded at its new position, not delivered twice.
    const key = t.name + "\u0000" + entry.origin;
    const last = this.#lastSeq.get(key);
    const repeat = last !== undefined && entry.seq <= last;
    if (!repeat) {
      if (last === undefined && this.#lastSeq.size >= 4096) {
        this.#lastSeq.delete(this.#lastSeq.keys().next().value!);
      }
      this.#lastSeq.set(key, entry.seq);
    }
    const position: BusPosition = own?.local || repeat
      ? { epoch: entry.epoch, offset: entry.offset, seen: true }
      : { epoch: entry.epoch, offset: entry.offset };
    for (const { listener } of this.#listeners) {
      try {
        listener(
          t.name,
          message,
          position,
          own !== undefined && listener === own.from ? own.tag : undefined,
        );
      } catch (error) {
        // A listener's bug must not cost the reader everyone shares.
        this.#onEvent({ type: "error", error });
      }
    }
  }

  /** Forgets own publishes the reader has passed (read back, or trimmed before it got there). */
  #passConfirmed(t: Topic): void {
    const list = t.confirmed;
    let n = 0;
    while (
      n < list.length &&
      (list[n].position!.epoch !== t.epoch || list[n].position!.offset <= t.cursor)
    ) {
      this.#awaiting.delete(list[n].seq);
      n++;
    }
    if (n > 0) list.splice(0, n);
  }

  /** The log was lost: own publishes added to the old one will not be read back. */
  #dropConfirmed(t: Topic, epoch: string): void {
    t.confirmed = t.confirmed.filter((p) => {
      if (p.position!.epoch === epoch) return true;
      this.#awaiting.delete(p.seq);
      return false;
    });
  }
}

interface ParsedEntry {
  offset: number;
  epoch: string;
  origin: string;
  seq: number;
  type: string;
  payload: RespValue | undefined;
}
