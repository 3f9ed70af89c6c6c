// Property tests: chunking must never change what the io readers and framing
// transforms produce, and every limit must hold exactly at its boundary.
import assert from "node:assert/strict";
// Pinned here as the brief asks; deno.json has no import map entry for it.
import fc from "fast-check";
import {
  BufferedReader,
  DelimiterStream,
  encodeLengthPrefixed,
  LengthPrefixedDecoderStream,
  LengthPrefixedEncoderStream,
  LimitExceededError,
  readUntil,
  UnexpectedEofError,
} from "../io/mod.ts";
import { concat } from "./support/bytes.ts";
import { byteSource, chunk, collect } from "./support/chunks.ts";

// Modest by default; raise for a deeper search: IO_PROPERTY_RUNS=5000 deno test -A …
const NUM_RUNS = Number(Deno.env.get("IO_PROPERTY_RUNS") ?? 200);

// --- helpers -----------------------------------------------------------------

/** The first index of `needle` in `hay` at or after `from`, the slow obvious way. */
function naiveIndexOf(hay: Uint8Array, needle: Uint8Array, from: number): number {
  outer: for (let i = from; i + needle.length <= hay.length; i++) {
    for (let k = 0; k < needle.length; k++) if (hay[i + k] !== needle[k]) continue outer;
    return i;
  }
  return -1;
}

/** The reference split: records with their delimiter, and the unterminated tail. */
function referenceSplit(
  data: Uint8Array,
  delim: Uint8Array,
): { records: Uint8Array[]; tail: Uint8Array } {
  const records: Uint8Array[] = [];
  let pos = 0;
  for (let at; (at = naiveIndexOf(data, delim, pos)) >= 0; pos = at + delim.length) {
    records.push(data.slice(pos, at + delim.length));
  }
  return { records, tail: data.slice(pos) };
}

/** Reads records until null or an error, with `read`. */
async function readAll(
  read: () => Promise<Uint8Array | null>,
): Promise<{ records: Uint8Array[]; error?: unknown }> {
  const records: Uint8Array[] = [];
  try {
    for (let r; (r = await read()) !== null;) records.push(r);
    return { records };
  } catch (error) {
    return { records, error };
  }
}

// Small alphabets make partial delimiter matches (and near misses) common.
const delimiterArb = fc.uint8Array({ min: 0, max: 2, minLength: 1, maxLength: 4 });
const cutsArb = fc.array(fc.nat(), { maxLength: 12 });
const smallBytesArb = fc.uint8Array({ max: 2, maxLength: 300, size: "medium" });

// --- (a) DelimiterStream is chunking-invariant ------------------------------

Deno.test("property: DelimiterStream yields the generated frames whatever the chunking", async () => {
  await fc.assert(
    fc.asyncProperty(
      // Frames of bytes 0..9 joined by a delimiter of bytes 10..12: no frame holds it.
      fc.array(fc.uint8Array({ max: 9, maxLength: 40, size: "medium" }), { maxLength: 12 }),
      fc.uint8Array({ min: 10, max: 12, minLength: 1, maxLength: 3 }),
      cutsArb,
      fc.constantFrom("discard" as const, "suffix" as const),
      async (frames, delim, cuts, disposition) => {
        const wire = concat(frames.flatMap((f) => [f, delim]));
        const got = await collect(new DelimiterStream(delim, { disposition }), chunk(wire, cuts));
        assert.equal(got.error, undefined);
        const expected = disposition === "suffix" ? frames.map((f) => concat([f, delim])) : frames;
        assert.deepEqual(got.frames, expected);
      },
    ),
    { numRuns: NUM_RUNS },
  );
});

Deno.test("property: DelimiterStream matches a reference split on any bytes and any chunking", async () => {
  await fc.assert(
    fc.asyncProperty(smallBytesArb, delimiterArb, cutsArb, async (data, delim, cuts) => {
      const { records, tail } = referenceSplit(data, delim);
      const got = await collect(
        new DelimiterStream(delim, { disposition: "suffix" }),
        chunk(data, cuts),
      );
      assert.deepEqual(got.frames, records);
      if (tail.length === 0) assert.equal(got.error, undefined);
      else {
        assert.ok(got.error instanceof UnexpectedEofError, `${got.error}`);
        assert.deepEqual(got.error.partial, tail);
      }
    }),
    { numRuns: NUM_RUNS },
  );
});

// --- (b) length-prefixed round trip -----------------------------------------

Deno.test("property: length-prefixed encode, any re-chunking, decode round-trips", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom(1 as const, 2 as const, 4 as const),
      fc.array(fc.uint8Array({ maxLength: 300, size: "medium" }), { maxLength: 10 }),
      cutsArb,
      async (headerSize, rawPayloads, cuts) => {
        const payloads = headerSize === 1
          ? rawPayloads.map((p) => p.subarray(0, 255))
          : rawPayloads;
        const wire = concat(payloads.map((p) => encodeLengthPrefixed(p, { headerSize })));
        const got = await collect(
          new LengthPrefixedDecoderStream({ headerSize }),
          chunk(wire, cuts),
        );
        assert.equal(got.error, undefined);
        assert.deepEqual(got.frames, payloads);
        // The encoder stream writes the same bytes as the function.
        const encoded = await collect(new LengthPrefixedEncoderStream({ headerSize }), payloads);
        assert.deepEqual(concat(encoded.frames), wire);
      },
    ),
    { numRuns: NUM_RUNS },
  );
});

