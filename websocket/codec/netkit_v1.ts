/**
 * The `netkit.v1` subprotocol's wire format: envelopes that carry a
 * message's position in its topic's log, the server's answers to a resume,
 * and the resume request on the upgrade URL. docs/netkit-v1.md is the full
 * description; these functions are what netkit's server and
 * `ReconnectingWebSocket` use, for code that speaks the protocol itself.
 *
 * @module
 */
import { WebSocketError } from "../errors.ts";

/** The subprotocol name a client offers in `Sec-WebSocket-Protocol`. */
export const NETKIT_V1 = "netkit.v1";

/**
 * The upgrade URL's query parameter that asks to resume, repeatable:
 * `netkit.since=<epoch>:<offset>:<topic>`.
 */
export const NETKIT_V1_SINCE = "netkit.since";

/** A position in one topic's log: which log (`epoch`) and how far (`offset`). */
export interface NetkitV1Position {
  /** Names one instance of the log; a new epoch means the history before it is gone. */
  epoch: string;
  /** The offset of the last message seen; the first message of a log is 1. */
  offset: number;
}

/** One message from a `netkit.v1` server, decoded by {@linkcode decodeServerMessage}. */
export type NetkitV1Event =
  | {
    /** A data message: published on `topic` at (`epoch`, `offset`), or sent to this connection alone (no topic). */
    type: "message";
    /** A string for a text frame, bytes for a binary one: the type the publisher gave it. */
    data: string | Uint8Array;
    /** The topic, when published on one. */
    topic?: string;
    /** The log's epoch, with `topic`. */
    epoch?: string;
    /** The message's offset, with `topic`. */
    offset?: number;
  }
  | {
    /** The message at this position is not for this connection (its own, published without `includeSelf`): advance past it. */
    type: "skip";
    /** The topic. */
    topic: string;
    /** The log's epoch. */
    epoch: string;
    /** The offset now reached. */
    offset: number;
  }
  | {
    /**
     * The connection is subscribed to `topic`; the next message there is
     * `offset + 1`. `recovered` is there when the client asked to resume:
     * `true` (the messages after the asked position follow, `offset` is
     * that position) or `false` (they cannot: `reason` is `"trimmed"` —
     * the history no longer reaches back that far — or `"epoch"` — the log
     * the position belongs to is gone; `offset` is the log's head).
     */
    type: "subscribed";
    /** The topic. */
    topic: string;
    /** The log's epoch. */
    epoch: string;
    /** See above. */
    offset: number;
    /** Whether a resume succeeded; absent when none was asked for. */
    recovered?: boolean;
    /** Why it did not: `"trimmed"` or `"epoch"`. */
    reason?: string;
  }
  | {
    /** A message sent with an `id` is handled: in the log at (`topic`, `epoch`, `offset`) when it was published. */
    type: "ack";
    /** The client's id. */
    id: string;
    /** The topic it was published on, if any. */
    topic?: string;
    /** The log's epoch, with `topic`. */
    epoch?: string;
    /** Its offset, with `topic`. */
    offset?: number;
  };

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });
const EPOCH = /^[A-Za-z0-9_-]{1,64}$/;

function malformed(what: string): WebSocketError {
  return new WebSocketError(
    "ERR_NETKIT_V1_MALFORMED",
    `netkit.v1: ${what}; is the peer speaking the protocol (see docs/netkit-v1.md)?`,
    1008,
  );
}

/** Whether `n` can be an offset: a whole number from 0 to 2^53 - 1. */
function isOffset(n: unknown): n is number {
  return typeof n === "number" && Number.isSafeInteger(n) && n >= 0;
}

/**
 * A binary envelope: a 4-byte big-endian header length, the header (a JSON
 * object, UTF-8), the payload.
 */
function binaryEnvelope(header: string, payload: Uint8Array): Uint8Array {
  const head = encoder.encode(header);
  const out = new Uint8Array(4 + head.length + payload.length);
  new DataView(out.buffer).setUint32(0, head.length);
  out.set(head, 4);
  out.set(payload, 4 + head.length);
  return out;
}

