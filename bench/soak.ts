/**
 * `deno task soak`: a bounded hard day for netkit's servers, run as a user
 * runs them (tcp-server, tls-server, ws-server), driven from this process:
 *
 * - a TCP connection flood up to and past `--max-connections` (2,500
 *   attempted at once against a limit of 2,000 by default), every
 *   connection doing verified echo round trips, living a few seconds and
 *   coming back;
 * - TLS clients doing verified echo round trips with handshake churn;
 * - slowloris peers trickling a byte a second: a ClientHello to tls-server
 *   and an upgrade request to ws-server (cut off by `--handshake-timeout`),
 *   and data to tcp-server (a slow but legitimate client: served, verified);
 * - WebSocket subscribers churning (connect, read for a while, leave) while
 *   publishers broadcast, some subscribers stalling long enough for the
 *   `--policy drop` slow-consumer policy to skip them;
 *
 * for a fixed time, in rounds. It prints what was served and refused, bytes
 * echoed and verified (mismatches must be 0), messages published, delivered
 * and dropped by policy, latency percentiles, and each server's memory:
 * RSS idle, at its peak and after each round once the load is gone, and the
 * live heap after a full GC (the servers run through `_soak_server.ts`, which
 * collects on SIGUSR2), which must come back to its idle level: a leak keeps
 * live memory up and grows it round after round. It exits 1 when anything
 * was lost, mismatched, reordered or leaked, or a server died.
 *
 *   deno task soak [--quick] [--duration S] [--rounds N] [--connections N]
 *                  [--max-connections N] [--subscribers N] [--settle S] [--json FILE]
 *
 * @module
 */
// deno-lint-ignore-file no-console
import { parseArgs } from "node:util";
import { writeDevCerts } from "../certs/mod.ts";
import { cpuSeconds } from "./_procstat.ts";
import { connect as wsConnect, type WebSocketConn } from "../websocket/mod.ts";
import {
  captureClientHello,
  closeQuietly,
  count,
  memoryOf,
  mib,
  openFileLimit,
  patternBytes,
  readFull,
  ROOT,
  sameBytes,
  Samples,
  sleep,
  type SoakServer,
  spawnServer,
  writeFull,
} from "./_soak_util.ts";

// --- flags --------------------------------------------------------------------------

const raw = parseArgs({
  args: Deno.args,
  options: {
    quick: { type: "boolean" },
    duration: { type: "string" },
    rounds: { type: "string" },
    connections: { type: "string" },
    "max-connections": { type: "string" },
    settle: { type: "string" },
    subscribers: { type: "string" },
    json: { type: "string" },
    help: { type: "boolean", short: "h" },
  },
  strict: true,
  allowPositionals: false,
});
if (raw.values.help) {
  console.log(
    "deno task soak [--quick] [--duration S] [--rounds N] [--connections N] [--max-connections N]\n" +
      "               [--subscribers N] [--settle S] [--json FILE]",
  );
  Deno.exit(0);
}
const quick = raw.values.quick ?? false;
const num = (v: string | undefined, fallback: number) => (v === undefined ? fallback : Number(v));
const CONNECTIONS = num(raw.values.connections, quick ? 1200 : 2500);
const MAX_CONNECTIONS = num(raw.values["max-connections"], Math.floor(CONNECTIONS * 0.8));
const ROUNDS = num(raw.values.rounds, quick ? 1 : 2);
const DURATION = num(raw.values.duration, quick ? 15 : 60); // seconds of load, all rounds
const SETTLE = num(raw.values.settle, quick ? 5 : 15);
const TLS_CLIENTS = quick ? 40 : 100;
const SLOWLORIS = quick ? 10 : 40; // per server
const SUBSCRIBERS = num(raw.values.subscribers, quick ? 30 : 50); // churning, at once
const SLOW_SUBSCRIBERS = quick ? 2 : 6;
const CHAT_RATE = quick ? 50 : 100; // small messages per second, per publisher
const BULK = { size: 32 * 1024, rate: 16 }; // the bulk publisher: 512 KiB/s to each subscriber
for (
  const [name, v] of Object.entries({ CONNECTIONS, MAX_CONNECTIONS, ROUNDS, DURATION, SETTLE })
) {
  if (!(v > 0) || !Number.isFinite(v)) {
    console.error(`soak: ${name.toLowerCase()} must be a positive number`);
    Deno.exit(2);
  }
}

