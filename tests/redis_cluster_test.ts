// RedisClient against a real Redis Cluster (3 masters, 1 replica each,
// started here from redis-server --cluster-enabled yes): routing by slot,
// MOVED after a slot changed owner, ASK during a migration, and a master
// killed while its replica takes over.
import assert from "node:assert/strict";
import { RedisClient, type RedisClientEvent, slotOf } from "../redis/_client.ts";
import { replyText } from "../redis/_resp.ts";
import { type ClusterNode, RedisCluster } from "./support/redis_cluster.ts";
import { haveRedisServer } from "./support/redis_server.ts";
import { within } from "./support/time.ts";
import { idempotent } from "./support/redis_server.ts";

const decoder = new TextDecoder();
const text = (v: unknown) => decoder.decode(v as Uint8Array);

/** A key (with `prefix`) whose slot master `i` of `n` owns, as RedisCluster splits them. */
function keyOn(i: number, prefix: string, n = 3): string {
  const start = Math.floor((16384 * i) / n);
  const end = Math.floor((16384 * (i + 1)) / n) - 1;
  for (let j = 0;; j++) {
    const slot = slotOf(`${prefix}${j}`);
    if (slot >= start && slot <= end) return `${prefix}${j}`;
  }
}

Deno.test({
  name: "Redis Cluster: routing, MOVED, ASK and a master's failover",
  ignore: !haveRedisServer(),
  async fn(t) {
    await using cluster = await RedisCluster.start({ masters: 3, replicas: 1 });
    const events: RedisClientEvent[] = [];
    await using client = await RedisClient.connect(cluster.urls, {
      timeout: 10_000,
      onEvent: (e) => events.push(e),
    });
    const [m0, m1, m2] = cluster.masters;
    const command = (node: ClusterNode, args: string[]) => node.server.command(args);
    /** Starts moving `slot` from `from` to `to`: IMPORTING on `to`, then MIGRATING on `from`. */
    const beginMigration = async (slot: string, from: ClusterNode, to: ClusterNode) => {
      await command(to, ["CLUSTER", "SETSLOT", slot, "IMPORTING", from.id]);
      await command(from, ["CLUSTER", "SETSLOT", slot, "MIGRATING", to.id]);
    };
    /** MIGRATEs `key` from `from` to `to` (database 0, 5 s timeout): the reply. */
    const migrate = (from: ClusterNode, to: ClusterNode, key: string) =>
      command(from, ["MIGRATE", "127.0.0.1", String(to.server.port), "", "0", "5000", "KEYS", key]);
    /** Ends a migration: `slot` is `owner`'s, told to `nodes` in that order. */
    const assignSlot = async (slot: string, owner: ClusterNode, nodes: ClusterNode[]) => {
      for (const node of nodes) {
        assert.equal(await command(node, ["CLUSTER", "SETSLOT", slot, "NODE", owner.id]), "OK");
      }
    };

    await t.step("cluster mode is detected, with the three masters", () => {
      assert.equal(client.cluster, true);
      assert.deepEqual(client.nodes.sort(), cluster.masters.map((m) => m.address).sort());
    });

    await t.step("slotOf agrees with CLUSTER KEYSLOT", async () => {
      for (const key of ["a", "{tag}x", "x{tag}", "{}y", "héllo", "{a}{b}", "a{b"]) {
        assert.equal(await command(m0, ["CLUSTER", "KEYSLOT", key]), slotOf(key), key);
      }
    });

    await t.step("keys of all three shards go to the master that owns them", async () => {
      for (let i = 0; i < 3; i++) {
        const key = keyOn(i, "route");
        assert.equal(await client.call(key, ["SET", key, `v${i}`]), "OK");
        assert.equal(text(await client.call(key, ["GET", key])), `v${i}`);
        // Really there: the owner answers without a redirect.
        assert.equal(text(await command(cluster.masters[i], ["GET", key])), `v${i}`);
      }
      // Pipelined across shards, each reply to its own call.
      const keys = Array.from({ length: 300 }, (_, j) => `many${j}`);
      await Promise.all(keys.map((k) => client.call(k, ["SET", k, k])));
      const values = await Promise.all(keys.map((k) => client.call(k, ["GET", k])));
      assert.deepEqual(values.map(text), keys);
      assert.equal(events.filter((e) => e.type === "moved").length, 0);
    });

    await t.step(
      "MOVED: a slot given to another master is followed, and the map updated",
      async () => {
        const key = keyOn(1, "moved");
        const slot = String(slotOf(key));
        await client.call(key, ["SET", key, "here"]);
        await beginMigration(slot, m1, m2);
        assert.equal(await migrate(m1, m2, key), "OK");
        await assignSlot(slot, m2, [m2, m1, m0]);
        const before = events.length;
        assert.equal(text(await client.call(key, ["GET", key])), "here");
        const moved = events.slice(before).filter((e) => e.type === "moved");
        assert.deepEqual(moved.map((e) => e.node), [m2.address]);
        // The map knows now: no second redirect.
        assert.equal(text(await client.call(key, ["GET", key])), "here");
        assert.equal(events.slice(before).filter((e) => e.type === "moved").length, 1);
      },
    );

    await t.step(
      "ASK: during a migration, a key already moved is asked of the importing node",
      async () => {
        const tag = keyOn(0, "ask");
        const [gone, stays] = [`{${tag}}gone`, `{${tag}}stays`];
        const slot = String(slotOf(gone));
        assert.equal(slotOf(stays), slotOf(gone));
        await client.call(gone, ["SET", gone, "moved-over"]);
        await client.call(stays, ["SET", stays, "still-here"]);
        await beginMigration(slot, m0, m1);
        assert.equal(await migrate(m0, m1, gone), "OK");
        // Without ASKING, the importing node redirects back: proof the key is only there.
        assert.match(replyText(await command(m1, ["GET", gone])), /^MOVED /);
        const before = events.length;
        assert.equal(text(await client.call(gone, ["GET", gone])), "moved-over");
        assert.equal(text(await client.call(stays, ["GET", stays])), "still-here");
        // A new key of the slot is created on the importing node.
        assert.equal(await client.call(`{${tag}}new`, ["SET", `{${tag}}new`, "1"]), "OK");
        // ASK does not change the map.
        assert.equal(events.slice(before).filter((e) => e.type === "moved").length, 0);
        // Finish the migration (the remaining keys, then the slot).
        await migrate(m0, m1, stays);
        await assignSlot(slot, m1, [m1, m0, m2]);
        assert.equal(text(await client.call(stays, ["GET", stays])), "still-here");
        assert.equal(text(await client.call(`{${tag}}new`, ["GET", `{${tag}}new`])), "1");
      },
    );

    await t.step("dedicated: XREAD BLOCK on the node that owns the stream", async () => {
      const stream = keyOn(2, "stream");
      await using reader = await client.dedicated(stream);
      assert.equal(reader.node, m2.address);
      const read = reader.call(["XREAD", "BLOCK", "5000", "STREAMS", stream, "0-0"]);
      await client.call(stream, ["XADD", stream, "*", "m", "hi"]);
      const reply = await within(5000, read, "XREAD") as [
        [Uint8Array, [Uint8Array, Uint8Array[]][]],
      ];
      assert.equal(text(reply[0][1][0][1][1]), "hi");
    });

    await t.step("eval with keys of one slot (hash tag) runs on their master", async () => {
      const tag = keyOn(2, "lua");
      const keys = [`{${tag}}a`, `{${tag}}b`];
      const script = "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('INCR', KEYS[2])";
      assert.equal(await client.eval(script, keys, ["x"]), 1);
      assert.equal(text(await command(m2, ["GET", keys[0]])), "x");
    });

    await t.step("a master killed: its replica takes over and calls succeed again", async () => {
      const key = keyOn(2, "failover");
      await client.call(key, ["SET", key, "kept"]);
      // Replicated before the kill.
      assert.equal(await client.call(key, ["WAIT", "1", "5000"]), 1);
      const before = events.length;
      await cluster.killMaster(2);
      assert.equal(
        text(await within(15_000, idempotent(() => client.call(key, ["GET", key])), "GET")),
        "kept",
      );
      assert.equal(await client.call(key, ["SET", key, "after"]), "OK");
      const owner = await cluster.ownerOf(slotOf(key));
      assert.equal(owner, cluster.replicas[2].address);
      const after = events.slice(before);
      assert.ok(
        after.some((e) => e.type === "lost" && e.node === m2.address),
        JSON.stringify(after),
      );
      assert.ok(after.some((e) => e.type === "topology"));
      // The other shards never noticed.
      assert.equal(text(await client.call(keyOn(0, "route"), ["GET", keyOn(0, "route")])), "v0");
    });

    await t.step(
      "a master killed with no help: the cluster fails over by itself (node timeout)",
      async () => {
        const key = keyOn(0, "natural");
        await client.call(key, ["SET", key, "kept"]);
        assert.equal(await client.call(key, ["WAIT", "1", "5000"]), 1);
        await cluster.killMaster(0, { promote: false });
        // The client waits out the failover (its timeout is 10 s), retrying against the map.
        assert.equal(
          text(await within(15_000, idempotent(() => client.call(key, ["GET", key])), "GET")),
          "kept",
        );
        assert.equal(await cluster.ownerOf(slotOf(key)), cluster.replicas[0].address);
      },
    );
  },
});
