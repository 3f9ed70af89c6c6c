import { describeDelimiter, indexOfBytes, toDelimiter } from "./_bytes.ts";
import { LimitExceededError, UnexpectedEofError } from "./errors.ts";
import { type RawSink, rawSinkOf } from "../internal/raw_writable.ts";
import { MAX_READ_SIZE, MIN_READ_SIZE, ReadSizes } from "../internal/read_sizes.ts";

/** A source that reads into the caller's buffer, as `Deno.Conn` does. */
export interface ByteSource {
  /** Reads into `p`; resolves to the count read, or `null` at the end. */
  read(p: Uint8Array): Promise<number | null>;
  /**
   * Told the count of every read that brought bytes, by whoever read them
   * (a source that counts its traffic need not wrap each read's promise).
   */
  counted?(n: number): void;
}

/** Options for {@linkcode BufferedReader}. */
export interface BufferedReaderOptions {
  /**
   * The size of the read buffer of a quiet connection, in bytes (at least
   * 64): the first read, and every read after one that emptied the source
   * (a short read), go into a buffer this small. Reads that fill the buffer
   * make it grow, fourfold up to 64 KiB, so bulk transfers read 64 KiB at a
   * time; the first short read lets the big buffer go again. A read that
   * waits on a silent peer, perhaps for hours, holds only this much.
   * @default {1024}
   */
  bufferSize?: number;
  /** Called once when the reader (or its `readable`) is cancelled. */
  onCancel?: (reason: unknown) => void;
}

/** Options for reads that look for a delimiter. */
export interface ReadUntilOptions {
  /**
   * The most bytes one record may have, delimiter included. A peer that
   * sends more without a delimiter gets a {@linkcode LimitExceededError}
   * instead of an ever-growing buffer.
   * @default {65536} (64 KiB, as Python's asyncio)
   */
  maxBytes?: number;
}

/** The default of {@linkcode ReadUntilOptions.maxBytes}: 64 KiB. */
export const DEFAULT_MAX_BYTES = 64 * 1024;

/** The default of {@linkcode BufferedReaderOptions.bufferSize}: 1 KiB. */
const DEFAULT_BUFFER_SIZE = 1024;

const MIN_FREE = 4096;

const EMPTY = new Uint8Array(0);
const decoder = new TextDecoder();
const kIdleSize = Symbol("netkit.idleReadSize");

/**
 * A reader that owns its buffer, as Go's `bufio.Reader`: it reads a byte
 * source (a netkit `Conn`'s socket, or any `ReadableStream<Uint8Array>`) in
 * large chunks and hands out records — up to a delimiter, an exact count, a
 * line — keeping whatever arrived after the record for the next read.
 *
 * Nothing is ever lost or reordered: `readable` yields the buffered bytes
 * first and then the rest of the source, so the stream can be handed to
 * `pipeTo`, a framing transform or a TLS upgrade check after a few
 * `readUntil` calls.
 *
 * Records are returned as **copies**: they stay valid however the reader is
 * used afterwards. Every read that buffers has a limit (`maxBytes`).
 *
 * Over a generic `ReadableStream`, the reader holds the stream's lock until
 * {@linkcode BufferedReader.releaseLock} — the io functions (`readUntil`, …)
 * do that for you and keep leftovers for the next io call on the same stream.
 *
 * @example Reading an HTTP head, then the rest as a stream
 * ```ts
 * import { BufferedReader } from "@netkit/netkit/io";
 * import assert from "node:assert/strict";
 *
 * const source = ReadableStream.from([
 *   new TextEncoder().encode("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel"),
 *   new TextEncoder().encode("lo"),
 * ]);
 * const reader = new BufferedReader(source);
 * const head = await reader.readUntil("\r\n\r\n");
 * const body = await reader.readExact(5);
 * assert.equal(new TextDecoder().decode(head!), "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
 * assert.equal(new TextDecoder().decode(body!), "hello");
 * ```
 */