// --- open files: every connection is a descriptor here and one in a server ----------

const needFiles = CONNECTIONS + TLS_CLIENTS + 3 * SLOWLORIS + SUBSCRIBERS + 1000;
// Deno raises its soft limit to the hard one at start; the hard one only a
// privileged shell can raise (`ulimit -Hn`), and the servers inherit it.
const soft = await openFileLimit();
if (soft !== undefined && soft < needFiles) {
  console.error(
    `soak: the open-file limit is ${soft}, ${needFiles} are needed: raise it first ` +
      `(\`ulimit -n ${needFiles}\`, as root if the hard limit is lower), or pass a smaller --connections`,
  );
  Deno.exit(1);
}

// --- servers ------------------------------------------------------------------------

const certDir = await Deno.makeTempDir({ prefix: "netkit-soak-" });
const { files } = await writeDevCerts({ out: certDir, hosts: ["localhost", "127.0.0.1"] });
const caPem = await Deno.readTextFile(files.ca);
const HANDSHAKE_TIMEOUT = 5;

const servers: SoakServer[] = [];
let tcpServer: SoakServer, tlsServer: SoakServer, wsServer: SoakServer;
try {
  tcpServer = await spawnServer("tcp-server", "tcp_server", [
    "--port",
    "0",
    "--quiet",
    "--max-connections",
    String(MAX_CONNECTIONS),
  ], { refused: /refused 127/, errors: /: error: / });
  servers.push(tcpServer);
  tlsServer = await spawnServer("tls-server", "tls_server", [
    "--port",
    "0",
    "--quiet",
    "--cert",
    files.cert,
    "--key",
    files.key,
    "--handshake-timeout",
    String(HANDSHAKE_TIMEOUT),
  ], { handshakeTimeouts: /did not finish its TLS handshake/, errors: /: error: / });
  servers.push(tlsServer);
  wsServer = await spawnServer("ws-server", "ws_server", [
    "--port",
    "0",
    "--quiet",
    "--policy",
    "drop",
    "--max-buffered",
    String(256 * 1024),
    "--handshake-timeout",
    String(HANDSHAKE_TIMEOUT),
  ], {
    upgradeTimeouts: /no complete WebSocket upgrade/,
    dropping: /skipping it until it drains/,
    dropped: /caught up; (\d+) messages were skipped/,
    errors: /: error: /,
  });
  servers.push(wsServer);
} catch (err) {
  for (const s of servers) await s.stop();
  await Deno.remove(certDir, { recursive: true });
  throw err;
}

// --- what is counted ----------------------------------------------------------------

const stats = {
  tcp: {
    attempts: 0,
    served: 0,
    refused: 0,
    lost: 0, // an accepted connection that ended mid-life: must be 0
    connectErrors: 0,
    open: 0,
    peakOpen: 0,
    roundTrips: 0,
    bytes: 0,
    mismatches: 0,
    latency: new Samples(),
    firstLatency: new Samples(), // connect to first echo: includes waiting to be accepted
  },
  tls: {
    served: 0,
    failed: 0,
    reasons: new Map<string, number>(),
    roundTrips: 0,
    bytes: 0,
    mismatches: 0,
    latency: new Samples(),
  },
  slow: {
    tcpBytes: 0,
    tcpMismatches: 0,
    tcpConns: 0,
    tcpCut: 0,
    tlsCut: 0,
    tlsCutSeconds: new Samples(),
    wsCut: 0,
    wsCutSeconds: new Samples(),
  },
  ws: {
    published: 0,
    delivered: 0,
    deliveredBytes: 0,
    subscribers: 0,
    slowSubscribers: 0,
    mismatches: 0,
    outOfOrder: 0,
    failed: 0,
    latency: new Samples(),
  },
};