function splitBinary(bytes: Uint8Array): { header: Record<string, unknown>; payload: Uint8Array } {
  if (bytes.length < 4) throw malformed("a binary message shorter than its 4-byte header length");
  const length = new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0);
  if (length > bytes.length - 4) throw malformed("a binary header longer than its message");
  return {
    header: parseObject(bytes.subarray(4, 4 + length)),
    payload: bytes.subarray(4 + length),
  };
}

function parseObject(text: string | Uint8Array): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(typeof text === "string" ? text : decoder.decode(text));
  } catch {
    throw malformed("a message that is not a JSON object");
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw malformed("a message that is not a JSON object");
  }
  return value as Record<string, unknown>;
}

function positionHeader(position: { topic: string; epoch: string; offset: number } | undefined) {
  return position === undefined ? {} : { t: position.topic, e: position.epoch, o: position.offset };
}

/**
 * A data message as a `netkit.v1` server sends it: text as
 * `{"t":topic,"e":epoch,"o":offset,"d":text}`, binary as a binary envelope
 * with that header (without `d`) before the payload. Without a position: a
 * message for this connection alone (`{"d":text}`, header `{}`).
 *
 * @param data A string (a text frame) or bytes (a binary frame).
 * @param position Where it is in its topic's log.
 * @returns What to send: a string (text) or bytes (binary).
 *
 * @example
 * ```ts
 * import { decodeServerMessage, encodeServerEnvelope } from "@netkit/netkit/websocket/codec";
 * import assert from "node:assert/strict";
 *
 * const text = encodeServerEnvelope("hi", { topic: "chat", epoch: "k3", offset: 7 });
 * assert.equal(text, '{"t":"chat","e":"k3","o":7,"d":"hi"}');
 * assert.deepEqual(decodeServerMessage(text), {
 *   type: "message", data: "hi", topic: "chat", epoch: "k3", offset: 7,
 * });
 * ```
 */
export function encodeServerEnvelope(
  data: string | Uint8Array,
  position?: { topic: string; epoch: string; offset: number },
): string | Uint8Array {
  const header = positionHeader(position);
  if (typeof data === "string") return JSON.stringify({ ...header, d: data });
  return binaryEnvelope(JSON.stringify(header), data);
}

/**
 * Decodes what a `netkit.v1` server sent. Unknown kinds of text message
 * (a later version's) come back as `null`, to be ignored.
 *
 * @throws {WebSocketError} `ERR_NETKIT_V1_MALFORMED` (close code 1008):
 *   not an envelope.
 */
export function decodeServerMessage(data: string | Uint8Array): NetkitV1Event | null {
  if (typeof data !== "string") {
    const { header, payload } = splitBinary(data);
    const event: NetkitV1Event = { type: "message", data: payload };
    addPosition(event, header);
    return event;
  }
  const m = parseObject(data);
  if ("d" in m) {
    if (typeof m.d !== "string") throw malformed('a text message whose "d" is not a string');
    const event: NetkitV1Event = { type: "message", data: m.d };
    addPosition(event, m);
    return event;
  }
  if (typeof m.sub === "string") {
    if (typeof m.e !== "string" || !isOffset(m.o)) throw malformed("a sub without e and o");
    const event: NetkitV1Event = { type: "subscribed", topic: m.sub, epoch: m.e, offset: m.o };
    if (typeof m.recovered === "boolean") event.recovered = m.recovered;
    if (typeof m.reason === "string") event.reason = m.reason;
    return event;
  }
  if (typeof m.ack === "string") {
    const event: NetkitV1Event = { type: "ack", id: m.ack };
    addPosition(event, m);
    return event;
  }
  if (typeof m.t === "string") {
    if (typeof m.e !== "string" || !isOffset(m.o)) throw malformed("a position without e and o");
    return { type: "skip", topic: m.t, epoch: m.e, offset: m.o };
  }
  return null;
}

function addPosition(
  event: { topic?: string; epoch?: string; offset?: number },
  header: Record<string, unknown>,
): void {
  if (header.t === undefined) return;
  if (typeof header.t !== "string" || typeof header.e !== "string" || !isOffset(header.o)) {
    throw malformed('a position needs "t" (string), "e" (string) and "o" (offset)');
  }
  event.topic = header.t;
  event.epoch = header.e;
  event.offset = header.o;
}