Deno.test("property: a length-prefixed stream cut short fails with the frame's partial bytes", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom(1 as const, 2 as const, 4 as const),
      fc.array(fc.uint8Array({ maxLength: 100 }), { minLength: 1, maxLength: 6 }),
      fc.nat(),
      cutsArb,
      async (headerSize, payloads, cutAt, cuts) => {
        const frames = payloads.map((p) => encodeLengthPrefixed(p, { headerSize }));
        const wire = concat(frames);
        const end = cutAt % (wire.length + 1);
        // Where does `end` fall: between frames, or inside one?
        let start = 0;
        let whole = 0;
        while (whole < frames.length && start + frames[whole].length <= end) {
          start += frames[whole++].length;
        }
        const got = await collect(
          new LengthPrefixedDecoderStream({ headerSize }),
          chunk(wire.subarray(0, end), cuts),
        );
        assert.deepEqual(got.frames, payloads.slice(0, whole));
        if (end === start) assert.equal(got.error, undefined);
        else {
          assert.ok(got.error instanceof UnexpectedEofError, `${got.error}`);
          assert.deepEqual(got.error.partial, wire.subarray(start, end));
        }
      },
    ),
    { numRuns: NUM_RUNS },
  );
});

// --- (c) readUntil matches the reference split ------------------------------

Deno.test("property: readUntil over a ReadableStream matches a reference split, any chunking", async () => {
  await fc.assert(
    fc.asyncProperty(smallBytesArb, delimiterArb, cutsArb, async (data, delim, cuts) => {
      const { records, tail } = referenceSplit(data, delim);
      const stream = ReadableStream.from(chunk(data, cuts));
      const got = await readAll(() => readUntil(stream, delim, { maxBytes: 1 << 20 }));
      assert.deepEqual(got.records, records);
      if (tail.length === 0) assert.equal(got.error, undefined);
      else {
        assert.ok(got.error instanceof UnexpectedEofError, `${got.error}`);
        assert.deepEqual(got.error.partial, tail);
      }
      assert.equal(stream.locked, false);
    }),
    { numRuns: NUM_RUNS },
  );
});

Deno.test("property: readUntil over a ByteSource matches a reference split, any chunking and buffer size", async () => {
  await fc.assert(
    fc.asyncProperty(
      // Long enough inputs that the reader's buffer grows, wraps and compacts.
      fc.uint8Array({ max: 2, maxLength: 30_000, size: "max" }),
      delimiterArb,
      fc.array(fc.nat(), { maxLength: 40 }),
      fc.oneof(fc.integer({ min: 64, max: 512 }), fc.constantFrom(4096, 16384)),
      async (data, delim, cuts, bufferSize) => {
        const { records, tail } = referenceSplit(data, delim);
        const reader = new BufferedReader(byteSource(chunk(data, cuts)), { bufferSize });
        const got = await readAll(() => reader.readUntil(delim, { maxBytes: 1 << 20 }));
        // Every record kept its bytes although the reader reused its buffer.
        assert.deepEqual(got.records, records);
        if (tail.length === 0) assert.equal(got.error, undefined);
        else {
          assert.ok(got.error instanceof UnexpectedEofError, `${got.error}`);
          assert.deepEqual(got.error.partial, tail);
        }
      },
    ),
    { numRuns: NUM_RUNS },
  );
});

Deno.test("property: mixing readUntil and readExact on one stream loses and reorders nothing", async () => {
  await fc.assert(
    fc.asyncProperty(
      smallBytesArb,
      delimiterArb,
      cutsArb,
      fc.array(fc.option(fc.integer({ min: 0, max: 20 })), { minLength: 1, maxLength: 30 }),
      fc.boolean(),
      async (data, delim, cuts, ops, raw) => {
        const chunks = chunk(data, cuts);
        const reader = new BufferedReader(raw ? byteSource(chunks) : ReadableStream.from(chunks), {
          bufferSize: 64,
        });
        const parts: Uint8Array[] = [];
        let pos = 0;
        for (const n of ops) {
          if (n === null) {
            // readUntil: the reference is the next delimiter from `pos`.
            const at = naiveIndexOf(data, delim, pos);
            const r = await reader.readUntil(delim).catch((err) => err);
            if (at >= 0) {
              assert.deepEqual(r, data.subarray(pos, at + delim.length));
              pos = at + delim.length;
            } else if (pos === data.length) {
              assert.equal(r, null);
            } else {
              assert.ok(r instanceof UnexpectedEofError, `${r}`);
              assert.deepEqual(r.partial, data.subarray(pos));
              pos = data.length;
            }
            parts.push(r instanceof Uint8Array ? r : r?.partial ?? new Uint8Array(0));
          } else {
            const r = await reader.readExact(n).catch((err) => {
              assert.ok(err instanceof UnexpectedEofError);
              return err.partial as Uint8Array;
            });
            const want = data.subarray(pos, Math.min(pos + n, data.length));
            if (r === null) assert.equal(want.length, 0);
            else assert.deepEqual(r, want);
            parts.push(want);
            pos += want.length;
          }
        }
        // The rest, through the reader's readable, follows on seamlessly.
        parts.push(concat(await Array.fromAsync(reader.readable)));
        assert.deepEqual(concat(parts), data);
      },
    ),
    { numRuns: NUM_RUNS },
  );
});

