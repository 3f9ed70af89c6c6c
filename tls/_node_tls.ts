// Server-side TLS through Deno's node:tls, for what Deno.listenTls cannot do:
// closing a connection whose handshake is still running (a handshake
// timeout), taking over an accepted plain socket (server-side STARTTLS),
// asking clients for certificates and choosing a certificate by SNI. The
// plain Deno.Conn becomes a node Duplex, a server-side `tls.TLSSocket` takes
// it over, and the result is shown to netkit as a Deno.Conn again, so
// SocketConn serves it like any socket.
//
// Memory per idle connection is what a server of 10,000 connections pays
// 10,000 times, so what can be shared is: one NodeTlsServer (one
// SecureContext, one set of TLSSocket options, the SNI contexts) serves
// every connection of a listener until its certificates are reloaded; the
// per-connection objects (the Duplex, the handshake, the socket) keep their
// callbacks as prototype methods or module functions, not closures; and
// what only the handshake needs (its timers, its promise's resolvers) is
// dropped once it is over. Internal.
import { Buffer } from "node:buffer";
import { Duplex } from "node:stream";
import tls from "node:tls";
import { TlsError } from "./errors.ts";
import { handshakeTimedOut, serverHandshakeError } from "./_translate.ts";
import { type PeerCertificate, readError, TlsSocketConn } from "./_tls_conn.ts";
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

/** How many node:tls SecureContexts netkit has made (tests: none per connection). */
export const contextsMade = { count: 0 };

/**
 * A node:tls context for one of a server's certificates, chosen by SNI. It
 * carries the client CAs too: an SNI context replaces the server's whole
 * context, the CAs that verify client certificates included.
 */
export function secureContext(
  credentials: { cert: string; key: string },
  clientCaCerts?: string[],
): tls.SecureContext {
  const context = tls.createSecureContext({
    cert: credentials.cert,
    key: credentials.key,
    ca: clientCaCerts,
    // As tls.Server sets it: the server's cipher preference wins.
    honorCipherOrder: true,
  });
  contextsMade.count++;
  return context;
}

// Read buffers are sized as netkit's BufferedReader sizes them: MIN_READ
// while the connection is quiet, fourfold bigger after a read that fills
// one (up to MAX_READ), and after a short read of n bytes the smallest size
// that holds 2n (never bigger than before; unchanged right after a full read).
// The read that waits on an idle peer holds MIN_READ bytes for as long as
// it waits: 256 holds a small message's TLS record (a ping, a request) in
// one read, and a bulk transfer is at 64 KiB four reads later.
const MIN_READ = 256;
const MAX_READ = 64 * 1024;
/** The read buffer of a quiet connection (tests: it comes back to this). */
export const IDLE_READ_SIZE = MIN_READ;
/** The read buffer of a busy one. */
export const BULK_READ_SIZE = MAX_READ;

/**
 * A node Duplex over a Deno.Conn, the stream a TLSSocket takes over. It
 * counts reads and writes (`activity`), and tells its handshake, while there
 * is one, that the peer ended its side.
 */
export class SocketDuplex extends Duplex {
  /** Reads and writes started so far. */
  activity = 0;
  /** The handshake running over it; `undefined` once that is over. */
  handshake: ServerHandshake | undefined;
  #socket: Deno.Conn;
  #reading = false;
  #size = MIN_READ; // the next read's buffer
  #filled = false; // the last read filled its buffer

  constructor(socket: Deno.Conn, handshake?: ServerHandshake) {
    super({ allowHalfOpen: true });
    this.#socket = socket;
    this.handshake = handshake;
  }

  /** The size of the buffer the next read will use (tests: it shrinks when idle). */
  get nextReadSize(): number {
    return this.#size;
  }

