/**
 * Bare Deno TCP echo built on `conn.readable.pipeTo(conn.writable)`: a
 * baseline for `deno task bench`. No netkit imports. Sets `TCP_NODELAY`
 * unless `--nagle` is given (see `_bare_common.ts`).
 *
 *   deno run -A bench/bare_pipe_echo.ts --port 0
 *
 * @module
 */
import { bareOptions, listenTcp } from "./_bare_common.ts";

const opts = bareOptions();
for await (const conn of listenTcp(opts)) {
  if (!opts.nagle) conn.setNoDelay(true);
  conn.readable.pipeTo(conn.writable).catch(() => {});
}
