/**
 * WebSocket: netkit's ws-server in echo mode against a bare
 * `Deno.upgradeWebSocket` echo (the reference), and in broadcast mode
 * against a bare send-to-every-socket loop (the reference) and Node with
 * `ws`: echo round trips and fan-out to 100 and 1,000 subscribers.
 *
 * @module
 */
import type { Scenario, ServerDef } from "../_types.ts";

/** The WebSocket servers: the `ws-echo` and `ws-broadcast` groups. */
export const WS_SERVERS: ServerDef[] = [
  {
    id: "netkit-ws-echo",
    family: "ws",
    group: "ws-echo",
    label: "netkit ws-server --mode echo",
    script: "cli/ws_server.ts",
    args: () => ["--mode", "echo", "--port", "0", "--quiet"],
    optional: true,
  },
  {
    id: "bare-ws-echo",
    family: "ws",
    group: "ws-echo",
    label: "bare Deno.upgradeWebSocket echo",
    script: "bench/bare_ws_echo.ts",
    args: () => ["--port", "0"],
    baseline: true,
  },
  {
    id: "netkit-ws-bcast",
    family: "ws",
    group: "ws-broadcast",
    label: "netkit ws-server --mode broadcast",
    script: "cli/ws_server.ts",
    args: () => ["--mode", "broadcast", "--port", "0", "--quiet"],
    optional: true,
  },
  {
    id: "bare-ws-bcast",
    family: "ws",
    group: "ws-broadcast",
    label: "bare Deno send-to-every-socket loop",
    script: "bench/bare_ws_broadcast.ts",
    args: () => ["--port", "0"],
    baseline: true,
  },
  {
    id: "node-ws-bcast",
    family: "ws",
    group: "ws-broadcast",
    label: "Node + ws, send to every client",
    script: "bench/node_ws_broadcast.mjs",
    runtime: "node",
    args: () => ["--port", "0"],
    optional: true,
  },
];

/** The WebSocket loads. */
export const WS_SCENARIOS: Scenario[] = [
  {
    id: "ws-rr",
    family: "ws",
    group: "ws-echo",
    title: "WebSocket echo round trips/s (64 B, 50 conns)",
    mode: "ws-rr",
    conns: 50,
    size: 64,
  },
  // Fan-out: the publisher keeps at most `window` messages outstanding (not yet
  // received by every subscriber), so the server always has work queued but
  // never an unbounded backlog. Latency is then about window × subscribers /
  // (deliveries per second) (Little's law) plus the server's jitter: with the
  // same window, 10× the subscribers means about 10× the latency.
  {
    id: "ws-fanout-100",
    family: "ws",
    group: "ws-broadcast",
    title: "WebSocket fan-out to 100 subscribers, deliveries/s (32 B, window {window})",
    mode: "ws-fanout",
    conns: 100,
    size: 32,
    window: 32,
  },
  {
    id: "ws-fanout-1000",
    family: "ws",
    group: "ws-broadcast",
    title: "WebSocket fan-out to 1,000 subscribers, deliveries/s (32 B, window {window})",
    mode: "ws-fanout",
    conns: 1000,
    size: 32,
    window: 32,
  },
];
