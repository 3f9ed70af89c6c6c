// The session-per-connection server shared by TCP, TLS and Unix sockets:
// accept loop, connection limit, idle sweep, graceful drain. Internal.
import { type Addr, type Conn, type ConnHandler, formatAddr, type Server } from "../conn.ts";
import type { ManagedConn } from "./socket_conn.ts";
import { closeQuietly } from "./socket.ts";
import { AdmissionControl } from "./admission.ts";
import { CidrSet, LOOPBACK } from "./cidr.ts";
import { ProxiedSocket, readProxyHeaderExactly } from "./proxied_socket.ts";
import { toAddr } from "./addr.ts";

/** What a server reports as it runs; programs log these to stderr. */
export type ServerEvent =
  | { type: "open"; remoteAddr: Addr; connections: number }
  | { type: "close"; remoteAddr: Addr; connections: number }
  | {
    /**
     * A connection closed at once: over `maxConnections`, over
     * `maxConnectionsPerIp` (`per-ip`), over `acceptRate` (`rate`), from a
     * source not allowed to send a PROXY header (`proxy-source`), or without
     * a valid one (`proxy-header`, with the `error`).
     */
    type: "refused";
    remoteAddr: Addr;
    reason: RefusalReason;
    error?: unknown;
  }
  | { type: "idle"; remoteAddr: Addr }
  | { type: "error"; remoteAddr?: Addr; error: unknown };

/** Why a server closed a connection at once. */
export type RefusalReason = "max-connections" | "per-ip" | "rate" | "proxy-source" | "proxy-header";

/** What a server has done so far: counters for logs, metrics and tests. */
export interface ServerStats {
  /** Connections accepted from the listener (refused ones included). */
  accepted: number;
  /** Connections open now. */
  open: number;
  /** Connections closed at once, by reason. */
  refused: Record<RefusalReason, number>;
  /** Connections the idle timeout closed. */
  idleClosed: number;
  /** Connections whose setup (PROXY header, TLS handshake, upgrade) failed. */
  failedSetups: number;
  /**
   * The same, by cause: the error's stable `code` (`ERR_TLS_HANDSHAKE_TIMEOUT`,
   * `ERR_TLS_NOT_TLS`, `ERR_TLS_CERT_UNTRUSTED`, `ERR_WS_HANDSHAKE`,
   * `ERR_PROXY_PROTOCOL`, …), or `"other"`.
   */
  failedSetupsByCause: Record<string, number>;
  /** Client addresses (IPv6 by /64) tracked for per-address limits. */
  trackedAddresses: number;
  /** Bytes received, by connections closed and open. */
  bytesRead: number;
  /** Bytes sent. */
  bytesWritten: number;
}

/** Options every netkit stream server takes. */
export interface ServerOptions {
  /** Stops the server gracefully when aborted. */
  signal?: AbortSignal;
  /**
   * Connections served at once; one beyond is closed right after accept,
   * never queued. @default {Infinity}
   */
  maxConnections?: number;
  /**
   * Milliseconds without a read or write starting before a connection is
   * closed; 0 disables. A read that waits on a silent peer, or a write that
   * waits on a peer that does not read, is no progress. @default {0}
   */
  idleTimeout?: number;
  /**
   * Milliseconds open connections get to finish after shutdown starts,
   * before they are closed. @default {5000}
   */
  gracePeriod?: number;
  /**
   * Called for every connection event and error. By default errors (a
   * handler that threw, an accept that failed) are logged with
   * `console.error`, as `Deno.serve` does, and other events are ignored.
   */
  onEvent?: (event: ServerEvent) => void;
  /**
   * Connections at once per client address (IPv6 grouped by /64: one client
   * owns a whole /64). One more is closed at once. @default {Infinity}
   */
  maxConnectionsPerIp?: number;
  /**
   * New connections per second per client address, with bursts of
   * `ceil(acceptRate)` (a token bucket). Over it: closed at once. 0: no
   * limit. @default {0}
   */
  acceptRate?: number;
  /**
   * Expect a PROXY protocol header (v1 or v2) before anything else, as a
   * load balancer such as HAProxy sends it (`send-proxy`, `send-proxy-v2`):
   * the connection's `remoteAddr` becomes the client's, and per-address
   * limits, logs and metrics use it. Only sources in `from` (CIDRs; default
   * loopback) may send one; others are closed. A header that is missing,
   * malformed, truncated or not complete within `timeout` ms (default
   * 10000; 0: no limit) costs that connection only.
   */
  proxyProtocol?: boolean | { from?: string[]; timeout?: number };
}

