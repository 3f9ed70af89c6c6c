// IP addresses and CIDR ranges, as the per-address limits, `--trust-proxy`
// and `--proxy-protocol-from` need them: parsed once at start-up, matched on
// every accept. Matching parses the peer's address into a scratch buffer and
// compares 32-bit words, so it allocates nothing.
import { NetkitError } from "../errors.ts";

/** A parsed CIDR range, normalised: host bits cleared, IPv4-mapped IPv6 written as IPv4. */
export interface Cidr {
  /** 4 for IPv4 (also for a range written as IPv4-mapped IPv6 with a prefix of 96 or more), else 6. */
  readonly family: 4 | 6;
  /** The network address in canonical form (RFC 5952 for IPv6), host bits cleared. */
  readonly network: string;
  /** The prefix length: 0–32 for IPv4, 0–128 for IPv6. */
  readonly prefix: number;
}

/** Options for {@linkcode addressKey}. */
export interface AddressKeyOptions {
  /**
   * How many leading bits of an IPv6 address identify one client. A single
   * subscriber usually owns a whole /64 and can pick any address in it, so
   * limits that key on the full address would be trivially dodged.
   * @default {64}
   */
  ipv6Prefix?: number;
}

const GOOD_EXAMPLE = "e.g. 10.0.0.0/8, 192.168.1.7, fd00::/8 or ::1";

// One scratch buffer for parsing: JavaScript runs one call at a time and
// nothing here awaits, so sharing it is safe and saves an allocation per call.
const scratch = new Uint8Array(16);

/**
 * Parses an IPv4 or IPv6 address (IPv6 may carry a `%zone`, which is
 * dropped) into `out`: 4 bytes at its start for IPv4 and for IPv4-mapped
 * IPv6 (`::ffff:1.2.3.4`), 16 bytes for other IPv6. Returns the family, or
 * 0 when `text` is not an address.
 */
function parseInto(text: string, out: Uint8Array): 0 | 4 | 6 {
  if (text.indexOf(":") < 0) return parseV4(text, 0, text.length, out, 0) ? 4 : 0;
  if (!parseV6(text, out)) return 0;
  if (isMapped(out)) {
    out.copyWithin(0, 12, 16);
    return 4;
  }
  return 6;
}

function isMapped(b: Uint8Array): boolean {
  for (let i = 0; i < 10; i++) if (b[i] !== 0) return false;
  return b[10] === 0xff && b[11] === 0xff;
}

/** Dotted-quad IPv4, four decimal parts 0–255 without leading zeros (they read as octal elsewhere). */
function parseV4(s: string, start: number, end: number, out: Uint8Array, off: number): boolean {
  let part = 0;
  let val = 0;
  let digits = 0;
  for (let i = start; i <= end; i++) {
    const c = i < end ? s.charCodeAt(i) : 0x2e; // a '.' past the end closes the last part
    if (c >= 0x30 && c <= 0x39) {
      if (digits > 0 && val === 0) return false; // leading zero
      val = val * 10 + (c - 0x30);
      if (val > 255) return false;
      digits++;
    } else if (c === 0x2e) {
      if (digits === 0 || part === 4) return false;
      out[off + part++] = val;
      val = 0;
      digits = 0;
    } else {
      return false;
    }
  }
  return part === 4;
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  const l = c | 0x20;
  if (l >= 0x61 && l <= 0x66) return l - 0x61 + 10;
  return -1;
}

/** RFC 4291 text form: up to 8 groups, one `::`, an optional trailing dotted quad and `%zone`. */
function parseV6(s: string, out: Uint8Array): boolean {
  let end = s.length;
  const pct = s.indexOf("%");
  if (pct >= 0) {
    if (pct === end - 1) return false;
    end = pct;
  }
  let n = 0; // groups written
  let gap = -1; // group index where "::" stood
  let i = 0;
  if (end >= 2 && s.charCodeAt(0) === 0x3a) {
    if (s.charCodeAt(1) !== 0x3a) return false;
    gap = 0;
    i = 2;
  }
  while (i < end) {
    if (n === 8) return false;
    let val = 0;
    let j = i;
    for (; j < end; j++) {
      const h = hexValue(s.charCodeAt(j));
      if (h < 0) break;
      if (j - i === 4) return false; // a fifth hex digit
      val = val * 16 + h;
    }
    if (j < end && s.charCodeAt(j) === 0x2e) {
      // The last 32 bits as a dotted quad (`::ffff:1.2.3.4`).
      if (n > 6 || !parseV4(s, i, end, out, n * 2)) return false;
      n += 2;
      break;
    }
    if (j === i) return false;
    out[n * 2] = val >> 8;
    out[n * 2 + 1] = val & 0xff;
    n++;
    i = j;
    if (i === end) break;
    if (s.charCodeAt(i) !== 0x3a) return false;
    i++;
    if (i < end && s.charCodeAt(i) === 0x3a) {
      if (gap >= 0) return false; // a second "::"
      gap = n;
      i++;
    } else if (i === end) {
      return false; // a trailing single ':'
    }
  }
  if (gap < 0) return n === 8;
  if (n === 8) return false; // "::" must stand for at least one group
  const tail = (n - gap) * 2;
  out.copyWithin(16 - tail, gap * 2, n * 2);
  out.fill(0, gap * 2, 16 - tail);
  return true;
}

