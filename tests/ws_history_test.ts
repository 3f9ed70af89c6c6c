// The in-process history of a BroadcastHub: positions (epoch, offset) per
// topic, the bounds (count, bytes, age), and what the log keeps alive (the
// bus subscription of a topic someone may resume).
import assert from "node:assert/strict";
import { BroadcastHub, InProcessBus, PreparedMessage, type Subscriber } from "../websocket/mod.ts";
import { delay } from "./_helpers.ts";

function collector(): Subscriber & { got: string[] } {
  const got: string[] = [];
  return {
    got,
    sendPrepared(m) {
      got.push(String(m.data));
      return "sent";
    },
  };
}

Deno.test("BroadcastHub without historySize keeps nothing and delivers as before", () => {
  const hub = new BroadcastHub();
  assert.equal(hub.keepsHistory, false);
  const sub = collector();
  hub.subscribe(sub, "news");
  assert.deepEqual(hub.publish("news", "a"), { delivered: 1, dropped: 0 });
  // A topic nobody is subscribed to costs nothing without history.
  assert.deepEqual(hub.publish("elsewhere", "b"), { delivered: 0, dropped: 0 });
  assert.equal(hub.position("news"), undefined);
  assert.deepEqual(hub.historyStats(), { topics: 0, messages: 0, bytes: 0 });
  assert.deepEqual(hub.stats(), { published: 1, delivered: 1, dropped: 0 });
  assert.deepEqual(sub.got, ["a"]);
});

Deno.test("history gives each publish on a topic the next offset; each topic's log has its own epoch", () => {
  const hub = new BroadcastHub({ historySize: 10 });
  assert.equal(hub.keepsHistory, true);
  const sub = collector();
  hub.subscribe(sub, "a");
  // Subscribing makes the log: a position exists before the first message.
  const start = hub.position("a")!;
  assert.equal(start.offset, 0);
  assert.match(start.epoch, /^[A-Za-z0-9_-]{11}$/);
  for (const m of ["1", "2", "3"]) hub.publish("a", m);
  // Published with no subscriber at all: recorded too, for whoever resumes.
  hub.publish("b", "x");
  assert.deepEqual(hub.position("a"), { epoch: start.epoch, offset: 3, oldest: 1 });
  const b = hub.position("b")!;
  assert.equal(b.offset, 1);
  assert.notEqual(b.epoch, start.epoch);
  assert.deepEqual(hub.historyStats(), { topics: 2, messages: 4, bytes: 4 });
  // Plain subscribers get the message as published, not an envelope.
  assert.deepEqual(sub.got, ["1", "2", "3"]);
});

Deno.test("history keeps the PreparedMessage it was given, not a copy", () => {
  const hub = new BroadcastHub({ historySize: 10 });
  const seen: PreparedMessage[] = [];
  hub.subscribe({ sendPrepared: (m) => (seen.push(m), "sent") }, "t");
  const message = new PreparedMessage("shared");
  hub.publish("t", message);
  assert.equal(seen[0], message);
  assert.equal(hub.historyStats().bytes, 6);
});

Deno.test("history is bounded by historySize and maxHistoryBytes: the oldest messages go first", () => {
  const counted = new BroadcastHub({ historySize: 3 });
  for (let i = 1; i <= 10; i++) counted.publish("t", `m${i}`);
  assert.deepEqual(counted.position("t"), {
    epoch: counted.position("t")!.epoch,
    offset: 10,
    oldest: 8,
  });
  assert.deepEqual(counted.historyStats(), { topics: 1, messages: 3, bytes: 7 }); // m8 m9 m10

  const sized = new BroadcastHub({ historySize: 1000, maxHistoryBytes: 250 });
  for (let i = 0; i < 10; i++) sized.publish("t", "x".repeat(100));
  assert.deepEqual(sized.historyStats(), { topics: 1, messages: 2, bytes: 200 });
  assert.equal(sized.position("t")!.oldest, 9);
  // A message bigger than the whole bound gets its offset and is not kept.
  sized.publish("t", "y".repeat(300));
  assert.deepEqual(sized.historyStats(), { topics: 1, messages: 0, bytes: 0 });
  assert.equal(sized.position("t")!.offset, 11);
  assert.equal(sized.position("t")!.oldest, 12);
});

Deno.test("history drops messages older than historyTtl", async () => {
  const hub = new BroadcastHub({ historySize: 100, historyTtl: 20 });
  hub.publish("t", "old");
  await delay(60);
  hub.publish("t", "new");
  assert.equal(hub.position("t")!.oldest, 2);
  assert.deepEqual(hub.historyStats(), { topics: 1, messages: 1, bytes: 3 });
});

Deno.test("with history, a topic stays subscribed on the bus after its last subscriber leaves, until its log is forgotten", async () => {
  const bus = new InProcessBus();
  const hub = new BroadcastHub({ bus, historySize: 100, historyTtl: 30 });
  const other = new BroadcastHub({ bus });
  const sub = collector();
  hub.subscribe(sub, "room");
  assert.deepEqual(bus.topics, ["room"]);
  hub.unsubscribe(sub, "room");
  // Still subscribed upstream: what other servers publish meanwhile is
  // recorded for a client that comes back to resume.
  assert.deepEqual(bus.topics, ["room"]);
  other.publish("room", "while away");
  assert.equal(hub.position("room")!.offset, 1);
  // A TTL later, with nobody back, the log is forgotten (checked as messages
  // are published) and the bus subscription ends.
  await delay(120);
  hub.publish("unrelated", "tick");
  assert.equal(hub.position("room"), undefined);
  assert.deepEqual(bus.topics, []);
  hub.detach();
  other.detach();
  await bus.close();
});

Deno.test("without history, a topic leaves the bus with its last subscriber, as before", async () => {
  const bus = new InProcessBus();
  const hub = new BroadcastHub({ bus });
  const sub = collector();
  hub.subscribe(sub, "room");
  assert.deepEqual(bus.topics, ["room"]);
  hub.unsubscribe(sub, "room");
  assert.deepEqual(bus.topics, []);
  hub.detach();
  await bus.close();
});

Deno.test("history bounds that are not numbers in range are refused", () => {
  assert.throws(() => new BroadcastHub({ historySize: 1.5 }), RangeError);
  assert.throws(() => new BroadcastHub({ historySize: -1 }), RangeError);
  assert.throws(() => new BroadcastHub({ historySize: 10, historyTtl: -1 }), RangeError);
  assert.throws(
    () => new BroadcastHub({ historySize: 10, maxHistoryBytes: Number.NaN }),
    RangeError,
  );
});
