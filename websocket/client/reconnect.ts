/**
 * Opt-in reconnection: {@linkcode ReconnectingWebSocket} keeps a client
 * connected, reconnecting with exponential backoff and jitter.
 *
 * @module
 */
import { connect, type ConnectOptions } from "./client.ts";
import type { Message, SendOptions, WebSocketConn } from "../connection/conn.ts";
import { CloseCode, DEFAULT_MAX_PAYLOAD } from "../codec/constants.ts";
import { WebSocketError } from "../errors.ts";
import {
  decodeServerMessage,
  encodeClientEnvelope,
  formatResumeUrl,
  NETKIT_V1,
  type NetkitV1Position,
} from "../codec/netkit_v1.ts";

type RetryPolicy = NonNullable<ReconnectingOptions["reconnect"]>;

/** Options for {@linkcode ReconnectingWebSocket}: those of `connect()`, plus `reconnect` and `resume`. */
export interface ReconnectingOptions extends ConnectOptions {
  /**
   * Speak `netkit.v1` (docs/netkit-v1.md) so that nothing is lost across a
   * reconnect: `netkit.v1` is offered first among `protocols`; when the
   * server agrees (a netkit server with history), every message is
   * unwrapped from its envelope, the last position seen is kept per topic,
   * and every reconnect asks the server for what came after it. The
   * application then sees each message of a topic exactly once, in order,
   * or is told through `reconnect.onRecovered` that the server could not
   * cover the gap. `true`, or the positions to start from (saved from
   * {@linkcode ReconnectingWebSocket.positions} by an earlier run). A
   * server that does not agree is spoken to plainly. Send through this
   * client (`send`, `sendAcked`), which wraps each message in its envelope,
   * not through `current` directly. With it, `maxPayload` defaults to
   * 2 MiB + 1 KiB, room for a 1 MiB message and its envelope.
   * @default {false}
   */
  resume?: boolean | Record<string, { epoch: string; offset: number }>;
  /** The retry policy. Times are milliseconds. */
  reconnect?: {
    /** The first delay after a disconnect (and after a failed attempt). @default {500} */
    minDelay?: number;
    /** The longest delay; each failed attempt doubles it up to this. @default {30000} */
    maxDelay?: number;
    /**
     * How much of each delay is random, from 0 (none) to 1 (anywhere between 0
     * and the delay), so that many clients do not come back at once.
     * @default {0.5}
     */
    jitter?: number;
    /** Failed attempts in a row before giving up (`closed` then resolves, `error` says why). @default {Infinity} */
    maxAttempts?: number;
    /** Called with each new connection after the first (resubscribe, resend state, …). */
    onReconnect?: (ws: WebSocketConn) => void | Promise<void>;
    /** Called when a connection ends (before the delay), with its close code and reason. */
    onDisconnect?: (code: number, reason: string) => void;
    /**
     * With `resume`: called for each topic the server answered a resume
     * for, before its replayed messages. `recovered: false` means messages
     * were missed — `reason` `"trimmed"` (the history no longer reached
     * back) or `"epoch"` (the log was lost, e.g. the server restarted) —
     * and the application should reload its state; what follows is live.
     */
    onRecovered?: (event: { topic: string; recovered: boolean; reason?: string }) => void;
    /**
     * Decides whether to try again after a close (`code`) or a failed
     * attempt (`error`). Default: always.
     */
    shouldReconnect?: (event: { code?: number; reason?: string; error?: unknown }) => boolean;
  };
}

/**
 * A client that stays connected: it connects at once and, whenever the
 * connection ends (or an attempt fails) without `close()` having been
 * called, connects again after `minDelay`, doubling the delay per failed
 * attempt up to `maxDelay`, each delay shortened by a random part
 * (`jitter`). A successful connection resets the delay.
 *
 * Messages of every connection come out of one iterator (or `receive()`),
 * in order. `send()` goes to the current connection and resolves to `false`
 * while there is none — nothing is queued across a reconnect; wait with
 * `ready()`, and resend state from `onReconnect`.
 *
 * With `resume`, broadcasts are not lost either: against a netkit server
 * with history, each reconnect resumes every topic from the last message
 * seen (see `resume` and `reconnect.onRecovered`).
 *
 * @example
 * ```ts
 * import { ReconnectingWebSocket, serve } from "@netkit/netkit/websocket";
 * import assert from "node:assert/strict";
 *
 * await using server = serve({ port: 0 }, async (ws) => {
 *   for await (const msg of ws) await ws.send(msg);
 * });
 * await using rws = new ReconnectingWebSocket(`ws://127.0.0.1:${server.addr.port}/`, {
 *   reconnect: { minDelay: 100, maxDelay: 5000, onReconnect: () => console.log("back") },
 * });
 * await rws.ready();
 * await rws.send("hello");
 * assert.equal(await rws.receive(), "hello");
 * ```
 */
