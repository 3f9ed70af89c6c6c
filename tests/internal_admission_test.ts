import assert from "node:assert/strict";
import { type Admission, AdmissionControl, type AdmissionOptions } from "../internal/admission.ts";

function reason(a: Admission): string {
  return a.ok ? "ok" : a.reason;
}

/** A clock the test moves by hand. */
function manualClock(start = 1_000) {
  let now = start;
  return {
    now: () => now,
    advance(ms: number) {
      now += ms;
    },
  };
}

/** An AdmissionControl with `options`, its time read from a clock the test moves by hand. */
function onManualClock(options: Omit<AdmissionOptions, "now">) {
  const clock = manualClock();
  return { clock, admission: new AdmissionControl({ ...options, now: clock.now }) };
}

Deno.test("maxConnectionsPerIp admits under and at the limit, refuses over it", () => {
  const admission = new AdmissionControl({ maxConnectionsPerIp: 3 });
  const held = [];
  for (let i = 0; i < 3; i++) {
    const a = admission.admit("203.0.113.5");
    assert.equal(reason(a), "ok", `connection ${i + 1} of 3`);
    held.push(a);
  }
  assert.deepEqual(admission.admit("203.0.113.5"), {
    ok: false,
    key: "203.0.113.5",
    reason: "per-ip",
  });
  assert.equal(reason(admission.admit("203.0.113.5")), "per-ip", "still over");
  assert.equal(admission.stats().open, 3);
});

Deno.test("release() frees a slot once, however often it is called", () => {
  const admission = new AdmissionControl({ maxConnectionsPerIp: 2 });
  const a = admission.admit("203.0.113.5");
  const b = admission.admit("203.0.113.5");
  assert.ok(a.ok && b.ok);
  a.release();
  a.release(); // a second call must not free another slot
  a.release();
  const c = admission.admit("203.0.113.5");
  assert.equal(reason(c), "ok");
  assert.equal(reason(admission.admit("203.0.113.5")), "per-ip");
  b.release();
  if (c.ok) c.release();
  assert.deepEqual(admission.stats(), { keys: 0, open: 0, evicted: 0, untracked: 0 });
});

Deno.test("each address has its own count; IPv4-mapped IPv6 counts as IPv4", () => {
  const admission = new AdmissionControl({ maxConnectionsPerIp: 1 });
  assert.equal(reason(admission.admit("198.51.100.1")), "ok");
  assert.equal(reason(admission.admit("198.51.100.2")), "ok");
  assert.equal(reason(admission.admit("::ffff:198.51.100.1")), "per-ip");
  assert.equal(reason(admission.admit("198.51.100.1")), "per-ip");
});

Deno.test("IPv6 addresses in one /64 share a limit; another /64 has its own", () => {
  const admission = new AdmissionControl({ maxConnectionsPerIp: 2 });
  const a = admission.admit("2001:db8:1:2::1");
  assert.ok(a.ok);
  assert.equal(a.key, "2001:db8:1:2::/64");
  assert.equal(reason(admission.admit("2001:db8:1:2:ffff:ffff:ffff:ffff")), "ok");
  assert.equal(reason(admission.admit("2001:db8:1:2:1234::99")), "per-ip");
  assert.equal(reason(admission.admit("2001:db8:1:3::1")), "ok");
  // A narrower grouping, when asked for.
  const per128 = new AdmissionControl({ maxConnectionsPerIp: 1, ipv6Prefix: 128 });
  assert.equal(reason(per128.admit("2001:db8:1:2::1")), "ok");
  assert.equal(reason(per128.admit("2001:db8:1:2::2")), "ok");
  assert.equal(reason(per128.admit("2001:db8:1:2::1")), "per-ip");
});

Deno.test("acceptRate: the burst is admitted, the next is refused, tokens refill with time", () => {
  const { clock, admission } = onManualClock({ acceptRate: 4, burst: 2 });
  assert.equal(reason(admission.admit("192.0.2.9")), "ok");
  assert.equal(reason(admission.admit("192.0.2.9")), "ok", "at the burst");
  assert.equal(reason(admission.admit("192.0.2.9")), "rate", "over the burst");
  assert.equal(reason(admission.admit("192.0.2.10")), "ok", "another address has its own bucket");
  clock.advance(249); // just under one token at 4/s
  assert.equal(reason(admission.admit("192.0.2.9")), "rate");
  clock.advance(1); // 250 ms: one token
  assert.equal(reason(admission.admit("192.0.2.9")), "ok");
  assert.equal(reason(admission.admit("192.0.2.9")), "rate");
  clock.advance(10_000); // long quiet: the bucket fills to the burst, not beyond
  assert.equal(reason(admission.admit("192.0.2.9")), "ok");
  assert.equal(reason(admission.admit("192.0.2.9")), "ok");
  assert.equal(reason(admission.admit("192.0.2.9")), "rate");
});