export class BufferedReader {
  #raw: ByteSource | null = null;
  #stream: ReadableStream<Uint8Array> | null = null;
  #streamReader: ReadableStreamDefaultReader<Uint8Array> | null = null;
  #onCancel: ((reason: unknown) => void) | undefined;
  // Bytes [start, end) of buf are buffered. `owned` says buf is ours to read
  // into again; otherwise it is a chunk a stream gave away, kept as a view.
  #buf: Uint8Array = EMPTY;
  #start = 0;
  #end = 0;
  #owned = false;
  #sizes: ReadSizes;
  #eof = false;
  #readable: BufferedReadableStream | undefined;
  #pending = false; // a read from the source is under way
  // readChunk's raw read: the room it offered, and its callbacks (made once).
  #tailLength = 0;
  #onChunkRead: ((n: number | null) => Uint8Array | null) | undefined;
  #onReadError: ((err: unknown) => never) | undefined;

  /**
   * Wraps a byte stream (or a socket) in a reader that owns its buffer.
   *
   * @param source A `ReadableStream<Uint8Array>`, or a {@linkcode ByteSource}
   *   that reads into a buffer (such as a `Deno.Conn`), which saves a copy.
   * @param options Buffer size and a cancel hook.
   */
  constructor(
    source: ReadableStream<Uint8Array> | ByteSource,
    options: BufferedReaderOptions = {},
  ) {
    if (source instanceof ReadableStream) this.#stream = source;
    else this.#raw = source;
    const idle = options.bufferSize ?? DEFAULT_BUFFER_SIZE;
    this.#sizes = new ReadSizes(Math.min(Math.max(idle, MIN_READ_SIZE), MAX_READ_SIZE));
    this.#onCancel = options.onCancel;
  }

  /** How many bytes are buffered: received, but not yet returned by a read. */
  get buffered(): number {
    return this.#end - this.#start;
  }

  /**
   * A stream of everything not yet read: the buffered bytes, then the rest
   * of the source. Its `pipeTo` into a netkit `Conn`'s writable is a plain
   * read/write loop. The same stream is returned on every access.
   */
  get readable(): ReadableStream<Uint8Array> {
    return this.#readable ??= new BufferedReadableStream(this);
  }

