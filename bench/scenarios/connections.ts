/**
 * Connections and memory (`--only conns`): N idle connections (default
 * 10,000) held open against every server below, one server at a time, and
 * what each costs the server — RSS and V8 heap per connection, next to the
 * bare-Deno floor measured in the same run — plus broadcast fan-out to
 * 10,000 subscribers against Bun and Node + `ws`. The memory servers are
 * run by `bench/_connections.ts` (their load is bench/conn_holder.c, not
 * loadgen); the fan-out is an ordinary `ws-fanout` scenario.
 *
 * @module
 */
import type { Ctx, Scenario, ServerDef } from "../_types.ts";

/** What the connections are: the holder's `--mode`. */
export type ConnProto = "tcp" | "tls" | "ws" | "wss";

/** A server of the memory scenario. */
export interface ConnServerDef {
  /** short id for `--servers` and the JSON output */
  id: string;
  proto: ConnProto;
  label: string;
  /** the program, relative to the repo root */
  script: string;
  /** what runs it (default: this Deno, with the heap probe preloaded) */
  runtime?: "deno" | "node" | "bun";
  args(ctx: Ctx): string[];
  /**
   * The bare floor netkit is held against: the least memory an idle
   * connection of this kind costs in Deno. `engine` names which floor.
   */
  floor?: "deno" | "node-tls" | "rustls";
  /** a netkit program: its row gets the ratio to the floor of its `engine` */
  netkit?: "deno" | "node-tls" | "rustls";
  /** only run when named in `--servers` */
  onRequest?: boolean;
}

const cert = (ctx: Ctx) => ["--cert", ctx.certFile, "--key", ctx.keyFile];

/**
 * The servers, protocol by protocol. netkit's WebSocket rows are
 * `ws-server --mode broadcast` (every connection a subscriber); the floors
 * read into a 1 KiB buffer per connection (bench/bare_small_echo.ts) or
 * are Deno's `node:tls` server as it comes (bench/bare_node_tls_echo.ts).
 */
export const CONN_SERVERS: ConnServerDef[] = [
  {
    id: "netkit-tcp",
    proto: "tcp",
    label: "netkit tcp-server",
    script: "cli/tcp_server.ts",
    args: () => ["--port", "0", "--quiet"],
    netkit: "deno",
  },
  {
    id: "bare-1k-tcp",
    proto: "tcp",
    label: "bare Deno echo, 1 KiB buffer (floor)",
    script: "bench/bare_small_echo.ts",
    args: () => ["--port", "0"],
    floor: "deno",
  },
  {
    id: "bare-64k-tcp",
    proto: "tcp",
    label: "bare Deno echo, 64 KiB buffer",
    script: "bench/bare_loop_echo.ts",
    args: () => ["--port", "0"],
  },
  {
    id: "netkit-tls",
    proto: "tls",
    label: "netkit tls-server (engine node, the default)",
    script: "cli/tls_server.ts",
    args: (ctx) => ["--port", "0", "--quiet", ...cert(ctx)],
    netkit: "node-tls",
  },
  {
    id: "bare-node-tls",
    proto: "tls",
    label: "bare Deno node:tls echo (floor, engine node)",
    script: "bench/bare_node_tls_echo.ts",
    args: (ctx) => ["--port", "0", ...cert(ctx)],
    floor: "node-tls",
  },
  {
    id: "netkit-tls-deno",
    proto: "tls",
    label: "netkit tls-server --engine deno",
    script: "cli/tls_server.ts",
    args: (ctx) => ["--port", "0", "--quiet", "--engine", "deno", ...cert(ctx)],
    netkit: "rustls",
  },
  {
    id: "bare-1k-tls",
    proto: "tls",
    label: "bare Deno.listenTls echo, 1 KiB buffer (floor, engine deno)",
    script: "bench/bare_small_echo.ts",
    args: (ctx) => ["--port", "0", ...cert(ctx)],
    floor: "rustls",
  },
  {
    id: "netkit-ws",
    proto: "ws",
    label: "netkit ws-server --mode broadcast",
    script: "cli/ws_server.ts",
    args: () => ["--mode", "broadcast", "--port", "0", "--quiet"],
    netkit: "deno",
  },
  {
    id: "bare-ws",
    proto: "ws",
    label: "bare Deno.upgradeWebSocket broadcast",
    script: "bench/bare_ws_broadcast.ts",
    args: () => ["--port", "0"],
  },
  {
    id: "node-ws",
    proto: "ws",
    label: "Node + ws",
    script: "bench/node_ws_broadcast.mjs",
    runtime: "node",
    args: () => ["--port", "0"],
  },
  {
    id: "bun-ws",
    proto: "ws",
    label: "Bun (uWebSockets)",
    script: "bench/bun_ws_broadcast.mjs",
    runtime: "bun",
    args: () => ["--port", "0", "--compression", "off"],
  },
  {
    id: "netkit-wss",
    proto: "wss",
    label: "netkit ws-server --mode broadcast, wss (engine node)",
    script: "cli/ws_server.ts",
    args: (ctx) => ["--mode", "broadcast", "--port", "0", "--quiet", ...cert(ctx)],
    netkit: "node-tls",
  },
  {
    id: "bare-wss",
    proto: "wss",
    label: "bare Deno.upgradeWebSocket broadcast, wss",
    script: "bench/bare_ws_broadcast.ts",
    args: (ctx) => ["--port", "0", ...cert(ctx)],
  },
];

/** The floor a netkit row of `proto` is compared with when its engine has none in its group. */
export const FLOOR_FOR: Record<ConnProto, ConnServerDef["floor"]> = {
  tcp: "deno",
  tls: "node-tls",
  ws: "deno",
  wss: "node-tls",
};

/** The group of the 10,000-subscriber fan-out: runs with `--only conns`, not with `ws`. */
export const FANOUT_10K_GROUP = "ws-fanout-10k";

/** Broadcast fan-out at 10,000 subscribers: netkit, Bun and Node + ws. */
export const FANOUT_10K_SERVERS: ServerDef[] = [
  {
    id: "netkit-bcast-10k",
    family: "ws",
    group: FANOUT_10K_GROUP,
    label: "netkit ws-server --mode broadcast",
    script: "cli/ws_server.ts",
    args: () => ["--mode", "broadcast", "--port", "0", "--quiet"],
  },
  {
    id: "bun-bcast-10k",
    family: "ws",
    group: FANOUT_10K_GROUP,
    label: "Bun (uWebSockets), publish to a topic",
    script: "bench/bun_ws_broadcast.mjs",
    runtime: "bun",
    args: () => ["--port", "0", "--compression", "off"],
    baseline: true,
    optional: true,
  },
  {
    id: "node-bcast-10k",
    family: "ws",
    group: FANOUT_10K_GROUP,
    label: "Node + ws, send to every client",
    script: "bench/node_ws_broadcast.mjs",
    runtime: "node",
    args: () => ["--port", "0"],
    optional: true,
  },
];

/**
 * The fan-out load: 10,000 subscribers, a window big enough to keep the
 * fastest server busy (Little's law: window × subscribers in flight).
 */
export const FANOUT_10K_SCENARIOS: Scenario[] = [
  {
    id: "ws-fanout-10000",
    family: "ws",
    group: FANOUT_10K_GROUP,
    title: "WebSocket fan-out to 10,000 subscribers, deliveries/s (32 B, window {window})",
    mode: "ws-fanout",
    conns: 10_000,
    size: 32,
    window: 8,
  },
];
