/**
 * The in-process history of a {@linkcode BroadcastHub}: one log per topic,
 * bounded by count, bytes and age, that gives every published message a
 * position — the log's epoch and an offset — so that `netkit.v1` clients
 * can resume after a reconnect. Internal: the hub's `historySize`,
 * `historyTtl` and `maxHistoryBytes` options are the public face.
 *
 * @module
 */
import { preparedFromPayload, PreparedMessage } from "./prepared_message.ts";
import { encodeServerEnvelope } from "../codec/netkit_v1.ts";

/** Messages kept per topic by default once history is on (ws-server's `--history`). */
export const DEFAULT_HISTORY_SIZE = 1000;
/** How long a message is kept by default, in milliseconds. */
export const DEFAULT_HISTORY_TTL = 300_000;
/** Payload bytes kept per topic by default. */
export const DEFAULT_MAX_HISTORY_BYTES = 16 * 1024 * 1024;

/** What bounds a history. Internal: see `BroadcastHub`'s options. */
export interface HistoryOptions {
  /** Messages kept per topic; 0 turns history off. @default {0} */
  historySize?: number | undefined;
  /** Milliseconds a message is kept; 0: no age limit. @default {300000} */
  historyTtl?: number | undefined;
  /** Payload bytes kept per topic. @default {16777216} */
  maxHistoryBytes?: number | undefined;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A log's epoch: 64 random bits, base64url (11 characters). */
function newEpoch(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_")
    .replace(/=+$/, "");
}

/** One message in a topic's log. */
export class LogEntry {
  /** Its position in the log. */
  readonly offset: number;
  /** When it was appended (`performance.now()`). */
  readonly at: number;
  /** The message as published, shared with every plain subscriber. */
  readonly message: PreparedMessage;
  /** Payload bytes, as counted against `maxHistoryBytes`. */
  readonly size: number;
  readonly #log: TopicLog;
  #envelope: PreparedMessage | undefined;

  constructor(log: TopicLog, offset: number, at: number, message: PreparedMessage, size: number) {
    this.#log = log;
    this.offset = offset;
    this.at = at;
    this.message = message;
    this.size = size;
  }

  /** The topic and epoch of its log. */
  get log(): { topic: string; epoch: string } {
    return this.#log;
  }

