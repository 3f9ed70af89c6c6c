// RedisClient against real redis-server processes: pipelining order, binary
// payloads, error replies, a killed and restarted Redis, AUTH, limits, and
// rediss:// with a private CA.
import assert from "node:assert/strict";
import { NetkitError } from "../errors.ts";
import {
  RedisClient,
  type RedisClientEvent,
  RedisDownError,
  RedisReplyError,
  slotOf,
} from "../redis/_client.ts";
import { OversizedBulk } from "../redis/_resp.ts";
import { haveRedis, RedisProcess } from "./_redis.ts";
import { tempDevCerts } from "./support/certs.ts";
import { RedisServer } from "./support/redis_server.ts";
import { delay, within } from "./support/time.ts";

const ignore = !haveRedis();
const encoder = new TextEncoder();
const decoder = new TextDecoder();
const text = (v: unknown) => decoder.decode(v as Uint8Array);

Deno.test("slotOf: CRC16/XMODEM mod 16384, with the hash tag rule", () => {
  assert.equal(slotOf("123456789"), 0x31c3); // the CRC16/XMODEM check value
  assert.equal(slotOf("foo"), 12182); // CLUSTER KEYSLOT foo
  assert.equal(slotOf("{user1000}.following"), slotOf("{user1000}.followers"));
  assert.equal(slotOf("{user1000}.following"), slotOf("user1000"));
  assert.equal(slotOf("foo{}{bar}"), slotOf(encoder.encode("foo{}{bar}"))); // empty tag: whole key
  assert.notEqual(slotOf("foo{}{bar}"), slotOf("bar"));
  assert.equal(slotOf("foo{{bar}}zap"), slotOf("{bar"));
  assert.equal(slotOf(""), 0);
});

Deno.test({
  name: "pipelined calls: each reply reaches its own call, in order",
  ignore,
  async fn() {
    await using redis = await RedisProcess.start();
    await using client = await RedisClient.connect(redis.url);
    assert.equal(client.cluster, false);
    const calls: Promise<unknown>[] = [];
    for (let i = 0; i < 2000; i++) {
      calls.push(client.call("counter", ["INCR", "counter"]));
      calls.push(client.call(`k${i}`, ["SET", `k${i}`, `v${i}`]));
      calls.push(client.call(`k${i}`, ["GET", `k${i}`]));
    }
    const replies = await within(10_000, Promise.all(calls), "6000 calls");
    for (let i = 0; i < 2000; i++) {
      assert.equal(replies[3 * i], i + 1);
      assert.equal(replies[3 * i + 1], "OK");
      assert.equal(text(replies[3 * i + 2]), `v${i}`);
    }
    assert.equal(await client.call("nothing", ["GET", "nothing"]), null);
    assert.deepEqual(await client.call(undefined, ["ECHO", ""]), new Uint8Array(0));
  },
});

Deno.test({
  name: "binary payloads round-trip byte for byte (every byte value, CRLF inside, 1 MiB)",
  ignore,
  async fn() {
    await using redis = await RedisProcess.start();
    await using client = await RedisClient.connect(redis.url);
    const every = Uint8Array.from({ length: 512 }, (_, i) => i % 256);
    const crlf = encoder.encode("\r\n$5\r\n*1\r\n-ERR no\r\n");
    const big = crypto.getRandomValues(new Uint8Array(65536));
    const huge = new Uint8Array(1 << 20);
    for (let i = 0; i < huge.length; i += 65536) huge.set(big, i);
    const key = new Uint8Array([0, 255, 13, 10, 123, 125]);
    for (const value of [every, crlf, huge, new Uint8Array(0)]) {
      assert.equal(await client.call("bin", ["SET", key, value]), "OK");
      assert.deepEqual(await client.call("bin", ["GET", key]), value);
    }
    // In a stream entry too (what the bus carries).
    const id = await client.call("s", ["XADD", "s", "*", "d", every]);
    const range = await client.call("s", ["XRANGE", "s", "-", "+"]) as unknown[][];
    assert.equal(text(range[0][0]), text(id));
    assert.deepEqual((range[0][1] as Uint8Array[])[1], every);
  },
});

