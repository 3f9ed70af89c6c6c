// Adaptive read sizes, shared by every reader of a socket (io's
// BufferedReader, the direct echo loop, the node:tls duplex). Internal.

/** The biggest read: 64 KiB. */
export const MAX_READ_SIZE = 64 * 1024;
/** The smallest idle read buffer. */
export const MIN_READ_SIZE = 64;

/**
 * How big the next read buffer should be, from what the last reads brought
 * (as Netty's adaptive receive buffer). The sizes are `idle`, 4×, 16× …, up
 * to 64 KiB. A read that fills its buffer asks for one four times bigger:
 * a busy connection soon reads 64 KiB at a time. A short read (the source
 * had no more for now) of `n` bytes lets the buffer shrink to the smallest
 * size that holds `2n`, never grow — unless the read before it filled its
 * buffer: then it is the rest of a burst, and the buffer stays so that the
 * next burst is read at once (a broadcast server publishes what one read
 * brings as one write per subscriber: bursts split in two would halve its
 * fan-out). So after a small message — a request, a ping — the read that
 * then waits, perhaps for hours, holds `idle` bytes, while a stream whose
 * reads come back part-full (TLS gives one 16 KiB record a read) keeps its
 * buffer rather than paying for a small read and a new buffer each time.
 */
export class ReadSizes {
  readonly idle: number;
  #next: number;
  #filled = false;

  constructor(idle: number) {
    this.idle = this.#next = idle;
  }

  /** The size for a read into an empty buffer. */
  get next(): number {
    return this.#next;
  }

  /** Records a read of `n` bytes into a buffer with `room` bytes free, of `size` in all. */
  record(n: number, room: number, size: number): void {
    if (n >= room) {
      this.#next = Math.min(size * 4, MAX_READ_SIZE);
      this.#filled = true;
      return;
    }
    if (this.#filled) {
      this.#filled = false;
      return;
    }
    let fits = this.idle;
    while (fits < 2 * n && fits < MAX_READ_SIZE) fits *= 4;
    this.#next = Math.max(this.idle, Math.min(size, fits, MAX_READ_SIZE));
  }
}
