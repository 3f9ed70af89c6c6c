// ws-server --redis as a user runs it: broadcasts travel through a Redis
// Stream per topic, so a message has one position on every server and a
// netkit.v1 client (ReconnectingWebSocket with resume) recovers against any
// of them. Real redis-server and ws-server processes; after each scenario,
// the exact sequence of messages each client got.
import assert from "node:assert/strict";
import { connect, ReconnectingWebSocket, type WebSocketConn } from "../websocket/mod.ts";
import { alive, childPids, haveRedis, RedisProcess, WsServerProcess } from "./_redis.ts";
import { delay, until, within } from "./support/time.ts";

const REDIS = haveRedis();
const TOPIC = "broadcast"; // ws-server's one topic

type Recovered = { topic: string; recovered: boolean; reason?: string };

/** How long a network wait may take before the test fails saying what it waited for. */
const WAIT = 15_000;

/** A resuming netkit.v1 client, recording what it is told about recovery; dispose closes it. */
function resumer(port: number, resume: true | Record<string, { epoch: string; offset: number }>) {
  const recovered: Recovered[] = [];
  const rws = new ReconnectingWebSocket(`ws://127.0.0.1:${port}/`, {
    resume,
    reconnect: { minDelay: 20, maxDelay: 100, onRecovered: (e) => recovered.push(e) },
  });
  return { rws, recovered, [Symbol.asyncDispose]: () => rws.close() };
}

async function receiveN(rws: ReconnectingWebSocket, n: number, who: string): Promise<string[]> {
  const out: string[] = [];
  while (out.length < n) {
    out.push(
      String(await within(WAIT, rws.receive(), `${who}: message ${out.length + 1} of ${n}`)),
    );
  }
  return out;
}

async function receivePlain(ws: WebSocketConn, n: number): Promise<string[]> {
  const out: string[] = [];
  while (out.length < n) {
    out.push(String(await within(WAIT, ws.receive(), "a plain client's message")));
  }
  return out;
}

/**
 * A resuming client on `port` that gets `messages` (sent by `sender`) and
 * leaves: the positions it would resume from.
 */
async function positionsAfter(
  port: number,
  sender: WebSocketConn,
  messages: string[],
): Promise<Record<string, { epoch: string; offset: number }>> {
  await using a = resumer(port, true);
  await until(() => a.rws.positions[TOPIC] !== undefined, "subscribed");
  for (const m of messages) await sender.send(m);
  assert.deepEqual(await receiveN(a.rws, messages.length, "a"), messages);
  return a.rws.positions;
}

const names = (prefix: string, from: number, to: number) =>
  Array.from({ length: to - from + 1 }, (_, i) => `${prefix}${from + i}`);

Deno.test({
  name:
    "ws-server --redis: netkit.v1 clients on two servers get every message once, in one order, at one position; a server killed, its client resumes on the other with nothing lost",
  ignore: !REDIS,
  async fn() {
    await using redis = await RedisProcess.start();
    const s1 = await WsServerProcess.start(["--port", "0", "--quiet", "--redis", redis.url]);
    await using s2 = await WsServerProcess.start(["--port", "0", "--quiet", "--redis", redis.url]);
    await using a = resumer(s1.port, true);
    await using b = resumer(s2.port, true);
    await using p1 = await connect(`ws://127.0.0.1:${s1.port}/`);
    await using p2 = await connect(`ws://127.0.0.1:${s2.port}/`);
    try {
      await until(
        () => a.rws.positions[TOPIC] !== undefined && b.rws.positions[TOPIC] !== undefined,
        "both subscribed",
      );
      assert.deepEqual(a.rws.positions, b.rws.positions, "one log: the same position");
      for (let i = 1; i <= 10; i++) {
        await p1.send(`x${i}`);
        await p2.send(`y${i}`);
      }
      const gotA = await receiveN(a.rws, 20, "a");
      const gotB = await receiveN(b.rws, 20, "b");
      assert.deepEqual(gotA, gotB, "one order on both servers");
      assert.deepEqual(gotA.filter((m) => m[0] === "x"), names("x", 1, 10));
      assert.deepEqual(gotA.filter((m) => m[0] === "y"), names("y", 1, 10));
      assert.deepEqual(a.rws.positions, b.rws.positions);
      // Plain clients see the same stream, without envelopes.
      assert.deepEqual(await receivePlain(p1, 20), gotA);

      // s1 is killed outright; its client comes back on s2 from where it was.
      const saved = a.rws.positions;
      await s1.stop("SIGKILL");
      await a.rws.close();
      for (let i = 11; i <= 15; i++) await p2.send(`y${i}`);
      await using moved = resumer(s2.port, saved);
      assert.deepEqual(await receiveN(moved.rws, 5, "moved"), names("y", 11, 15));
      assert.deepEqual(moved.recovered, [{ topic: TOPIC, recovered: true }]);
      assert.deepEqual(moved.rws.positions[TOPIC].offset, saved[TOPIC].offset + 5);
      assert.deepEqual(await receiveN(b.rws, 5, "b"), names("y", 11, 15));
    } finally {
      await s1.stop("SIGKILL").catch(() => {});
    }
  },
});