// --- the TCP flood ------------------------------------------------------------------

/** One verified round trip of `size` bytes; "closed" if the server ended the connection. */
async function roundTrip(
  conn: Deno.Conn,
  size: number,
  seed: number,
  into: { roundTrips: number; bytes: number; mismatches: number; latency: Samples },
): Promise<"ok" | "closed"> {
  const data = patternBytes(size, seed);
  const back = new Uint8Array(size);
  const started = performance.now();
  try {
    await writeFull(conn, data);
    if (!(await readFull(conn, back))) return "closed";
  } catch {
    return "closed";
  }
  into.latency.add(performance.now() - started);
  into.roundTrips++;
  into.bytes += size;
  if (!sameBytes(back, data)) into.mismatches++;
  return "ok";
}

async function tcpSlot(slot: number, signal: AbortSignal): Promise<void> {
  const s = stats.tcp;
  let seed = slot * 1_000_003;
  while (!signal.aborted) {
    let conn: Deno.TcpConn | undefined;
    try {
      conn = await Deno.connect({ hostname: "127.0.0.1", port: tcpServer.port });
      s.attempts++;
      // The first round trip tells served from refused (closed at once).
      const first = { roundTrips: 0, bytes: 0, mismatches: 0, latency: s.firstLatency };
      const answer = await roundTrip(conn, 64, ++seed, first);
      s.roundTrips += first.roundTrips;
      s.bytes += first.bytes;
      s.mismatches += first.mismatches;
      if (answer === "closed") {
        s.refused++;
        closeQuietly(conn);
        conn = undefined;
        await sleep(1000 + Math.random() * 1000, signal);
        continue;
      }
      s.served++;
      s.open++;
      s.peakOpen = Math.max(s.peakOpen, s.open);
      try {
        const until = performance.now() + 3000 + Math.random() * 7000;
        while (!signal.aborted && performance.now() < until) {
          await sleep(500 + Math.random() * 1000, signal);
          if (signal.aborted) break;
          const size = 64 + Math.floor(Math.random() * 960);
          if (await roundTrip(conn, size, ++seed, s) === "closed") {
            s.lost++;
            break;
          }
        }
      } finally {
        s.open--;
      }
    } catch {
      s.connectErrors++;
      await sleep(200, signal);
    } finally {
      if (conn) closeQuietly(conn);
    }
  }
}

// --- TLS clients with handshake churn -------------------------------------------------

async function tlsSlot(slot: number, signal: AbortSignal): Promise<void> {
  const s = stats.tls;
  let seed = 7 + slot * 1_000_003;
  while (!signal.aborted) {
    let conn: Deno.TlsConn | undefined;
    try {
      conn = await Deno.connectTls({
        hostname: "localhost",
        port: tlsServer.port,
        caCerts: [caPem],
      });
      await conn.handshake();
      s.served++;
      const until = performance.now() + 4000 + Math.random() * 8000;
      while (!signal.aborted && performance.now() < until) {
        const size = 1024 + Math.floor(Math.random() * 7 * 1024);
        if (await roundTrip(conn, size, ++seed, s) === "closed") {
          s.failed++;
          break;
        }
        await sleep(300 + Math.random() * 400, signal);
      }
    } catch (err) {
      s.failed++;
      const reason = err instanceof Error ? err.name : String(err);
      s.reasons.set(reason, (s.reasons.get(reason) ?? 0) + 1);
    } finally {
      if (conn) closeQuietly(conn);
    }
  }
}

// --- slowloris --------------------------------------------------------------------------

