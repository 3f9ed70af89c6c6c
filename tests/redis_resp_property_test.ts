// Property tests of the RESP2 reply reader behind RedisClient and RedisBus:
// any reply, delivered in any chunking, decodes to itself; garbage ends in a
// RespProtocolError (never another error, never a hang); oversized bulks are
// skipped with the stream kept in sync; every limit holds and is named; a
// bulk never aliases memory that is written again (the reader's chunks, or
// another bulk). And the command encoder: any arguments, parsed back, are
// themselves (strings as TextEncoder makes them UTF-8).
import assert from "node:assert/strict";
import { isDeepStrictEqual } from "node:util";
import fc from "fast-check";
import {
  encodeCommand,
  encodeReply,
  NEED_MORE,
  OversizedBulk,
  RespError,
  type RespLimits,
  RespParser,
  RespProtocolError,
  RespReader,
  type RespValue,
} from "../redis/_resp.ts";
import { concat } from "./support/bytes.ts";
import { chunk } from "./support/chunks.ts";

// Modest by default; raise for a deeper search: RESP_PROPERTY_RUNS=5000 deno test -A …
const NUM_RUNS = Number(Deno.env.get("RESP_PROPERTY_RUNS") ?? 300);
const encoder = new TextEncoder();

const WIDE: RespLimits = { maxBulk: 1 << 20, maxArray: 1 << 16, maxDepth: 8 };

// --- generators --------------------------------------------------------------

const line = fc.string({ maxLength: 40 }).filter((s) => !/[\r\n]/.test(s));

const leaf: fc.Arbitrary<RespValue> = fc.oneof(
  line,
  line.map((m) => new RespError(m)),
  fc.integer({ min: -Number.MAX_SAFE_INTEGER, max: Number.MAX_SAFE_INTEGER }),
  fc.oneof(
    fc.bigInt({ min: 2n ** 53n, max: 2n ** 63n - 1n }),
    fc.bigInt({ min: -(2n ** 63n), max: -(2n ** 53n) }),
  ),
  fc.uint8Array({ maxLength: 64 }),
  // Bulk strings full of what the protocol uses: CRLF, type bytes.
  fc.array(fc.constantFrom(13, 10, 36, 42, 43, 45, 58, 48), { maxLength: 20 }).map((a) =>
    Uint8Array.from(a)
  ),
  fc.constant(null),
);

const reply: fc.Arbitrary<RespValue> = fc.letrec<{ value: RespValue }>((tie) => ({
  value: fc.oneof(
    // Nested no deeper than WIDE.maxDepth allows.
    { depthSize: "small", withCrossShrink: true, maxDepth: 6 },
    leaf,
    fc.array(tie("value"), { maxLength: 5 }),
  ),
})).value;

/** Everything a parser yields for these chunks (no end-of-stream check). */
function parseAll(chunks: Uint8Array[], limits: RespLimits): RespValue[] {
  const parser = new RespParser(limits);
  const out: RespValue[] = [];
  for (const chunk of chunks) {
    parser.push(chunk);
    for (let v = parser.next(); v !== NEED_MORE; v = parser.next()) out.push(v);
  }
  return out;
}

/** Everything a RespReader reads from a stream of these chunks, and how it ended. */
async function readAll(
  chunks: Uint8Array[],
  limits: RespLimits,
): Promise<{ values: RespValue[]; error?: unknown }> {
  const reader = new RespReader(ReadableStream.from(chunks), limits);
  const values: RespValue[] = [];
  try {
    for (let v = await reader.read(); v !== undefined; v = await reader.read()) values.push(v);
    return { values };
  } catch (error) {
    return { values, error };
  }
}

/** What a reader with `maxBulk` makes of `value`: bulks over it become OversizedBulk. */
function bounded(value: RespValue, maxBulk: number): RespValue {
  if (value instanceof Uint8Array && value.length > maxBulk) return new OversizedBulk(value.length);
  if (Array.isArray(value)) return value.map((v) => bounded(v, maxBulk));
  return value;
}

// --- properties --------------------------------------------------------------

Deno.test("resp property: any replies, in any chunking, decode to themselves", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(reply, { minLength: 1, maxLength: 8 }),
      fc.array(fc.nat(), { maxLength: 12 }),
      async (values, cuts) => {
        const chunks = chunk(concat(values.map(encodeReply)), cuts);
        assert.deepEqual(parseAll(chunks, WIDE), values);
        const read = await readAll(chunks, WIDE);
        assert.equal(read.error, undefined);
        assert.deepEqual(read.values, values);
      },
    ),
    { numRuns: NUM_RUNS },
  );
});

