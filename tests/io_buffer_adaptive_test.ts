// The adaptive read buffer: a connection reads into a small buffer while it
// is quiet (so that the read waiting on an idle peer holds little), grows
// fourfold up to 64 KiB while reads fill it, and lets the big buffer go once
// a read brings little — without ever losing or reordering a byte. And the
// open-files limit a server raises at start.
import assert from "node:assert/strict";
import fc from "fast-check";
import { BufferedReader, type ByteSource, UnexpectedEofError } from "../io/mod.ts";
import { connect, serve } from "../tcp/mod.ts";
import { concat, equalBytes, pseudoRandomBytes } from "./support/bytes.ts";

const KiB = 1024;
const NUM_RUNS = Number(Deno.env.get("IO_PROPERTY_RUNS") ?? 100);

/**
 * A socket stand-in driven by "arrivals": the bytes one arrival brings are
 * there at once (a read takes as many as fit, as a socket's receive queue
 * gives them), the next arrival comes only once they are all read. With no
 * arrival queued the read waits, as on an idle connection, until
 * {@linkcode arrive} or {@linkcode end}. Records the size of every buffer it
 * is handed, and the one a waiting read holds.
 */
class ArrivalSource implements ByteSource {
  readonly readSizes: number[] = [];
  #arrivals: Uint8Array[] = [];
  #ended = false;
  #waiting: { p: Uint8Array; resolve: (n: number | null) => void } | undefined;

  /** The size of the buffer a read is waiting with, if one is. */
  get waitingWith(): number | undefined {
    return this.#waiting?.p.length;
  }

  arrive(bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    this.#arrivals.push(bytes);
    this.#wake();
  }

  end(): void {
    this.#ended = true;
    this.#wake();
  }