/**
 * A setup that ended on purpose without a connection (the WebSocket server
 * answered a plain HTTP request): reported by its wrapper, not counted as a
 * failure.
 */
export class Answered extends Error {}

/**
 * What a handler may return instead of a promise: the session goes on, and
 * its end is reported with {@linkcode StreamServer.endSession}. A server that
 * holds many quiet connections (WebSocket) then keeps no promise, callback
 * pair or closure per connection for the session's end: it says so itself.
 */
export const SESSION_PENDING: unique symbol = Symbol("netkit.session.pending");

/** A connection handler as the stream server runs it (see {@linkcode SESSION_PENDING}). */
export type SessionHandler<C> = (conn: C) => void | Promise<void> | typeof SESSION_PENDING;

/** Writes a last word to a connection refused by a per-address limit (e.g. HTTP 429). */
export type Refuse = (socket: Deno.Conn, reason: "per-ip" | "rate") => Promise<void> | undefined;

/** Turns an accepted socket into a Conn (TLS: after its handshake). */
export type Wrap = (socket: Deno.Conn) => ManagedConn | Promise<ManagedConn>;

function defaultOnEvent(event: ServerEvent): void {
  if (event.type !== "error") return;
  const from = event.remoteAddr ? ` (${formatAddr(event.remoteAddr)})` : "";
  const message = event.error instanceof Error ? event.error.message : String(event.error);
  // deno-lint-ignore no-console
  console.error(`netkit: connection error${from}: ${message}`);
}

/**
 * The user's `onEvent`, made safe to call anywhere: a callback that throws is
 * reported, never allowed to break the accept loop or a session (or to
 * become an unhandled rejection that ends the process).
 */
export function guarded<E extends { type: string }>(
  onEvent: (event: E) => void,
): (event: E) => void {
  return (event) => {
    try {
      onEvent(event);
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      // deno-lint-ignore no-console
      console.error(
        `netkit: the server's onEvent callback threw on a "${event.type}" event: ${message}`,
      );
    }
  };
}

/**
 * An open connection as the server tracks it: its activity as last seen by
 * the idle sweep, and what ending its session must release. One small
 * object per connection — no promise, no closure: the session's own async
 * function is the only thing that waits.
 */
class Tracked {
  readonly conn: ManagedConn;
  seen: number;
  since = performance.now();
  release: (() => void) | undefined;
  /** The session was ended, by its handler or by the server (idle, grace). */
  ended = false;
  /** The server closed the connection itself: its handler's errors are expected. */
  killed = false;

  constructor(conn: ManagedConn, release: (() => void) | undefined) {
    this.conn = conn;
    this.seen = conn.activity;
    this.release = release;
  }
}

/** A running server over a `Deno.Listener`. */
export class StreamServer<C extends Conn = Conn> implements Server {
  readonly addr: { hostname: string; port: number };
  readonly finished: Promise<void>;

