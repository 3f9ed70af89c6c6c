import assert from "node:assert/strict";
import {
  DEFAULT_MAX_DELIMITED_FRAME_SIZE,
  DEFAULT_MAX_FRAME_SIZE,
  DelimiterStream,
  type DelimiterStreamOptions,
  encodeLengthPrefixed,
  LengthPrefixedDecoderStream,
  LengthPrefixedEncoderStream,
  type LengthPrefixedOptions,
  LimitExceededError,
  UnexpectedEofError,
} from "../io/mod.ts";
import { NetkitError } from "../errors.ts";
import { concat } from "./support/bytes.ts";
import { collect as run } from "./support/chunks.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const bytes = (s: string) => enc.encode(s);
const text = (b: Uint8Array) => dec.decode(b);

function chunksOf(...chunks: (string | Uint8Array | number[])[]): Uint8Array[] {
  return chunks.map((c) =>
    typeof c === "string" ? bytes(c) : c instanceof Uint8Array ? c : new Uint8Array(c)
  );
}

/** Splits `data` into chunks of `size` bytes. */
function split(data: Uint8Array, size: number): Uint8Array[] {
  const out = [];
  for (let i = 0; i < data.length; i += size) out.push(data.subarray(i, i + size));
  return out;
}

function delimited(
  delimiter: string | Uint8Array,
  chunks: Uint8Array[],
  options?: DelimiterStreamOptions,
) {
  return run(new DelimiterStream(delimiter, options), chunks);
}

// --- DelimiterStream ------------------------------------------------------

Deno.test("DelimiterStream splits frames and discards the delimiter by default", async () => {
  const { frames, error } = await delimited("\n", chunksOf("a\nbb\n\nccc\n"));
  assert.equal(error, undefined);
  assert.deepEqual(frames.map(text), ["a", "bb", "", "ccc"]);
});

Deno.test("DelimiterStream with disposition suffix keeps the delimiter on each frame", async () => {
  const { frames } = await delimited("\r\n", chunksOf("a\r\n", "b\r", "\n\r\n"), {
    disposition: "suffix",
  });
  assert.deepEqual(frames.map(text), ["a\r\n", "b\r\n", "\r\n"]);
});

Deno.test("DelimiterStream finds a multi-byte delimiter split across chunks", async () => {
  const data = bytes("head1\r\n\r\nhead2\r\n\r\n");
  for (let size = 1; size <= data.length; size++) {
    for (const disposition of ["discard", "suffix"] as const) {
      const { frames, error } = await delimited("\r\n\r\n", split(data, size), { disposition });
      assert.equal(error, undefined, `chunk size ${size}`);
      const end = disposition === "suffix" ? "\r\n\r\n" : "";
      assert.deepEqual(frames.map(text), [`head1${end}`, `head2${end}`], `chunk size ${size}`);
    }
  }
});

Deno.test("DelimiterStream does not match a partial delimiter that fails to complete", async () => {
  const data = bytes("a\r\n\rb\r\r\n\r\nc\r\n\r\n");
  for (let size = 1; size <= data.length; size++) {
    const { frames } = await delimited("\r\n\r\n", split(data, size));
    assert.deepEqual(frames.map(text), ["a\r\n\rb\r", "c"], `chunk size ${size}`);
  }
});

Deno.test("DelimiterStream treats a string and the same bytes as the same delimiter", async () => {
  const data = chunksOf("x→y→", "z→");
  const a = await delimited("→", data);
  const b = await delimited(new Uint8Array([0xe2, 0x86, 0x92]), data);
  assert.deepEqual(a.frames.map(text), ["x", "y", "z"]);
  assert.deepEqual(b.frames, a.frames);
});

Deno.test("DelimiterStream emits frames inside one chunk as views of it, without copying", async () => {
  const chunk = bytes("one;two;thr");
  const transform = new DelimiterStream(";");
  const frames = await Array.fromAsync(
    ReadableStream.from([chunk, bytes("ee;")]).pipeThrough(transform),
  );
  assert.deepEqual(frames.map(text), ["one", "two", "three"]);
  assert.equal(frames[0].buffer, chunk.buffer);
  assert.equal(frames[1].buffer, chunk.buffer);
  assert.equal(frames[1].byteOffset, chunk.byteOffset + 4);
  // The frame gathered from two chunks is a buffer of its own.
  assert.notEqual(frames[2].buffer, chunk.buffer);
});