function formatV4(b: Uint8Array, off = 0): string {
  return `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}`;
}

/** RFC 5952: lower case, no leading zeros, the longest run of two or more zero groups as `::`. */
function formatV6(b: Uint8Array): string {
  if (isMapped(b)) return `::ffff:${formatV4(b, 12)}`;
  let bestAt = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (b[i * 2] === 0 && b[i * 2 + 1] === 0) {
      let j = i;
      while (j < 8 && b[j * 2] === 0 && b[j * 2 + 1] === 0) j++;
      if (j - i > bestLen) {
        bestAt = i;
        bestLen = j - i;
      }
      i = j;
    } else {
      i++;
    }
  }
  let text = "";
  for (let i = 0; i < 8; i++) {
    if (i === bestAt) {
      text += "::";
      i += bestLen - 1;
      continue;
    }
    if (text !== "" && !text.endsWith(":")) text += ":";
    text += ((b[i * 2] << 8) | b[i * 2 + 1]).toString(16);
  }
  return text;
}

function badCidr(text: string, why: string): NetkitError {
  return new NetkitError(
    "ERR_BAD_CIDR",
    `${JSON.stringify(text)} is not ${why}; write an address or a CIDR range, ${GOOD_EXAMPLE}`,
  );
}

/**
 * Parses an IPv4 or IPv6 address into its bytes: 4 for IPv4 and for
 * IPv4-mapped IPv6 (`::ffff:1.2.3.4` is 1.2.3.4), 16 for other IPv6. A
 * `%zone` suffix is dropped. Leading zeros in IPv4 parts are refused (other
 * tools read them as octal).
 *
 * @throws {NetkitError} `ERR_BAD_CIDR`: not an address.
 *
 * @example
 * ```ts
 * import { parseIp } from "./cidr.ts";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(parseIp("192.0.2.1"), new Uint8Array([192, 0, 2, 1]));
 * assert.deepEqual(parseIp("::ffff:192.0.2.1"), new Uint8Array([192, 0, 2, 1]));
 * assert.equal(parseIp("2001:db8::1").length, 16);
 * assert.throws(() => parseIp("192.0.2.256"), { code: "ERR_BAD_CIDR" });
 * ```
 */
export function parseIp(text: string): Uint8Array {
  const family = parseInto(text, scratch);
  if (family === 0) throw badCidr(text, "an IP address");
  return scratch.slice(0, family === 4 ? 4 : 16);
}

/**
 * Formats 4 or 16 address bytes as text: dotted quad, or RFC 5952
 * canonical IPv6 (IPv4-mapped as `::ffff:a.b.c.d`).
 *
 * @throws {RangeError} `bytes` is neither 4 nor 16 bytes long.
 *
 * @example
 * ```ts
 * import { formatIp, parseIp } from "./cidr.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(formatIp(parseIp("2001:0DB8:0:0:0:0:0:0001")), "2001:db8::1");
 * assert.equal(formatIp(new Uint8Array([127, 0, 0, 1])), "127.0.0.1");
 * ```
 */
export function formatIp(bytes: Uint8Array): string {
  if (bytes.length === 4) return formatV4(bytes);
  if (bytes.length === 16) return formatV6(bytes);
  throw new RangeError(`an IP address has 4 or 16 bytes, got ${bytes.length}`);
}

/**
 * Returns an address in canonical text form: IPv4 as is, IPv4-mapped IPv6
 * as plain IPv4, other IPv6 per RFC 5952 (zone dropped). Useful so that one
 * client shows up under one spelling in logs and metrics.
 *
 * @throws {NetkitError} `ERR_BAD_CIDR`: not an address.
 *
 * @example
 * ```ts
 * import { normalizeIp } from "./cidr.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(normalizeIp("::FFFF:10.1.2.3"), "10.1.2.3");
 * assert.equal(normalizeIp("fe80:0:0:0:0:0:0:1%eth0"), "fe80::1");
 * ```
 */
export function normalizeIp(text: string): string {
  const family = parseInto(text, scratch);
  if (family === 0) throw badCidr(text, "an IP address");
  return family === 4 ? formatV4(scratch) : formatV6(scratch);
}