  #listener: Deno.Listener;
  #wrap: Wrap;
  #handler: SessionHandler<C>;
  #max: number;
  #idle: number;
  #grace: number;
  #onEvent: (event: ServerEvent) => void;
  // Sessions running (set-up ones included), counted rather than kept.
  #active = 0;
  // Open connections: their activity as last seen, and how to end their
  // session when the server closes them itself (idle, or after the grace).
  #conns = new Map<ManagedConn, Tracked>();
  #pending = new Set<Deno.Conn>();
  #closing = false;
  #forced = false;
  #sweeper: ReturnType<typeof setInterval> | undefined;
  #drained: (() => void) | undefined;
  #signal: AbortSignal | undefined;
  #onAbort = () => void this.close();
  #admission: AdmissionControl | undefined;
  #proxyFrom: CidrSet | undefined;
  #proxyTimeout = 10_000;
  #refuse: Refuse | undefined;
  #stats = {
    accepted: 0,
    refused: { "max-connections": 0, "per-ip": 0, rate: 0, "proxy-source": 0, "proxy-header": 0 },
    idleClosed: 0,
    failedSetups: 0,
    failedSetupsByCause: {} as Record<string, number>,
    bytesRead: 0,
    bytesWritten: 0,
  };

  #defer: ((hostname: string) => boolean) | undefined;

  /**
   * @param hooks `refuse` says something to a connection refused by a
   *   per-address limit before it is closed (the WebSocket server's 429);
   *   `deferAdmission` picks direct peers whose client address comes later
   *   (a trusted proxy's X-Forwarded-For): the wrapper calls
   *   {@linkcode StreamServer.admitLater} for them.
   */
  constructor(
    listener: Deno.Listener,
    wrap: Wrap,
    handler: ConnHandler<C> | SessionHandler<C>,
    options: ServerOptions,
    hooks: { refuse?: Refuse; deferAdmission?: (hostname: string) => boolean } = {},
  ) {
    this.#refuse = hooks.refuse;
    this.#defer = hooks.deferAdmission;
    if ((options.maxConnectionsPerIp ?? Infinity) < Infinity || (options.acceptRate ?? 0) > 0) {
      this.#admission = new AdmissionControl({
        maxConnectionsPerIp: options.maxConnectionsPerIp,
        acceptRate: options.acceptRate || undefined,
      });
    }
    if (options.proxyProtocol) {
      const proxy = options.proxyProtocol === true ? {} : options.proxyProtocol;
      this.#proxyFrom = proxy.from ? new CidrSet(proxy.from) : LOOPBACK;
      this.#proxyTimeout = proxy.timeout ?? 10_000;
    }
    this.#listener = listener;
    this.#wrap = wrap;
    this.#handler = handler;
    this.#max = options.maxConnections ?? Infinity;
    this.#idle = options.idleTimeout ?? 0;
    this.#grace = options.gracePeriod ?? 5000;
    this.#onEvent = guarded(options.onEvent ?? defaultOnEvent);
    const local = listener.addr;
    this.addr = local.transport === "tcp" || local.transport === "udp"
      ? { hostname: local.hostname, port: local.port }
      : { hostname: "path" in local ? local.path : "", port: 0 };
    if (this.#idle > 0) {
      const every = Math.max(25, Math.min(1000, this.#idle / 4));
      this.#sweeper = setInterval(() => this.#sweep(), every);
    }
    this.finished = this.#run();
    this.#signal = options.signal;
    if (options.signal?.aborted) void this.close();
    else options.signal?.addEventListener("abort", this.#onAbort, { once: true });
  }

  /** How many connections are open now. */
  get connections(): number {
    return this.#active;
  }

  /** The counters so far (a copy). */
  stats(): ServerStats {
    const s = this.#stats;
    let bytesRead = s.bytesRead;
    let bytesWritten = s.bytesWritten;
    for (const conn of this.#conns.keys()) {
      bytesRead += conn.bytesRead ?? 0;
      bytesWritten += conn.bytesWritten ?? 0;
    }
    return {
      bytesRead,
      bytesWritten,
      accepted: s.accepted,
      open: this.#active,
      refused: { ...s.refused },
      idleClosed: s.idleClosed,
      failedSetups: s.failedSetups,
      failedSetupsByCause: { ...s.failedSetupsByCause },
      trackedAddresses: this.#admission?.stats().keys ?? 0,
    };
  }

  close(): Promise<void> {
    if (!this.#closing) {
      this.#closing = true;
      try {
        this.#listener.close();
      } catch {
        // Already closed.
      }
    }
    return this.finished;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #run(): Promise<void> {
    await this.#acceptLoop();
    this.#closing = true;
    if (this.#active > 0) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const drained = new Promise<void>((resolve) => (this.#drained = resolve));
      const grace = new Promise<void>((resolve) => (timer = setTimeout(resolve, this.#grace)));
      await Promise.race([drained, grace]);
      clearTimeout(timer);
      this.#forced = true;
      for (const socket of this.#pending) closeQuietly(socket);
      for (const [conn, tracked] of this.#conns) {
        tracked.killed = true;
        conn.destroy();
        this.#end(tracked);
      }
      if (this.#active > 0) await drained;
    }
    clearInterval(this.#sweeper);
    this.#signal?.removeEventListener("abort", this.#onAbort);
  }

  async #acceptLoop(): Promise<void> {
    for (;;) {
      let socket: Deno.Conn;
      try {
        socket = await this.#listener.accept();
      } catch (err) {
        if (this.#closing || err instanceof Deno.errors.BadResource) return;
        this.#onEvent({ type: "error", error: err });
        // Out of file descriptors, say: back off rather than spin.
        await new Promise((resolve) => setTimeout(resolve, 50));
        continue;
      }
      if (this.#closing) {
        closeQuietly(socket);
        return;
      }
      this.#stats.accepted++;
      if (this.#active >= this.#max) {
        this.#refused(socket, "max-connections");
        continue;
      }
      if (this.#proxyFrom !== undefined) {
        const from = socket.remoteAddr;
        if (!("hostname" in from) || !this.#proxyFrom.has(from.hostname)) {
          this.#refused(socket, "proxy-source");
          continue;
        }
        // The client's address is in the header: admission waits for it.
        this.#serve(socket);
        continue;
      }
      const release = this.#admit(socket);
      if (release !== false) this.#serve(socket, release);
    }
  }

  #failedSetup(error: unknown): void {
    const code = (error as { code?: unknown })?.code;
    const cause = typeof code === "string" ? code : "other";
    this.#stats.failedSetups++;
    this.#stats.failedSetupsByCause[cause] = (this.#stats.failedSetupsByCause[cause] ?? 0) + 1;
  }

  /** Closes a connection at once, says why. */
  #refused(socket: Deno.Conn, reason: RefusalReason, error?: unknown): void {
    const remoteAddr = toAddr(socket.remoteAddr);
    this.#stats.refused[reason]++;
    const say = reason === "per-ip" || reason === "rate"
      ? this.#refuse?.(socket, reason)
      : undefined;
    if (say === undefined) closeQuietly(socket);
    else say.finally(() => closeQuietly(socket));
    this.#onEvent(
      error === undefined
        ? { type: "refused", remoteAddr, reason }
        : { type: "refused", remoteAddr, reason, error },
    );
  }

  /**
   * Per-address limits for a client address learnt after accept (from a
   * trusted proxy's X-Forwarded-For): a release to call when the connection
   * ends, or the reason it is refused (counted and reported; answering and
   * closing are the caller's).
   */
  admitLater(hostname: string, remoteAddr: Addr): { release: () => void } | {
    refused: "per-ip" | "rate";
  } {
    if (this.#admission === undefined) return { release: () => {} };
    const admission = this.#admission.admit(hostname);
    if (admission.ok) return { release: admission.release };
    this.#stats.refused[admission.reason]++;
    this.#onEvent({ type: "refused", remoteAddr, reason: admission.reason });
    return { refused: admission.reason };
  }

  /** Per-address limits: a release for the session, or false (refused and closed). */
  #admit(socket: Deno.Conn): (() => void) | undefined | false {
    if (this.#admission === undefined) return undefined;
    const addr = socket.remoteAddr;
    if (!("hostname" in addr)) return undefined; // Unix sockets have no address to limit
    if (this.#defer?.(addr.hostname)) return undefined; // admitted later, by its real client
    const admission = this.#admission.admit(addr.hostname);
    if (admission.ok) return admission.release;
    this.#refused(socket, admission.reason);
    return false;
  }

  /** Reads the PROXY header under its deadline; the socket as the client's, or undefined. */
  async #unwrapProxy(socket: Deno.Conn): Promise<Deno.Conn | undefined> {
    const timer = this.#proxyTimeout > 0
      ? setTimeout(() => closeQuietly(socket), this.#proxyTimeout)
      : undefined;
    try {
      const header = await readProxyHeaderExactly(socket);
      return new ProxiedSocket(socket, header);
    } catch (error) {
      this.#failedSetup(error);
      this.#refused(socket, "proxy-header", error);
      return undefined;
    } finally {
      clearTimeout(timer);
    }
  }

  #serve(socket: Deno.Conn, release?: () => void): void {
    this.#active++;
    void this.#session(socket, release);
  }

  /**
   * One connection, from accept to close. While the handler runs this is
   * the one async function (with few locals: its frame is kept as long as
   * the connection is open) a connection costs the server; a server may
   * hold 100,000 of them. Never rejects.
   */
  async #session(raw: Deno.Conn, release: (() => void) | undefined): Promise<void> {
    const tracked = await this.#setUp(raw, release);
    if (tracked === undefined) return;
    // From here on nothing waits in an async function: the handler's
    // promise settles into two callbacks (a generator kept for the whole
    // life of a connection costs more than the callbacks do).
    let running: void | Promise<void> | typeof SESSION_PENDING;
    try {
      running = this.#handler(tracked.conn as unknown as C);
    } catch (error) {
      return this.#handled(tracked, error, true);
    }
    // The handler reports the end itself (endSession).
    if (running === SESSION_PENDING) return;
    if (typeof (running as PromiseLike<void> | undefined)?.then !== "function") {
      return this.#handled(tracked, undefined, false);
    }
    (running as PromiseLike<void>).then(
      () => this.#handled(tracked, undefined, false),
      (error) => this.#handled(tracked, error, true),
    );
  }

  /**
   * Ends the session of a connection whose handler returned
   * {@linkcode SESSION_PENDING}: as if its promise had settled — fulfilled,
   * or rejected with `error` when `failed`.
   */
  endSession(conn: C, error?: unknown, failed = false): void {
    const tracked = this.#conns.get(conn as unknown as ManagedConn);
    if (tracked !== undefined) return this.#handled(tracked, error, failed);
    // The server ended it already (idle, end of the grace period): its
    // errors are expected, as #handled treats a killed session's.
    if (failed) (conn as unknown as ManagedConn).destroy();
  }

  /** The handler returned (or failed): close the connection, end the session. */
  #handled(tracked: Tracked, error: unknown, failed: boolean): void {
    const conn = tracked.conn;
    if (failed) {
      if (!this.#forced && !tracked.killed) {
        this.#onEvent({ type: "error", remoteAddr: conn.remoteAddr, error });
      }
      conn.destroy();
    }
    // A handler may outlive its session: the server ended it (idle, end of
    // the grace period) and did the rest already.
    if (tracked.ended) return;
    conn.close().catch(() => conn.destroy()).finally(() => this.#end(tracked));
  }

  /**
   * PROXY header, per-address admission, then the wrapper (TLS handshake,
   * upgrade): the connection, tracked and announced; or undefined when the
   * setup failed (reported, and the session's slot given back).
   */
  async #setUp(raw: Deno.Conn, release: (() => void) | undefined): Promise<Tracked | undefined> {
    let socket = raw;
    let conn: ManagedConn;
    try {
      if (this.#proxyFrom !== undefined) {
        this.#pending.add(raw);
        const proxied = await this.#unwrapProxy(raw).finally(() => this.#pending.delete(raw));
        if (proxied === undefined) return this.#left(release);
        const admitted = this.#admit(proxied);
        if (admitted === false) return this.#left(release);
        socket = proxied;
        release = admitted;
      }
      this.#pending.add(socket);
      conn = await this.#wrap(socket);
    } catch (error) {
      closeQuietly(socket);
      if (!this.#forced) {
        if (!(error instanceof Answered)) this.#failedSetup(error);
        this.#onEvent({ type: "error", remoteAddr: toAddr(socket.remoteAddr), error });
      }
      return this.#left(release);
    } finally {
      this.#pending.delete(socket);
    }
    if (this.#forced) {
      conn.destroy();
      return this.#left(release);
    }
    const tracked = new Tracked(conn, release);
    this.#conns.set(conn, tracked);
    this.#onEvent({ type: "open", remoteAddr: conn.remoteAddr, connections: this.#active });
    return tracked;
  }

  /**
   * Ends a tracked connection's session, once: by its handler returning, or
   * by the server (idle timeout, end of the grace period) — then a handler
   * that never returns holds no slot, and does not hold up shutdown.
   */
  #end(tracked: Tracked): void {
    if (tracked.ended) return;
    tracked.ended = true;
    const conn = tracked.conn;
    this.#conns.delete(conn);
    this.#stats.bytesRead += conn.bytesRead ?? 0;
    this.#stats.bytesWritten += conn.bytesWritten ?? 0;
    this.#onEvent({ type: "close", remoteAddr: conn.remoteAddr, connections: this.#active - 1 });
    this.#left(tracked.release);
  }

  /** A session is over: its slot and its address's count go back. */
  #left(release: (() => void) | undefined): undefined {
    release?.();
    this.#active--;
    if (this.#closing && this.#active === 0) this.#drained?.();
    return undefined;
  }

  #sweep(): void {
    const now = performance.now();
    for (const [conn, state] of this.#conns) {
      if (conn.activity !== state.seen) {
        state.seen = conn.activity;
        state.since = now;
      } else if (now - state.since >= this.#idle) {
        state.killed = true;
        this.#stats.idleClosed++;
        this.#onEvent({ type: "idle", remoteAddr: conn.remoteAddr });
        conn.destroy();
        this.#end(state);
      }
    }
  }
}