Deno.test({
  name: "an error reply rejects that call only (ERR_REDIS_REPLY, .reply); the pipeline goes on",
  ignore,
  async fn() {
    await using redis = await RedisProcess.start();
    await using client = await RedisClient.connect(redis.url);
    await client.call("list", ["RPUSH", "list", "a"]);
    const [before, wrong, after] = await Promise.allSettled([
      client.call("x", ["SET", "x", "1"]),
      client.call("list", ["INCR", "list"]),
      client.call("x", ["GET", "x"]),
    ]);
    assert.equal(before.status === "fulfilled" && before.value, "OK");
    assert.equal(wrong.status, "rejected");
    const err = (wrong as PromiseRejectedResult).reason;
    assert.ok(err instanceof RedisReplyError);
    assert.equal(err.code, "ERR_REDIS_REPLY");
    assert.match(err.reply, /^WRONGTYPE /);
    assert.match(err.message, /refused INCR: WRONGTYPE/);
    assert.equal(after.status === "fulfilled" && text(after.value), "1");
  },
});

Deno.test({
  name: "a killed Redis: ERR_REDIS_DOWN while it is down (nothing queued), calls work again after",
  ignore,
  async fn() {
    await using redis = await RedisProcess.start();
    const events: RedisClientEvent[] = [];
    await using client = await RedisClient.connect(redis.url, {
      timeout: 1000,
      onEvent: (e) => events.push(e),
    });
    await client.call("k", ["SET", "k", "1"]);
    await redis.kill();
    // The first call may be the one that finds the connection gone (then
    // `sent` is true: it was written); the next ones cannot connect at all.
    await assert.rejects(client.call("k", ["GET", "k"]), { code: "ERR_REDIS_DOWN" });
    for (let i = 0; i < 3; i++) {
      const err = await within(
        5000,
        client.call("k", ["GET", "k"]).then(() => null, (e) => e),
        "call",
      );
      assert.ok(err instanceof RedisDownError, String(err));
      assert.equal(err.sent, false);
      assert.match(err.message, /cannot be reached .*not sent/);
    }
    await assert.rejects(client.dedicated("k"), { code: "ERR_REDIS_DOWN" });
    assert.ok(events.some((e) => e.type === "lost"));
    await redis.restart();
    assert.equal(await within(5000, client.call("k", ["PING"]), "PING"), "PONG");
    assert.equal(await client.call("k", ["GET", "k"]), null); // no persistence: a new Redis
    assert.deepEqual(events.map((e) => e.type), ["lost", "back"]);
  },
});

Deno.test({
  name: "calls in flight when the connection drops reject with ERR_REDIS_DOWN, sent: true",
  ignore,
  async fn() {
    await using redis = await RedisProcess.start();
    await using client = await RedisClient.connect(redis.url, { timeout: 1000 });
    await using blocker = await client.dedicated(undefined);
    const id = String(await blocker.call(["CLIENT", "ID"]));
    const blocked = blocker.call(["BLPOP", "never", "0"]).then(() => null, (e) => e);
    await client.call(undefined, ["CLIENT", "KILL", "ID", id]);
    const err = await within(5000, blocked, "BLPOP");
    assert.ok(err instanceof RedisDownError);
    assert.equal(err.sent, true);
    await within(5000, blocker.closed, "closed");
  },
});

