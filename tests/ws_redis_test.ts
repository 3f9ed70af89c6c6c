// The broadcast bus: the in-process bus, the Redis bus against a real
// redis-server (started by each test on a free port), and ws-server
// processes sharing one Redis — two, three, and --workers on one port.
import assert from "node:assert/strict";
import type { NetkitError } from "../mod.ts";
import {
  BroadcastHub,
  connect,
  InProcessBus,
  type PreparedMessage,
  type Subscriber,
  type WebSocketConn,
} from "../websocket/mod.ts";
import { RedisBus, type RedisBusEvent } from "../redis/mod.ts";
import { runProgram } from "./_helpers.ts";
import { alive, childPids, freePort, haveRedis, RedisProcess, WsServerProcess } from "./_redis.ts";
import { until } from "./support/time.ts";

const SERVER = "cli/ws_server.ts";
const REDIS = haveRedis();
const decoder = new TextDecoder();
const encoder = new TextEncoder();

/** A subscriber that records what it is sent, as text with its type. */
class Recorder implements Subscriber {
  got: string[] = [];
  constructor(readonly name = "") {}
  sendPrepared(m: PreparedMessage): "sent" {
    const text = typeof m.data === "string" ? m.data : decoder.decode(m.data);
    this.got.push(`${m.binary ? "bin" : "txt"}:${text}`);
    return "sent";
  }
}

/** Receives exactly `n` messages, as "txt:…"/"bin:…". */
async function receiveN(ws: WebSocketConn, n: number): Promise<string[]> {
  const out: string[] = [];
  while (out.length < n) {
    const msg = await ws.receive();
    if (msg === null) throw new Error(`closed after ${out.length} of ${n} messages`);
    out.push(typeof msg === "string" ? `txt:${msg}` : `bin:${decoder.decode(msg)}`);
  }
  return out;
}

/** Checks one client's view: every message of every sender once, in each sender's order, type kept. */
function checkExactlyOnce(got: string[], senders: string[], perSender: number, who: string): void {
  assert.equal(got.length, senders.length * perSender, `${who}: message count`);
  const next = new Map(senders.map((s) => [s, 0]));
  for (const entry of got) {
    const [type, body] = [entry.slice(0, 3), entry.slice(4)];
    const [sender, index] = body.split("#");
    const i = Number(index);
    assert.equal(next.get(sender), i, `${who}: ${sender}'s message ${i} out of order or twice`);
    assert.equal(type, i % 2 === 0 ? "txt" : "bin", `${who}: type of ${body}`);
    next.set(sender, i + 1);
  }
}

/** Sends `count` messages from `ws` as `sender`: even ones text, odd ones binary. */
async function sendSeries(ws: WebSocketConn, sender: string, count: number): Promise<void> {
  for (let i = 0; i < count; i++) {
    const body = `${sender}#${i}`;
    await ws.send(i % 2 === 0 ? body : encoder.encode(body));
  }
}

Deno.test("InProcessBus: hubs on one bus share publishes, each subscriber once, never back through the bus", async () => {
  const bus = new InProcessBus();
  const a = new BroadcastHub({ bus });
  const b = new BroadcastHub({ bus });
  const lonely = new BroadcastHub();
  const [a1, a2, b1, l1] = [new Recorder(), new Recorder(), new Recorder(), new Recorder()];
  a.subscribe(a1, "t");
  a.subscribe(a2, "t");
  b.subscribe(b1, "t");
  lonely.subscribe(l1, "t");
  assert.deepEqual(bus.topics, ["t"]);
  assert.deepEqual(a.publish("t", "one", { except: a2 }), { delivered: 1, dropped: 0 });
  b.publish("t", new Uint8Array([0x32]));
  assert.deepEqual(a1.got, ["txt:one", "bin:2"]);
  assert.deepEqual(a2.got, ["bin:2"]);
  assert.deepEqual(b1.got, ["txt:one", "bin:2"]);
  assert.deepEqual(l1.got, []);
  // A hub with no local subscriber still hands its publishes to the bus.
  const c = new BroadcastHub({ bus });
  c.publish("t", "from c");
  assert.equal(b1.got.at(-1), "txt:from c");
  // Interest is counted per hub: the topic stays until the last hub leaves it.
  a.unsubscribe(a1, "t");
  a.unsubscribeAll(a2);
  assert.deepEqual(bus.topics, ["t"]);
  b.detach();
  assert.deepEqual(bus.topics, []);
  c.publish("t", "after detach");
  assert.equal(b1.got.at(-1), "txt:from c");
  // b goes on locally.
  b.publish("t", "local");
  assert.equal(b1.got.at(-1), "txt:local");
  await bus.close();
  await assert.rejects(bus.subscribe("x"), /closed/);
});