/** Trickles `bytes` a byte a second until the server cuts it off; counts the cut. */
async function slowlorisSlot(
  port: number,
  bytes: Uint8Array,
  onCut: (seconds: number) => void,
  signal: AbortSignal,
): Promise<void> {
  while (!signal.aborted) {
    let conn: Deno.TcpConn | undefined;
    try {
      conn = await Deno.connect({ hostname: "127.0.0.1", port });
      const started = performance.now();
      let cut = false;
      const c = conn;
      const watching = (async () => {
        const buf = new Uint8Array(1024);
        try {
          while ((await c.read(buf)) !== null) {
            // Whatever the server says, the end is what counts.
          }
        } catch {
          // A reset is a cut too.
        }
        cut = true;
      })();
      let writeFailed = false;
      for (let i = 0; i < bytes.length && !cut && !signal.aborted; i++) {
        try {
          await writeFull(conn, bytes.subarray(i, i + 1));
        } catch {
          writeFailed = true; // the server closed it: a cut too
          break;
        }
        await sleep(1000, signal);
      }
      // A cut that lands as the round ends is still a cut: let the watcher see it.
      if (!cut && !writeFailed) await Promise.race([watching, sleep(300)]);
      if (cut || writeFailed) onCut((performance.now() - started) / 1000);
      closeQuietly(conn);
      conn = undefined;
      await watching;
    } catch {
      if (conn) closeQuietly(conn);
      await sleep(200, signal);
    }
  }
}

/**
 * A slow but legitimate TCP client: a byte a second, each echoed and
 * verified, for the whole round. Refused while the server is full, it backs
 * off and tries again; once served, it must never be cut.
 */
async function slowTcpSlot(slot: number, signal: AbortSignal): Promise<void> {
  const s = stats.slow;
  const data = patternBytes(100_000, 99 + slot);
  const one = new Uint8Array(1);
  let i = 0;
  while (!signal.aborted) {
    let conn: Deno.TcpConn | undefined;
    let served = false;
    try {
      conn = await Deno.connect({ hostname: "127.0.0.1", port: tcpServer.port });
      while (!signal.aborted) {
        await writeFull(conn, data.subarray(i % data.length, i % data.length + 1));
        if (!(await readFull(conn, one))) break;
        if (!served) {
          served = true;
          s.tcpConns++;
        }
        if (one[0] !== data[i % data.length]) s.tcpMismatches++;
        s.tcpBytes++;
        i++;
        await sleep(1000, signal);
      }
    } catch {
      // Counted below.
    } finally {
      if (conn) closeQuietly(conn);
    }
    if (served && !signal.aborted) s.tcpCut++;
    if (!signal.aborted) await sleep(1000 + Math.random() * 1000, signal);
  }
}

// --- WebSocket broadcast with churning subscribers -----------------------------------------

const HEADER = 17; // kind u8, publisher u32, seq u32, sent-at f64

function message(kind: number, publisher: number, seq: number, size: number): Uint8Array {
  const out = new Uint8Array(HEADER + size);
  const view = new DataView(out.buffer);
  view.setUint8(0, kind);
  view.setUint32(1, publisher);
  view.setUint32(5, seq);
  view.setFloat64(9, performance.now());
  out.set(patternBytes(size, publisher * 65_536 + seq), HEADER);
  return out;
}

/** Counts and checks one broadcast message; `last` keeps each publisher's last seq seen. */
function check(msg: unknown, last: Map<number, number>, timed: boolean): void {
  const s = stats.ws;
  if (!(msg instanceof Uint8Array) || msg.length < HEADER) {
    s.mismatches++;
    return;
  }
  const view = new DataView(msg.buffer, msg.byteOffset, msg.byteLength);
  const kind = view.getUint8(0);
  const publisher = view.getUint32(1);
  const seq = view.getUint32(5);
  const sentAt = view.getFloat64(9);
  s.delivered++;
  s.deliveredBytes += msg.length;
  if (
    !sameBytes(msg.subarray(HEADER), patternBytes(msg.length - HEADER, publisher * 65_536 + seq))
  ) {
    s.mismatches++;
  }
  const prev = last.get(publisher);
  if (prev !== undefined && seq <= prev) s.outOfOrder++;
  last.set(publisher, seq);
  if (timed && kind === 0) s.latency.add(performance.now() - sentAt);
}