Deno.test({
  name: "AUTH: the password in the URL; none or a wrong one is ERR_REDIS_AUTH",
  ignore,
  async fn() {
    await using redis = await RedisProcess.start(["--requirepass", "s3cret"]);
    const base = `redis://127.0.0.1:${redis.port}`;
    await using client = await RedisClient.connect(`redis://:s3cret@127.0.0.1:${redis.port}`);
    assert.equal(await client.call("a", ["SET", "a", "1"]), "OK");
    await assert.rejects(RedisClient.connect(base), (err: NetkitError) => {
      assert.equal(err.code, "ERR_REDIS_AUTH");
      assert.match(err.message, /needs a password: put it in the URL/);
      return true;
    });
    await assert.rejects(
      RedisClient.connect(`redis://:wrong@127.0.0.1:${redis.port}`),
      (err: NetkitError) => {
        assert.equal(err.code, "ERR_REDIS_AUTH");
        assert.match(err.message, /refused the credentials/);
        assert.doesNotMatch(err.message, /wrong/);
        return true;
      },
    );
    // ACL users: username and password.
    await client.call(undefined, ["ACL", "SETUSER", "app", "on", ">pw2", "~*", "+@all"]);
    await using user = await RedisClient.connect(`redis://app:pw2@127.0.0.1:${redis.port}`);
    assert.equal(text(await user.call("a", ["GET", "a"])), "1");
  },
});

Deno.test("nothing listening: ERR_REDIS_CONNECT names the URL (not its password) and what to do", async () => {
  await assert.rejects(
    RedisClient.connect("redis://:topsecret@127.0.0.1:1", { timeout: 1000 }),
    (err: NetkitError) => {
      assert.equal(err.code, "ERR_REDIS_CONNECT");
      assert.match(err.message, /cannot reach Redis at redis:\/\/127\.0\.0\.1:1: /);
      assert.match(err.message, /is redis-server running there/);
      assert.doesNotMatch(err.message, /topsecret/);
      return true;
    },
  );
  await assert.rejects(RedisClient.connect("http://127.0.0.1:1"), { code: "ERR_REDIS_URL" });
});

Deno.test({
  name: "maxQueuedBytes: beyond it a call rejects with ERR_REDIS_BACKPRESSURE, the rest go through",
  ignore,
  async fn() {
    await using redis = await RedisProcess.start();
    await using client = await RedisClient.connect(redis.url, { maxQueuedBytes: 10_000 });
    const payload = new Uint8Array(1000);
    // All issued before any reply can come back: unanswered bytes pile up.
    const results = await Promise.allSettled(
      Array.from({ length: 30 }, (_, i) => client.call(`p${i}`, ["SET", `p${i}`, payload])),
    );
    const ok = results.filter((r) => r.status === "fulfilled").length;
    assert.ok(ok >= 9 && ok <= 10, `${ok} accepted`);
    for (const r of results.slice(ok)) {
      assert.equal(r.status, "rejected");
      assert.equal((r as PromiseRejectedResult).reason.code, "ERR_REDIS_BACKPRESSURE");
    }
    // Answered: room again.
    assert.equal(await client.call("p", ["SET", "p", payload]), "OK");
  },
});

Deno.test({
  name: "maxBulkSize: a bigger reply is an OversizedBulk; the replies after it stay in sync",
  ignore,
  async fn() {
    await using redis = await RedisProcess.start();
    await using client = await RedisClient.connect(redis.url, { maxBulkSize: 1000 });
    await client.call("big", ["SET", "big", new Uint8Array(200_000)]);
    const [big, small] = await Promise.all([
      client.call("big", ["GET", "big"]),
      client.call(undefined, ["ECHO", "after"]),
    ]);
    assert.ok(big instanceof OversizedBulk);
    assert.equal(big.length, 200_000);
    assert.equal(text(small), "after");
  },
});

Deno.test({
  name: "eval: EVALSHA, and EVAL when the server lost the script (NOSCRIPT)",
  ignore,
  async fn() {
    await using redis = await RedisProcess.start();
    await using client = await RedisClient.connect(redis.url);
    const script = "return redis.call('INCRBY', KEYS[1], ARGV[1])";
    assert.equal(await client.eval(script, ["n"], ["2"]), 2);
    assert.equal(await client.eval(script, ["n"], ["3"]), 5);
    await client.call(undefined, ["SCRIPT", "FLUSH"]);
    assert.equal(await client.eval(script, ["n"], ["1"]), 6);
    await assert.rejects(client.eval("return redis.call('NOPE')", [], []), {
      code: "ERR_REDIS_REPLY",
    });
  },
});

