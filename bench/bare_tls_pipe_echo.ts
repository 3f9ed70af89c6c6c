/**
 * Bare Deno TLS echo (`Deno.listenTls`) built on
 * `conn.readable.pipeTo(conn.writable)`: a baseline for `deno task bench`.
 * No netkit imports.
 *
 *   deno run -A bench/bare_tls_pipe_echo.ts --port 0 --cert server.pem --key server-key.pem
 *
 * @module
 */
import { bareOptions, listenTls } from "./_bare_common.ts";

for await (const conn of listenTls(bareOptions())) {
  conn.readable.pipeTo(conn.writable).catch(() => {});
}
