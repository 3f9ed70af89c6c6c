// Exact reads and full writes on a raw Deno.Conn. The handshakes read only
// what the protocol says is theirs: whatever follows belongs to the tunnel.
import { ProxyError } from "./errors.ts";

export { writeFull as writeFully } from "../internal/socket.ts";

/** Reads exactly `n` bytes; a proxy that hangs up first is an `ERR_PROXY_PROTOCOL`. */
export async function readExactly(
  conn: Deno.Conn,
  n: number,
  proxyAt: string,
  during: string,
): Promise<Uint8Array> {
  const bytes = new Uint8Array(n);
  for (let at = 0; at < n;) {
    const got = await conn.read(bytes.subarray(at));
    if (got === null) throw hungUp(proxyAt, during);
    at += got;
  }
  return bytes;
}

/** The error for a proxy that closed the connection in the middle of a handshake. */
export function hungUp(proxyAt: string, during: string): ProxyError {
  return new ProxyError(
    "ERR_PROXY_PROTOCOL",
    `the proxy at ${proxyAt} closed the connection during the ${during}: ` +
      "check that it is the kind of proxy the URL says (http:// or socks5://)",
  );
}