  override _read(): void {
    if (this.#reading) return;
    this.#reading = true;
    const buf = new Uint8Array(this.#size);
    this.activity++;
    this.#socket.read(buf).then(
      (n) => this.#got(buf, n),
      (err) => {
        this.#reading = false;
        this.destroy(err);
      },
    );
  }

  #got(buf: Uint8Array, n: number | null): void {
    this.#reading = false;
    if (n === null) {
      this.push(null);
      this.handshake?.peerEnded();
      return;
    }
    // A read that fills the buffer asks for a bigger one next time; a
    // short one lets it shrink to what came, so the read that waits on a
    // quiet peer does not pin 64 KiB. A small read is copied out rather
    // than pinning a big buffer.
    if (n === buf.length) {
      this.#size = Math.min(buf.length * 4, MAX_READ);
    } else if (!this.#filled) {
      let fits = MIN_READ;
      while (fits < 2 * n && fits < MAX_READ) fits *= 4;
      this.#size = Math.min(buf.length, fits);
    }
    this.#filled = n === buf.length;
    this.push(
      n < buf.length / 4 ? Buffer.from(buf.subarray(0, n)) : Buffer.from(buf.buffer, 0, n),
    );
  }

  override _write(
    chunk: Uint8Array,
    _encoding: string,
    callback: (error?: Error | null) => void,
  ): void {
    this.activity++;
    writeFull(this.#socket, chunk).then(() => callback(), callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.#socket.closeWrite().then(() => callback(), (err) => {
      if (err instanceof Deno.errors.NotConnected || err instanceof Deno.errors.BadResource) {
        callback();
      } else callback(err);
    });
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    try {
      this.#socket.close();
    } catch {
      // Already closed.
    }
    callback(err);
  }
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
  // A stream cut without close_notify: ERR_TLS_TRUNCATED, as TlsSocketConn types it.
  return readError(err);
}

// Who a TLSSocket's events go to: its handshake, then its NodeTlsSocket.
// The listeners are module functions (`this` is the TLSSocket), so a
// connection holds no closure for them.
const kOwner = Symbol("netkit.owner");

interface OwnedSocket extends tls.TLSSocket {
  [kOwner]?: ServerHandshake | NodeTlsSocket;
}

function onSecure(this: OwnedSocket): void {
  const owner = this[kOwner];
  if (owner instanceof ServerHandshake) owner.secured(this);
  else this.destroy();
}

function onTlsError(this: OwnedSocket, err: Error): void {
  const owner = this[kOwner];
  if (owner instanceof ServerHandshake) owner.tlsError(err, this);
}

function onClose(this: OwnedSocket): void {
  this[kOwner]?.socketClosed(this);
}

function onData(this: OwnedSocket, chunk: Uint8Array): void {
  const owner = this[kOwner];
  if (owner instanceof NodeTlsSocket) owner.received(chunk);
}

function onEnd(this: OwnedSocket): void {
  const owner = this[kOwner];
  if (owner instanceof NodeTlsSocket) owner.ended();
}

function onError(this: OwnedSocket, err: Error): void {
  const owner = this[kOwner];
  if (owner instanceof NodeTlsSocket) owner.failed(err);
}

