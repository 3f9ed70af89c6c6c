/**
 * The connections-and-memory scenario (`deno task bench --only conns`): for
 * every server of `scenarios/connections.ts`, one at a time, a fresh server
 * process, N connections set up and held idle by bench/conn_holder.c
 * (compiled on demand), and what they cost the server:
 *
 * 1. the server's RSS (and, for Deno servers, its V8 heap after a full GC,
 *    through the preloaded `_heap_probe.ts`) once it listens;
 * 2. N connections set up (TCP, TLS handshake, WebSocket upgrade), then 2 s
 *    idle (`--settle`): RSS and heap again — "idle";
 * 3. some traffic: every connection proves it is alive (an echoed byte, or a
 *    ping and its pong) and, for WebSocket, one broadcast reaches all of
 *    them; then 2 s idle and a third reading — "after traffic", the figure
 *    the goals are judged by, since a connection that has moved data must
 *    go back to holding little.
 *
 * KiB per connection = (RSS with the connections − RSS before) / N. With
 * more connections than one process may hold (`--connections 100000`),
 * netkit's `ws-server` runs with `--workers W --redis` (a redis-server the
 * harness starts on a free port) and RSS is summed over its processes.
 *
 * @module
 */
// deno-lint-ignore-file no-console
import { freePort } from "../tests/support/ports.ts";
import { type Program, startProgram } from "../tests/support/process.ts";
import { run } from "./_processes.ts";
import { rssBytes } from "./_procstat.ts";
import type { Ctx } from "./_types.ts";
import {
  CONN_SERVERS,
  type ConnProto,
  type ConnServerDef,
  FLOOR_FOR,
} from "./scenarios/connections.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const HOLDER_SRC = `${ROOT}/bench/conn_holder.c`;
const HOLDER_BIN = `${ROOT}/bench/.build/conn_holder`;
const COMPILE = ["gcc", "-O2", "-o", HOLDER_BIN, HOLDER_SRC, "-lssl", "-lcrypto"];

/** A process may hold this many sockets here (the hard open-files limit is 20,000). */
const PER_PROCESS = 16_000;
/** Connections opened at once by the holder (all its processes together). */
const CONCURRENCY = 256;
/** Seconds of quiet before each reading, unless `--settle` says otherwise. */
const SETTLE_S = 2;

/** What the scenario was asked to do. */
export interface ConnOptions {
  /** Connections per server. @default {10000} */
  connections: number;
  /** ws-server worker processes; 0: one process (the default up to 16,000 connections). */
  workers: number;
  /** Only these server ids (`--servers`), when given. */
  servers?: string[];
  /**
   * Seconds of quiet before the idle and after-traffic readings (`--settle`).
   * V8 gives back the young generation it grew while the connections were
   * set up, and compacts, only once its memory reducer runs on an idle heap
   * (some 10–30 s later): 2 s measures the heap as a burst left it, 30 s
   * what a server that stays idle settles to. Longer than 2 s, the base
   * reading waits as long too. @default {2}
   */
  settle?: number;
  /**
   * Connections a second holder adds after the after-traffic reading
   * (`--more`), one process only: RSS grows by what one more connection
   * costs, without the fixed costs the first ones carried (V8's young
   * generation grows to its maximum during the first burst and no further).
   * That slope is the cost per connection a bigger count pays, and gives
   * what one process would need for 100,000. 0: no second step. @default {0}
   */
  more?: number;
}

/** One process's memory at one reading. */
export interface MemReading {
  /** RSS of every process (the server's, or the primary's and its workers'), bytes. */
  rss: number[];
  /** V8 heap in use after a full GC (Deno servers only), bytes. */
  heapUsed?: number;
  /** `Deno.memoryUsage().external` (array buffers and the like) after that GC, bytes. */
  external?: number;
}

