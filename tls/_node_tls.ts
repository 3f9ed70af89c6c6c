// Server-side TLS through Deno's node:tls, for what Deno.listenTls cannot do:
// closing a connection whose handshake is still running (a handshake
// timeout), taking over an accepted plain socket (server-side STARTTLS) and
// asking clients for certificates. The plain Deno.Conn becomes a node Duplex, a
// one-connection tls.Server takes it over (the documented
// `server.emit("connection", socket)` path, which is also the path that
// verifies client certificates), and the resulting TLSSocket is shown to
// netkit as a Deno.Conn again, so SocketConn serves it like any socket.
// Internal.
import { Buffer } from "node:buffer";
import { Duplex } from "node:stream";
import tls from "node:tls";
import { TlsError } from "./errors.ts";
import { handshakeTimedOut, serverHandshakeError } from "./_translate.ts";
import { type PeerCertificate, TlsSocketConn } from "./_tls_conn.ts";
import { writeFull } from "../internal/socket.ts";

/** What the node:tls server side needs. */
export interface NodeServerOptions {
  cert: string;
  key: string;
  alpnProtocols?: string[];
  /** Require client certificates signed by one of these CAs (PEM). */
  clientCaCerts?: string[];
  /**
   * Picks the certificate for the name a client asks for (SNI, `""` when it
   * sent none): a context from {@linkcode secureContext}, or `undefined` for
   * `cert`/`key`, the default.
   */
  sni?: (serverName: string) => tls.SecureContext | undefined;
}

/**
 * A node:tls context for one of a server's certificates, chosen by SNI. It
 * carries the client CAs too: an SNI context replaces the server's whole
 * context, the CAs that verify client certificates included.
 */
export function secureContext(
  credentials: { cert: string; key: string },
  clientCaCerts?: string[],
): tls.SecureContext {
  return tls.createSecureContext({
    cert: credentials.cert,
    key: credentials.key,
    ca: clientCaCerts,
  });
}

// Read buffers are sized as netkit's BufferedReader sizes them: MIN_READ
// while the connection is quiet, fourfold bigger after a read that fills
// one (up to MAX_READ), and after a short read of n bytes the smallest size
// that holds 2n (never bigger than before; unchanged right after a full read).
const MIN_READ = 1024;
const MAX_READ = 64 * 1024;

/** Watches a Duplex over a socket: its reads and writes, and its end. */
interface DuplexWatch {
  activity: number;
  onEof?: () => void;
}

/** A node Duplex over a Deno.Conn; `watch` sees every read and write, and the end. */
function duplexOver(socket: Deno.Conn, watch: DuplexWatch): Duplex {
  let reading = false;
  let size = MIN_READ; // the next read's buffer
  let filled = false; // the last read filled its buffer
  return new Duplex({
    allowHalfOpen: true,
    read() {
      if (reading) return;
      reading = true;
      const buf = new Uint8Array(size);
      watch.activity++;
      socket.read(buf).then(
        (n) => {
          reading = false;
          if (n === null) {
            this.push(null);
            watch.onEof?.();
            return;
          }
          // A read that fills the buffer asks for a bigger one next time; a
          // short one lets it shrink to what came, so the read that waits on
          // a quiet peer does not pin 64 KiB. A small read is copied out
          // rather than pinning a big buffer.
          if (n === buf.length) {
            size = Math.min(buf.length * 4, MAX_READ);
          } else if (!filled) {
            let fits = MIN_READ;
            while (fits < 2 * n && fits < MAX_READ) fits *= 4;
            size = Math.min(buf.length, fits);
          }
          filled = n === buf.length;
          this.push(
            n < buf.length / 4 ? Buffer.from(buf.subarray(0, n)) : Buffer.from(buf.buffer, 0, n),
          );
        },
        (err) => {
          reading = false;
          this.destroy(err);
        },
      );
    },
    write(chunk: Uint8Array, _encoding, callback) {
      watch.activity++;
      writeFull(socket, chunk).then(() => callback(), callback);
    },
    final(callback) {
      socket.closeWrite().then(() => callback(), (err) => {
        if (err instanceof Deno.errors.NotConnected || err instanceof Deno.errors.BadResource) {
          callback();
        } else callback(err);
      });
    },
    destroy(err, callback) {
      try {
        socket.close();
      } catch {
        // Already closed.
      }
      callback(err);
    },
  });
}

/** Node's socket errors as the Deno errors the rest of netkit expects. */
function toDenoError(err: unknown): unknown {
  if (!(err instanceof Error) || err instanceof Deno.errors.BadResource) return err;
  const code = (err as { code?: string }).code;
  if (code === "ECONNRESET") return new Deno.errors.ConnectionReset(err.message, { cause: err });
  if (
    code === "EPIPE" || code === "ERR_STREAM_DESTROYED" || code === "ERR_STREAM_WRITE_AFTER_END"
  ) {
    return new Deno.errors.BrokenPipe(err.message, { cause: err });
  }
  return err;
}

