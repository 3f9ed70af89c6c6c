/**
 * TCP: netkit's tcp-server against bare Deno echo servers (a `pipeTo` echo
 * and a read/write loop, the reference), round trips and streaming.
 *
 * @module
 */
import type { Scenario, ServerDef } from "../_types.ts";

/** The TCP echo servers. */
export const TCP_SERVERS: ServerDef[] = [
  {
    id: "netkit",
    family: "tcp",
    label: "netkit tcp-server",
    script: "cli/tcp_server.ts",
    // --quiet: the bare echoes log nothing per connection either.
    args: () => ["--port", "0", "--quiet"],
    optional: true,
  },
  {
    id: "pipe",
    family: "tcp",
    label: "bare pipeTo echo",
    script: "bench/bare_pipe_echo.ts",
    args: () => ["--port", "0"],
  },
  {
    id: "loop",
    family: "tcp",
    label: "bare read/write loop",
    script: "bench/bare_loop_echo.ts",
    args: () => ["--port", "0"],
    baseline: true,
  },
  {
    // what the loop does without TCP_NODELAY (Deno's default for accepted sockets)
    id: "loop-nagle",
    family: "tcp",
    label: "bare read/write loop, Nagle on",
    script: "bench/bare_loop_echo.ts",
    args: () => ["--port", "0", "--nagle"],
    onRequest: true,
  },
];

/** The TCP loads. */
export const TCP_SCENARIOS: Scenario[] = [
  {
    id: "tcp-rr",
    family: "tcp",
    title: "TCP round trips/s (64 B, 50 conns)",
    mode: "rr",
    conns: 50,
    size: 64,
  },
  {
    id: "tcp-stream",
    family: "tcp",
    title: "TCP stream MB/s (64 KiB writes, 4 conns)",
    mode: "stream",
    conns: 4,
    size: 65536,
  },
];
