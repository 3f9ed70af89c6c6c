// RESP2, the Redis protocol: commands out (arrays of bulk strings) and every
// reply type in, binary-safe, every read bounded. The reader is an
// incremental, synchronous parser (RespParser) fed with whatever chunks the
// socket gives: one await per chunk, not per reply, so a pipelined burst of
// thousands of replies is parsed in one go. Internal: the bus and the client
// are the public faces.
import { NetkitError } from "../errors.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** An error reply (`-ERR ...`): data, not an exception. */
export class RespError {
  constructor(readonly message: string) {}
}

/** A bulk string longer than the reader's limit: its bytes were read and discarded. */
export class OversizedBulk {
  constructor(readonly length: number) {}
}

/**
 * A reply: simple string (`string`), error ({@linkcode RespError}), integer
 * (`number`, or `bigint` beyond 2^53), bulk string (`Uint8Array`), null, or
 * an array of replies.
 */
export type RespValue =
  | string
  | number
  | bigint
  | Uint8Array
  | null
  | RespError
  | OversizedBulk
  | RespValue[];

/** The peer broke the protocol (or is not Redis at all), or a reply went over a limit. */
export class RespProtocolError extends NetkitError {
  /** The limit that was exceeded (`"maxLine"`, `"maxArray"`, `"maxDepth"`), if that is what happened. */
  readonly limit: string | undefined;
  constructor(message: string, limit?: string) {
    super("ERR_RESP_PROTOCOL", message);
    this.limit = limit;
  }
}

/** Limits of a {@linkcode RespReader}; every read is bounded by one of them. */
export interface RespLimits {
  /** The longest bulk string kept; longer ones are discarded and reported as {@linkcode OversizedBulk}. */
  maxBulk: number;
  /** The longest status, error or length line, CRLF included. @default {65536} */
  maxLine?: number;
  /** The most elements one array may have. @default {1024} */
  maxArray?: number;
  /** How deep arrays may nest (an array of arrays is 2). @default {4} */
  maxDepth?: number;
}

/** What {@linkcode RespParser.next} returns when the buffered bytes hold no complete reply yet. */
export const NEED_MORE: unique symbol = Symbol("netkit.resp.needMore");

const EMPTY = new Uint8Array(0);
// What #bulkBody returns for a bulk complete in the buffer (not copied yet).
const IN_BUF: unique symbol = Symbol("netkit.resp.inBuffer");
// A bulk this big or bigger that has not fully arrived is gathered in a
// buffer of its own size, so that chunks are copied once, not re-joined.
const GATHER_AT = 16 * 1024;

interface Frame {
  items: RespValue[];
  left: number;
}

/**
 * An incremental RESP2 reply parser: {@linkcode push} chunks as they come,
 * {@linkcode next} replies out. Partial replies are kept as state (the
 * arrays built so far, the bulk being gathered), so a reply split over any
 * number of chunks costs each byte one scan. Oversized bulks are skipped
 * as they stream by, in bounded memory.
 */
export class RespParser {
  #maxBulk: number;
  #maxLine: number;
  #maxArray: number;
  #maxDepth: number;
  // Bytes [pos, end) of buf are unparsed. buf is a chunk given to push (only
  // read, never written, and let go of before next returns NEED_MORE) or
  // the parser's own copy of a leftover, maybe joined with the next chunk.
  #buf: Uint8Array = EMPTY;
  #bufIsChunk = false;
  #pos = 0;
  #end = 0;
  // Arrays under construction, outermost first.
  #stack: Frame[] = [];
  // A bulk string whose header was parsed: -1 none. #gather holds it when
  // it is big (filled to #gathered), #skip counts an oversized one down.
  #bulkLength = -1;
  #gather: Uint8Array | undefined;
  #gathered = 0;
  #skip = 0;
  #broken: RespProtocolError | undefined;
  // The small bulks of the reply being parsed that are still in #buf (not
  // yet copied out): an empty placeholder in their array, and here that
  // array and, per bulk, [index in it, start in #buf, length]. #copyOut
  // copies the span they cover once and puts views of it in place: one
  // allocation per reply (or per buffer a reply spans), not one per bulk.
  #refItems: RespValue[][] = [];
  #refNums: number[] = [];
  // The bulk #bulkBody just found in #buf (when it returned IN_BUF).
  #bulkStart = 0;

