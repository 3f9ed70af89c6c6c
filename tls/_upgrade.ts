// The checks every STARTTLS upgrade makes before it takes the socket over,
// on either side. Internal.
import { type Conn, formatAddr } from "../conn.ts";
import { SocketConn } from "../internal/socket_conn.ts";
import { TlsError } from "./errors.ts";
import { TlsSocketConn } from "./_tls_conn.ts";

/** A plain TCP netkit connection, ready to be taken over. */
export interface Upgradable {
  plain: SocketConn<Deno.Conn>;
  peer: string;
  hostname: string;
}

/**
 * Checks that `conn` can be upgraded to TLS now, and refuses with a
 * {@linkcode TlsError} when it cannot: plaintext bytes received but not read
 * (`ERR_TLS_PLAINTEXT_BUFFERED` — they could be a command injected before the
 * handshake, CVE-2021-23222 class), a readable or writable in use
 * (`ERR_TLS_CONN_BUSY`), or not a plain TCP connection
 * (`ERR_TLS_NOT_UPGRADABLE`).
 */
export function checkUpgradable(conn: Conn): Upgradable {
  if (!(conn instanceof SocketConn)) {
    throw new TlsError(
      "ERR_TLS_NOT_UPGRADABLE",
      "only a plain TCP connection made by netkit (tcp.connect, tcp.serve, tcp.listen) can be upgraded to TLS",
    );
  }
  const plain = conn as SocketConn<Deno.Conn>;
  const socket = plain.socket;
  if (
    typeof (socket as Partial<Deno.TlsConn>).handshake === "function" ||
    plain instanceof TlsSocketConn
  ) {
    throw new TlsError("ERR_TLS_NOT_UPGRADABLE", "this connection already speaks TLS");
  }
  if (plain.remoteAddr.transport !== "tcp") {
    throw new TlsError(
      "ERR_TLS_NOT_UPGRADABLE",
      "this is a Unix socket connection: STARTTLS needs a TCP connection",
    );
  }
  const peer = formatAddr(plain.remoteAddr);
  if (plain.readable.locked || plain.writable.locked) {
    throw new TlsError(
      "ERR_TLS_CONN_BUSY",
      `the connection to ${peer} is in use (its ${
        plain.readable.locked ? "readable" : "writable"
      } is locked ` +
        "by a reader, writer or pipe): finish and release it, then upgrade",
    );
  }
  const buffered = plain.reader.buffered;
  if (buffered > 0) {
    throw new TlsError(
      "ERR_TLS_PLAINTEXT_BUFFERED",
      `refusing to start TLS: ${buffered} plaintext byte${
        buffered === 1 ? "" : "s"
      } from ${peer} arrived ` +
        "after the STARTTLS exchange and before the handshake; they could be a command injected by an " +
        "attacker (CVE-2021-23222 class), so close this connection rather than upgrade it",
    );
  }
  return { plain, peer, hostname: plain.remoteAddr.hostname };
}
