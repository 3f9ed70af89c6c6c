/**
 * permessage-deflate (RFC 7692): the negotiation of the
 * `Sec-WebSocket-Extensions` header on both sides, and the compressor and
 * decompressor of message payloads.
 *
 * What the engine does with it (RFC 7692 §6, §7.2):
 * - a compressed message has RSV1 on its first frame only; its payload is
 *   {@linkcode DeflateContext.compress}'s output, cut into frames as usual;
 * - a received message with RSV1 goes, all fragments at once, through
 *   {@linkcode DeflateContext.decompress} with the `maxPayload` limit, which
 *   counts inflated bytes;
 * - `ERR_WS_MESSAGE_TOO_BIG` (close 1009) and `ERR_WS_INVALID_DEFLATE`
 *   (close 1007) come out of `decompress` as {@linkcode WebSocketError}s.
 *
 * Why synchronous: Deno's `node:zlib` runs its "asynchronous" stream API on
 * the calling thread as well (during a 32 MiB stream write a 1 ms interval
 * fired once in a whole second), so the callbacks `ws` needs on Node buy no
 * parallelism here; they cost a promise per message (the stream path
 * measured 1.1–1.4× slower on 1 KiB messages) and force a per-connection
 * queue to keep messages in order. Each context drives one zlib stream
 * through its handle's `writeSync` — what Node's own `zlib.deflateRawSync`
 * does inside — which keeps the LZ77 window between messages (context
 * takeover), caps the output exactly (inflation never goes past
 * `maxPayload + 1` bytes), and makes one native call per 64 KiB of output.
 * The price is the event loop: a 1 MiB message costs ~3 ms to compress at
 * level 1 and ~1.5 ms to inflate, in one go (the stream path blocks as
 * long, in pieces).
 *
 * @module
 */
import zlib from "node:zlib";
import { DEFAULT_MAX_PAYLOAD } from "./constants.ts";
import { HandshakeError, WebSocketError } from "../errors.ts";

/** The extension's registered name. */
const NAME = "permessage-deflate";
const { Z_SYNC_FLUSH } = zlib.constants;
/** What RFC 7692 §7.2.1 strips from each compressed message and §7.2.2 puts back. */
const TRAILER = new Uint8Array([0x00, 0x00, 0xff, 0xff]);
/** `8`..`15` written without leading zeros (RFC 7692 §7.1.2.1's ABNF). */
const WINDOW_BITS = /^(?:[89]|1[0-5])$/;

// ---------------------------------------------------------------------------
// Sec-WebSocket-Extensions syntax (RFC 6455 §9.1 with RFC 7230's list rules).

/** One `name[=value]` parameter of an extension in a `Sec-WebSocket-Extensions` header. */
export interface ExtensionParam {
  /** The parameter's name, lowercased. */
  name: string;
  /** Its value (a quoted string already unquoted), or `undefined` when it had none. */
  value: string | undefined;
}

/** One extension (an offer, or a server's answer) in a `Sec-WebSocket-Extensions` header. */
export interface ExtensionOffer {
  /** The extension's name, lowercased, e.g. `"permessage-deflate"`. */
  name: string;
  /** Its parameters in the order they came, duplicates kept (a duplicate makes an offer invalid). */
  params: ExtensionParam[];
}

function isTchar(c: number): boolean {
  // RFC 7230 §3.2.6 tchar: ALPHA / DIGIT / "!#$%&'*+-.^_`|~"
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39) ||
    "!#$%&'*+-.^_`|~".includes(String.fromCharCode(c));
}

function syntaxError(header: string, at: number, what: string): HandshakeError {
  return new HandshakeError(
    "ERR_WS_BAD_EXTENSIONS_HEADER",
    `malformed Sec-WebSocket-Extensions header at character ${at}: ${what} ` +
      `(${JSON.stringify(header.length > 200 ? header.slice(0, 200) + "…" : header)}); ` +
      `extensions are "name; param=value, name2" with tokens or quoted tokens`,
    400,
  );
}

/**
 * Parses a `Sec-WebSocket-Extensions` header value into its extensions, in
 * order. Several header lines are one value joined with `", "` (what
 * `Headers.get` returns). Empty list elements (`"a, , b"`) are skipped as
 * RFC 7230 §7 allows; `null` or an empty value gives `[]`.
 *
 * Names are lowercased; values are kept as sent. A quoted value is
 * unquoted and must then be a token (RFC 6455 §9.1).
 *
 * @param header The header's value, or `null` when it is absent.
 * @returns The extensions, in the order they came.
 * @throws {HandshakeError} `ERR_WS_BAD_EXTENSIONS_HEADER` (status 400) when
 *   the value is not valid syntax. A server may answer 400 (as `ws` does)
 *   or go on without extensions; a client fails the connection.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseExtensions } from "./permessage_deflate.ts";
 *
 * const offers = parseExtensions(
 *   'permessage-deflate; server_max_window_bits="10", permessage-deflate',
 * );
 * assert.deepEqual(offers, [
 *   { name: "permessage-deflate", params: [{ name: "server_max_window_bits", value: "10" }] },
 *   { name: "permessage-deflate", params: [] },
 * ]);
 * assert.throws(() => parseExtensions("permessage-deflate; a=b=c"), {
 *   code: "ERR_WS_BAD_EXTENSIONS_HEADER",
 * });
 * ```
 */
