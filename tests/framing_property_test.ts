// Property tests for what tests/io_property_test.ts leaves out: lines
// (readLine's endings and limit), the hand-off from io reads to a framing
// transform on a BufferedReader's readable (nothing lost), length-prefixed
// decoding of arbitrary bytes, and the WebSocket frame parser — messages
// fragmented and chunked any way round-trip, limits hold exactly at their
// boundary, and arbitrary bytes only ever fail with a close code.
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  BufferedReader,
  DelimiterStream,
  encodeLengthPrefixed,
  LengthPrefixedDecoderStream,
  LimitExceededError,
  UnexpectedEofError,
} from "../io/mod.ts";
import { encodeFrame } from "../websocket/codec/sender.ts";
import { type ReceivedFrame, Receiver } from "../websocket/codec/receiver.ts";
import { WebSocketError } from "../websocket/errors.ts";
import { concat } from "./support/bytes.ts";
import { byteSource, chunk } from "./support/chunks.ts";

// Raise for a deeper search: IO_PROPERTY_RUNS=5000 deno test -A …
const NUM_RUNS = Number(Deno.env.get("IO_PROPERTY_RUNS") ?? 150);
const encoder = new TextEncoder();
const decoder = new TextDecoder();

const cutsArb = fc.array(fc.nat(), { maxLength: 16 });

// --- lines ------------------------------------------------------------------------

Deno.test("property: readLine yields the lines of any text, \\n or \\r\\n, whatever the chunking", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(
        fc.string({ unit: "grapheme", maxLength: 30 }).map((s) => s.replace(/[\r\n]/g, "")),
        {
          maxLength: 10,
        },
      ),
      fc.array(fc.constantFrom("\n", "\r\n"), { minLength: 10, maxLength: 10 }),
      fc.boolean(),
      cutsArb,
      fc.boolean(),
      async (lines, endings, lastEnded, cuts, raw) => {
        const text = lines.map((l, i) => l + (i < lines.length - 1 || lastEnded ? endings[i] : ""))
          .join("");
        const chunks = chunk(encoder.encode(text), cuts);
        const reader = new BufferedReader(raw ? byteSource(chunks) : ReadableStream.from(chunks), {
          bufferSize: 64,
        });
        const got: string[] = [];
        for (let line; (line = await reader.readLine()) !== null;) got.push(line);
        // A last line with no ending is still a line, unless it is empty.
        const expected = lines.length > 0 && !lastEnded && lines.at(-1) === ""
          ? lines.slice(0, -1)
          : lines;
        assert.deepEqual(got, expected);
      },
    ),
    { numRuns: NUM_RUNS },
  );
});

Deno.test("property: readLine's maxBytes counts the line with its ending, exactly at the boundary", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 2, max: 300 }),
      fc.integer({ min: -3, max: 3 }),
      fc.constantFrom("\n", "\r\n"),
      cutsArb,
      async (maxBytes, delta, ending, cuts) => {
        const size = Math.max(ending.length, maxBytes + delta); // with its ending
        const line = "a".repeat(size - ending.length);
        const wire = encoder.encode(line + ending + "next\n");
        const reader = new BufferedReader(ReadableStream.from(chunk(wire, cuts)));
        const got = await reader.readLine({ maxBytes }).catch((e) => e);
        if (size <= maxBytes) {
          assert.equal(got, line);
          assert.equal(await reader.readLine(), "next");
        } else {
          assert.ok(got instanceof LimitExceededError, `${got}`);
          assert.equal(got.value, maxBytes);
          // Nothing is lost: a larger limit reads the same line.
          assert.equal(await reader.readLine({ maxBytes: size }), line);
        }
      },
    ),
    { numRuns: NUM_RUNS },
  );
});

// --- io reads, then a framing transform on the same readable ------------------------

