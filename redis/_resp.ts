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
  // read, never written) or a join of a leftover and the next chunk.
  #buf: Uint8Array = EMPTY;
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

  /** Adds received bytes. The chunk is only read, never changed, and not kept past its parsing. */
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
    this.#pos = 0;
    this.#end = joined.length;
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
      }
      throw err;
    }
  }

  #next(): RespValue | typeof NEED_MORE {
    for (;;) {
      let value: RespValue | typeof NEED_MORE;
      if (this.#bulkLength >= 0) {
        value = this.#bulkBody();
      } else {
        value = this.#item();
      }
      if (value === NEED_MORE) return NEED_MORE;
      // A complete value: it ends the reply, or fills the innermost array.
      for (;;) {
        const top = this.#stack[this.#stack.length - 1];
        if (top === undefined) return value;
        top.items.push(value);
        if (--top.left > 0) break;
        this.#stack.pop();
        value = top.items;
      }
    }
  }

  /** One item from its type line: a whole value, or an array/bulk begun (then NEED_MORE or loop). */
  #item(): RespValue | typeof NEED_MORE {
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
            // Skip it without buffering it: bounded memory, and the stream stays in sync.
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

  /** The body of the bulk string whose header was parsed (#bulkLength). */
  #bulkBody(): Uint8Array | typeof NEED_MORE {
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
      // A copy: replies outlive the chunk (a history may keep them), and a
      // view would pin the whole 64 KiB read buffer for a 1 KiB message.
      body = this.#buf.slice(this.#pos, this.#pos + n + 2);
      this.#pos += n + 2;
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

const HEAD_CACHE: Uint8Array[] = [];

/** `$<n>\r\n` (cached for small n: most arguments are short). */
function bulkHead(n: number): Uint8Array {
  if (n < 256) return HEAD_CACHE[n] ??= encoder.encode(`$${n}\r\n`);
  return encoder.encode(`$${n}\r\n`);
}

/** Encodes a command as RESP2: an array of bulk strings, in one buffer. */
export function encodeCommand(args: (string | Uint8Array)[]): Uint8Array {
  const parts: Uint8Array[] = new Array(args.length);
  const first = encoder.encode(`*${args.length}\r\n`);
  let size = first.length;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const p = typeof a === "string" ? encoder.encode(a) : a;
    parts[i] = p;
    size += bulkHead(p.length).length + p.length + 2;
  }
  const out = new Uint8Array(size);
  out.set(first);
  let at = first.length;
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i];
    const head = bulkHead(p.length);
    out.set(head, at);
    at += head.length;
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
