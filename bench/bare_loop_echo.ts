/**
 * Bare Deno TCP echo as a plain `conn.read()`/`conn.write()` loop (one 64 KiB
 * buffer per connection): the reference `deno task bench` computes ratios
 * against. No netkit imports. Sets `TCP_NODELAY` unless `--nagle` is given
 * (see `_bare_common.ts`).
 *
 *   deno run -A bench/bare_loop_echo.ts --port 0
 *
 * @module
 */
import { bareOptions, listenTcp, loopEcho } from "./_bare_common.ts";

const opts = bareOptions();
for await (const conn of listenTcp(opts)) {
  if (!opts.nagle) conn.setNoDelay(true);
  loopEcho(conn);
}
