/**
 * netkit's RedisClient against npm:ioredis (pinned in deno.json), on one
 * throwaway redis-server, for the choice of the client behind the Streams bus:
 *
 * - `xadd`: pipelined XADD of `--size` byte payloads (1 KiB), `--ops` of them
 *   (100,000), at most `--window` unanswered; ops/s.
 * - `xread`: one connection XADDs `--ops` entries (pipelined) while another
 *   reads them with XREAD BLOCK … COUNT 1000 from the last id; entries
 *   delivered per second, from the first XADD to the last entry read.
 * - `pubsub`: `--subscribers` connections subscribe to one channel, one
 *   publishes `--messages` messages; deliveries per second. netkit's side is
 *   RedisBus (its pub/sub bus, the same RESP reader), ioredis's its subscriber mode.
 *
 * Then what each does with trouble: commands while Redis is down (ioredis
 * queues them by default: its offline queue and the memory it holds), a
 * server announcing a huge bulk reply, and a server sending garbage.
 *
 * The clients alternate for `--rounds` rounds; each figure is the median.
 *
 * ```sh
 * deno run -A bench/redis_clients.ts [--ops 100000] [--size 1024] [--window 1000]
 *   [--subscribers 10] [--messages 20000] [--rounds 3]
 * ```
 *
 * @module
 */
// deno-lint-ignore-file no-console
import { parseArgs } from "node:util";
import { Redis } from "ioredis";
import { RedisClient } from "../redis/_client.ts";
import { OversizedBulk } from "../redis/_resp.ts";
import { RedisBus } from "../redis/bus.ts";
import { PreparedMessage } from "../websocket/fanout/prepared_message.ts";
import { RedisServer } from "../tests/support/redis_cluster.ts";

const flags = parseArgs({
  args: Deno.args,
  options: {
    ops: { type: "string", default: "100000" },
    size: { type: "string", default: "1024" },
    window: { type: "string", default: "1000" },
    subscribers: { type: "string", default: "10" },
    messages: { type: "string", default: "20000" },
    rounds: { type: "string", default: "3" },
  },
});
const OPS = Number(flags.values.ops);
const SIZE = Number(flags.values.size);
const WINDOW = Number(flags.values.window);
const SUBSCRIBERS = Number(flags.values.subscribers);
const MESSAGES = Number(flags.values.messages);
const ROUNDS = Number(flags.values.rounds);

const payload = crypto.getRandomValues(new Uint8Array(SIZE));
const payloadBuffer = Buffer.from(payload);

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const fmt = (n: number) => Math.round(n).toLocaleString("en-US");
const memory = () => {
  const m = Deno.memoryUsage();
  return (m.rss + m.external) / 1048576;
};

/** Runs `n` calls with at most `window` unanswered. */
async function windowed(n: number, window: number, call: (i: number) => Promise<unknown>) {
  let next = 0;
  const lanes = Array.from({ length: Math.min(window, n) }, async () => {
    while (next < n) await call(next++);
  });
  await Promise.all(lanes);
}

function ioredis(port: number, options: Record<string, unknown> = {}): Redis {
  return new Redis({ host: "127.0.0.1", port, lazyConnect: true, ...options });
}

// --- scenarios ---------------------------------------------------------------

async function xaddNetkit(url: string, key: string): Promise<number> {
  await using client = await RedisClient.connect(url);
  const started = performance.now();
  await windowed(OPS, WINDOW, () => client.call(key, ["XADD", key, "*", "d", payload]));
  return OPS / ((performance.now() - started) / 1000);
}

async function xaddIoredis(port: number, key: string, auto = false): Promise<number> {
  const redis = ioredis(port, { enableAutoPipelining: auto });
  await redis.connect();
  const started = performance.now();
  await windowed(OPS, WINDOW, () => redis.xadd(key, "*", "d", payloadBuffer));
  const rate = OPS / ((performance.now() - started) / 1000);
  redis.disconnect();
  return rate;
}

