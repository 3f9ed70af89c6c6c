// deno-lint-ignore-file no-console
/**
 * The in-process history behind `netkit.v1` (issue 11), measured:
 *
 * - memory: what 1,000 messages kept in one topic's log cost (V8 heap +
 *   array buffers, after GC), plain subscribers only (each message and its
 *   frame) and with a `netkit.v1` subscriber (plus its envelope, made once);
 * - replay speed: messages per second a resuming client receives from the
 *   log (server and client in this one process, over loopback).
 *
 * Usage: `deno run -A --v8-flags=--expose-gc bench/ws_history.ts [--json]`
 *
 * @module
 */
import { BroadcastHub, connect, PreparedMessage, serve } from "../websocket/mod.ts";
import { formatResumeUrl, NETKIT_V1 } from "../websocket/codec/mod.ts";
import { attachResume } from "../websocket/fanout/hub.ts";

const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) {
  console.error("run with --v8-flags=--expose-gc");
  Deno.exit(2);
}

function used(): number {
  for (let i = 0; i < 3; i++) gc!();
  const m = Deno.memoryUsage();
  return m.heapUsed + m.external;
}

/** Bytes one history of `count` messages of `size` bytes costs. */
function historyMemory(count: number, size: number, v1: boolean): number {
  const hub = new BroadcastHub({
    historySize: count,
    historyTtl: 0,
    maxHistoryBytes: 4 * count * size,
  });
  // A plain subscriber makes each message's frame, as a connection does.
  hub.subscribe({ sendPrepared: (m) => (void m.frame, "sent") }, "t");
  if (v1) {
    const sub = { sendPrepared: () => "sent" as const };
    attachResume(hub, sub, {
      send: (m) => (void m.frame, "sent"),
      bufferedAmount: 0,
      waitBelow: () => Promise.resolve(),
      window: 1 << 20,
      fail: () => {},
      since: new Map(),
    });
    hub.subscribe(sub, "t");
  }
  const body = "x".repeat(size - 8);
  // Warm up the code paths, then measure a fresh log.
  for (let i = 0; i < count; i++) hub.publish("w", `${i}`.padStart(8, "0") + body);
  const before = used();
  for (let i = 0; i < count; i++) {
    hub.publish("t", new PreparedMessage(`${i}`.padStart(8, "0") + body));
  }
  const after = used();
  if (hub.historyStats().messages !== 2 * count) throw new Error("history did not keep them all");
  return after - before;
}

async function replaySpeed(count: number, size: number): Promise<number> {
  await using server = serve({
    port: 0,
    historySize: count,
    historyTtl: 0,
    maxHistoryBytes: 2 * count * size,
    onEvent: () => {},
  }, { open: (ws) => void ws.subscribe("t") });
  const body = "x".repeat(size);
  for (let i = 0; i < count; i++) server.publish("t", body);
  const { epoch } = server.hub.position("t")!;
  const started = performance.now();
  await using ws = await connect(formatResumeUrl(server.url, { t: { epoch, offset: 0 } }), {
    protocols: [NETKIT_V1],
    maxPayload: 4 * size + 1024,
  });
  // The answer, then every message.
  for (let i = 0; i <= count; i++) await ws.receive();
  return count / ((performance.now() - started) / 1000);
}

/** Each memory case in a fresh process: nothing left over from another. */
async function inFreshProcess(size: number, v1: boolean): Promise<number> {
  const script = new URL(import.meta.url).pathname;
  const { code, stdout } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--v8-flags=--expose-gc", script, "--memory", String(size), String(v1)],
    stderr: "inherit",
  }).output();
  if (code !== 0) throw new Error(`memory case ${size} ${v1} failed`);
  return Number(new TextDecoder().decode(stdout));
}

const at = Deno.args.indexOf("--memory");
if (at >= 0) {
  // 10,000 messages for a signal well above the heap's noise; reported per 1,000.
  const bytes = historyMemory(10_000, Number(Deno.args[at + 1]), Deno.args[at + 2] === "true");
  console.log(Math.round(bytes / 10));
  Deno.exit(0);
}
const results: Record<string, number> = {};
for (const size of [100, 1024]) {
  for (const v1 of [false, true]) {
    results[`memory_1000x${size}B_${v1 ? "v1" : "plain"}_bytes`] = await inFreshProcess(size, v1);
  }
}
for (const size of [100, 1024]) {
  results[`replay_${size}B_msgs_per_s`] = Math.round(await replaySpeed(100_000, size));
}
if (Deno.args.includes("--json")) {
  console.log(JSON.stringify(results));
} else {
  for (const [k, v] of Object.entries(results)) console.log(`${k.padEnd(36)} ${v}`);
}