export function parseExtensions(header: string | null): ExtensionOffer[] {
  const out: ExtensionOffer[] = [];
  if (header === null) return out;
  const s = header;
  const n = s.length;
  let i = 0;
  const ows = () => {
    while (i < n && (s[i] === " " || s[i] === "\t")) i++;
  };
  const token = (what: string): string => {
    const start = i;
    while (i < n && isTchar(s.charCodeAt(i))) i++;
    if (i === start) throw syntaxError(s, i, `expected ${what}`);
    return s.slice(start, i);
  };
  const quoted = (): string => {
    let value = "";
    i++; // the opening DQUOTE
    for (;;) {
      if (i >= n) throw syntaxError(s, i, "unterminated quoted string");
      const c = s[i++];
      if (c === '"') break;
      if (c === "\\") {
        if (i >= n) throw syntaxError(s, i, "unterminated quoted string");
        value += s[i++];
      } else {
        value += c;
      }
    }
    if (value === "" || ![...value].every((ch) => isTchar(ch.charCodeAt(0)))) {
      throw syntaxError(s, i, "a quoted value must be a token once unquoted");
    }
    return value;
  };
  for (;;) {
    // Skip empty list elements: `*( "," OWS )`.
    ows();
    while (i < n && s[i] === ",") {
      i++;
      ows();
    }
    if (i >= n) break;
    const offer: ExtensionOffer = { name: token("an extension name").toLowerCase(), params: [] };
    ows();
    while (i < n && s[i] === ";") {
      i++;
      ows();
      const name = token("a parameter name").toLowerCase();
      ows();
      let value: string | undefined;
      if (i < n && s[i] === "=") {
        i++;
        ows();
        value = s[i] === '"' ? quoted() : token(`a value for ${name}`);
        ows();
      }
      offer.params.push({ name, value });
    }
    out.push(offer);
    if (i < n && s[i] !== ",") throw syntaxError(s, i, `unexpected ${JSON.stringify(s[i])}`);
  }
  return out;
}

// ---------------------------------------------------------------------------
// Negotiation (RFC 7692 §7.1).

/**
 * What both ends agreed to for one connection: every field is filled in
 * (a window the header did not name is 15, i.e. 32 KiB).
 */
export interface DeflateParams {
  /** The server resets its compressor after every message. */
  serverNoContextTakeover: boolean;
  /** The client resets its compressor after every message. */
  clientNoContextTakeover: boolean;
  /** The largest LZ77 window (log2 bytes, 8..15) the server compresses with. */
  serverMaxWindowBits: number;
  /** The largest LZ77 window (log2 bytes, 8..15) the client compresses with. */
  clientMaxWindowBits: number;
}

/**
 * permessage-deflate settings, one object for both ends (as `ws`'s
 * `perMessageDeflate`): the negotiation reads the first four fields, a
 * {@linkcode DeflateContext} made with {@linkcode deflateContextOptions}
 * the last three.
 */
export interface DeflateOptions {
  /**
   * Server: always answer `server_no_context_takeover` (compress every
   * message on its own — what a compressor shared by many connections
   * needs); when `false` it is still honoured when a client asks for it.
   * Client: ask for it in the offer (the server must then agree).
   * @default {false}
   */
  serverNoContextTakeover?: boolean;
  /**
   * Server: always answer `client_no_context_takeover` (the client resets,
   * so the server's decompressor keeps no window between messages and may
   * be shared); when `false` it is echoed when a client offers it.
   * Client: offer it (a server may impose it even when not offered).
   * @default {false}
   */
  clientNoContextTakeover?: boolean;
  /**
   * Server: the largest window it compresses with; it answers the smaller of
   * this and what the client asked for. Client: ask for this window (the
   * server may answer a smaller one, never a larger one). `8` is accepted
   * but compressed with 9, see {@linkcode DeflateContextOptions.windowBits}.
   * @default {15}
   */
  serverMaxWindowBits?: number;
  /**
   * Server: a number caps the client's window (bounding this end's
   * decompressor memory); offers that do not let the server choose it (no
   * `client_max_window_bits`) are then declined. `true` (or absent) leaves
   * the client's window alone. Client: `true` offers the parameter without a
   * value (the server may choose), a number offers it with that value (the
   * client will use at most that), `false` leaves it out.
   * @default {true}
   */
  clientMaxWindowBits?: number | boolean;
  /** Messages shorter than this many bytes are sent uncompressed. @default {1024} */
  threshold?: number;
  /** zlib compression level, 0..9 (see {@linkcode DeflateContextOptions.level}). @default {1} */
  level?: number;
  /** zlib memLevel, 1..9: memory for the match finder (see {@linkcode DeflateContextOptions.memLevel}). @default {8} */
  memLevel?: number;
}

/** A server's answer to an accepted offer: the header value to send and what was agreed. */
export interface DeflateNegotiation {
  /** The `Sec-WebSocket-Extensions` value for the 101 response. */
  response: string;
  /** What was agreed. */
  params: DeflateParams;
}

