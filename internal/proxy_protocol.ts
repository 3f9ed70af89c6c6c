// The PROXY protocol (HAProxy's proxy-protocol.txt, versions 1 and 2): a
// load balancer that forwards a TCP connection sends one header first, naming
// the client it came from. Read here from a buffered reader so that whatever
// follows the header (a TLS ClientHello, an HTTP request) stays buffered for
// the next layer.
import { NetkitError } from "../errors.ts";
import {
  LimitExceededError,
  type Readable,
  readExact,
  readUntil,
  UnexpectedEofError,
} from "../io/mod.ts";
import { formatIp, parseIp } from "./cidr.ts";

/** An endpoint named in a PROXY protocol header. */
export interface ProxyAddress {
  /** An IPv4 or IPv6 address, canonical (IPv4-mapped IPv6 is written as IPv4), no brackets. */
  hostname: string;
  /** The TCP port. */
  port: number;
}

/**
 * What a header says the connection carries. Version 1 has `TCP4`, `TCP6` and
 * `UNKNOWN`; version 2 also `UDP4`, `UDP6`, `UNIX_STREAM`, `UNIX_DGRAM` and
 * `UNSPEC`.
 */
export type ProxyProtocolName =
  | "TCP4"
  | "TCP6"
  | "UDP4"
  | "UDP6"
  | "UNIX_STREAM"
  | "UNIX_DGRAM"
  | "UNKNOWN"
  | "UNSPEC";

/** A PROXY protocol header, as {@linkcode readProxyHeader} read it. */
export interface ProxyHeader {
  /** 1 (text) or 2 (binary). */
  version: 1 | 2;
  /**
   * `"PROXY"`: the connection was relayed for a client. `"LOCAL"` (version 2
   * only): the balancer itself connected, e.g. a health check; use the
   * socket's own addresses.
   */
  command: "PROXY" | "LOCAL";
  /** The protocol and address family the header declares. */
  protocol: ProxyProtocolName;
  /**
   * The client's address. Present only for `PROXY` over IPv4 or IPv6 (`TCP4`,
   * `TCP6`, `UDP4`, `UDP6`); otherwise (`LOCAL`, `UNKNOWN`, `UNSPEC`, Unix)
   * the spec says to keep the socket's own peer address.
   */
  source?: ProxyAddress;
  /** The address the client connected to (the balancer's), when `source` is present. */
  destination?: ProxyAddress;
  /** The header's length in bytes, TLVs included. */
  size: number;
}

/** Options for {@linkcode readProxyHeader}. */
export interface ReadProxyHeaderOptions {
  /**
   * The largest version 2 header accepted, in bytes, the 16-byte fixed part
   * and TLVs included; a larger one is refused before its body is read. A
   * version 1 header is always bounded at 107 bytes, as the spec requires.
   * The spec's addresses need at most 232 bytes; the default leaves room for
   * the TLVs cloud balancers add (AWS, GCP, HAProxy's SSL TLVs).
   * @default {4096}
   */
  maxSize?: number;
}

/** Why a header was refused; stable, for metrics labels and logs. */
export type ProxyProtocolErrorReason =
  | "eof"
  | "signature"
  | "truncated"
  | "oversized"
  | "malformed";

/**
 * A connection did not start with a valid PROXY protocol header. `reason`
 * says how: `"eof"` (closed before sending anything), `"signature"` (the
 * first bytes are something else: the peer does not speak the PROXY
 * protocol), `"truncated"` (closed mid-header), `"oversized"` (over the size
 * bound) or `"malformed"`. Close that connection; the server goes on.
 *
 * @example
 * ```ts
 * import { ProxyProtocolError, readProxyHeader } from "./proxy_protocol.ts";
 * import assert from "node:assert/strict";
 *
 * const stream = ReadableStream.from([new TextEncoder().encode("GET / HTTP/1.1\r\n\r\n")]);
 * await assert.rejects(readProxyHeader(stream), (err) => {
 *   assert.ok(err instanceof ProxyProtocolError);
 *   assert.equal(err.code, "ERR_PROXY_PROTOCOL");
 *   assert.equal(err.reason, "signature");
 *   return true;
 * });
 * ```
 */
export class ProxyProtocolError extends NetkitError {
  /** How the header was wrong. */
  readonly reason: ProxyProtocolErrorReason;

