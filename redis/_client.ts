// RedisClient: netkit's own Redis client, single node or Cluster, for the
// buses in redis/. One pipelined connection per node (commands written in
// order, replies matched in order), every reply bounded by RespParser's
// limits, nothing queued while a node is unreachable (a call either gets a
// connection within `timeout` or rejects with ERR_REDIS_DOWN), and a cap on
// the bytes in flight per connection (ERR_REDIS_BACKPRESSURE). Cluster: the
// slot map from CLUSTER SLOTS, MOVED/ASK followed, failover ridden out by
// refreshing the map until `timeout`. Sentinel: the master asked of the
// Sentinels on every new connection (so after each loss: a failover), ROLE
// checked, and a -READONLY reply drops the connection so that the next call
// asks again. Internal to redis/.
import type { Conn } from "../conn.ts";
import { NetkitError } from "../errors.ts";
import { hostPort } from "../internal/host.ts";
import type { ManagedConn } from "../internal/socket_conn.ts";
import { writeAll } from "../io/mod.ts";
import { connect as tcpConnect } from "../tcp/connect.ts";
import { connect as tlsConnect } from "../tls/connect.ts";
import { isMasterRole, notMaster, viaSentinels } from "./_sentinel.ts";
import {
  type RedisAddress,
  type RedisConnectionOptions,
  type RedisTarget,
  redisTarget,
} from "./url.ts";
import {
  encodeCommand,
  NEED_MORE,
  RespError,
  RespParser,
  RespProtocolError,
  type RespValue,
} from "./_resp.ts";

export { type RespValue } from "./_resp.ts";

/** Options for {@linkcode RedisClient.connect}. Times are milliseconds. */
export interface RedisClientOptions extends
  Pick<
    RedisConnectionOptions,
    "sentinels" | "masterName" | "sentinelPassword" | "sentinelUsername"
  > {
  /** PEM CAs trusted for `rediss://`, beside the system roots (as `tls.connect` does). */
  caCerts?: string[];
  /** Connect + TLS + AUTH of one node, and how long a call waits out a failover. @default {5000} */
  timeout?: number;
  /** The largest bulk reply kept; bigger ones are an `OversizedBulk`. @default {67108864} */
  maxBulkSize?: number;
  /** The most elements one reply array may have (XREAD/XRANGE replies). @default {1048576} */
  maxArray?: number;
  /**
   * Bytes of commands written but not yet answered, plus queued, per node
   * connection; a call beyond it rejects with `ERR_REDIS_BACKPRESSURE`.
   * @default {67108864}
   */
  maxQueuedBytes?: number;
  /** What happens to connections and the cluster map; programs log these. */
  onEvent?: (e: RedisClientEvent) => void;
}

/** What a {@linkcode RedisClient} reports. */
export interface RedisClientEvent {
  /**
   * `lost`: a node's connection dropped (in-flight calls rejected); `back`:
   * connected again after a loss; `moved`: a MOVED redirect to `node`;
   * `topology`: the slot map was (re)read from `node`; `master`: the
   * Sentinels name another master, `node`, than the last connection's (a
   * failover).
   */
  type: "lost" | "back" | "moved" | "topology" | "master";
  /** `host:port`. */
  node: string;
  /** Why, for `lost`. */
  error?: unknown;
}

/** An error reply from Redis (`-ERR …`, `-WRONGTYPE …`, …). */
export class RedisReplyError extends NetkitError {
  /** The reply, as Redis wrote it (`"WRONGTYPE Operation against a key …"`). */
  readonly reply: string;
  constructor(reply: string, node: string, command: string) {
    super("ERR_REDIS_REPLY", `Redis at ${node} refused ${command}: ${reply}`);
    this.reply = reply;
  }
}

/** A node could not be reached, or its connection was lost with the command in flight. */
export class RedisDownError extends NetkitError {
  /** The node, `host:port`. */
  readonly node: string;
  /**
   * Whether the command was written before the connection was lost: then
   * Redis may have run it (retry only what is idempotent). `false`: it
   * never left this process.
   */
  readonly sent: boolean;
  constructor(node: string, sent: boolean, message: string, cause?: unknown) {
    super("ERR_REDIS_DOWN", message, { cause });
    this.node = node;
    this.sent = sent;
  }
}

const DEFAULT_TIMEOUT = 5000;
const DEFAULT_MAX_BULK = 64 * 1024 * 1024;
const DEFAULT_MAX_ARRAY = 1024 * 1024;
const DEFAULT_MAX_QUEUED = 64 * 1024 * 1024;
const MAX_DEPTH = 8;
const MAX_HOPS = 5;
const MAX_BATCH = 256 * 1024;
const SLOTS = 16384;
const RETRY_PAUSE = 100;
const encoder = new TextEncoder();
const decoder = new TextDecoder();
const ASKING = encodeCommand(["ASKING"]);