  constructor(limits: RespLimits) {
    this.#maxBulk = limits.maxBulk;
    this.#maxLine = limits.maxLine ?? 65536;
    this.#maxArray = limits.maxArray ?? 1024;
    this.#maxDepth = limits.maxDepth ?? 4;
  }

  /** Whether a reply has begun and not ended (an end of stream now would cut it). */
  get partial(): boolean {
    return this.#pos < this.#end || this.#stack.length > 0 || this.#bulkLength >= 0 ||
      this.#skip > 0;
  }

  /**
   * Adds received bytes. The chunk is only read, never changed, and not
   * kept once {@linkcode next} has returned NEED_MORE: the caller may then
   * reuse it (no reply is a view of it).
   */
  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    if (this.#skip > 0) {
      // Discarding an oversized bulk: drop what belongs to it.
      const n = Math.min(this.#skip, chunk.length);
      this.#skip -= n;
      chunk = chunk.subarray(n);
      if (chunk.length === 0) return;
    }
    if (this.#gather !== undefined) {
      const n = Math.min(this.#gather.length - this.#gathered, chunk.length);
      this.#gather.set(chunk.subarray(0, n), this.#gathered);
      this.#gathered += n;
      chunk = chunk.subarray(n);
      if (chunk.length === 0) return;
    }
    if (this.#pos === this.#end) {
      this.#buf = chunk;
      this.#bufIsChunk = true;
      this.#pos = 0;
      this.#end = chunk.length;
      return;
    }
    // A leftover (part of a line, or of a small bulk): join it with the chunk.
    const rest = this.#end - this.#pos;
    const joined = new Uint8Array(rest + chunk.length);
    joined.set(this.#buf.subarray(this.#pos, this.#end));
    joined.set(chunk, rest);
    this.#buf = joined;
    this.#bufIsChunk = false;
    this.#pos = 0;
    this.#end = joined.length;
  }

  /** Before NEED_MORE: nothing of the caller's chunk is kept (a leftover is copied, it is small). */
  #letGo(): void {
    if (!this.#bufIsChunk) return;
    this.#buf = this.#pos < this.#end ? this.#buf.slice(this.#pos, this.#end) : EMPTY;
    this.#bufIsChunk = false;
    this.#end -= this.#pos;
    this.#pos = 0;
  }

  /**
   * The next complete reply, or {@linkcode NEED_MORE}.
   *
   * @throws {RespProtocolError} Bytes that are not RESP2, or a reply over a
   *   limit (`limit` names it). The parser stays broken: every later call
   *   throws the same error.
   */
  next(): RespValue | typeof NEED_MORE {
    if (this.#broken !== undefined) throw this.#broken;
    try {
      return this.#next();
    } catch (err) {
      if (err instanceof RespProtocolError) {
        this.#broken = err;
        this.#buf = EMPTY;
        this.#pos = this.#end = 0;
        this.#stack = [];
        this.#gather = undefined;
        this.#refItems.length = 0;
        this.#refNums.length = 0;
      }
      throw err;
    }
  }

  #next(): RespValue | typeof NEED_MORE {
    const stack = this.#stack;
    for (;;) {
      let value: RespValue | typeof NEED_MORE | typeof IN_BUF;
      if (this.#bulkLength >= 0) {
        value = this.#bulkBody();
      } else {
        value = this.#item();
      }
      if (value === NEED_MORE) {
        // #buf may be the caller's chunk, gone after this: copy out what the
        // reply so far has in it.
        if (this.#refItems.length > 0) this.#copyOut();
        this.#letGo();
        return NEED_MORE;
      }
      // A complete value: it ends the reply, or fills the innermost array.
      for (;;) {
        const top = stack[stack.length - 1];
        if (top === undefined) {
          if (value === IN_BUF) {
            // A reply of one bulk: its own copy.
            const start = this.#bulkStart;
            return this.#buf.slice(start, this.#pos - 2);
          }
          return value;
        }
        if (value === IN_BUF) {
          const start = this.#bulkStart;
          this.#refItems.push(top.items);
          this.#refNums.push(top.items.length, start, this.#pos - 2 - start);
          top.items.push(EMPTY);
        } else {
          top.items.push(value);
        }
        if (--top.left > 0) break;
        stack.pop();
        value = top.items;
        if (stack.length === 0 && this.#refItems.length > 0) this.#copyOut();
      }
    }
  }

  /**
   * Copies the bulks recorded in #refItems/#refNums out of #buf, in one
   * copy of the span from the first to the last, and puts views of it in
   * their arrays. A view never aliases a buffer anyone writes again (the
   * copy is the parser's, and only read); it keeps the span alive (at most
   * one reply, or one read's worth of it) while any bulk of it is kept.
   */
  #copyOut(): void {
    const items = this.#refItems;
    const nums = this.#refNums;
    const from = nums[1];
    const to = nums[nums.length - 2] + nums[nums.length - 1];
    const copy = this.#buf.slice(from, to);
    for (let i = 0, j = 0; i < items.length; i++, j += 3) {
      const start = nums[j + 1] - from;
      items[i][nums[j]] = copy.subarray(start, start + nums[j + 2]);
    }
    items.length = 0;
    nums.length = 0;
  }

  /** One item from its type line: a whole value, or an array/bulk begun (then NEED_MORE or loop). */
  #item(): RespValue | typeof NEED_MORE | typeof IN_BUF {
    for (;;) {
      const lineEnd = this.#lineEnd();
      if (lineEnd < 0) return NEED_MORE;
      const buf = this.#buf;
      const start = this.#pos;
      this.#pos = lineEnd + 2;
      switch (buf[start]) {
        case 0x2b: // +
          return decoder.decode(buf.subarray(start + 1, lineEnd));
        case 0x2d: // -
          return new RespError(decoder.decode(buf.subarray(start + 1, lineEnd)));
        case 0x3a: // :
          return this.#integer(buf, start, lineEnd);
        case 0x24: { // $
          const n = this.#length(buf, start, lineEnd);
          if (n === -1) return null;
          if (n > this.#maxBulk) {
            // Skip it without buffering it: bounded memory, and the stream
            // stays in sync. The bulks before it are copied out first, so
            // that the skipped bytes are not copied with them.
            if (this.#refItems.length > 0) this.#copyOut();
            const here = Math.min(this.#end - this.#pos, n + 2);
            this.#pos += here;
            this.#skip = n + 2 - here;
            return new OversizedBulk(n);
          }
          this.#bulkLength = n;
          return this.#bulkBody();
        }
        case 0x2a: { // *
          const n = this.#length(buf, start, lineEnd);
          if (n === -1) return null;
          if (n > this.#maxArray) {
            throw new RespProtocolError(
              `a reply array of ${n} elements, over maxArray (${this.#maxArray})`,
              "maxArray",
            );
          }
          if (this.#stack.length >= this.#maxDepth) {
            throw new RespProtocolError(
              `reply arrays nested deeper than maxDepth (${this.#maxDepth})`,
              "maxDepth",
            );
          }
          if (n === 0) return [];
          this.#stack.push({ items: [], left: n });
          continue;
        }
        default:
          throw new RespProtocolError(
            `not a RESP reply: ${
              JSON.stringify(decoder.decode(buf.subarray(start, Math.min(lineEnd, start + 40))))
            } (is this a Redis server?)`,
          );
      }
    }
  }

  /** The index of the CR of the next CRLF, or -1 when the line has not fully arrived. */
  #lineEnd(): number {
    const buf = this.#buf;
    const pos = this.#pos;
    const end = this.#end;
    const max = this.#maxLine;
    const i = buf.indexOf(0x0a, pos);
    if (i < 0 || i >= end || i - pos >= max) {
      if (end - pos < max) return -1;
      throw new RespProtocolError(`a reply line longer than maxLine (${max} bytes)`, "maxLine");
    }
    if (i === pos || buf[i - 1] !== 0x0d) {
      throw new RespProtocolError(
        `a reply line not ended by CRLF: ${
          JSON.stringify(decoder.decode(buf.subarray(pos, Math.min(i, pos + 40))))
        }`,
      );
    }
    return i - 1;
  }

  #integer(buf: Uint8Array, start: number, lineEnd: number): number | bigint {
    let i = start + 1;
    const negative = buf[i] === 0x2d;
    if (negative) i++;
    const digits = lineEnd - i;
    if (digits < 1 || digits > 19) throw this.#badNumber(buf, start, lineEnd);
    let n = 0;
    for (let j = i; j < lineEnd; j++) {
      const d = buf[j] - 0x30;
      if (d < 0 || d > 9) throw this.#badNumber(buf, start, lineEnd);
      n = n * 10 + d;
    }
    if (n <= Number.MAX_SAFE_INTEGER) return negative ? -n : n;
    const big = BigInt(decoder.decode(buf.subarray(i, lineEnd)));
    return negative ? -big : big;
  }

  /** A `$`/`*` length: -1 (null) or 0 and up. */
  #length(buf: Uint8Array, start: number, lineEnd: number): number {
    const i = start + 1;
    if (lineEnd - i === 2 && buf[i] === 0x2d && buf[i + 1] === 0x31) return -1;
    const digits = lineEnd - i;
    if (digits < 1 || digits > 12) throw this.#badNumber(buf, start, lineEnd);
    let n = 0;
    for (let j = i; j < lineEnd; j++) {
      const d = buf[j] - 0x30;
      if (d < 0 || d > 9) throw this.#badNumber(buf, start, lineEnd);
      n = n * 10 + d;
    }
    return n;
  }

  #badNumber(buf: Uint8Array, start: number, lineEnd: number): RespProtocolError {
    const line = decoder.decode(buf.subarray(start, Math.min(lineEnd, start + 40)));
    return new RespProtocolError(`bad number in reply line ${JSON.stringify(line)}`);
  }

