/**
 * Preloaded into the Deno servers of the connections benchmark
 * (`deno run --preload bench/_heap_probe.ts --v8-flags=--expose-gc …`): on
 * SIGUSR2 it runs a full garbage collection and writes `Deno.memoryUsage()`
 * as JSON to the file named by `NETKIT_HEAP_PROBE`, so the harness can read
 * the V8 heap of a program it does not control. Does nothing without that
 * variable.
 *
 * @module
 */
const file = Deno.env.get("NETKIT_HEAP_PROBE");
if (file) {
  Deno.addSignalListener("SIGUSR2", () => {
    const gc = (globalThis as { gc?: () => void }).gc;
    gc?.();
    const usage = Deno.memoryUsage();
    Deno.writeTextFileSync(file, JSON.stringify({ ...usage, gc: gc !== undefined }));
  });
}