Deno.test({
  name: "dedicated: XREAD BLOCK on a connection of its own while calls go on",
  ignore,
  async fn() {
    await using redis = await RedisProcess.start();
    await using client = await RedisClient.connect(redis.url);
    const reader = await client.dedicated("stream");
    assert.equal(reader.node, `127.0.0.1:${redis.port}`);
    const read = reader.call(["XREAD", "BLOCK", "5000", "STREAMS", "stream", "$"]);
    // The shared connection is not blocked by it (and tells when XREAD waits).
    for (let i = 0; i < 100; i++) {
      if (/cmd=xread/.test(text(await client.call(undefined, ["CLIENT", "LIST"])))) break;
      await delay(20);
    }
    const id = await client.call("stream", ["XADD", "stream", "*", "m", "hello"]);
    const reply = await within(5000, read, "XREAD") as unknown[][];
    const [[name, entries]] = reply as [[Uint8Array, [Uint8Array, Uint8Array[]][]]];
    assert.equal(text(name), "stream");
    assert.equal(text(entries[0][0]), text(id));
    assert.equal(text(entries[0][1][1]), "hello");
    reader.close();
    await within(5000, reader.closed, "closed");
    await assert.rejects(reader.call(["PING"]), { code: "ERR_REDIS_DOWN" });
  },
});

Deno.test({
  name: "close(): calls after it reject with ERR_REDIS_CLOSED; dedicated connections close too",
  ignore,
  async fn() {
    await using redis = await RedisProcess.start();
    const client = await RedisClient.connect(redis.url);
    const reader = await client.dedicated(undefined);
    const blocked = reader.call(["BLPOP", "never", "0"]).then(() => null, (e) => e);
    await client.close();
    assert.ok((await within(5000, blocked, "BLPOP")) instanceof NetkitError);
    await within(5000, reader.closed, "closed");
    await assert.rejects(client.call("a", ["GET", "a"]), { code: "ERR_REDIS_CLOSED" });
  },
});

Deno.test({
  name: "rediss:// with a private CA; a client without that CA gets a clear certificate error",
  ignore,
  async fn() {
    await using certs = await tempDevCerts({ hosts: ["localhost", "127.0.0.1"] });
    const { files } = certs;
    await using redis = await RedisServer.start({
      tls: true,
      args: [
        "--tls-cert-file",
        files.cert,
        "--tls-key-file",
        files.key,
        "--tls-ca-cert-file",
        files.ca,
        "--tls-auth-clients",
        "no",
        "--requirepass",
        "pw",
      ],
    });
    const url = `rediss://:pw@localhost:${redis.port}`;
    await using client = await RedisClient.connect(url, { caCerts: [certs.ca] });
    assert.equal(await client.call("t", ["SET", "t", new Uint8Array([0, 1, 2])]), "OK");
    assert.deepEqual(await client.call("t", ["GET", "t"]), new Uint8Array([0, 1, 2]));
    await using reader = await client.dedicated("t");
    assert.equal(await reader.call(["PING"]), "PONG");

    // No CA, or another one (a fresh development CA), does not vouch for this server.
    await using other = await tempDevCerts({ hosts: ["localhost"] });
    for (const caCerts of [undefined, [other.ca]]) {
      await assert.rejects(
        RedisClient.connect(url, { caCerts, timeout: 3000 }),
        (err: NetkitError) => {
          assert.equal(err.code, "ERR_REDIS_CONNECT");
          assert.match(
            err.message,
            /^cannot reach Redis at rediss:\/\/localhost:\d+: .*certificate/,
          );
          assert.match(err.message, /is the CA that signed it given \(caCerts/);
          assert.doesNotMatch(err.message, /:pw@/);
          assert.match((err.cause as NetkitError).code, /^ERR_TLS_CERT_/);
          return true;
        },
      );
    }
  },
});
