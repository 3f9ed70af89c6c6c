/**
 * Bare Deno TCP echo reading into a **1 KiB** buffer per connection: the
 * floor for memory per idle connection in the connections benchmark (what
 * Deno itself costs for one open, idle socket with a pending read). A plain
 * `conn.read()`/`conn.write()` loop, like `bare_loop_echo.ts` but with the
 * smallest useful buffer. With `--cert`/`--key` it serves TLS through
 * `Deno.listenTls` (rustls): the floor of netkit's `--engine deno`. No
 * netkit imports.
 *
 *   deno run -A bench/bare_small_echo.ts --port 0 [--cert F --key F]
 *
 * @module
 */
import { bareOptions, listenTcp, listenTls } from "./_bare_common.ts";

const opts = bareOptions();
const tls = opts.cert !== undefined || opts.key !== undefined;

async function echo(conn: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(1024);
  try {
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      let off = 0;
      while (off < n) off += await conn.write(buf.subarray(off, n));
    }
  } catch {
    // reset by the peer, failed TLS handshake, ...: this connection only
  } finally {
    try {
      conn.close();
    } catch {
      // already closed
    }
  }
}

if (tls) {
  for await (const conn of listenTls(opts)) echo(conn);
} else {
  for await (const conn of listenTcp(opts)) {
    if (!opts.nagle) conn.setNoDelay(true);
    echo(conn);
  }
}
