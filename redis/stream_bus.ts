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
 * | `<prefix>{<topic>}:log` | the stream; entry ID `<offset>-0`, one field: its name `<type> <epoch> <origin> <sequence>` (type `t` text, `b` binary), its value the payload |
 * | `<prefix>{<topic>}:epoch` | the log's epoch: made when missing, so it changes when Redis loses its data |
 * | `<prefix>{<topic>}:start` | `<epoch> <offset>`: the offset that epoch's log starts after (0, or where the log had reached when it went back in time): a reader that comes to the epoch reads it from there |
 * | `<prefix>{<topic>}:seq` | the last offset given (INCR: consecutive across processes) |
 * | `<prefix>{<topic>}:origins` | per publishing process, the last sequence added: a retried publish is not added twice |
 * | `<prefix>{<topic>}:id:<key>` | an acknowledged publish's idempotency key (expires after the history TTL) |
 *
 * Publishing: per topic, one Lua script call at a time (EVALSHA) adds every
 * publish queued for that topic since the last call (up to 256 messages or
 * 256 KiB), so a burst costs a few round trips, not one per message, and a
 * topic's publishes can never overtake one another (a NOSCRIPT after a
 * restart is answered by the same call sent again as EVAL, alone in
 * flight for its topic). Each process reads the streams of
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
import { RedisClient, type RedisConnection, RedisReplyError, slotOf } from "./_client.ts";
import { OversizedBulk, type RespValue } from "./_resp.ts";
import { type RedisConnectionOptions, redisTarget } from "./url.ts";

const decoder = new TextDecoder();

/**
 * Options for {@linkcode RedisStreamBus.connect}. Times are milliseconds.
 * Besides these, where and how to connect ({@linkcode RedisConnectionOptions}):
 * `timeout`, `reconnectDelay`, `maxReconnectDelay`, `caCerts`, and the
 * Sentinel ones (`sentinels`, `masterName`, …).
 */