function checkBits(name: string, value: number | undefined): void {
  if (value !== undefined && !(Number.isInteger(value) && value >= 8 && value <= 15)) {
    throw new RangeError(`${name} must be an integer from 8 to 15, got ${value}`);
  }
}

function checkOptions(options: DeflateOptions): void {
  checkBits("serverMaxWindowBits", options.serverMaxWindowBits);
  if (typeof options.clientMaxWindowBits === "number") {
    checkBits("clientMaxWindowBits", options.clientMaxWindowBits);
  }
}

/** One offer read into values; `undefined` when this end must decline it. */
interface ReadOffer {
  serverNoContextTakeover: boolean;
  clientNoContextTakeover: boolean;
  serverMaxWindowBits: number | undefined;
  clientMaxWindowBits: number | true | undefined;
}

/** Reads a permessage-deflate offer's parameters, or returns why it is invalid. */
function readParams(params: readonly ExtensionParam[], isOffer: boolean): ReadOffer | string {
  const out: ReadOffer = {
    serverNoContextTakeover: false,
    clientNoContextTakeover: false,
    serverMaxWindowBits: undefined,
    clientMaxWindowBits: undefined,
  };
  const seen = new Set<string>();
  for (const { name, value } of params) {
    if (seen.has(name)) return `the parameter ${name} appears twice`;
    seen.add(name);
    switch (name) {
      case "server_no_context_takeover":
      case "client_no_context_takeover":
        if (value !== undefined) return `${name} takes no value, got "${value}"`;
        if (name === "server_no_context_takeover") out.serverNoContextTakeover = true;
        else out.clientNoContextTakeover = true;
        break;
      case "server_max_window_bits":
      case "client_max_window_bits": {
        // Only an offer's client_max_window_bits may come without a value.
        if (value === undefined && isOffer && name === "client_max_window_bits") {
          out.clientMaxWindowBits = true;
          break;
        }
        if (value === undefined || !WINDOW_BITS.test(value)) {
          return `${name} must be 8 to 15, got ${value === undefined ? "no value" : `"${value}"`}`;
        }
        if (name === "server_max_window_bits") out.serverMaxWindowBits = Number(value);
        else out.clientMaxWindowBits = Number(value);
        break;
      }
      default:
        return `unknown parameter ${name}`;
    }
  }
  return out;
}

/**
 * The server's side of the negotiation: picks the first permessage-deflate
 * offer it can honour, in the client's order (RFC 7692 §5.1), and says what
 * to answer. Offers of other extensions are skipped; an offer with an
 * unknown or repeated parameter or a bad value is declined and the next one
 * is tried. `null` means no offer can be accepted: the handshake goes on
 * without the extension — it never fails for this.
 *
 * The answer: `server_no_context_takeover` when asked or configured;
 * `client_no_context_takeover` when offered or configured;
 * `server_max_window_bits` = the smaller of the offer's and
 * `options.serverMaxWindowBits`, named whenever either was given;
 * `client_max_window_bits` only when the offer had it (RFC 7692 §7.1.2.2),
 * with the smaller of the offer's value and `options.clientMaxWindowBits`.
 *
 * @param offers The client's extensions, from {@linkcode parseExtensions}.
 * @param options The server's settings.
 * @returns The response header value and the agreed parameters, or `null`.
 * @throws {RangeError} When `options` holds a window outside 8..15.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { negotiateDeflate, parseExtensions } from "./permessage_deflate.ts";
 *
 * // What Chromium and Firefox send.
 * const offers = parseExtensions("permessage-deflate; client_max_window_bits");
 * const agreed = negotiateDeflate(offers, { serverNoContextTakeover: true });
 * assert.equal(agreed?.response, "permessage-deflate; server_no_context_takeover");
 * assert.deepEqual(agreed?.params, {
 *   serverNoContextTakeover: true,
 *   clientNoContextTakeover: false,
 *   serverMaxWindowBits: 15,
 *   clientMaxWindowBits: 15,
 * });
 * // A first offer with an unknown parameter is declined; the fallback is taken.
 * const fallback = negotiateDeflate(
 *   parseExtensions("permessage-deflate; x_foo, permessage-deflate; server_max_window_bits=10"),
 * );
 * assert.equal(fallback?.response, "permessage-deflate; server_max_window_bits=10");
 * assert.equal(negotiateDeflate(parseExtensions("x-webkit-deflate-frame")), null);
 * ```
 */