Deno.test({
  name:
    "ws-server --redis: a client resumes from further back than a server's own history holds — read back from the stream",
  ignore: !REDIS,
  async fn() {
    await using redis = await RedisProcess.start();
    await using s1 = await WsServerProcess.start(["--port", "0", "--quiet", "--redis", redis.url]);
    await using p1 = await connect(`ws://127.0.0.1:${s1.port}/`);
    const saved = await positionsAfter(s1.port, p1, names("m", 1, 3));
    for (let i = 4; i <= 10; i++) await p1.send(`m${i}`);
    assert.deepEqual(await receivePlain(p1, 10), names("m", 1, 10));
    // A server started now keeps only what comes from now on in memory.
    await using s2 = await WsServerProcess.start(["--port", "0", "--quiet", "--redis", redis.url]);
    await using late = resumer(s2.port, saved);
    assert.deepEqual(await receiveN(late.rws, 7, "late"), names("m", 4, 10));
    assert.deepEqual(late.recovered, [{ topic: TOPIC, recovered: true }]);
    await p1.send("live");
    assert.equal(await within(WAIT, late.rws.receive(), "live"), "live");
  },
});

Deno.test({
  name:
    "ws-server --redis: Redis restarted without persistence — netkit.v1 clients are told recovered:false (epoch), never a silent gap; what was published meanwhile arrives once",
  ignore: !REDIS,
  async fn() {
    await using redis = await RedisProcess.start();
    await using s1 = await WsServerProcess.start(["--port", "0", "--redis", redis.url]);
    await using s2 = await WsServerProcess.start(["--port", "0", "--quiet", "--redis", redis.url]);
    await using p2 = await connect(`ws://127.0.0.1:${s2.port}/`);
    await using a = resumer(s1.port, true);
    await until(() => a.rws.positions[TOPIC] !== undefined, "subscribed");
    await p2.send("before");
    assert.equal(await within(WAIT, a.rws.receive(), "before"), "before");
    const epoch = a.rws.positions[TOPIC].epoch;
    await redis.kill();
    await within(WAIT, s1.waitFor(/redis: lost/), "s1 lost");
    await p2.send("during");
    assert.deepEqual(await receivePlain(p2, 2), ["before", "during"]);
    await redis.restart();
    await within(WAIT, s1.waitFor(/redis: the log of "broadcast" was lost/), "s1: new epoch");
    assert.equal(await within(WAIT, a.rws.receive(), "during"), "during");
    assert.deepEqual(a.recovered, [{ topic: TOPIC, recovered: false, reason: "epoch" }]);
    assert.notEqual(a.rws.positions[TOPIC].epoch, epoch);
    await p2.send("after");
    assert.equal(await within(WAIT, a.rws.receive(), "after"), "after");
    assert.deepEqual(await receivePlain(p2, 1), ["after"]);
  },
});

Deno.test({
  name:
    "ws-server --redis --history 5: a client away while more than the stream keeps was published is told recovered:false (trimmed), then goes on live",
  ignore: !REDIS,
  async fn() {
    await using redis = await RedisProcess.start();
    const args = ["--port", "0", "--quiet", "--redis", redis.url, "--history", "5"];
    await using s1 = await WsServerProcess.start(args);
    await using p1 = await connect(`ws://127.0.0.1:${s1.port}/`);
    const saved = await positionsAfter(s1.port, p1, ["m1"]);
    // The stream keeps at least 1000 (a reader catches up from it): more than that.
    const receiving = receivePlain(p1, 1200);
    for (let i = 2; i <= 1200; i++) await p1.send(`m${i}`);
    assert.deepEqual(await receiving, names("m", 1, 1200));
    await using back = resumer(s1.port, saved);
    await until(() => back.recovered.length > 0, "the resume answer");
    assert.deepEqual(back.recovered, [{ topic: TOPIC, recovered: false, reason: "trimmed" }]);
    await p1.send("m1201");
    assert.equal(await within(WAIT, back.rws.receive(), "m1201"), "m1201");
  },
});