  read(p: Uint8Array): Promise<number | null> {
    this.readSizes.push(p.length);
    if (this.#arrivals.length === 0 && !this.#ended) {
      return new Promise((resolve) => (this.#waiting = { p, resolve }));
    }
    return Promise.resolve(this.#take(p));
  }

  #take(p: Uint8Array): number | null {
    const head = this.#arrivals[0];
    if (head === undefined) return null;
    const n = Math.min(p.length, head.length);
    p.set(head.subarray(0, n));
    if (n === head.length) this.#arrivals.shift();
    else this.#arrivals[0] = head.subarray(n);
    return n;
  }

  #wake(): void {
    const waiting = this.#waiting;
    if (waiting === undefined) return;
    this.#waiting = undefined;
    waiting.resolve(this.#take(waiting.p));
  }
}

/** Lets pending reads reach the source. */
const settle = () => new Promise((resolve) => setTimeout(resolve, 0));

/** Reads chunks until `total` bytes came, returning them joined. */
async function readChunks(reader: BufferedReader, total: number): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for (let got = 0; got < total;) {
    const chunk = await reader.readChunk();
    assert.ok(chunk !== null, `the source ended after ${got} of ${total} bytes`);
    parts.push(chunk);
    got += chunk.length;
  }
  return concat(parts);
}

Deno.test("BufferedReader reads a quiet connection into 1 KiB, then grows fourfold to 64 KiB while reads fill it", async () => {
  const source = new ArrivalSource();
  const reader = new BufferedReader(source);
  const data = pseudoRandomBytes(300 * KiB, 3);
  source.arrive(data);
  assert.ok(equalBytes(await readChunks(reader, data.length), data));
  assert.deepEqual(source.readSizes.slice(0, 5), [1 * KiB, 4 * KiB, 16 * KiB, 64 * KiB, 64 * KiB]);
  assert.equal(Math.max(...source.readSizes), 64 * KiB);
});

Deno.test("BufferedReader lets the big buffer go after a small message: the read that waits holds 1 KiB", async () => {
  const source = new ArrivalSource();
  const reader = new BufferedReader(source);
  const bulk = pseudoRandomBytes(200 * KiB + 123, 4);
  source.arrive(bulk);
  assert.ok(equalBytes(await readChunks(reader, bulk.length), bulk));
  assert.equal(Math.max(...source.readSizes), 64 * KiB);

  // A small message (a request, a ping) after the transfer…
  const ping = reader.readChunk();
  await settle();
  source.arrive(new TextEncoder().encode("ping"));
  assert.equal(new TextDecoder().decode((await ping)!), "ping");
  // …and the read that then waits on the quiet peer holds the small buffer.
  const next = reader.readChunk();
  await settle();
  assert.equal(source.waitingWith, 1 * KiB);
  source.arrive(new TextEncoder().encode("pong"));
  assert.equal(new TextDecoder().decode((await next)!), "pong");

  source.end();
  assert.equal(await reader.readChunk(), null);
});

Deno.test("BufferedReader keeps 64 KiB reads for a stream whose reads come back part-full (TLS records)", async () => {
  // A TLS connection hands out one record (at most 16 KiB) a read, however
  // big the buffer: such reads are short, yet the stream is busy.
  const source = new ArrivalSource();
  const reader = new BufferedReader(source);
  const records = Array.from({ length: 40 }, (_, i) => pseudoRandomBytes(16 * KiB, 30 + i));
  for (const record of records) source.arrive(record);
  assert.ok(equalBytes(await readChunks(reader, 40 * 16 * KiB), concat(records)));
  // Grown to 64 KiB within a few reads, and no small read or new buffer in between.
  const settled = source.readSizes.slice(6);
  assert.ok(settled.length > 20 && settled.every((s) => s === 64 * KiB), `${source.readSizes}`);
});

Deno.test("BufferedReader: 3 KiB messages after a bulk transfer each take one read, into a buffer that stays put", async () => {
  const source = new ArrivalSource();
  const reader = new BufferedReader(source);
  const bulk = pseudoRandomBytes(100 * KiB + 1, 7);
  source.arrive(bulk);
  await readChunks(reader, bulk.length);
  const sizes: number[][] = [];
  for (let i = 0; i < 6; i++) {
    const message = pseudoRandomBytes(3 * KiB, 10 + i);
    const from = source.readSizes.length;
    source.arrive(message);
    assert.ok(equalBytes(await readChunks(reader, message.length), message));
    sizes.push(source.readSizes.slice(from));
  }
  // The 64 KiB buffer goes at the first message; from then on one 16 KiB
  // read a message (room for twice what came), the same buffer every time.
  assert.ok(sizes.slice(1).every((s) => s.length === 1 && s[0] === 16 * KiB), `${sizes}`);
});

Deno.test("BufferedReader honours a chosen quiet size", async () => {
  const source = new ArrivalSource();
  const reader = new BufferedReader(source, { bufferSize: 256 });
  const next = reader.readChunk();
  await settle();
  assert.equal(source.waitingWith, 256);
  source.end();
  assert.equal(await next, null);
});

Deno.test("a pipe into a netkit socket reads 64 KiB in bulk and 1 KiB while idle, every byte in order", async () => {
  const received: Uint8Array[] = [];
  await using server = serve({ port: 0, onEvent: () => {} }, async (conn) => {
    for await (const chunk of conn.readable) received.push(chunk.slice());
  });
  const conn = await connect({ port: server.addr.port });
  const source = new ArrivalSource();
  const piped = new BufferedReader(source).readable.pipeTo(conn.writable);

  await settle();
  assert.equal(source.waitingWith, 1 * KiB, "an idle pipe waits with 1 KiB");
  const bulk = pseudoRandomBytes(400 * KiB + 99, 21);
  source.arrive(bulk);
  // The pipe takes every arrival and comes back to wait.
  while (source.waitingWith === undefined || source.readSizes.length < 8) await settle();
  assert.equal(Math.max(...source.readSizes), 64 * KiB);
  // After a small message, the pipe waits with the small buffer again.
  const small = pseudoRandomBytes(500, 22);
  const reads = source.readSizes.length;
  source.arrive(small);
  while (source.waitingWith === undefined || source.readSizes.length === reads) await settle();
  assert.equal(source.waitingWith, 1 * KiB, "after a small message, the pipe waits with 1 KiB");
  source.end();
  await piped;
  await conn.close();
  await server.close();
  assert.ok(equalBytes(concat(received), concat([bulk, small])));
});

// --- property: nothing lost or reordered across grow and shrink -----------

/** What a consumer does next: its kind and a size. */
type Op = { kind: "chunk" | "exact" | "read" | "peek" | "until"; n: number };

const opArb: fc.Arbitrary<Op> = fc.record({
  kind: fc.constantFrom("chunk", "exact", "read", "peek", "until"),
  n: fc.integer({ min: 1, max: 70 * KiB }),
});

// Arrivals from a few bytes to beyond 64 KiB, so reads fill, fall short,
// grow and shrink in every order.
const arrivalsArb = fc.array(
  fc.oneof(fc.integer({ min: 1, max: 300 }), fc.integer({ min: 1, max: 150 * KiB })),
  { minLength: 1, maxLength: 12 },
);

/** Applies one consumer step; returns the bytes it consumed, `null` at the end. */
async function step(reader: BufferedReader, op: Op): Promise<Uint8Array | null> {
  switch (op.kind) {
    case "chunk":
      return await reader.readChunk();
    case "exact":
      try {
        return await reader.readExact(op.n);
      } catch (err) {
        if (err instanceof UnexpectedEofError) return err.partial;
        throw err;
      }
    case "read": {
      const p = new Uint8Array(op.n);
      const n = await reader.read(p);
      return n === null ? null : p.subarray(0, n);
    }
    case "peek":
      // A peek consumes nothing: the chunk after it must start where it did.
      await reader.peek(Math.min(op.n, 64 * KiB));
      return await reader.readChunk();
    case "until":
      try {
        return await reader.readUntil(new Uint8Array([op.n & 0xff, 0x5a]), {
          maxBytes: 1 << 30,
        });
      } catch (err) {
        if (err instanceof UnexpectedEofError) return err.partial;
        throw err;
      }
  }
}

Deno.test("property: BufferedReader never loses or reorders a byte across buffer growth and shrinking", async () => {
  await fc.assert(
    fc.asyncProperty(
      arrivalsArb,
      fc.array(opArb, { minLength: 1, maxLength: 20 }),
      fc.integer({ min: 64, max: 4 * KiB }),
      fc.integer({ min: 1, max: 1 << 30 }),
      async (sizes, ops, bufferSize, seed) => {
        const arrivals = sizes.map((n, i) => pseudoRandomBytes(n, seed + i));
        const source = new ArrivalSource();
        // Everything arrives in its own time: one arrival per turn.
        let next = 0;
        const feed = setInterval(() => {
          if (next < arrivals.length) source.arrive(arrivals[next++]);
          else {
            source.end();
            clearInterval(feed);
          }
        }, 0);
        const reader = new BufferedReader(source, { bufferSize });
        const out: Uint8Array[] = [];
        try {
          for (let i = 0;; i++) {
            const got = await step(reader, ops[i % ops.length]);
            if (got === null) {
              if (reader.ended) break;
              continue;
            }
            out.push(got.slice());
          }
        } finally {
          clearInterval(feed);
        }
        assert.ok(equalBytes(concat(out), concat(arrivals)), "bytes lost or reordered");
      },
    ),
    { numRuns: NUM_RUNS },
  );
});

Deno.test("property: a BufferedReader's readable yields every byte in order whatever the arrivals", async () => {
  await fc.assert(
    fc.asyncProperty(arrivalsArb, fc.integer({ min: 1, max: 1 << 30 }), async (sizes, seed) => {
      const arrivals = sizes.map((n, i) => pseudoRandomBytes(n, seed + i));
      const source = new ArrivalSource();
      for (const a of arrivals) source.arrive(a);
      source.end();
      const out: Uint8Array[] = [];
      await new BufferedReader(source).readable.pipeTo(
        new WritableStream({ write: (chunk) => void out.push(chunk.slice()) }),
      );
      assert.ok(equalBytes(concat(out), concat(arrivals)));
    }),
    { numRuns: NUM_RUNS },
  );
});

// --- the open-files limit ------------------------------------------------------

const linux = Deno.build.os === "linux";

/** Runs `code` in a child Deno with only `flags`; returns its stdout parsed as JSON. */
async function child(code: string, flags: string[]): Promise<Record<string, unknown>> {
  // `deno run` of a file: `deno eval` would grant every permission.
  const file = await Deno.makeTempFile({ suffix: ".js" });
  let out;
  try {
    await Deno.writeTextFile(file, code);
    out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--no-check", "--no-prompt", ...flags, file],
      stdout: "piped",
      stderr: "piped",
    }).output();
  } finally {
    await Deno.remove(file);
  }
  const stderr = new TextDecoder().decode(out.stderr);
  assert.ok(out.success, `the child failed: ${stderr}`);
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