Deno.test("DelimiterStream closes cleanly on empty input and after a final delimiter", async () => {
  assert.deepEqual(await delimited("\n", []), { frames: [] });
  assert.deepEqual(await delimited("\n", chunksOf("", "")), { frames: [] });
  const { frames, error } = await delimited("\n", chunksOf("a\n", ""));
  assert.equal(error, undefined);
  assert.deepEqual(frames.map(text), ["a"]);
});

Deno.test("DelimiterStream errors with UnexpectedEofError carrying an unterminated tail", async () => {
  const { frames, error } = await delimited("\r\n", chunksOf("done\r\npart", "ial\r"));
  assert.deepEqual(frames.map(text), ["done"]);
  assert.ok(error instanceof UnexpectedEofError);
  assert.ok(error instanceof NetkitError);
  assert.equal(error.code, "ERR_UNEXPECTED_EOF");
  assert.equal(text(error.partial), "partial\r");
  assert.match(error.message, /stream ended after 8 bytes, before the delimiter "\\r\\n"/);
});

Deno.test("DelimiterStream's partial tail from one chunk is a copy", async () => {
  const chunk = bytes("tail");
  const { error } = await delimited("\n", [chunk]);
  chunk.fill(0);
  assert.ok(error instanceof UnexpectedEofError);
  assert.equal(text(error.partial), "tail");
});

Deno.test("DelimiterStream accepts a frame of exactly maxFrameSize, however it is chunked", async () => {
  const data = bytes("12345678\r\n1234\r\n");
  for (let size = 1; size <= data.length; size++) {
    for (const disposition of ["discard", "suffix"] as const) {
      const { frames, error } = await delimited("\r\n", split(data, size), {
        maxFrameSize: 8,
        disposition,
      });
      assert.equal(error, undefined, `chunk size ${size}, ${disposition}`);
      assert.equal(frames.length, 2);
    }
  }
});

Deno.test("DelimiterStream rejects a frame of maxFrameSize + 1 with LimitExceededError, however it is chunked", async () => {
  const data = bytes("ok\r\n123456789\r\n");
  for (let size = 1; size <= data.length; size++) {
    for (const disposition of ["discard", "suffix"] as const) {
      const { error } = await delimited("\r\n", split(data, size), {
        maxFrameSize: 8,
        disposition,
      });
      assert.ok(error instanceof LimitExceededError, `chunk size ${size}: ${error}`);
      assert.equal(error.code, "ERR_LIMIT_EXCEEDED");
      assert.equal(error.limit, "maxFrameSize");
      assert.equal(error.value, 8);
      assert.match(
        error.message,
        /DelimiterStream: no delimiter "\\r\\n" within the frame limit: over maxFrameSize \(8 bytes\)/,
      );
    }
  }
});

Deno.test("DelimiterStream fails an endless frame without buffering more than the limit", async () => {
  let pulled = 0;
  const endless = new ReadableStream<Uint8Array>({
    pull(c) {
      pulled++;
      c.enqueue(new Uint8Array(100).fill(0x61));
    },
  });
  const frames = endless.pipeThrough(new DelimiterStream("\n", { maxFrameSize: 1000 }));
  await assert.rejects(Array.fromAsync(frames), LimitExceededError);
  assert.ok(pulled <= 13, `pulled ${pulled} chunks of 100 bytes for a 1000-byte limit`);
});

Deno.test("DelimiterStream fails an unterminated tail over the limit with LimitExceededError", async () => {
  // 9 bytes that cannot end in a delimiter are over 8 whatever comes next.
  for (const chunks of [chunksOf("123456789"), split(bytes("123456789"), 1)]) {
    const { error } = await delimited("\r\n", chunks, { maxFrameSize: 8 });
    assert.ok(error instanceof LimitExceededError);
  }
  // ... but 8 bytes and a "\r" might still be a frame of 8: that is an EOF.
  const { error } = await delimited("\r\n", chunksOf("12345678\r"), { maxFrameSize: 8 });
  assert.ok(error instanceof UnexpectedEofError);
  assert.equal(text(error.partial), "12345678\r");
});

