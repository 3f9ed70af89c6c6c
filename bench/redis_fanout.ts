/**
 * Broadcast fan-out through Redis against one process: N subscribers (1,000
 * by default) on one `ws-server`, then spread evenly over two `ws-server
 * --redis` processes sharing a throwaway `redis-server`. One of the
 * subscribers publishes; every message goes to all N.
 *
 * `--layout remote` puts the publisher alone on the first server and every
 * other subscriber on the second: every delivery but one goes through Redis.
 *
 * Two phases per setup:
 * - throughput: messages sent with at most `--window` not yet delivered to
 *   every subscriber; deliveries per second;
 * - latency: messages paced at `--rate` per second; the time from send to
 *   each subscriber's receipt, p50 and p99 over every delivery.
 *
 * Wall-clock figures are at the mercy of whatever else runs on the machine;
 * the CPU the servers (and Redis) burn per delivery during the throughput
 * phase is reported too, as it barely depends on that.
 *
 * The setups alternate for `--rounds` rounds; each figure is the median of
 * the rounds. Prints both setups, the throughput ratio (Redis / single)
 * and the p99 latency Redis adds. The clients are raw sockets in this process (a frame
 * parser, no WebSocket library), so they cost the servers' CPU as little as
 * possible; on a small machine they still share it.
 *
 * ```sh
 * deno run -A bench/redis_fanout.ts [--clients 1000] [--messages 2000] [--window 16] [--rate 50]
 *   [--seconds 4] [--size 64] [--rounds 3] [--layout even|remote] [--json FILE]
 * ```
 *
 * @module
 */
// deno-lint-ignore-file no-console
import { parseArgs } from "node:util";
import { freePort } from "../tests/support/ports.ts";
import { type Program, startProgram } from "../tests/support/process.ts";
import { cpuSeconds, loadAverage } from "./_procstat.ts";

const flags = parseArgs({
  args: Deno.args,
  options: {
    clients: { type: "string", default: "1000" },
    messages: { type: "string", default: "2000" },
    window: { type: "string", default: "16" },
    rate: { type: "string", default: "50" },
    seconds: { type: "string", default: "4" },
    size: { type: "string", default: "64" },
    rounds: { type: "string", default: "3" },
    layout: { type: "string", default: "even" },
    json: { type: "string" },
  },
}).values;
const CLIENTS = Number(flags.clients);
const MESSAGES = Number(flags.messages);
const WINDOW = Number(flags.window);
const RATE = Number(flags.rate);
const SECONDS = Number(flags.seconds);
const SIZE = Math.max(16, Math.min(125, Number(flags.size)));
const ROUNDS = Math.max(1, Number(flags.rounds));
const LAYOUT = flags.layout === "remote" ? "remote" : "even";
const encoder = new TextEncoder();

// --- processes ----------------------------------------------------------------

async function startRedis(): Promise<{ url: string; child: Deno.ChildProcess }> {
  const port = freePort();
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command("redis-server", {
      args: ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
      stdout: "null",
      stderr: "null",
    }).spawn();
  } catch {
    console.error("redis-server is not installed: apt-get install -y redis-server");
    Deno.exit(1);
  }
  for (let i = 0; i < 200; i++) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return { url: `redis://127.0.0.1:${port}`, child };
    } catch {
      await new Promise((r) => setTimeout(r, 25));
    }
  }
  throw new Error("redis-server did not start");
}

function startServer(args: string[]): Promise<Program> {
  return startProgram({
    name: "ws-server",
    args: [
      "run",
      "-A",
      "--quiet",
      "cli/ws_server.ts",
      "--port",
      "0",
      "--quiet",
      "--max-buffered",
      String(64 << 20),
      ...args,
    ],
    stderr: "inherit",
  });
}

async function stop(child: Deno.ChildProcess): Promise<void> {
  try {
    child.kill("SIGTERM");
  } catch {
    // Gone.
  }
  await child.status;
}

// --- clients --------------------------------------------------------------------

/** Per-message bookkeeping shared by every client. */
class Tally {
  sentAt: number[] = [];
  delivered: Uint32Array;
  fully = 0; // messages delivered to every subscriber
  latencies: number[][] = [[], []];
  recordLatency = false;
  #waiters: { n: number; resolve: () => void }[] = [];