/** One server's result. */
export interface ConnSample {
  server: string;
  proto: ConnProto;
  label: string;
  ok: boolean;
  error?: string;
  connections: number;
  connected?: number;
  setupErrors?: number;
  firstError?: string;
  setupS?: number;
  /** connections that answered the liveness check */
  alive?: number;
  /** WebSocket: connections that received the broadcast */
  broadcastReached?: number;
  /** connections the server closed while they idled */
  dropped?: number;
  base?: MemReading;
  idle?: MemReading;
  after?: MemReading;
  /** `--more`: the second step's connections, set up and alive, and its reading after traffic */
  more?: { added: number; connected: number; alive: number; reached?: number; after?: MemReading };
  workers?: number;
  command: string;
}

const aborter = new AbortController();
const holders = new Set<Deno.ChildProcess>();

/** Kills every server and holder this scenario started (Ctrl-C). */
export function killConnections(): void {
  aborter.abort();
  for (const child of holders) {
    try {
      child.kill("SIGKILL");
    } catch {
      // gone already
    }
  }
}

/** Builds bench/.build/conn_holder unless it is newer than its source. */
export async function ensureHolder(): Promise<void> {
  try {
    const [bin, src] = await Promise.all([Deno.stat(HOLDER_BIN), Deno.stat(HOLDER_SRC)]);
    if ((bin.mtime?.getTime() ?? 0) >= (src.mtime?.getTime() ?? Infinity)) return;
  } catch {
    // not built yet
  }
  await Deno.mkdir(`${ROOT}/bench/.build`, { recursive: true });
  console.error(`compiling the connection holder: ${COMPILE.join(" ").replaceAll(ROOT + "/", "")}`);
  const out = await run(COMPILE[0], COMPILE.slice(1), 120_000);
  if (out.code !== 0) throw new Error(`compiling bench/conn_holder.c failed:\n${out.stderr}`);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The holder: started, with line-by-line access to its JSON output. */
class Holder {
  readonly child: Deno.ChildProcess;
  #lines: ReadableStreamDefaultReader<string>;
  #buffer = "";
  #writer: WritableStreamDefaultWriter<Uint8Array>;

  constructor(args: string[]) {
    this.child = new Deno.Command(HOLDER_BIN, {
      args,
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
      signal: aborter.signal,
    }).spawn();
    holders.add(this.child);
    this.child.status.finally(() => holders.delete(this.child));
    this.#lines = this.child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    this.#writer = this.child.stdin.getWriter();
  }

  async line(timeoutMs: number): Promise<Record<string, unknown>> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<never>((_, reject) =>
      timer = setTimeout(() => reject(new Error("the connection holder did not answer")), timeoutMs)
    );
    try {
      while (!this.#buffer.includes("\n")) {
        const { value, done } = await Promise.race([this.#lines.read(), late]);
        if (done) throw new Error("the connection holder exited");
        this.#buffer += value;
      }
    } finally {
      clearTimeout(timer);
    }
    const at = this.#buffer.indexOf("\n");
    const line = this.#buffer.slice(0, at);
    this.#buffer = this.#buffer.slice(at + 1);
    return JSON.parse(line);
  }

  async command(text: string, timeoutMs: number): Promise<Record<string, unknown>> {
    await this.#writer.write(new TextEncoder().encode(text + "\n"));
    return await this.line(timeoutMs);
  }

  async quit(): Promise<void> {
    try {
      await this.#writer.write(new TextEncoder().encode("quit\n"));
      await this.#writer.close();
    } catch {
      // exited already
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      this.child.status,
      new Promise((resolve) => timer = setTimeout(resolve, 20_000)),
    ]);
    clearTimeout(timer);
    try {
      this.child.kill("SIGKILL");
    } catch {
      // exited
    }
    await this.child.status;
    await this.#lines.cancel().catch(() => {});
  }
}

/** The pids of `pid`'s children (Linux: /proc/PID/task/TID/children). */
async function childrenOf(pid: number): Promise<number[]> {
  const out: number[] = [];
  try {
    for await (const task of Deno.readDir(`/proc/${pid}/task`)) {
      const text = await Deno.readTextFile(`/proc/${pid}/task/${task.name}/children`);
      out.push(...text.trim().split(/\s+/).filter(Boolean).map(Number));
    }
  } catch {
    // gone
  }
  return out;
}

/** Deno servers: a full GC and `Deno.memoryUsage()` through the preloaded probe (SIGUSR2). */
async function probeHeap(
  server: Program,
  file: string,
): Promise<{ heapUsed: number; external: number } | undefined> {
  await Deno.remove(file).catch(() => {});
  server.kill("SIGUSR2");
  for (let i = 0; i < 100; i++) {
    await sleep(100);
    try {
      const usage = JSON.parse(await Deno.readTextFile(file));
      return { heapUsed: usage.heapUsed, external: usage.external };
    } catch {
      // not written yet
    }
  }
  return undefined;
}

async function reading(server: Program, pids: number[], probe?: string): Promise<MemReading> {
  const heap = probe === undefined ? undefined : await probeHeap(server, probe);
  const rss = await Promise.all(pids.map(async (pid) => (await rssBytes(pid)) ?? 0));
  return { rss, heapUsed: heap?.heapUsed, external: heap?.external };
}

/** A throwaway redis-server for `--workers`; resolves to it and its URL. */
async function startRedis(): Promise<{ child: Deno.ChildProcess; url: string }> {
  const port = freePort();
  const child = new Deno.Command("redis-server", {
    args: ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
    stdout: "null",
    stderr: "null",
    signal: aborter.signal,
  }).spawn();
  for (let i = 0; i < 100; i++) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return { child, url: `redis://127.0.0.1:${port}` };
    } catch {
      await sleep(100);
    }
  }
  child.kill("SIGKILL");
  throw new Error("redis-server did not start");
}

