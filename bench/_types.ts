/**
 * The vocabulary of a `deno task bench` run, shared by its parts: server and
 * scenario definitions (the tables in `scenarios/`), the options a run was
 * given, what the load client reports, and one sample (one load-client run
 * against one server).
 *
 * @module
 */

/** A family of scenarios and servers: what the load client speaks. */
export type Family = "tcp" | "tls" | "ws";
/** Every family, in the order they run and are reported. */
export const FAMILIES: Family[] = ["tcp", "tls", "ws"];
/** A load-client mode (bench/loadgen.c `--mode`). */
export type Mode = "rr" | "stream" | "handshake" | "ws-rr" | "ws-fanout";

/** Files and names the server command lines may need. */
export interface Ctx {
  certFile: string;
  keyFile: string;
  caFile: string;
  serverName: string;
}

/** A server the bench can start: one row of a `SERVERS` table. */
export interface ServerDef {
  /** short id for `--servers` and the JSON output */
  id: string;
  family: Family;
  /** the scenarios it serves, when not all of its family's (ws: echo or broadcast) */
  group?: string;
  label: string;
  /** the program, relative to the repo root */
  script: string;
  /** what runs it (default: this Deno, `deno run -A`) */
  runtime?: "deno" | "node" | "bun";
  args(ctx: Ctx): string[];
  /** the reference the ratios are computed against (one per family or group) */
  baseline?: boolean;
  /** netkit programs may not exist yet: skip their rows with a note */
  optional?: boolean;
  /** only run when named in `--servers` */
  onRequest?: boolean;
}

/** A load the bench applies: one row of a `SCENARIOS` table. */
export interface Scenario {
  id: string;
  family: Family;
  /** the servers it runs against, when not all of its family's */
  group?: string;
  /** for the table; `{window}` becomes the fan-out window in use */
  title: string;
  mode: Mode;
  conns: number;
  size: number;
  /** extra loadgen flags */
  extra?: string[];
  /** ws-fanout: most messages outstanding (`--window` overrides) */
  window?: number;
  /** load client processes unless `--procs` is given (default 1) */
  procs?: number;
}

/** What loadgen prints (one JSON line). */
export interface LoadgenResult {
  mode: Mode;
  tls: boolean;
  tls_version?: string;
  cipher?: string;
  procs: number;
  conns: number;
  connected: number;
  duration_s: number;
  ops: number;
  ops_per_s: number;
  bytes: number;
  mb_per_s: number;
  p50_us?: number;
  p99_us?: number;
  mismatches: number;
  errors: number;
  /** ws modes */
  binary?: boolean;
  closes?: number;
  close_code?: number;
  close_reason?: string;
  /** ws-fanout */
  subscribers?: number;
  window?: number;
  msgs_per_s?: number;
  deliveries_per_s?: number;
  lost?: number;
  out_of_order?: number;
  /** ws modes: bytes of data frames the subscribers received while measuring */
  wire_bytes?: number;
  wire_bytes_per_delivery?: number;
  /** --deflate: connections that agreed to permessage-deflate */
  deflate?: boolean;
  deflate_conns?: number;
  cpu_s: number;
  cpu_pct: number;
  server_cpu_s?: number;
  server_cpu_pct?: number;
  box_busy_pct?: number;
  others_cpu_pct?: number;
}

/** One load-client run against one server in one round. */
export interface Sample {
  round: number;
  scenario: string;
  server: string;
  ok: boolean;
  error?: string;
  result?: LoadgenResult;
  peakRssBytes?: number;
  /** the server's RSS (`VmRSS`) once it listened, before any load */
  idleRssBytes?: number;
  command?: string;
}

/** What a run was asked to do (see `deno task bench --help`). */
export interface Options {
  rounds: number;
  duration: number;
  warmup: number;
  families: Family[];
  servers?: string[];
  pin: boolean;
  /** load client processes for every scenario; undefined: the scenario's default */
  procs?: number;
  verify: boolean;
  /** ws scenarios send binary messages (default text) */
  wsBinary: boolean;
  /** ws-fanout: overrides the scenarios' window */
  window?: number;
  json?: string;
}
