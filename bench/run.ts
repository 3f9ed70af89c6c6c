/**
 * `deno task bench`: netkit's servers against bare Deno ones (and, for
 * WebSocket broadcast, Node with `ws`), in one run, with one external load
 * client (bench/loadgen.c, compiled on demand).
 *
 *   deno task bench [--quick] [--only tcp|tls|ws] [--rounds N] [--duration S]
 *                   [--warmup S] [--pin] [--procs N] [--verify] [--ws-binary]
 *                   [--servers a,b] [--json FILE]
 *
 * Every (scenario, server) pair runs once per round against a fresh server
 * process; within a round the servers take turns in a rotated order. The
 * tables show medians over the rounds; the ratio is the median of the
 * per-round ratios against the reference (bare read/write loop, bare Deno
 * WebSocket server) of the same round.
 *
 * Server and scenario definitions are tables (SERVERS, SCENARIOS): a new
 * family means new rows there plus a loadgen mode.
 *
 * @module
 */
// deno-lint-ignore-file no-console
import { parseArgs } from "node:util";
import { allowedCpus, cpuModel, loadAverage, parseCpuList, peakRssBytes } from "./_procstat.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const LOADGEN_SRC = `${ROOT}/bench/loadgen.c`;
const LOADGEN_BIN = `${ROOT}/bench/.build/loadgen`;
const COMPILE = [
  "gcc",
  "-O2",
  "-o",
  "bench/.build/loadgen",
  "bench/loadgen.c",
  "-lssl",
  "-lcrypto",
];

// ---------------------------------------------------------------------------
// What is measured

type Family = "tcp" | "tls" | "ws";
const FAMILIES: Family[] = ["tcp", "tls", "ws"];
type Mode = "rr" | "stream" | "handshake" | "ws-rr" | "ws-fanout";

/** Files and names the server command lines may need. */
interface Ctx {
  certFile: string;
  keyFile: string;
  caFile: string;
  serverName: string;
}

interface ServerDef {
  /** short id for `--servers` and the JSON output */
  id: string;
  family: Family;
  /** the scenarios it serves, when not all of its family's (ws: echo or broadcast) */
  group?: string;
  label: string;
  /** the program, relative to the repo root */
  script: string;
  /** what runs it (default: this Deno, `deno run -A`) */
  runtime?: "deno" | "node";
  args(ctx: Ctx): string[];
  /** the reference the ratios are computed against (one per family or group) */
  baseline?: boolean;
  /** netkit programs may not exist yet: skip their rows with a note */
  optional?: boolean;
  /** only run when named in `--servers` */
  onRequest?: boolean;
}

const tlsFiles = (ctx: Ctx) => ["--cert", ctx.certFile, "--key", ctx.keyFile];

