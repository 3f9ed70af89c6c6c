import type { Conn } from "./conn.ts";
import { NetkitError } from "./errors.ts";

/** Options for {@linkcode relay}. */
export interface RelayOptions {
  /** Stops relaying when aborted; the promise rejects with the reason. */
  signal?: AbortSignal;
  /**
   * Milliseconds to wait for the peer to finish, counted from the start;
   * 0 waits forever. Over it: a `NetkitError` with code `ETIMEDOUT`.
   * @default {0}
   */
  timeout?: number;
  /** Called with every chunk received, before it is written to `output`. */
  onData?: (chunk: Uint8Array) => void;
}

/**
 * Joins a connection to a pair of streams, as netcat does: `input` is sent
 * to the peer (and the connection half-closed at its end), what the peer
 * sends is written to `output` (which is left open). Resolves once the peer
 * has closed its side; input still unread then is cancelled.
 *
 * @example Send a message, collect the reply
 * ```ts
 * import { echo, relay } from "@netkit/netkit";
 * import { connect, serve } from "@netkit/netkit/tcp";
 * import assert from "node:assert/strict";
 *
 * await using server = serve({ port: 0 }, echo);
 * await using conn = await connect({ port: server.addr.port });
 * const input = ReadableStream.from([new TextEncoder().encode("Hello, server!")]);
 * let reply = ""; // a program passes Deno.stdout.writable instead
 * const output = new WritableStream<Uint8Array>({
 *   write: (chunk) => void (reply += new TextDecoder().decode(chunk)),
 * });
 * await relay(conn, input, output);
 * assert.equal(reply, "Hello, server!");
 * ```
 */
export async function relay(
  conn: Conn,
  input: ReadableStream<Uint8Array>,
  output: WritableStream<Uint8Array>,
  options: RelayOptions = {},
): Promise<void> {
  const stopUp = new AbortController();
  const up = input.pipeTo(conn.writable, { signal: stopUp.signal }).catch((err) => {
    if (stopUp.signal.aborted) return;
    // The peer may close before taking all we send (a server that answers
    // and hangs up): what it sent back still counts, so only note it.
    if (err instanceof Deno.errors.BrokenPipe || err instanceof Deno.errors.ConnectionReset) return;
    throw err;
  });
  const tap = options.onData;
  const source = tap
    ? conn.readable.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, controller) {
          tap(chunk);
          controller.enqueue(chunk);
        },
      }),
    )
    : conn.readable;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const stopDown = new AbortController();
  const onAbort = () => stopDown.abort(options.signal!.reason);
  options.signal?.addEventListener("abort", onAbort, { once: true });
  if (options.timeout) {
    const seconds = options.timeout / 1000;
    timer = setTimeout(
      () =>
        stopDown.abort(
          new NetkitError(
            "ETIMEDOUT",
            `the peer did not finish within ${seconds}s: raise --timeout, or check that it closes the connection`,
          ),
        ),
      options.timeout,
    );
  }
  try {
    await source.pipeTo(output, { preventClose: true, signal: stopDown.signal });
  } finally {
    clearTimeout(timer);
    options.signal?.removeEventListener("abort", onAbort);
    stopUp.abort();
    await up.catch(() => {});
  }
  await up;
}
