/**
 * Bare Deno TCP echo built on `conn.readable.pipeTo(conn.writable)`: a
 * baseline for `deno task bench`. No netkit imports.
 *
 *   deno run -A bench/bare_pipe_echo.ts --port 0
 *
 * @module
 */
import { bareOptions, listenTcp } from "./_bare_common.ts";

for await (const conn of listenTcp(bareOptions())) {
  conn.readable.pipeTo(conn.writable).catch(() => {});
}