/**
 * A message as a `netkit.v1` client sends it: text as `{"d":text}`, binary
 * as a binary envelope with header `{}`; with an `id`, the server answers
 * `{"ack":id,…}` once it is handled (in the log, if it was published) and
 * handles a repeated id only once.
 *
 * @example
 * ```ts
 * import { decodeClientEnvelope, encodeClientEnvelope } from "@netkit/netkit/websocket/codec";
 * import assert from "node:assert/strict";
 *
 * assert.equal(encodeClientEnvelope("hi"), '{"d":"hi"}');
 * const bytes = encodeClientEnvelope(new Uint8Array([1, 2]), "m1");
 * assert.deepEqual(decodeClientEnvelope(bytes), { data: new Uint8Array([1, 2]), id: "m1" });
 * ```
 */
export function encodeClientEnvelope(data: string | Uint8Array, id?: string): string | Uint8Array {
  const header = id === undefined ? {} : { id };
  if (typeof data === "string") return JSON.stringify({ d: data, ...header });
  return binaryEnvelope(JSON.stringify(header), data);
}

/**
 * Decodes what a `netkit.v1` client sent: the application's message and its
 * id, if any.
 *
 * @throws {WebSocketError} `ERR_NETKIT_V1_MALFORMED` (close code 1008):
 *   not an envelope.
 */
export function decodeClientEnvelope(
  data: string | Uint8Array,
): { data: string | Uint8Array; id?: string } {
  let header: Record<string, unknown>;
  let payload: string | Uint8Array;
  if (typeof data === "string") {
    header = parseObject(data);
    if (typeof header.d !== "string") throw malformed('a text message without a "d" string');
    payload = header.d;
  } else {
    ({ header, payload } = splitBinary(data));
  }
  if (header.id === undefined) return { data: payload };
  if (typeof header.id !== "string" || header.id.length === 0 || header.id.length > 128) {
    throw malformed('an "id" that is not a string of 1 to 128 characters');
  }
  return { data: payload, id: header.id };
}

/**
 * The upgrade URL that asks to resume each topic after its position:
 * `url` with one `netkit.since=<epoch>:<offset>:<topic>` per topic (any
 * already there are replaced).
 *
 * @example
 * ```ts
 * import { formatResumeUrl, parseResumeUrl } from "@netkit/netkit/websocket/codec";
 * import assert from "node:assert/strict";
 *
 * const url = formatResumeUrl("ws://127.0.0.1:8080/", { chat: { epoch: "k3", offset: 7 } });
 * assert.equal(url.href, "ws://127.0.0.1:8080/?netkit.since=k3%3A7%3Achat");
 * assert.deepEqual(parseResumeUrl(url), new Map([["chat", { epoch: "k3", offset: 7 }]]));
 * ```
 */
export function formatResumeUrl(
  url: string | URL,
  positions: Record<string, NetkitV1Position> | Map<string, NetkitV1Position>,
): URL {
  const out = new URL(url);
  out.searchParams.delete(NETKIT_V1_SINCE);
  const entries = positions instanceof Map ? positions.entries() : Object.entries(positions);
  for (const [topic, { epoch, offset }] of entries) {
    out.searchParams.append(NETKIT_V1_SINCE, `${epoch}:${offset}:${topic}`);
  }
  return out;
}

/**
 * The positions a resume URL asks for, by topic. Malformed entries are
 * skipped; at most `max` are read.
 */
export function parseResumeUrl(url: string | URL, max = 256): Map<string, NetkitV1Position> {
  const out = new Map<string, NetkitV1Position>();
  const params = new URL(url).searchParams.getAll(NETKIT_V1_SINCE);
  for (const value of params.slice(0, max)) {
    const a = value.indexOf(":");
    const b = value.indexOf(":", a + 1);
    if (a < 0 || b < 0) continue;
    const epoch = value.slice(0, a);
    const offsetText = value.slice(a + 1, b);
    const offset = Number(offsetText);
    if (!EPOCH.test(epoch) || !/^\d{1,16}$/.test(offsetText) || !isOffset(offset)) continue;
    out.set(value.slice(b + 1), { epoch, offset });
  }
  return out;
}

/** The text of a `sub` answer. Internal to netkit's server. */
export function formatSubscribed(
  topic: string,
  epoch: string,
  offset: number,
  resume?: { recovered: boolean; reason?: string },
): string {
  return JSON.stringify({ sub: topic, e: epoch, o: offset, ...resume });
}