  /**
   * Made by {@linkcode readProxyHeader}; its message says what was wrong and what to check.
   *
   * @param reason How the header was wrong.
   * @param detail What exactly, for the message.
   */
  constructor(reason: ProxyProtocolErrorReason, detail: string) {
    super(
      "ERR_PROXY_PROTOCOL",
      `bad PROXY protocol header: ${detail}; the peer must send a PROXY protocol v1 or v2 ` +
        "header first (HAProxy: send-proxy or send-proxy-v2), or the listener should not expect one",
    );
    this.reason = reason;
  }
}

/** The v1 spec's bound: "PROXY TCP6 " + two full IPv6 addresses + two ports + CRLF. */
const V1_MAX = 107;
const V1_PREFIX = "PROXY ";
/** The 12-byte version 2 signature. */
const V2_SIGNATURE = new Uint8Array([
  0x0d,
  0x0a,
  0x0d,
  0x0a,
  0x00,
  0x0d,
  0x0a,
  0x51,
  0x55,
  0x49,
  0x54,
  0x0a,
]);
const V2_FIXED = 16;
const DEFAULT_MAX_SIZE = 4096;
const decoder = new TextDecoder();

/** The valid version 2 family/transport bytes and what each carries. */
const V2_FAMILIES: ReadonlyMap<
  number,
  { name: ProxyProtocolName; addrLen: number; ip: 0 | 4 | 16 }
> = new Map([
  [0x00, { name: "UNSPEC", addrLen: 0, ip: 0 }],
  [0x11, { name: "TCP4", addrLen: 12, ip: 4 }],
  [0x12, { name: "UDP4", addrLen: 12, ip: 4 }],
  [0x21, { name: "TCP6", addrLen: 36, ip: 16 }],
  [0x22, { name: "UDP6", addrLen: 36, ip: 16 }],
  [0x31, { name: "UNIX_STREAM", addrLen: 216, ip: 0 }],
  [0x32, { name: "UNIX_DGRAM", addrLen: 216, ip: 0 }],
]);

function hex(byte: number): string {
  return `0x${byte.toString(16).padStart(2, "0")}`;
}

/** Names what a first byte that is not a PROXY header most likely belongs to. */
function describeFirstByte(byte: number): string {
  if (byte === 0x16) return `${hex(byte)}, a TLS ClientHello`;
  if (byte >= 0x41 && byte <= 0x5a) return `${hex(byte)} ('${String.fromCharCode(byte)}')`;
  return hex(byte);
}

/** Reads exactly `n` bytes, turning an early end into a "truncated" error. */
async function readPart(
  reader: Readable,
  n: number,
  what: string,
  had: number,
): Promise<Uint8Array> {
  let bytes: Uint8Array | null;
  try {
    bytes = await readExact(reader, n);
  } catch (err) {
    if (err instanceof UnexpectedEofError) {
      throw new ProxyProtocolError(
        "truncated",
        `the connection closed after ${had + err.partial.length} bytes, in the middle of ${what}`,
      );
    }
    throw err;
  }
  if (bytes === null) {
    throw new ProxyProtocolError(
      "truncated",
      `the connection closed after ${had} bytes, before ${what}`,
    );
  }
  return bytes;
}

