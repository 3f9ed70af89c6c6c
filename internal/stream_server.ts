// The session-per-connection server shared by TCP, TLS and Unix sockets:
// accept loop, connection limit, idle sweep, graceful drain. Internal.
import { type Addr, type Conn, type ConnHandler, formatAddr, type Server } from "../conn.ts";
import type { ManagedConn } from "./socket_conn.ts";
import { closeQuietly } from "./socket.ts";
import { toAddr } from "./addr.ts";

/** What a server reports as it runs; programs log these to stderr. */
export type ServerEvent =
  | { type: "open"; remoteAddr: Addr; connections: number }
  | { type: "close"; remoteAddr: Addr; connections: number }
  | { type: "refused"; remoteAddr: Addr; reason: "max-connections" }
  | { type: "idle"; remoteAddr: Addr }
  | { type: "error"; remoteAddr?: Addr; error: unknown };

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
}

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

/** A running server over a `Deno.Listener`. */
export class StreamServer<C extends Conn = Conn> implements Server {
  readonly addr: { hostname: string; port: number };
  readonly finished: Promise<void>;

  #listener: Deno.Listener;
  #wrap: Wrap;
  #handler: ConnHandler<C>;
  #max: number;
  #idle: number;
  #grace: number;
  #onEvent: (event: ServerEvent) => void;
  #sessions = new Set<Promise<void>>();
  // Open connections: their activity as last seen, and how to end their
  // session when the server closes them itself (idle, or after the grace).
  #conns = new Map<ManagedConn, { seen: number; since: number; kill: () => void }>();
  #pending = new Set<Deno.Conn>();
  // Connections the server closed itself: their handlers' errors are expected.
  #killed = new WeakSet<ManagedConn>();
  #closing = false;
  #forced = false;
  #sweeper: ReturnType<typeof setInterval> | undefined;
  #drained: (() => void) | undefined;
  #signal: AbortSignal | undefined;
  #onAbort = () => void this.close();

  constructor(
    listener: Deno.Listener,
    wrap: Wrap,
    handler: ConnHandler<C>,
    options: ServerOptions,
  ) {
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
    return this.#sessions.size;
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
    if (this.#sessions.size > 0) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const drained = new Promise<void>((resolve) => (this.#drained = resolve));
      const grace = new Promise<void>((resolve) => (timer = setTimeout(resolve, this.#grace)));
      await Promise.race([drained, grace]);
      clearTimeout(timer);
      this.#forced = true;
      for (const socket of this.#pending) closeQuietly(socket);
      for (const [conn, state] of this.#conns) {
        conn.destroy();
        state.kill();
      }
      await Promise.allSettled([...this.#sessions]);
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
      if (this.#sessions.size >= this.#max) {
        const remoteAddr = socket.remoteAddr;
        closeQuietly(socket);
        this.#onEvent({
          type: "refused",
          remoteAddr: toAddr(remoteAddr),
          reason: "max-connections",
        });
        continue;
      }
      this.#serve(socket);
    }
  }

  #serve(socket: Deno.Conn): void {
    const session = this.#session(socket);
    this.#sessions.add(session);
    session.finally(() => {
      this.#sessions.delete(session);
      if (this.#closing && this.#sessions.size === 0) this.#drained?.();
    });
  }

  async #session(socket: Deno.Conn): Promise<void> {
    const remoteAddr = toAddr(socket.remoteAddr);
    let conn: ManagedConn | undefined;
    this.#pending.add(socket);
    try {
      conn = await this.#wrap(socket);
    } catch (error) {
      closeQuietly(socket);
      if (!this.#forced) this.#onEvent({ type: "error", remoteAddr, error });
      return;
    } finally {
      this.#pending.delete(socket);
    }
    if (this.#forced) {
      conn.destroy();
      return;
    }
    // A handler that never returns must not hold its session (its
    // maxConnections slot, and shutdown) once the server has closed its
    // connection: the session ends then, whatever the handler does.
    let kill!: () => void;
    const killed = new Promise<void>((resolve) => (kill = resolve));
    this.#conns.set(conn, { seen: conn.activity, since: performance.now(), kill });
    this.#onEvent({ type: "open", remoteAddr, connections: this.#sessions.size });
    try {
      const running = Promise.resolve(this.#handler(conn as unknown as C));
      // A rejection after the server closed the connection is expected.
      running.catch(() => {});
      await Promise.race([running, killed]);
    } catch (error) {
      if (!this.#forced && !this.#killed.has(conn)) {
        this.#onEvent({ type: "error", remoteAddr, error });
      }
      conn.destroy();
    } finally {
      await conn.close().catch(() => conn!.destroy());
      this.#conns.delete(conn);
      this.#onEvent({ type: "close", remoteAddr, connections: this.#sessions.size - 1 });
    }
  }

  #sweep(): void {
    const now = performance.now();
    for (const [conn, state] of this.#conns) {
      if (conn.activity !== state.seen) {
        state.seen = conn.activity;
        state.since = now;
      } else if (now - state.since >= this.#idle) {
        this.#conns.delete(conn);
        this.#killed.add(conn);
        this.#onEvent({ type: "idle", remoteAddr: conn.remoteAddr });
        conn.destroy();
        state.kill();
      }
    }
  }
}