function commandOf(def: ConnServerDef, ctx: Ctx, extra: string[], bun: string): string[] {
  const args = [...def.args(ctx), ...extra];
  if (def.runtime === "node") return ["node", def.script, ...args];
  if (def.runtime === "bun") return [bun, def.script, ...args];
  return [
    Deno.execPath(),
    "run",
    "-A",
    "--preload",
    "bench/_heap_probe.ts",
    "--v8-flags=--expose-gc",
    def.script,
    ...args,
  ];
}

/** The connection holder's arguments: `n` connections from 127.0.0.`sourceBase` on. */
function holderArgs(
  def: ConnServerDef,
  ctx: Ctx,
  port: number,
  n: number,
  sourceBase: number,
): string[] {
  const procs = Math.max(2, Math.ceil(n / PER_PROCESS));
  return [
    "--mode",
    def.proto,
    "--port",
    String(port),
    "--conns",
    String(n),
    "--procs",
    String(procs),
    "--source-base",
    String(sourceBase),
    "--per-source",
    String(Math.min(20_000, Math.ceil(n / procs))),
    "--concurrency",
    String(CONCURRENCY),
    "--sni",
    ctx.serverName,
    "--timeout",
    String(60 + n / 200),
  ];
}

/** Holds `opts.connections` connections against one server and reads its memory. */
async function measure(
  def: ConnServerDef,
  ctx: Ctx,
  opts: ConnOptions,
  bun: string,
  tmp: string,
): Promise<ConnSample> {
  const n = opts.connections;
  const workers = def.id === "netkit-ws" ? opts.workers : 0;
  let redis: { child: Deno.ChildProcess; url: string } | undefined;
  const extra: string[] = [];
  if (workers > 0) {
    redis = await startRedis();
    extra.push("--workers", String(workers), "--redis", redis.url, "--max-connections", "19000");
  }
  const argv = commandOf(def, ctx, extra, bun);
  const sample: ConnSample = {
    server: def.id,
    proto: def.proto,
    label: workers > 0 ? `${def.label} --workers ${workers} --redis` : def.label,
    ok: false,
    connections: n,
    workers: workers || undefined,
    command: argv.map((a) => a === Deno.execPath() ? "deno" : a.replace(ctx.certFile, "CERT"))
      .map((a) => a.replace(ctx.keyFile, "KEY")).join(" "),
  };
  const probe = def.runtime === undefined && workers === 0
    ? `${tmp}/heap-${def.id}.json`
    : undefined;
  let server: Program | undefined;
  let holder: Holder | undefined;
  let second: Holder | undefined;
  try {
    server = await startProgram({
      command: argv[0],
      args: argv.slice(1),
      name: def.label,
      env: probe ? { NETKIT_HEAP_PROBE: probe } : {},
      maxStderrLines: 50,
      listenTimeout: 60_000,
      signal: aborter.signal,
    });
    // With a long --settle the base waits as long: V8 gives back what the
    // start-up itself left (module loading) only then, and a base read
    // earlier would credit that to the connections.
    const settle = (opts.settle ?? SETTLE_S) * 1000;
    await sleep(settle > SETTLE_S * 1000 ? settle : 1000);
    const pids = [server.pid, ...(workers > 0 ? await childrenOf(server.pid) : [])];
    sample.base = await reading(server, pids, probe);

    holder = new Holder(holderArgs(def, ctx, server.port, n, 2));
    const ready = await holder.line((90 + n / 200) * 1000);
    sample.connected = ready.connected as number;
    sample.setupErrors = ready.errors as number;
    sample.setupS = ready.setup_s as number;
    if (ready.first_error) sample.firstError = String(ready.first_error);
    await sleep(settle);
    sample.idle = await reading(server, pids, probe);

    const checked = await holder.command("check", 60_000);
    sample.alive = checked.alive as number;
    if (def.proto === "ws" || def.proto === "wss") {
      const published = await holder.command("publish 1", 60_000);
      sample.broadcastReached = published.received_all as number;
    }
    await sleep(settle);
    sample.after = await reading(server, pids, probe);
    const last = await holder.command("check", 60_000);
    sample.dropped = last.dropped as number;
    const more = opts.more ?? 0;
    if (more > 0 && workers === 0) {
      // Source addresses after the first holder's (one per holder process).
      const firstSources = Math.max(2, Math.ceil(n / PER_PROCESS));
      second = new Holder(holderArgs(def, ctx, server.port, more, 2 + firstSources));
      const up = await second.line((90 + more / 200) * 1000);
      const step: NonNullable<ConnSample["more"]> = {
        added: more,
        connected: up.connected as number,
        alive: 0,
      };
      sample.more = step;
      const alive = await second.command("check", 60_000);
      step.alive = alive.alive as number;
      if (def.proto === "ws" || def.proto === "wss") {
        // Reaches the first holder's connections too: all of them move data.
        const published = await second.command("publish 1", 60_000);
        step.reached = published.received_all as number;
      }
      await holder.command("check", 60_000);
      await sleep(settle);
      step.after = await reading(server, pids, probe);
    }
    sample.ok = sample.connected === n && sample.alive === n && !server.exited;
    if (!sample.ok) {
      sample.error = server.exited
        ? `the server exited: ${server.stderr().trim().slice(-300)}`
        : `${n - (sample.connected ?? 0)} not connected` +
          (sample.firstError ? ` (first error: ${sample.firstError})` : "") +
          `, ${n - (sample.alive ?? 0)} not alive`;
    }
  } catch (err) {
    sample.error = (err as Error).message;
  } finally {
    await second?.quit();
    await holder?.quit();
    await server?.stop("SIGTERM", { timeout: 10_000 });
    if (redis) {
      redis.child.kill("SIGKILL");
      await redis.child.status;
    }
  }
  return sample;
}

