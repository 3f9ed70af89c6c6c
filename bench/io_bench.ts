// Throughput of the io readers against hand-written loops in the same run.
//
//   deno bench -A bench/io_bench.ts
//
// Each group has a baseline: the fastest honest code that produces the same
// records (copies, limit checked) from the same source — a loop over the
// chunks with Uint8Array#indexOf and slice. Two workloads:
//
// - "rare": 16 MiB in 1 MiB chunks, one "\n" per 4 MiB (records of 4 MiB,
//   maxBytes raised to 8 MiB): bytes/s of scanning and gathering.
// - "lines": 4 MiB in 1 MiB chunks of 16384 lines of 64 bytes: records/s.
//
// Each runs over a ReadableStream (ReadableStream.from over the chunks) and
// over a ByteSource (a Deno.Conn stand-in that copies the chunks into the
// reader's buffer, as the kernel does).
import {
  BufferedReader,
  type ByteSource,
  DelimiterStream,
  LimitExceededError,
  readUntil,
} from "../io/mod.ts";

const MiB = 1024 * 1024;
const NL = 0x0a;

function rareChunks(): Uint8Array[] {
  return Array.from({ length: 16 }, (_, i) => {
    const chunk = new Uint8Array(MiB).fill(0x61);
    if (i % 4 === 3) chunk[MiB - 1] = NL;
    return chunk;
  });
}

function lineChunks(): Uint8Array[] {
  return Array.from({ length: 4 }, () => {
    const chunk = new Uint8Array(MiB).fill(0x62);
    for (let at = 63; at < MiB; at += 64) chunk[at] = NL;
    return chunk;
  });
}

const RARE = rareChunks();
const RARE_RECORDS = 4;
const RARE_MAX = 8 * MiB;
const LINES = lineChunks();
const LINE_RECORDS = 4 * 16384;
const LINE_MAX = 64 * 1024;

/** A ByteSource over `chunks`: each read copies up to `p.length` bytes into `p`. */
function byteSource(chunks: Uint8Array[]): ByteSource {
  let i = 0;
  let off = 0;
  return {
    read(p) {
      if (i >= chunks.length) return Promise.resolve(null);
      const c = chunks[i];
      const n = Math.min(p.length, c.length - off);
      p.set(c.subarray(off, off + n));
      off += n;
      if (off === c.length) {
        i++;
        off = 0;
      }
      return Promise.resolve(n);
    },
  };
}

let sink = 0; // keeps results alive

function check(count: number, expected: number): void {
  if (count !== expected) throw new Error(`got ${count} records, expected ${expected}`);
}

/** Gathers the records of a stream of chunks that a reader does not reuse. */
class Gatherer {
  #parts: Uint8Array[] = [];
  #length = 0;
  count = 0;
  constructor(readonly max: number) {}

  /** Splits `chunk`; `own` says the chunk stays valid (else partials are copied). */
  push(chunk: Uint8Array, own: boolean): void {
    let pos = 0;
    for (let at; (at = chunk.indexOf(NL, pos)) >= 0; pos = at + 1) {
      let record: Uint8Array;
      if (this.#length === 0) {
        if (at + 1 - pos > this.max) throw new LimitExceededError("maxBytes", this.max, "bench");
        record = chunk.slice(pos, at + 1);
      } else {
        const size = this.#length + at + 1 - pos;
        if (size > this.max) throw new LimitExceededError("maxBytes", this.max, "bench");
        record = new Uint8Array(size);
        let o = 0;
        for (const p of this.#parts) {
          record.set(p, o);
          o += p.length;
        }
        record.set(chunk.subarray(pos, at + 1), o);
        this.#parts = [];
        this.#length = 0;
      }
      sink += record.length;
      this.count++;
    }
    if (pos < chunk.length) {
      this.#length += chunk.length - pos;
      if (this.#length > this.max) throw new LimitExceededError("maxBytes", this.max, "bench");
      this.#parts.push(own ? chunk.subarray(pos) : chunk.slice(pos));
    }
  }
}

/** Baseline over a stream: read chunks, indexOf, slice. */
async function baselineStream(chunks: Uint8Array[], max: number): Promise<number> {
  const reader = ReadableStream.from(chunks).getReader();
  const g = new Gatherer(max);
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return g.count;
    g.push(value, true);
  }
}

/** Baseline over a ByteSource: read into one reused 64 KiB buffer, indexOf, slice. */
async function baselineSource(source: ByteSource, max: number): Promise<number> {
  const buf = new Uint8Array(64 * 1024);
  const g = new Gatherer(max);
  for (let n; (n = await source.read(buf)) !== null;) g.push(buf.subarray(0, n), false);
  return g.count;
}