Deno.test("DelimiterStream defaults maxFrameSize to 64 KiB", async () => {
  assert.equal(DEFAULT_MAX_DELIMITED_FRAME_SIZE, 65536);
  const ok = new Uint8Array(65537).fill(0x61);
  ok[65536] = 0x0a;
  assert.equal((await delimited("\n", split(ok, 1000))).frames[0].length, 65536);
  const over = new Uint8Array(65538).fill(0x61);
  over[65537] = 0x0a;
  assert.ok((await delimited("\n", split(over, 1000))).error instanceof LimitExceededError);
});

Deno.test("DelimiterStream rejects bad arguments", () => {
  assert.throws(() => new DelimiterStream(""), TypeError);
  assert.throws(() => new DelimiterStream(new Uint8Array(0)), TypeError);
  assert.throws(() => new DelimiterStream("\n", { maxFrameSize: -1 }), RangeError);
  assert.throws(() => new DelimiterStream("\n", { maxFrameSize: 1.5 }), RangeError);
  assert.throws(
    // @ts-expect-error: checking a bad value from untyped code
    () => new DelimiterStream("\n", { disposition: "prefix" }),
    TypeError,
  );
});

Deno.test("DelimiterStream is not affected by the caller changing its delimiter array", async () => {
  const delimiter = new Uint8Array([0x3b]);
  const transform = new DelimiterStream(delimiter);
  delimiter[0] = 0x2c;
  const { frames } = await run(transform, chunksOf("a;b,c;"));
  assert.deepEqual(frames.map(text), ["a", "b,c"]);
});

// --- length-prefixed --------------------------------------------------------

Deno.test("encodeLengthPrefixed() writes a big-endian header of 1, 2 or 4 bytes", () => {
  const payload = new Uint8Array(258).fill(9);
  assert.deepEqual(encodeLengthPrefixed(payload).subarray(0, 4), new Uint8Array([0, 0, 1, 2]));
  assert.deepEqual(
    encodeLengthPrefixed(payload, { headerSize: 2 }).subarray(0, 2),
    new Uint8Array([1, 2]),
  );
  assert.deepEqual(encodeLengthPrefixed("hi", { headerSize: 1 }), new Uint8Array([2, 104, 105]));
  assert.deepEqual(encodeLengthPrefixed(new Uint8Array(0)), new Uint8Array([0, 0, 0, 0]));
  assert.deepEqual(encodeLengthPrefixed(payload).subarray(4), payload);
});

Deno.test("encodeLengthPrefixed() accepts exactly maxFrameSize and rejects one byte more", () => {
  assert.equal(encodeLengthPrefixed(new Uint8Array(100), { maxFrameSize: 100 }).length, 104);
  assert.throws(
    () => encodeLengthPrefixed(new Uint8Array(101), { maxFrameSize: 100 }),
    (err: unknown) => {
      assert.ok(err instanceof LimitExceededError);
      assert.equal(err.code, "ERR_LIMIT_EXCEEDED");
      assert.equal(err.limit, "maxFrameSize");
      assert.equal(err.value, 100);
      assert.match(err.message, /a 101-byte payload is too large to send: over maxFrameSize/);
      return true;
    },
  );
});

Deno.test("encodeLengthPrefixed() defaults maxFrameSize to 1 MiB", () => {
  assert.equal(DEFAULT_MAX_FRAME_SIZE, 1048576);
  assert.equal(encodeLengthPrefixed(new Uint8Array(1048576)).length, 1048580);
  assert.throws(() => encodeLengthPrefixed(new Uint8Array(1048577)), LimitExceededError);
});