const RLIMIT_MODULE = JSON.stringify(new URL("../internal/rlimit.ts", import.meta.url).href);

Deno.test({
  name: "raiseOpenFilesLimit() raises the soft open-files limit to the hard one",
  ignore: !linux,
  async fn() {
    // The child lowers its own soft limit through libc first (Deno raises it
    // at start), then lets netkit raise it, reading /proc/self/limits (which
    // Deno lets only a process with every permission read) each time.
    const got = await child(
      `
      import { raiseOpenFilesLimit } from ${RLIMIT_MODULE};
      const limits = () => {
        const text = Deno.readTextFileSync("/proc/self/limits");
        const m = text.match(/^Max open files\\s+(\\S+)\\s+(\\S+)/m);
        const n = (v) => v === "unlimited" ? Infinity : Number(v);
        return { soft: n(m[1]), hard: n(m[2]) };
      };
      const libc = Deno.dlopen("libc.so.6", {
        getrlimit: { parameters: ["i32", "buffer"], result: "i32" },
        setrlimit: { parameters: ["i32", "buffer"], result: "i32" },
      });
      const lim = new BigUint64Array(2);
      libc.symbols.getrlimit(7, new Uint8Array(lim.buffer));
      lim[0] = 256n;
      libc.symbols.setrlimit(7, new Uint8Array(lim.buffer));
      libc.close();
      const before = limits();
      const returned = raiseOpenFilesLimit() ?? null;
      console.log(JSON.stringify({ before, returned, after: limits() }));
      `,
      ["-A"],
    );
    const before = got.before as { soft: number; hard: number };
    const after = got.after as { soft: number; hard: number };
    assert.equal(before.soft, 256, "the child could not lower its limit to start from");
    assert.ok(after.hard > 256, "the hard limit leaves nothing to raise");
    assert.equal(after.soft, after.hard);
    assert.deepEqual(got.returned, after);
  },
});

Deno.test({
  name: "raiseOpenFilesLimit() does nothing without the FFI permission, and does not ask for it",
  ignore: !linux,
  async fn() {
    // --no-prompt turns a permission request into an error: there must be none.
    const got = await child(
      `
      import { raiseOpenFilesLimit } from ${RLIMIT_MODULE};
      console.log(JSON.stringify({ returned: raiseOpenFilesLimit() ?? null }));
      `,
      ["--allow-read"],
    );
    assert.equal(got.returned, null);
  },
});