/**
 * Reads a PROXY protocol header, version 1 or 2, from the start of a
 * connection, and leaves every byte after it buffered in `reader` for the
 * next layer (a TLS handshake, an HTTP request, a `pipeTo`).
 *
 * `reader` is an io `BufferedReader`, or a `ReadableStream` — a netkit
 * `Conn`'s `readable`, whose own buffer then keeps the bytes after the
 * header. Give it the raw stream, before any TLS. (Over any other
 * `ReadableStream` the leftovers stay with io's reader for that stream: later
 * io calls see them, a plain `pipeTo` would not; wrap such a stream in a
 * `BufferedReader` and use its `readable`.)
 *
 * The bytes after the header are often already buffered when it returns —
 * a client's first bytes tend to arrive in the same segment — so a TLS
 * handshake that follows must start from the reader's buffered bytes (the
 * STARTTLS guard of `acceptTls`, which refuses buffered plaintext, does not
 * fit this path).
 *
 * The header is bounded: version 1 at 107 bytes (the spec's limit; no CRLF
 * by then is an error), version 2 at `maxSize`. Only the bytes the header
 * needs are read, however many arrive.
 *
 * **Deadline.** This function has none: a peer that sends half a header and
 * waits would hold it forever. The caller applies one — the server's
 * `--handshake-timeout` — by closing the connection (or cancelling the
 * reader) when it fires; the pending read then ends and this function rejects
 * with a `"truncated"` (or `"eof"`) error.
 *
 * Version 2 TLVs are skipped (read, bounded by `maxSize`, and dropped). An
 * address family or transport the spec does not define is `"malformed"`.
 *
 * @returns The header. Use `source` as the client's address when present;
 *   otherwise (`LOCAL`, `UNKNOWN`, …) keep the socket's own.
 * @throws {ProxyProtocolError} A missing, malformed, truncated or oversized header.
 * @throws {RangeError} `maxSize` is not an integer of at least 16.
 *
 * @example Version 1 and version 2, with the bytes after the header kept
 * ```ts
 * import { encodeProxyHeaderV2, readProxyHeader } from "./proxy_protocol.ts";
 * import { BufferedReader } from "../io/mod.ts";
 * import assert from "node:assert/strict";
 *
 * const v1 = new TextEncoder().encode("PROXY TCP4 192.0.2.1 198.51.100.2 51000 443\r\nhello");
 * const r1 = new BufferedReader(ReadableStream.from([v1]));
 * const h1 = await readProxyHeader(r1);
 * assert.deepEqual(h1.source, { hostname: "192.0.2.1", port: 51000 });
 * assert.equal(new TextDecoder().decode((await r1.readExact(5))!), "hello");
 *
 * const v2 = encodeProxyHeaderV2({
 *   source: { hostname: "2001:db8::1", port: 40000 },
 *   destination: { hostname: "2001:db8::2", port: 443 },
 * });
 * const h2 = await readProxyHeader(new BufferedReader(ReadableStream.from([v2])));
 * assert.equal(h2.version, 2);
 * assert.equal(h2.protocol, "TCP6");
 * assert.deepEqual(h2.source, { hostname: "2001:db8::1", port: 40000 });
 * ```
 *
 * @example Wiring: in the accept loop, before TLS, with the handshake deadline
 * ```ts ignore
 * if (!proxyFrom.has(socket.remoteAddr.hostname)) return socket.close();
 * const timer = setTimeout(() => conn.close(), handshakeTimeoutMs);
 * try {
 *   const header = await readProxyHeader(reader, { maxSize: 4096 });
 *   if (header.source) remoteAddr = { transport: "tcp", ...header.source };
 * } finally {
 *   clearTimeout(timer);
 * }
 * ```
 */
export async function readProxyHeader(
  reader: Readable,
  options: ReadProxyHeaderOptions = {},
): Promise<ProxyHeader> {
  const maxSize = options.maxSize ?? DEFAULT_MAX_SIZE;
  if (!Number.isSafeInteger(maxSize) || maxSize < V2_FIXED) {
    throw new RangeError(`maxSize must be an integer of at least ${V2_FIXED}, got ${maxSize}`);
  }
  // One byte first: it tells v1 ('P') from v2 (CR), and anything else is
  // refused at once rather than after waiting for more bytes that may never come.
  const first = await readExact(reader, 1);
  if (first === null) {
    throw new ProxyProtocolError("eof", "the connection closed before sending anything");
  }
  if (first[0] === 0x50) return await readV1(reader);
  if (first[0] === 0x0d) return await readV2(reader, maxSize);
  throw new ProxyProtocolError(
    "signature",
    `the connection starts with ${
      describeFirstByte(first[0])
    }, not "PROXY " (v1) or the v2 signature`,
  );
}