// --- slots -------------------------------------------------------------------

const CRC16_TABLE = (() => {
  const table = new Uint16Array(256);
  for (let i = 0; i < 256; i++) {
    let crc = i << 8;
    for (let j = 0; j < 8; j++) {
      crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
    }
    table[i] = crc;
  }
  return table;
})();

function crc16(bytes: Uint8Array, start: number, end: number): number {
  let crc = 0;
  for (let i = start; i < end; i++) {
    crc = ((crc << 8) & 0xffff) ^ CRC16_TABLE[((crc >> 8) ^ bytes[i]) & 0xff];
  }
  return crc;
}

/**
 * The Cluster hash slot of a key: CRC16 (XMODEM) mod 16384 of the key, or of
 * the part between the first `{` and the next `}` when that part is not
 * empty (a hash tag: `{user1}.a` and `{user1}.b` share a slot).
 */
export function slotOf(key: string | Uint8Array): number {
  const bytes = typeof key === "string" ? encoder.encode(key) : key;
  const open = bytes.indexOf(0x7b);
  if (open >= 0) {
    const close = bytes.indexOf(0x7d, open + 1);
    if (close > open + 1) return crc16(bytes, open + 1, close) & (SLOTS - 1);
  }
  return crc16(bytes, 0, bytes.length) & (SLOTS - 1);
}

// --- one connection ----------------------------------------------------------

interface Pending {
  resolve: (value: RespValue) => void;
  reject: (err: unknown) => void;
  size: number;
  // A call's arguments: an error reply rejects it (RedisReplyError) right
  // here, without a second promise per call. undefined: replies as they are.
  args: (string | Uint8Array)[] | undefined;
}

interface Limits {
  maxBulk: number;
  maxArray: number;
  maxQueued: number;
}

/**
 * One connection to one node: commands queued and written in order (batched
 * while a write is under way), replies parsed as chunks arrive and matched
 * to the commands in order.
 */
class Pipe {
  readonly node: string;
  readonly conn: Conn;
  readonly closed: Promise<void>;
  #parser: RespParser;
  #maxQueued: number;
  // Commands awaiting their reply, oldest at #head.
  #pending: Pending[] = [];
  #head = 0;
  #pendingBytes = 0;
  #queue: Uint8Array[] = [];
  #writing = false;
  #flushing: Promise<void> = Promise.resolve();
  #loop: Promise<void> = Promise.resolve();
  #dead: unknown = undefined;
  #isDead = false;
  #onDeath: ((cause: unknown) => void) | undefined;
  #resolveClosed!: () => void;

