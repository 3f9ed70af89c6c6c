// The two sides of a framing transform, shared by DelimiterStream and
// LengthPrefixedDecoderStream. Internal.

/** Turns input chunks into frames. Internal to io. */
export interface Framer {
  /** Handles one input chunk, emitting every frame it completes; throws to fail the stream. */
  push(chunk: Uint8Array, emit: (frame: Uint8Array) => void): void;
  /** The input ended; throws if it ended inside a frame. */
  end(): void;
}

/**
 * The readable and writable sides of a framing transform. Internal to io.
 *
 * Unlike a plain `TransformStream`, an error (a frame over the limit, input
 * ending mid-frame) reaches the reader only after every frame emitted before
 * it: erroring a stream discards its queue, so the error waits until the
 * queue is empty. Backpressure is as a `TransformStream`'s: a write resolves
 * once the reader has taken the frames it produced.
 */
export function framingPair(framer: Framer): {
  readable: ReadableStream<Uint8Array>;
  writable: WritableStream<Uint8Array>;
} {
  let output!: ReadableStreamDefaultController<Uint8Array>;
  let input!: WritableStreamDefaultController;
  let done = false; // the readable is closed, errored or cancelled
  let wake: (() => void) | undefined;
  const emit = (frame: Uint8Array) => output.enqueue(frame);
  // With a high-water mark of 0, desiredSize < 0 means frames are queued.
  const drained = async () => {
    while (!done && output.desiredSize! < 0) await new Promise<void>((r) => wake = r);
  };
  const fail = async (err: unknown): Promise<never> => {
    await drained();
    if (!done) {
      done = true;
      output.error(err);
    }
    throw err;
  };
  const readable = new ReadableStream<Uint8Array>(
    {
      start(c) {
        output = c;
      },
      pull() {
        const w = wake;
        wake = undefined;
        w?.();
      },
      cancel(reason) {
        done = true;
        input.error(reason);
        const w = wake;
        wake = undefined;
        w?.();
      },
    },
    { highWaterMark: 0 },
  );
  const writable = new WritableStream<Uint8Array>({
    start(c) {
      input = c;
    },
    async write(chunk) {
      if (done) return;
      try {
        framer.push(chunk, emit);
      } catch (err) {
        return await fail(err);
      }
      await drained();
    },
    async close() {
      if (done) return;
      try {
        framer.end();
      } catch (err) {
        return await fail(err);
      }
      done = true;
      output.close();
    },
    abort(reason) {
      if (done) return;
      done = true;
      output.error(reason);
    },
  });
  return { readable, writable };
}