const SERVERS: ServerDef[] = [
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

const groupOf = (x: { family: Family; group?: string }) => x.group ?? x.family;

interface Scenario {
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

const SCENARIOS: Scenario[] = [
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

/** What loadgen prints (one JSON line). */
interface LoadgenResult {
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
  cpu_s: number;
  cpu_pct: number;
  server_cpu_s?: number;
  server_cpu_pct?: number;
  box_busy_pct?: number;
  others_cpu_pct?: number;
}

interface Sample {
  round: number;
  scenario: string;
  server: string;
  ok: boolean;
  error?: string;
  result?: LoadgenResult;
  peakRssBytes?: number;
  command?: string;
}

// ---------------------------------------------------------------------------
// Options

interface Options {
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

/** `ids` comma-separated in lines of at most `width` characters, each indented by `indent`. */
function wrapIds(ids: string[], indent: number, width: number): string {
  const lines: string[] = [];
  let line = "";
  for (const id of ids) {
    const next = line ? `${line}, ${id}` : id;
    if (indent + next.length + 1 > width && line) {
      lines.push(`${line},`);
      line = id;
    } else line = next;
  }
  lines.push(line);
  return lines.map((l) => " ".repeat(indent) + l).join("\n");
}

const USAGE = `usage: deno task bench [flags]
  --quick          one short round (0.5 s warm-up + 1 s per server)
  --only tcp|tls|ws  only these scenarios (comma-separated; default all three)
  --rounds N       rounds, results are medians (default 5)
  --duration S     measured seconds per run (default 1.5)
  --warmup S       warm-up before a server's first run (default 1; later runs 0.3)
  --servers IDS    only these servers, e.g. loop,pipe; ids (loop-nagle only when named):
${wrapIds(SERVERS.map((s) => s.id), 19, 100)}
  --pin            taskset: server on the first allowed CPU, load client on the second
  --procs N        load client processes (default 1; 2 for handshakes)
  --verify         TLS: the load client verifies the server against the generated CA
  --ws-binary      WebSocket scenarios send binary messages (default: text)
  --window N       fan-out: most messages outstanding (default 32)
  --json FILE      also write every sample as JSON`;

function usage(message: string): never {
  console.error(`${message}\n${USAGE}`);
  Deno.exit(2);
}

function parseOptions(args: string[]): Options {
  let values;
  try {
    values = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        quick: { type: "boolean" },
        only: { type: "string" },
        rounds: { type: "string" },
        duration: { type: "string" },
        warmup: { type: "string" },
        servers: { type: "string" },
        pin: { type: "boolean" },
        procs: { type: "string" },
        verify: { type: "boolean" },
        "ws-binary": { type: "boolean" },
        window: { type: "string" },
        json: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    }).values;
  } catch (err) {
    usage((err as Error).message.split(". ")[0]);
  }
  if (values.help) {
    console.log(USAGE);
    Deno.exit(0);
  }
  const num = (v: string | undefined, name: string, fallback: number, min: number) => {
    if (v === undefined) return fallback;
    const n = Number(v);
    if (!/^\d*\.?\d+$/.test(v) || !(n >= min)) usage(`--${name} must be a number >= ${min}`);
    return n;
  };
  const quick = values.quick ?? false;
  const families = (values.only ?? FAMILIES.join(",")).split(",").map((f) => f.trim());
  for (const f of families) {
    if (!FAMILIES.includes(f as Family)) usage(`--only takes tcp, tls and/or ws, got "${f}"`);
  }
  const servers = values.servers?.split(",").map((s) => s.trim());
  for (const s of servers ?? []) {
    if (!SERVERS.some((d) => d.id === s)) usage(`unknown server "${s}" in --servers`);
  }
  return {
    rounds: Math.round(num(values.rounds, "rounds", quick ? 1 : 5, 1)),
    duration: num(values.duration, "duration", quick ? 1 : 1.5, 0.1),
    warmup: num(values.warmup, "warmup", quick ? 0.5 : 1, 0),
    families: families as Family[],
    servers,
    pin: values.pin ?? false,
    procs: values.procs === undefined ? undefined : Math.round(num(values.procs, "procs", 1, 1)),
    verify: values.verify ?? false,
    wsBinary: values["ws-binary"] ?? false,
    window: values.window === undefined
      ? undefined
      : Math.round(num(values.window, "window", 32, 1)),
    json: values.json,
  };
}

// ---------------------------------------------------------------------------
// Children: every process we start is tracked and killed on the way out

const live = new Set<Deno.ChildProcess>();
/** the temporary folder (certificates), removed on the way out */
let tmpDir: string | undefined;

/** SIGKILLs every child still running and waits (briefly) until they are reaped. */
async function killAll(): Promise<void> {
  const children = [...live];
  live.clear();
  for (const child of children) {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }
  await Promise.race([
    Promise.allSettled(children.map((c) => c.status)),
    new Promise((resolve) => setTimeout(resolve, 2000)),
  ]);
}

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Runs a command to completion with a time limit; output is collected. */
async function runCommand(
  cmd: string,
  args: string[],
  timeoutMs: number,
): Promise<{ code: number; stdout: string; stderr: string; timedOut: boolean }> {
  const child = new Deno.Command(cmd, {
    args,
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  live.add(child);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch {
      // exited meanwhile
    }
  }, timeoutMs);
  try {
    const out = await child.output();
    const dec = new TextDecoder();
    return {
      code: out.code,
      stdout: dec.decode(out.stdout),
      stderr: dec.decode(out.stderr),
      timedOut,
    };
  } finally {
    clearTimeout(timer);
    live.delete(child);
  }
}

// ---------------------------------------------------------------------------
// Setup: the load client and a certificate

async function ensureLoadgen(): Promise<void> {
  let fresh = false;
  try {
    const [bin, src] = await Promise.all([Deno.stat(LOADGEN_BIN), Deno.stat(LOADGEN_SRC)]);
    fresh = (bin.mtime?.getTime() ?? 0) >= (src.mtime?.getTime() ?? Infinity);
  } catch {
    // not built yet
  }
  if (fresh) return;
  await Deno.mkdir(`${ROOT}/bench/.build`, { recursive: true });
  console.error(`compiling the load client: ${COMPILE.join(" ")}`);
  let out;
  try {
    out = await runCommand(COMPILE[0], COMPILE.slice(1), 120_000);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      console.error(
        "gcc not found: the load client is C. Install a compiler and the OpenSSL headers, " +
          "e.g. `apt-get install gcc libssl-dev`, then run `deno task bench` again.",
      );
      Deno.exit(1);
    }
    throw err;
  }
  if (out.code !== 0) {
    if (/openssl\/\S+\.h|-lssl|-lcrypto/.test(out.stderr)) {
      console.error(
        "the OpenSSL development files are missing: install them, e.g. " +
          "`apt-get install libssl-dev`, then run `deno task bench` again.",
      );
    } else {
      console.error(`compiling bench/loadgen.c failed:\n${out.stderr}`);
    }
    Deno.exit(1);
  }
}

/**
 * A throwaway self-signed certificate for localhost / 127.0.0.1. The one
 * function to swap for netkit's certs module once it exists.
 */
async function makeCert(dir: string): Promise<Ctx> {
  const certFile = `${dir}/server.pem`;
  const keyFile = `${dir}/server-key.pem`;
  const args = [
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-days",
    "1",
    "-subj",
    "/CN=localhost",
    "-addext",
    "subjectAltName=DNS:localhost,IP:127.0.0.1",
    "-keyout",
    keyFile,
    "-out",
    certFile,
  ];
  const out = await runCommand("openssl", args, 30_000);
  if (out.code !== 0) throw new Error(`openssl req failed: ${out.stderr.trim()}`);
  return { certFile, keyFile, caFile: certFile, serverName: "localhost" };
}

const NODE_WS = "ws@8";

/**
 * Node and its `ws` package for the Node broadcast server: `ws` is installed
 * on first use into bench/.build/node_modules (git-ignored). Resolves to why
 * Node cannot run, or `undefined` when it can.
 */
async function ensureNodeWs(): Promise<string | undefined> {
  try {
    const v = await runCommand("node", ["--version"], 30_000);
    if (v.code !== 0) return `node --version failed: ${v.stderr.trim()}`;
  } catch {
    return "node is not installed";
  }
  try {
    await Deno.stat(`${ROOT}/bench/.build/node_modules/ws/package.json`);
    return undefined;
  } catch {
    // not installed yet
  }
  await Deno.mkdir(`${ROOT}/bench/.build`, { recursive: true });
  const args = ["install", "--prefix", "bench/.build", NODE_WS, "--no-audit", "--no-fund"];
  console.error(`installing Node's ws package: npm ${args.join(" ")}`);
  let out;
  try {
    out = await runCommand("npm", args, 180_000);
  } catch {
    return "npm is not installed (needed for the ws package)";
  }
  if (out.code !== 0) {
    return `npm install ${NODE_WS} failed: ${out.stderr.trim().split("\n").pop()}`;
  }
  return undefined;
}

/** The open-files limit (soft, hard) this process and so its children start with. */
async function fdLimits(): Promise<[number, number] | undefined> {
  try {
    const text = await Deno.readTextFile("/proc/self/limits");
    const m = text.match(/^Max open files\s+(\S+)\s+(\S+)/m);
    if (!m) return undefined;
    const n = (v: string) => v === "unlimited" ? Infinity : Number(v);
    return [n(m[1]), n(m[2])];
  } catch {
    return undefined;
  }
}

/**
 * Deno, Node and loadgen all raise their soft open-files limit to the hard one;
 * when even the hard one is too low for the connections a scenario opens, the
 * servers and the load client are started through `sh -c 'ulimit -n N; exec …'`
 * (Deno.Command cannot set rlimits). Set by main, empty when not needed.
 */
let fdWrap: string[] = [];

// ---------------------------------------------------------------------------
// One measurement

interface RunningServer {
  child: Deno.ChildProcess;
  pid: number;
  port: number;
  stderrTail: () => string;
  /** set once the process has exited */
  exited?: Deno.CommandStatus;
}

/** Starts a server and waits for its listening line. */
async function startServer(
  def: ServerDef,
  ctx: Ctx,
  pinCpu: number | undefined,
): Promise<RunningServer> {
  const argv = def.runtime === "node"
    ? ["node", def.script, ...def.args(ctx)]
    : [Deno.execPath(), "run", "-A", def.script, ...def.args(ctx)];
  const [cmd, ...args] = [
    ...fdWrap,
    ...(pinCpu === undefined ? argv : ["taskset", "-c", String(pinCpu), ...argv]),
  ];
  const child = new Deno.Command(cmd, {
    args,
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  live.add(child);

  // keep the last few KiB of stderr (servers log there; the pipe must never fill up)
  let tail = "";
  (async () => {
    for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
      tail = (tail + chunk).slice(-4096);
    }
  })().catch(() => {});

  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  const firstLine = (async () => {
    for (;;) {
      const { value, done } = await lines.read();
      if (done) return undefined;
      buffered += value;
      const nl = buffered.indexOf("\n");
      if (nl >= 0) return buffered.slice(0, nl);
    }
  })();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const line = await Promise.race([
    firstLine,
    new Promise<undefined>((resolve) => timer = setTimeout(() => resolve(undefined), 30_000)),
  ]);
  clearTimeout(timer);
  // go on draining stdout (a server should print nothing more, but must never block on it)
  (async () => {
    for (;;) if ((await lines.read()).done) return;
  })().catch(() => {});

  const m = line?.match(/^listening on (tcp|tls|ws|wss):\/\/(\[[^\]]+\]|[^:/]+):(\d+)$/);
  if (!m) {
    await stopServer(child);
    await delay(50);
    const why = line === undefined ? "no listening line within 30 s" : `unexpected line "${line}"`;
    throw new Error(`${def.label}: ${why}; stderr: ${tail.trim().slice(-500) || "(empty)"}`);
  }
  const server: RunningServer = {
    child,
    pid: child.pid,
    port: Number(m[3]),
    stderrTail: () => tail,
  };
  child.status.then((status) => server.exited = status);
  return server;
}

async function stopServer(child: Deno.ChildProcess): Promise<void> {
  try {
    child.kill("SIGTERM");
  } catch {
    // already gone
  }
  const exited = await Promise.race([child.status.then(() => true), delay(3000).then(() => false)]);
  if (!exited) {
    try {
      child.kill("SIGKILL");
    } catch {
      // exited meanwhile
    }
    await child.status;
  }
  live.delete(child);
}

const windowOf = (sc: Scenario, opts: Options) => opts.window ?? sc.window ?? 32;
const titleOf = (sc: Scenario, opts: Options) =>
  sc.title.replace("{window}", String(windowOf(sc, opts)));

/** loadgen runs ws-fanout in one process: the window needs every subscriber's count */
const procsFor = (sc: Scenario, opts: Options) =>
  sc.mode === "ws-fanout" ? 1 : opts.procs ?? sc.procs ?? 1;

/** Warm-up of every load run after a server's first (connections, windows; the JIT is warm). */
const REWARM_S = 0.3;

/** One load-client run against a running server. */
async function runLoad(
  round: number,
  sc: Scenario,
  def: ServerDef,
  server: RunningServer,
  warmup: number,
  ctx: Ctx,
  opts: Options,
  pin: [number, number] | undefined,
): Promise<Sample> {
  const sample: Sample = { round, scenario: sc.id, server: def.id, ok: false };
  const args = [
    "--mode",
    sc.mode,
    "--conns",
    String(sc.conns),
    "--size",
    String(sc.size),
    "--duration",
    String(opts.duration),
    "--warmup",
    String(warmup),
    "--procs",
    String(procsFor(sc, opts)),
    ...(sc.family === "tls" ? ["--tls", "--sni", ctx.serverName] : []),
    ...(sc.family === "tls" && opts.verify ? ["--ca", ctx.caFile] : []),
    ...(sc.family === "ws" && opts.wsBinary ? ["--binary"] : []),
    ...(sc.mode === "ws-fanout" ? ["--window", String(windowOf(sc, opts))] : []),
    ...(sc.extra ?? []),
    "--host",
    "127.0.0.1",
    "--port",
    String(server.port),
    "--server-pid",
    String(server.pid),
  ];
  const argv = [
    ...fdWrap,
    ...(pin ? ["taskset", "-c", String(pin[1]), LOADGEN_BIN, ...args] : [LOADGEN_BIN, ...args]),
  ];
  sample.command = argv.slice(fdWrap.length).map((a) =>
    a === LOADGEN_BIN ? "bench/.build/loadgen" : a
  ).join(" ");
  // ws: up to 30 s to connect and 10 s to join before the run proper
  const slack = sc.family === "ws" ? 60 : 30;
  const out = await runCommand(argv[0], argv.slice(1), (warmup + opts.duration + slack) * 1000);
  const jsonLine = out.stdout.trim().split("\n").pop() ?? "";
  if (jsonLine.startsWith("{")) sample.result = JSON.parse(jsonLine) as LoadgenResult;
  if (out.timedOut) sample.error = "load client timed out";
  else if (out.code !== 0) {
    sample.error = out.stderr.trim().split("\n").pop() ||
      `load client exited with code ${out.code}`;
  } else if (!sample.result) sample.error = "no result line from the load client";
  else sample.ok = true;
  await delay(0);
  if (server.exited) {
    sample.ok = false;
    sample.error = `${def.label} exited (${
      server.exited.signal ?? `code ${server.exited.code}`
    }) during the run; stderr: ${server.stderrTail().trim().slice(-300) || "(empty)"}`;
  }
  return sample;
}

/**
 * One scenario: fresh servers (all of the family at once; an idle server costs
 * nothing), then `rounds` rounds in which each server takes its turn, in an
 * order rotated every round. The first run against each server warms it up
 * for `--warmup` seconds, later ones for REWARM_S only, so runs that are
 * compared stay close in time.
 */
async function runScenario(
  sc: Scenario,
  defs: ServerDef[],
  ctx: Ctx,
  opts: Options,
  pin: [number, number] | undefined,
  progress: (s: Sample) => void,
): Promise<Sample[]> {
  const samples: Sample[] = [];
  const running = new Map<string, RunningServer>();
  const failed = new Map<string, string>();
  try {
    for (const def of defs) {
      try {
        running.set(def.id, await startServer(def, ctx, pin?.[0]));
      } catch (err) {
        failed.set(def.id, (err as Error).message);
      }
    }
    for (let round = 0; round < opts.rounds; round++) {
      const rotated = defs.map((_, i) => defs[(i + round) % defs.length]);
      for (const def of rotated) {
        const server = running.get(def.id);
        let sample: Sample;
        if (!server || server.exited) {
          const error = failed.get(def.id) ?? "the server exited in an earlier round";
          sample = { round, scenario: sc.id, server: def.id, ok: false, error };
        } else {
          sample = await runLoad(
            round,
            sc,
            def,
            server,
            round === 0 ? opts.warmup : Math.min(REWARM_S, opts.warmup),
            ctx,
            opts,
            pin,
          );
          if (server.exited) failed.set(def.id, sample.error!);
        }
        samples.push(sample);
        progress(sample);
      }
    }
    for (const [id, server] of running) {
      const rss = await peakRssBytes(server.pid);
      for (const s of samples) if (s.server === id) s.peakRssBytes = rss;
    }
  } finally {
    await Promise.all([...running.values()].map((r) => stopServer(r.child)));
  }
  return samples;
}

// ---------------------------------------------------------------------------
// Report

const median = (xs: number[]) => {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
};

const metricOf = (sc: Scenario, r: LoadgenResult) =>
  sc.mode === "stream" ? r.mb_per_s : r.ops_per_s;
const UNITS: Record<Mode, string> = {
  rr: "rt/s",
  stream: "MB/s",
  handshake: "hs/s",
  "ws-rr": "rt/s",
  "ws-fanout": "deliveries/s",
};
const unitOf = (sc: Scenario) => UNITS[sc.mode];
const int = (n: number) => Math.round(n).toLocaleString("en-US");
/** milliseconds from microseconds, with 2-3 significant digits */
const ms = (us: number) => {
  const v = us / 1000;
  return v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0);
};