  constructor(messages: number, readonly clients: number) {
    this.delivered = new Uint32Array(messages);
  }

  got(seq: number, now: number, group: number): void {
    if (this.recordLatency) this.latencies[group].push(now - this.sentAt[seq]);
    if (++this.delivered[seq] === this.clients) {
      this.fully++;
      for (const w of [...this.#waiters]) {
        if (this.fully >= w.n) {
          this.#waiters.splice(this.#waiters.indexOf(w), 1);
          w.resolve();
        }
      }
    }
  }

  /** Resolves once `n` messages have reached every subscriber. */
  whenFully(n: number): Promise<void> {
    if (this.fully >= n) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push({ n, resolve }));
  }
}

/** A minimal WebSocket client: the upgrade, then server frames parsed from raw reads. */
class RawWs {
  #buf = new Uint8Array(64 * 1024);
  #have = 0;
  tally: Tally | undefined;
  done: Promise<void> | undefined;

  private constructor(readonly conn: Deno.TcpConn, readonly group: number) {}

  static async open(port: number, group: number): Promise<RawWs> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    conn.setNoDelay(true);
    const ws = new RawWs(conn, group);
    await ws.#write(
      "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    // Read the 101 head; anything after it is frames.
    for (;;) {
      const n = await conn.read(ws.#buf.subarray(ws.#have));
      if (n === null) throw new Error("closed during the upgrade");
      ws.#have += n;
      const text = new TextDecoder().decode(ws.#buf.subarray(0, ws.#have));
      const end = text.indexOf("\r\n\r\n");
      if (end >= 0) {
        if (!text.startsWith("HTTP/1.1 101")) throw new Error(`no upgrade: ${text.slice(0, 40)}`);
        ws.#buf.copyWithin(0, end + 4, ws.#have);
        ws.#have -= end + 4;
        return ws;
      }
    }
  }

  async #write(data: string | Uint8Array): Promise<void> {
    const bytes = typeof data === "string" ? encoder.encode(data) : data;
    let off = 0;
    while (off < bytes.length) off += await this.conn.write(bytes.subarray(off));
  }

  /** Sends a masked binary frame (payload < 126 bytes). */
  send(payload: Uint8Array): Promise<void> {
    const frame = new Uint8Array(6 + payload.length);
    frame[0] = 0x82;
    frame[1] = 0x80 | payload.length;
    // Mask 0: the payload goes as it is (a valid, if lazy, mask).
    frame.set(payload, 6);
    return this.#write(frame);
  }

