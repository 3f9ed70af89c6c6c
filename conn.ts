/**
 * The one connection interface every netkit transport satisfies.
 *
 * @module
 */
import { hostPort } from "./internal/host.ts";

/** The address of one end of a connection. */
export type Addr = NetAddr | UnixAddr;

/** A TCP (or TLS over TCP, or WebSocket) endpoint. */
export interface NetAddr {
  /** Always `"tcp"`, also for TLS and WebSocket connections. */
  transport: "tcp";
  /** An IPv4 or IPv6 address, without brackets. */
  hostname: string;
  /** The port number. */
  port: number;
}

/** A Unix domain socket endpoint. */
export interface UnixAddr {
  /** Always `"unix"`. */
  transport: "unix";
  /** The socket's path in the file system (may be empty for an unnamed peer). */
  path: string;
}

/**
 * A bidirectional byte connection: TCP, TLS (direct or upgraded with
 * STARTTLS), Unix sockets and WebSocket all look like this, so a handler
 * written once serves every one of them.
 *
 * ## Bytes
 * - `readable` yields what the peer sent, in order; it ends when the peer
 *   half-closes (or closes). Bytes that `io` helpers such as `readUntil`
 *   buffered past a delimiter are yielded first: nothing is lost when the
 *   stream is handed on to `pipeTo`, a framing transform or a TLS upgrade.
 * - `writable` sends bytes in order. Closing it half-closes the connection
 *   (TCP/TLS send a FIN or `close_notify`); aborting it closes the whole
 *   connection.
 * - A `pipeTo` between a netkit `readable` and a netkit `writable` runs as a
 *   plain read/write loop on the sockets underneath, so an echo handler costs
 *   no more than hand-written `read()`/`write()` calls.
 *
 * ## Messages (WebSocket)
 * A message transport maps onto the same shape: each message received is one
 * chunk of `readable` (text is delivered as its UTF-8 bytes), each chunk written
 * to `writable` is sent as one binary message, closing `writable` starts the
 * close handshake (code 1000) and the end of `readable` is the peer's close
 * frame. Message boundaries are therefore kept for code that reads chunk by
 * chunk, and ignored by code that treats the connection as a byte stream — an
 * echo or line protocol runs unchanged. Transports with more to say (close
 * codes, text frames, ping) offer it on their own richer type.
 *
 * ## Lifetime
 * `close()` is graceful and idempotent: it flushes what was already written,
 * then releases the socket; `closed` resolves once the connection is fully
 * released, whichever side ended it. `await using` calls `close()`.
 *
 * @example An echo handler that serves every transport
 * ```ts
 * import type { Conn } from "@netkit/netkit";
 *
 * async function echo(conn: Conn): Promise<void> {
 *   await conn.readable.pipeTo(conn.writable);
 * }
 * ```
 */
export interface Conn extends AsyncDisposable {
  /** The bytes the peer sends. */
  readonly readable: ReadableStream<Uint8Array>;
  /** The bytes sent to the peer. Closing it half-closes the connection. */
  readonly writable: WritableStream<Uint8Array>;
  /** This end's address. */
  readonly localAddr: Addr;
  /** The peer's address. */
  readonly remoteAddr: Addr;
  /** Resolves once the connection is fully closed and its resources released. */
  readonly closed: Promise<void>;
  /**
   * Half-closes: no more bytes will be sent, but `readable` keeps delivering
   * what the peer sends. Waits for earlier writes first. A no-op when already
   * half-closed.
   */
  closeWrite(): Promise<void>;
  /** Closes the connection gracefully (pending writes are flushed). Idempotent. */
  close(): Promise<void>;
}

/**
 * Something that handles one connection at a time. A handler that throws or
 * rejects costs its own connection only; the server closes it afterwards.
 */
export type ConnHandler<C extends Conn = Conn> = (conn: C) => void | Promise<void>;

/** What `serve()` of every transport returns. */
export interface Server extends AsyncDisposable {
  /** The address the server listens on; `port` is the real one when 0 was asked for. */
  readonly addr: { hostname: string; port: number };
  /** Resolves when the server has stopped and its last connection is gone. */
  readonly finished: Promise<void>;
  /**
   * Stops accepting, lets open connections finish for the grace period,
   * then closes the rest. Idempotent: every call returns `finished`.
   */
  close(): Promise<void>;
}

/** Formats an address for logs: `127.0.0.1:7000`, `[::1]:7000` or the socket path. */
export function formatAddr(addr: Addr | { hostname: string; port: number }): string {
  if ("path" in addr) return addr.path || "(unnamed unix socket)";
  return hostPort(addr.hostname, addr.port);
}
