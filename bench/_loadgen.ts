/**
 * The load client, bench/loadgen.c: compiled on demand (gcc and OpenSSL's
 * headers), then run once per sample against a running server; it prints one
 * JSON line ({@linkcode LoadgenResult}).
 *
 * @module
 */
// deno-lint-ignore-file no-console
import type { Program } from "../tests/support/process.ts";
import { run } from "./_processes.ts";
import { windowOf } from "./scenarios/mod.ts";
import type { Ctx, LoadgenResult, Options, Sample, Scenario, ServerDef } from "./_types.ts";

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
  "-lz",
];

/** Builds bench/.build/loadgen unless it is newer than its source; exits with advice when it cannot. */
export async function ensureLoadgen(): Promise<void> {
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
    out = await run(COMPILE[0], COMPILE.slice(1), 120_000);
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
    } else if (/zlib\.h|-lz\b/.test(out.stderr)) {
      console.error(
        "the zlib development files are missing: install them, e.g. " +
          "`apt-get install zlib1g-dev`, then run `deno task bench` again.",
      );
    } else {
      console.error(`compiling bench/loadgen.c failed:\n${out.stderr}`);
    }
    Deno.exit(1);
  }
}

/** loadgen runs ws-fanout in one process: the window needs every subscriber's count */
export const procsFor = (sc: Scenario, opts: Options): number =>
  sc.mode === "ws-fanout" ? 1 : opts.procs ?? sc.procs ?? 1;

/** Warm-up of every load run after a server's first (connections, windows; the JIT is warm). */
export const REWARM_S = 0.3;

/** One load-client run against a running server. */
export async function runLoad(
  round: number,
  sc: Scenario,
  def: ServerDef,
  server: Program,
  warmup: number,
  ctx: Ctx,
  opts: Options,
  pin: [number, number] | undefined,
  fdWrap: string[],
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
  const out = await run(argv[0], argv.slice(1), (warmup + opts.duration + slack) * 1000);
  const jsonLine = out.stdout.trim().split("\n").pop() ?? "";
  if (jsonLine.startsWith("{")) sample.result = JSON.parse(jsonLine) as LoadgenResult;
  if (out.timedOut) sample.error = "load client timed out";
  else if (out.code !== 0) {
    sample.error = out.stderr.trim().split("\n").pop() ||
      `load client exited with code ${out.code}`;
  } else if (!sample.result) sample.error = "no result line from the load client";
  else sample.ok = true;
  await new Promise((resolve) => setTimeout(resolve, 0));
  if (server.exited) {
    sample.ok = false;
    sample.error = `${def.label} exited (${
      server.exited.signal ?? `code ${server.exited.code}`
    }) during the run; stderr: ${server.stderr().trim().slice(-300) || "(empty)"}`;
  }
  return sample;
}
