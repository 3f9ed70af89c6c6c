/**
 * Runs one of netkit's server programs for `bench/soak.ts`, unchanged, with
 * one addition: on SIGUSR2 it runs a full garbage collection and prints its
 * memory (`Deno.memoryUsage()`) as one `soak-memory: {…}` line on stderr, so
 * that the soak can tell memory still in use (a leak) from memory V8 and the
 * allocator merely keep around after a peak.
 *
 *   deno run -A --v8-flags=--expose-gc bench/_soak_server.ts tcp_server --port 0 …
 *
 * @module
 */
// deno-lint-ignore-file no-console
const [program, ...args] = Deno.args;
if (!/^[a-z_]+$/.test(program ?? "")) {
  console.error("usage: _soak_server.ts <tcp_server|tls_server|ws_server> [flags]");
  Deno.exit(2);
}
const gc = (globalThis as { gc?: () => void }).gc;
Deno.addSignalListener("SIGUSR2", () => {
  gc?.();
  gc?.();
  console.error(`soak-memory: ${JSON.stringify({ ...Deno.memoryUsage(), gc: gc !== undefined })}`);
});
const { main } = await import(`../cli/${program}.ts`);
Deno.exit(await main(args));
