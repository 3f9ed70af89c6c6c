/**
 * The PROXY protocol at accept, for every server: read the header from the
 * raw socket — exactly its bytes, nothing after them, so what follows (a TLS
 * ClientHello, an HTTP request) stays in the socket for whoever reads next —
 * and hand on a socket whose `remoteAddr` is the client's.
 *
 * @module
 */
import {
  type ProxyHeader,
  ProxyProtocolError,
  readProxyHeader,
  type ReadProxyHeaderOptions,
} from "./proxy_protocol.ts";
import { SocketWrapper } from "./socket_wrapper.ts";

const V2_SIGNATURE = [0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a];
// "PROXY UNKNOWN\r\n", the shortest header there is: safe to read at once.
const SHORTEST = 15;
const V1_MAX = 107;

async function readInto(socket: Deno.Conn, buf: Uint8Array, from: number, to: number) {
  let at = from;
  while (at < to) {
    const n = await socket.read(buf.subarray(at, to));
    if (n === null) break;
    at += n;
  }
  return at;
}

/**
 * Reads one PROXY protocol header (v1 or v2) from `socket` without reading a
 * byte past it. The caller bounds it in time (closing the socket makes it
 * reject).
 *
 * @throws {ProxyProtocolError} No valid header: `reason` says why.
 */
export async function readProxyHeaderExactly(
  socket: Deno.Conn,
  options: ReadProxyHeaderOptions = {},
): Promise<ProxyHeader> {
  const maxSize = options.maxSize ?? 4096;
  let buf = new Uint8Array(Math.max(V1_MAX, 16));
  let have = await readInto(socket, buf, 0, SHORTEST);
  const parse = (n: number) => readProxyHeader(ReadableStream.from([buf.slice(0, n)]), options);
  if (have < SHORTEST) return await parse(have); // reports eof / truncated / signature
  if (V2_SIGNATURE.every((b, i) => buf[i] === b)) {
    have = await readInto(socket, buf, have, 16);
    if (have < 16) return await parse(have);
    const total = 16 + ((buf[14] << 8) | buf[15]);
    if (total > maxSize) return await parse(have); // the parser names the bound
    const whole = new Uint8Array(total);
    whole.set(buf.subarray(0, 16));
    buf = whole;
    have = await readInto(socket, buf, 16, total);
    return await parse(have);
  }
  // Version 1 (or not a header at all: the parser says which). Byte by byte
  // from here: the line ends within 107 bytes, and not one byte more is taken.
  while (have < V1_MAX && !(buf[have - 2] === 0x0d && buf[have - 1] === 0x0a)) {
    if (have === SHORTEST && !startsWith(buf, "PROXY ")) break;
    const next = await readInto(socket, buf, have, have + 1);
    if (next === have) break;
    have = next;
  }
  return await parse(have);
}

function startsWith(buf: Uint8Array, text: string): boolean {
  for (let i = 0; i < text.length; i++) if (buf[i] !== text.charCodeAt(i)) return false;
  return true;
}

/**
 * A `Deno.Conn` seen through a PROXY header: `remoteAddr` (and `localAddr`)
 * are the ones the balancer reported; everything else is the socket's.
 */
export class ProxiedSocket extends SocketWrapper {
  readonly #remote: Deno.NetAddr;
  readonly #local: Deno.Addr;

  /**
   * @param socket The accepted socket, the header already read from it.
   * @param header The header; without a `source` (LOCAL, UNKNOWN) the socket's addresses stay.
   */
  constructor(socket: Deno.Conn, header: ProxyHeader) {
    super(socket);
    const { source, destination } = header;
    this.#remote = source
      ? { transport: "tcp", hostname: source.hostname, port: source.port }
      : socket.remoteAddr as Deno.NetAddr;
    this.#local = destination
      ? { transport: "tcp", hostname: destination.hostname, port: destination.port }
      : socket.localAddr;
  }

  override get remoteAddr(): Deno.NetAddr {
    return this.#remote;
  }
  override get localAddr(): Deno.Addr {
    return this.#local;
  }
}

export { ProxyProtocolError };