Deno.test("resp property: a byte at a time and all at once agree (big bulks gathered)", () => {
  fc.assert(
    fc.property(
      fc.array(fc.oneof(reply, fc.uint8Array({ minLength: 16_000, maxLength: 40_000 })), {
        minLength: 1,
        maxLength: 4,
      }),
      fc.array(fc.nat(), { maxLength: 40 }),
      (values, cuts) => {
        const bytes = concat(values.map(encodeReply));
        assert.deepEqual(parseAll([bytes], WIDE), values);
        assert.deepEqual(parseAll(chunk(bytes, cuts), WIDE), values);
      },
    ),
    { numRuns: 60 },
  );
});

Deno.test("resp property: oversized bulks become OversizedBulk and the stream stays in sync", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(
        fc.oneof(
          reply,
          fc.uint8Array({ minLength: 0, maxLength: 300 }),
          fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 3 }),
        ),
        { minLength: 1, maxLength: 8 },
      ),
      fc.integer({ min: 0, max: 100 }),
      fc.array(fc.nat(), { maxLength: 12 }),
      async (values, maxBulk, cuts) => {
        const limits = { ...WIDE, maxBulk };
        const chunks = chunk(concat(values.map(encodeReply)), cuts);
        const expected = values.map((v) => bounded(v, maxBulk));
        assert.deepEqual(parseAll(chunks, limits), expected);
        const read = await readAll(chunks, limits);
        assert.equal(read.error, undefined);
        assert.deepEqual(read.values, expected);
      },
    ),
    { numRuns: NUM_RUNS },
  );
});

const token = fc.oneof(
  fc.constantFrom("*", "$", ":", "+", "-", "\r\n", "\r", "\n", "-1", "0", "1", "3", "99999999999"),
  fc.string({ maxLength: 6 }),
  fc.integer({ min: -2, max: 20 }).map(String),
);

const garbage = fc.oneof(
  fc.uint8Array({ maxLength: 200 }),
  fc.array(token, { maxLength: 40 }).map((t) => encoder.encode(t.join(""))),
  // Valid replies cut short, or with bytes flipped.
  fc.tuple(reply, fc.nat(), fc.nat(255)).map(([v, at, b]) => {
    const bytes = encodeReply(v);
    const cut = bytes.slice(0, at % (bytes.length + 1));
    if (cut.length > 0) cut[at % cut.length] = b;
    return cut;
  }),
);

Deno.test("resp property: garbage never hangs, and fails only with RespProtocolError", async () => {
  await fc.assert(
    fc.asyncProperty(
      garbage,
      fc.array(fc.nat(), { maxLength: 10 }),
      fc.record({
        maxBulk: fc.integer({ min: 0, max: 64 }),
        maxLine: fc.integer({ min: 3, max: 64 }),
        maxArray: fc.integer({ min: 0, max: 8 }),
        maxDepth: fc.integer({ min: 1, max: 4 }),
      }),
      async (bytes, cuts, limits) => {
        const chunks = chunk(bytes, cuts);
        const read = await readAll(chunks, limits);
        if (read.error !== undefined) {
          assert.ok(read.error instanceof RespProtocolError, String(read.error));
          assert.equal(read.error.code, "ERR_RESP_PROTOCOL");
        }
        // The synchronous parser: the same, and broken for good after an error.
        const parser = new RespParser(limits);
        try {
          for (const chunk of chunks) {
            parser.push(chunk);
            while (parser.next() !== NEED_MORE) {
              // drain
            }
          }
        } catch (err) {
          assert.ok(err instanceof RespProtocolError, String(err));
          assert.throws(() => parser.next(), (again: unknown) => again === err);
        }
      },
    ),
    { numRuns: NUM_RUNS * 2 },
  );
});