export interface RedisStreamBusOptions extends RedisConnectionOptions {
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
    /**
     * Redis Sentinel: the Sentinels name another master than the one the bus
     * was connected to (a failover), `node` (`host:port`), monitored as
     * `masterName`; the bus goes on with it. Not reported for the master
     * found at connect.
     */
    type: "master";
    masterName: string;
    node: string;
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

// The epoch: GET it, or make it (new log: no stream, seq 0, starting after
// offset 0). Shared by both scripts.
const EPOCH_LUA = `
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[2], epoch)
  redis.call('DEL', KEYS[1], KEYS[4])
  redis.call('SET', KEYS[3], 0)
  redis.call('SET', KEYS[5], epoch .. ' 0')
end
`;

// KEYS: log, epoch, seq, origins, start, then the idempotency keys of the batch.
// ARGV: new epoch, maxlen, ttl (s), origin, then what the messages are —
// `<sequence> <type> <index in KEYS of its idempotency key, 0: none>` each,
// separated by commas, in one argument (one string to encode per call, not
// three per message) — then their payloads. Returns
// {epoch, offset1, duplicate1, …}: a duplicate is 1 with the offset the
// key's publish got (0: a retry of a publish added before, by its origin's
// sequence). The trimming is done once per batch; INCR per entry keeps the
// seq key and the stream's last ID in step whatever happens mid-script.
const PUBLISH_LUA = EPOCH_LUA + `
local ttl, origin = ARGV[3], ARGV[4]
local last = tonumber(redis.call('HGET', KEYS[4], origin) or '0')
local out = {epoch}
local added = false
local a = 5
for seqText, kind, key in string.gmatch(ARGV[5], '(%d+) (%a) (%d+)') do
  a = a + 1
  local seq = tonumber(seqText)
  local k = tonumber(key)
  local dup = nil
  if k > 0 then
    local prev = redis.call('GET', KEYS[k])
    if prev then
      local e, o = string.match(prev, '^(%S+) (%d+)$')
      if e == epoch then dup = tonumber(o) end
    end
  end
  if dup then
    out[#out + 1] = dup
    out[#out + 1] = 1
  elseif seq <= last then
    out[#out + 1] = 0
    out[#out + 1] = 1
  else
    local offset = redis.call('INCR', KEYS[3])
    redis.call('XADD', KEYS[1], offset .. '-0',
      kind .. ' ' .. epoch .. ' ' .. origin .. ' ' .. seqText, ARGV[a])
    if k > 0 then redis.call('SET', KEYS[k], epoch .. ' ' .. offset, 'EX', ttl) end
    last = seq
    added = true
    out[#out + 1] = offset
    out[#out + 1] = 0
  end
end
if added then
  redis.call('XTRIM', KEYS[1], 'MAXLEN', ARGV[2])
  redis.call('HSET', KEYS[4], origin, last)
end
redis.call('EXPIRE', KEYS[4], ttl)
return out
`;

// KEYS: log, epoch, seq, origins, start. ARGV: new epoch, the offset this
// process read up to in that epoch (or ""), that epoch (or ""). Returns
// {epoch, seq, start}: start is the offset the epoch's log starts after, -1
// when not recorded (an epoch made by an earlier version, or by hand). A log
// that went back in time (restored from an older snapshot) gets a new
// epoch: the offsets it would give again were given already, so it goes on
// after them — and starts there.
const POSITION_LUA = EPOCH_LUA + `
local seq = tonumber(redis.call('GET', KEYS[3]) or '0')
if ARGV[2] ~= '' and ARGV[3] == epoch and seq < tonumber(ARGV[2]) then
  epoch = ARGV[1]
  redis.call('SET', KEYS[2], epoch)
  redis.call('SET', KEYS[3], ARGV[2])
  redis.call('SET', KEYS[5], epoch .. ' ' .. ARGV[2])
  seq = tonumber(ARGV[2])
end
local start = -1
local s = redis.call('GET', KEYS[5])
if s then
  local e, o = string.match(s, '^(%S+) (%d+)$')
  if e == epoch then start = tonumber(o) end
end
return {epoch, seq, start}
`;

// Error replies that mean "not now" (loading its data after a restart, a
// script running, a failover): the batch is sent again, as after a loss.
const TRANSIENT = /^(LOADING|BUSY|MASTERDOWN|CLUSTERDOWN|TRYAGAIN|READONLY)\b/;
const WINDOW = 64; // publish batches (one per topic at most) in flight at once
const BATCH_COUNT = 256; // messages per publish call, at most
const BATCH_BYTES = 256 * 1024; // payload bytes per publish call, at most (one message may be bigger)
const MIN_STREAM_LENGTH = 1000;
const READ_COUNT = 1000; // entries per XREAD
const BLOCK_MS = 5000;
const RANGE_MAX = 1000;

/**
 * The offset of an entry ID `<offset>-0` read from its bytes (no string
 * made: this runs for every entry read); -1 when it is not one.
 */
function idOffset(id: Uint8Array): number {
  let n = 0;
  let i = 0;
  for (; i < id.length; i++) {
    const d = id[i] - 0x30;
    if (d < 0 || d > 9) break;
    n = n * 10 + d;
  }
  return i > 0 && i < 16 && id[i] === 0x2d ? n : -1;
}

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
  start: string;
  id: string;
}

/** A publish on its way to the log. */
interface Pending {
  topic: string;
  message: PreparedMessage;
  seq: number;
  from: BusListener | undefined;
  tag: unknown;
  idKey: string | undefined;
  onPosition: ((position: BusPosition | undefined) => void) | undefined;
  /** Already delivered here (published while down, read back, or in flight at an outage). */
  local: boolean;
  done: boolean;
  /** Once added: where. */
  position: BusPosition | undefined;
}

/**
 * A topic's publishes not yet added, in publish order. At most one batch of
 * them is in flight: the next call is sent when its reply is in, so a
 * topic's publishes reach the log in order whatever a call meets (NOSCRIPT,
 * a lost connection), and what queues meanwhile goes in the next call.
 */
interface Outbox {
  topic: string;
  keys: Keys;
  items: Pending[];
  /** The first not added (items before it are done). */
  head: number;
  /** How many from `head` are in flight (0: none). */
  inFlight: number;
  /** Waiting in #ready for a free slot of the window. */
  waiting: boolean;
}