async function readUntilLoop(
  read: () => Promise<Uint8Array | null>,
): Promise<number> {
  let count = 0;
  for (let r; (r = await read()) !== null; count++) sink += r.length;
  return count;
}

function readUntilStream(chunks: Uint8Array[], max: number): Promise<number> {
  const stream = ReadableStream.from(chunks);
  return readUntilLoop(() => readUntil(stream, "\n", { maxBytes: max }));
}

function readerStream(chunks: Uint8Array[], max: number): Promise<number> {
  const reader = new BufferedReader(ReadableStream.from(chunks));
  return readUntilLoop(() => reader.readUntil("\n", { maxBytes: max }));
}

function readerSource(chunks: Uint8Array[], max: number): Promise<number> {
  const reader = new BufferedReader(byteSource(chunks));
  return readUntilLoop(() => reader.readUntil("\n", { maxBytes: max }));
}

function readUntilOnReaderSource(chunks: Uint8Array[], max: number): Promise<number> {
  const reader = new BufferedReader(byteSource(chunks));
  return readUntilLoop(() => readUntil(reader, "\n", { maxBytes: max }));
}

async function delimiterStream(chunks: Uint8Array[], max: number): Promise<number> {
  let count = 0;
  const frames = ReadableStream.from(chunks).pipeThrough(
    new DelimiterStream("\n", { maxFrameSize: max, disposition: "suffix" }),
  );
  for await (const f of frames) {
    sink += f.length;
    count++;
  }
  return count;
}

async function baselineStreamViews(chunks: Uint8Array[]): Promise<number> {
  // The same frames as DelimiterStream: views into the chunks.
  const reader = ReadableStream.from(chunks).getReader();
  let count = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return count;
    let pos = 0;
    for (let at; (at = value.indexOf(NL, pos)) >= 0; pos = at + 1) {
      sink += value.subarray(pos, at + 1).length;
      count++;
    }
  }
}

// Every contender must produce the same records before it is timed.
for (
  const [chunks, max, expected] of [[RARE, RARE_MAX, RARE_RECORDS], [
    LINES,
    LINE_MAX,
    LINE_RECORDS,
  ]] as const
) {
  check(await baselineStream(chunks as Uint8Array[], max), expected);
  check(await baselineSource(byteSource(chunks as Uint8Array[]), max), expected);
  check(await readUntilStream(chunks as Uint8Array[], max), expected);
  check(await readerStream(chunks as Uint8Array[], max), expected);
  check(await readerSource(chunks as Uint8Array[], max), expected);
  check(await readUntilOnReaderSource(chunks as Uint8Array[], max), expected);
}
check(await delimiterStream(LINES, LINE_MAX), LINE_RECORDS);
check(await baselineStreamViews(LINES), LINE_RECORDS);

const cases = [
  { label: "rare delimiter, 16 MiB", chunks: RARE, max: RARE_MAX },
  { label: "64-byte lines, 4 MiB", chunks: LINES, max: LINE_MAX },
];

for (const { label, chunks, max } of cases) {
  const group = `${label}, ReadableStream`;
  Deno.bench({
    name: `baseline: indexOf + slice over stream chunks (${label})`,
    group,
    baseline: true,
    fn: async () => void await baselineStream(chunks, max),
  });
  Deno.bench({
    name: `readUntil(stream) (${label})`,
    group,
    fn: async () => void await readUntilStream(chunks, max),
  });
  Deno.bench({
    name: `BufferedReader(stream).readUntil (${label})`,
    group,
    fn: async () => void await readerStream(chunks, max),
  });
}

for (const { label, chunks, max } of cases) {
  const group = `${label}, ByteSource`;
  Deno.bench({
    name: `baseline: read into 64 KiB + indexOf + slice (${label})`,
    group,
    baseline: true,
    fn: async () => void await baselineSource(byteSource(chunks), max),
  });
  Deno.bench({
    name: `BufferedReader(source).readUntil (${label})`,
    group,
    fn: async () => void await readerSource(chunks, max),
  });
  Deno.bench({
    name: `readUntil(BufferedReader(source)) (${label})`,
    group,
    fn: async () => void await readUntilOnReaderSource(chunks, max),
  });
}

Deno.bench({
  name: "baseline: indexOf + subarray over stream chunks (64-byte lines, 4 MiB)",
  group: "64-byte lines, 4 MiB, framing transform",
  baseline: true,
  fn: async () => void await baselineStreamViews(LINES),
});
Deno.bench({
  name: "pipeThrough(DelimiterStream) (64-byte lines, 4 MiB)",
  group: "64-byte lines, 4 MiB, framing transform",
  fn: async () => void await delimiterStream(LINES, LINE_MAX),
});

addEventListener("unload", () => {
  if (sink < 0) throw new Error("unreachable");
});