  constructor(node: string, conn: Conn, limits: Limits) {
    this.node = node;
    this.conn = conn;
    this.#parser = new RespParser({
      maxBulk: limits.maxBulk,
      maxArray: limits.maxArray,
      maxDepth: MAX_DEPTH,
    });
    this.#maxQueued = limits.maxQueued;
    this.closed = new Promise((resolve) => (this.#resolveClosed = resolve));
    this.#loop = this.#readLoop();
  }

  get isDead(): boolean {
    return this.#isDead;
  }

  /** Called once when the connection dies (not when closed on purpose first). */
  set onDeath(fn: (cause: unknown) => void) {
    this.#onDeath = fn;
  }

  /** Sends an encoded command; resolves with its reply (error replies included, as RespError). */
  send(bytes: Uint8Array): Promise<RespValue> {
    return this.#send(bytes, undefined);
  }

  /** Sends `args`, encoded as `bytes`; an error reply rejects with a {@linkcode RedisReplyError}. */
  call(bytes: Uint8Array, args: (string | Uint8Array)[]): Promise<RespValue> {
    return this.#send(bytes, args);
  }

  #send(bytes: Uint8Array, args: (string | Uint8Array)[] | undefined): Promise<RespValue> {
    if (this.#isDead) {
      return Promise.reject(
        new RedisDownError(this.node, false, `the connection to Redis at ${this.node} is closed`),
      );
    }
    const size = bytes.length;
    if (this.#pendingBytes > 0 && this.#pendingBytes + size > this.#maxQueued) {
      return Promise.reject(
        new NetkitError(
          "ERR_REDIS_BACKPRESSURE",
          `Redis at ${this.node} is behind: ${this.#pendingBytes} bytes of commands unanswered ` +
            `(maxQueuedBytes ${this.#maxQueued}); wait for earlier calls before sending more`,
        ),
      );
    }
    this.#pendingBytes += size;
    this.#queue.push(bytes);
    if (!this.#writing) this.#flushing = this.#flush();
    return new Promise((resolve, reject) => this.#pending.push({ resolve, reject, size, args }));
  }

  async #flush(): Promise<void> {
    this.#writing = true;
    try {
      while (this.#queue.length > 0 && !this.#isDead) {
        let batch: Uint8Array;
        const queue = this.#queue;
        if (queue.length === 1 || queue[0].length >= MAX_BATCH) {
          batch = queue.shift()!;
        } else {
          // Many small commands: one write (one syscall, one TLS record run).
          let n = 0;
          let size = 0;
          while (n < queue.length && size + queue[n].length <= MAX_BATCH) size += queue[n++].length;
          batch = new Uint8Array(size);
          let at = 0;
          for (let i = 0; i < n; i++) {
            batch.set(queue[i], at);
            at += queue[i].length;
          }
          queue.splice(0, n);
        }
        await writeAll(this.conn.writable, batch);
      }
    } catch (err) {
      this.die(err);
    } finally {
      this.#writing = false;
    }
  }

  async #readLoop(): Promise<void> {
    // The stream's reader: one read per chunk; every reply in the chunk is
    // parsed and delivered synchronously.
    const reader = this.conn.readable.getReader();
    const parser = this.#parser;
    try {
      for (;;) {
        let value = parser.next();
        while (value !== NEED_MORE) {
          this.#deliver(value);
          value = parser.next();
        }
        const { value: chunk, done } = await reader.read();
        if (done) {
          throw parser.partial
            ? new RespProtocolError("the connection ended inside a reply")
            : new NetkitError(
              "ERR_REDIS_CLOSED_BY_PEER",
              `Redis at ${this.node} closed the connection`,
            );
        }
        parser.push(chunk);
      }
    } catch (err) {
      this.die(err);
    } finally {
      try {
        reader.releaseLock();
      } catch {
        // A read still pending on a destroyed socket: nothing to release.
      }
    }
  }

  #deliver(value: RespValue): void {
    if (this.#head >= this.#pending.length) {
      throw new RespProtocolError(`a reply nobody asked for from ${this.node}`);
    }
    const p = this.#pending[this.#head];
    this.#pending[this.#head++] = undefined!;
    if (this.#head > 1024 && this.#head * 2 > this.#pending.length) {
      this.#pending = this.#pending.slice(this.#head);
      this.#head = 0;
    }
    this.#pendingBytes -= p.size;
    if (p.args !== undefined && value instanceof RespError) {
      p.reject(new RedisReplyError(value.message, this.node, commandName(p.args)));
    } else {
      p.resolve(value);
    }
  }

  /** Ends the connection: every call awaiting a reply rejects with `cause` (as a RedisDownError). */
  die(cause: unknown, onPurpose = false): void {
    if (this.#isDead) return;
    this.#isDead = true;
    this.#dead = cause;
    this.#queue = [];
    const managed = this.conn as Partial<ManagedConn>;
    if (typeof managed.destroy === "function") managed.destroy();
    else void this.conn.close().catch(() => {});
    const pending = this.#pending;
    const head = this.#head;
    this.#pending = [];
    this.#head = 0;
    this.#pendingBytes = 0;
    if (pending.length > head) {
      const err = cause instanceof NetkitError &&
          (cause.code === "ERR_REDIS_CLOSED" || cause instanceof RedisDownError)
        ? cause
        : new RedisDownError(
          this.node,
          true,
          `the connection to Redis at ${this.node} was lost with the command in flight ` +
            `(it may or may not have run): ${errorText(cause)}`,
          cause,
        );
      for (let i = head; i < pending.length; i++) pending[i].reject(err);
    }
    if (!onPurpose) this.#onDeath?.(cause);
    void Promise.all([this.#loop, this.#flushing, this.conn.closed.catch(() => {})]).then(() =>
      this.#resolveClosed()
    );
  }

  /** Why it died. */
  get cause(): unknown {
    return this.#dead;
  }
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message.split("\n")[0] : String(err);
}

/** The name of a command for messages: its first word (and a subcommand for a few). */
function commandName(args: (string | Uint8Array)[]): string {
  const first = args[0];
  const name = typeof first === "string" ? first : decoder.decode(first.subarray(0, 32));
  return name.toUpperCase();
}

function unwrap(value: RespValue, node: string, args: (string | Uint8Array)[]): RespValue {
  if (value instanceof RespError) throw new RedisReplyError(value.message, node, commandName(args));
  return value;
}

function closedError(): NetkitError {
  return new NetkitError("ERR_REDIS_CLOSED", "the Redis client is closed");
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A master's reply; `-READONLY` (it is a replica now) drops the connection, so the next call asks the Sentinels. */
function masterReply(pipe: Pipe, value: RespValue, args: (string | Uint8Array)[]): RespValue {
  if (value instanceof RespError && value.message.startsWith("READONLY")) {
    pipe.die(
      new RedisDownError(
        pipe.node,
        true,
        `Redis at ${pipe.node} is no longer the master (READONLY): the Sentinels are asked again`,
      ),
    );
  }
  return unwrap(value, pipe.node, args);
}

// --- dedicated connections ---------------------------------------------------

/** A connection of its own to one node (for blocking commands such as XREAD BLOCK). */
export interface RedisConnection extends AsyncDisposable {
  /** One command; error replies reject with a {@linkcode RedisReplyError}. Pipelined in order. */
  call(args: (string | Uint8Array)[]): Promise<RespValue>;
  /** `host:port`. */
  readonly node: string;
  /** Resolves once the connection is gone (closed, or lost). */
  readonly closed: Promise<void>;
  /** Closes it; calls awaiting a reply reject. Idempotent. */
  close(): void;
}

class DedicatedConnection implements RedisConnection {
  readonly #pipe: Pipe;
  readonly #release: () => void;
  constructor(pipe: Pipe, release: () => void) {
    this.#pipe = pipe;
    this.#release = release;
    void pipe.closed.then(release);
  }
  get node(): string {
    return this.#pipe.node;
  }
  get closed(): Promise<void> {
    return this.#pipe.closed;
  }
  call(args: (string | Uint8Array)[]): Promise<RespValue> {
    return this.#pipe.call(encodeCommand(args), args);
  }
  close(): void {
    this.#pipe.die(
      new NetkitError("ERR_REDIS_CLOSED", `the connection to ${this.node} was closed`),
      true,
    );
    this.#release();
  }
  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return this.#pipe.closed;
  }
}