export function negotiateDeflate(
  offers: readonly ExtensionOffer[],
  options: DeflateOptions = {},
): DeflateNegotiation | null {
  checkOptions(options);
  const serverLimit = options.serverMaxWindowBits ?? 15;
  const clientLimit = typeof options.clientMaxWindowBits === "number"
    ? options.clientMaxWindowBits
    : undefined;
  for (const offer of offers) {
    if (offer.name !== NAME) continue;
    const read = readParams(offer.params, true);
    if (typeof read === "string") continue;
    // A cap on the client's window needs the client's consent to be told one.
    if (clientLimit !== undefined && read.clientMaxWindowBits === undefined) continue;
    const params: DeflateParams = {
      serverNoContextTakeover: read.serverNoContextTakeover ||
        options.serverNoContextTakeover === true,
      clientNoContextTakeover: read.clientNoContextTakeover ||
        options.clientNoContextTakeover === true,
      serverMaxWindowBits: Math.min(read.serverMaxWindowBits ?? 15, serverLimit),
      clientMaxWindowBits: 15,
    };
    let response = NAME;
    if (params.serverNoContextTakeover) response += "; server_no_context_takeover";
    if (params.clientNoContextTakeover) response += "; client_no_context_takeover";
    if (read.serverMaxWindowBits !== undefined || serverLimit < 15) {
      response += `; server_max_window_bits=${params.serverMaxWindowBits}`;
    }
    if (read.clientMaxWindowBits !== undefined) {
      const offered = read.clientMaxWindowBits === true ? 15 : read.clientMaxWindowBits;
      params.clientMaxWindowBits = Math.min(offered, clientLimit ?? 15);
      // A bare offer with no cap here: say nothing, the client keeps 15.
      if (read.clientMaxWindowBits !== true || clientLimit !== undefined) {
        response += `; client_max_window_bits=${params.clientMaxWindowBits}`;
      }
    }
    return { response, params };
  }
  return null;
}

/**
 * The client's offer: the `Sec-WebSocket-Extensions` value to send. With no
 * options it is `"permessage-deflate; client_max_window_bits"`, what
 * browsers and `ws` send.
 *
 * @param options The client's settings.
 * @returns The header value.
 * @throws {RangeError} When `options` holds a window outside 8..15.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatDeflateOffer } from "./permessage_deflate.ts";
 *
 * assert.equal(formatDeflateOffer(), "permessage-deflate; client_max_window_bits");
 * assert.equal(
 *   formatDeflateOffer({ serverNoContextTakeover: true, serverMaxWindowBits: 10 }),
 *   "permessage-deflate; server_no_context_takeover; server_max_window_bits=10; " +
 *     "client_max_window_bits",
 * );
 * ```
 */
export function formatDeflateOffer(options: DeflateOptions = {}): string {
  checkOptions(options);
  let offer = NAME;
  if (options.serverNoContextTakeover) offer += "; server_no_context_takeover";
  if (options.clientNoContextTakeover) offer += "; client_no_context_takeover";
  if (options.serverMaxWindowBits !== undefined) {
    offer += `; server_max_window_bits=${options.serverMaxWindowBits}`;
  }
  const cmwb = options.clientMaxWindowBits ?? true;
  if (cmwb === true) offer += "; client_max_window_bits";
  else if (cmwb !== false) offer += `; client_max_window_bits=${cmwb}`;
  return offer;
}

function badResponse(header: string, why: string): HandshakeError {
  return new HandshakeError(
    "ERR_WS_BAD_EXTENSION_RESPONSE",
    `the server's Sec-WebSocket-Extensions answer ${JSON.stringify(header)} is not acceptable: ` +
      `${why}; the connection must be failed (RFC 7692 §5) — connect without compression ` +
      `or fix the server`,
    101,
  );
}

/**
 * The client's check of the server's answer to {@linkcode formatDeflateOffer}
 * made with the same `options`. An absent or empty header means the server
 * declined: `null`, and the connection goes on uncompressed. Anything the
 * client did not offer — another extension, two extensions, an unknown or
 * repeated parameter, a bad value, a window larger than asked, a
 * `client_max_window_bits` that was not offered, or a requested
 * `server_no_context_takeover`/`server_max_window_bits` left out — is an
 * error, and the client must fail the connection (RFC 7692 §5).
 *
 * @param header The response's `Sec-WebSocket-Extensions` value, or `null`.
 * @param options The client's settings, as given to `formatDeflateOffer`.
 * @returns The agreed parameters, or `null` when the server declined.
 * @throws {HandshakeError} `ERR_WS_BAD_EXTENSION_RESPONSE` (status 101).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { acceptDeflateResponse } from "./permessage_deflate.ts";
 *
 * const params = acceptDeflateResponse(
 *   "permessage-deflate; server_no_context_takeover; client_max_window_bits=10",
 * );
 * assert.deepEqual(params, {
 *   serverNoContextTakeover: true,
 *   clientNoContextTakeover: false,
 *   serverMaxWindowBits: 15,
 *   clientMaxWindowBits: 10,
 * });
 * assert.equal(acceptDeflateResponse(null), null);
 * assert.throws(() => acceptDeflateResponse("permessage-deflate; client_max_window_bits=10", {
 *   clientMaxWindowBits: false,
 * }), { code: "ERR_WS_BAD_EXTENSION_RESPONSE" });
 * ```
 */
