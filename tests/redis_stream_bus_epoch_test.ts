// RedisStreamBus across a change of epoch whose new log does not start at
// offset 0 — Redis restored from an older snapshot (the log went back in
// time: a new epoch that goes on from the offsets already given), or an
// epoch key set by hand or by an earlier version over a counter past 0.
// The change is said once, as an epoch (`epoch` event, `recovered: false`
// `reason: "epoch"` to netkit.v1 clients), never also as messages missed;
// a real gap inside an epoch is still counted, with its exact count. Real
// redis-server processes; after each scenario, every bus's events and what
// each subscriber and client got.
import assert from "node:assert/strict";
import { connect, serve, type WebSocketConn } from "../websocket/mod.ts";
import { decodeServerMessage, NETKIT_V1 } from "../websocket/codec/mod.ts";
import { RedisStreamBus } from "../redis/mod.ts";
import { haveRedis, RedisProcess } from "./_redis.ts";
import { until, within } from "./support/time.ts";
import { type StreamBusNode, streamBusNode } from "./support/stream_bus_node.ts";

const REDIS = haveRedis();
const TOPIC = "room";
const KEY = `netkit:ws:{${TOPIC}}:`;

type Node = StreamBusNode;

/** What a bus said about gaps: its `epoch` and `missed` events, in order. */
function gaps(n: Node): string[] {
  return n.events.flatMap((e) =>
    e.type === "missed" ? [`missed ${e.count}`] : e.type === "epoch" ? ["epoch"] : []
  );
}

/**
 * A server on a bus of its own with one netkit.v1 client on TOPIC, whose
 * every event is recorded as text: `sub <offset> <recovered> <reason>`,
 * `<offset> <data>`.
 */
async function served(url: string) {
  const bus = await RedisStreamBus.connect(url, { reconnectDelay: 50, maxReconnectDelay: 200 });
  const server = serve({ port: 0, bus, historySize: 1000, onEvent: () => {} }, {
    open: (ws) => void ws.subscribe(TOPIC),
  });
  const ws: WebSocketConn = await connect(`ws://127.0.0.1:${server.addr.port}/`, {
    protocols: [NETKIT_V1],
  });
  const got: string[] = [];
  const epochs: string[] = [];
  const reading = (async () => {
    for (;;) {
      const msg = await ws.receive();
      if (msg === null) return;
      const e = decodeServerMessage(msg);
      if (e?.type === "subscribed") {
        got.push(`sub ${e.offset} ${e.recovered} ${e.reason}`);
        epochs.push(e.epoch);
      } else if (e?.type === "message") {
        got.push(`${e.offset} ${e.data}`);
      } else {
        got.push(`? ${JSON.stringify(e)}`);
      }
    }
  })();
  await until(() => got.length === 1, "the client subscribed");
  return {
    got,
    epochs,
    async [Symbol.asyncDispose]() {
      await ws.close();
      await within(5000, reading, "the client's reader to end");
      await server.close();
      await bus.close();
    },
  };
}

/**
 * An entry written into the log by hand (as the publish script writes them),
 * at `offset`, with the counter moved there: the offsets between the last
 * one and it are a gap inside `epoch` (as trimming before a reader got there
 * leaves one).
 */
async function addByHand(redis: RedisProcess, epoch: string, offset: number, payload: string) {
  assert.equal(await redis.command(["SET", KEY + "seq", String(offset)]), "OK");
  await redis.command([
    "XADD",
    KEY + "log",
    `${offset}-0`,
    `t ${epoch} 0011223344556677 ${offset}`,
    payload,
  ]);
}