Deno.test("property: after any io reads, a framing transform on the reader's readable sees every remaining byte", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.uint8Array({ max: 9, maxLength: 40 }), { maxLength: 10 }),
      fc.array(fc.oneof(fc.constant("line" as const), fc.integer({ min: 0, max: 12 })), {
        maxLength: 4,
      }),
      cutsArb,
      fc.boolean(),
      fc.boolean(),
      fc.boolean(),
      async (frames, reads, cuts, raw, prefixed, transformIt) => {
        // Frames of bytes 0..9 with "\n" (10) ends, or length-prefixed.
        const wire = prefixed
          ? concat(frames.map((f) => encodeLengthPrefixed(f)))
          : concat(frames.map((f) => concat([f, new Uint8Array([10])])));
        const chunks = chunk(wire, cuts);
        const reader = new BufferedReader(raw ? byteSource(chunks) : ReadableStream.from(chunks), {
          bufferSize: 64,
        });
        let consumed = 0;
        for (const r of reads) {
          if (r === "line") {
            const line = await reader.readUntil(new Uint8Array([10])).catch((e) => e);
            if (line instanceof UnexpectedEofError) consumed += line.partial.length;
            else if (line instanceof Uint8Array) consumed += line.length;
          } else {
            const got = await reader.readExact(r).catch((e) => (e as UnexpectedEofError).partial);
            consumed += got?.length ?? 0;
          }
        }
        const rest = wire.subarray(Math.min(consumed, wire.length));
        if (!transformIt) {
          // Whatever the io reads left, the readable hands on first, then the source.
          assert.deepEqual(concat(await Array.fromAsync(reader.readable)), rest);
          return;
        }
        // Through a framing transform: the frames of exactly the remaining bytes.
        const want = prefixed ? referenceFrames(rest, 4, 1 << 20) : splitAt10(rest);
        const got: Uint8Array[] = [];
        let error: unknown;
        try {
          const transform = prefixed
            ? new LengthPrefixedDecoderStream()
            : new DelimiterStream(new Uint8Array([10]));
          for await (const f of reader.readable.pipeThrough(transform)) got.push(f.slice());
        } catch (err) {
          error = err;
        }
        assert.deepEqual(got, want.frames);
        if ("over" in want && want.over) {
          // The reads left the stream mid-frame: its "header" is over the limit.
          assert.ok(error instanceof LimitExceededError, `${error}`);
        } else if (want.rest.length === 0) assert.equal(error, undefined);
        else {
          assert.ok(error instanceof UnexpectedEofError, `${error}`);
          assert.deepEqual(error.partial, want.rest);
        }
      },
    ),
    { numRuns: NUM_RUNS },
  );
});

/** Frames ended by byte 10, and the unterminated rest. */
function splitAt10(bytes: Uint8Array): { frames: Uint8Array[]; rest: Uint8Array } {
  const frames: Uint8Array[] = [];
  let at = 0;
  for (let i; (i = bytes.indexOf(10, at)) >= 0; at = i + 1) frames.push(bytes.slice(at, i));
  return { frames, rest: bytes.subarray(at) };
}

// --- length-prefixed decoding of arbitrary bytes ---------------------------------------

/** The reference parse: whole frames, then what is left (and whether a header is over the limit). */
function referenceFrames(wire: Uint8Array, headerSize: 1 | 2 | 4, max: number) {
  const frames: Uint8Array[] = [];
  let at = 0;
  for (;;) {
    if (wire.length - at < headerSize) return { frames, rest: wire.subarray(at), over: false };
    let n = 0;
    for (let i = 0; i < headerSize; i++) n = n * 256 + wire[at + i];
    if (n > max) return { frames, rest: wire.subarray(at), over: true };
    if (wire.length - at - headerSize < n) return { frames, rest: wire.subarray(at), over: false };
    frames.push(wire.slice(at + headerSize, at + headerSize + n));
    at += headerSize + n;
  }
}

Deno.test("property: LengthPrefixedDecoderStream on arbitrary bytes: the reference frames, then only a typed error", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.uint8Array({ maxLength: 400 }).map((b) => b.map((x) => (x < 200 ? x % 8 : x))),
      fc.constantFrom(1 as const, 2 as const, 4 as const),
      fc.integer({ min: 0, max: 300 }),
      cutsArb,
      async (wire, headerSize, maxFrameSize, cuts) => {
        const want = referenceFrames(wire, headerSize, maxFrameSize);
        const frames: Uint8Array[] = [];
        let error: unknown;
        try {
          const stream = ReadableStream.from(chunk(wire, cuts)).pipeThrough(
            new LengthPrefixedDecoderStream({ headerSize, maxFrameSize }),
          );
          for await (const f of stream) frames.push(f.slice());
        } catch (err) {
          error = err;
        }
        assert.deepEqual(frames, want.frames);
        if (want.over) {
          assert.ok(error instanceof LimitExceededError, `${error}`);
        } else if (want.rest.length > 0) {
          assert.ok(error instanceof UnexpectedEofError, `${error}`);
          assert.deepEqual(error.partial, want.rest);
        } else {
          assert.equal(error, undefined);
        }
      },
    ),
    { numRuns: NUM_RUNS },
  );
});

// --- the WebSocket frame parser ----------------------------------------------------------

interface Msg {
  binary: boolean;
  data: Uint8Array;
}

const msgArb: fc.Arbitrary<Msg> = fc.oneof(
  fc.uint8Array({ maxLength: 300 }).map((data) => ({ binary: true, data })),
  fc.string({ unit: "grapheme", maxLength: 100 }).map((s) => ({
    binary: false,
    data: encoder.encode(s),
  })),
);

/**
 * Encodes `msg` as client frames split at `splits` (byte offsets, so a text
 * message may be split inside a character), with a ping after fragment `pingAt`.
 */
function encodeMessage(msg: Msg, splits: number[], pingAt: number): Uint8Array[] {
  const points = [...new Set(splits.map((s) => s % (msg.data.length + 1)))].sort((a, b) => a - b);
  const parts: Uint8Array[] = [];
  let prev = 0;
  for (const p of points) {
    parts.push(msg.data.slice(prev, p));
    prev = p;
  }
  parts.push(msg.data.slice(prev));
  const frames: Uint8Array[] = [];
  parts.forEach((part, i) => {
    const opcode = i === 0 ? (msg.binary ? 0x2 : 0x1) : 0x0;
    frames.push(encodeFrame(opcode, part, { mask: true, fin: i === parts.length - 1 }));
    if (i === pingAt % parts.length && i < parts.length - 1) {
      frames.push(encodeFrame(0x9, "p", { mask: true }));
    }
  });
  return frames;
}