const wsUrl = () => `ws://127.0.0.1:${wsServer.port}/`;

async function publisher(
  id: number,
  size: number,
  rate: number,
  kind: number,
  signal: AbortSignal,
) {
  let ws: WebSocketConn | undefined;
  try {
    ws = await wsConnect(wsUrl());
    const conn = ws;
    // A publisher is a subscriber too (broadcast includes the sender): read.
    const last = new Map<number, number>();
    const reading = (async () => {
      for (let m; (m = await conn.receive()) !== null;) check(m, last, false);
    })();
    let seq = 0;
    const started = performance.now();
    while (!signal.aborted) {
      // Keep to the rate on average, whatever the timer resolution.
      const due = started + (seq * 1000) / rate;
      const wait = due - performance.now();
      if (wait > 0) await sleep(wait, signal);
      if (signal.aborted) break;
      if (await conn.send(message(kind, id, ++seq, size))) stats.ws.published++;
    }
    await conn.close();
    await reading;
  } catch {
    stats.ws.failed++;
    await ws?.close().catch(() => {});
  }
}

async function subscriberSlot(slow: boolean, signal: AbortSignal): Promise<void> {
  while (!signal.aborted) {
    let ws: WebSocketConn | undefined;
    try {
      ws = await wsConnect(wsUrl());
      const conn = ws;
      stats.ws.subscribers++;
      if (slow) {
        // Stall: a netkit client stops reading its socket once a few
        // messages wait unread, so the server's backlog for it grows past
        // --max-buffered and the drop policy skips it. Then catch up.
        // (The kernel's socket buffers take the first ~4 MiB: stall long enough.)
        stats.ws.slowSubscribers++;
        await sleep(12_000, signal);
      }
      const last = new Map<number, number>();
      const until = performance.now() + (slow ? 3000 : 1000 + Math.random() * 3000);
      while (performance.now() < until) {
        const m = await Promise.race([conn.receive(), sleep(250).then(() => "idle" as const)]);
        if (m === "idle") continue;
        if (m === null) break;
        check(m, last, !slow);
      }
      await conn.close();
    } catch {
      stats.ws.failed++;
      await ws?.close().catch(() => {});
    }
  }
}

// --- a round of load ------------------------------------------------------------------

interface Memory {
  idle: number;
  samples: number[];
  /** Lowest RSS in the settle window after each round. */
  after: number[];
  hwm: number;
  /** Live memory after a full GC (V8 heap used + external): at idle, after each round. */
  liveIdle: number;
  liveAfter: number[];
  /** RSS right after the last full GC. */
  afterGc: number;
}
const rss: Record<string, Memory> = {};
for (const s of servers) {
  rss[s.name] = { idle: 0, samples: [], after: [], hwm: 0, liveIdle: 0, liveAfter: [], afterGc: 0 };
}

/** Live bytes after a full GC in the server, or NaN if it did not answer. */
async function liveBytes(server: SoakServer): Promise<number> {
  const usage = await server.gcMemory();
  return usage ? usage.heapUsed + usage.external : NaN;
}

async function sampleMemory(): Promise<void> {
  for (const s of servers) {
    const m = await memoryOf(s.pid);
    if (m) {
      rss[s.name].samples.push(m.rss);
      rss[s.name].hwm = Math.max(rss[s.name].hwm, m.hwm);
    }
  }
}