async function readV1(reader: Readable): Promise<ProxyHeader> {
  const rest = await readPart(reader, V1_PREFIX.length - 1, `the "PROXY " prefix`, 1);
  for (let i = 0; i < rest.length; i++) {
    if (rest[i] !== V1_PREFIX.charCodeAt(i + 1)) {
      throw new ProxyProtocolError(
        "signature",
        `the connection starts with ${JSON.stringify("P" + latin1(rest))}, not "PROXY "`,
      );
    }
  }
  let line: Uint8Array | null;
  try {
    line = await readUntil(reader, "\r\n", { maxBytes: V1_MAX - V1_PREFIX.length });
  } catch (err) {
    if (err instanceof LimitExceededError) {
      throw new ProxyProtocolError(
        "oversized",
        `a version 1 header has no CRLF within ${V1_MAX} bytes`,
      );
    }
    if (err instanceof UnexpectedEofError) {
      throw new ProxyProtocolError(
        "truncated",
        `the connection closed after ${V1_PREFIX.length + err.partial.length} bytes, ` +
          "before the CRLF ending the version 1 header",
      );
    }
    throw err;
  }
  if (line === null) {
    throw new ProxyProtocolError(
      "truncated",
      `the connection closed after ${V1_PREFIX.length} bytes, before the version 1 header's fields`,
    );
  }
  const size = V1_PREFIX.length + line.length;
  for (let i = 0; i < line.length - 2; i++) {
    const c = line[i];
    if (c < 0x20 || c > 0x7e) {
      throw new ProxyProtocolError(
        "malformed",
        `a version 1 header holds the byte ${hex(c)} at offset ${V1_PREFIX.length + i}`,
      );
    }
  }
  const text = decoder.decode(line.subarray(0, line.length - 2));
  const fields = text.split(" ");
  const protocol = fields[0];
  if (protocol === "UNKNOWN") {
    // The spec: the rest of the line is to be ignored; use the socket's addresses.
    return { version: 1, command: "PROXY", protocol: "UNKNOWN", size };
  }
  if (protocol !== "TCP4" && protocol !== "TCP6") {
    throw new ProxyProtocolError(
      "malformed",
      `version 1 protocol ${JSON.stringify(protocol)} is not TCP4, TCP6 or UNKNOWN`,
    );
  }
  if (fields.length !== 5) {
    throw new ProxyProtocolError(
      "malformed",
      `a version 1 ${protocol} header has ${fields.length - 1} fields after the protocol, not 4 ` +
        `(source, destination, source port, destination port, one space apart): ${
          JSON.stringify(text)
        }`,
    );
  }
  return {
    version: 1,
    command: "PROXY",
    protocol,
    source: { hostname: v1Address(fields[1], protocol), port: v1Port(fields[3]) },
    destination: { hostname: v1Address(fields[2], protocol), port: v1Port(fields[4]) },
    size,
  };
}

function v1Address(text: string, protocol: "TCP4" | "TCP6"): string {
  const v6 = text.indexOf(":") >= 0;
  let bytes: Uint8Array | undefined;
  if (v6 === (protocol === "TCP6")) {
    try {
      bytes = parseIp(text);
    } catch {
      // Reported below.
    }
  }
  if (bytes === undefined || text.indexOf("%") >= 0) {
    throw new ProxyProtocolError(
      "malformed",
      `${JSON.stringify(text)} is not an ${protocol === "TCP4" ? "IPv4" : "IPv6"} address`,
    );
  }
  return formatIp(bytes);
}

function v1Port(text: string): number {
  const port = /^(0|[1-9][0-9]{0,4})$/.test(text) ? Number(text) : -1;
  if (port < 0 || port > 65535) {
    throw new ProxyProtocolError("malformed", `${JSON.stringify(text)} is not a port (0 to 65535)`);
  }
  return port;
}

function latin1(bytes: Uint8Array): string {
  return String.fromCharCode(...bytes);
}