Deno.test({
  name:
    "RedisBus: two buses — exactly once, no echo, order and type kept, one upstream subscription per topic",
  ignore: !REDIS,
  async fn() {
    await using redis = await RedisProcess.start();
    await using busA = await RedisBus.connect(redis.url);
    await using busB = await RedisBus.connect(redis.url);
    const hubA = new BroadcastHub({ bus: busA });
    const hubB = new BroadcastHub({ bus: busB });
    const onA = Array.from({ length: 50 }, () => new Recorder());
    const onB = Array.from({ length: 3 }, () => new Recorder());
    for (const r of onA) hubA.subscribe(r, "room");
    for (const r of onB) hubB.subscribe(r, "room");
    await Promise.all([busA.subscribe("room"), busB.subscribe("room")]);
    // 53 subscribers, two processes' worth of buses: two upstream subscriptions.
    assert.equal(await redis.subscribers("netkit:ws:room"), 2);
    const N = 200;
    for (let i = 0; i < N; i++) {
      const body = (s: string) => `${s}#${i}`;
      hubA.publish("room", i % 2 === 0 ? body("A") : encoder.encode(body("A")));
      hubB.publish("room", i % 2 === 0 ? body("B") : encoder.encode(body("B")));
    }
    await until(
      () => [...onA, ...onB].every((r) => r.got.length >= 2 * N),
      "every subscriber to get every message",
    );
    // A last marker through both: nothing more (no echo, no duplicate) was on its way.
    hubA.publish("room", "end");
    await until(() => onB[0].got.at(-1) === "txt:end", "the end marker");
    for (const [i, r] of [...onA, ...onB].entries()) {
      assert.equal(r.got.pop(), "txt:end");
      checkExactlyOnce(r.got, ["A", "B"], N, `subscriber ${i}`);
    }
    assert.equal(busA.stats.published, N + 1);
    assert.equal(busB.stats.received, N + 1);
    assert.equal(busA.stats.received, N);
    assert.equal(busA.stats.dropped + busA.stats.missed + busA.stats.malformed, 0);
    // The last local subscriber gone, and our own subscribe withdrawn: the
    // upstream subscription ends.
    for (const r of onB) hubB.unsubscribe(r, "room");
    assert.deepEqual(busB.topics, ["room"]);
    busB.unsubscribe("room");
    assert.deepEqual(busB.topics, []);
    await until(
      async () => await redis.subscribers("netkit:ws:room") === 1,
      "one upstream subscription left",
    );
    hubA.detach();
    hubB.detach();
  },
});

Deno.test({
  name:
    "RedisBus: foreign, malformed and oversized messages are skipped and counted; gaps are reported",
  ignore: !REDIS,
  async fn() {
    await using redis = await RedisProcess.start();
    const events: RedisBusEvent[] = [];
    await using bus = await RedisBus.connect(redis.url, {
      maxPayload: 100,
      onEvent: (e) => events.push(e),
    });
    const hub = new BroadcastHub({ bus });
    const r = new Recorder();
    hub.subscribe(r, "t");
    await bus.subscribe("t");
    const envelope = (seq: number, text: string) => {
      const payload = encoder.encode(text);
      const out = new Uint8Array(15 + payload.length);
      out.set([0x6e, 1, 9, 9, 9, 9, 9, 9, 9, 9]);
      new DataView(out.buffer).setUint32(10, seq);
      out[14] = 1;
      out.set(payload, 15);
      return out;
    };
    await redis.command(["PUBLISH", "netkit:ws:t", "not an envelope"]);
    await redis.command(["PUBLISH", "netkit:ws:t", envelope(1, "x".repeat(101))]);
    const badUtf8 = envelope(2, "");
    await redis.command(["PUBLISH", "netkit:ws:t", new Uint8Array([...badUtf8, 0xff])]);
    await redis.command(["PUBLISH", "netkit:ws:t", envelope(3, "first")]);
    await redis.command(["PUBLISH", "netkit:ws:t", envelope(7, "after a gap")]);
    await until(() => r.got.length === 2, "two good messages");
    assert.deepEqual(r.got, ["txt:first", "txt:after a gap"]);
    assert.equal(bus.stats.malformed, 3);
    assert.equal(bus.stats.missed, 3);
    assert.ok(events.some((e) => e.type === "missed" && e.count === 3));
    // A publish over maxPayload is not relayed (local subscribers still get it).
    hub.publish("t", "y".repeat(101));
    assert.equal(r.got.length, 3);
    assert.equal(bus.stats.dropped, 1);
    hub.detach();
  },
});

