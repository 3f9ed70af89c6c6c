/**
 * A free port, for the few cases where port 0 will not do.
 *
 * @module
 */

/**
 * A TCP port free on `hostname` (bound on port 0, then released): for a
 * program that must be told its port up front (redis-server, HAProxy,
 * tinyproxy, a restart on the same port) or an address where nothing
 * listens. Everything that can listen on port 0 and report its port should:
 * between the release here and the program binding the port, another process
 * may take it. That small race is accepted for those few programs.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { freePort } from "./ports.ts";
 *
 * const port = freePort();
 * assert.ok(port > 0 && port < 65536);
 * using listener = Deno.listen({ hostname: "127.0.0.1", port });
 * assert.equal(listener.addr.port, port);
 * ```
 */
export function freePort(hostname = "127.0.0.1"): number {
  const listener = Deno.listen({ hostname, port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}