// --- (d) limits hold exactly at the boundary --------------------------------

Deno.test("property: readUntil's maxBytes holds exactly at the boundary, any chunking and source", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 1, max: 300 }),
      fc.integer({ min: -3, max: 3 }),
      fc.uint8Array({ min: 10, max: 12, minLength: 1, maxLength: 4 }),
      cutsArb,
      fc.boolean(),
      async (maxBytes, delta, delim, cuts, raw) => {
        const length = Math.max(delim.length, maxBytes + delta); // record length, delimiter included
        const record = new Uint8Array(length).fill(0x61);
        record.set(delim, length - delim.length);
        const wire = concat([record, new Uint8Array([0x62, ...delim])]);
        const chunks = chunk(wire, cuts);
        const reader = new BufferedReader(raw ? byteSource(chunks) : ReadableStream.from(chunks), {
          bufferSize: 64,
        });
        const result = await reader.readUntil(delim, { maxBytes }).catch((e) => e);
        if (length <= maxBytes) {
          assert.deepEqual(result, record);
        } else {
          assert.ok(result instanceof LimitExceededError, `${result}`);
          assert.equal(result.limit, "maxBytes");
          assert.equal(result.value, maxBytes);
          // The record stays buffered: a larger limit reads it.
          assert.deepEqual(await reader.readUntil(delim, { maxBytes: length }), record);
        }
      },
    ),
    { numRuns: NUM_RUNS },
  );
});

Deno.test("property: DelimiterStream's maxFrameSize holds exactly at the boundary, any chunking", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 0, max: 200 }),
      fc.integer({ min: -3, max: 3 }),
      fc.uint8Array({ min: 10, max: 12, minLength: 1, maxLength: 4 }),
      cutsArb,
      fc.constantFrom("discard" as const, "suffix" as const),
      fc.boolean(),
      async (maxFrameSize, delta, delim, cuts, disposition, terminated) => {
        const length = Math.max(0, maxFrameSize + delta); // frame length, delimiter excluded
        const frame = new Uint8Array(length).fill(0x61);
        const wire = terminated ? concat([frame, delim]) : frame;
        const got = await collect(
          new DelimiterStream(delim, { maxFrameSize, disposition }),
          chunk(wire, cuts),
        );
        if (length > maxFrameSize) {
          assert.ok(got.error instanceof LimitExceededError, `${got.error}`);
          assert.equal(got.error.limit, "maxFrameSize");
          assert.equal(got.error.value, maxFrameSize);
          assert.deepEqual(got.frames, []);
        } else if (terminated) {
          assert.equal(got.error, undefined);
          assert.deepEqual(got.frames, [disposition === "suffix" ? wire : frame]);
        } else if (length === 0) {
          assert.deepEqual(got, { frames: [] });
        } else {
          assert.ok(got.error instanceof UnexpectedEofError, `${got.error}`);
          assert.deepEqual(got.error.partial, frame);
        }
      },
    ),
    { numRuns: NUM_RUNS },
  );
});

Deno.test("property: length-prefixed maxFrameSize holds exactly at the boundary, both ends", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom(2 as const, 4 as const),
      fc.integer({ min: 0, max: 500 }),
      fc.integer({ min: -3, max: 3 }),
      cutsArb,
      async (headerSize, maxFrameSize, delta, cuts) => {
        const size = Math.max(0, maxFrameSize + delta);
        const payload = new Uint8Array(size).fill(7);
        // Encode without the limit, as a peer that ignores it would.
        const wire = encodeLengthPrefixed(payload, { headerSize, maxFrameSize: size });
        const got = await collect(
          new LengthPrefixedDecoderStream({ headerSize, maxFrameSize }),
          chunk(wire, cuts),
        );
        if (size <= maxFrameSize) {
          assert.equal(got.error, undefined);
          assert.deepEqual(got.frames, [payload]);
          assert.deepEqual(encodeLengthPrefixed(payload, { headerSize, maxFrameSize }), wire);
        } else {
          assert.ok(got.error instanceof LimitExceededError, `${got.error}`);
          assert.equal(got.error.limit, "maxFrameSize");
          assert.equal(got.error.value, maxFrameSize);
          assert.throws(
            () => encodeLengthPrefixed(payload, { headerSize, maxFrameSize }),
            LimitExceededError,
          );
        }
      },
    ),
    { numRuns: NUM_RUNS },
  );
});
