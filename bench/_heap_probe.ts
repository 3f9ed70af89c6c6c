/**
 * Preloaded into the Deno servers of the connections benchmark
 * (`deno run --preload bench/_heap_probe.ts --v8-flags=--expose-gc …`): on
 * SIGUSR2 it runs a full garbage collection and writes `Deno.memoryUsage()`
 * as JSON to the file named by `NETKIT_HEAP_PROBE`, with V8's heap spaces
 * (`spaces`: name → committed and used bytes), so the harness can read the
 * V8 heap of a program it does not control — and tell the objects kept from
 * room V8 has committed but not filled (a young generation grown while the
 * connections were set up). Does nothing without that variable.
 *
 * @module
 */
import { getHeapSpaceStatistics } from "node:v8";

const file = Deno.env.get("NETKIT_HEAP_PROBE");
if (file) {
  Deno.addSignalListener("SIGUSR2", () => {
    const gc = (globalThis as { gc?: () => void }).gc;
    gc?.();
    const usage = Deno.memoryUsage();
    const spaces: Record<string, { size: number; used: number }> = {};
    for (const s of getHeapSpaceStatistics()) {
      if (s.space_size > 0) spaces[s.space_name] = { size: s.space_size, used: s.space_used_size };
    }
    Deno.writeTextFileSync(file, JSON.stringify({ ...usage, spaces, gc: gc !== undefined }));
  });
}