  /**
   * Reads up to and including the first `delimiter`.
   *
   * @param delimiter A string (matched as UTF-8) or bytes; not empty.
   * @returns A copy of the record, delimiter included; `null` when the source
   *   ended cleanly with nothing buffered.
   * @throws {LimitExceededError} The record would exceed `maxBytes`; the bytes
   *   stay buffered.
   * @throws {UnexpectedEofError} The source ended after part of a record; the
   *   error's `partial` holds it.
   */
  async readUntil(
    delimiter: string | Uint8Array,
    options: ReadUntilOptions = {},
  ): Promise<Uint8Array | null> {
    this.#checkIdle();
    const delim = toDelimiter(delimiter);
    const maxBytes = options.maxBytes ?? DEFAULT_MAX_BYTES;
    let scanned = 0; // bytes after #start already searched
    for (;;) {
      const at = indexOfBytes(this.#buf, delim, this.#start + scanned, this.#end);
      if (at >= 0) {
        const stop = at + delim.length;
        if (stop - this.#start > maxBytes) throw this.#limitError(delim, maxBytes);
        return this.#take(stop - this.#start);
      }
      const have = this.#end - this.#start;
      if (have >= maxBytes) throw this.#limitError(delim, maxBytes);
      // A delimiter may straddle the end: rescan its last length-1 bytes.
      scanned = Math.max(0, have - delim.length + 1);
      if (!(await this.#fill())) {
        if (have === 0) return null;
        throw new UnexpectedEofError(this.#take(have), `the delimiter ${describeDelimiter(delim)}`);
      }
    }
  }

  /**
   * Reads exactly `n` bytes.
   *
   * @returns A copy of the `n` bytes; `null` when the source ended cleanly
   *   before the first of them (`n` = 0 always gives an empty array).
   * @throws {UnexpectedEofError} The source ended after some of them.
   */
  async readExact(n: number): Promise<Uint8Array | null> {
    if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`readExact: bad length ${n}`);
    this.#checkIdle();
    while (this.#end - this.#start < n) {
      if (!(await this.#fill(n - (this.#end - this.#start)))) {
        const have = this.#end - this.#start;
        if (have === 0) return null;
        throw new UnexpectedEofError(this.#take(have), `${n} bytes`);
      }
    }
    return this.#take(n);
  }

  /**
   * Reads one line, ended by `"\n"` or `"\r\n"`, and returns it decoded as
   * UTF-8 without its line ending. A last line with no ending is returned as
   * it is; `null` means the source ended.
   *
   * @throws {LimitExceededError} The line would exceed `maxBytes`.
   */
  async readLine(options: ReadUntilOptions = {}): Promise<string | null> {
    let line: Uint8Array | null;
    try {
      line = await this.readUntil(NEWLINE, options);
    } catch (err) {
      if (err instanceof UnexpectedEofError) return decoder.decode(err.partial);
      throw err;
    }
    if (line === null) return null;
    let end = line.length - 1;
    if (end > 0 && line[end - 1] === 0x0d) end--;
    return decoder.decode(line.subarray(0, end));
  }

  /**
   * Reads whatever is available: the buffered bytes if there are any, else
   * the next chunk from the source. `null` at the end. Bytes still inside a
   * chunk a stream source gave are passed on uncopied, as a pipe would.
   */
  readChunk(): Promise<Uint8Array | null> {
    try {
      this.#checkIdle();
    } catch (err) {
      return Promise.reject(err);
    }
    if (this.#end > this.#start) return Promise.resolve(this.#chunk());
    if (this.#raw === null) return this.#fill().then((ok) => ok ? this.#chunk() : null);
    if (this.#eof) return Promise.resolve(null);
    // A socket with nothing buffered: one read and one callback, no async
    // function frames kept alive while it waits — a connection may wait for
    // hours, and a server may hold 100,000 of them.
    const tail = this.#room(1);
    this.#tailLength = tail.length;
    this.#pending = true;
    let read: Promise<number | null>;
    try {
      read = this.#raw.read(tail);
    } catch (err) {
      this.#pending = false;
      return Promise.reject(err);
    }
    return read.then(
      this.#onChunkRead ??= (n) => this.#chunkRead(n),
      this.#onReadError ??= (err) => {
        this.#pending = false;
        throw err;
      },
    );
  }

  /** Bookkeeping after a raw read for {@linkcode readChunk}. */
  #chunkRead(n: number | null): Uint8Array | null {
    this.#pending = false;
    if (n === null) {
      this.#eof = true;
      return null;
    }
    this.#raw!.counted?.(n);
    this.#end += n;
    this.#sizes.record(n, this.#tailLength, this.#buf.length);
    return this.#chunk();
  }

  /** Everything buffered, consumed: a copy of owned bytes, a view of a stream's chunk. */
  #chunk(): Uint8Array {
    if (this.#owned) return this.#take(this.#end - this.#start);
    const view = this.#buf.subarray(this.#start, this.#end);
    this.#consume(view.length);
    return view;
  }

  /**
   * Reads into `p`, as `Deno.Conn#read` does: buffered bytes first, else
   * straight from the source into `p` without a copy. `null` at the end.
   */
  async read(p: Uint8Array): Promise<number | null> {
    this.#checkIdle();
    if (p.length === 0) return 0;
    let have = this.#end - this.#start;
    if (have === 0) {
      if (this.#raw && !this.#eof) {
        this.#pending = true;
        try {
          const n = await this.#raw.read(p);
          if (n === null) this.#eof = true;
          else this.#raw.counted?.(n);
          return n;
        } finally {
          this.#pending = false;
        }
      }
      if (!(await this.#fill())) return null;
      have = this.#end - this.#start;
    }
    const n = Math.min(have, p.length);
    p.set(this.#buf.subarray(this.#start, this.#start + n));
    this.#consume(n);
    return n;
  }

  /**
   * Waits until at least `n` bytes are buffered (or the source ends) and
   * returns a view of everything buffered, without consuming it — as Go's
   * `bufio.Reader.Peek`. The view is valid until the next read. Lets a
   * server judge a request line (or a PROXY header) as it arrives.
   *
   * @param n How many bytes to wait for; over `maxBytes` is a
   *   {@linkcode LimitExceededError}. @default {1}
   * @returns Fewer than `n` bytes only when the source ended.
   */
  async peek(n = 1, options: { maxBytes?: number } = {}): Promise<Uint8Array> {
    this.#checkIdle();
    const maxBytes = options.maxBytes ?? DEFAULT_MAX_BYTES;
    if (n > maxBytes) {
      throw new LimitExceededError(
        "maxBytes",
        maxBytes,
        `peek(${n}) asks for more than maxBytes (${maxBytes})`,
      );
    }
    while (this.#end - this.#start < n) {
      if (!(await this.#fill(n - (this.#end - this.#start)))) break;
    }
    return this.#buf.subarray(this.#start, this.#end);
  }

  /**
   * Removes and returns every buffered byte (as a copy), without reading
   * the source. Useful before handing the raw source to something else.
   */
  takeBuffered(): Uint8Array {
    return this.#take(this.#end - this.#start);
  }

  /**
   * Releases the lock this reader holds on its `ReadableStream` source, if
   * any. Buffered bytes stay here; a later read takes the lock again.
   */
  releaseLock(): void {
    if (this.#streamReader) {
      this.#streamReader.releaseLock();
      this.#streamReader = null;
    }
  }

  /** Discards the buffer and cancels the source. Reads then return `null`. */
  async cancel(reason?: unknown): Promise<void> {
    if (this.#eof && this.#end === this.#start) return;
    this.#eof = true;
    this.#buf = EMPTY;
    this.#start = this.#end = 0;
    this.#onCancel?.(reason);
    if (this.#stream) {
      if (this.#streamReader) await this.#streamReader.cancel(reason);
      else if (!this.#stream.locked) await this.#stream.cancel(reason);
    }
  }

  /** The source ended and every byte was read. */
  get ended(): boolean {
    return this.#eof && this.#end === this.#start;
  }

  /**
   * The next bytes for a pipe: the buffered ones, else one read from the
   * source. The view is only valid until the next call. Internal to io.
   */
  async pipeRead(): Promise<Uint8Array | null> {
    this.#checkIdle();
    const have = this.#end - this.#start;
    if (have > 0) {
      const view = this.#buf.subarray(this.#start, this.#end);
      this.#consume(have);
      return view;
    }
    if (!(await this.#fill())) return null;
    const view = this.#buf.subarray(this.#start, this.#end);
    this.#consume(this.#end - this.#start);
    return view;
  }

  /**
   * Two reads at once on one buffer would hand out bytes twice or lose
   * them; the second is refused instead (as asyncio refuses a second read).
   */
  #checkIdle(): void {
    if (this.#pending) {
      throw new TypeError("another read is in progress on this stream: await it before the next");
    }
  }

  /**
   * The byte source itself, when nothing is buffered and a pipe may read
   * from it directly; `undefined` otherwise. Internal to io.
   */
  directSource(): ByteSource | undefined {
    return this.#raw !== null && this.#end === this.#start && !this.#eof && !this.#pending
      ? this.#raw
      : undefined;
  }

  /** Whether {@linkcode readable} has been made (someone may be reading through it). */
  get hasReadable(): boolean {
    return this.#readable !== undefined;
  }

  /** Records that a pipe reading {@linkcode directSource} reached its end. Internal to io. */
  markEnded(): void {
    this.#eof = true;
  }

  /** The quiet read size, for a pipe that reads the source itself. Internal to io. */
  get [kIdleSize](): number {
    return this.#sizes.idle;
  }

  #limitError(delim: Uint8Array, maxBytes: number): LimitExceededError {
    return new LimitExceededError(
      "maxBytes",
      maxBytes,
      `no delimiter ${describeDelimiter(delim)} within the record limit`,
    );
  }

  /** Returns a copy of the next `n` buffered bytes and consumes them. */
  #take(n: number): Uint8Array {
    // Always a copy, also of a chunk a stream gave away: its producer may
    // reuse or change it after enqueueing it.
    const out = this.#buf.slice(this.#start, this.#start + n);
    this.#consume(n);
    return out;
  }

  #consume(n: number): void {
    this.#start += n;
    if (this.#start === this.#end) {
      this.#start = this.#end = 0;
      if (!this.#owned) this.#buf = EMPTY;
    }
  }

  /**
   * Reads more bytes into the buffer. Resolves to false at the end of the
   * source. `want` is how many more bytes the caller needs at least.
   */
  async #fill(want = 1): Promise<boolean> {
    if (this.#eof) return false;
    this.#pending = true;
    try {
      if (this.#raw) {
        const tail = this.#room(want);
        const n = await this.#raw.read(tail);
        if (n === null) {
          this.#eof = true;
          return false;
        }
        this.#raw.counted?.(n);
        this.#end += n;
        this.#sizes.record(n, tail.length, this.#buf.length);
        return true;
      }
      for (;;) {
        this.#streamReader ??= this.#stream!.getReader();
        const { value, done } = await this.#streamReader.read();
        if (done) {
          this.#eof = true;
          return false;
        }
        if (value.length === 0) continue;
        this.#append(value);
        return true;
      }
    } finally {
      this.#pending = false;
    }
  }

  /** Makes room for a raw read and returns the free tail of the buffer. */
  #room(want: number): Uint8Array {
    const have = this.#end - this.#start;
    const need = Math.max(Math.min(want, MAX_READ_SIZE), 1);
    if (have === 0) {
      // An empty buffer is sized by what the reads before brought: small
      // while the connection is quiet (the big one is let go), big while
      // reads fill it. The read may then wait for a long time.
      const size = Math.max(this.#sizes.next, need);
      if (!this.#owned || this.#buf.length !== size) {
        this.#buf = new Uint8Array(size);
        this.#owned = true;
      }
      this.#start = this.#end = 0;
      return this.#buf;
    }
    if (this.#owned) {
      const free = this.#buf.length - this.#end;
      if (free >= need && (free >= MIN_FREE || free >= want)) {
        return this.#buf.subarray(this.#end);
      }
      if (this.#start > 0 && this.#buf.length - have >= Math.max(need, MIN_FREE)) {
        this.#buf.copyWithin(0, this.#start, this.#end);
        this.#start = 0;
        this.#end = have;
        return this.#buf.subarray(this.#end);
      }
    }
    const size = Math.max(this.#sizes.next, have + need, have * 2);
    const buf = new Uint8Array(size);
    buf.set(this.#buf.subarray(this.#start, this.#end));
    this.#buf = buf;
    this.#start = 0;
    this.#end = have;
    this.#owned = true;
    return buf.subarray(have);
  }

  /** Adds a chunk from a stream source; adopts it without a copy when empty. */
  #append(chunk: Uint8Array): void {
    const have = this.#end - this.#start;
    if (have === 0) {
      this.#buf = chunk;
      this.#start = 0;
      this.#end = chunk.length;
      this.#owned = false;
      return;
    }
    if (this.#owned && this.#buf.length - this.#end >= chunk.length) {
      this.#buf.set(chunk, this.#end);
      this.#end += chunk.length;
      return;
    }
    const buf = new Uint8Array(Math.max(have + chunk.length, have * 2));
    buf.set(this.#buf.subarray(this.#start, this.#end));
    buf.set(chunk, have);
    this.#buf = buf;
    this.#start = 0;
    this.#end = have + chunk.length;
    this.#owned = true;
  }
}

const NEWLINE = new Uint8Array([0x0a]);
const kReader = Symbol("netkit.bufferedReader");

/**
 * The `readable` of a {@linkcode BufferedReader}: buffered bytes first, then
 * the source. Its `pipeTo` into a netkit writable skips the web-streams
 * machinery and runs a plain read/write loop, reusing the reader's buffer.
 */
class BufferedReadableStream extends ReadableStream<Uint8Array> {
  [kReader]: BufferedReader;

  constructor(reader: BufferedReader) {
    super(
      {
        async pull(controller) {
          const chunk = await reader.readChunk();
          if (chunk === null) controller.close();
          else controller.enqueue(chunk);
        },
        cancel: (reason) => reader.cancel(reason),
      },
      // Pull only on demand, so nothing sits in this stream's queue that the
      // reader's io calls (or a TLS upgrade) cannot see.
      { highWaterMark: 0 },
    );
    this[kReader] = reader;
  }

  override pipeTo(
    dest: WritableStream<Uint8Array>,
    options: StreamPipeOptions = {},
  ): Promise<void> {
    const sink = rawSinkOf(dest);
    if (sink === undefined || this.locked || dest.locked) return super.pipeTo(dest, options);
    return fastPipe(this, this[kReader], dest, sink, options);
  }
}

async function fastPipe(
  src: BufferedReadableStream,
  buffered: BufferedReader,
  dest: WritableStream<Uint8Array>,
  sink: RawSink,
  options: StreamPipeOptions,
): Promise<void> {
  const { preventClose = false, preventAbort = false, preventCancel = false, signal } = options;
  const reader = src.getReader();
  const writer = dest.getWriter();
  if (writer.desiredSize !== 1) {
    // Something is queued on the writable: let the standard pipe order it.
    reader.releaseLock();
    writer.releaseLock();
    return ReadableStream.prototype.pipeTo.call(src, dest, options);
  }
  let onAbort: (() => void) | undefined;
  const aborted = signal
    ? new Promise<never>((_, reject) => {
      onAbort = () => reject(signal.reason);
      signal.addEventListener("abort", onAbort, { once: true });
    })
    : undefined;
  aborted?.catch(() => {});
  try {
    signal?.throwIfAborted();
    if (!aborted && sink.writeSome !== undefined) {
      // Flush what an io call buffered, then read and write the sockets
      // directly: the same loop a hand-written echo runs.
      const rest = buffered.buffered > 0 ? await buffered.pipeRead() : null;
      if (rest !== null) await sink.write(rest);
      const source = buffered.directSource();
      if (source !== undefined) {
        await directLoop(source, sink.writeSome.bind(sink), buffered, reader, writer, options);
        if (!preventClose) await writer.close();
        return;
      }
    }
    for (;;) {
      let chunk: Uint8Array | null;
      try {
        chunk =
          await (aborted ? Promise.race([buffered.pipeRead(), aborted]) : buffered.pipeRead());
      } catch (err) {
        if (!preventAbort) await writer.abort(err).catch(() => {});
        if (signal?.aborted && !preventCancel) await reader.cancel(err).catch(() => {});
        throw err;
      }
      if (chunk === null) break;
      try {
        await (aborted ? Promise.race([sink.write(chunk), aborted]) : sink.write(chunk));
      } catch (err) {
        if (!preventCancel) await reader.cancel(err).catch(() => {});
        if (signal?.aborted && !preventAbort) await writer.abort(err).catch(() => {});
        throw err;
      }
    }
    if (!preventClose) await writer.close();
  } finally {
    if (onAbort) signal!.removeEventListener("abort", onAbort);
    reader.releaseLock();
    writer.releaseLock();
  }
}

async function directLoop(
  source: ByteSource,
  writeSome: (chunk: Uint8Array) => Promise<number>,
  buffered: BufferedReader,
  reader: ReadableStreamDefaultReader<Uint8Array>,
  writer: WritableStreamDefaultWriter<Uint8Array>,
  { preventAbort = false, preventCancel = false }: StreamPipeOptions,
): Promise<void> {
  // Sized as the reader's own buffer: small while the connection is quiet
  // (an idle pipe's pending read holds only that), 64 KiB while reads fill it.
  const sizes = new ReadSizes(buffered[kIdleSize]);
  let buf = new Uint8Array(sizes.next);
  for (;;) {
    let n: number | null;
    try {
      n = await source.read(buf);
    } catch (err) {
      buffered.markEnded();
      if (!preventAbort) await writer.abort(err).catch(() => {});
      throw err;
    }
    if (n === null) {
      buffered.markEnded();
      return;
    }
    source.counted?.(n);
    try {
      let off = await writeSome(n === buf.length ? buf : buf.subarray(0, n));
      while (off < n) off += await writeSome(buf.subarray(off, n));
    } catch (err) {
      if (!preventCancel) await reader.cancel(err).catch(() => {});
      throw err;
    }
    sizes.record(n, buf.length, buf.length);
    if (sizes.next !== buf.length) buf = new Uint8Array(sizes.next);
  }
}

/** The reader behind a stream made by {@linkcode BufferedReader.readable}, if any. */
export function bufferedReaderOf(stream: ReadableStream<Uint8Array>): BufferedReader | undefined {
  return stream instanceof BufferedReadableStream ? stream[kReader] : undefined;
}