async function round(seconds: number): Promise<void> {
  const controller = new AbortController();
  const { signal } = controller;
  const hello = await captureClientHello();
  const upgrade = new TextEncoder().encode(
    "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
  );
  const tasks: Promise<void>[] = [];
  // Slow TCP clients first, so that they hold slots before the flood fills the server.
  for (let i = 0; i < Math.max(1, SLOWLORIS / 2); i++) tasks.push(slowTcpSlot(i, signal));
  await sleep(200);
  // The flood ramps up in batches: all of it within about a second.
  for (let i = 0; i < CONNECTIONS; i++) {
    tasks.push(tcpSlot(i, signal));
    if (i % 250 === 249) await sleep(100);
  }
  for (let i = 0; i < TLS_CLIENTS; i++) tasks.push(tlsSlot(i, signal));
  for (let i = 0; i < SLOWLORIS; i++) {
    tasks.push(slowlorisSlot(tlsServer.port, hello, (sec) => {
      stats.slow.tlsCut++;
      stats.slow.tlsCutSeconds.add(sec);
    }, signal));
    tasks.push(slowlorisSlot(wsServer.port, upgrade, (sec) => {
      stats.slow.wsCut++;
      stats.slow.wsCutSeconds.add(sec);
    }, signal));
  }
  tasks.push(publisher(1, 200, CHAT_RATE, 0, signal));
  tasks.push(publisher(2, 200, CHAT_RATE, 0, signal));
  tasks.push(publisher(3, BULK.size, BULK.rate, 1, signal));
  for (let i = 0; i < SUBSCRIBERS; i++) tasks.push(subscriberSlot(false, signal));
  for (let i = 0; i < SLOW_SUBSCRIBERS; i++) tasks.push(subscriberSlot(true, signal));

  const sampler = setInterval(() => void sampleMemory(), 500);
  const started = performance.now();
  const progress = setInterval(() => {
    const t = stats.tcp;
    console.error(
      `soak: ${((performance.now() - started) / 1000).toFixed(0)}s: tcp ${t.open} open ` +
        `(peak ${t.peakOpen}), ${count(t.served)} served, ${count(t.refused)} refused; ` +
        `ws ${count(stats.ws.published)} published, ${count(stats.ws.delivered)} delivered`,
    );
  }, 5000);
  await sleep(seconds * 1000);
  controller.abort();
  clearInterval(progress);
  await Promise.all(tasks);
  clearInterval(sampler);
  await sampleMemory();
}

// --- the run --------------------------------------------------------------------------

console.error(
  `soak: ${ROUNDS} round(s) of ${(DURATION / ROUNDS).toFixed(0)} s: ${count(CONNECTIONS)} TCP ` +
    `connections against --max-connections ${
      count(MAX_CONNECTIONS)
    }, ${TLS_CLIENTS} TLS clients, ` +
    `${SLOWLORIS} slowloris peers per server, ${SUBSCRIBERS} + ${SLOW_SUBSCRIBERS} slow churning ` +
    `WebSocket subscribers`,
);
await sleep(2000);
for (const s of servers) {
  rss[s.name].idle = (await memoryOf(s.pid))?.rss ?? 0;
  rss[s.name].liveIdle = await liveBytes(s);
}

const wall = performance.now();
for (let r = 0; r < ROUNDS; r++) {
  await round(DURATION / ROUNDS);
  console.error(`soak: round ${r + 1} done; letting the servers settle for ${SETTLE} s`);
  // V8 gives memory back some seconds after the load stops (its memory
  // reducer), not at once: sample the settle window, keep the lowest.
  const lowest = new Map<string, number>();
  for (let i = 0; i < SETTLE * 2; i++) {
    await sleep(500);
    for (const s of servers) {
      const now = (await memoryOf(s.pid))?.rss ?? 0;
      lowest.set(s.name, Math.min(lowest.get(s.name) ?? Infinity, now));
    }
  }
  for (const s of servers) {
    rss[s.name].after.push(lowest.get(s.name) ?? 0);
    rss[s.name].liveAfter.push(await liveBytes(s));
    rss[s.name].afterGc = (await memoryOf(s.pid))?.rss ?? 0;
  }
}
const elapsed = (performance.now() - wall) / 1000;

const alive = servers.map((s) => s.alive());
const cpu: Record<string, number> = {};
for (const s of servers) cpu[s.name] = (await cpuSeconds(s.pid)) ?? NaN;
const selfCpu = (await cpuSeconds(Deno.pid)) ?? NaN;
const exits: Record<string, { code: number; ms: number }> = {};
for (const s of servers) exits[s.name] = await s.stop();
await Deno.remove(certDir, { recursive: true });