/** Feeds `chunks` to a server-side receiver; resolves to what it parsed and the error, if any. */
function parse(
  chunks: Uint8Array[],
  options: { maxPayload?: number; maxFragments?: number } = {},
): { frames: ReceivedFrame[]; error?: unknown } {
  const receiver = new Receiver({ server: true, ...options });
  const frames: ReceivedFrame[] = [];
  try {
    for (const c of chunks) {
      receiver.push(c.slice()); // the parser unmasks in place: give it its own copy
      for (let f; (f = receiver.next()) !== undefined;) {
        frames.push(f.type === "message" ? { ...f, data: f.data.slice() } : f);
      }
    }
    return { frames };
  } catch (error) {
    return { frames, error };
  }
}

Deno.test("property: WebSocket messages, fragmented and chunked any way, with pings between fragments, parse back unchanged", () => {
  fc.assert(
    fc.property(
      fc.array(fc.tuple(msgArb, fc.array(fc.nat(), { maxLength: 4 }), fc.nat()), { maxLength: 6 }),
      cutsArb,
      (messages, cuts) => {
        const wire = concat(
          messages.flatMap(([m, splits, pingAt]) => encodeMessage(m, splits, pingAt)),
        );
        const { frames, error } = parse(chunk(wire, cuts));
        assert.equal(error, undefined);
        const got = frames.filter((f) => f.type === "message");
        assert.deepEqual(
          got.map((f) => f.type === "message" && { binary: f.binary, data: f.data }),
          messages.map(([m]) => ({ binary: m.binary, data: m.data })),
        );
        for (const f of got) {
          if (f.type === "message" && !f.binary) assert.equal(f.text, decoder.decode(f.data));
        }
      },
    ),
    { numRuns: NUM_RUNS },
  );
});

Deno.test("property: maxPayload and maxFragments hold exactly at their boundary, any fragmentation and chunking", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 400 }),
      fc.integer({ min: -2, max: 2 }),
      fc.integer({ min: 1, max: 8 }),
      fc.integer({ min: -1, max: 1 }),
      cutsArb,
      (maxPayload, delta, maxFragments, fragDelta, cuts) => {
        const size = Math.max(0, maxPayload + delta);
        const fragments = Math.max(1, maxFragments + fragDelta);
        const data = new Uint8Array(size).fill(0x61);
        // `fragments` frames: the payload spread over them (some may be empty).
        const splits = Array.from(
          { length: fragments - 1 },
          (_, i) => Math.floor(((i + 1) * size) / fragments),
        );
        const frames: Uint8Array[] = [];
        let prev = 0;
        for (let i = 0; i < fragments; i++) {
          const end = i < fragments - 1 ? splits[i] : size;
          frames.push(encodeFrame(i === 0 ? 0x2 : 0x0, data.slice(prev, end), {
            mask: true,
            fin: i === fragments - 1,
          }));
          prev = end;
        }
        const { frames: got, error } = parse(chunk(concat(frames), cuts), {
          maxPayload,
          maxFragments,
        });
        if (size > maxPayload || fragments > maxFragments) {
          assert.ok(error instanceof WebSocketError, `${error}`);
          assert.equal(error.closeCode, 1009);
          assert.deepEqual(got, []);
        } else {
          assert.equal(error, undefined);
          assert.equal(got.length, 1);
          assert.equal(got[0].type === "message" && got[0].data.length, size);
        }
      },
    ),
    { numRuns: NUM_RUNS },
  );
});

Deno.test("property: arbitrary bytes never crash the WebSocket parser: frames, or a WebSocketError with a close code to send", () => {
  fc.assert(
    fc.property(
      // Mostly well-formed masked frames with random corruption, plus raw noise.
      fc.array(
        fc.oneof(
          fc.tuple(fc.integer({ min: 0, max: 15 }), fc.uint8Array({ maxLength: 140 }), fc.boolean())
            .map(([op, p, fin]) => encodeFrame(op, p, { mask: true, fin })),
          fc.uint8Array({ maxLength: 20 }),
        ),
        { maxLength: 8 },
      ),
      fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }),
      cutsArb,
      (parts, flips, cuts) => {
        const wire = concat(parts);
        for (const [at, value] of flips) if (wire.length > 0) wire[at % wire.length] = value;
        const { error } = parse(chunk(wire, cuts), { maxPayload: 1000, maxFragments: 8 });
        if (error !== undefined) {
          assert.ok(error instanceof WebSocketError, `not a WebSocketError: ${error}`);
          assert.ok([1002, 1007, 1009].includes(error.closeCode), `close code ${error.closeCode}`);
        }
      },
    ),
    { numRuns: NUM_RUNS * 4 },
  );
});