/**
 * Parses `a.b.c.d/n`, `x::y/n`, or a bare address (a /32 or /128). Host
 * bits past the prefix are cleared (`10.1.2.3/8` is `10.0.0.0/8`), as Go's
 * `net.ParseCIDR` and nginx do. A range written as IPv4-mapped IPv6 with a
 * prefix of 96 or more (`::ffff:10.0.0.0/104`) is the IPv4 range it maps
 * (`10.0.0.0/8`), since peers' mapped addresses are matched as IPv4.
 * Surrounding whitespace is ignored.
 *
 * @throws {NetkitError} `ERR_BAD_CIDR`, naming the bad value and showing good ones.
 *
 * @example
 * ```ts
 * import { parseCidr } from "./cidr.ts";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(parseCidr("10.1.2.3/8"), { family: 4, network: "10.0.0.0", prefix: 8 });
 * assert.deepEqual(parseCidr("2001:db8::/32"), { family: 6, network: "2001:db8::", prefix: 32 });
 * assert.deepEqual(parseCidr("::1"), { family: 6, network: "::1", prefix: 128 });
 * assert.throws(() => parseCidr("10.0.0.0/33"), { code: "ERR_BAD_CIDR" });
 * ```
 */
export function parseCidr(text: string): Cidr {
  const { family, bytes, prefix } = parseRange(text);
  return { family, network: formatIp(bytes), prefix };
}

interface Range {
  family: 4 | 6;
  bytes: Uint8Array;
  prefix: number;
}

function parseRange(input: string): Range {
  const text = input.trim();
  const slash = text.indexOf("/");
  const addr = slash < 0 ? text : text.slice(0, slash);
  const bytes = new Uint8Array(16);
  let family: 0 | 4 | 6 = addr.indexOf(":") < 0
    ? (parseV4(addr, 0, addr.length, bytes, 0) ? 4 : 0)
    : (parseV6(addr, bytes) ? 6 : 0);
  if (family === 0) throw badCidr(input, "an IP address or CIDR range");
  let prefix = family === 4 ? 32 : 128;
  if (slash >= 0) {
    const p = text.slice(slash + 1);
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p)) {
      throw badCidr(input, "a CIDR range (the prefix length after '/' must be a decimal number)");
    }
    prefix = Number(p);
    if (prefix > (family === 4 ? 32 : 128)) {
      throw badCidr(
        input,
        `a CIDR range (an IPv${family} prefix length is at most ${family === 4 ? 32 : 128})`,
      );
    }
  }
  if (family === 6 && isMapped(bytes) && prefix >= 96) {
    bytes.copyWithin(0, 12, 16);
    family = 4;
    prefix -= 96;
  }
  const out = bytes.slice(0, family === 4 ? 4 : 16);
  maskBytes(out, prefix);
  return { family, bytes: out, prefix };
}

/** Clears every bit of `b` past the first `prefix` bits. */
function maskBytes(b: Uint8Array, prefix: number): void {
  for (let i = 0; i < b.length; i++) {
    const keep = prefix - i * 8;
    if (keep >= 8) continue;
    b[i] = keep <= 0 ? 0 : b[i] & (0xff << (8 - keep));
  }
}

function word(b: Uint8Array, i: number): number {
  return ((b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]) >>> 0;
}

function prefixMask(bits: number): number {
  return bits <= 0 ? 0 : bits >= 32 ? 0xffffffff : (0xffffffff << (32 - bits)) >>> 0;
}

/**
 * A set of CIDR ranges that answers "is this peer in it?" for every accept,
 * without allocating: the address is parsed into a scratch buffer and
 * compared as 32-bit words against each range. IPv4-mapped IPv6 peers
 * (`::ffff:10.1.2.3`, as a dual-stack listener reports IPv4 clients) match
 * the IPv4 ranges. Note that `::/0` therefore means every IPv6 peer, not
 * IPv4 ones; list `0.0.0.0/0` too for "anyone".
 *
 * Immutable once built, so a shared set such as {@linkcode LOOPBACK} cannot
 * be changed behind its users' backs.
 *
 * @example Who may send a PROXY protocol header
 * ```ts
 * import { CidrSet } from "./cidr.ts";
 * import assert from "node:assert/strict";
 *
 * const from = new CidrSet(["10.0.0.0/8", "2001:db8::/32"]);
 * assert.equal(from.has("10.20.30.40"), true);
 * assert.equal(from.has("::ffff:10.20.30.40"), true);
 * assert.equal(from.has("2001:db8:5::9"), true);
 * assert.equal(from.has("192.0.2.1"), false);
 * assert.equal(from.has("not an address"), false);
 * ```
 */
export class CidrSet {
  // IPv4: [network, mask] pairs. IPv6: [w0, w1, w2, w3, m0, m1, m2, m3] groups.
  readonly #v4: number[] = [];
  readonly #v6: number[] = [];
  readonly #ranges: readonly Cidr[];