/** One subscribed topic. */
interface Topic {
  name: string;
  keys: Keys;
  interest: number;
  /** Known once the subscription is set up; `undefined` while (re)establishing. */
  epoch: string | undefined;
  /** The last offset read in that epoch (at first, the offset it starts after). */
  cursor: number;
  /**
   * Read from a new epoch whose start is not recorded (cursor 0): the first
   * entry read of it is where it starts as far as this reader can tell, so
   * the offsets before it are not counted as missed (they are the old log's).
   */
  startUnknown: boolean;
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
  // Per topic, the publishes not yet added; the outboxes waiting for a slot.
  #outboxes = new Map<string, Outbox>();
  #ready: Outbox[] = [];
  #queued = 0;
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
   * seeds; a `redis+sentinel://` URL, or the `sentinels` option, for the
   * master the Sentinels name, asked again after every loss: a failover,
   * reported to `onEvent` as `master`) and checks it answers.
   *
   * @throws {NetkitError} `ERR_REDIS_URL`, `ERR_REDIS_AUTH`, `ERR_REDIS_CONNECT`
   *   (nothing answers: the message names the URL and why).
   */
  static async connect(
    urls: string | string[],
    options: RedisStreamBusOptions = {},
  ): Promise<RedisStreamBus> {
    const maxPayload = options.maxPayload ?? DEFAULT_MAX_PAYLOAD;
    // A failover through Sentinel is the bus's news too ("master"); the
    // client's other events the bus reports in its own terms (lost, back).
    let onMaster = (_node: string) => {};
    const client = await RedisClient.connect(urls, {
      caCerts: options.caCerts,
      timeout: options.timeout,
      sentinels: options.sentinels,
      masterName: options.masterName,
      sentinelPassword: options.sentinelPassword,
      sentinelUsername: options.sentinelUsername,
      // An entry is its payload plus a few short fields; XREAD replies are
      // arrays of up to READ_COUNT entries.
      maxBulkSize: maxPayload + 1024,
      onEvent: (e) => {
        if (e.type === "master") onMaster(e.node);
      },
    });
    const bus = new RedisStreamBus(client, options);
    const { sentinel } = redisTarget(typeof urls === "string" ? urls : urls[0], options);
    if (sentinel !== undefined) {
      const masterName = sentinel.masterName;
      onMaster = (node) => bus.#onEvent({ type: "master", masterName, node });
    }
    return bus;
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
      startUnknown: false,
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
      this.#queued >= this.#maxQueued ||
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
    let outbox = this.#outboxes.get(topic);
    if (outbox === undefined) {
      outbox = {
        topic,
        keys: this.#keys(topic),
        items: [],
        head: 0,
        inFlight: 0,
        waiting: false,
      };
      this.#outboxes.set(topic, outbox);
    }
    outbox.items.push(p);
    this.#queued++;
    this.#queuedBytes += size;
    this.#awaiting.set(p.seq, p);
    if (this.#awaiting.size > 2 * this.#maxQueued + WINDOW * BATCH_COUNT) {
      // Bounded: a read-back that never came (trimmed, or the log lost).
      this.#awaiting.delete(this.#awaiting.keys().next().value!);
    }
    if (down) {
      this.#stats.queuedWhileDown++;
      this.#downQueued++;
      this.#deliverLocally(topic, message, from);
      return false;
    }
    this.#send(outbox);
    return true;
  }

  /**
   * Stops: what was queued is given up to a second to reach Redis, then the
   * connections close and the listeners are dropped. Idempotent.
   */
  close(): Promise<void> {
    return this.#closing ??= (async () => {
      if (this.#state === "up" && this.#queued > 0) {
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
      for (const outbox of this.#outboxes.values()) {
        for (let i = outbox.head; i < outbox.items.length; i++) {
          const p = outbox.items[i];
          if (!p.done) p.onPosition?.(undefined);
        }
      }
      this.#outboxes.clear();
      this.#ready = [];
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
      start: base + "start",
      id: base + "id:",
    };
  }

  /**
   * A script: EVALSHA, and EVAL when Redis does not have it (NOSCRIPT, after
   * a restart). Safe for publishes because a topic has one call in flight
   * at a time: nothing of the topic can overtake the call sent again.
   */
  #eval(script: string, keys: string[], args: (string | Uint8Array)[]): Promise<RespValue> {
    return this.#client.eval(script, keys, args);
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

  /**
   * Sends the next batch of `outbox` if none of its is in flight: every
   * publish queued for the topic, up to BATCH_COUNT / BATCH_BYTES, in one
   * script call. Past WINDOW calls in flight it waits for a slot.
   */
  #send(outbox: Outbox): void {
    if (this.#state !== "up" || outbox.inFlight > 0) return;
    const items = outbox.items;
    if (outbox.head >= items.length) {
      // Nothing left: forget the outbox (topics come and go).
      if (this.#outboxes.get(outbox.topic) === outbox) this.#outboxes.delete(outbox.topic);
      return;
    }
    if (this.#sending >= WINDOW) {
      if (!outbox.waiting) {
        outbox.waiting = true;
        this.#ready.push(outbox);
      }
      return;
    }
    const k = outbox.keys;
    const keys = [k.log, k.epoch, k.seq, k.origins, k.start];
    const epoch = this.#epochCandidate;
    const args: (string | Uint8Array)[] = [
      epoch,
      String(this.#historySize),
      this.#ttlSeconds,
      this.origin,
      "",
    ];
    let meta = "";
    let n = 0;
    let bytes = 0;
    for (let i = outbox.head; i < items.length && n < BATCH_COUNT; i++) {
      const p = items[i];
      const size = p.message.payload.length;
      if (n > 0 && bytes + size > BATCH_BYTES) break;
      bytes += size;
      n++;
      let keyIndex = 0;
      if (p.idKey !== undefined) keyIndex = keys.push(outbox.keys.id + p.idKey);
      meta += `${n > 1 ? "," : ""}${p.seq} ${p.message.binary ? "b" : "t"} ${keyIndex}`;
      args.push(p.message.payload);
    }
    args[4] = meta;
    outbox.inFlight = n;
    this.#sending++;
    this.#eval(PUBLISH_LUA, keys, args).then(
      (reply) => this.#added(outbox, reply, epoch),
      (err) => this.#failed(outbox, err),
    ).finally(() => {
      outbox.inFlight = 0;
      this.#sending--;
      if (this.#state !== "up") return;
      this.#send(outbox);
      while (this.#sending < WINDOW && this.#ready.length > 0) {
        const next = this.#ready.shift()!;
        next.waiting = false;
        this.#send(next);
      }
    });
  }

  /** The batch in flight of `outbox` was handled: `[epoch, offset, duplicate, …]`. */
  #added(outbox: Outbox, reply: RespValue, candidate: string): void {
    const n = outbox.inFlight;
    if (!Array.isArray(reply) || reply.length !== 1 + 2 * n) {
      this.#failed(outbox, new NetkitError("ERR_REDIS_REPLY", `unexpected publish reply`));
      return;
    }
    const epoch = text(reply[0]);
    this.#candidate(candidate === epoch ? epoch : "");
    const t = this.#topics.get(outbox.topic);
    const batch = this.#take(outbox, n);
    for (let i = 0; i < n; i++) {
      const p = batch[i];
      const offset = Number(reply[1 + 2 * i]);
      const duplicate = Number(reply[2 + 2 * i]) === 1;
      this.#settle(p);
      if (!duplicate) this.#stats.published++;
      if (offset > 0) {
        p.position = { epoch, offset };
        if (this.#awaiting.has(p.seq)) {
          // Not read back yet: kept until the reader reaches it (or passes it).
          if (t !== undefined) t.confirmed.push(p);
          else this.#awaiting.delete(p.seq);
        }
      }
      // (offset 0: a retry of a publish added before; its read-back matches it.)
      p.onPosition?.(offset > 0 ? { epoch, offset } : undefined);
    }
  }

  /** The first `n` not added of `outbox`, taken off it. */
  #take(outbox: Outbox, n: number): Pending[] {
    const items = outbox.items;
    const batch = items.slice(outbox.head, outbox.head + n);
    outbox.head += n;
    if (outbox.head === items.length) {
      outbox.items = [];
      outbox.head = 0;
    } else if (outbox.head > 1024 && outbox.head * 2 > items.length) {
      outbox.items = items.slice(outbox.head);
      outbox.head = 0;
    }
    return batch;
  }

  #failed(outbox: Outbox, err: unknown): void {
    if (this.#isClosed()) return;
    if (
      err instanceof NetkitError && err.code === "ERR_REDIS_REPLY" &&
      !(err instanceof RedisReplyError && TRANSIENT.test(err.reply))
    ) {
      // Refused (a script error, OOM …): not relayed; delivered here at least.
      this.#onEvent({ type: "error", error: err });
      for (const p of this.#take(outbox, outbox.inFlight)) {
        this.#settle(p);
        this.#stats.dropped++;
        this.#awaiting.delete(p.seq);
        this.#deliverUnpositioned(p);
        p.onPosition?.(undefined);
      }
      return;
    }
    // Down, loading its data, or behind: the batch stays queued, sent again
    // in order once Redis is back.
    this.#down(err);
  }

  /**
   * Delivers an own publish here, without a position, unless it was already
   * (published while down, or read back): everyone, its publisher included.
   */
  #deliverUnpositioned(p: Pending): void {
    if (p.local) return;
    p.local = true;
    for (const { listener } of this.#listeners) {
      try {
        listener(p.topic, p.message, undefined, listener === p.from ? p.tag : undefined);
      } catch (error) {
        this.#onEvent({ type: "error", error });
      }
    }
  }

  /** Marks a publish done (added, or given up). */
  #settle(p: Pending): void {
    if (p.done) return;
    p.done = true;
    this.#queued--;
    this.#queuedBytes -= p.message.payload.length;
    if (this.#queued === 0) this.#flushed?.();
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
    // Own publishes not yet read back may never be (Redis may not come
    // back): delivered here now, in publish order (those added before those
    // still on their way), like those made from here on; read back later,
    // they carry `seen` and are not delivered twice.
    for (const t of this.#topics.values()) {
      for (const p of t.confirmed) this.#deliverUnpositioned(p);
    }
    for (const outbox of this.#outboxes.values()) {
      for (let i = outbox.head; i < outbox.items.length; i++) {
        this.#deliverUnpositioned(outbox.items[i]);
      }
    }
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
      this.#onEvent({
        type: "back",
        downtime: performance.now() - this.#lostAt,
        queued: this.#downQueued,
        dropped: this.#downDropped,
        attempts,
      });
      this.#ready = [];
      for (const outbox of [...this.#outboxes.values()]) {
        outbox.waiting = false;
        this.#send(outbox);
      }
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
   * The position script: the epoch (made if missing), the last offset, and
   * where the epoch's log starts. For a topic read before in the same
   * epoch, the cursor stays (no gap); a new epoch moves it to where that log
   * starts (the offsets before are the old log's: not missed) and tells the
   * hubs, at that offset.
   */
  async #readPosition(t: Topic): Promise<void> {
    const candidate = this.#epochCandidate;
    const known = t.epoch ?? t.lastEpoch;
    // How far the log reached: as far as read, or as far as own publishes
    // were acknowledged in it (added, not read back yet). A log now short of
    // that lost acknowledged entries (a failover to a replica that had not
    // got them): a new epoch, said so, rather than their offsets given again.
    let reached = t.cursor;
    const last = t.confirmed.at(-1)?.position;
    if (last !== undefined && last.epoch === known && last.offset > reached) reached = last.offset;
    const reply = await this.#eval(
      POSITION_LUA,
      [t.keys.log, t.keys.epoch, t.keys.seq, t.keys.origins, t.keys.start],
      [candidate, known === undefined ? "" : String(reached), known ?? ""],
    );
    if (!Array.isArray(reply)) throw new NetkitError("ERR_REDIS_REPLY", "unexpected reply");
    const epoch = text(reply[0]);
    this.#candidate(epoch);
    const seq = Number(reply[1]);
    const start = Number(reply[2]);
    if (this.#topics.get(t.name) !== t) return;
    // What is known now: a call that overlapped this one (the read loop's
    // and the recovery's, after an outage) may have taken the change to
    // this epoch already — then it is the same log, not a second change.
    const now = t.epoch ?? t.lastEpoch;
    if (now === undefined) {
      t.epoch = epoch;
      t.cursor = seq;
    } else if (now !== epoch) {
      // The log was lost, or went back in time: a new one, read from its
      // start — where it starts, when recorded (0 for a new log; where the
      // old one had reached for one that goes on after it), else from the
      // first entry found.
      t.epoch = epoch;
      t.startUnknown = !(start >= 0 && start <= seq);
      t.cursor = t.startUnknown ? 0 : start;
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
    const id = item[0];
    const offset = id instanceof Uint8Array ? idOffset(id) : -1;
    if (offset < 0) return undefined;
    const fields = item[1];
    const entry: ParsedEntry = {
      offset,
      epoch: "",
      origin: "",
      seq: 0,
      type: "",
      payload: undefined,
    };
    if (fields.length === 2) {
      // One field: `<type> <epoch> <origin> <sequence>` → the payload.
      const meta = text(fields[0]).split(" ");
      if (meta.length !== 4) return entry; // not netkit's: #decode says so
      entry.type = meta[0];
      entry.epoch = meta[1];
      entry.origin = meta[2];
      entry.seq = Number(meta[3]);
      entry.payload = fields[1];
      return entry;
    }
    // The first format (fields e, o, s, y, p), as a log written by an
    // earlier version holds it.
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
    return entry;
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
        if (entry.offset > t.cursor + 1 && !t.startUnknown) {
          // Inside one epoch (from where it starts): trimmed before read.
          const count = entry.offset - t.cursor - 1;
          this.#stats.missed += count;
          this.#onEvent({ type: "missed", topic: t.name, count });
        }
        t.startUnknown = false;
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
    // Delivered now: an outage before its reply must not deliver it again.
    if (own !== undefined) own.local = true;
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