Deno.test("encodeLengthPrefixed() rejects a payload its header cannot describe", () => {
  assert.equal(encodeLengthPrefixed(new Uint8Array(255), { headerSize: 1 }).length, 256);
  assert.throws(
    () => encodeLengthPrefixed(new Uint8Array(256), { headerSize: 1 }),
    /a 256-byte payload does not fit a 1-byte length header \(at most 255\)/,
  );
  assert.equal(encodeLengthPrefixed(new Uint8Array(65535), { headerSize: 2 }).length, 65537);
  assert.throws(() => encodeLengthPrefixed(new Uint8Array(65536), { headerSize: 2 }), RangeError);
});

Deno.test("length-prefixed options are validated", () => {
  // @ts-expect-error: checking a bad value from untyped code
  assert.throws(() => encodeLengthPrefixed("x", { headerSize: 3 }), RangeError);
  // @ts-expect-error: checking a bad value from untyped code
  assert.throws(() => new LengthPrefixedDecoderStream({ headerSize: 8 }), RangeError);
  assert.throws(() => new LengthPrefixedEncoderStream({ maxFrameSize: -1 }), RangeError);
  assert.throws(() => new LengthPrefixedDecoderStream({ maxFrameSize: NaN }), RangeError);
});

Deno.test("LengthPrefixedEncoderStream emits one frame per payload", async () => {
  const { frames } = await run(
    new LengthPrefixedEncoderStream({ headerSize: 2 }),
    chunksOf("ab", "", "c"),
  );
  assert.deepEqual(frames, chunksOf([0, 2, 97, 98], [0, 0], [0, 1, 99]));
});

Deno.test("LengthPrefixedEncoderStream errors the stream on a payload over maxFrameSize", async () => {
  const { frames, error } = await run(
    new LengthPrefixedEncoderStream({ maxFrameSize: 3 }),
    chunksOf("abc", "abcd"),
  );
  assert.deepEqual(frames, [encodeLengthPrefixed("abc")]);
  assert.ok(error instanceof LimitExceededError);
  assert.equal(error.limit, "maxFrameSize");
});

Deno.test("LengthPrefixedDecoderStream decodes frames however the bytes are chunked", async () => {
  const payloads = chunksOf("hello", "", new Uint8Array(300).fill(7), "x");
  for (const headerSize of [2, 4] as const) {
    const wire = concat(payloads.map((p) => encodeLengthPrefixed(p, { headerSize })));
    for (const size of [1, 2, 3, 5, 7, 64, 1000]) {
      const { frames, error } = await run(
        new LengthPrefixedDecoderStream({ headerSize }),
        split(wire, size),
      );
      assert.equal(error, undefined);
      assert.deepEqual(frames, payloads, `header ${headerSize}, chunk size ${size}`);
    }
  }
});

Deno.test("LengthPrefixedDecoderStream reads 1-byte headers", async () => {
  const { frames } = await run(
    new LengthPrefixedDecoderStream({ headerSize: 1 }),
    chunksOf([3, 1, 2], [3, 1, 255]),
  );
  assert.deepEqual(frames, chunksOf([1, 2, 3], [255]));
});

Deno.test("LengthPrefixedDecoderStream reads lengths with the top bit set as unsigned", async () => {
  const { error } = await run(
    new LengthPrefixedDecoderStream({ maxFrameSize: 2 ** 32 - 1 }),
    chunksOf([0x80, 0, 0, 1, 1, 2]),
  );
  // 2147483649 bytes announced, 2 arrived: an EOF, not a negative length.
  assert.ok(error instanceof UnexpectedEofError);
  assert.deepEqual(error.partial, new Uint8Array([0x80, 0, 0, 1, 1, 2]));
  assert.match(error.message, /before the rest of a 2147483649-byte frame payload/);
});

Deno.test("LengthPrefixedDecoderStream emits payloads inside one chunk as views of it", async () => {
  const chunk = new Uint8Array([0, 0, 0, 2, 1, 2, 0, 0, 0, 1, 3, 0, 0]);
  const frames = await Array.fromAsync(
    ReadableStream.from([chunk, new Uint8Array([0, 1, 4])]).pipeThrough(
      new LengthPrefixedDecoderStream(),
    ),
  );
  assert.deepEqual(frames, chunksOf([1, 2], [3], [4]));
  assert.equal(frames[0].buffer, chunk.buffer);
  assert.equal(frames[1].buffer, chunk.buffer);
});