const names = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}${i}`);
const numbered = (from: number, messages: string[]) => messages.map((m, i) => `${from + i} ${m}`);

Deno.test({
  name:
    "RedisStreamBus: Redis restored from an older snapshot — a new epoch going on from offset 15, said as an epoch only (no messages missed, netkit.v1 clients told recovered:false epoch once); a real gap in it is still counted exactly",
  ignore: !REDIS,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "netkit-snapshot-" });
    try {
      await using redis = await RedisProcess.start(["--dir", dir, "--dbfilename", "snapshot.rdb"]);
      await using a = await streamBusNode(redis.url, TOPIC);
      await using b = await streamBusNode(redis.url, TOPIC);
      await using client = await served(redis.url);
      for (const m of names("kept", 10)) a.hub.publish(TOPIC, m);
      await until(() => b.sub.got.length === 10 && client.got.length === 11, "10 everywhere");
      const old = a.hub.position(TOPIC)!.epoch;
      // The snapshot holds 10 entries; 5 more are published after it.
      assert.equal(await redis.command(["SAVE"]), "OK");
      for (const m of names("lost", 5)) a.hub.publish(TOPIC, m);
      await until(() => b.sub.got.length === 15 && client.got.length === 16, "15 everywhere");
      assert.deepEqual(
        client.got.slice(1),
        numbered(1, [...names("kept", 10), ...names("lost", 5)]),
      );

      // Restarted from the snapshot: the log is back at 10, every bus read 15.
      await redis.kill();
      await redis.restart();
      await until(
        () => [a, b].every((n) => gaps(n).includes("epoch")) && client.got.length === 17,
        "every bus, and the client, told of the new epoch",
      );
      for (const m of names("after", 5)) a.hub.publish(TOPIC, m);
      await until(
        () => [a, b].every((n) => n.sub.got.length === 20) && client.got.at(-1) === "20 after4",
        "the 5 after everywhere",
      );
      const now = a.hub.position(TOPIC)!;
      assert.notEqual(now.epoch, old, "a new epoch");
      assert.equal(now.offset, 20, "its offsets go on after the 15 given in the old one");
      assert.deepEqual(b.hub.position(TOPIC), now);
      for (const n of [a, b]) {
        assert.deepEqual(n.sub.got.slice(15), names("after", 5));
        // The epoch, alone: the offsets 1–15 were the old epoch's, not missed.
        assert.deepEqual(gaps(n), ["epoch"]);
        assert.equal(n.bus.stats().missed, 0);
      }
      // The client: told once (the epoch, at the offset the new log starts
      // after), then the messages, consecutive.
      assert.deepEqual(client.got.slice(16), [
        "sub 15 false epoch",
        ...numbered(16, names("after", 5)),
      ]);
      assert.deepEqual(client.epochs, [old, now.epoch]);

      // A real gap inside the new epoch: 21–23 never read — counted, 3.
      await addByHand(redis, now.epoch, 24, "past a gap");
      await until(
        () => [a, b].every((n) => n.sub.got.length === 21) && client.got.at(-1) === "24 past a gap",
        "the entry past the gap everywhere",
      );
      for (const n of [a, b]) {
        assert.deepEqual(gaps(n), ["epoch", "missed 3"]);
        assert.equal(n.bus.stats().missed, 3);
        assert.equal(n.sub.got.at(-1), "past a gap");
      }
      assert.deepEqual(client.got.slice(22), ["sub 23 false trimmed", "24 past a gap"]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "RedisStreamBus: the log went back in time (counter lowered, every bus reconnects) — the new epoch starts after 15; entries trimmed from its start before a bus read them are counted, exactly",
  ignore: !REDIS,
  async fn() {
    await using redis = await RedisProcess.start();
    await using a = await streamBusNode(redis.url, TOPIC);
    await using b = await streamBusNode(redis.url, TOPIC);
    for (const m of names("m", 15)) a.hub.publish(TOPIC, m);
    await until(() => b.sub.got.length === 15, "15 at b");
    // As a failover to a replica that had 10 of them: the counter at 10.
    assert.equal(await redis.command(["SET", KEY + "seq", "10"]), "OK");
    await redis.command(["CLIENT", "KILL", "TYPE", "normal"]);
    await until(() => [a, b].every((n) => gaps(n).includes("epoch")), "both told of a new epoch");
    const { epoch } = a.bus.position(TOPIC)!;
    assert.deepEqual(a.bus.position(TOPIC), { epoch, offset: 15 });
    assert.deepEqual(b.bus.position(TOPIC), { epoch, offset: 15 });
    // The new epoch's first two entries gone before anyone read them.
    await addByHand(redis, epoch, 18, "third");
    await until(() => [a, b].every((n) => n.sub.got.length === 16), "the third everywhere");
    for (const n of [a, b]) {
      assert.deepEqual(gaps(n), ["epoch", "missed 2"]);
      assert.equal(n.bus.stats().missed, 2);
      assert.equal(n.hub.position(TOPIC)!.offset, 18);
    }
  },
});

Deno.test({
  name:
    "RedisStreamBus: an epoch set by hand (or by an earlier version) over a counter at 40 — said as an epoch only; gaps after its first entry still counted",
  ignore: !REDIS,
  async fn() {
    await using redis = await RedisProcess.start();
    await using a = await streamBusNode(redis.url, TOPIC);
    await using b = await streamBusNode(redis.url, TOPIC);
    for (const m of names("m", 5)) a.hub.publish(TOPIC, m);
    await until(() => b.sub.got.length === 5, "5 at b");
    // Where that epoch's log starts is not recorded anywhere.
    assert.equal(await redis.command(["SET", KEY + "epoch", "byhand00000"]), "OK");
    assert.equal(await redis.command(["SET", KEY + "seq", "40"]), "OK");
    a.hub.publish(TOPIC, "first");
    await until(
      () => [a, b].every((n) => n.sub.got.at(-1) === "first"),
      "the first of the new epoch everywhere",
    );
    for (const n of [a, b]) {
      assert.equal(n.hub.position(TOPIC)!.epoch, "byhand00000");
      assert.deepEqual(gaps(n), ["epoch"]);
      assert.equal(n.bus.stats().missed, 0);
    }
    await addByHand(redis, "byhand00000", 45, "past a gap");
    await until(() => [a, b].every((n) => n.sub.got.at(-1) === "past a gap"), "past the gap");
    for (const n of [a, b]) {
      assert.deepEqual(gaps(n), ["epoch", "missed 3"]);
      assert.equal(n.bus.stats().missed, 3);
      assert.deepEqual(n.sub.got, [...names("m", 5), "first", "past a gap"]);
    }
  },
});