async function xreadNetkit(url: string, key: string): Promise<number> {
  await using client = await RedisClient.connect(url);
  await using reader = await client.dedicated(key);
  const started = performance.now();
  const writing = windowed(OPS, WINDOW, () => client.call(key, ["XADD", key, "*", "d", payload]));
  let last = "0-0";
  let got = 0;
  while (got < OPS) {
    const reply = await reader.call([
      "XREAD",
      "COUNT",
      "1000",
      "BLOCK",
      "1000",
      "STREAMS",
      key,
      last,
    ]);
    if (reply === null) continue;
    const entries = (reply as [Uint8Array, [Uint8Array, Uint8Array[]][]][])[0][1];
    got += entries.length;
    last = new TextDecoder().decode(entries[entries.length - 1][0]);
  }
  await writing;
  return OPS / ((performance.now() - started) / 1000);
}

async function xreadIoredis(port: number, key: string): Promise<number> {
  const writer = ioredis(port);
  const reader = ioredis(port);
  await Promise.all([writer.connect(), reader.connect()]);
  const started = performance.now();
  const writing = windowed(OPS, WINDOW, () => writer.xadd(key, "*", "d", payloadBuffer));
  let last = "0-0";
  let got = 0;
  while (got < OPS) {
    const reply = await reader.xreadBuffer("COUNT", 1000, "BLOCK", 1000, "STREAMS", key, last);
    if (reply === null) continue;
    const entries = reply[0][1];
    got += entries.length;
    last = entries[entries.length - 1][0].toString();
  }
  await writing;
  const rate = OPS / ((performance.now() - started) / 1000);
  writer.disconnect();
  reader.disconnect();
  return rate;
}

async function pubsubNetkit(url: string, topic: string): Promise<number> {
  const buses = await Promise.all(
    Array.from({ length: SUBSCRIBERS + 1 }, () => RedisBus.connect(url, { maxQueued: 1 << 30 })),
  );
  const [publisher, ...subscribers] = buses;
  let delivered = 0;
  const total = MESSAGES * SUBSCRIBERS;
  let done!: () => void;
  const all = new Promise<void>((resolve) => (done = resolve));
  for (const bus of subscribers) {
    bus.attach(() => {
      if (++delivered === total) done();
    });
    await bus.subscribe(topic);
  }
  const message = new PreparedMessage(payload, true);
  const started = performance.now();
  for (let i = 0; i < MESSAGES; i++) {
    publisher.publish(topic, message);
    if (i % 1000 === 999) await new Promise((r) => setTimeout(r, 0));
  }
  await all;
  const rate = total / ((performance.now() - started) / 1000);
  await Promise.all(buses.map((b) => b.close()));
  return rate;
}

async function pubsubIoredis(port: number, channel: string): Promise<number> {
  const publisher = ioredis(port);
  const subscribers = Array.from({ length: SUBSCRIBERS }, () => ioredis(port));
  await Promise.all([publisher, ...subscribers].map((r) => r.connect()));
  let delivered = 0;
  const total = MESSAGES * SUBSCRIBERS;
  let done!: () => void;
  const all = new Promise<void>((resolve) => (done = resolve));
  for (const sub of subscribers) {
    sub.on("messageBuffer", () => {
      if (++delivered === total) done();
    });
    await sub.subscribe(channel);
  }
  const started = performance.now();
  const sends: Promise<unknown>[] = [];
  for (let i = 0; i < MESSAGES; i++) {
    sends.push(publisher.publish(channel, payloadBuffer));
    if (i % 1000 === 999) {
      await Promise.all(sends);
      sends.length = 0;
    }
  }
  await Promise.all(sends);
  await all;
  const rate = total / ((performance.now() - started) / 1000);
  for (const r of [publisher, ...subscribers]) r.disconnect();
  return rate;
}

// --- trouble -----------------------------------------------------------------

function rssMiB(): number {
  return memory();
}