Deno.test("acceptRate: the default burst is one second's worth, at least 1", () => {
  const clock = manualClock();
  const fast = new AdmissionControl({ acceptRate: 2.5, now: clock.now }); // burst ceil(2.5) = 3
  for (let i = 0; i < 3; i++) assert.equal(reason(fast.admit("192.0.2.1")), "ok");
  assert.equal(reason(fast.admit("192.0.2.1")), "rate");
  const slow = new AdmissionControl({ acceptRate: 0.5, now: clock.now }); // burst 1
  assert.equal(reason(slow.admit("192.0.2.1")), "ok");
  assert.equal(reason(slow.admit("192.0.2.1")), "rate");
  clock.advance(1999);
  assert.equal(reason(slow.admit("192.0.2.1")), "rate");
  clock.advance(1);
  assert.equal(reason(slow.admit("192.0.2.1")), "ok");
});

Deno.test("acceptRate holds a sustained flood to the rate", () => {
  const { clock, admission } = onManualClock({ acceptRate: 10, burst: 10 });
  let admitted = 0;
  // 100 attempts per second for 10 seconds.
  for (let i = 0; i < 1000; i++) {
    const a = admission.admit("192.0.2.1");
    if (a.ok) {
      admitted++;
      a.release();
    }
    clock.advance(10);
  }
  // The burst, then 10/s for the 9.99 s that followed.
  assert.ok(admitted >= 105 && admitted <= 110, `admitted ${admitted}`);
});

Deno.test("both limits: rate is checked first and a refused attempt still takes a token", () => {
  const { clock, admission } = onManualClock({ maxConnectionsPerIp: 1, acceptRate: 1, burst: 3 });
  const first = admission.admit("192.0.2.1");
  assert.equal(reason(first), "ok");
  assert.equal(reason(admission.admit("192.0.2.1")), "per-ip"); // token 2
  assert.equal(reason(admission.admit("192.0.2.1")), "per-ip"); // token 3
  assert.equal(reason(admission.admit("192.0.2.1")), "rate"); // none left
  if (first.ok) first.release();
  assert.equal(reason(admission.admit("192.0.2.1")), "rate", "a free slot does not make tokens");
  clock.advance(1000);
  assert.equal(reason(admission.admit("192.0.2.1")), "ok");
});

Deno.test("without limits every connection is admitted and nothing is tracked", () => {
  const admission = new AdmissionControl();
  assert.equal(admission.enabled, false);
  for (let i = 0; i < 100; i++) assert.equal(reason(admission.admit("192.0.2.1")), "ok");
  assert.equal(admission.stats().keys, 0);
});

Deno.test("an address is forgotten once it has no connection and a full bucket", () => {
  const perIp = new AdmissionControl({ maxConnectionsPerIp: 5 });
  const a = perIp.admit("192.0.2.1");
  assert.equal(perIp.stats().keys, 1);
  if (a.ok) a.release();
  assert.equal(perIp.stats().keys, 0, "per-ip only: gone at release");

  const clock = manualClock();
  const rate = new AdmissionControl({ acceptRate: 1, burst: 2, now: clock.now });
  const admitAndClose = (address: string) => {
    const a = rate.admit(address);
    if (a.ok) a.release();
  };
  for (let i = 0; i < 50; i++) admitAndClose(`10.0.0.${i}`);
  assert.equal(rate.stats().keys, 50, "each bucket is refilling");
  clock.advance(999);
  admitAndClose("10.1.0.1");
  assert.equal(rate.stats().keys, 51, "not yet full: kept");
  clock.advance(1);
  // Each admit sweeps a couple of cold entries: O(1) per accept.
  for (let i = 0; i < 30; i++) admitAndClose("10.1.0.1");
  assert.equal(rate.stats().keys, 1, "every idle address was swept");
  assert.equal(rate.stats().evicted, 0, "swept, not evicted at a cap");
});