  /**
   * The body of the bulk string whose header was parsed (#bulkLength): a
   * big one gathered in a buffer of its own, or IN_BUF: it is in #buf from
   * #bulkStart to #pos - 2, not copied yet (#next decides how).
   */
  #bulkBody(): Uint8Array | typeof NEED_MORE | typeof IN_BUF {
    const n = this.#bulkLength;
    let body: Uint8Array;
    if (this.#gather !== undefined) {
      // Big: gathered by push; its CRLF is the last two bytes.
      if (this.#gathered < this.#gather.length) {
        if (this.#pos < this.#end) {
          // Bytes buffered before gathering began.
          const take = Math.min(this.#end - this.#pos, this.#gather.length - this.#gathered);
          this.#gather.set(this.#buf.subarray(this.#pos, this.#pos + take), this.#gathered);
          this.#gathered += take;
          this.#pos += take;
        }
        if (this.#gathered < this.#gather.length) return NEED_MORE;
      }
      body = this.#gather;
      this.#gather = undefined;
    } else {
      const have = this.#end - this.#pos;
      if (have < n + 2) {
        if (n + 2 >= GATHER_AT) {
          this.#gather = new Uint8Array(n + 2);
          this.#gather.set(this.#buf.subarray(this.#pos, this.#end));
          this.#gathered = have;
          this.#pos = this.#end;
        }
        return NEED_MORE;
      }
      // Not copied here: replies outlive the chunk (a history may keep
      // them), but one copy per reply (#copyOut) is enough, and a view of
      // the chunk could be overwritten, or pin a 64 KiB read buffer for a
      // 1 KiB message.
      const buf = this.#buf;
      const at = this.#pos + n;
      if (buf[at] !== 0x0d || buf[at + 1] !== 0x0a) {
        throw new RespProtocolError("a bulk string not ended by CRLF");
      }
      this.#bulkStart = this.#pos;
      this.#pos = at + 2;
      this.#bulkLength = -1;
      return IN_BUF;
    }
    this.#bulkLength = -1;
    if (body[n] !== 0x0d || body[n + 1] !== 0x0a) {
      throw new RespProtocolError("a bulk string not ended by CRLF");
    }
    return body.subarray(0, n);
  }
}

/** Reads replies one at a time from a byte stream (a netkit `Conn`'s readable). */
export class RespReader {
  #readable: ReadableStream<Uint8Array>;
  #reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  #parser: RespParser;
  #ended = false;

