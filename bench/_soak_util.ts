/**
 * Helpers for `bench/soak.ts`: server programs spawned as a user runs them
 * (stderr counted line by line), their memory from `/proc`, percentiles,
 * deterministic payloads and a captured TLS ClientHello for slowloris peers.
 *
 * @module
 */

import { ProgramStartError, startProgram } from "../tests/support/process.ts";
import { pseudoRandomBytes } from "../tests/support/bytes.ts";

// Shared with the hostile-peer tests: byte equality, and the first flight of a
// real TLS client (a slowloris peer trickles it).
export { equalBytes as sameBytes } from "../tests/support/bytes.ts";
export { captureClientHello } from "../tests/support/hostile/wire.ts";

export const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

/** A server program under load. */
export interface SoakServer {
  name: string;
  port: number;
  pid: number;
  child: Deno.ChildProcess;
  /** How many stderr lines matched each counter's pattern so far. */
  counts: Map<string, number>;
  /** Sums of the first number captured by each summing pattern. */
  sums: Map<string, number>;
  /** The last stderr lines (for a failure report). */
  tail: string[];
  /**
   * Runs a full GC in the server (SIGUSR2, see `_soak_server.ts`) and
   * resolves to its `Deno.memoryUsage()` then, or undefined.
   */
  gcMemory(): Promise<Deno.MemoryUsage | undefined>;
  /** Whether the process is still running. */
  alive(): boolean;
  /** SIGTERM, then the exit code and how long it took. */
  stop(): Promise<{ code: number; ms: number }>;
}

/** Patterns counted in a server's stderr: name → regex. A capture group is summed. */
export type LogCounters = Record<string, RegExp>;

/**
 * Starts the server program `program` (`tcp_server`, …) with `args` through
 * `_soak_server.ts`, waits for its listening line, counts its log lines.
 */
export async function spawnServer(
  name: string,
  program: string,
  args: string[],
  counters: LogCounters,
): Promise<SoakServer> {
  const counts = new Map<string, number>();
  const sums = new Map<string, number>();
  const tail: string[] = [];
  let onMemory: ((usage: Deno.MemoryUsage) => void) | undefined;
  let server;
  try {
    server = await startProgram({
      name,
      args: [
        "run",
        "-A",
        "--quiet",
        "--v8-flags=--expose-gc",
        "bench/_soak_server.ts",
        program,
        ...args,
      ],
      // Hours of log lines: count them as they come, keep none but the tail below.
      maxStderrLines: 0,
      onStderrLine(line) {
        if (line.startsWith("soak-memory: ")) {
          onMemory?.(JSON.parse(line.slice("soak-memory: ".length)));
          return;
        }
        tail.push(line);
        if (tail.length > 20) tail.shift();
        for (const [key, re] of Object.entries(counters)) {
          const m = re.exec(line);
          if (!m) continue;
          counts.set(key, (counts.get(key) ?? 0) + 1);
          if (m[1] !== undefined) sums.set(key, (sums.get(key) ?? 0) + Number(m[1]));
        }
      },
    });
  } catch (err) {
    if (!(err instanceof ProgramStartError)) throw err;
    throw new Error(`${name} ${err.reason}:\n${tail.join("\n")}`);
  }
  const alive = () => server.exited === undefined;
  return {
    name,
    port: server.port,
    pid: server.pid,
    child: server.child,
    counts,
    sums,
    tail,
    alive,
    gcMemory() {
      if (!alive()) return Promise.resolve(undefined);
      return new Promise((resolve) => {
        const timer = setTimeout(() => {
          onMemory = undefined;
          resolve(undefined);
        }, 5000);
        onMemory = (usage) => {
          clearTimeout(timer);
          onMemory = undefined;
          resolve(usage);
        };
        server.kill("SIGUSR2");
      });
    },
    async stop() {
      const { code, ms } = await server.stop("SIGTERM", { timeout: 15_000 });
      return { code, ms };
    },
  };
}

/** `VmRSS` and `VmHWM` (peak) of `pid` in bytes, or undefined once it is gone. */
export async function memoryOf(pid: number): Promise<{ rss: number; hwm: number } | undefined> {
  try {
    const status = await Deno.readTextFile(`/proc/${pid}/status`);
    const rss = Number(/^VmRSS:\s+(\d+)\s+kB/m.exec(status)?.[1]) * 1024;
    const hwm = Number(/^VmHWM:\s+(\d+)\s+kB/m.exec(status)?.[1]) * 1024;
    return { rss, hwm };
  } catch {
    return undefined;
  }
}

/** The soft limit on open files (`ulimit -n`), or undefined when unknown. */
export async function openFileLimit(): Promise<number | undefined> {
  try {
    const limits = await Deno.readTextFile("/proc/self/limits");
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(limits);
    return m ? (m[1] === "unlimited" ? Infinity : Number(m[1])) : undefined;
  } catch {
    return undefined;
  }
}

/** Latency samples in milliseconds, with percentiles. */
export class Samples {
  #values: number[] = [];

  add(ms: number): void {
    this.#values.push(ms);
  }

  get count(): number {
    return this.#values.length;
  }

  /** The `p`-th percentile (0–100), or NaN when empty. */
  percentile(p: number): number {
    if (this.#values.length === 0) return NaN;
    const sorted = Float64Array.from(this.#values).sort();
    const at = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
    return sorted[at];
  }
}

/** Deterministic bytes for `seed`: what an echo must give back, checkable without keeping a copy. */
export function patternBytes(n: number, seed: number): Uint8Array {
  // The tests' xorshift32, its seed spread by Knuth's multiplicative hash so
  // that neighbouring seeds start far apart.
  return pseudoRandomBytes(n, seed * 2654435761);
}

/** Reads exactly `buf.length` bytes into `buf`; false if the connection ended first. */
export async function readFull(conn: Deno.Conn, buf: Uint8Array): Promise<boolean> {
  let off = 0;
  while (off < buf.length) {
    const n = await conn.read(buf.subarray(off));
    if (n === null) return false;
    off += n;
  }
  return true;
}

/** Writes all of `bytes`. */
export async function writeFull(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let off = 0;
  while (off < bytes.length) off += await conn.write(bytes.subarray(off));
}

/** Closes quietly. */
export function closeQuietly(conn: { close(): void }): void {
  try {
    conn.close();
  } catch {
    // Already closed.
  }
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}

/** Formats bytes as MiB with one decimal. */
export function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

/** Formats a count with thousands separators. */
export function count(n: number): string {
  return n.toLocaleString("en-US");
}
