// A WritableStream that also exposes the socket write underneath it, so that
// netkit's own pipes and writeAll can skip the web-streams machinery when it
// is safe to. Internal.

/** The raw operations behind a netkit writable. */
export interface RawSink {
  /** Writes every byte of `chunk`, in order. Resolves once all are handed to the OS. */
  write(chunk: Uint8Array): Promise<void>;
  /** Half-closes (TCP FIN, TLS close_notify, WebSocket close 1000). */
  close(): Promise<void>;
  /** Closes the whole connection at once. */
  abort(reason: unknown): Promise<void>;
  /**
   * Writes some of `chunk` straight to the socket and resolves to the count
   * written, as `Deno.Conn#write` does; lets a pipe run as the plain
   * read/write loop it stands for. Optional.
   */
  writeSome?(chunk: Uint8Array): Promise<number>;
}

const kRawSink = Symbol("netkit.rawSink");

/** A WritableStream over a {@linkcode RawSink}, one chunk in flight at a time. */
export class RawWritableStream extends WritableStream<Uint8Array> {
  [kRawSink]: RawSink;

  constructor(sink: RawSink) {
    super(
      {
        write: (chunk) => sink.write(chunk),
        close: () => sink.close(),
        abort: (reason) => sink.abort(reason),
      },
      // One queued chunk: `desiredSize === 1` then means nothing is queued or
      // in flight, which is when a direct write cannot overtake anything.
      new CountQueuingStrategy({ highWaterMark: 1 }),
    );
    this[kRawSink] = sink;
  }
}

/** The raw sink behind `stream`, if it is a netkit writable. */
export function rawSinkOf(stream: WritableStream<Uint8Array>): RawSink | undefined {
  return stream instanceof RawWritableStream ? stream[kRawSink] : undefined;
}
