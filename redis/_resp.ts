// RESP2, the Redis protocol, as much of it as a pub/sub bus needs: commands
// out (arrays of bulk strings) and every reply type in, binary-safe, each
// read bounded. Built on io's readUntil/readExact over a netkit Conn.
// Internal: the bus is the public face.
import { readExact, readUntil } from "../io/mod.ts";
import { NetkitError } from "../errors.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const CRLF = "\r\n";

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
 * (`number`), bulk string (`Uint8Array`), null, or an array of replies.
 */
export type RespValue =
  | string
  | number
  | Uint8Array
  | null
  | RespError
  | OversizedBulk
  | RespValue[];

/** The peer broke the protocol (or is not Redis at all). */
export class RespProtocolError extends NetkitError {
  constructor(message: string) {
    super("ERR_RESP_PROTOCOL", message);
  }
}

/** Limits of a {@linkcode RespReader}; every read is bounded by one of them. */
export interface RespLimits {
  /** The longest bulk string kept; longer ones are discarded and reported as {@linkcode OversizedBulk}. */
  maxBulk: number;
  /** The longest status, error or length line. @default {65536} */
  maxLine?: number;
  /** The most elements an array may have. @default {1024} */
  maxArray?: number;
  /** How deep arrays may nest. @default {4} */
  maxDepth?: number;
}

const DISCARD_CHUNK = 64 * 1024;

/** Reads replies one at a time from a netkit `Conn`'s readable. */
export class RespReader {
  #readable: ReadableStream<Uint8Array>;
  #maxBulk: number;
  #maxLine: number;
  #maxArray: number;
  #maxDepth: number;

  constructor(readable: ReadableStream<Uint8Array>, limits: RespLimits) {
    this.#readable = readable;
    this.#maxBulk = limits.maxBulk;
    this.#maxLine = limits.maxLine ?? 65536;
    this.#maxArray = limits.maxArray ?? 1024;
    this.#maxDepth = limits.maxDepth ?? 4;
  }

  /**
   * The next reply; `undefined` when the peer closed cleanly between replies.
   *
   * @throws {RespProtocolError} Bytes that are not RESP2.
   * @throws {UnexpectedEofError} The peer closed mid-reply.
   * @throws {LimitExceededError} A line over `maxLine`.
   */
  async read(): Promise<RespValue | undefined> {
    const line = await this.#line();
    if (line === null) return undefined;
    return await this.#value(line, 0);
  }

  async #line(): Promise<string | null> {
    const bytes = await readUntil(this.#readable, CRLF, { maxBytes: this.#maxLine });
    if (bytes === null) return null;
    return decoder.decode(bytes.subarray(0, bytes.length - 2));
  }

  async #value(line: string, depth: number): Promise<RespValue> {
    const rest = line.slice(1);
    switch (line.charCodeAt(0)) {
      case 0x2b: // +
        return rest;
      case 0x2d: // -
        return new RespError(rest);
      case 0x3a: // :
        return this.#int(rest, line);
      case 0x24: // $
        return await this.#bulk(this.#int(rest, line));
      case 0x2a: { // *
        const n = this.#int(rest, line);
        if (n < 0) return null;
        if (n > this.#maxArray) {
          throw new RespProtocolError(`a reply array of ${n} elements (limit ${this.#maxArray})`);
        }
        if (depth >= this.#maxDepth) throw new RespProtocolError("reply arrays nested too deep");
        const out: RespValue[] = [];
        for (let i = 0; i < n; i++) {
          const next = await this.#line();
          if (next === null) throw new RespProtocolError("the connection ended inside an array");
          out.push(await this.#value(next, depth + 1));
        }
        return out;
      }
      default:
        throw new RespProtocolError(
          `not a RESP reply: ${JSON.stringify(line.slice(0, 40))} (is this a Redis server?)`,
        );
    }
  }

  #int(text: string, line: string): number {
    if (!/^-?\d{1,15}$/.test(text)) {
      throw new RespProtocolError(`bad number in reply line ${JSON.stringify(line.slice(0, 40))}`);
    }
    return Number(text);
  }

  async #bulk(length: number): Promise<Uint8Array | OversizedBulk | null> {
    if (length < 0) return null;
    if (length > this.#maxBulk) {
      // Skip it without buffering it: bounded memory, and the stream stays in sync.
      let left = length + 2;
      while (left > 0) {
        const chunk = await readExact(this.#readable, Math.min(left, DISCARD_CHUNK));
        if (chunk === null) {
          throw new RespProtocolError("the connection ended inside a bulk string");
        }
        left -= chunk.length;
      }
      return new OversizedBulk(length);
    }
    const bytes = await readExact(this.#readable, length + 2);
    if (bytes === null) throw new RespProtocolError("the connection ended inside a bulk string");
    if (bytes[length] !== 0x0d || bytes[length + 1] !== 0x0a) {
      throw new RespProtocolError("a bulk string not ended by CRLF");
    }
    return bytes.subarray(0, length);
  }
}

/** Encodes a command as RESP2: an array of bulk strings. */
export function encodeCommand(args: (string | Uint8Array)[]): Uint8Array {
  const parts = args.map((a) => typeof a === "string" ? encoder.encode(a) : a);
  let size = 0;
  const heads = parts.map((p) => {
    const head = encoder.encode(`$${p.length}\r\n`);
    size += head.length + p.length + 2;
    return head;
  });
  const first = encoder.encode(`*${parts.length}\r\n`);
  const out = new Uint8Array(first.length + size);
  out.set(first);
  let at = first.length;
  for (let i = 0; i < parts.length; i++) {
    out.set(heads[i], at);
    at += heads[i].length;
    out.set(parts[i], at);
    at += parts[i].length;
    out[at++] = 0x0d;
    out[at++] = 0x0a;
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
