import assert from "node:assert/strict";
import {
  BufferedReader,
  type ByteSource,
  DEFAULT_MAX_BYTES,
  DelimiterStream,
  LimitExceededError,
  readExact,
  readLine,
  readLines,
  readUntil,
  UnexpectedEofError,
} from "../io/mod.ts";
import { NetkitError } from "../errors.ts";
import { concat } from "./support/bytes.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const bytes = (s: string) => enc.encode(s);
const text = (b: Uint8Array | null) => (b === null ? null : dec.decode(b));

/** A stream of the given chunks (strings as UTF-8). */
function streamOf(...chunks: (string | Uint8Array)[]): ReadableStream<Uint8Array> {
  return ReadableStream.from(chunks.map((c) => (typeof c === "string" ? bytes(c) : c)));
}

/** A stream that yields `data` one byte per chunk. */
function byteByByte(data: string): ReadableStream<Uint8Array> {
  return streamOf(...Array.from(bytes(data), (b) => new Uint8Array([b])));
}

/**
 * A ByteSource that fills the caller's buffer from a queue of chunks, as a
 * Deno.Conn does from the socket; records every read size.
 */
class QueueSource implements ByteSource {
  readonly #queue: Uint8Array[];
  readonly readSizes: number[] = [];
  readonly buffers = new Set<ArrayBufferLike>();
  constructor(chunks: (string | Uint8Array)[]) {
    this.#queue = chunks.map((c) => (typeof c === "string" ? bytes(c) : c.slice()));
  }
  read(p: Uint8Array): Promise<number | null> {
    this.readSizes.push(p.length);
    this.buffers.add(p.buffer);
    let head = this.#queue[0];
    while (head !== undefined && head.length === 0) {
      this.#queue.shift();
      head = this.#queue[0];
    }
    if (head === undefined) return Promise.resolve(null);
    const n = Math.min(p.length, head.length);
    p.set(head.subarray(0, n));
    if (n === head.length) this.#queue.shift();
    else this.#queue[0] = head.subarray(n);
    return Promise.resolve(n);
  }
}

async function rejectsWith<E extends Error>(
  promise: Promise<unknown>,
  type: new (...args: never[]) => E,
): Promise<E> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof type, `expected ${type.name}, got ${err}`);
    return err;
  }
  assert.fail(`expected ${type.name}, but it resolved`);
}

// --- readUntil: delimiters and chunk boundaries ---------------------------

Deno.test("readUntil() finds a delimiter split across chunk boundaries", async () => {
  const s = streamOf("HTTP/1.1 200 OK\r", "\n\r", "\nbody");
  assert.equal(text(await readUntil(s, "\r\n\r\n")), "HTTP/1.1 200 OK\r\n\r\n");
  assert.equal(text(await readExact(s, 4)), "body");
});