Deno.test("resp property: lines, arrays and depth over their limit are refused, naming it", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 4, max: 200 }),
      fc.constantFrom("+", "-", ":", "$", "*"),
      fc.array(fc.nat(), { maxLength: 8 }),
      async (maxLine, type, cuts) => {
        const limits = { maxBulk: 1000, maxLine, maxArray: 3, maxDepth: 2 };
        // A line of exactly maxLine bytes (CRLF included) is fine…
        const fits = type === "+" || type === "-" ? `${type}${"x".repeat(maxLine - 3)}\r\n` : "";
        if (fits !== "") {
          const read = await readAll(chunk(encoder.encode(fits), cuts), limits);
          assert.equal(read.error, undefined);
          assert.equal(read.values.length, 1);
        }
        // …one byte more is not, and it is refused before any CRLF arrives.
        const long = encoder.encode(`${type}${"7".repeat(maxLine)}`);
        const read = await readAll(chunk(long, cuts), limits);
        assert.ok(read.error instanceof RespProtocolError);
        assert.equal(read.error.limit, "maxLine");
        assert.match(read.error.message, new RegExp(`maxLine \\(${maxLine} bytes\\)`));
      },
    ),
    { numRuns: NUM_RUNS },
  );
  const limits = { maxBulk: 1000, maxArray: 3, maxDepth: 2 };
  const cases: [string, string, RespValue | undefined][] = [
    ["*3\r\n:1\r\n:2\r\n:3\r\n", "", [1, 2, 3]],
    ["*4\r\n", "maxArray", undefined],
    ["*1\r\n*1\r\n:1\r\n", "", [[1]]],
    ["*1\r\n*1\r\n*1\r\n:1\r\n", "maxDepth", undefined],
    ["*1\r\n*0\r\n", "", [[]]],
  ];
  for (const [wire, limit, value] of cases) {
    const read = await readAll([encoder.encode(wire)], limits);
    if (limit === "") {
      assert.equal(read.error, undefined, wire);
      assert.deepEqual(read.values, [value]);
    } else {
      assert.ok(read.error instanceof RespProtocolError, wire);
      assert.equal(read.error.limit, limit);
      assert.match(read.error.message, new RegExp(`${limit} \\(`));
    }
  }
});

Deno.test("resp: the stream ending inside a reply is a RespProtocolError; between replies it is the end", async () => {
  const whole = encodeReply([encoder.encode("a"), 1]);
  for (let cut = 1; cut < whole.length; cut++) {
    const read = await readAll([whole.slice(0, cut)], WIDE);
    assert.ok(read.error instanceof RespProtocolError, `cut at ${cut}`);
    assert.match(read.error.message, /ended inside a reply/);
  }
  assert.deepEqual(await readAll([whole], WIDE), { values: [[encoder.encode("a"), 1]] });
});

// --- aliasing ----------------------------------------------------------------

/** Every bulk string in `values`. */
function bulks(values: RespValue[], out: Uint8Array[] = []): Uint8Array[] {
  for (const v of values) {
    if (v instanceof Uint8Array) out.push(v);
    else if (Array.isArray(v)) bulks(v, out);
  }
  return out;
}

/** deepEqual with a short message (a diff of 20 KB bulks takes fast-check's shrinking forever). */
function assertSame(actual: RespValue[], expected: RespValue[], what: string): void {
  if (!isDeepStrictEqual(actual, expected)) assert.fail(`${what}: not the replies sent`);
}

/**
 * The chunks as a socket reading into one buffer gives them: each a view of
 * the same memory, overwritten by the next read (and by garbage at the end).
 */
function reusedReads(chunks: Uint8Array[]): { views: Uint8Array[]; wipe: () => void } {
  const shared = new Uint8Array(Math.max(1, ...chunks.map((c) => c.length)));
  return {
    views: chunks.map((c) => shared.subarray(0, c.length)),
    wipe: () => shared.fill(0xee),
  };
}