export function acceptDeflateResponse(
  header: string | null,
  options: DeflateOptions = {},
): DeflateParams | null {
  checkOptions(options);
  if (header === null) return null;
  let extensions: ExtensionOffer[];
  try {
    extensions = parseExtensions(header);
  } catch (err) {
    throw badResponse(header, (err as Error).message);
  }
  if (extensions.length === 0) return null;
  if (extensions.length > 1) throw badResponse(header, "it selects more than one extension");
  const [ext] = extensions;
  if (ext.name !== NAME) throw badResponse(header, `"${ext.name}" was not offered`);
  const read = readParams(ext.params, false);
  if (typeof read === "string") throw badResponse(header, read);
  const askedServerBits = options.serverMaxWindowBits;
  if (options.serverNoContextTakeover && !read.serverNoContextTakeover) {
    throw badResponse(header, "server_no_context_takeover was asked for and not agreed");
  }
  if (askedServerBits !== undefined) {
    if (read.serverMaxWindowBits === undefined) {
      throw badResponse(header, `server_max_window_bits=${askedServerBits} was asked for`);
    }
    if (read.serverMaxWindowBits > askedServerBits) {
      throw badResponse(
        header,
        `server_max_window_bits=${read.serverMaxWindowBits} is over the ${askedServerBits} asked for`,
      );
    }
  }
  const offeredClientBits = options.clientMaxWindowBits ?? true;
  let clientBits = typeof offeredClientBits === "number" ? offeredClientBits : 15;
  if (read.clientMaxWindowBits !== undefined) {
    // readParams gave a number: a response's windows always carry values.
    const answered = read.clientMaxWindowBits as number;
    if (offeredClientBits === false) {
      throw badResponse(header, "client_max_window_bits was not offered");
    }
    if (answered > clientBits) {
      throw badResponse(
        header,
        `client_max_window_bits=${answered} is over the ${clientBits} offered`,
      );
    }
    clientBits = answered;
  }
  return {
    serverNoContextTakeover: read.serverNoContextTakeover,
    clientNoContextTakeover: read.clientNoContextTakeover,
    serverMaxWindowBits: read.serverMaxWindowBits ?? 15,
    clientMaxWindowBits: clientBits,
  };
}

// ---------------------------------------------------------------------------
// Compression (RFC 7692 §7.2).

/** Options for one {@linkcode DeflateContext}. */
export interface DeflateContextOptions {
  /**
   * The LZ77 window, log2 bytes (8..15). `compress` uses at most this
   * window; `decompress` accepts streams made with at most this window.
   * zlib cannot make a raw deflate stream with an 8-bit window, so 8
   * compresses with 9 (as Node's zlib and so `ws` do): zlib's 9-bit
   * compressor never reaches back more than 250 bytes, which a peer's
   * 256-byte window holds, so the agreement is kept.
   * @default {15}
   */
  windowBits?: number;
  /**
   * Reset after every message (the `*_no_context_takeover` parameters).
   * Then each message is compressed on its own, the output depends only on
   * the input, and one context can serve any number of connections.
   * @default {false}
   */
  noContextTakeover?: boolean;
  /**
   * zlib compression level, 0..9. 1 is the default: on 1 KiB JSON-like
   * messages it took 5.4 µs for 33 % of the input with context takeover
   * (5.2 µs, 50 % without), where zlib's usual 6 took 19.6 µs for 22 %
   * (20.5 µs, 39 %): ~4× the CPU for ~1.3–1.5× less output. A per-connection
   * compressor pays that per subscriber; a compressor shared by many
   * connections runs once per broadcast, where a higher level costs little.
   * @default {1}
   */
  level?: number;
  /**
   * zlib memLevel, 1..9: sizes the compressor's buffers. Deno's zlib is
   * zlib-ng, whose hash table is a fixed 128 KiB whatever memLevel says, so
   * lowering it saved no measurable memory; `windowBits` is the lever.
   * @default {8}
   */
  memLevel?: number;
  /** Messages shorter than this are not worth compressing ({@linkcode DeflateContext.shouldCompress}). @default {1024} */
  threshold?: number;
}

/**
 * The two context options of one connection from what was agreed: `send`
 * for its compressor, `receive` for its decompressor. `level`, `memLevel`
 * and `threshold` come from `options`.
 *
 * @param params What was negotiated.
 * @param role Which end this connection is.
 * @param options The settings `level`, `memLevel` and `threshold` are read from.
 * @returns The options for `new DeflateContext(...)` per direction.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { deflateContextOptions } from "./permessage_deflate.ts";
 *
 * const params = {
 *   serverNoContextTakeover: true,
 *   clientNoContextTakeover: false,
 *   serverMaxWindowBits: 15,
 *   clientMaxWindowBits: 10,
 * };
 * const { send, receive } = deflateContextOptions(params, "server");
 * assert.equal(send.noContextTakeover, true);
 * assert.equal(receive.windowBits, 10);
 * ```
 */
export function deflateContextOptions(
  params: DeflateParams,
  role: "server" | "client",
  options: DeflateOptions = {},
): { send: DeflateContextOptions; receive: DeflateContextOptions } {
  const server = role === "server";
  const shared = { level: options.level, memLevel: options.memLevel, threshold: options.threshold };
  return {
    send: {
      ...shared,
      windowBits: server ? params.serverMaxWindowBits : params.clientMaxWindowBits,
      noContextTakeover: server ? params.serverNoContextTakeover : params.clientNoContextTakeover,
    },
    receive: {
      ...shared,
      windowBits: server ? params.clientMaxWindowBits : params.serverMaxWindowBits,
      noContextTakeover: server ? params.clientNoContextTakeover : params.serverNoContextTakeover,
    },
  };
}

