/**
 * Bare Deno TLS echo (`Deno.listenTls`) as a plain `conn.read()`/`conn.write()`
 * loop (one 64 KiB buffer per connection): the TLS reference for
 * `deno task bench`. No netkit imports.
 *
 *   deno run -A bench/bare_tls_loop_echo.ts --port 0 --cert server.pem --key server-key.pem
 *
 * @module
 */
import { bareOptions, listenTls, loopEcho } from "./_bare_common.ts";

for await (const conn of listenTls(bareOptions())) loopEcho(conn);