const INTERRUPTED = "operation canceled";

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
  #duplex: SocketDuplex;
  // Decrypted chunks not yet read; the socket is paused while they pile up.
  #queue: Uint8Array[] = [];
  #queued = 0;
  #paused = false;
  #ended = false;
  #closed = false;
  #error: unknown;
  // The read waiting for data (one at a time; see read()).
  #into: Uint8Array | undefined;
  #resolve: ((n: number | null) => void) | undefined;
  #reject: ((err: unknown) => void) | undefined;
  #waiting: Promise<number | null> | undefined;
  #readable: ReadableStream<Uint8Array<ArrayBuffer>> | undefined;
  #writable: WritableStream<Uint8Array> | undefined;

  constructor(socket: tls.TLSSocket, duplex: SocketDuplex, raw: Deno.Conn) {
    this.#tls = socket;
    this.#duplex = duplex;
    this.localAddr = raw.localAddr as Deno.NetAddr;
    this.remoteAddr = raw.remoteAddr as Deno.NetAddr;
    (socket as OwnedSocket)[kOwner] = this;
    socket.on("data", onData);
    socket.on("end", onEnd);
    socket.on("error", onError);
    // "close" has been listened to since the handshake (onClose).
  }

  /** @internal A decrypted chunk from the socket. */
  received(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    this.#queue.push(chunk);
    this.#queued += chunk.length;
    if (this.#queued >= MAX_READ && !this.#paused) {
      this.#paused = true;
      this.#tls.pause();
    }
    this.#wakeReader();
  }

  /** @internal The peer's end of the stream (close_notify). */
  ended(): void {
    this.#ended = true;
    this.#wakeReader();
  }

  /** @internal An error on the socket. */
  failed(err: unknown): void {
    this.#error ??= toDenoError(err);
    this.#wakeReader();
  }

  /** @internal The socket closed. */
  socketClosed(): void {
    this.#ended = true;
    this.#wakeReader();
  }

  // Settles the waiting read, if any, with what is there now.
  #wakeReader(): void {
    const into = this.#into;
    if (into === undefined) return;
    const resolve = this.#resolve!;
    const reject = this.#reject!;
    if (this.#closed) {
      this.#settled();
      reject(new Deno.errors.Interrupted(INTERRUPTED));
    } else if (this.#queue.length > 0) {
      this.#settled();
      resolve(this.#take(into));
    } else if (this.#error !== undefined) {
      this.#settled();
      reject(this.#error);
    } else if (this.#ended) {
      this.#settled();
      resolve(null);
    }
  }

  #settled(): void {
    this.#into =
      this.#resolve =
      this.#reject =
      this.#waiting =
        undefined;
  }

  // Copies the head of the queue into p (the queue is not empty).
  #take(p: Uint8Array): number {
    const head = this.#queue[0];
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

  read(p: Uint8Array): Promise<number | null> {
    if (p.length === 0) return Promise.resolve(0);
    // One read waits at a time; another one queues behind it.
    if (this.#waiting !== undefined) {
      return this.#waiting.then(() => this.read(p), () => this.read(p));
    }
    if (this.#closed) return Promise.reject(new Deno.errors.Interrupted(INTERRUPTED));
    if (this.#queue.length > 0) return Promise.resolve(this.#take(p));
    if (this.#error !== undefined) return Promise.reject(this.#error);
    if (this.#ended) return Promise.resolve(null);
    // Nothing yet: the promise is settled by the event that brings
    // something (no async function, so an idle read holds no generator).
    this.#into = p;
    return this.#waiting = new Promise<number | null>((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
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

// The TLSSocket internals this file relies on, present in Node and Deno:
// `ssl.verifyError()` (the client certificate's verification, deferred to
// the end of the handshake as tls.Server checks it), `_releaseControl()`
// (errors go to "error" from then on, not "_tlsError") and
// `authorizationError`.
interface ServerSocketInternals {
  ssl?: { verifyError?(): unknown } | null;
  _releaseControl?(): boolean;
  authorizationError?: string | Error | null;
  secureConnecting?: boolean;
}

/** The code of a certificate verification error, however the TLS layer gives it. */
function verifyErrorCode(error: unknown): string | undefined {
  if (error === null || error === undefined || error === 0 || error === "") return undefined;
  if (typeof error === "string") return error;
  const code = (error as { code?: unknown }).code;
  if (typeof code === "string" && code !== "") return code;
  return error instanceof Error ? error.message : String(error);
}

/**
 * The server side of node:tls for one listener and one set of
 * certificates: a SecureContext, the SNI contexts and the TLSSocket
 * options, made once and shared by every connection it handshakes (a
 * `tls.Server` per connection would make them all again, each time).
 * A reload makes a new one; connections keep the one they started with.
 */
export class NodeTlsServer {
  /** The default certificate's context (shared by every connection). */
  readonly secureContext: tls.SecureContext;
  /** Whether clients must present certificates (`clientCaCerts`). */
  readonly mutual: boolean;
  /** Handshakes started with it so far. */
  handshakes = 0;
  // What every TLSSocket is made with (node copies it; it keeps nothing of
  // a connection).
  readonly #socketOptions: tls.TLSSocketOptions & { isServer: true };

  /** @throws {TlsError} `ERR_TLS_BAD_CREDENTIALS` when node:tls cannot use the certificate or key. */
  constructor(options: NodeServerOptions) {
    try {
      this.secureContext = secureContext(options, options.clientCaCerts);
    } catch (err) {
      throw new TlsError(
        "ERR_TLS_BAD_CREDENTIALS",
        `the certificate or key cannot be used: ${err instanceof Error ? err.message : err}`,
        { cause: err },
      );
    }
    this.mutual = options.clientCaCerts !== undefined;
    const alpn: { ALPNProtocols?: Uint8Array } = {};
    if (options.alpnProtocols !== undefined) {
      (tls as unknown as {
        convertALPNProtocols(protocols: string[], out: { ALPNProtocols?: Uint8Array }): void;
      }).convertALPNProtocols(options.alpnProtocols, alpn);
    }
    const sni = options.sni;
    this.#socketOptions = {
      isServer: true,
      secureContext: this.secureContext,
      requestCert: this.mutual,
      rejectUnauthorized: this.mutual,
      ALPNProtocols: alpn.ALPNProtocols,
      ...(sni === undefined ? {} : {
        SNICallback: (
          serverName: string,
          callback: (err: Error | null, context?: tls.SecureContext) => void,
        ) => callback(null, sni(serverName)),
      }),
    };
  }

  /**
   * Runs the server side of a TLS handshake over `socket`. `timeoutMs`
   * (0 = none) closes a peer that has not finished by then.
   */
  handshake(socket: Deno.Conn, timeoutMs: number, peer: string): Handshaking {
    this.handshakes++;
    return new ServerHandshake(this, this.#socketOptions, socket, timeoutMs, peer);
  }
}

function onHandshakeTimeout(handshake: ServerHandshake): void {
  handshake.timedOut();
}

function onEofWait(handshake: ServerHandshake): void {
  handshake.fail(
    new TlsError(
      "ERR_TLS_HANDSHAKE_FAILED",
      "the client closed the connection during the TLS handshake (it may not trust this server's certificate)",
    ),
  );
}

function ignore(): void {}

/** One connection's handshake; once it is over it lets go of everything. */
class ServerHandshake implements Handshaking {
  readonly done: Promise<TlsSocketConn>;
  #mutual: boolean;
  #raw: Deno.Conn;
  #duplex: SocketDuplex;
  #secure: OwnedSocket | undefined;
  #timeoutMs: number;
  #peer: string;
  #settled = false;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #eofTimer: ReturnType<typeof setTimeout> | undefined;
  #resolve: ((conn: TlsSocketConn) => void) | undefined;
  #reject: ((err: unknown) => void) | undefined;

  constructor(
    server: NodeTlsServer,
    socketOptions: tls.TLSSocketOptions,
    raw: Deno.Conn,
    timeoutMs: number,
    peer: string,
  ) {
    this.#mutual = server.mutual;
    this.#raw = raw;
    this.#timeoutMs = timeoutMs;
    this.#peer = peer;
    this.done = new Promise<TlsSocketConn>((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    this.done.catch(ignore);
    this.#duplex = new SocketDuplex(raw, this);
    let secure: OwnedSocket;
    try {
      // netkit enforces its own deadline (timeoutMs); a TLSSocket made
      // without a tls.Server has no handshake timer of its own.
      secure = new tls.TLSSocket(this.#duplex, socketOptions);
    } catch (err) {
      this.fail(serverHandshakeError(err));
      return;
    }
    this.#secure = secure;
    secure[kOwner] = this;
    secure.once("secure", onSecure);
    // Handshake errors: node reports them as "_tlsError" until control is
    // released (what tls.Server turns into "tlsClientError").
    secure.on("_tlsError", onTlsError);
    secure.on("close", onClose);
    if (timeoutMs > 0) this.#timer = setTimeout(onHandshakeTimeout, timeoutMs, this);
  }

  get activity(): number {
    return this.#duplex.activity;
  }

  /** @internal The handshake finished: check the client's certificate, hand the socket over. */
  secured(secure: OwnedSocket): void {
    if (this.#settled) {
      secure.destroy();
      return;
    }
    const internals = secure as unknown as ServerSocketInternals;
    if (this.#mutual) {
      // As tls.Server does: the chain is verified by now, its verdict kept.
      const code = verifyErrorCode(internals.ssl?.verifyError?.());
      if (code !== undefined) {
        internals.authorizationError = code;
        this.fail(
          new TlsError(
            "ERR_TLS_CERT_UNTRUSTED",
            `the client's certificate is not trusted (${code}): ` +
              "the client needs one signed by a CA in clientCaCerts",
          ),
        );
        return;
      }
    }
    internals._releaseControl?.();
    internals.secureConnecting = false;
    secure.off("_tlsError", onTlsError);
    const alpn = secure.alpnProtocol;
    const peerCertificate = this.#mutual ? peerCertificateOf(secure) : null;
    const resolve = this.#resolve!;
    this.#finish();
    resolve(
      new TlsSocketConn(new NodeTlsSocket(secure, this.#duplex, this.#raw), {
        alpnProtocol: typeof alpn === "string" ? alpn : null,
        peerCertificate,
        typedReadErrors: true,
      }),
    );
  }

  /** @internal An error during the handshake. */
  tlsError(err: Error, secure: OwnedSocket): void {
    // An untrusted client certificate ends in a hang-up; the reason is on
    // the socket.
    const reason = (secure as unknown as ServerSocketInternals).authorizationError;
    this.fail(
      reason
        ? new TlsError(
          "ERR_TLS_CERT_UNTRUSTED",
          `the client's certificate is not trusted (${reason}): ` +
            "the client needs one signed by a CA in clientCaCerts",
          { cause: err },
        )
        : serverHandshakeError(err),
    );
  }

  /** @internal The TLSSocket closed before the handshake finished. */
  socketClosed(secure: OwnedSocket): void {
    if (this.#settled) return;
    this.tlsError(new Error("socket hang up"), secure);
  }

  /**
   * @internal The peer ended its side. node:tls (half-open, as netkit needs)
   * does not fail a handshake whose peer hung up; the last bytes before the
   * end may still finish it, so they get a moment to be processed first.
   */
  peerEnded(): void {
    if (this.#settled || this.#eofTimer !== undefined) return;
    this.#eofTimer = setTimeout(onEofWait, 100, this);
  }

  /** @internal The deadline passed. */
  timedOut(): void {
    this.fail(handshakeTimedOut(this.#peer, this.#timeoutMs, "server"));
  }

  /** @internal Ends the handshake with `err`: closes the socket. */
  fail(err: unknown): void {
    if (this.#settled) return;
    const reject = this.#reject!;
    const secure = this.#secure;
    this.#finish();
    this.#duplex.destroy();
    secure?.destroy();
    reject(err);
  }

  // The handshake is over: its timers, resolvers and the duplex's link
  // back to it go (a connection that lives for hours keeps none of them).
  #finish(): void {
    this.#settled = true;
    clearTimeout(this.#timer);
    clearTimeout(this.#eofTimer);
    this.#timer = this.#eofTimer = undefined;
    this.#resolve = this.#reject = undefined;
    this.#duplex.handshake = undefined;
  }

  destroy(): void {
    this.fail(new Deno.errors.Interrupted("the connection was closed during the TLS handshake"));
  }

  close(): Promise<void> {
    this.destroy();
    return Promise.resolve();
  }
}