// --- the client --------------------------------------------------------------

interface NodeEntry {
  key: string;
  hostname: string;
  port: number;
  pipe: Pipe | undefined;
  connecting: Promise<Pipe> | undefined;
  lost: boolean;
}

/**
 * netkit's Redis client: one pipelined connection per node, single node or
 * Redis Cluster (detected at connect), every reply bounded, nothing queued
 * while a node is down.
 */
export class RedisClient implements AsyncDisposable {
  /** Whether the servers are a Redis Cluster. */
  readonly cluster: boolean;
  /** The first URL, without its password. */
  readonly url: string;

  #base: RedisTarget;
  #timeout: number;
  #limits: Limits;
  #caCerts: string[] | undefined;
  #onEvent: (e: RedisClientEvent) => void;
  #nodes = new Map<string, NodeEntry>();
  #single: NodeEntry | undefined;
  // Cluster: the master of each slot (node key), as last read.
  #slots: (string | undefined)[] = [];
  #masters: string[] = [];
  #refreshing: Promise<void> | undefined;
  #closed = false;
  #abort = new AbortController();
  #dedicated = new Set<DedicatedConnection>();
  #shas = new Map<string, string>();

  private constructor(base: RedisTarget, cluster: boolean, options: RedisClientOptions) {
    this.#base = base;
    this.url = base.display;
    this.cluster = cluster;
    this.#timeout = options.timeout ?? DEFAULT_TIMEOUT;
    this.#limits = {
      maxBulk: options.maxBulkSize ?? DEFAULT_MAX_BULK,
      maxArray: options.maxArray ?? DEFAULT_MAX_ARRAY,
      maxQueued: options.maxQueuedBytes ?? DEFAULT_MAX_QUEUED,
    };
    this.#caCerts = options.caCerts;
    this.#onEvent = options.onEvent ?? (() => {});
  }

  /**
   * Connects to the first reachable of `urls` (`redis://` or
   * `rediss://[user:pass@]host:port`; several are Cluster seeds) and finds
   * out whether it is a Cluster (`CLUSTER SLOTS` answers) or a single node.
   * A `redis+sentinel://` URL (or the `sentinels` option) stands alone: the
   * master is the one the Sentinels name, asked again on every new
   * connection.
   *
   * @throws {NetkitError} `ERR_REDIS_URL` for a malformed URL,
   *   `ERR_REDIS_AUTH` for refused or missing credentials,
   *   `ERR_REDIS_CONNECT` when no URL answers (the message names each URL,
   *   without its password, and why).
   */
  static async connect(
    urls: string | string[],
    options: RedisClientOptions = {},
  ): Promise<RedisClient> {
    const list = typeof urls === "string" ? [urls] : urls;
    if (list.length === 0) throw new NetkitError("ERR_REDIS_URL", "no Redis URL given");
    const targets = list.map((u) => redisTarget(u, options));
    const sentinel = targets.find((t) => t.sentinel !== undefined);
    if (sentinel !== undefined) {
      if (targets.length > 1) {
        throw new NetkitError(
          "ERR_REDIS_URL",
          "a Sentinel URL (or the sentinels option) stands alone: several URLs are Cluster seeds",
        );
      }
      return await RedisClient.#connectSentinel(sentinel, options);
    }
    const failures: string[] = [];
    let lastError: unknown;
    for (const target of targets) {
      const probe = new RedisClient(target, false, options);
      const key = hostPort(target.hostname, target.port);
      let pipe: Pipe;
      try {
        pipe = await probe.#open(target.hostname, target.port);
      } catch (err) {
        if (err instanceof NetkitError && err.code === "ERR_REDIS_AUTH") throw err;
        failures.push(`${target.display}: ${errorText(err)}`);
        lastError = err;
        continue;
      }
      let slots: RespValue;
      try {
        slots = await pipe.send(encodeCommand(["CLUSTER", "SLOTS"]));
      } catch (err) {
        pipe.die(err, true);
        await pipe.closed;
        failures.push(`${target.display}: ${errorText(err)}`);
        lastError = err;
        continue;
      }
      const cluster = Array.isArray(slots);
      const client = cluster ? new RedisClient(target, true, options) : probe;
      const entry = client.#entry(target.hostname, target.port);
      client.#adopt(entry, pipe);
      if (cluster) {
        client.#applySlots(slots as RespValue[], target.hostname);
        client.#onEvent({ type: "topology", node: key });
      } else {
        client.#single = entry;
      }
      return client;
    }
    const code = lastError instanceof NetkitError ? lastError.code : "";
    const hint = code.startsWith("ERR_TLS_CERT")
      ? "the TLS certificate of redis-server was not accepted: is the CA that signed it " +
        "given (caCerts / --redis-ca), and does it cover that host name?"
      : targets.some((t) => t.tls)
      ? "is redis-server running there, with TLS on that port, and is its certificate's CA " +
        "given (caCerts / --redis-ca)?"
      : "is redis-server running there, on that port?";
    throw new NetkitError(
      "ERR_REDIS_CONNECT",
      `cannot reach Redis at ${failures.join("; ")}: ${hint}`,
      { cause: lastError },
    );
  }

  static async #connectSentinel(
    target: RedisTarget,
    options: RedisClientOptions,
  ): Promise<RedisClient> {
    const client = new RedisClient(target, false, options);
    let found: { pipe: Pipe; master: RedisAddress };
    try {
      found = await client.#openMaster();
    } catch (err) {
      if (err instanceof NetkitError && err.code === "ERR_REDIS_AUTH") throw err;
      const hint = target.tls
        ? "are the Sentinels running there, with TLS, monitoring a master of that name, and " +
          "is the CA that signed their certificates given (caCerts / --redis-ca)?"
        : "are the Sentinels running there, monitoring a master of that name, and is it up?";
      throw new NetkitError(
        "ERR_REDIS_CONNECT",
        `cannot reach Redis at ${target.display}: ${errorText(err)}: ${hint}`,
        { cause: err },
      );
    }
    const entry = client.#entry(found.master.hostname, found.master.port);
    client.#adopt(entry, found.pipe);
    client.#single = entry;
    return client;
  }

  /** The nodes known (`host:port`): the masters in Cluster mode. */
  get nodes(): string[] {
    return this.cluster ? [...this.#masters] : [this.#single!.key];
  }

  /**
   * One command, pipelined on the connection of the node that owns `key`
   * (any node when `key` is undefined). Follows MOVED (refreshing the slot
   * map) and ASK up to 5 hops; reconnects on demand.
   *
   * @throws {RedisReplyError} `ERR_REDIS_REPLY`: an error reply.
   * @throws {RedisDownError} `ERR_REDIS_DOWN`: the node cannot be reached
   *   within `timeout`, or the connection was lost with the command in flight
   *   (`sent`).
   * @throws {NetkitError} `ERR_REDIS_BACKPRESSURE`: over `maxQueuedBytes`.
   */
  call(key: string | undefined, args: (string | Uint8Array)[]): Promise<RespValue> {
    if (this.#closed) return Promise.reject(closedError());
    const bytes = encodeCommand(args);
    if (!this.cluster) {
      const entry = this.#single!;
      const pipe = entry.pipe;
      if (this.#base.sentinel !== undefined) return this.#masterCall(entry, bytes, args);
      // The hot path: a live connection, no await before the write.
      if (pipe !== undefined && !pipe.isDead) return pipe.call(bytes, args);
      return this.#reach(entry).then((p) => p.call(bytes, args));
    }
    return this.#clusterCall(key === undefined ? -1 : slotOf(key), bytes, args);
  }

  /**
   * Sentinel: a call to the master. A `-READONLY` reply means the server was
   * made a replica (a failover the connection outlived): the connection is
   * dropped, so that the next call asks the Sentinels again; the call
   * rejects with the reply (nothing was written).
   */
  #masterCall(
    entry: NodeEntry,
    bytes: Uint8Array,
    args: (string | Uint8Array)[],
  ): Promise<RespValue> {
    const pipe = entry.pipe;
    if (pipe !== undefined && !pipe.isDead) {
      return pipe.send(bytes).then((v) => masterReply(pipe, v, args));
    }
    return this.#reach(entry).then((p) => p.send(bytes).then((v) => masterReply(p, v, args)));
  }

  async #clusterCall(
    slot: number,
    bytes: Uint8Array,
    args: (string | Uint8Array)[],
  ): Promise<RespValue> {
    const deadline = performance.now() + this.#timeout;
    let asking: string | undefined;
    let hops = 0;
    for (;;) {
      const key = asking ?? this.#nodeFor(slot);
      const entry = this.#nodes.get(key)!;
      let pipe: Pipe;
      try {
        pipe = entry.pipe !== undefined && !entry.pipe.isDead
          ? entry.pipe
          : await this.#reach(entry);
      } catch (err) {
        // Unreachable (a failover under way?): reread the map and try again,
        // until the deadline. Nothing was sent.
        if (this.#closed || performance.now() + RETRY_PAUSE > deadline) throw err;
        await delay(RETRY_PAUSE);
        await this.#refresh().catch(() => {});
        asking = undefined;
        continue;
      }
      if (asking !== undefined) pipe.send(ASKING).catch(() => {});
      const reply = await pipe.send(bytes);
      if (!(reply instanceof RespError)) return reply;
      const message = reply.message;
      const redirect = /^(MOVED|ASK) (\d+) (\S+)$/.exec(message);
      if (redirect !== null) {
        if (++hops > MAX_HOPS) throw new RedisReplyError(message, key, commandName(args));
        const [, kind, slotText, address] = redirect;
        const target = this.#entryOf(address);
        if (kind === "MOVED") {
          this.#slots[Number(slotText)] = target.key;
          this.#onEvent({ type: "moved", node: target.key });
          void this.#refresh().catch(() => {});
          asking = undefined;
          if (slot < 0) slot = Number(slotText);
        } else {
          asking = target.key;
        }
        continue;
      }
      if (
        (message.startsWith("TRYAGAIN") || message.startsWith("CLUSTERDOWN")) &&
        performance.now() + RETRY_PAUSE < deadline
      ) {
        await delay(RETRY_PAUSE);
        if (message.startsWith("CLUSTERDOWN")) await this.#refresh().catch(() => {});
        asking = undefined;
        continue;
      }
      throw new RedisReplyError(message, key, commandName(args));
    }
  }

  /**
   * A Lua script: EVALSHA, falling back to EVAL when the node does not have
   * it (NOSCRIPT). Routed by the first key; in Cluster mode every key must
   * share its slot (use a hash tag).
   */
  async eval(
    script: string,
    keys: string[],
    args: (string | Uint8Array)[],
  ): Promise<RespValue> {
    let sha = this.#shas.get(script);
    if (sha === undefined) {
      const digest = await crypto.subtle.digest("SHA-1", encoder.encode(script));
      sha = [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
      this.#shas.set(script, sha);
    }
    const tail = [String(keys.length), ...keys, ...args];
    try {
      return await this.call(keys[0], ["EVALSHA", sha, ...tail]);
    } catch (err) {
      if (!(err instanceof RedisReplyError) || !err.reply.startsWith("NOSCRIPT")) throw err;
      return await this.call(keys[0], ["EVAL", script, ...tail]);
    }
  }

  /**
   * A connection of its own to the node that owns `key` (any node when
   * undefined), for blocking commands such as XREAD BLOCK. The caller closes
   * it; on MOVED or a loss, ask for another.
   *
   * @throws {RedisDownError} The node cannot be reached within `timeout`.
   */
  async dedicated(key: string | undefined): Promise<RedisConnection> {
    if (this.#closed) throw closedError();
    const deadline = performance.now() + this.#timeout;
    for (;;) {
      const entry = this.cluster
        ? this.#nodes.get(this.#nodeFor(key === undefined ? -1 : slotOf(key)))!
        : this.#single!;
      try {
        const pipe = await this.#connect(entry);
        if (this.#closed) {
          pipe.die(closedError(), true);
          throw closedError();
        }
        const connection: DedicatedConnection = new DedicatedConnection(
          pipe,
          () => this.#dedicated.delete(connection),
        );
        this.#dedicated.add(connection);
        return connection;
      } catch (err) {
        if (!this.cluster || this.#closed || performance.now() + RETRY_PAUSE > deadline) throw err;
        await delay(RETRY_PAUSE);
        await this.#refresh().catch(() => {});
      }
    }
  }

  /** Closes every connection (the dedicated ones too); calls awaiting a reply reject. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#abort.abort(closedError());
    const waits: Promise<void>[] = [];
    for (const connection of [...this.#dedicated]) {
      connection.close();
      waits.push(connection.closed);
    }
    for (const entry of this.#nodes.values()) {
      const pipe = entry.pipe;
      if (pipe !== undefined) {
        pipe.die(closedError(), true);
        waits.push(pipe.closed);
      }
      if (entry.connecting !== undefined) waits.push(entry.connecting.then(() => {}, () => {}));
    }
    await Promise.all(waits);
    await this.#refreshing?.catch(() => {});
  }

  /** Closes, as {@linkcode RedisClient.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  // --- nodes -----------------------------------------------------------------

  #entry(hostname: string, port: number): NodeEntry {
    const key = hostPort(hostname, port);
    let entry = this.#nodes.get(key);
    if (entry === undefined) {
      entry = { key, hostname, port, pipe: undefined, connecting: undefined, lost: false };
      this.#nodes.set(key, entry);
    }
    return entry;
  }

  /** The entry for `host:port` as a redirect names it. */
  #entryOf(address: string): NodeEntry {
    const colon = address.lastIndexOf(":");
    const hostname = address.slice(0, colon).replace(/^\[(.*)\]$/, "$1") || this.#base.hostname;
    return this.#entry(hostname, Number(address.slice(colon + 1)));
  }

  /** The node key for a slot (-1: any master). */
  #nodeFor(slot: number): string {
    if (slot >= 0) {
      const key = this.#slots[slot];
      if (key !== undefined) return key;
    }
    // No owner known (or any will do): a master, at random to spread the load.
    const masters = this.#masters;
    if (masters.length > 0) return masters[Math.floor(Math.random() * masters.length)];
    return this.#nodes.keys().next().value!;
  }

  #adopt(entry: NodeEntry, pipe: Pipe): void {
    entry.pipe = pipe;
    pipe.onDeath = (cause) => {
      if (this.#closed || entry.pipe !== pipe) return;
      entry.lost = true;
      this.#onEvent({ type: "lost", node: entry.key, error: cause });
      if (this.cluster) void this.#refresh().catch(() => {});
    };
  }

  /** A live pooled connection to `entry`, connecting if need be (one attempt, shared by the callers). */
  #reach(entry: NodeEntry): Promise<Pipe> {
    if (entry.pipe !== undefined && !entry.pipe.isDead) return Promise.resolve(entry.pipe);
    return entry.connecting ??= this.#connect(entry).then(
      (pipe) => {
        entry.connecting = undefined;
        if (this.#closed) {
          pipe.die(closedError(), true);
          throw closedError();
        }
        this.#adopt(entry, pipe);
        if (entry.lost) {
          entry.lost = false;
          this.#onEvent({ type: "back", node: entry.key });
        }
        return pipe;
      },
      (err) => {
        entry.connecting = undefined;
        throw err;
      },
    );
  }

  /** A new connection to `entry`; failures are a RedisDownError (sent: false). */
  async #connect(entry: NodeEntry): Promise<Pipe> {
    try {
      if (this.#base.sentinel !== undefined) return await this.#connectMaster(entry);
      return await this.#open(entry.hostname, entry.port);
    } catch (err) {
      if (this.#closed) throw closedError();
      if (err instanceof NetkitError && err.code === "ERR_REDIS_AUTH") throw err;
      const what = this.#base.sentinel === undefined
        ? `Redis at ${entry.key}`
        : `the Redis master "${this.#base.sentinel.masterName}" (last at ${entry.key})`;
      throw new RedisDownError(
        entry.key,
        false,
        `${what} cannot be reached (${errorText(err)}): the call was not sent; ` +
          "retry when it is back",
        err,
      );
    }
  }

  /**
   * Sentinel: a connection to the master as the Sentinels name it now. When
   * that is another server than before (a failover), `entry` follows it and
   * a pooled connection still open to the old one is dropped.
   */
  async #connectMaster(entry: NodeEntry): Promise<Pipe> {
    const { pipe, master } = await this.#openMaster();
    const key = hostPort(master.hostname, master.port);
    if (key !== entry.key) {
      entry.key = key;
      entry.hostname = master.hostname;
      entry.port = master.port;
      this.#onEvent({ type: "master", node: key });
      const old = entry.pipe;
      if (old !== undefined && !old.isDead && old.node !== key) {
        old.die(
          new RedisDownError(
            old.node,
            true,
            `Redis at ${old.node} is no longer the master (the Sentinels name ${key})`,
          ),
        );
      }
    }
    return pipe;
  }

  /** Asks the Sentinels for the master and connects to it (ROLE checked by #open). */
  #openMaster(): Promise<{ pipe: Pipe; master: RedisAddress }> {
    return viaSentinels(
      this.#base.sentinel!,
      {
        tls: this.#base.tls,
        caCerts: this.#caCerts,
        timeout: this.#timeout,
        signal: this.#abort.signal,
      },
      async (master) => ({ pipe: await this.#open(master.hostname, master.port), master }),
    );
  }

  /** Connects to one node and authenticates, all within `timeout`. */
  async #open(hostname: string, port: number): Promise<Pipe> {
    const timeout = this.#timeout;
    const signal = this.#abort.signal;
    const key = hostPort(hostname, port);
    const base = this.#base;
    const started = performance.now();
    const conn = base.tls
      ? await tlsConnect({ hostname, port, timeout, signal, caCerts: this.#caCerts })
      : await tcpConnect({ hostname, port, timeout, signal });
    const pipe = new Pipe(key, conn, this.#limits);
    const left = Math.max(1, timeout - (performance.now() - started));
    const timer = setTimeout(
      () =>
        pipe.die(
          new NetkitError("ETIMEDOUT", `no answer from Redis at ${key} within ${timeout / 1000}s`),
          true,
        ),
      left,
    );
    const onAbort = () => pipe.die(closedError(), true);
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      const { username, password } = base;
      const auth = password === undefined ? undefined : pipe.send(encodeCommand(
        username === undefined ? ["AUTH", password] : ["AUTH", username, password],
      ));
      const ping = pipe.send(encodeCommand(["PING"]));
      // Sentinel: the address a Sentinel gave must really be the master.
      const role = base.sentinel === undefined ? undefined : pipe.send(encodeCommand(["ROLE"]));
      // All are in flight: when one fails, the others are rejected by die(), unawaited.
      auth?.catch(() => {});
      ping.catch(() => {});
      role?.catch(() => {});
      if (auth !== undefined) {
        const reply = await auth;
        if (reply instanceof RespError) {
          throw new NetkitError(
            "ERR_REDIS_AUTH",
            `Redis at ${this.#display(key)} refused the credentials in the URL: ${reply.message}`,
          );
        }
      }
      const pong = await ping;
      if (pong instanceof RespError && /^NOAUTH/.test(pong.message)) {
        throw new NetkitError(
          "ERR_REDIS_AUTH",
          `Redis at ${this.#display(key)} needs a password: put it in the URL, ` +
            (base.sentinel === undefined
              ? "redis://:PASSWORD@host:port"
              : "redis+sentinel://:PASSWORD@host:port[,host:port…]/mastername"),
        );
      }
      if (pong !== "PONG") {
        throw new NetkitError(
          "ERR_REDIS_PROTOCOL",
          `unexpected answer to PING from ${this.#display(key)}: ${
            JSON.stringify(String(pong instanceof RespError ? pong.message : pong).slice(0, 60))
          }`,
        );
      }
      if (role !== undefined) {
        const reply = await role;
        if (!isMasterRole(reply)) throw notMaster(key, reply);
      }
      return pipe;
    } catch (err) {
      // When the timer ended the pipe, that is the reason, not the failed read it caused.
      const cause = pipe.isDead && pipe.cause instanceof NetkitError ? pipe.cause : err;
      pipe.die(cause, true);
      await pipe.closed;
      throw cause;
    } finally {
      clearTimeout(timer);
      signal.removeEventListener("abort", onAbort);
    }
  }

  #display(key: string): string {
    return `${this.#base.tls ? "rediss" : "redis"}://${key}`;
  }

  // --- the slot map ----------------------------------------------------------

  /** Rereads the slot map from a reachable node (one refresh at a time). */
  #refresh(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    return this.#refreshing ??= (async () => {
      try {
        // Live connections first, then the rest, masters before others.
        const entries = [...this.#nodes.values()].sort((a, b) =>
          Number(b.pipe !== undefined && !b.pipe.isDead) -
          Number(a.pipe !== undefined && !a.pipe.isDead)
        );
        let lastError: unknown;
        for (const entry of entries) {
          if (this.#closed) return;
          try {
            const pipe = await this.#reach(entry);
            const reply = await pipe.send(encodeCommand(["CLUSTER", "SLOTS"]));
            if (!Array.isArray(reply)) throw new Error(`CLUSTER SLOTS: ${String(reply)}`);
            this.#applySlots(reply, entry.hostname);
            this.#onEvent({ type: "topology", node: entry.key });
            return;
          } catch (err) {
            lastError = err;
          }
        }
        throw lastError ?? new Error("no Redis Cluster node known");
      } finally {
        this.#refreshing = undefined;
      }
    })();
  }

  /** Takes a CLUSTER SLOTS reply: `[[start, end, [host, port, id, …], replicas…], …]`. */
  #applySlots(reply: RespValue[], askedHost: string): void {
    const slots: (string | undefined)[] = new Array(SLOTS);
    const masters = new Set<string>();
    for (const range of reply) {
      if (!Array.isArray(range) || range.length < 3) continue;
      const [start, end, master] = range;
      if (typeof start !== "number" || typeof end !== "number" || !Array.isArray(master)) continue;
      const host = master[0] instanceof Uint8Array ? decoder.decode(master[0]) : "";
      const port = master[1];
      if (typeof port !== "number") continue;
      // An empty or "?" host: the node we asked.
      const hostname = host === "" || host === "?" ? askedHost : host;
      const entry = this.#entry(hostname, port);
      masters.add(entry.key);
      for (let s = Math.max(0, start); s <= Math.min(end, SLOTS - 1); s++) slots[s] = entry.key;
    }
    this.#slots = slots;
    this.#masters = [...masters];
  }
}