Deno.test("LengthPrefixedDecoderStream accepts exactly maxFrameSize and rejects one byte more", async () => {
  const options: LengthPrefixedOptions = { headerSize: 2, maxFrameSize: 10 };
  const ok = encodeLengthPrefixed(new Uint8Array(10), { headerSize: 2 });
  for (const size of [1, 3, 12]) {
    const { frames, error } = await run(new LengthPrefixedDecoderStream(options), split(ok, size));
    assert.equal(error, undefined);
    assert.equal(frames[0].length, 10);
  }
  const over = encodeLengthPrefixed(new Uint8Array(11), { headerSize: 2 });
  for (const size of [1, 3, 13]) {
    const { error } = await run(new LengthPrefixedDecoderStream(options), split(over, size));
    assert.ok(error instanceof LimitExceededError);
    assert.equal(error.code, "ERR_LIMIT_EXCEEDED");
    assert.equal(error.limit, "maxFrameSize");
    assert.equal(error.value, 10);
    assert.match(error.message, /a peer announced a 11-byte frame: over maxFrameSize \(10 bytes\)/);
  }
});

Deno.test("LengthPrefixedDecoderStream fails on an oversized header before any payload arrives", async () => {
  let pulls = 0;
  const source = new ReadableStream<Uint8Array>({
    pull(c) {
      if (pulls++ === 0) c.enqueue(new Uint8Array([0x7f, 0xff, 0xff, 0xff]));
      // Never sends the payload: the error must come from the header alone.
    },
  });
  const frames = source.pipeThrough(new LengthPrefixedDecoderStream());
  await assert.rejects(Array.fromAsync(frames), LimitExceededError);
});

Deno.test("LengthPrefixedDecoderStream errors with UnexpectedEofError on a partial header", async () => {
  const { frames, error } = await run(
    new LengthPrefixedDecoderStream(),
    chunksOf([0, 0, 0, 1, 9, 0], [0]),
  );
  assert.deepEqual(frames, chunksOf([9]));
  assert.ok(error instanceof UnexpectedEofError);
  assert.equal(error.code, "ERR_UNEXPECTED_EOF");
  assert.deepEqual(error.partial, new Uint8Array([0, 0]));
  assert.match(
    error.message,
    /stream ended after 2 bytes, before the rest of a 4-byte frame length header/,
  );
});

Deno.test("LengthPrefixedDecoderStream errors with UnexpectedEofError on a partial payload", async () => {
  const { error } = await run(
    new LengthPrefixedDecoderStream({ headerSize: 2 }),
    chunksOf([0, 5, 1], [2, 3]),
  );
  assert.ok(error instanceof UnexpectedEofError);
  assert.deepEqual(error.partial, new Uint8Array([0, 5, 1, 2, 3]));
  assert.match(error.message, /before the rest of a 5-byte frame payload/);
});

Deno.test("LengthPrefixedDecoderStream closes cleanly between frames", async () => {
  assert.deepEqual(await run(new LengthPrefixedDecoderStream(), []), { frames: [] });
  const { frames, error } = await run(new LengthPrefixedDecoderStream(), chunksOf([0, 0, 0, 0]));
  assert.equal(error, undefined);
  assert.deepEqual(frames, [new Uint8Array(0)]);
});

Deno.test("length-prefixed encoder and decoder round-trip through pipeThrough", async () => {
  const messages = ["", "a", "hello world", "é→".repeat(1000)];
  const decoded = ReadableStream.from(messages.map(bytes))
    .pipeThrough(new LengthPrefixedEncoderStream())
    .pipeThrough(new LengthPrefixedDecoderStream());
  assert.deepEqual((await Array.fromAsync(decoded)).map(text), messages);
});

// --- stream behaviour of the framing transforms -----------------------------