const HEADER = [
  "scenario",
  "server",
  "result (median ±half-range)",
  "ratio vs read/write loop",
  "server CPU s (% of a core)",
  "server CPU µs/op",
  "server peak RSS MiB",
  "load client CPU %",
  "others' CPU %",
];
/** the WebSocket table: the reference is the bare Deno server; latency and losses too */
const WS_HEADER = [
  ...HEADER.slice(0, 3),
  "ratio vs bare Deno",
  "latency p50 / p99 ms",
  "lost / out of order / closed",
  ...HEADER.slice(4),
];
const headerOf = (sc: Scenario) => sc.family === "ws" ? WS_HEADER : HEADER;

interface Row {
  scenario: Scenario;
  server: ServerDef;
  cells: string[];
  ratio?: number;
  clientPct?: number;
  othersPct?: number;
  spread?: number;
  ratioSpread?: number;
  /** median p99 latency in µs (ws) */
  p99?: number;
}

function summarize(
  sc: Scenario,
  def: ServerDef,
  baseline: ServerDef | undefined,
  samples: Sample[],
  opts: Options,
): Row {
  const mine = samples.filter((s) => s.scenario === sc.id && s.server === def.id);
  const ok = mine.filter((s) => s.ok && s.result);
  if (!ok.length) {
    const err = mine.find((s) => s.error)?.error ?? "no samples";
    const cells = [titleOf(sc, opts), def.label, `FAILED: ${err.replaceAll("|", "/")}`];
    while (cells.length < headerOf(sc).length) cells.push("");
    return { scenario: sc, server: def, cells };
  }
  const values = ok.map((s) => metricOf(sc, s.result!));
  const value = median(values);
  const spread = values.length > 1 ? (Math.max(...values) - Math.min(...values)) / 2 / value : 0;
  let ratio: number | undefined;
  let ratioSpread: number | undefined;
  if (baseline) {
    const ratios: number[] = [];
    for (const s of ok) {
      const b = samples.find((x) =>
        x.scenario === sc.id && x.server === baseline.id && x.round === s.round && x.ok && x.result
      );
      if (b) ratios.push(metricOf(sc, s.result!) / metricOf(sc, b.result!));
    }
    if (ratios.length) ratio = median(ratios);
    if (ratios.length > 1) {
      ratioSpread = (Math.max(...ratios) - Math.min(...ratios)) / 2 / ratio!;
    }
  }
  const serverCpu = median(ok.map((s) => s.result!.server_cpu_s ?? NaN));
  const serverPct = median(ok.map((s) => s.result!.server_cpu_pct ?? NaN));
  const perOp = median(ok.map((s) => (s.result!.server_cpu_s ?? NaN) / s.result!.ops * 1e6));
  const rss = Math.max(...ok.map((s) => s.peakRssBytes ?? NaN));
  const clientPct = median(ok.map((s) => s.result!.cpu_pct));
  const othersPct = median(ok.map((s) => s.result!.others_cpu_pct ?? NaN));
  const result = `${int(value)} ${unitOf(sc)}` +
    (opts.rounds > 1 ? ` ±${(spread * 100).toFixed(0)}%` : "") +
    (ok.length < mine.length ? ` (${mine.length - ok.length} failed)` : "");
  const wsCells: string[] = [];
  let p99: number | undefined;
  if (sc.family === "ws") {
    const p50 = median(ok.map((s) => s.result!.p50_us ?? NaN));
    p99 = median(ok.map((s) => s.result!.p99_us ?? NaN));
    wsCells.push(Number.isFinite(p99) ? `${ms(p50)} / ${ms(p99)}` : "–");
    // every run that got as far as a result line, failed ones too: losses fail a run
    const ran = mine.filter((s) => s.result);
    const sum = (f: (r: LoadgenResult) => number | undefined) =>
      ran.reduce((n, s) => n + (f(s.result!) ?? 0), 0);
    const code = ran.find((s) => s.result!.close_code)?.result?.close_code;
    const closed = `${sum((r) => r.closes)}${code ? ` (${code})` : ""}`;
    wsCells.push(
      sc.mode === "ws-fanout"
        ? `${sum((r) => r.lost)} / ${sum((r) => r.out_of_order)} / ${closed}`
        : `– / – / ${closed}`,
    );
  }
  return {
    scenario: sc,
    server: def,
    ratio,
    ratioSpread,
    clientPct,
    othersPct,
    spread,
    p99,
    cells: [
      titleOf(sc, opts),
      def.label,
      result,
      def.baseline ? "1.00 (reference)" : ratio === undefined ? "–" : ratio.toFixed(2),
      ...wsCells,
      Number.isFinite(serverCpu) ? `${serverCpu.toFixed(2)} (${serverPct.toFixed(0)}%)` : "–",
      Number.isFinite(perOp) ? perOp.toFixed(perOp < 100 ? 1 : 0) : "–",
      Number.isFinite(rss) ? (rss / 1048576).toFixed(0) : "–",
      `${clientPct.toFixed(0)}%`,
      Number.isFinite(othersPct) ? `${othersPct.toFixed(0)}%` : "–",
    ],
  };
}