async function readV2(reader: Readable, maxSize: number): Promise<ProxyHeader> {
  const fixed = await readPart(reader, V2_FIXED - 1, "the version 2 fixed header", 1);
  for (let i = 1; i < V2_SIGNATURE.length; i++) {
    if (fixed[i - 1] !== V2_SIGNATURE[i]) {
      throw new ProxyProtocolError(
        "signature",
        `byte ${i} is ${hex(fixed[i - 1])} where the version 2 signature has ${
          hex(V2_SIGNATURE[i])
        }`,
      );
    }
  }
  const verCmd = fixed[11];
  const famByte = fixed[12];
  const len = (fixed[13] << 8) | fixed[14];
  if (verCmd >> 4 !== 2) {
    throw new ProxyProtocolError("malformed", `version ${verCmd >> 4} after the v2 signature`);
  }
  const cmd = verCmd & 0x0f;
  if (cmd > 1) {
    throw new ProxyProtocolError("malformed", `command ${cmd} is neither LOCAL (0) nor PROXY (1)`);
  }
  const family = V2_FAMILIES.get(famByte);
  if (family === undefined) {
    throw new ProxyProtocolError(
      "malformed",
      `address family and transport ${hex(famByte)} are not one the spec defines`,
    );
  }
  if (V2_FIXED + len > maxSize) {
    throw new ProxyProtocolError(
      "oversized",
      `the version 2 header is ${V2_FIXED + len} bytes, over the ${maxSize}-byte limit (maxSize)`,
    );
  }
  if (cmd === 1 && len < family.addrLen) {
    throw new ProxyProtocolError(
      "malformed",
      `a ${family.name} header needs ${family.addrLen} address bytes, its length says ${len}`,
    );
  }
  const body = len === 0
    ? new Uint8Array(0)
    : await readPart(reader, len, `the version 2 header's ${len} address and TLV bytes`, V2_FIXED);
  const size = V2_FIXED + len;
  if (cmd === 0) return { version: 2, command: "LOCAL", protocol: family.name, size };
  if (family.ip === 0) return { version: 2, command: "PROXY", protocol: family.name, size };
  const n = family.ip;
  const ports = 2 * n;
  return {
    version: 2,
    command: "PROXY",
    protocol: family.name,
    source: {
      hostname: formatIp(canonical(body.subarray(0, n))),
      port: (body[ports] << 8) | body[ports + 1],
    },
    destination: {
      hostname: formatIp(canonical(body.subarray(n, ports))),
      port: (body[ports + 2] << 8) | body[ports + 3],
    },
    size,
  };
}

/** IPv4-mapped IPv6 bytes as their 4 IPv4 bytes, so one client has one spelling. */
function canonical(bytes: Uint8Array): Uint8Array {
  if (bytes.length !== 16) return bytes;
  for (let i = 0; i < 10; i++) if (bytes[i] !== 0) return bytes;
  return bytes[10] === 0xff && bytes[11] === 0xff ? bytes.subarray(12) : bytes;
}

/** What to encode into a PROXY protocol header. */
export interface ProxyHeaderInit {
  /**
   * `"LOCAL"` (a connection the balancer made itself) carries no addresses;
   * version 1 writes it as `PROXY UNKNOWN`.
   * @default {"PROXY"}
   */
  command?: "PROXY" | "LOCAL";
  /** The client. Without it, the header says UNKNOWN (v1) or UNSPEC (v2). */
  source?: ProxyAddress;
  /** The address the client connected to; required with `source`. */
  destination?: ProxyAddress;
  /** Version 2 only: type-length-value extensions to append. */
  tlvs?: readonly { type: number; value: Uint8Array }[];
}

/**
 * Both addresses as bytes of one family: IPv4 when both are IPv4, else both
 * as IPv6 (an IPv4 one mapped, `::ffff:a.b.c.d`).
 */
function addressPair(init: ProxyHeaderInit): [Uint8Array, Uint8Array] {
  if (init.destination === undefined) {
    throw new TypeError("a PROXY header with a source needs a destination too");
  }
  const src = parseIp(init.source!.hostname);
  const dst = parseIp(init.destination.hostname);
  for (const { port } of [init.source!, init.destination]) {
    if (!Number.isInteger(port) || port < 0 || port > 65535) {
      throw new RangeError(`a port is an integer from 0 to 65535, got ${port}`);
    }
  }
  if (src.length === dst.length) return [src, dst];
  return [toV6(src), toV6(dst)];
}

function toV6(bytes: Uint8Array): Uint8Array {
  if (bytes.length === 16) return bytes;
  const out = new Uint8Array(16);
  out[10] = out[11] = 0xff;
  out.set(bytes, 12);
  return out;
}

