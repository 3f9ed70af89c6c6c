// Writing received bytes to stdout exactly as they came, plus a final
// newline on a terminal so the shell prompt does not glue on.
import type { Conn } from "../conn.ts";
import { relay } from "../relay.ts";

/** A writable to stdout that remembers whether the last byte was a newline. */
export function stdoutSink(): { writable: WritableStream<Uint8Array>; finish(): Promise<void> } {
  let last = 0x0a;
  const writable = new WritableStream<Uint8Array>({
    async write(chunk) {
      if (chunk.length === 0) return;
      last = chunk[chunk.length - 1];
      let off = 0;
      while (off < chunk.length) off += await Deno.stdout.write(chunk.subarray(off));
    },
  });
  return {
    writable,
    async finish() {
      if (last !== 0x0a && Deno.stdout.isTerminal()) {
        await Deno.stdout.write(new Uint8Array([0x0a]));
      }
    },
  };
}

/**
 * What `tcp-client` and `tls-client` do once connected: send `message` (or,
 * without one and with stdin not a terminal, stdin: netcat style), half-close,
 * and print everything the server sends until it closes. `timeout` (ms, 0 =
 * none) bounds the wait for the reply; netcat mode waits as long as stdin.
 */
export async function sendAndPrint(
  conn: Conn,
  message: string | undefined,
  timeout: number,
): Promise<void> {
  const netcat = message === undefined && !Deno.stdin.isTerminal();
  const input = netcat
    ? Deno.stdin.readable
    : ReadableStream.from([new TextEncoder().encode(message ?? "Hello, server!")]);
  const out = stdoutSink();
  await relay(conn, input, out.writable, { timeout: netcat ? 0 : timeout });
  await out.finish();
}