export class ReconnectingWebSocket implements AsyncIterable<Message>, AsyncDisposable {
  /** Resolves once closed by `close()`, by the signal, or after giving up. */
  readonly closed: Promise<void>;

  #url: string | URL;
  #options: ConnectOptions;
  #policy: Required<Pick<RetryPolicy, "minDelay" | "maxDelay" | "jitter" | "maxAttempts">>;
  #hooks: RetryPolicy;
  #stop = new AbortController();
  #current: WebSocketConn | undefined;
  #connections = 0;
  #error: unknown;
  #readyWaiters: { resolve: (ws: WebSocketConn) => void; reject: (err: unknown) => void }[] = [];
  #inbox: Message[] = [];
  #ended = false;
  #readers: (() => void)[] = [];
  #room: (() => void) | undefined;
  #onUserAbort = () => void this.close();
  #resume: boolean;
  #positions = new Map<string, NetkitV1Position>();
  #v1 = false;
  // Acknowledged sends not yet acknowledged, by id, in the order sent.
  #unacked = new Map<string, {
    data: Message;
    resolve: (position: { topic?: string; epoch?: string; offset?: number }) => void;
    reject: (error: unknown) => void;
  }>();

  /**
   * Starts connecting at once.
   *
   * @param url `ws://…` or `wss://…`.
   * @param options `connect()` options and the `reconnect` policy.
   */
  constructor(url: string | URL, options: ReconnectingOptions = {}) {
    const { reconnect = {}, signal, resume = false, ...connectOptions } = options;
    this.#url = url;
    this.#resume = resume !== false;
    if (typeof resume === "object") {
      for (const [topic, { epoch, offset }] of Object.entries(resume)) {
        this.#positions.set(topic, { epoch, offset });
      }
    }
    if (this.#resume) {
      const offered = typeof connectOptions.protocols === "string"
        ? [connectOptions.protocols]
        : connectOptions.protocols ?? [];
      connectOptions.protocols = [NETKIT_V1, ...offered.filter((p) => p !== NETKIT_V1)];
      connectOptions.maxPayload ??= 2 * DEFAULT_MAX_PAYLOAD + 1024;
    }
    this.#options = connectOptions;
    this.#hooks = reconnect;
    this.#policy = {
      minDelay: reconnect.minDelay ?? 500,
      maxDelay: reconnect.maxDelay ?? 30_000,
      jitter: Math.min(1, Math.max(0, reconnect.jitter ?? 0.5)),
      maxAttempts: reconnect.maxAttempts ?? Infinity,
    };
    if (!(this.#policy.minDelay >= 0) || !(this.#policy.maxDelay >= this.#policy.minDelay)) {
      throw new RangeError("reconnect needs 0 <= minDelay <= maxDelay");
    }
    if (signal?.aborted) this.#stop.abort();
    signal?.addEventListener("abort", this.#onUserAbort, { once: true });
    this.closed = this.#run().finally(() => {
      signal?.removeEventListener("abort", this.#onUserAbort);
    });
  }

  /** The open connection, or `undefined` while (re)connecting. */
  get current(): WebSocketConn | undefined {
    return this.#current;
  }

  /**
   * With `resume`: the last position seen per topic — save it to resume
   * from there in a later run (the `resume` option).
   */
  get positions(): Record<string, { epoch: string; offset: number }> {
    const out: Record<string, { epoch: string; offset: number }> = {};
    for (const [topic, { epoch, offset }] of this.#positions) out[topic] = { epoch, offset };
    return out;
  }

  /** How many times it has reconnected (connections after the first). */
  get reconnects(): number {
    return Math.max(0, this.#connections - 1);
  }

  /** Why it gave up (the last attempt's error), once `closed` resolved that way. */
  get error(): unknown {
    return this.#error;
  }

  /**
   * Resolves with the open connection, waiting while (re)connecting.
   * Rejects once the client is closed or has given up.
   */
  ready(): Promise<WebSocketConn> {
    if (this.#current !== undefined && this.#current.readyState === 1) {
      return Promise.resolve(this.#current);
    }
    if (this.#stop.signal.aborted || this.#ended) return Promise.reject(this.#closedError());
    return new Promise((resolve, reject) => this.#readyWaiters.push({ resolve, reject }));
  }

  /**
   * Sends on the current connection; `false` when there is none (or it
   * dropped the message). Over `netkit.v1`, in its envelope.
   */
  send(data: Message, options?: SendOptions): Promise<boolean> {
    const ws = this.#current;
    if (ws === undefined) return Promise.resolve(false);
    if (!this.#v1) return ws.send(data, options);
    const binary = options?.binary ?? typeof data !== "string";
    return ws.send(encodeClientEnvelope(asType(data, binary)));
  }

  /**
   * With `resume`, against a server that agreed on `netkit.v1`: sends
   * `data` with a fresh id and resolves once the server has handled it —
   * with the position of what its handler published (in the log by then),
   * or `{}` if it published nothing. If the connection drops first, it is
   * sent again, same id, on the next one; the server handles an id once
   * (within its `historyTtl`), so the message is published exactly once.
   * Rejects once the client is closed or gives up, or when the server
   * does not speak `netkit.v1`.
   *
   * @example
   * ```ts
   * import { ReconnectingWebSocket, serve } from "@netkit/netkit/websocket";
   * import assert from "node:assert/strict";
   *
   * await using server = serve({ port: 0, historySize: 100 }, {
   *   open: (ws) => void ws.subscribe("chat"),
   *   message: (ws, data) => void ws.publish("chat", data, { includeSelf: true }),
   * });
   * await using rws = new ReconnectingWebSocket(server.url, { resume: true });
   * await rws.ready();
   * const at = await rws.sendAcked("hello");
   * assert.equal(at.topic, "chat");
   * assert.equal(at.offset, 1);
   * assert.equal(await rws.receive(), "hello");
   * ```
   */
  sendAcked(
    data: Message,
    options?: SendOptions,
  ): Promise<{ topic?: string; epoch?: string; offset?: number }> {
    if (this.#stop.signal.aborted || this.#ended) return Promise.reject(this.#closedError());
    if (this.#current !== undefined && !this.#v1) {
      return Promise.reject(
        new WebSocketError(
          "ERR_NETKIT_V1_REQUIRED",
          "sendAcked needs netkit.v1: create the client with { resume: true }, against a netkit server with history",
        ),
      );
    }
    const id = crypto.randomUUID();
    const binary = options?.binary ?? typeof data !== "string";
    const message = asType(data, binary);
    return new Promise((resolve, reject) => {
      this.#unacked.set(id, { data: message, resolve, reject });
      if (this.#current !== undefined) void this.#current.send(encodeClientEnvelope(message, id));
    });
  }

  /** The next message from any connection, or `null` once closed. */
  async receive(): Promise<Message | null> {
    for (;;) {
      if (this.#inbox.length > 0) {
        const msg = this.#inbox.shift()!;
        if (this.#inbox.length <= 8) this.#releaseRoom();
        return msg;
      }
      if (this.#ended) return null;
      await new Promise<void>((resolve) => this.#readers.push(resolve));
    }
  }

  /** Messages from every connection in turn, until closed. */
  [Symbol.asyncIterator](): AsyncIterableIterator<Message> {
    const it: AsyncIterableIterator<Message> = {
      next: async () => {
        const msg = await this.receive();
        return msg === null ? { done: true, value: undefined } : { done: false, value: msg };
      },
      return: () => Promise.resolve({ done: true, value: undefined }),
      [Symbol.asyncIterator]: () => it,
    };
    return it;
  }

  /** Stops reconnecting and closes the current connection. Resolves once all is closed. */
  close(code?: number, reason?: string): Promise<void> {
    if (!this.#stop.signal.aborted) {
      this.#stop.abort();
      this.#releaseRoom();
      const current = this.#current;
      current?.close(code, reason).catch(() => current.destroy());
    }
    return this.closed;
  }

  /** Closes, as {@linkcode ReconnectingWebSocket.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** The delay before attempt `n` (1-based) after a failure or a disconnect. */
  #delay(n: number): number {
    const { minDelay, maxDelay, jitter } = this.#policy;
    const base = Math.min(maxDelay, minDelay * 2 ** Math.min(n - 1, 30));
    return base * (1 - jitter * Math.random());
  }

  #closedError(): Error {
    return this.#error instanceof Error
      ? this.#error
      : new Error("the ReconnectingWebSocket is closed");
  }

  async #run(): Promise<void> {
    const stop = this.#stop.signal;
    // Failed attempts in a row (for maxAttempts), and the backoff step.
    let failures = 0;
    let step = 0;
    try {
      while (!stop.aborted) {
        let ws: WebSocketConn;
        try {
          const url = this.#resume && this.#positions.size > 0
            ? formatResumeUrl(this.#url, this.#positions)
            : this.#url;
          ws = await connect(url, { ...this.#options, signal: stop });
        } catch (error) {
          if (stop.aborted) break;
          failures++;
          if (
            failures >= this.#policy.maxAttempts ||
            this.#hooks.shouldReconnect?.({ error }) === false
          ) {
            this.#error = error;
            break;
          }
          await this.#sleep(this.#delay(++step));
          continue;
        }
        if (stop.aborted) {
          await ws.close().catch(() => ws.destroy());
          break;
        }
        failures = 0;
        step = 0;
        this.#v1 = ws.protocol === NETKIT_V1;
        this.#current = ws;
        // Sent but not acknowledged: again, same ids, before anything new.
        for (const [id, { data, reject }] of this.#unacked) {
          if (this.#v1) void ws.send(encodeClientEnvelope(data, id));
          else {
            this.#unacked.delete(id);
            reject(
              new WebSocketError("ERR_NETKIT_V1_REQUIRED", "the server no longer speaks netkit.v1"),
            );
          }
        }
        this.#connections++;
        for (const waiter of this.#readyWaiters.splice(0)) waiter.resolve(ws);
        if (this.#connections > 1) {
          try {
            await this.#hooks.onReconnect?.(ws);
          } catch {
            // A failing hook must not stop the client.
          }
        }
        let broken = false;
        for await (const msg of ws) {
          if (broken) continue;
          let data: Message | undefined = msg;
          if (this.#v1) {
            const unwrapped = this.#unwrap(msg);
            if (unwrapped === false) {
              // A gap or garbage: end this connection, resume on the next.
              broken = true;
              ws.close(CloseCode.PolicyViolation, "netkit.v1: out of sequence, resuming")
                .catch(() => ws.destroy());
              continue;
            }
            data = unwrapped;
          }
          if (data === undefined) continue;
          this.#inbox.push(data);
          this.#readers.shift()?.();
          if (this.#inbox.length >= 16 && !stop.aborted) {
            await new Promise<void>((r) => (this.#room = r));
          }
        }
        await ws.closed;
        this.#current = undefined;
        if (stop.aborted) break;
        const code = ws.closeCode ?? 1006;
        this.#hooks.onDisconnect?.(code, ws.closeReason);
        if (this.#hooks.shouldReconnect?.({ code, reason: ws.closeReason }) === false) break;
        await this.#sleep(this.#delay(++step));
      }
    } finally {
      this.#ended = true;
      this.#current = undefined;
      this.#stop.abort();
      for (const waiter of this.#readyWaiters.splice(0)) waiter.reject(this.#closedError());
      for (const { reject } of this.#unacked.values()) reject(this.#closedError());
      this.#unacked.clear();
      for (const reader of this.#readers.splice(0)) reader();
      this.#releaseRoom();
    }
  }

  /**
   * A `netkit.v1` message: the application's data (`undefined` when there
   * is none for it), or `false` when the connection must be dropped and
   * resumed (a gap in a topic's offsets, or not an envelope). A message at
   * or before the position already seen is a duplicate: skipped.
   */
  #unwrap(msg: Message): Message | undefined | false {
    let event;
    try {
      event = decodeServerMessage(msg);
    } catch {
      return false;
    }
    if (event === null) return undefined;
    switch (event.type) {
      case "subscribed": {
        this.#positions.set(event.topic, { epoch: event.epoch, offset: event.offset });
        if (event.recovered !== undefined) {
          try {
            this.#hooks.onRecovered?.({
              topic: event.topic,
              recovered: event.recovered,
              ...(event.reason === undefined ? {} : { reason: event.reason }),
            });
          } catch {
            // A failing hook must not stop the client.
          }
        }
        return undefined;
      }
      case "ack": {
        const waiting = this.#unacked.get(event.id);
        if (waiting !== undefined) {
          this.#unacked.delete(event.id);
          const { topic, epoch, offset } = event;
          waiting.resolve(topic === undefined ? {} : { topic, epoch, offset });
        }
        return undefined;
      }
      case "skip":
      case "message": {
        if (event.topic === undefined) return event.type === "message" ? event.data : undefined;
        const seen = this.#positions.get(event.topic);
        if (seen !== undefined && seen.epoch === event.epoch) {
          if (event.offset! <= seen.offset) return undefined;
          if (event.offset! !== seen.offset + 1) return false;
        } else if (seen !== undefined) {
          return false;
        }
        this.#positions.set(event.topic, { epoch: event.epoch!, offset: event.offset! });
        return event.type === "message" ? event.data : undefined;
      }
    }
  }

  #releaseRoom(): void {
    const room = this.#room;
    this.#room = undefined;
    room?.();
  }

  #sleep(ms: number): Promise<void> {
    const stop = this.#stop.signal;
    if (stop.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        stop.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      stop.addEventListener("abort", done, { once: true });
    });
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** `data` as the type it is sent as: a string for text, bytes for binary. */
function asType(data: Message, binary: boolean): Message {
  if (binary) return typeof data === "string" ? encoder.encode(data) : data;
  return typeof data === "string" ? data : decoder.decode(data);
}
