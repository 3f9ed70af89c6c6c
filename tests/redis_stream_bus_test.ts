// RedisStreamBus, library level, against real redis-server processes (each
// test starts its own on a free port): two buses stand for two processes,
// each with a hub keeping history. After each scenario, per topic, the exact
// sequence of payloads every subscriber got, and the positions each hub gave.
import assert from "node:assert/strict";
import { BroadcastHub } from "../websocket/mod.ts";
import { RedisStreamBus } from "../redis/mod.ts";
import { haveRedis, RedisProcess } from "./_redis.ts";
import { delay, until } from "./support/time.ts";
import { Recorder, streamBusNode } from "./support/stream_bus_node.ts";

const REDIS = haveRedis();

/**
 * A redis-server that writes every change to its append-only file before
 * answering (`--appendfsync always`), in a directory of its own; dispose
 * kills it, then removes the directory.
 */
async function persistentRedis(): Promise<{ redis: RedisProcess } & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix: "netkit-aof-" });
  const args = ["--appendonly", "yes", "--appendfsync", "always", "--dir", dir];
  const redis = await RedisProcess.start(args).catch(async (err) => {
    await Deno.remove(dir, { recursive: true });
    throw err;
  });
  return {
    redis,
    async [Symbol.asyncDispose]() {
      await redis.kill();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

const names = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}${i}`);

Deno.test({
  name:
    "RedisStreamBus: two processes — every message to every subscriber exactly once, one order, the same positions",
  ignore: !REDIS,
  async fn() {
    await using redis = await RedisProcess.start();
    await using a = await streamBusNode(redis.url, "room");
    await using b = await streamBusNode(redis.url, "room");
    for (let i = 0; i < 50; i++) {
      a.hub.publish("room", `a${i}`);
      b.hub.publish("room", i % 2 ? new TextEncoder().encode(`b${i}`) : `b${i}`);
    }
    await until(() => a.sub.got.length >= 100 && b.sub.got.length >= 100, "100 messages each");
    assert.deepEqual(a.sub.got, b.sub.got, "one order everywhere");
    assert.equal(new Set(a.sub.got).size, 100, "no duplicate");
    // Per sender, publish order kept; binary kept binary.
    assert.deepEqual(a.sub.got.filter((m) => m.startsWith("a")), names("a", 50));
    assert.deepEqual(
      a.sub.got.filter((m) => !m.startsWith("a")),
      names("b", 50).map((m, i) => (i % 2 ? `bin:${m}` : m)),
    );
    assert.deepEqual(a.hub.position("room"), b.hub.position("room"));
    assert.equal(a.hub.position("room")!.offset, 100);
    // Nothing more arrives (no late duplicate).
    a.hub.publish("room", "end");
    await until(() => b.sub.got.length === 101, "the end");
    assert.equal(b.sub.got.at(-1), "end");
  },
});

Deno.test({
  name:
    "RedisStreamBus: publishes in flight when Redis dies are delivered here at once, and once when they are read back later",
  ignore: !REDIS,
  async fn() {
    await using persistent = await persistentRedis();
    const { redis } = persistent;
    await using a = await streamBusNode(redis.url, "room");
    a.hub.publish("room", "before");
    await until(() => a.sub.got.length === 1, "before");
    // Redis holds every write (and script) back: the next publishes stay in flight.
    assert.equal(await redis.command(["CLIENT", "PAUSE", "60000", "WRITE"]), "OK");
    for (const m of ["in flight 1", "in flight 2"]) a.hub.publish("room", m);
    await delay(100);
    assert.deepEqual(a.sub.got, ["before"], "not delivered before it is in the log");
    await redis.kill();
    await until(() => a.events.some((e) => e.type === "lost"), "a lost");
    // Redis may never come back: what was on its way is delivered here now.
    assert.deepEqual(a.sub.got, ["before", "in flight 1", "in flight 2"]);
    a.hub.publish("room", "down");
    assert.deepEqual(a.sub.got, ["before", "in flight 1", "in flight 2", "down"]);
    // Back, from its append-only file (the paused writes never reached it):
    // the retried publishes are added and read back, not delivered again.
    await redis.restart();
    await until(() => a.hub.position("room")?.offset === 4, "all four in the log");
    a.hub.publish("room", "after");
    await until(() => a.sub.got.length === 5, "after");
    assert.deepEqual(a.sub.got, ["before", "in flight 1", "in flight 2", "down", "after"]);
  },
});

Deno.test({
  name:
    "RedisStreamBus: Redis restarted without persistence — publishes made while down reach the other process once; a new epoch, said so",
  ignore: !REDIS,
  async fn() {
    await using redis = await RedisProcess.start();
    await using a = await streamBusNode(redis.url, "room");
    await using b = await streamBusNode(redis.url, "room");
    a.hub.publish("room", "before");
    await until(() => b.sub.got.length === 1, "before");
    const epoch = a.hub.position("room")!.epoch;
    await redis.kill();
    await until(() => a.events.some((e) => e.type === "lost"), "a lost");
    // Local broadcast goes on, at once.
    for (const m of ["down1", "down2", "down3"]) a.hub.publish("room", m);
    assert.deepEqual(a.sub.got, ["before", "down1", "down2", "down3"]);
    await redis.restart();
    await until(() => b.sub.got.length === 4, "the queued publishes at b");
    assert.deepEqual(b.sub.got, ["before", "down1", "down2", "down3"]);
    // (Until a bus knows Redis is back, its publishes are delivered locally first.)
    await until(() => b.events.some((e) => e.type === "back"), "b back");
    const back = a.events.find((e) => e.type === "back");
    assert.ok(back?.type === "back" && back.queued === 3 && back.dropped === 0);
    a.hub.publish("room", "after");
    b.hub.publish("room", "after b");
    await until(() => a.sub.got.length === 6 && b.sub.got.length === 6, "after");
    // Never twice at the publisher either.
    assert.deepEqual(a.sub.got, ["before", "down1", "down2", "down3", "after", "after b"]);
    assert.deepEqual(b.sub.got, a.sub.got);
    // The data was gone: a new epoch, the same on both, reported.
    const now = a.hub.position("room")!;
    assert.notEqual(now.epoch, epoch);
    assert.deepEqual(b.hub.position("room"), now);
    assert.equal(now.offset, 5);
    assert.ok(b.events.some((e) => e.type === "epoch"));
  },
});

Deno.test({
  name:
    "RedisStreamBus: Redis restarted with persistence — the same epoch, no gap, no duplicate; the reader goes on from its last ID",
  ignore: !REDIS,
  async fn() {
    await using persistent = await persistentRedis();
    const { redis } = persistent;
    await using a = await streamBusNode(redis.url, "room");
    await using b = await streamBusNode(redis.url, "room");
    for (const m of names("x", 10)) a.hub.publish("room", m);
    await until(() => b.sub.got.length === 10, "10 at b");
    const before = b.hub.position("room")!;
    await redis.kill();
    await until(() => a.events.some((e) => e.type === "lost"), "a lost");
    for (const m of names("d", 5)) a.hub.publish("room", m);
    await redis.restart();
    for (const m of names("y", 5)) b.hub.publish("room", m);
    await until(() => a.sub.got.length === 20 && b.sub.got.length === 20, "20 each");
    // a had its own at once (while down); the log order is what b sees, and
    // the positions are the same on both.
    assert.deepEqual(a.sub.got.slice(0, 15), [...names("x", 10), ...names("d", 5)]);
    assert.equal(new Set(b.sub.got).size, 20);
    assert.deepEqual(b.sub.got.filter((m) => m[0] === "d"), names("d", 5));
    assert.deepEqual(b.sub.got.filter((m) => m[0] === "y"), names("y", 5));
    const after = b.hub.position("room")!;
    assert.equal(after.epoch, before.epoch, "the log survived: the same epoch");
    assert.equal(after.offset, 20);
    assert.deepEqual(a.hub.position("room"), after);
    assert.ok(!b.events.some((e) => e.type === "epoch" || e.type === "missed"));
  },
});

Deno.test({
  name:
    "RedisStreamBus: bursts from two processes on three topics, batched — per topic one order, per sender publish order, consecutive positions, keyed duplicates inside a batch added once",
  ignore: !REDIS,
  async fn() {
    await using redis = await RedisProcess.start();
    const topics = ["t0", "t1", "t2"];
    await using a = await streamBusNode(redis.url, "t0");
    await using b = await streamBusNode(redis.url, "t0");
    const { PreparedMessage } = await import("../websocket/mod.ts");
    const subs = new Map<string, [Recorder, Recorder]>();
    for (const t of topics) {
      const pair: [Recorder, Recorder] = t === "t0"
        ? [a.sub, b.sub]
        : [new Recorder(), new Recorder()];
      if (t !== "t0") {
        await Promise.all([a.bus.subscribe(t), b.bus.subscribe(t)]);
        a.hub.subscribe(pair[0], t);
        b.hub.subscribe(pair[1], t);
      }
      subs.set(t, pair);
    }
    const positions: { epoch: string; offset: number }[] = [];
    // Synchronous bursts: hundreds queue while a batch is in flight.
    for (let i = 0; i < 600; i++) {
      for (const t of topics) {
        a.hub.publish(t, `a${i}`);
        b.hub.publish(t, `b${i}`);
      }
    }
    // The same key twice in one burst (so in one batch): one entry.
    for (let i = 0; i < 2; i++) {
      a.bus.publish("t1", new PreparedMessage("keyed"), undefined, {
        idempotencyKey: "k",
        onPosition: (p) => positions.push(p!),
      });
    }
    for (const t of topics) {
      const want = t === "t1" ? 1201 : 1200;
      const [x, y] = subs.get(t)!;
      await until(() => x.got.length >= want && y.got.length >= want, `${want} on ${t}`);
      assert.deepEqual(x.got, y.got, `one order on ${t}`);
      assert.deepEqual(x.got.filter((m) => m.startsWith("a")), names("a", 600));
      assert.deepEqual(x.got.filter((m) => m.startsWith("b")), names("b", 600));
      assert.equal(x.got.length, want, `no duplicate on ${t}`);
      assert.deepEqual(a.hub.position(t), b.hub.position(t));
      assert.equal(a.hub.position(t)!.offset, want, "consecutive positions");
    }
    assert.equal(positions.length, 2);
    assert.deepEqual(positions[0], positions[1]);
    assert.equal(subs.get("t1")![0].got.filter((m) => m === "keyed").length, 1);
  },
});

Deno.test({
  name:
    "RedisStreamBus: entries in the first format (fields e, o, s, y, p) are still read, live and by range()",
  ignore: !REDIS,
  async fn() {
    await using redis = await RedisProcess.start();
    await using a = await streamBusNode(redis.url, "old");
    const { epoch, offset } = a.hub.position("old")!;
    assert.equal(offset, 0);
    // As the first version of the publish script wrote them.
    await redis.command(["SET", "netkit:ws:{old}:seq", "1"]);
    await redis.command([
      "XADD",
      "netkit:ws:{old}:log",
      "1-0",
      "e",
      epoch,
      "o",
      "0011223344556677",
      "s",
      "1",
      "y",
      "t",
      "p",
      "from before",
    ]);
    await until(() => a.sub.got.length === 1, "the old entry, live");
    a.hub.publish("old", "new");
    await until(() => a.sub.got.length === 2, "the new one");
    assert.deepEqual(a.sub.got, ["from before", "new"]);
    const got = await a.bus.range("old", epoch, 1, 2, 10);
    assert.deepEqual(got!.map((e) => [e.offset, e.message.data]), [[1, "from before"], [
      2,
      "new",
    ]]);
  },
});

Deno.test({
  name:
    "RedisStreamBus: range() reads the log back by offset; an idempotency key publishes once across processes",
  ignore: !REDIS,
  async fn() {
    await using redis = await RedisProcess.start();
    await using a = await streamBusNode(redis.url, "room");
    await using b = await streamBusNode(redis.url, "room");
    for (const m of names("m", 20)) a.hub.publish("room", m);
    await until(() => b.sub.got.length === 20, "20 at b");
    const { epoch } = b.hub.position("room")!;
    const got = await b.bus.range("room", epoch, 5, 9, 100);
    assert.deepEqual(got!.map((e) => [e.offset, e.message.data]), [
      [5, "m4"],
      [6, "m5"],
      [7, "m6"],
      [8, "m7"],
      [9, "m8"],
    ]);
    assert.equal(await b.bus.range("room", "another", 1, 2, 10), undefined);

    const first = Promise.withResolvers<unknown>();
    const again = Promise.withResolvers<unknown>();
    const { PreparedMessage } = await import("../websocket/mod.ts");
    a.bus.publish("room", new PreparedMessage("once"), undefined, {
      idempotencyKey: "k1",
      onPosition: first.resolve,
    });
    const p1 = await first.promise;
    b.bus.publish("room", new PreparedMessage("once"), undefined, {
      idempotencyKey: "k1",
      onPosition: again.resolve,
    });
    assert.deepEqual(await again.promise, p1);
    assert.deepEqual(p1, { epoch, offset: 21 });
    a.hub.publish("room", "end");
    await until(() => b.sub.got.at(-1) === "end" && a.sub.got.at(-1) === "end", "the end");
    assert.deepEqual(b.sub.got.slice(20), ["once", "end"]);
    assert.deepEqual(a.sub.got.slice(20), ["once", "end"]);
  },
});

Deno.test({
  name:
    "RedisStreamBus on a Redis Cluster of three masters: topics on every shard, exactly once, one order, shared positions",
  ignore: !REDIS,
  async fn() {
    const { RedisCluster } = await import("./support/redis_cluster.ts");
    const { slotOf } = await import("../redis/_client.ts");
    await using cluster = await RedisCluster.start({ masters: 3 });
    // Three topics whose streams sit on three different masters.
    const topics: string[] = [];
    const owners = new Set<string>();
    for (let i = 0; topics.length < 3 && i < 1000; i++) {
      const topic = `t${i}`;
      const owner = await cluster.ownerOf(slotOf(`netkit:ws:{${topic}}:log`));
      if (owners.has(owner)) continue;
      owners.add(owner);
      topics.push(topic);
    }
    assert.equal(topics.length, 3, "topics on three shards");
    const open = async () => {
      const bus = await RedisStreamBus.connect(cluster.urls, { historySize: 1000 });
      const hub = new BroadcastHub({ bus, historySize: 1000 });
      const subs = new Map<string, Recorder>();
      for (const topic of topics) {
        await bus.subscribe(topic);
        const sub = new Recorder();
        hub.subscribe(sub, topic);
        subs.set(topic, sub);
      }
      return { bus, hub, subs, [Symbol.asyncDispose]: () => bus.close() };
    };
    await using a = await open();
    await using b = await open();
    for (let i = 0; i < 30; i++) {
      for (const topic of topics) {
        a.hub.publish(topic, `${topic}:a${i}`);
        b.hub.publish(topic, `${topic}:b${i}`);
      }
    }
    for (const topic of topics) {
      await until(
        () => a.subs.get(topic)!.got.length >= 60 && b.subs.get(topic)!.got.length >= 60,
        `60 messages on ${topic} each`,
      );
      const got = a.subs.get(topic)!.got;
      assert.deepEqual(b.subs.get(topic)!.got, got, `one order on ${topic}`);
      assert.equal(new Set(got).size, 60, `no duplicate on ${topic}`);
      assert.deepEqual(
        got.filter((m) => m.startsWith(`${topic}:a`)),
        names(`${topic}:a`, 30),
      );
      assert.deepEqual(a.hub.position(topic), b.hub.position(topic));
      assert.equal(a.hub.position(topic)!.offset, 60);
    }
  },
});