// --- the report ------------------------------------------------------------------------

const t = stats.tcp;
const ms = (x: number) => (Number.isNaN(x) ? "-" : `${x.toFixed(1)} ms`);
const dropped = wsServer.sums.get("dropped") ?? 0;
const rows: [string, string][] = [
  [
    "run",
    `${ROUNDS} × ${(DURATION / ROUNDS).toFixed(0)} s of load, ${elapsed.toFixed(0)} s in all`,
  ],
  [
    `CPU seconds (${navigator.hardwareConcurrency} cores, shared by all)`,
    `load generator ${selfCpu.toFixed(0)}, ${
      servers.map((s) => `${s.name} ${cpu[s.name].toFixed(0)}`).join(", ")
    }`,
  ],
  [
    "tcp: connections at once",
    `${count(CONNECTIONS)} attempted, ${count(t.peakOpen)} open at peak (--max-connections ${
      count(MAX_CONNECTIONS)
    })`,
  ],
  [
    "tcp: connections served / refused",
    `${count(t.served)} / ${count(t.refused)} (server logged ${
      count(tcpServer.counts.get("refused") ?? 0)
    } refusals)`,
  ],
  [
    "tcp: served connections lost mid-life / connect errors",
    `${count(t.lost)} / ${count(t.connectErrors)}`,
  ],
  [
    "tcp: echo round trips, bytes verified",
    `${count(t.roundTrips)}, ${mib(t.bytes)}`,
  ],
  [
    "tcp: latency, established round trip",
    `p50 ${ms(t.latency.percentile(50))}, p99 ${ms(t.latency.percentile(99))}`,
  ],
  [
    "tcp: latency, connect to first echo (accept queue)",
    `p50 ${ms(t.firstLatency.percentile(50))}, p99 ${ms(t.firstLatency.percentile(99))}`,
  ],
  [
    "tls: handshakes served / failed",
    `${count(stats.tls.served)} / ${count(stats.tls.failed)}${
      stats.tls.reasons.size > 0
        ? ` (${[...stats.tls.reasons].map(([k, v]) => `${k} ${v}`).join(", ")})`
        : ""
    }`,
  ],
  [
    "tls: echo round trips, bytes verified",
    `${count(stats.tls.roundTrips)}, ${mib(stats.tls.bytes)}, p50 ${
      ms(stats.tls.latency.percentile(50))
    }, p99 ${ms(stats.tls.latency.percentile(99))}`,
  ],
  [
    "slowloris: tls handshakes cut at --handshake-timeout",
    `${count(stats.slow.tlsCut)} (after ${
      stats.slow.tlsCutSeconds.percentile(50).toFixed(1)
    } s median; server logged ${count(tlsServer.counts.get("handshakeTimeouts") ?? 0)})`,
  ],
  [
    "slowloris: ws upgrades cut at --handshake-timeout",
    `${count(stats.slow.wsCut)} (after ${
      stats.slow.wsCutSeconds.percentile(50).toFixed(1)
    } s median; server logged ${count(wsServer.counts.get("upgradeTimeouts") ?? 0)})`,
  ],
  [
    "slow tcp clients (1 byte/s, served)",
    `${count(stats.slow.tcpConns)} connections, ${
      count(stats.slow.tcpBytes)
    } bytes echoed and verified`,
  ],
  [
    "bytes echoed and verified, all",
    mib(t.bytes + stats.tls.bytes + stats.slow.tcpBytes),
  ],
  [
    "mismatches (must be 0)",
    count(t.mismatches + stats.tls.mismatches + stats.slow.tcpMismatches + stats.ws.mismatches),
  ],
  [
    "ws: subscribers (churned) / slow ones",
    `${count(stats.ws.subscribers)} / ${count(stats.ws.slowSubscribers)}`,
  ],
  ["ws: messages published", count(stats.ws.published)],
  [
    "ws: messages delivered",
    `${count(stats.ws.delivered)} (${mib(stats.ws.deliveredBytes)}), out of order: ${
      count(stats.ws.outOfOrder)
    }`,
  ],
  [
    "ws: dropped by policy (--policy drop)",
    `${count(dropped)} messages, ${count(wsServer.counts.get("dropping") ?? 0)} slow episodes`,
  ],
  [
    "ws: broadcast latency",
    `p50 ${ms(stats.ws.latency.percentile(50))}, p99 ${ms(stats.ws.latency.percentile(99))}`,
  ],
];
console.log("\n| soak | |\n| --- | --- |");
for (const [k, v] of rows) console.log(`| ${k} | ${v} |`);

