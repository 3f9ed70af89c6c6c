/**
 * A `Deno.Conn` that forwards everything to another one: the base of the
 * sockets that change one thing (the addresses a PROXY header names, how a
 * missing TLS close_notify is read).
 *
 * @module
 */
export class SocketWrapper implements Deno.Conn {
  /** The socket underneath. */
  protected readonly inner: Deno.Conn;

  /** @param inner The socket to forward to. */
  constructor(inner: Deno.Conn) {
    this.inner = inner;
  }

  get localAddr(): Deno.Addr {
    return this.inner.localAddr;
  }
  get remoteAddr(): Deno.Addr {
    return this.inner.remoteAddr;
  }
  get readable(): ReadableStream<Uint8Array<ArrayBuffer>> {
    return this.inner.readable;
  }
  get writable(): WritableStream<Uint8Array<ArrayBufferLike>> {
    return this.inner.writable;
  }
  read(p: Uint8Array): Promise<number | null> {
    return this.inner.read(p);
  }
  write(p: Uint8Array): Promise<number> {
    return this.inner.write(p);
  }
  closeWrite(): Promise<void> {
    return this.inner.closeWrite();
  }
  close(): void {
    this.inner.close();
  }
  ref(): void {
    this.inner.ref();
  }
  unref(): void {
    this.inner.unref();
  }
  /** Forwards `setNoDelay` when the socket is TCP. */
  setNoDelay(noDelay?: boolean): void {
    (this.inner as Deno.TcpConn).setNoDelay?.(noDelay);
  }
  /** Forwards `setKeepAlive` when the socket is TCP. */
  setKeepAlive(keepAlive?: boolean): void {
    (this.inner as Deno.TcpConn).setKeepAlive?.(keepAlive);
  }
  [Symbol.dispose](): void {
    this.inner.close();
  }
}