Deno.test("resp property: bulks are copies, never views of a reused read buffer or of each other", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.oneof(reply, fc.uint8Array({ minLength: 16_000, maxLength: 20_000 })), {
        minLength: 1,
        maxLength: 8,
      }),
      fc.array(fc.nat(), { maxLength: 12 }),
      async (values, cuts) => {
        const chunks = chunk(concat(values.map(encodeReply)), cuts);
        // The parser: each chunk written into the shared buffer just before its push.
        const { views, wipe } = reusedReads(chunks);
        const parser = new RespParser(WIDE);
        const parsed: RespValue[] = [];
        for (let i = 0; i < chunks.length; i++) {
          views[i].set(chunks[i]);
          parser.push(views[i]);
          for (let v = parser.next(); v !== NEED_MORE; v = parser.next()) parsed.push(v);
        }
        wipe();
        assertSame(parsed, values, "RespParser");
        // The reader: the stream's source overwrites the buffer on every pull.
        const reused = reusedReads(chunks);
        let next = 0;
        const stream = new ReadableStream<Uint8Array>({
          pull(controller) {
            if (next === chunks.length) {
              reused.wipe();
              controller.close();
              return;
            }
            reused.views[next].set(chunks[next]);
            controller.enqueue(reused.views[next++]);
          },
        }, { highWaterMark: 0 });
        const reader = new RespReader(stream, WIDE);
        const read: RespValue[] = [];
        for (let v = await reader.read(); v !== undefined; v = await reader.read()) read.push(v);
        reused.wipe();
        assertSame(read, values, "RespReader");
        // Bulks sharing memory (one reply's copy) never overlap.
        const spans = bulks(parsed).filter((b) => b.length > 0)
          .map((b) => ({ buffer: b.buffer, from: b.byteOffset, to: b.byteOffset + b.length }))
          .sort((a, b) => a.from - b.from);
        for (let i = 0; i < spans.length; i++) {
          for (let j = i + 1; j < spans.length && spans[j].from < spans[i].to; j++) {
            assert.notEqual(spans[j].buffer, spans[i].buffer, "two bulks overlap");
          }
        }
      },
    ),
    { numRuns: NUM_RUNS },
  );
});

// --- the command encoder -----------------------------------------------------

// Any UTF-16 units, lone surrogates included; and whole code points (non-BMP).
const anyUnits = fc.string({
  unit: fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c)),
  maxLength: 400,
});
const argument: fc.Arbitrary<string | Uint8Array> = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.string({ unit: "grapheme", maxLength: 200 }),
  fc.string({ unit: "binary", maxLength: 400 }),
  anyUnits,
  // Lengths around a change in digits, with multi-byte characters (the head's width).
  fc.tuple(fc.constantFrom(3, 9, 10, 33, 34, 99, 100, 333, 334, 999, 1000), fc.nat(3)).map((
    [n, w],
  ) => ["a", "é", "€", "😀"][w].repeat(n)),
  fc.uint8Array({ maxLength: 300 }),
);

/** The bytes a command's argument must be sent as. */
function utf8(arg: string | Uint8Array): Uint8Array {
  return typeof arg === "string" ? encoder.encode(arg) : arg;
}

Deno.test("resp property: encodeCommand parsed back is its arguments", () => {
  fc.assert(
    fc.property(
      fc.array(argument, { minLength: 1, maxLength: 12 }),
      fc.array(argument, { maxLength: 4 }),
      (args, other) => {
        const bytes = encodeCommand(args);
        const before = bytes.slice();
        // The next command (encoded in the same scratch space) changes nothing of this one.
        if (other.length > 0) encodeCommand(other);
        assert.deepEqual(bytes, before);
        const parsed = parseAll([bytes], WIDE);
        assert.deepEqual(parsed, [args.map(utf8)]);
      },
    ),
    { numRuns: NUM_RUNS },
  );
});

Deno.test("resp: encodeCommand writes strings as TextEncoder does, big commands too", () => {
  // A lone surrogate is U+FFFD (EF BF BD), as TextEncoder makes it.
  assert.deepEqual(
    encodeCommand(["SET", "\ud800", "a\udc00b"]),
    encoder.encode("*3\r\n$3\r\nSET\r\n$3\r\n\ufffd\r\n$5\r\na\ufffdb\r\n"),
  );
  assert.deepEqual(
    encodeCommand(["GET", "\u{1f600}", new Uint8Array([0, 13, 10])]),
    Uint8Array.from([
      ...encoder.encode("*3\r\n$3\r\nGET\r\n$4\r\n\u{1f600}\r\n$3\r\n"),
      0,
      13,
      10,
      13,
      10,
    ]),
  );
  assert.deepEqual(encodeCommand([]), encoder.encode("*0\r\n"));
  assert.deepEqual(encodeCommand([""]), encoder.encode("*1\r\n$0\r\n\r\n"));
  // Past the scratch buffer (64 KiB worst case): measured, and the same.
  const big = [
    "€".repeat(30_000),
    "x".repeat(70_000),
    Uint8Array.from({ length: 70_000 }, (_, i) => (i * 7919) & 255),
  ];
  for (const args of [big, [big[0]], [big[1]], ["XADD", "k", "*", "d", big[2]]]) {
    assert.deepEqual(parseAll([encodeCommand(args)], WIDE), [args.map(utf8)]);
  }
});