  /**
   * The message in its `netkit.v1` envelope, made on first use and shared
   * by every `netkit.v1` subscriber and every replay.
   */
  envelope(): PreparedMessage {
    if (this.#envelope !== undefined) return this.#envelope;
    const { message } = this;
    const position = { topic: this.#log.topic, epoch: this.#log.epoch, offset: this.offset };
    let envelope: string | Uint8Array;
    if (message.binary) {
      envelope = encodeServerEnvelope(message.payload, position);
    } else {
      const text = typeof message.data === "string" ? message.data : decoder.decode(message.data);
      envelope = encoder.encode(encodeServerEnvelope(text, position) as string);
    }
    return this.#envelope = preparedFromPayload(envelope as Uint8Array, message.binary);
  }

  /** The position alone, for the connection that published it without `includeSelf`. */
  skip(): PreparedMessage {
    const { topic, epoch } = this.#log;
    return new PreparedMessage(JSON.stringify({ t: topic, e: epoch, o: this.offset }));
  }
}

/** One topic's log: its epoch, its head offset and the messages still kept. */
export class TopicLog {
  /** The topic. */
  readonly topic: string;
  /**
   * Random per log (or the bus's, with a sequenced bus): a client holding
   * another epoch cannot resume here.
   */
  readonly epoch: string;
  /** The offset of the last message appended (0: none yet). */
  head = 0;
  /**
   * With a sequenced bus: whether the epoch and head are the bus's (else
   * the log waits for the bus to say where it stands).
   */
  readonly synced: boolean;
  /** Payload bytes kept. */
  bytes = 0;
  /** When the last subscriber left (or the log was made); the log is forgotten a TTL later. */
  lastLeft: number;
  #entries: (LogEntry | undefined)[] = [];
  #start = 0;

  constructor(topic: string, now: number, at?: { epoch: string; offset: number }) {
    this.topic = topic;
    this.lastLeft = now;
    this.epoch = at?.epoch ?? newEpoch();
    this.head = at?.offset ?? 0;
    this.synced = at !== undefined;
  }

  /** Messages kept. */
  get length(): number {
    return this.#entries.length - this.#start;
  }

  /** The offset of the oldest message kept (`head + 1` when none is). */
  get first(): number {
    return this.head - this.length + 1;
  }

  /** The message at `offset`, if kept. */
  at(offset: number): LogEntry | undefined {
    const first = this.first;
    if (offset < first || offset > this.head) return undefined;
    return this.#entries[this.#start + offset - first];
  }

  /** Appends a message and trims the log to its bounds. */
  append(message: PreparedMessage, now: number, bounds: Required<HistoryOptions>): LogEntry {
    const size = message.payload.length;
    const entry = new LogEntry(this, ++this.head, now, message, size);
    this.#entries.push(entry);
    this.bytes += size;
    this.trim(now, bounds);
    return entry;
  }

  /** Forgets every message kept and moves the head to `head` (messages were missed). */
  skipTo(head: number): void {
    this.#entries = [];
    this.#start = 0;
    this.bytes = 0;
    this.head = head;
  }

  /** Drops messages over the count, the bytes or the age. */
  trim(now: number, bounds: Required<HistoryOptions>): void {
    const { historySize, historyTtl, maxHistoryBytes } = bounds;
    const entries = this.#entries;
    while (this.#start < entries.length) {
      const oldest = entries[this.#start]!;
      if (
        this.length <= historySize && this.bytes <= maxHistoryBytes &&
        (historyTtl === 0 || now - oldest.at < historyTtl)
      ) break;
      entries[this.#start++] = undefined;
      this.bytes -= oldest.size;
    }
    if (this.#start === entries.length) {
      this.#entries = [];
      this.#start = 0;
    } else if (this.#start >= 1024 && this.#start * 2 >= entries.length) {
      this.#entries = entries.slice(this.#start);
      this.#start = 0;
    }
  }
}

/**
 * Every topic's log of one hub. Logs are made on the first publish or
 * subscribe, and forgotten once every message in them has expired and they
 * have had no subscriber for a TTL.
 * Expiry is checked as messages are published and replayed (no timer): an
 * idle hub keeps what it has until its next publish.
 */
export class History {
  readonly bounds: Required<HistoryOptions>;
  #logs = new Map<string, TopicLog>();
  #lastSweep = 0;
  #sweepEvery: number;

  constructor(options: HistoryOptions) {
    this.bounds = {
      historySize: options.historySize ?? 0,
      historyTtl: options.historyTtl ?? DEFAULT_HISTORY_TTL,
      maxHistoryBytes: options.maxHistoryBytes ?? DEFAULT_MAX_HISTORY_BYTES,
    };
    const { historySize, historyTtl, maxHistoryBytes } = this.bounds;
    if (!Number.isSafeInteger(historySize) || historySize < 1) {
      throw new RangeError(`historySize must be a whole number of messages, got ${historySize}`);
    }
    if (!(historyTtl >= 0)) {
      throw new RangeError(`historyTtl must be 0 (no age limit) or more, got ${historyTtl}`);
    }
    if (!(maxHistoryBytes >= 0)) {
      throw new RangeError(`maxHistoryBytes must be 0 or more, got ${maxHistoryBytes}`);
    }
    this.#sweepEvery = historyTtl === 0
      ? Infinity
      : Math.max(50, Math.min(historyTtl / 10, 30_000));
  }

  /** The log of `topic`, if there is one, trimmed to its age. */
  get(topic: string, now = performance.now()): TopicLog | undefined {
    const log = this.#logs.get(topic);
    log?.trim(now, this.bounds);
    return log;
  }

  /** The log of `topic`, made if there is none. */
  open(topic: string, now = performance.now()): TopicLog {
    let log = this.get(topic, now);
    if (log === undefined) this.#logs.set(topic, log = new TopicLog(topic, now));
    return log;
  }

  /**
   * Replaces `topic`'s log with an empty one at the position a sequenced bus
   * gives (its epoch; `offset`: the last message so far).
   */
  reset(topic: string, at: { epoch: string; offset: number }, now = performance.now()): TopicLog {
    const old = this.#logs.get(topic);
    const log = new TopicLog(topic, now, at);
    if (old !== undefined) log.lastLeft = old.lastLeft;
    this.#logs.set(topic, log);
    return log;
  }

  /** Records a publish on `topic`. */
  append(topic: string, message: PreparedMessage, now = performance.now()): LogEntry {
    let log = this.#logs.get(topic);
    if (log === undefined) this.#logs.set(topic, log = new TopicLog(topic, now));
    return log.append(message, now, this.bounds);
  }

  /**
   * Every so often (a tenth of the TTL): trims every log to its age and
   * forgets those left empty that have had no subscriber (`inUse`) for a
   * TTL; calls `forgot` with each topic forgotten.
   */
  maybeSweep(now: number, inUse: (topic: string) => boolean, forgot: (topic: string) => void) {
    if (now - this.#lastSweep < this.#sweepEvery) return;
    this.#lastSweep = now;
    const ttl = this.bounds.historyTtl;
    for (const [topic, log] of this.#logs) {
      log.trim(now, this.bounds);
      if (log.length === 0 && !inUse(topic) && now - log.lastLeft >= ttl) {
        this.#logs.delete(topic);
        forgot(topic);
      }
    }
  }

  /** Topics with a log, messages and payload bytes kept. */
  stats(): { topics: number; messages: number; bytes: number } {
    let messages = 0;
    let bytes = 0;
    for (const log of this.#logs.values()) {
      messages += log.length;
      bytes += log.bytes;
    }
    return { topics: this.#logs.size, messages, bytes };
  }
}