Deno.test({
  name:
    "RedisBus: a dropped connection comes back resubscribed; subscribe() while down resolves once back",
  ignore: !REDIS,
  async fn() {
    await using redis = await RedisProcess.start();
    const events: RedisBusEvent[] = [];
    await using bus = await RedisBus.connect(redis.url, { onEvent: (e) => events.push(e) });
    await using other = await RedisBus.connect(redis.url);
    const hub = new BroadcastHub({ bus });
    const r = new Recorder();
    hub.subscribe(r, "a");
    await bus.subscribe("a");
    // Redis drops the subscriber connections (Redis itself stays up).
    await redis.command(["CLIENT", "KILL", "TYPE", "pubsub"]);
    await until(() => events.some((e) => e.type === "back"), "the bus to come back");
    assert.ok(bus.connected);
    assert.equal(events[0].type, "lost");
    await until(() => other.connected, "the other bus (not subscribed: not dropped)");
    const otherHub = new BroadcastHub({ bus: other });
    otherHub.publish("a", "after the drop");
    await until(() => r.got.length === 1, "the message after the drop");
    assert.deepEqual(r.got, ["txt:after the drop"]);
    // Down: a new topic waits for the connection to come back.
    await redis.kill();
    await until(() => !bus.connected, "the bus to see Redis gone");
    let subscribed = false;
    const waiting = bus.subscribe("b").then(() => void (subscribed = true));
    hub.publish("a", "while down");
    assert.equal(r.got.at(-1), "txt:while down");
    assert.equal(subscribed, false);
    await redis.restart();
    await waiting;
    assert.equal(await redis.subscribers("netkit:ws:a"), 1);
    assert.equal(await redis.subscribers("netkit:ws:b"), 1);
    const back = events.findLast((e) => e.type === "back");
    assert.ok(back?.type === "back" && back.dropped === 1, JSON.stringify(back));
    assert.equal(bus.stats.outages, 2);
    hub.detach();
    otherHub.detach();
  },
});

Deno.test({
  name: "RedisBus.connect: nothing there, not Redis, a password needed, a bad URL: clear errors",
  ignore: !REDIS,
  async fn() {
    // Nothing listening.
    const port = freePort(); // nothing listens there
    await assert.rejects(RedisBus.connect(`redis://127.0.0.1:${port}`), (err: NetkitError) => {
      assert.equal(err.code, "ECONNREFUSED");
      assert.match(
        err.message,
        new RegExp(`cannot reach Redis at redis://127\\.0\\.0\\.1:${port}`),
      );
      return true;
    });
    // Something that is not Redis.
    const http = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const serving = (async () => {
      for (let i = 0; i < 2; i++) {
        const conn = await http.accept();
        await conn.write(encoder.encode("HTTP/1.1 400 Bad Request\r\n\r\n"));
        conn.close();
      }
    })();
    await assert.rejects(
      RedisBus.connect(`redis://127.0.0.1:${(http.addr as Deno.NetAddr).port}`),
      (err: NetkitError) => {
        assert.equal(err.code, "ERR_REDIS_PROTOCOL");
        assert.match(err.message, /does not speak the Redis protocol/);
        return true;
      },
    );
    await serving;
    http.close();
    // A password: needed, wrong, right.
    await using redis = await RedisProcess.start(["--requirepass", "s3cret"]);
    await assert.rejects(RedisBus.connect(redis.url), /needs a password/);
    await assert.rejects(
      RedisBus.connect(`redis://:wrong@127.0.0.1:${redis.port}`),
      /refused the credentials/,
    );
    const bus = await RedisBus.connect(`redis://:s3cret@127.0.0.1:${redis.port}/0`);
    assert.equal(bus.url, `redis://127.0.0.1:${redis.port}`);
    assert.ok(bus.connected);
    await bus.close();
    // Not a Redis URL.
    await assert.rejects(RedisBus.connect("http://127.0.0.1:6379"), /not a Redis URL/);
    await assert.rejects(RedisBus.connect("redis://host:6379/x"), /database number/);
  },
});