/**
 * A `Deno.Conn` over a node `TLSSocket` that has finished its handshake:
 * reads from a bounded queue of decrypted chunks (the socket pauses while it
 * is full), writes that resolve once node has encrypted them, `closeWrite()`
 * as TLS close_notify plus a FIN.
 */
export class NodeTlsSocket implements Deno.Conn<Deno.NetAddr> {
  readonly localAddr: Deno.NetAddr;
  readonly remoteAddr: Deno.NetAddr;
  #tls: tls.TLSSocket;
  #duplex: Duplex;
  // Decrypted chunks not yet read; the socket is paused while they pile up.
  #queue: Uint8Array[] = [];
  #queued = 0;
  #paused = false;
  #ended = false;
  #closed = false;
  #error: unknown;
  #wake: (() => void) | undefined;
  #readable: ReadableStream<Uint8Array<ArrayBuffer>> | undefined;
  #writable: WritableStream<Uint8Array> | undefined;

  constructor(socket: tls.TLSSocket, duplex: Duplex, raw: Deno.Conn) {
    this.#tls = socket;
    this.#duplex = duplex;
    this.localAddr = raw.localAddr as Deno.NetAddr;
    this.remoteAddr = raw.remoteAddr as Deno.NetAddr;
    socket.on("data", (chunk: Uint8Array) => {
      if (chunk.length === 0) return;
      this.#queue.push(chunk);
      this.#queued += chunk.length;
      if (this.#queued >= MAX_READ && !this.#paused) {
        this.#paused = true;
        socket.pause();
      }
      this.#wakeReader();
    });
    socket.on("end", () => {
      this.#ended = true;
      this.#wakeReader();
    });
    socket.on("error", (err) => {
      this.#error ??= toDenoError(err);
      this.#wakeReader();
    });
    socket.on("close", () => {
      this.#ended = true;
      this.#wakeReader();
    });
  }

  #wakeReader(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  async read(p: Uint8Array): Promise<number | null> {
    if (p.length === 0) return 0;
    for (;;) {
      if (this.#closed) throw new Deno.errors.Interrupted("operation canceled");
      const head = this.#queue[0];
      if (head !== undefined) {
        const n = Math.min(p.length, head.length);
        p.set(head.subarray(0, n));
        if (n === head.length) this.#queue.shift();
        else this.#queue[0] = head.subarray(n);
        this.#queued -= n;
        if (this.#paused && this.#queued < MAX_READ / 2) {
          this.#paused = false;
          this.#tls.resume();
        }
        return n;
      }
      if (this.#error !== undefined) throw this.#error;
      if (this.#ended) return null;
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
  }

  write(p: Uint8Array): Promise<number> {
    if (this.#closed) {
      return Promise.reject(new Deno.errors.BadResource("the connection is closed"));
    }
    if (this.#error !== undefined) return Promise.reject(this.#error);
    if (p.length === 0) return Promise.resolve(0);
    return new Promise((resolve, reject) => {
      // Node is done with the bytes (encrypted) when it calls back.
      this.#tls.write(
        Buffer.from(p.buffer, p.byteOffset, p.byteLength),
        (err) => err ? reject(toDenoError(err)) : resolve(p.length),
      );
    });
  }

  closeWrite(): Promise<void> {
    if (this.#closed || this.#tls.writableEnded) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const onError = (err: Error) => reject(toDenoError(err));
      this.#tls.once("error", onError);
      this.#tls.end(() => {
        this.#tls.off("error", onError);
        resolve();
      });
    }).then(() => {}, (err) => {
      if (err instanceof Deno.errors.BrokenPipe || err instanceof Deno.errors.ConnectionReset) {
        return;
      }
      throw err;
    });
  }

  close(): void {
    if (this.#closed) throw new Deno.errors.BadResource("the connection is already closed");
    this.#closed = true;
    this.#tls.destroy();
    this.#duplex.destroy();
    this.#wakeReader();
  }

  ref(): void {}

  unref(): void {}

  get readable(): ReadableStream<Uint8Array<ArrayBuffer>> {
    return this.#readable ??= new ReadableStream<Uint8Array<ArrayBuffer>>({
      pull: async (controller) => {
        const buf = new Uint8Array(16 * 1024);
        const n = await this.read(buf);
        if (n === null) controller.close();
        else controller.enqueue(buf.subarray(0, n));
      },
      cancel: () => {
        if (!this.#closed) this.close();
      },
    });
  }

  get writable(): WritableStream<Uint8Array> {
    return this.#writable ??= new WritableStream<Uint8Array>({
      write: async (chunk) => void (await this.write(chunk)),
      close: () => this.closeWrite(),
      abort: () => {
        if (!this.#closed) this.close();
      },
    });
  }

  [Symbol.dispose](): void {
    if (!this.#closed) this.close();
  }
}

function attributes(value: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (value && typeof value === "object") {
    for (const [k, v] of Object.entries(value)) {
      out[k] = Array.isArray(v) ? v.join(", ") : String(v);
    }
  }
  return out;
}