/** The parts of a `node:zlib` stream this module drives (Node's own sync path uses the same). */
interface ZlibHandle {
  writeSync(
    flush: number,
    input: Uint8Array,
    inOff: number,
    inLen: number,
    out: Uint8Array,
    outOff: number,
    outLen: number,
  ): void;
  reset(): void;
  onerror: (message: string, errno: number) => void;
}
interface ZlibStream {
  _handle: ZlibHandle | null;
  /** `[avail_out, avail_in]` after each write. */
  _writeState: Uint32Array;
  close(): void;
}

/** One zlib stream with its errors caught synchronously instead of emitted later. */
class Zstream {
  readonly stream: ZlibStream;
  readonly handle: ZlibHandle;
  readonly state: Uint32Array;
  error: string | null = null;

  constructor(stream: unknown) {
    this.stream = stream as ZlibStream;
    const handle = this.stream._handle;
    if (!handle || typeof handle.writeSync !== "function" || !this.stream._writeState) {
      this.stream.close();
      throw new WebSocketError(
        "ERR_WS_DEFLATE_UNAVAILABLE",
        "this runtime's node:zlib lacks the synchronous stream handle permessage-deflate needs; " +
          "run without compression or use a Deno release whose node:zlib has it",
        1011,
      );
    }
    this.handle = handle;
    this.state = this.stream._writeState;
    // zlib reports errors through this callback, during writeSync. Node's
    // default destroys the stream on the next tick and emits 'error'; here the
    // error is read right after the call and the stream is reset instead.
    handle.onerror = (message: string) => {
      this.error = message;
    };
  }

  /**
   * Runs `inLen` bytes of `input` from `inOff` through zlib with a sync
   * flush, into `scratch` from `outOff`, at most `outLen` bytes; `state` then
   * says what is left of each, `error` whether it failed.
   */
  write(input: Uint8Array, inOff: number, inLen: number, outOff: number, outLen: number): void {
    try {
      this.handle.writeSync(Z_SYNC_FLUSH, input, inOff, inLen, scratch, outOff, outLen);
    } catch (err) {
      // Today errors come through onerror; a runtime that throws instead
      // still ends up as the same typed error.
      this.error ??= err instanceof Error ? err.message : String(err);
    }
  }
}

// A context dropped without close() would keep its native zlib memory forever
// (measured: 1,000 dropped compressors = +200 MiB per round, never returned);
// the registry closes the stream once its context is collected. close() stays
// the rule: collection may come much later.
const finalizer = new FinalizationRegistry<ZlibStream>((stream) => stream.close());

/** Output space shared by every context: calls are synchronous, so one buffer serves all. */
const scratch = new Uint8Array(64 * 1024);

/** The first `n` bytes of scratch in a new array (new + set measured faster than slice). */
function copyScratch(n: number): Uint8Array {
  const out = new Uint8Array(n);
  out.set(scratch.subarray(0, n));
  return out;
}

/** The first `total` bytes of `parts` followed by `last`, in one new array. */
function join(parts: readonly Uint8Array[], last: Uint8Array, total: number): Uint8Array {
  const out = new Uint8Array(total);
  let off = 0;
  for (const p of [...parts, last]) {
    const n = Math.min(p.length, total - off);
    out.set(n === p.length ? p : p.subarray(0, n), off);
    off += n;
  }
  return out;
}

function checkRange(name: string, value: number, min: number, max: number): void {
  if (!(Number.isInteger(value) && value >= min && value <= max)) {
    throw new RangeError(`${name} must be an integer from ${min} to ${max}, got ${value}`);
  }
}

/**
 * A permessage-deflate compressor and decompressor: one per connection and
 * direction (context takeover keeps each direction's LZ77 window between
 * messages), or one for many connections when there is no context takeover
 * (each message is compressed on its own, so the same input always gives
 * the same bytes: compress a broadcast once, send it to every subscriber).
 *
 * The zlib streams are created on first use — a context used only to
 * compress never allocates a decompressor — and freed by
 * {@linkcode DeflateContext.close}; call it when the connection ends (a
 * context merely dropped is closed only when the garbage collector gets to
 * it). Measured RSS per context over 1,000 contexts (Deno 2.9, zlib-ng):
 *
 * | windowBits | compressor: first message / window full | decompressor: idle / window full |
 * | --- | --- | --- |
 * | 15 | 215 KiB / 287 KiB | 11 KiB / 64 KiB |
 * | 12 | — / 171 KiB | — / 37 KiB |
 * | 10 | — / 164 KiB | — / 34 KiB |
 *
 * So a connection with its own context each way costs ~350 KiB at the
 * default window, ~200 KiB at 10; with no context takeover both ways one
 * compressor and one decompressor can serve every connection.
 *
 * Every call is synchronous and runs to completion, so one context can be
 * shared by connections without any locking.
 *
 * @example A round trip, with the context kept between messages
 * ```ts
 * import assert from "node:assert/strict";
 * import { DeflateContext } from "./permessage_deflate.ts";
 *
 * using sender = new DeflateContext();
 * using receiver = new DeflateContext();
 * const message = crypto.getRandomValues(new Uint8Array(1500)); // incompressible alone
 * assert.equal(sender.shouldCompress(message.length), true);
 * const first = sender.compress(message);
 * const second = sender.compress(message); // the window still holds the first copy
 * assert.ok(first.length > 1500 && second.length < 40);
 * assert.deepEqual(receiver.decompress(first), message);
 * assert.deepEqual(receiver.decompress(second), message);
 * ```
 */