  /** Reads frames until the connection ends, handing each message to the tally. */
  run(): void {
    this.done = (async () => {
      try {
        for (;;) {
          this.#parse();
          if (this.#have === this.#buf.length) {
            const bigger = new Uint8Array(this.#buf.length * 2);
            bigger.set(this.#buf);
            this.#buf = bigger;
          }
          const n = await this.conn.read(this.#buf.subarray(this.#have));
          if (n === null) return;
          this.#have += n;
        }
      } catch {
        // Closed.
      }
    })();
  }

  #parse(): void {
    const buf = this.#buf;
    let at = 0;
    const now = performance.now();
    while (this.#have - at >= 2) {
      let len = buf[at + 1] & 0x7f;
      let head = 2;
      if (len === 126) {
        if (this.#have - at < 4) break;
        len = (buf[at + 2] << 8) | buf[at + 3];
        head = 4;
      }
      if (this.#have - at < head + len) break;
      if ((buf[at] & 0x0f) === 0x2 && len >= 12) {
        const view = new DataView(buf.buffer, buf.byteOffset + at + head, 12);
        this.tally?.got(view.getUint32(8), now, this.group);
      }
      at += head + len;
    }
    if (at > 0) {
      buf.copyWithin(0, at, this.#have);
      this.#have -= at;
    }
  }

  close(): void {
    try {
      this.conn.close();
    } catch {
      // Closed.
    }
  }
}

function payload(seq: number, sentAt: number): Uint8Array {
  const p = new Uint8Array(SIZE);
  const view = new DataView(p.buffer);
  view.setFloat64(0, sentAt);
  view.setUint32(8, seq);
  return p;
}

function percentile(sorted: Float64Array, q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

interface Result {
  setup: string;
  deliveriesPerSecond: number;
  /** Server (and Redis) CPU time per delivery in the throughput phase, µs. */
  cpuMicrosPerDelivery: number;
  /** CPU seconds of each process in the throughput phase (servers, then Redis). */
  cpuSecondsByProcess: number[];
  p50: number;
  p99: number;
  /** p99 of the subscribers on the publisher's server. */
  p99PublisherSide: number;
  /** p99 of the subscribers on the other server (through Redis). */
  p99OtherSide: number;
}

async function cpuOf(pids: number[]): Promise<number[]> {
  return await Promise.all(pids.map(async (pid) => (await cpuSeconds(pid)) ?? 0));
}

async function measure(setup: string, ports: number[], pids: number[]): Promise<Result> {
  const clients: RawWs[] = [];
  // The publisher is client 0, on the first server; the rest evenly spread,
  // or (--layout remote) all on the second.
  const serverOf = (i: number) =>
    ports.length === 1 ? 0 : LAYOUT === "remote" ? (i === 0 ? 0 : 1) : i % ports.length;
  for (let i = 0; i < CLIENTS; i += 100) {
    const batch = Array.from(
      { length: Math.min(100, CLIENTS - i) },
      (_, k) => RawWs.open(ports[serverOf(i + k)], serverOf(i + k)),
    );
    clients.push(...await Promise.all(batch));
  }
  const publisher = clients[0];

  // Warm up: a few messages to everyone, so every path is hot and subscribed.
  const warm = new Tally(50, CLIENTS);
  for (const c of clients) {
    c.tally = warm;
    c.run();
  }
  for (let i = 0; i < 50; i++) {
    warm.sentAt[i] = performance.now();
    await publisher.send(payload(i, warm.sentAt[i]));
  }
  await warm.whenFully(50);

  // Throughput: at most WINDOW messages not yet everywhere.
  const tp = new Tally(MESSAGES, CLIENTS);
  for (const c of clients) c.tally = tp;
  const cpu0 = await cpuOf(pids);
  const t0 = performance.now();
  for (let i = 0; i < MESSAGES; i++) {
    if (i >= WINDOW) await tp.whenFully(i - WINDOW + 1);
    tp.sentAt[i] = performance.now();
    await publisher.send(payload(i, tp.sentAt[i]));
  }
  await tp.whenFully(MESSAGES);
  const elapsed = (performance.now() - t0) / 1000;
  const cpuEach = (await cpuOf(pids)).map((c, i) => c - cpu0[i]);
  const cpu = cpuEach.reduce((a, b) => a + b, 0);

  // Latency: paced.
  const count = Math.round(RATE * SECONDS);
  const lat = new Tally(count, CLIENTS);
  lat.recordLatency = true;
  for (const c of clients) c.tally = lat;
  const start = performance.now();
  for (let i = 0; i < count; i++) {
    const due = start + (i * 1000) / RATE;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    lat.sentAt[i] = performance.now();
    await publisher.send(payload(i, lat.sentAt[i]));
  }
  await lat.whenFully(count);
  const sorted = Float64Array.from(lat.latencies.flat()).sort();
  const publisherSide = Float64Array.from(lat.latencies[0]).sort();
  const otherSide = Float64Array.from(lat.latencies[1]).sort();

  for (const c of clients) c.close();
  await Promise.all(clients.map((c) => c.done));
  return {
    setup,
    deliveriesPerSecond: (MESSAGES * CLIENTS) / elapsed,
    cpuMicrosPerDelivery: (cpu * 1e6) / (MESSAGES * CLIENTS),
    cpuSecondsByProcess: cpuEach,
    p50: percentile(sorted, 0.5),
    p99: percentile(sorted, 0.99),
    p99PublisherSide: percentile(publisherSide, 0.99),
    p99OtherSide: otherSide.length > 0 ? percentile(otherSide, 0.99) : NaN,
  };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

function medianResult(rounds: Result[]): Result {
  return {
    setup: rounds[0].setup,
    deliveriesPerSecond: median(rounds.map((r) => r.deliveriesPerSecond)),
    cpuMicrosPerDelivery: median(rounds.map((r) => r.cpuMicrosPerDelivery)),
    cpuSecondsByProcess: rounds[rounds.length >> 1].cpuSecondsByProcess,
    p50: median(rounds.map((r) => r.p50)),
    p99: median(rounds.map((r) => r.p99)),
    p99PublisherSide: median(rounds.map((r) => r.p99PublisherSide)),
    p99OtherSide: median(rounds.map((r) => r.p99OtherSide)),
  };
}

const loadBefore = await loadAverage();
const redis = await startRedis();
const rounds: { single: Result[]; redis: Result[] } = { single: [], redis: [] };
try {
  for (let round = 0; round < ROUNDS; round++) {
    const single = await startServer([]);
    try {
      rounds.single.push(await measure("1 process", [single.port], [single.child.pid]));
    } finally {
      await single.stop();
    }
    const a = await startServer(["--redis", redis.url]);
    const b = await startServer(["--redis", redis.url]);
    try {
      rounds.redis.push(
        await measure("2 processes + Redis", [a.port, b.port], [
          a.child.pid,
          b.child.pid,
          redis.child.pid,
        ]),
      );
    } finally {
      await Promise.all([a.stop(), b.stop()]);
    }
    const [s1, r1] = [rounds.single.at(-1)!, rounds.redis.at(-1)!];
    console.error(
      `round ${round + 1}: single ${Math.round(s1.deliveriesPerSecond)}/s p99 ${
        s1.p99.toFixed(1)
      } ms, CPU s ${s1.cpuSecondsByProcess.map((c) => c.toFixed(2))}; redis ${
        Math.round(r1.deliveriesPerSecond)
      }/s p99 ${r1.p99.toFixed(1)} ms, CPU s ${r1.cpuSecondsByProcess.map((c) => c.toFixed(2))}`,
    );
  }
} finally {
  await stop(redis.child);
}

const results = [medianResult(rounds.single), medianResult(rounds.redis)];
const [one, two] = results;
console.log(
  `\nbroadcast fan-out: ${CLIENTS} subscribers, ${SIZE} B binary messages; ` +
    `throughput: ${MESSAGES} messages, window ${WINDOW}; latency: ${RATE}/s for ${SECONDS}s; ` +
    `median of ${ROUNDS} rounds; layout ${LAYOUT}\n`,
);
console.log(
  "| setup | deliveries/s | server CPU µs/delivery | p50 ms | p99 ms | p99 on the publisher's server | p99 on the other |",
);
console.log("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
for (const r of results) {
  console.log(
    `| ${r.setup} | ${Math.round(r.deliveriesPerSecond).toLocaleString("en")} | ${
      r.cpuMicrosPerDelivery.toFixed(2)
    } | ${r.p50.toFixed(2)} | ${r.p99.toFixed(2)} | ${r.p99PublisherSide.toFixed(2)} | ${
      Number.isNaN(r.p99OtherSide) ? "–" : r.p99OtherSide.toFixed(2)
    } |`,
  );
}
const ratio = two.deliveriesPerSecond / one.deliveriesPerSecond;
const cpuRatio = two.cpuMicrosPerDelivery / one.cpuMicrosPerDelivery;
const addedP99 = two.p99 - one.p99;
const loadAfter = await loadAverage();
console.log(`\nthroughput ratio (Redis / single): ${ratio.toFixed(2)}`);
console.log(`added p99 latency: ${addedP99.toFixed(2)} ms`);
console.log(`server CPU per delivery (Redis / single): ${cpuRatio.toFixed(2)}`);
console.log(
  `machine: ${navigator.hardwareConcurrency} CPUs, load average ${loadBefore ?? "?"} before, ${
    loadAfter ?? "?"
  } after`,
);
if (flags.json !== undefined) {
  await Deno.writeTextFile(
    flags.json,
    JSON.stringify(
      { clients: CLIENTS, results, rounds, ratio, addedP99, cpuRatio, loadBefore, loadAfter },
      null,
      2,
    ),
  );
}
