// The Conn behind every TLS connection: netkit's SocketConn over a
// Deno.TlsConn (or over node:tls, for server-side STARTTLS and client
// certificates), plus what the handshake agreed. Internal: users see TlsConn.
import type { Conn } from "../conn.ts";
import { SocketConn } from "../internal/socket_conn.ts";
import { SocketWrapper } from "../internal/socket_wrapper.ts";
import { TlsError } from "./errors.ts";

/** A client certificate a server asked for and verified. */
export interface PeerCertificate {
  /** The subject's attributes, e.g. `{ CN: "alice" }`. */
  subject: Record<string, string>;
  /** The issuer's attributes, e.g. `{ CN: "netkit development CA" }`. */
  issuer: Record<string, string>;
  /** The serial number, as the TLS stack prints it (hex). */
  serialNumber: string;
  /** The start of its validity. */
  validFrom: Date;
  /** The end of its validity. */
  validTo: Date;
  /** The SHA-256 fingerprint, `AA:BB:…`. */
  fingerprint256: string;
}

/**
 * A TLS connection: the same {@linkcode Conn} as every other transport (a
 * handler written for TCP serves it unchanged), plus what the handshake
 * agreed. It is only handed out once the handshake has succeeded.
 */
export interface TlsConn extends Conn {
  /** The ALPN protocol both sides agreed on, or `null` when none was. */
  readonly alpnProtocol: string | null;
  /**
   * On a server that required client certificates (`clientCaCerts`): the
   * client's verified certificate. Otherwise `null` (Deno does not show a
   * server's certificate to a client).
   */
  readonly peerCertificate: PeerCertificate | null;
  /**
   * Whether the peer ended the stream without a TLS close_notify: what it
   * sent may have been cut short (it crashed, was killed, or — as many
   * OpenSSL servers do — just closed the socket). Without
   * `requireCloseNotify` that ends `readable` like a clean end and sets this;
   * with it, the read fails with `ERR_TLS_TRUNCATED`.
   */
  readonly truncated: boolean;
}

/** What a finished handshake agreed, and how the stream's end is judged. */
export interface HandshakeInfo {
  alpnProtocol: string | null;
  peerCertificate: PeerCertificate | null;
  /** A missing close_notify is an error (true) or a flagged end (false). @default {true} */
  requireCloseNotify?: boolean;
  /**
   * The socket already reports a missing close_notify as
   * `ERR_TLS_TRUNCATED` (netkit's node:tls socket does): with
   * `requireCloseNotify` no wrapper is needed, which saves an object per
   * connection and a promise per read.
   */
  typedReadErrors?: boolean;
}

const TLS_IDLE_READ_SIZE = 256;

/** The netkit {@linkcode TlsConn}: a SocketConn over a handshaken TLS socket. */
export class TlsSocketConn extends SocketConn<Deno.Conn> implements TlsConn {
  readonly alpnProtocol: string | null;
  readonly peerCertificate: PeerCertificate | null;
  #aware: TruncationAware | undefined;

  constructor(socket: Deno.Conn, info: HandshakeInfo) {
    const strict = info.requireCloseNotify ?? true;
    // Strict, over a socket whose errors are typed already: nothing to do.
    const aware = strict && info.typedReadErrors ? undefined : new TruncationAware(socket, strict);
    // A TLS socket hands out plaintext already decrypted into its own
    // buffers: a small idle read loses nothing (reads that fill it grow
    // fourfold), and an idle connection holds 256 bytes here, not 1 KiB.
    super(aware ?? socket, { bufferSize: TLS_IDLE_READ_SIZE });
    this.#aware = aware;
    this.alpnProtocol = info.alpnProtocol;
    this.peerCertificate = info.peerCertificate;
  }

  get truncated(): boolean {
    return this.#aware?.truncated ?? false;
  }
}

/** Deno's (or node:tls's) error for a TLS stream that ended without close_notify, typed. */
export function readError(err: unknown): unknown {
  if (err instanceof Error && /close_notify/.test(err.message)) {
    return new TlsError(
      "ERR_TLS_TRUNCATED",
      "the peer closed the connection without a TLS close_notify: what it sent may be cut short " +
        "(it crashed, was killed, or the connection was cut)",
      { cause: err },
    );
  }
  return err;
}

/**
 * A TLS socket whose reads report a missing close_notify as a
 * {@linkcode TlsError} (`ERR_TLS_TRUNCATED`) instead of Deno's bare error.
 */
class TruncationAware extends SocketWrapper {
  #strict: boolean;
  truncated = false;

  constructor(socket: Deno.Conn, strict: boolean) {
    // Deno.startTls leaves `transport` unset on the addresses: toAddr() copes.
    super(socket);
    this.#strict = strict;
  }

  override read(p: Uint8Array): Promise<number | null> {
    return this.inner.read(p).catch((err) => {
      const typed = readError(err);
      if (
        !this.#strict && typed instanceof TlsError && typed.code === "ERR_TLS_TRUNCATED"
      ) {
        // As Node, Python and curl do by default: the end of the stream,
        // flagged for whoever needs to know.
        this.truncated = true;
        return null;
      }
      return Promise.reject(typed);
    });
  }
}