Deno.test("a flood of distinct addresses never grows the table past maxKeys", () => {
  const { clock, admission } = onManualClock({
    maxConnectionsPerIp: 2,
    acceptRate: 1,
    maxKeys: 1000,
  });
  // A client with open connections is never forgotten, however big the flood.
  const steady = admission.admit("198.51.100.7");
  const steady2 = admission.admit("198.51.100.7");
  assert.ok(steady.ok);
  clock.advance(5000);
  for (let i = 0; i < 100_000; i++) {
    const a = admission.admit(`2001:db8:${(i >> 16).toString(16)}:${(i & 0xffff).toString(16)}::1`);
    assert.equal(a.ok, true, "a new address is admitted");
    if (a.ok) a.release();
    assert.ok(admission.stats().keys <= 1000);
  }
  const stats = admission.stats();
  assert.equal(stats.keys, 1000);
  assert.ok(stats.evicted > 90_000, `evicted ${stats.evicted}`);
  assert.equal(stats.untracked, 0);
  assert.equal(stats.open, 1);
  assert.equal(reason(steady2), "rate", "the second was over the steady client's rate");
  // The steady client's count survived: at its cap of 2 after one more.
  clock.advance(2000);
  assert.equal(reason(admission.admit("198.51.100.7")), "ok");
  assert.equal(reason(admission.admit("198.51.100.7")), "rate");
  clock.advance(2000);
  assert.equal(reason(admission.admit("198.51.100.7")), "per-ip");
});

Deno.test("at the cap the least recently seen idle address is the one forgotten", () => {
  const { admission } = onManualClock({ acceptRate: 1, burst: 1, maxKeys: 3 });
  const once = (address: string) => {
    const a = admission.admit(address);
    if (a.ok) a.release();
    return reason(a);
  };
  assert.equal(once("192.0.2.1"), "ok");
  assert.equal(once("192.0.2.2"), "ok");
  assert.equal(once("192.0.2.3"), "ok");
  assert.equal(once("192.0.2.1"), "rate", "seen again: now the warmest, its bucket empty");
  assert.equal(once("192.0.2.4"), "ok", "a fourth address: .2, the coldest, is forgotten");
  assert.deepEqual(admission.stats(), { keys: 3, open: 0, evicted: 1, untracked: 0 });
  assert.equal(once("192.0.2.1"), "rate", ".1 was kept: still limited");
  assert.equal(once("192.0.2.2"), "ok", ".2 starts with a full bucket (and .3 goes)");
  assert.equal(once("192.0.2.4"), "rate", ".4 was kept");
});

Deno.test("a table full of busy addresses admits a newcomer untracked", () => {
  const admission = new AdmissionControl({ maxConnectionsPerIp: 1, maxKeys: 20 });
  for (let i = 0; i < 20; i++) assert.equal(reason(admission.admit(`10.0.0.${i}`)), "ok");
  const extra = admission.admit("10.0.1.1");
  assert.equal(reason(extra), "ok");
  assert.deepEqual(admission.stats(), { keys: 20, open: 20, evicted: 0, untracked: 1 });
  if (extra.ok) extra.release(); // a no-op for an untracked one
  assert.equal(admission.stats().open, 20);
  // Tracked ones keep their limits.
  assert.equal(reason(admission.admit("10.0.0.3")), "per-ip");
});

Deno.test("bad options are refused with a RangeError naming the option", () => {
  for (
    const [options, name] of [
      [{ maxConnectionsPerIp: 0 }, "maxConnectionsPerIp"],
      [{ maxConnectionsPerIp: 1.5 }, "maxConnectionsPerIp"],
      [{ acceptRate: 0 }, "acceptRate"],
      [{ acceptRate: NaN }, "acceptRate"],
      [{ acceptRate: 1, burst: 0.5 }, "burst"],
      [{ ipv6Prefix: 129 }, "ipv6Prefix"],
      [{ maxKeys: 0 }, "maxKeys"],
    ] as const
  ) {
    assert.throws(() => new AdmissionControl(options), (err) => {
      assert.ok(err instanceof RangeError);
      assert.match(err.message, new RegExp(name));
      return true;
    });
  }
  assert.throws(
    () => new AdmissionControl({ maxConnectionsPerIp: 1 }).admit("/tmp/sock"),
    { code: "ERR_BAD_CIDR" },
  );
});

Deno.test("admit() keeps the table bounded over 200,000 distinct addresses (prints ns per call)", () => {
  // Not a timing assertion: prints a figure for the report.
  const admission = new AdmissionControl({ maxConnectionsPerIp: 100, acceptRate: 1e9 });
  const n = 200_000;
  const start = performance.now();
  for (let i = 0; i < n; i++) {
    const a = admission.admit(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`);
    if (a.ok) a.release();
  }
  const ns = (performance.now() - start) * 1e6 / n;
  assert.ok(admission.stats().keys <= 100_000);
  // deno-lint-ignore no-console
  console.log(`admit+release: ${ns.toFixed(0)} ns per call over ${n} distinct IPv4 addresses`);
});