Deno.test("DelimiterStream delivers every frame before an unterminated tail's error", async () => {
  const { frames, error } = await delimited("\n", chunksOf("a\nb\nc\npartial"));
  assert.deepEqual(frames.map(text), ["a", "b", "c"]);
  assert.ok(error instanceof UnexpectedEofError);
  assert.equal(text(error.partial), "partial");
});

Deno.test("DelimiterStream delivers every frame before a frame over the limit", async () => {
  const { frames, error } = await delimited("\n", chunksOf("a\nb\ntoo long\nc\n"), {
    maxFrameSize: 3,
  });
  assert.deepEqual(frames.map(text), ["a", "b"]);
  assert.ok(error instanceof LimitExceededError);
});

Deno.test("LengthPrefixedDecoderStream delivers every payload before a partial frame's error", async () => {
  const wire = concat([
    encodeLengthPrefixed("one"),
    encodeLengthPrefixed("two"),
    encodeLengthPrefixed("three").subarray(0, 6),
  ]);
  const { frames, error } = await run(new LengthPrefixedDecoderStream(), [wire]);
  assert.deepEqual(frames.map(text), ["one", "two"]);
  assert.ok(error instanceof UnexpectedEofError);
  assert.deepEqual(error.partial, new Uint8Array([0, 0, 0, 5, 116, 104]));
});

Deno.test("LengthPrefixedDecoderStream delivers every payload before an oversized header", async () => {
  const wire = concat([encodeLengthPrefixed("ok"), encodeLengthPrefixed("too big")]);
  const { frames, error } = await run(new LengthPrefixedDecoderStream({ maxFrameSize: 4 }), [wire]);
  assert.deepEqual(frames.map(text), ["ok"]);
  assert.ok(error instanceof LimitExceededError);
});

Deno.test("DelimiterStream applies backpressure: a write resolves once its frames are taken", async () => {
  const stream = new DelimiterStream("\n");
  const writer = stream.writable.getWriter();
  const reader = stream.readable.getReader();
  let written = false;
  const write = writer.write(bytes("a\nb\n")).then(() => written = true);
  await new Promise((r) => setTimeout(r, 5));
  assert.equal(written, false, "the write resolved with no reader demand");
  assert.equal(text((await reader.read()).value!), "a");
  assert.equal(text((await reader.read()).value!), "b");
  const next = reader.read(); // demand for more relieves the backpressure
  await write;
  await writer.close();
  assert.equal((await next).done, true);
});

Deno.test("DelimiterStream passes a reader's cancel to the source", async () => {
  let cancelled: unknown;
  const source = new ReadableStream<Uint8Array>({
    pull(c) {
      c.enqueue(bytes("line\n"));
    },
    cancel(reason) {
      cancelled = reason;
    },
  });
  const reader = source.pipeThrough(new DelimiterStream("\n")).getReader();
  assert.equal(text((await reader.read()).value!), "line");
  await reader.cancel("done reading");
  // The pipe notices the errored writable and cancels its source.
  for (let i = 0; i < 10 && cancelled === undefined; i++) {
    await new Promise((r) => setTimeout(r, 1));
  }
  assert.equal(cancelled, "done reading");
});

Deno.test("DelimiterStream passes a source's error to the reader", async () => {
  const boom = new Error("source failed");
  let n = 0;
  const source = new ReadableStream<Uint8Array>({
    pull(c) {
      if (n++ === 0) c.enqueue(bytes("x\n"));
      else c.error(boom);
    },
  });
  const { frames, error } = await (async () => {
    const frames: string[] = [];
    try {
      for await (const f of source.pipeThrough(new DelimiterStream("\n"))) frames.push(text(f));
      return { frames };
    } catch (error) {
      return { frames, error };
    }
  })();
  assert.deepEqual(frames, ["x"]);
  assert.equal(error, boom);
});

Deno.test("framing transforms work as the TransformStream type", () => {
  const transforms: TransformStream<Uint8Array, Uint8Array>[] = [
    new DelimiterStream("\n"),
    new LengthPrefixedDecoderStream(),
    new LengthPrefixedEncoderStream(),
  ];
  for (const t of transforms) {
    assert.ok(t.readable instanceof ReadableStream);
    assert.ok(t.writable instanceof WritableStream);
  }
});