Deno.test("readUntil() finds \\r\\n\\r\\n fed one byte per chunk", async () => {
  const s = byteByByte("GET / HTTP/1.1\r\nHost: x\r\n\r\nrest");
  assert.equal(text(await readUntil(s, "\r\n\r\n")), "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  assert.equal(text(await readExact(s, 4)), "rest");
  assert.equal(await readUntil(s, "\n"), null);
});

Deno.test("readUntil() does not match a delimiter prefix that fails to complete", async () => {
  const s = byteByByte("a\r\n\rb\r\n\r\n");
  assert.equal(text(await readUntil(s, "\r\n\r\n")), "a\r\n\rb\r\n\r\n");
});

Deno.test("readUntil() returns each of many delimiters in one chunk", async () => {
  const s = streamOf("a;bb;;ccc;");
  const got = [];
  for (let r; (r = await readUntil(s, ";")) !== null;) got.push(text(r));
  assert.deepEqual(got, ["a;", "bb;", ";", "ccc;"]);
});

Deno.test("readUntil() treats a string and the same bytes as the same delimiter", async () => {
  const data = "x→y→z";
  const a = streamOf(data);
  const b = streamOf(data);
  assert.equal(text(await readUntil(a, "→")), "x→");
  assert.equal(text(await readUntil(b, bytes("→"))), "x→");
  assert.deepEqual(await readUntil(a, "→"), await readUntil(b, new Uint8Array([0xe2, 0x86, 0x92])));
});

Deno.test("readUntil() returns the record with the delimiter included", async () => {
  const record = await readUntil(streamOf("ping\r\n"), "\r\n");
  assert.deepEqual(record, bytes("ping\r\n"));
});

Deno.test("readUntil() rejects an empty delimiter with a TypeError", async () => {
  await assert.rejects(readUntil(streamOf("x"), ""), TypeError);
  await assert.rejects(readUntil(streamOf("x"), new Uint8Array(0)), TypeError);
});

Deno.test("readUntil() resolves to null at a clean end of stream", async () => {
  assert.equal(await readUntil(streamOf(), "\n"), null);
  const s = streamOf("a\n");
  assert.equal(text(await readUntil(s, "\n")), "a\n");
  assert.equal(await readUntil(s, "\n"), null);
  assert.equal(await readUntil(s, "\n"), null);
});

Deno.test("readUntil() rejects with UnexpectedEofError carrying the partial record", async () => {
  const s = streamOf("one\ntw", "o-and-a-half");
  assert.equal(text(await readUntil(s, "\n")), "one\n");
  const err = await rejectsWith(readUntil(s, "\n"), UnexpectedEofError);
  assert.ok(err instanceof NetkitError);
  assert.equal(err.code, "ERR_UNEXPECTED_EOF");
  assert.equal(err.name, "UnexpectedEofError");
  assert.equal(text(err.partial), "two-and-a-half");
  assert.match(err.message, /stream ended after 14 bytes, before the delimiter "\\n"/);
  // The partial bytes were handed over: the stream is now at a clean end.
  assert.equal(await readUntil(s, "\n"), null);
});

// --- readUntil: limits -----------------------------------------------------

Deno.test("readUntil() accepts a record of exactly maxBytes, delimiter included", async () => {
  const record = "x".repeat(8) + "\r\n"; // 10 bytes
  assert.equal(text(await readUntil(streamOf(record), "\r\n", { maxBytes: 10 })), record);
  assert.equal(text(await readUntil(byteByByte(record), "\r\n", { maxBytes: 10 })), record);
});

Deno.test("readUntil() rejects a record of maxBytes + 1 with LimitExceededError", async () => {
  for (const s of [streamOf("x".repeat(9) + "\r\n"), byteByByte("x".repeat(9) + "\r\n")]) {
    const err = await rejectsWith(readUntil(s, "\r\n", { maxBytes: 10 }), LimitExceededError);
    assert.ok(err instanceof NetkitError);
    assert.equal(err.code, "ERR_LIMIT_EXCEEDED");
    assert.equal(err.limit, "maxBytes");
    assert.equal(err.value, 10);
    assert.match(
      err.message,
      /no delimiter "\\r\\n" within the record limit: over maxBytes \(10 bytes\)/,
    );
  }
});

Deno.test("readUntil() stops at the limit on a stream that never sends a delimiter", async () => {
  let pulled = 0;
  const endless = new ReadableStream<Uint8Array>({
    pull(c) {
      pulled++;
      c.enqueue(new Uint8Array(1024).fill(0x61));
    },
  });
  const err = await rejectsWith(readUntil(endless, "\n", { maxBytes: 4096 }), LimitExceededError);
  assert.equal(err.value, 4096);
  assert.ok(pulled <= 6, `pulled ${pulled} chunks for a 4 KiB limit`);
  await endless.cancel();
});

Deno.test("readUntil() defaults maxBytes to 64 KiB", async () => {
  assert.equal(DEFAULT_MAX_BYTES, 65536);
  const ok = "a".repeat(65535) + "\n";
  assert.equal((await readUntil(streamOf(ok), "\n"))!.length, 65536);
  const err = await rejectsWith(readUntil(streamOf("a" + ok), "\n"), LimitExceededError);
  assert.equal(err.value, 65536);
});

Deno.test("readUntil() keeps the bytes after a limit error buffered", async () => {
  const s = streamOf("abcdefgh\nrest\n");
  await rejectsWith(readUntil(s, "\n", { maxBytes: 4 }), LimitExceededError);
  assert.equal(text(await readUntil(s, "\n")), "abcdefgh\n");
  assert.equal(text(await readUntil(s, "\n")), "rest\n");
});

// --- leftovers on a generic stream ----------------------------------------

Deno.test("readUntil() keeps bytes after the delimiter for the next readUntil/readExact/readLine", async () => {
  const s = streamOf("HEAD\r\n\r\n12345line one\nnext\r\n", "tail");
  assert.equal(text(await readUntil(s, "\r\n\r\n")), "HEAD\r\n\r\n");
  assert.equal(text(await readExact(s, 5)), "12345");
  assert.equal(await readLine(s), "line one");
  assert.equal(text(await readUntil(s, "\r\n")), "next\r\n");
  assert.equal(text(await readExact(s, 4)), "tail");
  assert.equal(await readExact(s, 1), null);
});

Deno.test("readUntil() leaves a generic stream unlocked between calls", async () => {
  const s = streamOf("a\nb\n", "c\n");
  assert.equal(text(await readUntil(s, "\n")), "a\n");
  assert.equal(s.locked, false);
  assert.equal(text(await readUntil(s, "\n")), "b\n");
  assert.equal(s.locked, false);
  assert.equal(text(await readUntil(s, "\n")), "c\n");
  assert.equal(s.locked, false);
  // After the io calls the stream can be handed to a reader of its own.
  const reader = s.getReader();
  assert.equal((await reader.read()).done, true);
  reader.releaseLock();
});

Deno.test("readUntil() releases the lock on a generic stream after an error", async () => {
  const s = streamOf("no end");
  await rejectsWith(readUntil(s, "\n"), UnexpectedEofError);
  assert.equal(s.locked, false);
  const t = streamOf("toolong\n");
  await rejectsWith(readUntil(t, "\n", { maxBytes: 3 }), LimitExceededError);
  assert.equal(t.locked, false);
});

Deno.test("readUntil() rejects with the source's error and unlocks the stream", async () => {
  const boom = new Error("boom");
  let n = 0;
  const s = new ReadableStream<Uint8Array>({
    pull(c) {
      if (n++ === 0) c.enqueue(bytes("par"));
      else c.error(boom);
    },
  });
  await assert.rejects(readUntil(s, "\n"), (err) => err === boom);
  assert.equal(s.locked, false);
});

// --- BufferedReader.readable -----------------------------------------------

Deno.test("BufferedReader.readable yields the leftovers first, then the rest", async () => {
  const reader = new BufferedReader(streamOf("HEAD\nleft", "over", "-rest"));
  assert.equal(text(await reader.readUntil("\n")), "HEAD\n");
  assert.equal(reader.buffered, 4);
  const all = await new Response(reader.readable).text();
  assert.equal(all, "leftover-rest");
});

Deno.test("readUntil() on a BufferedReader's readable keeps leftovers for its readable", async () => {
  const reader = new BufferedReader(streamOf("HEAD\nleft", "over"));
  const readable = reader.readable;
  assert.equal(text(await readUntil(readable, "\n")), "HEAD\n");
  assert.equal(readable.locked, false);
  assert.equal(await new Response(readable).text(), "leftover");
});

Deno.test("BufferedReader.readable pipeTo() delivers the leftovers first", async () => {
  const reader = new BufferedReader(streamOf("HEAD\r\n\r\nbo", "dy"));
  assert.equal(text(await reader.readUntil("\r\n\r\n")), "HEAD\r\n\r\n");
  const got: string[] = [];
  await reader.readable.pipeTo(new WritableStream({ write: (c) => void got.push(text(c)!) }));
  assert.equal(got.join(""), "body");
});

Deno.test("BufferedReader.readable pipeThrough(DelimiterStream) sees the leftovers first", async () => {
  const reader = new BufferedReader(streamOf("HELLO\nframe1;fra", "me2;frame3;"));
  assert.equal(await reader.readLine(), "HELLO");
  const frames = reader.readable.pipeThrough(new DelimiterStream(";"));
  assert.deepEqual((await Array.fromAsync(frames)).map(text), ["frame1", "frame2", "frame3"]);
});

Deno.test("BufferedReader.readable over a ByteSource yields leftovers first and copies", async () => {
  const reader = new BufferedReader(new QueueSource(["HEAD\nleft", "over"]));
  assert.equal(text(await reader.readUntil("\n")), "HEAD\n");
  const chunks = await Array.fromAsync(reader.readable);
  assert.equal(chunks.map(text).join(""), "leftover");
});

// --- copies ----------------------------------------------------------------

Deno.test("readUntil() returns a copy: mutating the source chunk later does not change it", async () => {
  const whole = bytes("abc\n");
  const a = await readUntil(ReadableStream.from([whole]), "\n");
  whole.fill(0x7a);
  assert.equal(text(a), "abc\n");

  const chunk = bytes("one\ntwo\n");
  const s = ReadableStream.from([chunk]);
  const one = await readUntil(s, "\n");
  const two = await readUntil(s, "\n");
  chunk.fill(0x7a);
  assert.equal(text(one), "one\n");
  assert.equal(text(two), "two\n");
});

Deno.test("readExact() returns a copy: mutating the source chunk later does not change it", async () => {
  const chunk = bytes("abcd");
  const s = ReadableStream.from([chunk]);
  const ab = await readExact(s, 2);
  const cd = await readExact(s, 2);
  chunk.fill(0x7a);
  assert.equal(text(ab), "ab");
  assert.equal(text(cd), "cd");
});

Deno.test("readUntil() results survive later reads on a stream source", async () => {
  const s = byteByByte("first\nsecond\nthird\n");
  const results = [await readUntil(s, "\n"), await readUntil(s, "\n"), await readUntil(s, "\n")];
  assert.deepEqual(results.map(text), ["first\n", "second\n", "third\n"]);
});

/** Records of `size` bytes, each a distinct fill, ended by "\n". */
function records(count: number, size: number): Uint8Array[] {
  return Array.from({ length: count }, (_, i) => {
    const r = new Uint8Array(size).fill(0x41 + (i % 26));
    r[size - 1] = 0x0a;
    return r;
  });
}

for (const bufferSize of [4096, 16384]) {
  Deno.test(`readUntil() over a ByteSource with a ${bufferSize / 1024} KiB buffer: 3 KiB records survive compaction and growth`, async () => {
    const expected = records(40, 3072);
    const wire = concat(expected);
    // Odd-sized arrivals so records straddle reads and the buffer.
    const chunks: Uint8Array[] = [];
    for (let at = 0, k = 0; at < wire.length; k++) {
      const n = [1000, 5000, 3072, 7, 10000, 2999][k % 6];
      chunks.push(wire.subarray(at, at + n));
      at += n;
    }
    const source = new QueueSource(chunks);
    const reader = new BufferedReader(source, { bufferSize });
    const got: Uint8Array[] = [];
    for (let r; (r = await reader.readUntil("\n", { maxBytes: 4096 })) !== null;) got.push(r);
    assert.equal(got.length, expected.length);
    for (let i = 0; i < got.length; i++) {
      assert.deepEqual(got[i], expected[i], `record ${i} was overwritten or misread`);
    }
    // Each record is its own copy, not a view of the reader's buffer.
    assert.ok(got.every((r) => !source.buffers.has(r.buffer)));
    assert.equal(source.readSizes[0], bufferSize);
  });
}

Deno.test("readUntil() over a ByteSource grows the buffer for a record longer than it", async () => {
  const record = new Uint8Array(50_000).fill(0x62);
  record[49_999] = 0x0a;
  const source = new QueueSource([record.subarray(0, 20_000), record.subarray(20_000), "x\n"]);
  const reader = new BufferedReader(source, { bufferSize: 4096 });
  const got = await reader.readUntil("\n", { maxBytes: 50_000 });
  assert.deepEqual(got, record);
  assert.equal(text(await reader.readUntil("\n")), "x\n");
  assert.equal(await reader.readUntil("\n"), null);
});

Deno.test("readUntil() over a ByteSource enforces maxBytes exactly at the boundary", async () => {
  const ok = new QueueSource(["x".repeat(4095) + "\n"]);
  assert.equal(
    (await new BufferedReader(ok, { bufferSize: 1024 }).readUntil("\n", { maxBytes: 4096 }))!
      .length,
    4096,
  );
  const over = new BufferedReader(new QueueSource(["x".repeat(4096) + "\n"]), { bufferSize: 1024 });
  const err = await rejectsWith(over.readUntil("\n", { maxBytes: 4096 }), LimitExceededError);
  assert.equal(err.limit, "maxBytes");
});

Deno.test("BufferedReader.readExact() over a ByteSource returns copies and null at the end", async () => {
  const reader = new BufferedReader(new QueueSource(["abcdef", "gh"]), { bufferSize: 64 });
  const a = await reader.readExact(3);
  const b = await reader.readExact(4);
  assert.equal(text(a), "abc");
  assert.equal(text(b), "defg");
  const err = await rejectsWith(reader.readExact(2), UnexpectedEofError);
  assert.equal(text(err.partial), "h");
  assert.equal(await reader.readExact(2), null);
});

// --- readExact -------------------------------------------------------------

Deno.test("readExact() reads a count spread over many chunks", async () => {
  const s = byteByByte("0123456789");
  assert.equal(text(await readExact(s, 7)), "0123456");
  assert.equal(text(await readExact(s, 3)), "789");
  assert.equal(await readExact(s, 1), null);
});

Deno.test("readExact() rejects with UnexpectedEofError when the stream ends early", async () => {
  const s = streamOf("abc", "de");
  const err = await rejectsWith(readExact(s, 8), UnexpectedEofError);
  assert.equal(err.code, "ERR_UNEXPECTED_EOF");
  assert.equal(text(err.partial), "abcde");
  assert.match(err.message, /stream ended after 5 bytes, before 8 bytes/);
});

Deno.test("readExact() rejects a negative or fractional count with a RangeError", async () => {
  await assert.rejects(readExact(streamOf("x"), -1), RangeError);
  await assert.rejects(readExact(streamOf("x"), 1.5), RangeError);
});

// --- readLine / readLines --------------------------------------------------

Deno.test("readLine() strips \\n and \\r\\n and returns a final unterminated line", async () => {
  const s = streamOf("unix\ndos\r\n\r\nlone\rcr\nlast");
  assert.equal(await readLine(s), "unix");
  assert.equal(await readLine(s), "dos");
  assert.equal(await readLine(s), "");
  assert.equal(await readLine(s), "lone\rcr");
  assert.equal(await readLine(s), "last");
  assert.equal(await readLine(s), null);
});

Deno.test("readLine() decodes UTF-8 split across chunks", async () => {
  const b = bytes("héllo→\n");
  assert.equal(await readLine(streamOf(...Array.from(b, (x) => new Uint8Array([x])))), "héllo→");
});

Deno.test("readLine() enforces maxBytes", async () => {
  assert.equal(await readLine(streamOf("abcd\n"), { maxBytes: 5 }), "abcd");
  const err = await rejectsWith(readLine(streamOf("abcde\n"), { maxBytes: 5 }), LimitExceededError);
  assert.equal(err.limit, "maxBytes");
});

Deno.test("readLines() yields every line and leaves the stream unlocked", async () => {
  const s = streamOf("a\nb\r", "\nc");
  assert.deepEqual(await Array.fromAsync(readLines(s)), ["a", "b", "c"]);
  assert.equal(s.locked, false);
});

Deno.test("readLines() can stop early and leave the rest for the next io call", async () => {
  const s = streamOf("1\n2\n3\n");
  for await (const line of readLines(s)) {
    assert.equal(line, "1");
    break;
  }
  assert.equal(s.locked, false);
  assert.equal(text(await readUntil(s, "\n")), "2\n");
  assert.equal(await readLine(s), "3");
});

Deno.test("readLines() over a BufferedReader on a ByteSource", async () => {
  const reader = new BufferedReader(new QueueSource(["x\r\ny", "\nz"]), { bufferSize: 64 });
  assert.deepEqual(await Array.fromAsync(readLines(reader)), ["x", "y", "z"]);
});

// --- one read at a time ----------------------------------------------------

Deno.test("BufferedReader refuses a second read while one is in progress, and loses nothing", async () => {
  // A source that answers only when told to, as a quiet peer does.
  let answer: ((n: number | null) => void) | undefined;
  let pendingBuffer: Uint8Array | undefined;
  const source: ByteSource = {
    read(p) {
      pendingBuffer = p;
      return new Promise((resolve) => (answer = resolve));
    },
  };
  const reader = new BufferedReader(source);
  const first = reader.readUntil("\n");
  await assert.rejects(reader.readUntil("\n"), (err: TypeError) => {
    assert.ok(err instanceof TypeError);
    assert.equal(
      err.message,
      "another read is in progress on this stream: await it before the next",
    );
    return true;
  });
  await assert.rejects(reader.readExact(1), TypeError);
  await assert.rejects(reader.readChunk(), TypeError);
  pendingBuffer!.set(bytes("one\ntwo\n"));
  answer!(8);
  assert.equal(text(await first), "one\n");
  assert.equal(text(await reader.readUntil("\n")), "two\n");
});