function peerCertificateOf(socket: tls.TLSSocket): PeerCertificate | null {
  const cert = socket.getPeerCertificate();
  if (!cert || Object.keys(cert).length === 0) return null;
  return {
    subject: attributes(cert.subject),
    issuer: attributes(cert.issuer),
    serialNumber: String(cert.serialNumber ?? ""),
    validFrom: new Date(cert.valid_from),
    validTo: new Date(cert.valid_to),
    fingerprint256: String(cert.fingerprint256 ?? ""),
  };
}

/** A connection being upgraded: what a server may destroy or watch meanwhile. */
export interface Handshaking {
  /** Reads and writes so far. */
  readonly activity: number;
  /** Gives up: closes the socket. */
  destroy(): void;
  /** The same as destroy: a handshake has nothing to flush. */
  close(): Promise<void>;
  /** The upgraded connection, or the reason it failed. */
  readonly done: Promise<TlsSocketConn>;
}

/**
 * Runs the server side of a TLS handshake over `socket` with node:tls.
 * `timeoutMs` (0 = none) closes a peer that has not finished by then.
 */
export function nodeServerHandshake(
  socket: Deno.Conn,
  options: NodeServerOptions,
  timeoutMs: number,
  peer: string,
): Handshaking {
  const watch: DuplexWatch = { activity: 0 };
  const duplex = duplexOver(socket, watch);
  let server: tls.Server;
  try {
    server = tls.createServer({
      cert: options.cert,
      key: options.key,
      ALPNProtocols: options.alpnProtocols,
      allowHalfOpen: true,
      requestCert: options.clientCaCerts !== undefined,
      rejectUnauthorized: options.clientCaCerts !== undefined,
      ca: options.clientCaCerts,
      ...(options.sni === undefined ? {} : {
        SNICallback: (
          serverName: string,
          callback: (err: Error | null, context?: tls.SecureContext) => void,
        ) => callback(null, options.sni!(serverName)),
      }),
      // netkit enforces its own deadline (timeoutMs). node:tls's own
      // handshake timer (120 s by default) is only cancelled when a handshake
      // succeeds, so every failed one (garbage, plaintext, a peer that hung
      // up) stayed in memory until it fired: a negative value turns it off.
      handshakeTimeout: -1,
    });
  } catch (err) {
    duplex.destroy();
    const error = new TlsError(
      "ERR_TLS_BAD_CREDENTIALS",
      `the certificate or key cannot be used: ${err instanceof Error ? err.message : err}`,
      { cause: err },
    );
    return {
      activity: 0,
      destroy() {},
      close: () => Promise.resolve(),
      done: Promise.reject(error),
    };
  }
  let settled = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let eofTimer: ReturnType<typeof setTimeout> | undefined;
  let rejectDone!: (err: unknown) => void;
  const done = new Promise<TlsSocketConn>((resolve, reject) => {
    rejectDone = reject;
    server.on("secureConnection", (secure: tls.TLSSocket) => {
      if (settled) {
        secure.destroy();
        return;
      }
      settled = true;
      clearTimeout(timer);
      clearTimeout(eofTimer);
      watch.onEof = undefined;
      const alpn = secure.alpnProtocol;
      resolve(
        new TlsSocketConn(new NodeTlsSocket(secure, duplex, socket), {
          alpnProtocol: typeof alpn === "string" ? alpn : null,
          peerCertificate: options.clientCaCerts ? peerCertificateOf(secure) : null,
        }),
      );
    });
    server.on("tlsClientError", (err: Error, secure: tls.TLSSocket) => {
      // Node's server rejects an untrusted client certificate by hanging up;
      // the reason is on the socket.
      const reason = secure?.authorizationError;
      fail(
        reason
          ? new TlsError(
            "ERR_TLS_CERT_UNTRUSTED",
            `the client's certificate is not trusted (${reason}): ` +
              "the client needs one signed by a CA in clientCaCerts",
            { cause: err },
          )
          : serverHandshakeError(err),
      );
      secure?.destroy();
    });
  });
  done.catch(() => {});
  const fail = (err: unknown) => {
    if (settled) return;
    settled = true;
    clearTimeout(timer);
    clearTimeout(eofTimer);
    watch.onEof = undefined;
    duplex.destroy();
    rejectDone(err);
  };
  if (timeoutMs > 0) {
    timer = setTimeout(() => fail(handshakeTimedOut(peer, timeoutMs, "server")), timeoutMs);
  }
  // node:tls (half-open, as netkit needs) does not fail a handshake whose
  // peer hung up. The last bytes before the end may still finish it, so
  // give them a moment to be processed first.
  watch.onEof = () => {
    eofTimer = setTimeout(() =>
      fail(
        new TlsError(
          "ERR_TLS_HANDSHAKE_FAILED",
          "the client closed the connection during the TLS handshake (it may not trust this server's certificate)",
        ),
      ), 100);
  };
  server.emit("connection", duplex);
  return {
    get activity() {
      return watch.activity;
    },
    destroy: () =>
      fail(new Deno.errors.Interrupted("the connection was closed during the TLS handshake")),
    close: () =>
      Promise.resolve(
        fail(new Deno.errors.Interrupted("the connection was closed during the TLS handshake")),
      ),
    done,
  };
}