Deno.test({
  name:
    "ws-server --redis rediss://… --redis-ca: two servers share broadcasts over TLS; a CA that did not sign Redis's certificate exits 1 before listening",
  ignore: !REDIS,
  async fn() {
    const { tempDevCerts } = await import("./support/certs.ts");
    const { RedisServer } = await import("./support/redis_server.ts");
    await using certs = await tempDevCerts({ hosts: ["localhost", "127.0.0.1"] });
    await using redis = await RedisServer.start({
      tls: true,
      args: [
        "--tls-cert-file",
        certs.files.cert,
        "--tls-key-file",
        certs.files.key,
        "--tls-ca-cert-file",
        certs.files.ca,
        "--tls-auth-clients",
        "no",
      ],
    });
    const url = `rediss://localhost:${redis.port}`;
    const args = ["--port", "0", "--quiet", "--redis", url, "--redis-ca", certs.files.ca];
    await using s1 = await WsServerProcess.start(args);
    await using s2 = await WsServerProcess.start(args);
    await using p1 = await connect(`ws://127.0.0.1:${s1.port}/`);
    await using p2 = await connect(`ws://127.0.0.1:${s2.port}/`);
    await p1.send("over TLS");
    assert.deepEqual(await receivePlain(p2, 1), ["over TLS"]);
    assert.deepEqual(await receivePlain(p1, 1), ["over TLS"]);

    // Another development CA does not vouch for this Redis.
    await using other = await tempDevCerts({ hosts: ["localhost"] });
    const refused = await WsServerProcess.start([
      ...args.slice(0, -1),
      other.files.ca,
    ]).then(
      (p) => (p.stop("SIGKILL"), undefined),
      (err: { code?: number; stderr?: string }) => err,
    );
    assert.ok(refused !== undefined, "the server must not start");
    assert.equal(refused.code, 1);
    assert.match(refused.stderr ?? "", /certificate/);
    assert.doesNotMatch(refused.stderr ?? "", /listening on/);
  },
});

Deno.test({
  name:
    "ws-server --workers 2 --redis: a worker killed, its netkit.v1 clients reconnect to the same URL and recover every message once, in order",
  ignore: !REDIS || childPids(Deno.pid) === undefined,
  async fn() {
    await using redis = await RedisProcess.start();
    await using server = await WsServerProcess.start([
      "--port",
      "0",
      "--quiet",
      "--workers",
      "2",
      "--redis",
      redis.url,
    ]);
    const url = `ws://127.0.0.1:${server.port}/`;
    const clients = Array.from({ length: 6 }, () => ({
      ...resumer(server.port, true),
      got: [] as string[],
    }));
    const pump = (c: (typeof clients)[number]) =>
      (async () => {
        for (;;) {
          const m = await c.rws.receive().catch(() => null);
          if (m === null) return;
          c.got.push(String(m));
        }
      })();
    const pumps = clients.map(pump);
    try {
      await until(
        () => clients.every((c) => c.rws.positions[TOPIC] !== undefined),
        "all subscribed",
      );
      // Phase 1, one publisher.
      {
        await using p = await connect(url);
        for (let i = 1; i <= 10; i++) await p.send(`m${i}`);
        await until(() => clients.every((c) => c.got.length >= 10), "phase 1 everywhere");
      }
      const workers = childPids(server.pid) ?? [];
      assert.equal(workers.length, 2, "two workers");
      Deno.kill(workers[0], "SIGKILL");
      await until(() => !alive(workers[0]), "the worker gone");
      // Phase 2: each message on a fresh connection (which the kernel gives
      // to a live worker), seen by a witness before the next: one order.
      // A connection the kernel still hands to the dead worker's socket is
      // reset before its upgrade (nothing sent yet): try again.
      const connectLive = async () => {
        for (let attempt = 1;; attempt++) {
          try {
            return await connect(url);
          } catch (err) {
            if (attempt >= 10) throw err;
            await delay(50);
          }
        }
      };
      await using witness = await connectLive();
      for (let i = 11; i <= 20; i++) {
        const q = await connectLive();
        await q.send(`m${i}`);
        await q.close();
        for (;;) {
          const m = String(await within(WAIT, witness.receive(), `the witness: m${i}`));
          if (m === `m${i}`) break;
        }
      }
      await until(() => clients.every((c) => c.got.length >= 20), "phase 2 everywhere", 20_000);
      await delay(200); // nothing more (no duplicate) arrives
      for (const c of clients) {
        assert.deepEqual(c.got, names("m", 1, 20));
        assert.ok(c.recovered.every((r) => r.recovered), JSON.stringify(c.recovered));
      }
      assert.ok(
        clients.some((c) => c.recovered.length > 0),
        "some client was on the killed worker and resumed",
      );
    } finally {
      await Promise.all(clients.map((c) => c.rws.close()));
      await Promise.all(pumps);
    }
  },
});
