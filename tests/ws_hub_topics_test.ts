// The hub's per-connection topic bookkeeping (one topic held as itself, a
// Set beyond): every step of subscribe / unsubscribe / unsubscribeAll.
import assert from "node:assert/strict";
import { BroadcastHub, type PreparedMessage, type Subscriber } from "../websocket/mod.ts";

function recorder(): Subscriber & { got: string[] } {
  const got: string[] = [];
  return {
    got,
    sendPrepared(m: PreparedMessage) {
      got.push(String(m.data));
      return "sent";
    },
  };
}

Deno.test("BroadcastHub keeps a connection's topics right from one topic to several and back", () => {
  const hub = new BroadcastHub();
  const a = recorder();
  assert.deepEqual(hub.topicsOf(a), []);
  assert.equal(hub.subscribe(a, "x"), true);
  assert.equal(hub.subscribe(a, "x"), false, "already subscribed");
  assert.deepEqual(hub.topicsOf(a), ["x"]);
  hub.subscribe(a, "y");
  hub.subscribe(a, "z");
  assert.deepEqual(hub.topicsOf(a).sort(), ["x", "y", "z"]);
  assert.equal(hub.unsubscribe(a, "y"), true);
  assert.equal(hub.unsubscribe(a, "y"), false);
  assert.deepEqual(hub.topicsOf(a).sort(), ["x", "z"]);
  hub.publish("x", "1");
  hub.publish("y", "2");
  hub.publish("z", "3");
  assert.deepEqual(a.got, ["1", "3"]);
  hub.unsubscribeAll(a);
  assert.deepEqual(hub.topicsOf(a), []);
  assert.equal(hub.subscriberCount("x"), 0);
  assert.equal(hub.subscriberCount("z"), 0);
  // One topic, then unsubscribed: nothing left behind.
  hub.subscribe(a, "solo");
  assert.equal(hub.unsubscribe(a, "solo"), true);
  assert.deepEqual(hub.topicsOf(a), []);
  hub.subscribe(a, "solo");
  hub.unsubscribeAll(a);
  assert.equal(hub.isSubscribed(a, "solo"), false);
  assert.equal(hub.publish("solo", "4").delivered, 0);
});
