/**
 * Helpers for `bench/soak.ts`: server programs spawned as a user runs them
 * (stderr counted line by line), their memory from `/proc`, percentiles,
 * deterministic payloads and a captured TLS ClientHello for slowloris peers.
 *
 * @module
 */

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
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--quiet",
      "--v8-flags=--expose-gc",
      "bench/_soak_server.ts",
      program,
      ...args,
    ],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const counts = new Map<string, number>();
  const sums = new Map<string, number>();
  const tail: string[] = [];
  let onMemory: ((usage: Deno.MemoryUsage) => void) | undefined;
  void (async () => {
    let partial = "";
    for await (const text of child.stderr.pipeThrough(new TextDecoderStream())) {
      partial += text;
      const lines = partial.split("\n");
      partial = lines.pop()!;
      for (const line of lines) {
        if (line.startsWith("soak-memory: ")) {
          onMemory?.(JSON.parse(line.slice("soak-memory: ".length)));
          continue;
        }
        tail.push(line);
        if (tail.length > 20) tail.shift();
        for (const [key, re] of Object.entries(counters)) {
          const m = re.exec(line);
          if (!m) continue;
          counts.set(key, (counts.get(key) ?? 0) + 1);
          if (m[1] !== undefined) sums.set(key, (sums.get(key) ?? 0) + Number(m[1]));
        }
      }
    }
  })().catch(() => {});
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let first = "";
  while (!first.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) {
      const status = await child.status;
      throw new Error(`${name} exited (${status.code}) before listening:\n${tail.join("\n")}`);
    }
    first += value;
  }
  void (async () => {
    while (!(await reader.read()).done) {
      // Servers print nothing more on stdout.
    }
  })().catch(() => {});
  const port = Number(/:(\d+)\s*$/.exec(first.split("\n")[0])?.[1]);
  let exited = false;
  void child.status.then(() => (exited = true));
  return {
    name,
    port,
    pid: child.pid,
    child,
    counts,
    sums,
    tail,
    alive: () => !exited,
    gcMemory() {
      if (exited) return Promise.resolve(undefined);
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
        child.kill("SIGUSR2");
      });
    },
    async stop() {
      const started = performance.now();
      try {
        child.kill("SIGTERM");
      } catch {
        // Already gone.
      }
      const killer = setTimeout(() => child.kill("SIGKILL"), 15_000);
      const status = await child.status;
      clearTimeout(killer);
      return { code: status.code, ms: performance.now() - started };
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
  const out = new Uint8Array(n);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** Byte-for-byte equality. */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
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

/**
 * The first flight of a real TLS client (Deno's rustls), captured from a
 * listener that never answers: a slowloris peer trickles it.
 */
export async function captureClientHello(): Promise<Uint8Array> {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted = listener.accept();
  const tcp = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
  const client = await Deno.startTls(tcp, { hostname: "localhost" });
  const handshake = client.handshake().catch(() => {});
  using server = await accepted;
  const header = new Uint8Array(5);
  await readFull(server, header);
  const body = new Uint8Array((header[3] << 8) | header[4]);
  await readFull(server, body);
  client.close();
  await handshake;
  const out = new Uint8Array(5 + body.length);
  out.set(header);
  out.set(body, 5);
  return out;
}

/** Formats bytes as MiB with one decimal. */
export function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

/** Formats a count with thousands separators. */
export function count(n: number): string {
  return n.toLocaleString("en-US");
}