async function offline(server: RedisServer): Promise<void> {
  const redis = ioredis(server.port, { retryStrategy: () => 1000 });
  redis.on("error", () => {});
  await redis.connect();
  const client = await RedisClient.connect(server.url, { timeout: 500 });
  await server.kill();
  await new Promise((r) => setTimeout(r, 200));
  const n = 20_000;
  const before = rssMiB();
  let rejected = 0;
  const queued: Promise<unknown>[] = [];
  // A payload each, as an application's messages would be.
  for (let i = 0; i < n; i++) {
    queued.push(redis.set(`k${i}`, Buffer.alloc(4096, i)).catch(() => rejected++));
  }
  await new Promise((r) => setTimeout(r, 100));
  const after = rssMiB();
  // deno-lint-ignore no-explicit-any
  const queue = (redis as any).offlineQueue?.length;
  console.log(
    `offline, ioredis (defaults): ${n} SETs of 4 KiB while Redis is down: ${queue} in its ` +
      `offline queue, ${rejected} rejected after 100 ms, RSS +${(after - before).toFixed(0)} MiB`,
  );
  let netkitRejected = 0;
  let code = "";
  const before2 = rssMiB();
  const calls: Promise<unknown>[] = [];
  for (let i = 0; i < 1000; i++) {
    calls.push(
      client.call(`k${i}`, ["SET", `k${i}`, new Uint8Array(4096)]).catch((e) => {
        netkitRejected++;
        code = e.code;
      }),
    );
  }
  await Promise.all(calls);
  console.log(
    `offline, netkit: 1000 SETs while Redis is down: ${netkitRejected} rejected (${code}), ` +
      `nothing queued; RSS +${(rssMiB() - before2).toFixed(0)} MiB`,
  );
  redis.disconnect(); // its queued commands are never answered: not awaited
  void queued;
  await client.close();
  await server.restart();
}

/** A fake Redis: answers PING/INFO-ish handshakes with +PONG, and `GET` with `reply()`. */
function fakeRedis(reply: (conn: Deno.Conn) => Promise<void>): { port: number; close(): void } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  (async () => {
    for await (const conn of listener) {
      (async () => {
        const buf = new Uint8Array(65536);
        try {
          for (;;) {
            const n = await conn.read(buf);
            if (n === null) break;
            const text = new TextDecoder().decode(buf.subarray(0, n));
            if (/GET/i.test(text)) await reply(conn);
            else {
              const count = text.split("*").length - 1;
              const parts: string[] = [];
              for (let i = 0; i < count; i++) {
                parts.push(
                  /CLUSTER/i.test(text) && i === count - 1
                    ? "-ERR cluster support disabled\r\n"
                    : "+PONG\r\n",
                );
              }
              await conn.write(new TextEncoder().encode(parts.join("")));
            }
          }
        } catch {
          // gone
        } finally {
          try {
            conn.close();
          } catch {
            // closed
          }
        }
      })();
    }
  })().catch(() => {});
  return { port: (listener.addr as Deno.NetAddr).port, close: () => listener.close() };
}

async function hugeBulk(): Promise<void> {
  const MiB = 1048576;
  const streamed = 200 * MiB;
  const chunk = new Uint8Array(MiB).fill(120);
  const fake = fakeRedis(async (conn) => {
    await conn.write(new TextEncoder().encode(`$${streamed}\r\n`));
    for (let sent = 0; sent < streamed; sent += MiB) await conn.write(chunk);
    await conn.write(new TextEncoder().encode("\r\n"));
  });
  for (const which of ["netkit", "ioredis"]) {
    const before = rssMiB();
    let peak = before;
    const timer = setInterval(() => (peak = Math.max(peak, rssMiB())), 20);
    let result = "";
    if (which === "netkit") {
      await using client = await RedisClient.connect(`redis://127.0.0.1:${fake.port}`, {
        maxBulkSize: MiB,
      });
      const v = await client.call("x", ["GET", "x"]);
      result = v instanceof OversizedBulk ? `OversizedBulk(${v.length})` : typeof v;
    } else {
      const redis = ioredis(fake.port, { enableReadyCheck: false });
      await redis.connect();
      const v = await Promise.race([
        redis.getBuffer("x").then((b) => `a Buffer of ${b?.length} bytes`),
        new Promise<string>((r) => setTimeout(() => r("no reply within 20 s"), 20_000)),
      ]);
      result = v;
      redis.disconnect();
    }
    clearInterval(timer);
    console.log(
      `a ${streamed / MiB} MiB bulk reply, ${which}: ${result}; peak RSS +${
        (peak - before).toFixed(0)
      } MiB`,
    );
    // deno-lint-ignore no-explicit-any
    (globalThis as any).gc?.();
  }
  fake.close();
}