/**
 * Runs the scenario: every server of the table that can run here (Node and
 * Bun rows need `node` and `bun`; with workers, only netkit's ws-server),
 * one after the other.
 */
export async function runConnections(
  ctx: Ctx,
  opts: ConnOptions,
  tools: { node: boolean; bun?: string },
  progress: (s: ConnSample) => void,
): Promise<{ samples: ConnSample[]; notes: string[] }> {
  await ensureHolder();
  const notes: string[] = [];
  const tmp = await Deno.makeTempDir({ prefix: "netkit-conns-" });
  const samples: ConnSample[] = [];
  try {
    for (const def of CONN_SERVERS) {
      if (opts.servers ? !opts.servers.includes(def.id) : def.onRequest) continue;
      if (def.proto.startsWith("tls") || def.proto === "wss") {
        if (!ctx.certFile) continue;
      }
      if (opts.workers > 0 && def.id !== "netkit-ws") continue;
      if (opts.workers === 0 && opts.connections > PER_PROCESS + 3000) continue;
      if (def.runtime === "node" && !tools.node) {
        notes.push(`${def.label}: skipped (no node, or no ws package)`);
        continue;
      }
      if (def.runtime === "bun" && tools.bun === undefined) {
        notes.push(`${def.label}: skipped (no bun)`);
        continue;
      }
      const sample = await measure(def, ctx, opts, tools.bun ?? "bun", tmp);
      samples.push(sample);
      progress(sample);
    }
  } finally {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
  return { samples, notes };
}

// ---------------------------------------------------------------------------
// Report

const KiB = 1024;
const MiB = 1024 * 1024;
const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

/** KiB per connection between two readings, by total RSS. */
function perConn(a: MemReading | undefined, b: MemReading | undefined, n: number): number {
  if (!a || !b || !n) return NaN;
  return (sum(b.rss) - sum(a.rss)) / n / KiB;
}

function heapPerConn(a: MemReading | undefined, b: MemReading | undefined, n: number): number {
  if (a?.heapUsed === undefined || b?.heapUsed === undefined || !n) return NaN;
  return (b.heapUsed - a.heapUsed) / n / KiB;
}

const f1 = (x: number) => Number.isFinite(x) ? x.toFixed(1) : "–";

function table(header: string[], rows: string[][]): string {
  const line = (cells: string[]) => `| ${cells.join(" | ")} |`;
  return [line(header), line(header.map(() => "---")), ...rows.map(line)].join("\n");
}

/** The floor of a netkit row: the bare server of its engine measured in the same run. */
function floorOf(s: ConnSample, samples: ConnSample[]): ConnSample | undefined {
  const def = CONN_SERVERS.find((d) => d.id === s.server);
  const engine = def?.netkit ?? FLOOR_FOR[s.proto];
  const floorDef = CONN_SERVERS.find((d) => d.floor === engine);
  return samples.find((x) => x.server === floorDef?.id && x.ok);
}

/** The scenario's tables, as markdown. */
export function renderConnections(
  samples: ConnSample[],
  opts: ConnOptions,
  notes: string[],
): string {
  const out: string[] = [];
  const n = opts.connections.toLocaleString("en-US");
  out.push(`### Connections and memory: ${n} idle connections per server`);
  out.push("");
  const rows = samples.map((s) => {
    const idle = perConn(s.base, s.idle, s.connected ?? 0);
    const after = perConn(s.base, s.after, s.connected ?? 0);
    const floor = floorOf(s, samples);
    const floorAfter = floor ? perConn(floor.base, floor.after, floor.connected ?? 0) : NaN;
    const def = CONN_SERVERS.find((d) => d.id === s.server);
    const vsFloor = def?.netkit && Number.isFinite(floorAfter)
      ? `${(after / floorAfter).toFixed(2)}× (${f1(floorAfter)})`
      : def?.floor
      ? "floor"
      : "";
    return [
      s.proto,
      s.label,
      s.ok ? `${(s.connected ?? 0).toLocaleString("en-US")}` : `FAILED: ${s.error ?? "?"}`,
      s.setupS === undefined ? "–" : s.setupS.toFixed(1),
      String(s.setupErrors ?? "–"),
      s.base ? (sum(s.base.rss) / MiB).toFixed(0) : "–",
      s.after ? (sum(s.after.rss) / MiB).toFixed(0) : "–",
      f1(idle),
      `**${f1(after)}**`,
      vsFloor,
      f1(heapPerConn(s.base, s.after, s.connected ?? 0)),
      s.after?.external !== undefined && s.base?.external !== undefined
        ? f1((s.after.external - s.base.external) / (s.connected || 1) / KiB)
        : "–",
      `${s.alive ?? "–"}${s.broadcastReached !== undefined ? ` / ${s.broadcastReached}` : ""}`,
    ];
  });
  out.push(table([
    "proto",
    "server",
    "connected",
    "setup s",
    "errors",
    "RSS before MiB",
    "RSS with conns MiB",
    "KiB/conn idle",
    "KiB/conn after traffic",
    "× floor (floor KiB/conn)",
    "V8 heap KiB/conn",
    "external KiB/conn",
    "alive / got broadcast",
  ], rows));
  out.push("");
  const settle = opts.settle ?? SETTLE_S;
  out.push(
    "KiB/conn = (server RSS with the connections − RSS before them) / connections. idle: " +
      `${settle} s after the last was set up; after traffic: after every connection echoed a ` +
      "byte (TCP/TLS) or answered a ping and received one broadcast (WebSocket), then " +
      `${settle} s idle — the figure the goals use (with the default --settle 2). Deno servers run a full GC (preloaded ` +
      "bench/_heap_probe.ts) before each reading, which also gives the V8 heap and external " +
      "(ArrayBuffer) memory; Node and Bun are read as they are. The floor is the bare Deno " +
      "server of the same engine measured in this run: a 1 KiB read buffer per connection " +
      "(TCP, WebSocket; Deno.listenTls for --engine deno) or Deno's node:tls server " +
      "(TLS and wss on netkit's default engine).",
  );
  const multi = samples.filter((s) => s.workers);
  for (const s of multi) {
    if (!s.after || !s.base) continue;
    const per = perConn(s.base, s.after, s.connected ?? 0);
    const procs = s.after.rss.map((r, i) =>
      `${i === 0 ? "primary" : `worker ${i}`} ${(r / MiB).toFixed(0)} MiB`
    );
    out.push("");
    out.push(
      `${s.label}: RSS per process with ${(s.connected ?? 0).toLocaleString("en-US")} ` +
        `connections: ${procs.join(", ")}; total ${(sum(s.after.rss) / MiB).toFixed(0)} MiB ` +
        `(${(sum(s.base.rss) / MiB).toFixed(0)} MiB before). At ${f1(per)} KiB per connection, ` +
        `one process would need about ${
          ((s.base.rss[1] ?? s.base.rss[0]) / MiB + per * 100_000 / KiB).toFixed(0)
        } MiB for 100,000 (one worker's start-up RSS + 100,000 × the measured cost; an upper ` +
        "bound: the cost is an average over the processes, each with fixed costs of its own " +
        "such as V8's young generation; `--more` measures the cost of one more connection).",
    );
  }
  for (const s of samples) {
    const step = s.more;
    if (!step?.after || !s.after) continue;
    const total = (s.connected ?? 0) + step.connected;
    const slope = perConn(s.after, step.after, step.connected);
    const rss = sum(step.after.rss) / MiB;
    out.push("");
    out.push(
      `${s.label}: ${step.connected.toLocaleString("en-US")} more connections ` +
        `(${total.toLocaleString("en-US")} in all; alive ${step.alive}` +
        `${
          step.reached !== undefined ? `, got the broadcast ${step.reached}` : ""
        }) took RSS from ` +
        `${(sum(s.after.rss) / MiB).toFixed(0)} to ${rss.toFixed(0)} MiB after traffic: ` +
        `**${f1(slope)} KiB per added connection** (the first ${
          (s.connected ?? 0).toLocaleString("en-US")
        }: ${f1(perConn(s.base, s.after, s.connected ?? 0))}, fixed costs included). ` +
        `One process holding 100,000 would need about **${
          (rss + slope * (100_000 - total) / KiB).toFixed(0)
        } MiB** (its RSS with ${total.toLocaleString("en-US")} + ${
          (100_000 - total).toLocaleString("en-US")
        } × the added cost).`,
    );
  }
  for (const note of notes) out.push(`\n- ${note}`);
  return out.join("\n");
}