export class DeflateContext {
  /** The window in log2 bytes (8..15) as asked; 8 compresses with 9. */
  readonly windowBits: number;
  /** Whether the context is reset after every message. */
  readonly noContextTakeover: boolean;
  /** zlib level. */
  readonly level: number;
  /** zlib memLevel. */
  readonly memLevel: number;
  /** Messages shorter than this are not worth compressing. */
  readonly threshold: number;
  #deflate: Zstream | null = null;
  #inflate: Zstream | null = null;
  #closed = false;

  /**
   * Makes a context; no zlib memory is taken until the first call.
   *
   * @param options The window, takeover, level, memLevel and threshold.
   * @throws {RangeError} For an option out of range.
   */
  constructor(options: DeflateContextOptions = {}) {
    this.windowBits = options.windowBits ?? 15;
    this.noContextTakeover = options.noContextTakeover ?? false;
    this.level = options.level ?? 1;
    this.memLevel = options.memLevel ?? 8;
    this.threshold = options.threshold ?? 1024;
    checkRange("windowBits", this.windowBits, 8, 15);
    checkRange("level", this.level, 0, 9);
    checkRange("memLevel", this.memLevel, 1, 9);
    if (!(this.threshold >= 0)) throw new RangeError("threshold must be 0 or more");
  }

  /**
   * Whether a message of this size should be compressed: at least
   * `threshold` bytes. Smaller ones go out as they are, RSV1 clear; that
   * leaves the context untouched, so it is also right with context takeover.
   *
   * @param byteLength The message's size in bytes.
   * @returns `byteLength >= threshold`.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { DeflateContext } from "./permessage_deflate.ts";
   *
   * const ctx = new DeflateContext({ threshold: 100 });
   * assert.equal(ctx.shouldCompress(99), false);
   * assert.equal(ctx.shouldCompress(100), true);
   * ```
   */
  shouldCompress(byteLength: number): boolean {
    return byteLength >= this.threshold;
  }