Deno.test({
  name:
    "ws-server --redis: usage errors exit 2; nothing at the URL exits 1 before any listening line",
  async fn() {
    for (
      const [args, re] of [
        [["--workers", "2"], /--workers needs --redis/],
        [["--redis", "http://x:1"], /--redis: .*not a Redis URL/],
        [["--redis", "redis://127.0.0.1:1", "--mode", "echo"], /no use with --mode echo/],
        [["--redis", "redis://127.0.0.1:1", "--workers", "0"], /--workers must be between 1/],
      ] as const
    ) {
      const run = await runProgram(SERVER, ["--port", "0", ...args]);
      assert.equal(run.code, 2, `${args.join(" ")}: ${run.stderr}`);
      assert.match(run.stderr, re);
      assert.equal(run.stdout, "");
    }
    const port = freePort(); // nothing listens there
    for (const extra of [[], ["--workers", "2"]]) {
      const run = await runProgram(SERVER, [
        "--port",
        "0",
        "--redis",
        `redis://127.0.0.1:${port}`,
        ...extra,
      ]);
      assert.equal(run.code, 1, run.stderr);
      assert.equal(run.stdout, "");
      assert.match(
        run.stderr,
        new RegExp(
          `^ws-server: cannot reach Redis at redis://127\\.0\\.0\\.1:${port}: .*refused.*\\n$`,
        ),
      );
    }
  },
});

for (const servers of [2, 3]) {
  Deno.test({
    name:
      `ws-server --redis: ${servers} servers, clients spread over them — every message reaches every client exactly once`,
    ignore: !REDIS,
    async fn() {
      await using redis = await RedisProcess.start();
      const procs = await Promise.all(
        Array.from(
          { length: servers },
          () => WsServerProcess.start(["--port", "0", "--quiet", "--redis", redis.url]),
        ),
      );
      try {
        for (const p of procs) assert.match(p.line, /^listening on ws:\/\/127\.0\.0\.1:\d+$/);
        const clients: { name: string; ws: WebSocketConn }[] = [];
        for (const [s, p] of procs.entries()) {
          for (let c = 0; c < 2; c++) {
            clients.push({ name: `s${s}c${c}`, ws: await connect(`ws://127.0.0.1:${p.port}/`) });
          }
        }
        const PER = 20;
        const names = clients.map((c) => c.name);
        const receiving = clients.map((c) => receiveN(c.ws, names.length * PER));
        await Promise.all(clients.map((c) => sendSeries(c.ws, c.name, PER)));
        const got = await Promise.all(receiving);
        // One last message: had anything been duplicated, it would come before it.
        await clients[0].ws.send("end");
        for (const [i, c] of clients.entries()) {
          checkExactlyOnce(got[i], names, PER, c.name);
          assert.equal(await c.ws.receive(), "end", `${c.name}: nothing extra before the end`);
        }
        await Promise.all(clients.map((c) => c.ws.close()));
      } finally {
        const stopped = await Promise.all(procs.map((p) => p.stop()));
        for (const s of stopped) {
          assert.equal(s.code, 0, s.stderr);
          assert.equal(s.stdout, "");
        }
      }
    },
  });
}