/**
 * Encodes a version 1 (text) PROXY protocol header: `PROXY TCP4 …\r\n`, or
 * `PROXY UNKNOWN\r\n` without a source (or for `LOCAL`). For clients that
 * speak to a server behind `--proxy-protocol`, and for tests.
 *
 * @throws {NetkitError} `ERR_BAD_CIDR`: an address is not an IP address.
 * @throws {RangeError} A port outside 0–65535.
 *
 * @example
 * ```ts
 * import { encodeProxyHeaderV1 } from "./proxy_protocol.ts";
 * import assert from "node:assert/strict";
 *
 * const header = encodeProxyHeaderV1({
 *   source: { hostname: "192.0.2.1", port: 51000 },
 *   destination: { hostname: "198.51.100.2", port: 443 },
 * });
 * assert.equal(new TextDecoder().decode(header), "PROXY TCP4 192.0.2.1 198.51.100.2 51000 443\r\n");
 * assert.equal(new TextDecoder().decode(encodeProxyHeaderV1({})), "PROXY UNKNOWN\r\n");
 * ```
 */
export function encodeProxyHeaderV1(init: ProxyHeaderInit): Uint8Array {
  if (init.command === "LOCAL" || init.source === undefined) {
    return new TextEncoder().encode("PROXY UNKNOWN\r\n");
  }
  const [src, dst] = addressPair(init);
  const protocol = src.length === 4 ? "TCP4" : "TCP6";
  return new TextEncoder().encode(
    `PROXY ${protocol} ${formatIp(src)} ${formatIp(dst)} ${init.source.port} ` +
      `${init.destination!.port}\r\n`,
  );
}

/**
 * Encodes a version 2 (binary) PROXY protocol header: TCP over IPv4 or IPv6
 * for `PROXY` with a source, `UNSPEC` without one, and `LOCAL` with no
 * addresses; `tlvs` are appended as given.
 *
 * @throws {NetkitError} `ERR_BAD_CIDR`: an address is not an IP address.
 * @throws {RangeError} A port outside 0–65535, a TLV type over 255, or a
 *   header over 65,551 bytes.
 *
 * @example
 * ```ts
 * import { encodeProxyHeaderV2 } from "./proxy_protocol.ts";
 * import assert from "node:assert/strict";
 *
 * const header = encodeProxyHeaderV2({
 *   source: { hostname: "192.0.2.1", port: 51000 },
 *   destination: { hostname: "198.51.100.2", port: 443 },
 * });
 * assert.equal(header.length, 28); // 16 fixed + 12 address bytes
 * assert.equal(header[12], 0x21); // version 2, PROXY
 * assert.equal(header[13], 0x11); // TCP over IPv4
 * assert.equal(encodeProxyHeaderV2({ command: "LOCAL" }).length, 16);
 * ```
 */
export function encodeProxyHeaderV2(init: ProxyHeaderInit): Uint8Array {
  const local = init.command === "LOCAL";
  let pair: [Uint8Array, Uint8Array] | undefined;
  if (!local && init.source !== undefined) pair = addressPair(init);
  const addrLen = pair === undefined ? 0 : pair[0].length === 4 ? 12 : 36;
  let tlvLen = 0;
  for (const tlv of init.tlvs ?? []) {
    if (!Number.isInteger(tlv.type) || tlv.type < 0 || tlv.type > 255) {
      throw new RangeError(`a TLV type is an integer from 0 to 255, got ${tlv.type}`);
    }
    tlvLen += 3 + tlv.value.length;
  }
  const len = addrLen + tlvLen;
  if (len > 0xffff) {
    throw new RangeError(`a version 2 header's body is at most 65535 bytes, got ${len}`);
  }
  const out = new Uint8Array(V2_FIXED + len);
  out.set(V2_SIGNATURE);
  out[12] = local ? 0x20 : 0x21;
  out[13] = pair === undefined ? 0x00 : pair[0].length === 4 ? 0x11 : 0x21;
  out[14] = len >> 8;
  out[15] = len & 0xff;
  let at = V2_FIXED;
  if (pair !== undefined) {
    out.set(pair[0], at);
    out.set(pair[1], at + pair[0].length);
    at += pair[0].length * 2;
    for (const port of [init.source!.port, init.destination!.port]) {
      out[at++] = port >> 8;
      out[at++] = port & 0xff;
    }
  }
  for (const tlv of init.tlvs ?? []) {
    out[at++] = tlv.type;
    out[at++] = tlv.value.length >> 8;
    out[at++] = tlv.value.length & 0xff;
    out.set(tlv.value, at);
    at += tlv.value.length;
  }
  return out;
}