  /**
   * Parses every range up front, so a bad `--trust-proxy` or
   * `--proxy-protocol-from` value fails at start-up, not on a connection.
   *
   * @param cidrs Ranges or bare addresses, as {@linkcode parseCidr} reads them.
   * @throws {NetkitError} `ERR_BAD_CIDR` for the first entry that does not parse.
   */
  constructor(cidrs: Iterable<string>) {
    const ranges: Cidr[] = [];
    for (const text of cidrs) {
      const { family, bytes, prefix } = parseRange(text);
      ranges.push({ family, network: formatIp(bytes), prefix });
      if (family === 4) {
        this.#v4.push(word(bytes, 0), prefixMask(prefix));
      } else {
        for (let i = 0; i < 4; i++) this.#v6.push(word(bytes, i * 4));
        for (let i = 0; i < 4; i++) this.#v6.push(prefixMask(prefix - i * 32));
      }
    }
    this.#ranges = Object.freeze(ranges);
  }

  /** The ranges, normalised, in the order given. */
  get ranges(): readonly Cidr[] {
    return this.#ranges;
  }

  /** How many ranges the set holds. */
  get size(): number {
    return this.#ranges.length;
  }

  /**
   * Whether `address` lies in one of the ranges. Anything that is not an IP
   * address (a Unix socket path, an empty string) is not in the set.
   */
  has(address: string): boolean {
    const family = parseInto(address, scratch);
    if (family === 4) {
      const a = word(scratch, 0);
      const v4 = this.#v4;
      for (let i = 0; i < v4.length; i += 2) {
        if (((a & v4[i + 1]) >>> 0) === v4[i]) return true;
      }
      return false;
    }
    if (family === 6) {
      const a0 = word(scratch, 0), a1 = word(scratch, 4), a2 = word(scratch, 8);
      const a3 = word(scratch, 12);
      const v6 = this.#v6;
      for (let i = 0; i < v6.length; i += 8) {
        if (
          ((a0 & v6[i + 4]) >>> 0) === v6[i] && ((a1 & v6[i + 5]) >>> 0) === v6[i + 1] &&
          ((a2 & v6[i + 6]) >>> 0) === v6[i + 2] && ((a3 & v6[i + 7]) >>> 0) === v6[i + 3]
        ) return true;
      }
    }
    return false;
  }

  /** The ranges as `network/prefix`, comma-separated, for logs. */
  toString(): string {
    return this.#ranges.map((r) => `${r.network}/${r.prefix}`).join(",");
  }
}

/**
 * The loopback ranges, `127.0.0.0/8` and `::1/128`: the default for
 * `--proxy-protocol-from` (a balancer on the same host).
 *
 * @example
 * ```ts
 * import { LOOPBACK } from "./cidr.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(LOOPBACK.has("127.0.0.1"), true);
 * assert.equal(LOOPBACK.has("::1"), true);
 * assert.equal(LOOPBACK.has("192.0.2.1"), false);
 * ```
 */
export const LOOPBACK: CidrSet = new CidrSet(["127.0.0.0/8", "::1/128"]);

/**
 * The key per-address limits group a peer under: an IPv4 address as is
 * (IPv4-mapped IPv6 as plain IPv4), an IPv6 address masked to its
 * `ipv6Prefix` and written `network/prefix` (or the bare canonical
 * address when `ipv6Prefix` is 128). Two spellings of one client give one
 * key.
 *
 * @throws {NetkitError} `ERR_BAD_CIDR`: `address` is not an IP address (a
 *   Unix socket peer has none: skip per-address limits for those).
 * @throws {RangeError} `ipv6Prefix` is not an integer from 0 to 128.
 *
 * @example
 * ```ts
 * import { addressKey } from "./cidr.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(addressKey("192.0.2.7"), "192.0.2.7");
 * assert.equal(addressKey("::ffff:192.0.2.7"), "192.0.2.7");
 * assert.equal(addressKey("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
 * assert.equal(addressKey("2001:db8:1:2:aaaa::1", { ipv6Prefix: 48 }), "2001:db8:1::/48");
 * assert.equal(addressKey("2001:db8::1", { ipv6Prefix: 128 }), "2001:db8::1");
 * ```
 */
export function addressKey(address: string, options: AddressKeyOptions = {}): string {
  const prefix = options.ipv6Prefix ?? 64;
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > 128) {
    throw new RangeError(`ipv6Prefix must be an integer from 0 to 128, got ${prefix}`);
  }
  const family = parseInto(address, scratch);
  if (family === 0) throw badCidr(address, "an IP address");
  if (family === 4) {
    // The common case returns the caller's own string: no allocation.
    return address.indexOf(":") < 0 ? address : formatV4(scratch);
  }
  if (prefix === 128) return formatV6(scratch);
  maskBytes(scratch, prefix);
  return `${formatV6(scratch)}/${prefix}`;
}