Deno.test({
  name:
    "ws-server --redis: Redis killed mid-run — local broadcast goes on; back — what was published meanwhile reaches the other server once, then delivery resumes",
  ignore: !REDIS,
  async fn() {
    await using redis = await RedisProcess.start();
    await using s1 = await WsServerProcess.start(["--port", "0", "--redis", redis.url]);
    await using s2 = await WsServerProcess.start(["--port", "0", "--redis", redis.url]);
    await using a1 = await connect(`ws://127.0.0.1:${s1.port}/`);
    await using a2 = await connect(`ws://127.0.0.1:${s1.port}/`);
    await using b = await connect(`ws://127.0.0.1:${s2.port}/`);
    await a1.send("before");
    for (const ws of [a1, a2, b]) assert.equal(await ws.receive(), "before");

    await redis.kill();
    await Promise.all([s1.waitFor(/redis: lost/), s2.waitFor(/redis: lost/)]);
    assert.match(await s1.waitFor(/redis: lost/), /local broadcast goes on, reconnecting/);
    // Local broadcast goes on.
    await a1.send("during 1");
    await a2.send(new Uint8Array([7]));
    for (const ws of [a1, a2]) {
      assert.equal(await ws.receive(), "during 1");
      assert.deepEqual(await ws.receive(), new Uint8Array([7]));
    }

    await redis.restart();
    const [back1, back2] = await Promise.all([
      s1.waitFor(/redis: back after/),
      s2.waitFor(/redis: back after/),
    ]);
    assert.match(
      back1,
      /^ws-server: redis: back after \d+\.\ds, 2 messages published meanwhile now relayed, 0 dropped$/,
    );
    assert.match(
      back2,
      /^ws-server: redis: back after \d+\.\ds, 0 messages published meanwhile now relayed, 0 dropped$/,
    );
    // What was published meanwhile reaches the other server once (the
    // Streams bus queues it), and only there; then delivery goes on both ways.
    assert.equal(await b.receive(), "during 1");
    assert.deepEqual(await b.receive(), new Uint8Array([7]));
    await b.send("after from b");
    for (const ws of [a1, a2, b]) assert.equal(await ws.receive(), "after from b");
    await a1.send("after from a");
    for (const ws of [a1, a2, b]) assert.equal(await ws.receive(), "after from a");
  },
});

Deno.test({
  name:
    "ws-server --workers 2: one listening line, clients spread over both, every message to all, SIGTERM takes the workers down",
  ignore: !REDIS,
  async fn() {
    await using redis = await RedisProcess.start();
    const server = await WsServerProcess.start([
      "--port",
      "0",
      "--redis",
      redis.url,
      "--workers",
      "2",
    ]);
    const clients: WebSocketConn[] = [];
    let workers: number[] | undefined;
    try {
      assert.match(server.line, /^listening on ws:\/\/127\.0\.0\.1:\d+$/);
      workers = childPids(server.child.pid);
      if (workers !== undefined) assert.equal(workers.length, 2, `children: ${workers}`);
      // Connect until both workers have taken clients (the kernel spreads them).
      const opened = (id: number) =>
        server.stderrLines.some((l) => l.startsWith(`ws-server[${id}]: open `));
      while (clients.length < 8 || !(opened(1) && opened(2))) {
        assert.ok(clients.length < 64, "64 clients and one worker got none");
        clients.push(await connect(`ws://127.0.0.1:${server.port}/`));
        await until(
          () => server.stderrLines.filter((l) => / open /.test(l)).length >= clients.length,
          "the open line",
        );
      }
      const PER = 4;
      const names = clients.map((_, i) => `c${i}`);
      const receiving = clients.map((ws) => receiveN(ws, names.length * PER));
      await Promise.all(clients.map((ws, i) => sendSeries(ws, names[i], PER)));
      const got = await Promise.all(receiving);
      for (const [i, g] of got.entries()) checkExactlyOnce(g, names, PER, names[i]);
    } finally {
      const stopping = server.stop("SIGTERM");
      for (const ws of clients) {
        assert.equal(await ws.receive(), null);
        assert.equal(ws.closeCode, 1001);
      }
      const { code, stdout, stderr } = await stopping;
      assert.equal(code, 0, stderr);
      assert.equal(stdout, "");
      assert.match(stderr, /ws-server: 2 workers on one port/);
      for (const pid of workers ?? []) assert.ok(!alive(pid), `worker ${pid} still running`);
    }
  },
});

Deno.test({
  name: "ws-server --workers: the workers go when the primary is killed outright",
  ignore: !REDIS || Deno.build.os !== "linux",
  async fn() {
    await using redis = await RedisProcess.start();
    const server = await WsServerProcess.start([
      "--port",
      "0",
      "--quiet",
      "--redis",
      redis.url,
      "--workers",
      "2",
    ]);
    const workers = childPids(server.child.pid) ?? [];
    assert.equal(workers.length, 2);
    const { code, stderr } = await server.stop("SIGKILL");
    assert.equal(code, 137);
    // The workers share its stderr: it has ended, so they are gone.
    assert.match(stderr, /ws-server\[1\]: the primary process is gone: shutting down/);
    assert.match(stderr, /ws-server\[2\]: the primary process is gone: shutting down/);
    await until(() => workers.every((pid) => !alive(pid)), "the workers to exit");
  },
});
