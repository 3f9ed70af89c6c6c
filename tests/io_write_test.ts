import assert from "node:assert/strict";
import { writeAll } from "../io/mod.ts";
import { concat } from "./support/bytes.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** A sink that takes `delay` ms per write and checks it is never re-entered. */
function slowSink(delay: number) {
  const received: Uint8Array[] = [];
  let active = 0;
  let maxActive = 0;
  let writes = 0;
  const stream = new WritableStream<Uint8Array>(
    {
      async write(chunk) {
        active++;
        maxActive = Math.max(maxActive, active);
        writes++;
        await new Promise((r) => setTimeout(r, delay));
        received.push(chunk.slice());
        active--;
      },
    },
    new CountQueuingStrategy({ highWaterMark: 1 }),
  );
  return {
    stream,
    received,
    get maxActive() {
      return maxActive;
    },
    get writes() {
      return writes;
    },
  };
}

Deno.test("writeAll() writes every byte, in order", async () => {
  const chunks: Uint8Array[] = [];
  const sink = new WritableStream<Uint8Array>({ write: (c) => void chunks.push(c) });
  await writeAll(sink, new Uint8Array([1, 2, 3]));
  await writeAll(sink, new Uint8Array([4]));
  await writeAll(sink, new Uint8Array(0));
  await writeAll(sink, new Uint8Array([5, 6]));
  assert.deepEqual(concat(chunks), new Uint8Array([1, 2, 3, 4, 5, 6]));
});

Deno.test("writeAll() sends a string as UTF-8", async () => {
  const chunks: Uint8Array[] = [];
  const sink = new WritableStream<Uint8Array>({ write: (c) => void chunks.push(c) });
  await writeAll(sink, "héllo → wörld\r\n");
  assert.deepEqual(concat(chunks), enc.encode("héllo → wörld\r\n"));
  assert.equal(dec.decode(concat(chunks)), "héllo → wörld\r\n");
});

Deno.test("writeAll() waits on backpressure: a slow sink is never called concurrently", async () => {
  const sink = slowSink(2);
  const payloads = Array.from({ length: 20 }, (_, i) => new Uint8Array(100 + i).fill(i));
  for (const p of payloads) await writeAll(sink.stream, p);
  assert.equal(sink.maxActive, 1);
  assert.equal(sink.writes, payloads.length);
  assert.deepEqual(concat(sink.received), concat(payloads));
});

Deno.test("writeAll() resolves only once the sink has taken its bytes", async () => {
  const sink = slowSink(5);
  await writeAll(sink.stream, "first");
  assert.deepEqual(sink.received.map((c) => dec.decode(c)), ["first"]);
  await writeAll(sink.stream, "second");
  assert.deepEqual(sink.received.map((c) => dec.decode(c)), ["first", "second"]);
  assert.equal(sink.maxActive, 1);
  await sink.stream.close();
});

Deno.test("writeAll() releases the lock after a successful write", async () => {
  const sink = new WritableStream<Uint8Array>({ write() {} });
  await writeAll(sink, "x");
  assert.equal(sink.locked, false);
  const writer = sink.getWriter();
  await writer.close();
});

Deno.test("writeAll() releases the lock after a failed write and rejects with the sink's error", async () => {
  const boom = new Error("sink failed");
  const sink = new WritableStream<Uint8Array>({
    write() {
      throw boom;
    },
  });
  await assert.rejects(writeAll(sink, "x"), (err) => err === boom);
  assert.equal(sink.locked, false);
  // The stream is errored now: later writes reject too, and still unlock.
  await assert.rejects(writeAll(sink, "y"), (err) => err === boom);
  assert.equal(sink.locked, false);
});

Deno.test("writeAll() releases the lock when the sink fails asynchronously under backpressure", async () => {
  let n = 0;
  const sink = new WritableStream<Uint8Array>(
    {
      async write() {
        await new Promise((r) => setTimeout(r, 1));
        if (++n === 2) throw new Error("late failure");
      },
    },
    new CountQueuingStrategy({ highWaterMark: 1 }),
  );
  await writeAll(sink, "a");
  await assert.rejects(writeAll(sink, "b"), /late failure/);
  assert.equal(sink.locked, false);
});

Deno.test("writeAll() rejects on a closed stream and releases the lock", async () => {
  const sink = new WritableStream<Uint8Array>();
  await sink.close();
  await assert.rejects(writeAll(sink, "x"), TypeError);
  assert.equal(sink.locked, false);
});

Deno.test("writeAll() into a TransformStream is read back unchanged", async () => {
  const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>();
  const done = new Response(readable).arrayBuffer();
  const big = new Uint8Array(300_000).map((_, i) => i & 0xff);
  await writeAll(writable, big);
  await writeAll(writable, "end");
  await writable.close();
  assert.deepEqual(new Uint8Array(await done), concat([big, enc.encode("end")]));
});