async function garbage(): Promise<void> {
  const fake = fakeRedis(async (conn) => {
    await conn.write(new TextEncoder().encode("HTTP/1.1 400 Bad Request\r\n\r\n"));
  });
  {
    await using client = await RedisClient.connect(`redis://127.0.0.1:${fake.port}`);
    const err = await client.call("x", ["GET", "x"]).then(() => null, (e) => e);
    console.log(`garbage, netkit: ${err?.code}: ${err?.message.slice(0, 140)}`);
  }
  const redis = ioredis(fake.port, { enableReadyCheck: false, maxRetriesPerRequest: 1 });
  const errors: string[] = [];
  redis.on("error", (e: Error) => errors.push(e.message.slice(0, 100)));
  await redis.connect();
  const err = await Promise.race([
    redis.get("x").then(() => "resolved", (e: Error) => `rejected: ${e.message.slice(0, 100)}`),
    new Promise((r) => setTimeout(() => r("no answer in 3 s"), 3000)),
  ]);
  console.log(
    `garbage, ioredis: the call ${err}; 'error' events: ${errors.slice(0, 2).join(" | ")}`,
  );
  redis.disconnect();
  fake.close();
}

// --- main --------------------------------------------------------------------

await using server = await RedisServer.start();
const url = server.url;
const results: Record<string, number[]> = {};
const record = (name: string, rate: number) => (results[name] ??= []).push(rate);
for (let round = 0; round < ROUNDS; round++) {
  record("xadd netkit", await xaddNetkit(url, `xa-n-${round}`));
  record("xadd ioredis", await xaddIoredis(server.port, `xa-i-${round}`));
  record("xadd ioredis (autoPipelining)", await xaddIoredis(server.port, `xa-a-${round}`, true));
  record("xread netkit", await xreadNetkit(url, `xr-n-${round}`));
  record("xread ioredis", await xreadIoredis(server.port, `xr-i-${round}`));
  record("pubsub netkit (RedisBus)", await pubsubNetkit(url, `ps-n-${round}`));
  record("pubsub ioredis", await pubsubIoredis(server.port, `netkit:ws:ps-i-${round}`));
  await server.command(["FLUSHALL"]);
}
console.log(
  `redis-server ${SIZE} B payloads; xadd/xread ${OPS} ops, window ${WINDOW}; pubsub ` +
    `${SUBSCRIBERS} subscribers × ${MESSAGES} messages; median of ${ROUNDS} rounds`,
);
for (const [name, rates] of Object.entries(results)) {
  console.log(
    `${name.padEnd(32)} ${fmt(median(rates)).padStart(10)} /s   (${rates.map(fmt).join(", ")})`,
  );
}
const ratio = (a: string, b: string) => (median(results[a]) / median(results[b])).toFixed(2);
console.log(
  `netkit / ioredis: xadd ${ratio("xadd netkit", "xadd ioredis")}, ` +
    `xread ${ratio("xread netkit", "xread ioredis")}, pubsub ${
      ratio("pubsub netkit (RedisBus)", "pubsub ioredis")
    }`,
);
await offline(server);
await hugeBulk();
await garbage();