console.log(
  `\n| server | idle RSS | peak RSS (VmHWM) | ${
    Array.from({ length: ROUNDS }, (_, i) => `after round ${i + 1}`).join(" | ")
  } | after a full GC | live heap: idle → after each round | alive | SIGTERM exit |`,
);
console.log(
  `| --- | --- | --- | ${
    Array.from({ length: ROUNDS }, () => "---").join(" | ")
  } | --- | --- | --- | --- |`,
);
servers.forEach((s, i) => {
  const m = rss[s.name];
  const e = exits[s.name];
  console.log(
    `| ${s.name} | ${mib(m.idle)} | ${mib(m.hwm)} | ${m.after.map(mib).join(" | ")} | ${
      mib(m.afterGc)
    } | ${[m.liveIdle, ...m.liveAfter].map(mib).join(" → ")} | ${
      alive[i] ? "yes" : "NO"
    } | ${e.code} in ${(e.ms / 1000).toFixed(1)} s |`,
  );
});
console.log(
  `\n"after round N": the lowest RSS in the ${SETTLE} s after that round's load stopped. ` +
    '"after a full GC": RSS once the server ran a full garbage collection (SIGUSR2, ' +
    'bench/_soak_server.ts). "live heap": V8 heap in use + external buffers after that GC. ' +
    "A leak grows round after round and keeps live memory above its idle level; V8 and the " +
    "allocator keep some of the peak's pages (RSS) without it being a leak.",
);

if (raw.values.json) {
  await Deno.writeTextFile(
    raw.values.json,
    JSON.stringify(
      {
        flags: { CONNECTIONS, MAX_CONNECTIONS, ROUNDS, DURATION, SETTLE, quick },
        rows: Object.fromEntries(rows),
        rss,
        exits,
        serverLogs: Object.fromEntries(
          servers.map((s) => [s.name, Object.fromEntries(s.counts)]),
        ),
      },
      null,
      2,
    ),
  );
}

const mismatches = t.mismatches + stats.tls.mismatches + stats.slow.tcpMismatches +
  stats.ws.mismatches;
const problems = [
  mismatches > 0 && `${mismatches} mismatched echoes or messages`,
  t.lost > 0 && `${t.lost} served TCP connections lost mid-life`,
  stats.ws.outOfOrder > 0 && `${stats.ws.outOfOrder} broadcast messages out of order`,
  alive.includes(false) && "a server died",
  Object.values(exits).some((e) => e.code !== 0) && "a server did not exit 0 on SIGTERM",
  ...servers.map((s) => {
    const m = rss[s.name];
    const after = m.liveAfter.at(-1) ?? NaN;
    return after > m.liveIdle + 16 * 1024 * 1024 &&
      `${s.name} keeps ${mib(after)} live after the load (idle: ${mib(m.liveIdle)}): a leak?`;
  }),
  t.peakOpen < Math.min(MAX_CONNECTIONS, CONNECTIONS) * 0.95 &&
  `only ${t.peakOpen} TCP connections were open at once`,
].filter(Boolean);
if (problems.length > 0) {
  console.error(`soak: FAILED: ${problems.join("; ")}`);
  for (const s of servers) console.error(`${s.name} stderr tail:\n${s.tail.join("\n")}`);
  Deno.exit(1);
}
console.error(`soak: ok (${ROOT})`);
