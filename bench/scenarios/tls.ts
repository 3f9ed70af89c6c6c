/**
 * TLS: netkit's tls-server (both engines) against bare Deno TLS echo
 * servers (the read/write loop is the reference): round trips, streaming,
 * and full handshakes.
 *
 * @module
 */
import type { Ctx, Scenario, ServerDef } from "../_types.ts";

const tlsFiles = (ctx: Ctx) => ["--cert", ctx.certFile, "--key", ctx.keyFile];

/** The TLS echo servers. */
export const TLS_SERVERS: ServerDef[] = [
  {
    id: "netkit-tls",
    family: "tls",
    label: "netkit tls-server",
    script: "cli/tls_server.ts",
    args: (ctx) => ["--port", "0", "--quiet", ...tlsFiles(ctx)],
    optional: true,
  },
  {
    id: "netkit-tls-deno",
    family: "tls",
    label: "netkit tls-server --engine deno",
    script: "cli/tls_server.ts",
    args: (ctx) => ["--port", "0", "--quiet", "--engine", "deno", ...tlsFiles(ctx)],
    optional: true,
  },
  {
    id: "pipe-tls",
    family: "tls",
    label: "bare TLS pipeTo echo",
    script: "bench/bare_tls_pipe_echo.ts",
    args: (ctx) => ["--port", "0", ...tlsFiles(ctx)],
  },
  {
    id: "loop-tls",
    family: "tls",
    label: "bare TLS read/write loop",
    script: "bench/bare_tls_loop_echo.ts",
    args: (ctx) => ["--port", "0", ...tlsFiles(ctx)],
    baseline: true,
  },
];

/** The TLS loads. */
export const TLS_SCENARIOS: Scenario[] = [
  {
    id: "tls-rr",
    family: "tls",
    title: "TLS round trips/s (64 B, 50 conns)",
    mode: "rr",
    conns: 50,
    size: 64,
  },
  {
    id: "tls-stream",
    family: "tls",
    title: "TLS stream MB/s (64 KiB writes, 4 conns)",
    mode: "stream",
    conns: 4,
    size: 65536,
  },
  {
    id: "tls-handshake",
    family: "tls",
    title: "TLS full handshakes/s (16 conns)",
    mode: "handshake",
    conns: 16,
    size: 1,
    // Deno.listenTls sockets have no TCP_NODELAY: without this the echo after the
    // session tickets waits for the client's delayed ACK (40 ms) and the number
    // measures that timer, not the server.
    extra: ["--quickack"],
    // an OpenSSL 3.0 client spends more CPU per handshake than the server: one
    // client process alone would be the bottleneck
    procs: 2,
  },
];
