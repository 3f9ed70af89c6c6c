// deno-lint-ignore-file no-console
/**
 * Fan-out through the Redis Streams bus vs the pub/sub RedisBus vs one
 * process without Redis, and replay speed (XRANGE).
 *
 * ```sh
 * deno run -A bench/redis_streams.ts [--messages 20000] [--size 100]
 * ```
 *
 * Two buses on one redis-server (started here) stand for two processes:
 * each has its own connections, and the publisher's messages reach the
 * other through Redis. A hub with 100 subscribers on each side; each
 * payload carries its publish time, and the receiving side records the
 * delay. Publishes go in rounds of 500, with a turn of the event loop
 * between them. Figures: deliveries/s on the receiving side (100
 * subscribers × messages / time to the last one), p50/p99 publish→delivery
 * delay. Replay: bus.range() over 10,000 stored messages, 1,000 a call.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { type BroadcastBus, BroadcastHub, type Subscriber } from "../websocket/mod.ts";
import { RedisBus, RedisStreamBus } from "../redis/mod.ts";
import { RedisProcess } from "../tests/_redis.ts";

const args = parseArgs({
  args: Deno.args,
  options: { messages: { type: "string" }, size: { type: "string" } },
});
const MESSAGES = Number(args.values.messages ?? 20_000);
const SIZE = Number(args.values.size ?? 100);
const SUBSCRIBERS = 100;
const ROUND = 500;

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];
}

async function run(name: string, buses: [BroadcastBus, BroadcastBus] | undefined) {
  const pubHub = new BroadcastHub({
    bus: buses?.[0],
    historySize: buses?.[0].sequenced ? 1000 : 0,
  });
  const subHub = buses === undefined
    ? pubHub
    : new BroadcastHub({ bus: buses[1], historySize: buses[1].sequenced ? 1000 : 0 });
  if (buses) await Promise.all(buses.map((b) => b.subscribe("bench")));
  let deliveries = 0;
  const delays: number[] = [];
  let done!: () => void;
  const finished = new Promise<void>((resolve) => (done = resolve));
  const total = MESSAGES * SUBSCRIBERS;
  const filler = "x".repeat(Math.max(0, SIZE - 20));
  for (let i = 0; i < SUBSCRIBERS; i++) {
    const sub: Subscriber = {
      sendPrepared(m) {
        if (i === 0) {
          const sent = Number(String(m.data).slice(0, 20));
          delays.push(performance.now() - sent);
        }
        if (++deliveries === total) done();
        return "sent";
      },
    };
    subHub.subscribe(sub, "bench");
  }
  await new Promise((r) => setTimeout(r, 200));
  const start = performance.now();
  for (let n = 0; n < MESSAGES; n += ROUND) {
    for (let i = n; i < Math.min(MESSAGES, n + ROUND); i++) {
      pubHub.publish("bench", performance.now().toFixed(6).padStart(20, "0") + filler);
    }
    await new Promise((r) => setTimeout(r, 0));
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([finished, new Promise((r) => (timer = setTimeout(r, 60_000)))]);
  clearTimeout(timer);
  const seconds = (performance.now() - start) / 1000;
  delays.sort((a, b) => a - b);
  console.log(
    `${name.padEnd(34)} ${(deliveries / seconds).toFixed(0).padStart(10)} deliveries/s  ` +
      `p50 ${percentile(delays, 0.5).toFixed(1)} ms  p99 ${
        percentile(delays, 0.99).toFixed(1)
      } ms` +
      (deliveries < total ? `  (only ${deliveries} of ${total})` : ""),
  );
}

const redis = await RedisProcess.start();
try {
  console.log(`${MESSAGES} messages of ${SIZE} B to ${SUBSCRIBERS} subscribers`);
  await run("one process, no Redis", undefined);
  {
    const a = await RedisBus.connect(redis.url);
    const b = await RedisBus.connect(redis.url);
    await run("pub/sub RedisBus, 2 buses", [a, b]);
    await Promise.all([a.close(), b.close()]);
  }
  {
    // The publisher offers the whole burst at once, faster than any Redis
    // takes it: the queue may hold all of it (with the default maxQueued,
    // 10,000, the rest of such a burst is delivered locally only, counted).
    const options = { historySize: 10_000, maxQueued: MESSAGES };
    const a = await RedisStreamBus.connect(redis.url, options);
    const b = await RedisStreamBus.connect(redis.url, options);
    await run("RedisStreamBus (Streams), 2 buses", [a, b]);
    // Replay: read the stream back, 1,000 a call.
    const epoch = b.position("bench")!.epoch;
    const head = b.position("bench")!.offset;
    const from = Math.max(1, head - 9_999);
    const start = performance.now();
    let read = 0;
    for (let at = from; at <= head; at += 1000) {
      const got = await b.range("bench", epoch, at, Math.min(head, at + 999), 1000);
      read += got?.length ?? 0;
    }
    const seconds = (performance.now() - start) / 1000;
    console.log(
      `replay through XRANGE: ${read} messages, ${(read / seconds).toFixed(0)} messages/s`,
    );
    await Promise.all([a.close(), b.close()]);
  }
} finally {
  await redis.kill();
}