  #stream(kind: "deflate" | "inflate"): Zstream {
    if (this.#closed) {
      throw new WebSocketError(
        "ERR_WS_DEFLATE_CLOSED",
        "this DeflateContext was closed; make a new one per connection",
        1011,
      );
    }
    const existing = kind === "deflate" ? this.#deflate : this.#inflate;
    if (existing !== null) return existing;
    const z = new Zstream(
      kind === "deflate"
        ? zlib.createDeflateRaw({
          level: this.level,
          memLevel: this.memLevel,
          // zlib rejects 8 for raw deflate; its 9 never reaches past 250 bytes.
          windowBits: Math.max(this.windowBits, 9),
          // The stream's own output buffer is never used: keep it minimal.
          chunkSize: 64,
        })
        : zlib.createInflateRaw({ windowBits: this.windowBits, chunkSize: 64 }),
    );
    finalizer.register(this, z.stream, z);
    if (kind === "deflate") this.#deflate = z;
    else this.#inflate = z;
    return z;
  }

  /**
   * Compresses one whole message: raw deflate, flushed with Z_SYNC_FLUSH,
   * the trailing `00 00 ff ff` removed (RFC 7692 §7.2.1). With no context
   * takeover the compressor is reset afterwards. An empty message gives the
   * single byte `00` (§7.2.3.6).
   *
   * @param data The message's payload.
   * @returns A new array, owned by the caller: the payload of the frame(s)
   *   with RSV1 set on the first.
   * @throws {WebSocketError} `ERR_WS_DEFLATE_CLOSED` after {@linkcode close}.
   *
   * @example The shared-compressor property
   * ```ts
   * import assert from "node:assert/strict";
   * import { DeflateContext } from "./permessage_deflate.ts";
   *
   * using shared = new DeflateContext({ noContextTakeover: true });
   * const message = new TextEncoder().encode("tick ".repeat(400));
   * assert.deepEqual(shared.compress(message), shared.compress(message));
   * assert.deepEqual(shared.compress(new Uint8Array(0)), new Uint8Array([0]));
   * ```
   */
  compress(data: Uint8Array): Uint8Array {
    const z = this.#stream("deflate");
    // zlib emits nothing for a second flush with no new input (Z_BUF_ERROR),
    // so the empty message is written by hand: an empty stored block's
    // header bits, which the peer completes with 00 00 ff ff (§7.2.3.6).
    // The window is untouched, as it would be by zlib.
    if (data.byteLength === 0) return new Uint8Array(1);
    const parts: Uint8Array[] = [];
    let produced = 0;
    let inOff = 0;
    let inLen = data.byteLength;
    for (;;) {
      z.write(data, inOff, inLen, 0, scratch.length);
      if (z.error !== null) {
        const message = z.error;
        z.error = null;
        z.handle.reset();
        throw new WebSocketError("ERR_WS_DEFLATE", `compression failed: ${message}`, 1011);
      }
      const availOut = z.state[0];
      const availIn = z.state[1];
      const have = scratch.length - availOut;
      produced += have;
      inOff += inLen - availIn;
      inLen = availIn;
      // A sync flush is complete once zlib returns with output space left.
      if (availOut !== 0) break;
      parts.push(copyScratch(have));
    }
    if (this.noContextTakeover) z.handle.reset();
    // Z_SYNC_FLUSH always ends with the empty stored block 00 00 ff ff.
    const length = produced - TRAILER.length;
    return parts.length === 0 ? copyScratch(length) : join(parts, scratch, length);
  }

  /**
   * Decompresses one whole message: its compressed fragments in order (or
   * one array), then `00 00 ff ff` (RFC 7692 §7.2.2). Inflation stops as
   * soon as the output would pass `maxPayload`, so a decompression bomb costs
   * at most `maxPayload` bytes of work and memory. With no context takeover,
   * or when the peer ended its stream (a final block), the decompressor is
   * reset afterwards; after an error it is reset too, so a shared
   * decompressor keeps serving the other connections.
   *
   * @param data The compressed payload: one array or the fragments in order.
   * @param maxPayload The most bytes the message may inflate to. @default {1048576}
   * @returns A new array with the message, owned by the caller.
   * @throws {WebSocketError} `ERR_WS_MESSAGE_TOO_BIG` (`closeCode` 1009)
   *   past `maxPayload`; `ERR_WS_INVALID_DEFLATE` (`closeCode` 1007) for a
   *   corrupt stream; `ERR_WS_DEFLATE_CLOSED` after {@linkcode close}.
   * @throws {RangeError} When `maxPayload` is negative or NaN.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { DeflateContext } from "./permessage_deflate.ts";
   *
   * using ctx = new DeflateContext({ noContextTakeover: true });
   * const big = ctx.compress(new Uint8Array(100_000));
   * assert.deepEqual(ctx.decompress([big.subarray(0, 10), big.subarray(10)]), new Uint8Array(100_000));
   * assert.throws(() => ctx.decompress(big, 65_536), { code: "ERR_WS_MESSAGE_TOO_BIG", closeCode: 1009 });
   * assert.throws(() => ctx.decompress(new Uint8Array([0xff, 0xff])), {
   *   code: "ERR_WS_INVALID_DEFLATE",
   *   closeCode: 1007,
   * });
   * ```
   */
  decompress(
    data: Uint8Array | readonly Uint8Array[],
    maxPayload: number = DEFAULT_MAX_PAYLOAD,
  ): Uint8Array {
    if (!(maxPayload >= 0)) throw new RangeError("maxPayload must be 0 or more");
    const chunks: readonly Uint8Array[] = data instanceof Uint8Array ? [data] : data;
    let inputLength = 0;
    for (const c of chunks) inputLength += c.byteLength;
    // An empty payload holds no deflate block at all; feeding it the trailer
    // alone would leave the stream inside a stored block. It is an empty message.
    if (inputLength === 0) {
      if (this.#closed) this.#stream("inflate"); // throws ERR_WS_DEFLATE_CLOSED
      return new Uint8Array(0);
    }
    const z = this.#stream("inflate");
    const parts: Uint8Array[] = [];
    let produced = 0; // bytes inflated so far, the budget's measure
    let outOff = 0; // where the next bytes go in scratch
    let ended = false;
    try {
      for (let c = 0; c <= chunks.length; c++) {
        if (ended) break;
        const input = c < chunks.length ? chunks[c] : TRAILER;
        let inOff = 0;
        let inLen = input.byteLength;
        for (;;) {
          // Never offer zlib more room than maxPayload + 1: one byte over is
          // enough to know, and no more is inflated.
          const room = Math.min(scratch.length - outOff, maxPayload + 1 - produced);
          z.write(input, inOff, inLen, outOff, room);
          if (z.error !== null) {
            throw new WebSocketError(
              "ERR_WS_INVALID_DEFLATE",
              `a compressed message is not a valid deflate stream (${z.error}); ` +
                "the peer's compressor is broken or the data was corrupted",
              1007,
            );
          }
          const availOut = z.state[0];
          const availIn = z.state[1];
          const have = room - availOut;
          outOff += have;
          produced += have;
          inOff += inLen - availIn;
          inLen = availIn;
          if (produced > maxPayload) {
            throw new WebSocketError(
              "ERR_WS_MESSAGE_TOO_BIG",
              `a compressed message inflates to more than maxPayload (${maxPayload} bytes); ` +
                "inflation stopped there — raise maxPayload if such messages are expected",
              1009,
            );
          }
          if (availOut !== 0) {
            // zlib wants more input; unread input with room to spare means
            // the stream ended (a final block): the rest is ignored.
            if (inLen !== 0) ended = true;
            break;
          }
          if (outOff === scratch.length) {
            parts.push(copyScratch(outOff));
            outOff = 0;
          }
        }
      }
    } catch (err) {
      z.error = null;
      z.handle.reset();
      throw err;
    }
    if (this.noContextTakeover || ended) z.handle.reset();
    return parts.length === 0 ? copyScratch(outOff) : join(parts, scratch, produced);
  }

  /** Frees the zlib streams; later calls throw `ERR_WS_DEFLATE_CLOSED`. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const z of [this.#deflate, this.#inflate]) {
      if (z === null) continue;
      finalizer.unregister(z);
      z.stream.close();
    }
    this.#deflate = null;
    this.#inflate = null;
  }

  /** Same as {@linkcode close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}