function markdownTable(header: string[], rows: string[][]): string {
  const line = (cells: string[]) => `| ${cells.join(" | ")} |`;
  return [line(header), line(header.map(() => "---")), ...rows.map(line)].join("\n");
}

// ---------------------------------------------------------------------------

async function main() {
  const opts = parseOptions(Deno.args);
  const bail = (code: number) => () =>
    killAll()
      .then(() => tmpDir ? Deno.remove(tmpDir, { recursive: true }) : undefined)
      .catch(() => {})
      .finally(() => Deno.exit(code));
  Deno.addSignalListener("SIGINT", bail(130));
  Deno.addSignalListener("SIGTERM", bail(143));

  let pin: [number, number] | undefined;
  if (opts.pin) {
    const cpus = parseCpuList((await allowedCpus()) ?? "");
    if (cpus.length < 2) usage("--pin needs at least two usable CPUs");
    try {
      await runCommand("taskset", ["-c", String(cpus[0]), "true"], 10_000);
    } catch {
      usage("--pin needs taskset (util-linux)");
    }
    pin = [cpus[0], cpus[1]];
  }

  await ensureLoadgen();

  const notes: string[] = [];
  const tmp = tmpDir = await Deno.makeTempDir({ prefix: "netkit-bench-" });
  try {
    let ctx: Ctx = { certFile: "", keyFile: "", caFile: "", serverName: "localhost" };
    const families = [...opts.families];
    if (families.includes("tls")) {
      try {
        ctx = await makeCert(tmp);
      } catch (err) {
        notes.push(`TLS skipped: no certificate (${(err as Error).message})`);
        families.splice(families.indexOf("tls"), 1);
      }
    }

    const scenarios = SCENARIOS.filter((s) => families.includes(s.family));
    const servers: ServerDef[] = [];
    /** server id -> why its rows are skipped */
    const skipped = new Map<string, string>();
    let nodeProblem: string | undefined | null = null; // null: not checked yet
    for (const def of SERVERS) {
      if (!families.includes(def.family)) continue;
      if (opts.servers ? !opts.servers.includes(def.id) : def.onRequest) continue;
      try {
        await Deno.stat(`${ROOT}/${def.script}`);
      } catch {
        if (!def.optional) throw new Error(`${def.script} is missing`);
        skipped.set(def.id, `${def.script} not found`);
        notes.push(`${def.label} rows skipped: ${def.script} does not exist yet.`);
        continue;
      }
      if (def.runtime === "node") {
        if (nodeProblem === null) nodeProblem = await ensureNodeWs();
        if (nodeProblem) {
          skipped.set(def.id, nodeProblem);
          notes.push(`${def.label} rows skipped: ${nodeProblem}.`);
          continue;
        }
      }
      servers.push(def);
    }

    // 1,000 subscribers and more need that many descriptors in the server and the client
    const fdsNeeded = Math.max(0, ...scenarios.map((sc) => sc.conns + 1)) + 256;
    const limits = await fdLimits();
    if (limits && limits[1] < fdsNeeded) {
      fdWrap = ["sh", "-c", `ulimit -n ${fdsNeeded} && exec "$@"`, "sh"];
      notes.push(
        `the open-files limit (hard ${limits[1]}) is below the ${fdsNeeded} the largest ` +
          `scenario needs: servers and load client were started with \`ulimit -n ${fdsNeeded}\`.`,
      );
    }

    const [model, load0, cpusAllowed] = await Promise.all([
      cpuModel(),
      loadAverage(),
      allowedCpus(),
    ]);
    const started = Date.now();
    const samples: Sample[] = [];
    const serversOf = (sc: Scenario) => servers.filter((d) => groupOf(d) === groupOf(sc));
    const total = opts.rounds * scenarios.reduce((n, sc) => n + serversOf(sc).length, 0);
    let done = 0;
    for (const sc of scenarios) {
      const defs = serversOf(sc);
      const got = await runScenario(sc, defs, ctx, opts, pin, (s) => {
        done++;
        const v = s.result ? metricOf(sc, s.result) : NaN;
        const p99 = sc.family === "ws" && s.result?.p99_us !== undefined
          ? `, p99 ${ms(s.result.p99_us)} ms`
          : "";
        console.error(
          `[${done}/${total}] ${sc.id} round ${s.round + 1} ${s.server}: ` +
            (s.ok
              ? `${int(v)} ${unitOf(sc)}${p99}, client CPU ${s.result!.cpu_pct.toFixed(0)}%`
              : `FAILED ${s.error}`),
        );
      });
      samples.push(...got);
    }
    const elapsed = (Date.now() - started) / 1000;
    const load1 = await loadAverage();

    // ---- print
    const cmd = `deno run -A bench/run.ts${Deno.args.length ? " " + Deno.args.join(" ") : ""}`;
    const out: string[] = [];
    out.push(`## netkit bench`);
    out.push("");
    out.push(
      `machine: nproc=${navigator.hardwareConcurrency} (CPUs allowed: ${cpusAllowed ?? "?"}), ` +
        `${model ?? "unknown CPU"}, ${Deno.build.os} ${Deno.osRelease()}; ` +
        `deno ${Deno.version.deno} (v8 ${Deno.version.v8}); ` +
        `load average ${load0?.toFixed(2) ?? "?"} before, ${load1?.toFixed(2) ?? "?"} after`,
    );
    out.push(`command: \`${cmd}\` (${elapsed.toFixed(0)} s)`);
    out.push(
      `method: fresh servers per scenario; ${opts.rounds} round(s) in which each server gets ` +
        `${opts.duration} s of measured load (after ${opts.warmup} s warm-up on its first run, ` +
        `${
          Math.min(REWARM_S, opts.warmup)
        } s later), order rotated per round; load client bench/loadgen.c (single-threaded epoll` +
        `${
          opts.procs === undefined
            ? scenarios.some((sc) => (sc.procs ?? 1) > 1) ? "; 2 processes for handshakes" : ""
            : opts.procs > 1
            ? `, ${opts.procs} processes`
            : ""
        }), every echoed byte verified` +
        `${families.includes("ws") ? " (WebSocket: every message, its order and loss)" : ""}` +
        `${
          pin ? `; pinned: servers on CPU ${pin[0]}, load client on CPU ${pin[1]}` : "; not pinned"
        }` +
        `${
          families.includes("tls")
            ? `; TLS client ${
              opts.verify ? "verifies the server against the CA" : "does NOT verify the certificate"
            } (OpenSSL, full handshakes, no resumption)`
            : ""
        }`,
    );
    out.push("");
    const rows: Row[] = [];
    for (const sc of scenarios) {
      const baseline = servers.find((d) => groupOf(d) === groupOf(sc) && d.baseline);
      for (const def of SERVERS.filter((d) => groupOf(d) === groupOf(sc))) {
        if (opts.servers ? !opts.servers.includes(def.id) : def.onRequest) continue;
        const why = skipped.get(def.id);
        if (why !== undefined) {
          const cells = [titleOf(sc, opts), def.label, `skipped: ${why.replaceAll("|", "/")}`];
          while (cells.length < headerOf(sc).length) cells.push("");
          rows.push({ scenario: sc, server: def, cells });
          continue;
        }
        rows.push(summarize(sc, def, def.baseline ? undefined : baseline, samples, opts));
      }
    }
    const plain = rows.filter((r) => r.scenario.family !== "ws");
    const ws = rows.filter((r) => r.scenario.family === "ws");
    if (plain.length) {
      out.push(markdownTable(HEADER, plain.map((r) => r.cells)));
      out.push("");
      out.push(
        "op = one round trip (rr), one 64 KiB chunk echoed (stream), one handshake; " +
          "MB = 10^6 bytes; CPU % is of one core; others' CPU % = the whole machine's busy " +
          "time during the measured window minus server and load client (noise from other work).",
      );
    }
    if (ws.length) {
      if (plain.length) out.push("");
      out.push(markdownTable(WS_HEADER, ws.map((r) => r.cells)));
      out.push("");
      out.push(
        `WebSocket: ${opts.wsBinary ? "binary" : "text"} messages; op = one echo round trip ` +
          "(ws-rr), one message delivered to one subscriber (fan-out). Fan-out: one publisher " +
          "sends messages carrying a sequence number and a timestamp, with at most `window` of " +
          "them outstanding (not yet received by every subscriber); latency is from the " +
          "publisher's send to a subscriber's receipt, so it is about (deliveries in flight) / " +
          "(deliveries/s) plus the server's jitter. The server sends every message to every " +
          "client, the publisher included (its copies are not counted). lost / out of order / " +
          "closed: summed over all runs (closed: subscribers the server closed, with the first " +
          "close code). Peak RSS is VmHWM over the whole scenario.",
      );
    }

    // ---- observations
    for (const r of rows) {
      const procs = procsFor(r.scenario, opts);
      if (r.clientPct !== undefined && r.clientPct / procs > 85) {
        notes.push(
          `${r.scenario.id} / ${r.server.id}: the load client used ${r.clientPct.toFixed(0)}% ` +
            `of a core${procs > 1 ? ` over ${procs} processes` : ""}: it is (close to) ` +
            `the bottleneck, so this row says more about the client than the server; compare ` +
            `server CPU µs/op instead.`,
        );
      }
    }
    const noisy = rows.filter((r) => r.othersPct !== undefined && r.othersPct > 25);
    if (noisy.length) {
      const pcts = noisy.map((r) => r.othersPct!);
      notes.push(
        `other processes kept ${Math.min(...pcts).toFixed(0)}–${Math.max(...pcts).toFixed(0)}% ` +
          `of a core busy during ${
            noisy.length === rows.filter((r) => r.othersPct !== undefined).length
              ? "all"
              : noisy.length
          } rows' runs (last column): the numbers are noisy; server CPU µs/op is the steadier ` +
          `measure, and a re-run on a quiet machine gives better throughput figures.`,
      );
    }
    const spreads = rows.filter((r) => r.spread !== undefined && opts.rounds > 1).map((r) =>
      r.spread!
    );
    const ratioSpreads = rows.filter((r) => r.ratioSpread !== undefined).map((r) => r.ratioSpread!);
    const ratioNote = ratioSpreads.length
      ? `; of the ratios: median ${(median(ratioSpreads) * 100).toFixed(1)}%, worst ${
        (Math.max(...ratioSpreads) * 100).toFixed(1)
      }%`
      : "";
    if (spreads.length) {
      notes.push(
        `run-to-run spread (half-range / median over ${opts.rounds} rounds): median ` +
          `${(median(spreads) * 100).toFixed(1)}%, worst ${
            (Math.max(...spreads) * 100).toFixed(1)
          }%${ratioNote}${pin ? " (pinned)" : " (not pinned)"}.`,
      );
    }
    for (const r of rows) {
      if (r.server.optional && r.ratio !== undefined && r.scenario.family === "tcp") {
        const met = r.ratio >= 0.95;
        notes.push(
          `goal (netkit ≥ 0.95 × read/write loop) for ${r.scenario.id}: ${r.ratio.toFixed(2)} — ` +
            (met ? "met" : "NOT met"),
        );
      }
      if (r.server.id === "netkit-ws-echo" && r.ratio !== undefined) {
        notes.push(
          `goal (netkit ≥ 1.0 × bare Deno echo; Bun did 1.45×) for ${r.scenario.id}: ` +
            `${r.ratio.toFixed(2)} — ${r.ratio >= 1 ? "met" : "NOT met"}`,
        );
      }
      if (r.server.id === "netkit-ws-bcast" && r.ratio !== undefined) {
        const fast = r.ratio >= 12;
        const wantP99 = r.scenario.conns <= 100;
        const lowP99 = r.p99 !== undefined && r.p99 < 5000;
        notes.push(
          `goal (netkit ≥ 12 × the bare Deno loop, half of Bun's fan-out` +
            `${wantP99 ? ", p99 < 5 ms" : ""}) for ${r.scenario.id}: ${r.ratio.toFixed(2)}×` +
            `${r.p99 !== undefined ? `, p99 ${ms(r.p99)} ms` : ""} — ` +
            (fast && (!wantP99 || lowP99) ? "met" : "NOT met"),
        );
      }
    }
    const bad = samples.filter((s) =>
      s.result &&
      (s.result.mismatches || s.result.errors || s.result.lost || s.result.out_of_order)
    );
    if (bad.length) {
      notes.push(
        `${bad.length} run(s) had echo mismatches, lost or reordered messages, or lost ` +
          `connections: ` +
          bad.map((s) => `${s.scenario}/${s.server} round ${s.round + 1}`).join(", "),
      );
    }
    const closedRuns = samples.filter((s) => s.result?.closes);
    if (closedRuns.length) {
      const first = closedRuns[0].result!;
      notes.push(
        `the server closed subscribers in ${closedRuns.length} run(s) (first: ` +
          `${first.close_code} "${first.close_reason ?? ""}"): ` +
          closedRuns.map((s) =>
            `${s.scenario}/${s.server} round ${s.round + 1}: ${s.result!.closes}`
          ).join(", "),
      );
    }
    const tlsInfo = samples.find((s) => s.result?.tls_version)?.result;
    if (tlsInfo) notes.push(`TLS negotiated: ${tlsInfo.tls_version} ${tlsInfo.cipher}.`);
    if (scenarios.some((s) => s.mode === "handshake")) {
      notes.push(
        "handshake: the load client sets TCP_QUICKACK after sending its byte; Deno.listenTls " +
          "sockets do not set TCP_NODELAY, so otherwise the echo queued behind the session " +
          "tickets waits ~40 ms for a delayed ACK and every server measures that timer.",
      );
    }
    if (notes.length) {
      out.push("");
      out.push("notes:");
      for (const n of notes) out.push(`- ${n}`);
    }
    out.push("");
    out.push("load client commands (port and pid vary):");
    for (const sc of scenarios) {
      const s = samples.find((x) => x.scenario === sc.id && x.command);
      if (s) out.push(`- ${sc.id}: \`${s.command!.replace(ctx.caFile || "\0", "CA.pem")}\``);
    }
    console.log(out.join("\n"));

    if (opts.json) {
      await Deno.writeTextFile(
        opts.json,
        JSON.stringify(
          {
            command: cmd,
            machine: {
              nproc: navigator.hardwareConcurrency,
              cpus_allowed: cpusAllowed,
              model,
              os: Deno.osRelease(),
              deno: Deno.version,
              load_before: load0,
              load_after: load1,
            },
            options: opts,
            samples,
          },
          null,
          2,
        ) + "\n",
      );
    }
  } finally {
    await killAll();
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) {
  try {
    await main();
  } catch (err) {
    await killAll();
    console.error(`bench: ${(err as Error).message}`);
    Deno.exit(1);
  }
}
