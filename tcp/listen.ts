import type { Addr, Conn } from "../conn.ts";
import { SocketConn } from "../internal/socket_conn.ts";
import { toAddr } from "../internal/addr.ts";
import { acceptAll } from "../internal/socket.ts";
import { listenError } from "./errors.ts";

/** Where to listen: a TCP address, or a Unix socket path. */
export type ListenOptions =
  | {
    /** The address to bind. @default {"127.0.0.1"} */
    hostname?: string;
    /** The port; 0 picks a free one. @default {0} */
    port?: number;
    /** Lets several processes bind the same port (Linux). @default {false} */
    reusePort?: boolean;
    path?: never;
  }
  | {
    /** A Unix socket path to bind instead of a TCP port. */
    path: string;
    hostname?: never;
    port?: never;
    reusePort?: never;
  };

/** Listens with Deno, translating failures into errors a person can act on. */
export function listenSocket(options: ListenOptions): Deno.Listener {
  if (options.path !== undefined) {
    try {
      return Deno.listen({ transport: "unix", path: options.path });
    } catch (err) {
      throw listenError(err, { path: options.path });
    }
  }
  const hostname = options.hostname ?? "127.0.0.1";
  const port = options.port ?? 0;
  try {
    return Deno.listen({ hostname, port, reusePort: options.reusePort });
  } catch (err) {
    throw listenError(err, { hostname, port });
  }
}

/**
 * A listener that yields netkit {@linkcode Conn}s, for code that wants its own
 * accept loop; {@linkcode serve} is the usual choice.
 */
export class Listener implements AsyncIterable<Conn>, AsyncDisposable {
  #listener: Deno.Listener;

  /**
   * Takes over a `Deno.Listener`.
   *
   * @param listener The listener to accept from.
   */
  constructor(listener: Deno.Listener) {
    this.#listener = listener;
  }

  /** The address listened on; for TCP, `port` is the real one. */
  get addr(): Addr {
    return toAddr(this.#listener.addr);
  }

  /** Waits for the next connection. Rejects once the listener is closed. */
  async accept(): Promise<Conn> {
    return new SocketConn(await this.#listener.accept());
  }

  /** Stops listening. Open connections are not affected. Idempotent. */
  close(): void {
    try {
      this.#listener.close();
    } catch {
      // Already closed.
    }
  }

  /** Yields each accepted connection until the listener is closed. */
  [Symbol.asyncIterator](): AsyncIterator<Conn> {
    return acceptAll(() => this.accept());
  }

  /** Closes the listener, as `close()`. */
  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }
}

/**
 * Listens on a TCP port (or a Unix socket) and yields a {@linkcode Conn} per
 * connection.
 *
 * @throws {NetworkError} `EADDRINUSE`, `EADDRNOTAVAIL`, `EACCES`, …
 *
 * @example A tiny accept loop
 * ```ts
 * import { connect, listen } from "@netkit/netkit/tcp";
 * import { readLine, writeAll } from "@netkit/netkit/io";
 * import assert from "node:assert/strict";
 *
 * await using listener = listen({ port: 0 });
 * const { hostname, port } = listener.addr as { hostname: string; port: number };
 * assert.equal(hostname, "127.0.0.1");
 * const serving = (async () => {
 *   for await (const conn of listener) {
 *     await writeAll(conn.writable, "hi\n");
 *     await conn.close();
 *   }
 * })();
 * await using client = await connect({ port });
 * assert.equal(await readLine(client.readable), "hi");
 * listener.close(); // ends the loop
 * await serving;
 * ```
 */
export function listen(options: ListenOptions = {}): Listener {
  return new Listener(listenSocket(options));
}
