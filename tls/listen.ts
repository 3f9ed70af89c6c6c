import { type Addr, formatAddr } from "../conn.ts";
import { toAddr } from "../internal/addr.ts";
import {
  type Accepting,
  type Acceptor,
  type CertificateReload,
  openAcceptor,
  type ServedCertificate,
  type TlsListenOptions,
  type TlsReloadable,
} from "./acceptor.ts";
import type { TlsConn } from "./_tls_conn.ts";
import { acceptAll, closeQuietly } from "../internal/socket.ts";

/** Options for {@linkcode listen}. */
export interface ListenOptions extends TlsListenOptions {
  /**
   * Called with each handshake that failed (a {@linkcode TlsError}) and the
   * peer's address. By default it is logged with `console.error`, as
   * servers do; the listener goes on either way.
   */
  onError?: (error: unknown, remoteAddr: Addr) => void;
}

function defaultOnError(error: unknown, remoteAddr: Addr): void {
  const message = error instanceof Error ? error.message : String(error);
  // deno-lint-ignore no-console
  console.error(`netkit: TLS handshake failed (${formatAddr(remoteAddr)}): ${message}`);
}

/**
 * A TLS listener that yields connections whose handshake has finished.
 * Handshakes run concurrently: a slow or silent peer never holds up the
 * next `accept()`, and one that fails (or passes `handshakeTimeout`) is
 * closed, reported to `onError`, and skipped.
 *
 * @example Serving connections one at a time with `for await`
 * ```ts
 * import { connect, listen } from "@netkit/netkit/tls";
 * import { readLine, writeAll } from "@netkit/netkit/io";
 * import { createDevCerts } from "@netkit/netkit/certs";
 * import assert from "node:assert/strict";
 *
 * const { ca, cert, key } = await createDevCerts();
 * const listener = listen({ port: 0, cert, key });
 * const port = (listener.addr as { port: number }).port;
 * const serving = (async () => {
 *   for await (const conn of listener) {
 *     await writeAll(conn.writable, "hi\n");
 *     await conn.close();
 *   }
 * })();
 * await using client = await connect({ hostname: "localhost", port, caCerts: [ca] });
 * assert.equal(await readLine(client.readable), "hi");
 * listener.close();
 * await serving;
 * ```
 */
export class TlsListener implements AsyncIterable<TlsConn>, AsyncDisposable, TlsReloadable {
  #acceptor: Acceptor;
  #onError: (error: unknown, remoteAddr: Addr) => void;
  #ready: TlsConn[] = [];
  #waiters: { resolve: (conn: TlsConn) => void; reject: (err: unknown) => void }[] = [];
  #handshakes = new Set<Accepting>();
  #pumping = false;
  #closed = false;

  /** @internal Use {@linkcode listen}. */
  constructor(acceptor: Acceptor, onError = defaultOnError) {
    this.#acceptor = acceptor;
    this.#onError = onError;
  }

  /** The address listened on; `port` is the real one when 0 was asked for. */
  get addr(): Addr {
    return toAddr(this.#acceptor.listener.addr);
  }

  /** The certificates in service, the default first (see {@linkcode TlsReloadable}). */
  get certificates(): ServedCertificate[] {
    return this.#acceptor.certificates;
  }

  /**
   * Reads the certificate files again and swaps them in for new handshakes,
   * all or nothing; see {@linkcode TlsReloadable.reloadCertificates}.
   */
  reloadCertificates(): Promise<CertificateReload> {
    return this.#acceptor.reloadCertificates();
  }

  /**
   * Waits for the next connection that has finished its TLS handshake.
   * Rejects with `Deno.errors.BadResource` once the listener is closed.
   */
  accept(): Promise<TlsConn> {
    const ready = this.#ready.shift();
    if (ready) return Promise.resolve(ready);
    if (this.#closed) return Promise.reject(new Deno.errors.BadResource("the listener is closed"));
    const waiting = new Promise<TlsConn>((resolve, reject) =>
      this.#waiters.push({ resolve, reject })
    );
    void this.#pump();
    return waiting;
  }

  async #pump(): Promise<void> {
    if (this.#pumping) return;
    this.#pumping = true;
    try {
      while (this.#waiters.length > 0 && !this.#closed) {
        let socket: Deno.Conn;
        try {
          socket = await this.#acceptor.listener.accept();
        } catch (err) {
          if (this.#closed || err instanceof Deno.errors.BadResource) {
            this.#fail(err);
            return;
          }
          this.#waiters.shift()?.reject(err);
          continue;
        }
        if (this.#closed) {
          closeQuietly(socket);
          return;
        }
        const remoteAddr = toAddr(socket.remoteAddr);
        const handshake = this.#acceptor.handshake(socket);
        this.#handshakes.add(handshake);
        handshake.done.then(
          (conn) => {
            this.#handshakes.delete(handshake);
            if (this.#closed) conn.destroy();
            else this.#deliver(conn);
          },
          (err) => {
            this.#handshakes.delete(handshake);
            if (!this.#closed) this.#onError(err, remoteAddr);
          },
        );
      }
    } finally {
      this.#pumping = false;
    }
  }

  #deliver(conn: TlsConn): void {
    const waiter = this.#waiters.shift();
    if (waiter) waiter.resolve(conn);
    else this.#ready.push(conn);
  }

  #fail(err: unknown): void {
    const reason = err instanceof Deno.errors.BadResource
      ? err
      : new Deno.errors.BadResource("the listener is closed");
    for (const waiter of this.#waiters.splice(0)) waiter.reject(reason);
  }

  /**
   * Stops listening. Handshakes in progress are abandoned and connections
   * not yet accepted are closed; connections already handed out are not
   * affected. Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    closeQuietly(this.#acceptor.listener);
    for (const handshake of this.#handshakes) handshake.destroy();
    for (const conn of this.#ready.splice(0)) void conn.close();
    this.#fail(new Deno.errors.BadResource("the listener is closed"));
  }

  /** Yields each connection once its handshake is done, until the listener is closed. */
  [Symbol.asyncIterator](): AsyncIterator<TlsConn> {
    return acceptAll(() => this.accept());
  }

  /** Closes the listener, as `close()`. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
    await Promise.allSettled([...this.#handshakes].map((h) => h.done));
  }
}

/**
 * Listens for TLS connections and yields each one once its handshake has
 * finished, for code that wants its own accept loop; {@linkcode serve} is
 * the usual choice (limits, idle timeout, graceful drain).
 *
 * @throws {TlsError} `ERR_TLS_BAD_CREDENTIALS`: no usable certificate or key.
 * @throws {NetworkError} `EADDRINUSE`, `EADDRNOTAVAIL`, `EACCES`, …
 *
 * @example Accept one connection and greet it
 * ```ts
 * import { connect, listen } from "@netkit/netkit/tls";
 * import { readLine, writeAll } from "@netkit/netkit/io";
 * import { createDevCerts } from "@netkit/netkit/certs";
 * import assert from "node:assert/strict";
 *
 * const { ca, cert, key } = await createDevCerts();
 * await using listener = listen({ port: 0, cert, key });
 * const port = (listener.addr as { port: number }).port;
 * const [server, client] = await Promise.all([
 *   listener.accept(),
 *   connect({ hostname: "localhost", port, caCerts: [ca] }),
 * ]);
 * await writeAll(server.writable, "hello\n");
 * assert.equal(await readLine(client.readable), "hello");
 * await server.close();
 * await client.close();
 * ```
 */
export function listen(options: ListenOptions): TlsListener {
  return new TlsListener(openAcceptor(options), options.onError);
}