  /** Reads `readable` (holding its lock from the first read on), bounded by `limits`. */
  constructor(readable: ReadableStream<Uint8Array>, limits: RespLimits) {
    this.#readable = readable;
    this.#parser = new RespParser(limits);
  }

  /**
   * The next reply; `undefined` when the peer closed cleanly between replies.
   *
   * @throws {RespProtocolError} Bytes that are not RESP2, a reply over a
   *   limit, or the stream ended inside a reply.
   */
  async read(): Promise<RespValue | undefined> {
    for (;;) {
      const value = this.#parser.next();
      if (value !== NEED_MORE) return value;
      if (this.#ended) return this.#eof();
      this.#reader ??= this.#readable.getReader();
      const { value: chunk, done } = await this.#reader.read();
      if (done) {
        this.#ended = true;
        return this.#eof();
      }
      this.#parser.push(chunk);
    }
  }

  /** Replies already complete in the buffer, without waiting: NEED_MORE when none. */
  poll(): RespValue | typeof NEED_MORE {
    return this.#parser.next();
  }

  #eof(): undefined {
    if (this.#parser.partial) throw new RespProtocolError("the connection ended inside a reply");
    return undefined;
  }

  /** Releases the stream's lock, if a read took it. */
  releaseLock(): void {
    this.#reader?.releaseLock();
    this.#reader = undefined;
  }
}

// Commands whose worst case fits are encoded here, then copied out at their
// exact size: one allocation per command, whatever its arguments. Bigger
// ones (rare: a batch of large payloads) are measured first.
const SCRATCH_SIZE = 64 * 1024;
let scratch: Uint8Array | undefined;
// Strings this short are tried as ASCII in a loop, cheaper than a call to
// encodeInto (most arguments are command names, keys, numbers).
const SHORT = 32;

/** How many decimal digits `n` (≥ 0) has. */
function digits(n: number): number {
  let d = 1;
  while (n >= 10) {
    n = Math.floor(n / 10);
    d++;
  }
  return d;
}

/** Writes `<type><n>\r\n` at `at` (n ≥ 0, `width` its digits); returns the end. */
function writeHead(buf: Uint8Array, at: number, type: number, n: number, width: number): number {
  buf[at] = type;
  let i = at + width;
  do {
    buf[i--] = 0x30 + (n % 10);
    n = Math.floor(n / 10);
  } while (n > 0);
  buf[at + width + 1] = 0x0d;
  buf[at + width + 2] = 0x0a;
  return at + width + 3;
}

/**
 * Encodes a command as RESP2: an array of bulk strings, in one buffer of
 * its exact size. Strings are UTF-8, as `TextEncoder` makes it (a lone
 * surrogate becomes U+FFFD); byte arguments are copied as they are.
 */
export function encodeCommand(args: (string | Uint8Array)[]): Uint8Array {
  const count = args.length;
  // Worst case: 3 bytes per UTF-16 unit, and `$` + 16 digits + 2 CRLFs per argument.
  let bound = 24;
  for (let i = 0; i < count; i++) {
    const a = args[i];
    bound += (typeof a === "string" ? a.length * 3 : a.length) + 20;
  }
  if (bound > SCRATCH_SIZE) return encodeMeasured(args);
  const buf = scratch ??= new Uint8Array(SCRATCH_SIZE);
  let at = writeHead(buf, 0, 0x2a, count, digits(count));
  for (let i = 0; i < count; i++) {
    const a = args[i];
    if (typeof a !== "string") {
      at = writeHead(buf, at, 0x24, a.length, digits(a.length));
      buf.set(a, at);
      at += a.length;
    } else {
      const len = a.length;
      const width = digits(len);
      let body = at + width + 3;
      let end = -1;
      if (len <= SHORT) {
        end = body;
        for (let j = 0; j < len; j++) {
          const c = a.charCodeAt(j);
          if (c >= 0x80) {
            end = -1;
            break;
          }
          buf[end++] = c;
        }
      }
      let written = len;
      if (end < 0) {
        // Not ASCII, or long: UTF-8 is at least one byte per unit, so the
        // head reserved may be too short (then the body moves up), never long.
        written = encoder.encodeInto(a, buf.subarray(body)).written;
        const more = digits(written) - width;
        if (more > 0) {
          buf.copyWithin(body + more, body, body + written);
          body += more;
        }
      }
      writeHead(buf, at, 0x24, written, body - at - 3);
      at = body + written;
    }
    buf[at++] = 0x0d;
    buf[at++] = 0x0a;
  }
  return buf.slice(0, at);
}

/** {@linkcode encodeCommand} for a big command: strings encoded first, to know the size. */
function encodeMeasured(args: (string | Uint8Array)[]): Uint8Array {
  const count = args.length;
  const parts: Uint8Array[] = new Array(count);
  let size = digits(count) + 3;
  for (let i = 0; i < count; i++) {
    const a = args[i];
    const p = typeof a === "string" ? encoder.encode(a) : a;
    parts[i] = p;
    size += digits(p.length) + 3 + p.length + 2;
  }
  const out = new Uint8Array(size);
  let at = writeHead(out, 0, 0x2a, count, digits(count));
  for (let i = 0; i < count; i++) {
    const p = parts[i];
    at = writeHead(out, at, 0x24, p.length, digits(p.length));
    out.set(p, at);
    at += p.length;
    out[at++] = 0x0d;
    out[at++] = 0x0a;
  }
  return out;
}

/** Encodes a reply as RESP2 (for tests and fakes: what a server would send). */
export function encodeReply(value: RespValue): Uint8Array {
  const parts: Uint8Array[] = [];
  const walk = (v: RespValue): void => {
    if (v === null) parts.push(encoder.encode("$-1\r\n"));
    else if (typeof v === "string") parts.push(encoder.encode(`+${v}\r\n`));
    else if (typeof v === "number" || typeof v === "bigint") {
      parts.push(encoder.encode(`:${v}\r\n`));
    } else if (v instanceof RespError) parts.push(encoder.encode(`-${v.message}\r\n`));
    else if (v instanceof Uint8Array) {
      parts.push(encoder.encode(`$${v.length}\r\n`), v, encoder.encode("\r\n"));
    } else if (v instanceof OversizedBulk) {
      throw new TypeError("an OversizedBulk has no bytes to encode");
    } else {
      parts.push(encoder.encode(`*${v.length}\r\n`));
      for (const item of v) walk(item);
    }
  };
  walk(value);
  let size = 0;
  for (const p of parts) size += p.length;
  const out = new Uint8Array(size);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** The text of a reply, for messages and comparisons. */
export function replyText(value: RespValue | undefined): string {
  if (value === undefined) return "(connection closed)";
  if (value === null) return "(nil)";
  if (value instanceof RespError) return value.message;
  if (value instanceof Uint8Array) return decoder.decode(value);
  if (value instanceof OversizedBulk) return `(${value.length} bytes)`;
  if (Array.isArray(value)) return value.map(replyText).join(" ");
  return String(value);
}
