/**
 * Bare `node:tls` echo in Deno: one `tls.createServer` listening itself,
 * `socket.pipe(socket)` per connection. The floor for memory per idle TLS
 * connection of netkit's default TLS engine (`--engine node`, which runs
 * Deno's `node:tls` over sockets netkit owns), measured in the connections
 * benchmark. No netkit imports.
 *
 *   deno run -A bench/bare_node_tls_echo.ts --port 0 --cert F --key F
 *
 * @module
 */
// deno-lint-ignore-file no-console
import tls from "node:tls";
import { bareOptions } from "./_bare_common.ts";

const opts = bareOptions();
if (!opts.cert || !opts.key) {
  console.error("a TLS server needs --cert and --key");
  Deno.exit(2);
}
const server = tls.createServer({
  cert: Deno.readTextFileSync(opts.cert),
  key: Deno.readTextFileSync(opts.key),
}, (socket) => {
  socket.on("error", () => socket.destroy());
  socket.pipe(socket);
});
server.listen(opts.port, opts.hostname, () => {
  const addr = server.address() as { address: string; port: number };
  const host = addr.address.includes(":") ? `[${addr.address}]` : addr.address;
  console.log(`listening on tls://${host}:${addr.port}`);
});
