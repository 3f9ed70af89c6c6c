import assert from "node:assert/strict";
import {
  Counter,
  DEFAULT_BUCKETS,
  Gauge,
  Histogram,
  processMetrics,
  RateWindow,
  Registry,
} from "../internal/metrics.ts";

Deno.test("Registry.render() writes a small registry byte for byte in text format 0.0.4", () => {
  const registry = new Registry();
  const accepted = registry.counter({
    name: "netkit_connections_accepted_total",
    help: "Connections accepted.",
  });
  const refused = registry.counter({
    name: "netkit_connections_refused_total",
    help: "Connections closed at accept, by reason.",
    labelNames: ["reason"],
  });
  const open = registry.gauge({
    name: "netkit_connections_open",
    help: "Connections open now.",
    labelNames: ["transport"],
  });
  const rtt = registry.histogram({
    name: "netkit_ping_rtt_seconds",
    help: "WebSocket ping round trips.",
    labelNames: ["server"],
    buckets: [0.001, 0.01, 0.1],
  });
  registry.gauge({
    name: "netkit_uptime_seconds",
    help: "Seconds since start.",
    collect: () => 12.5,
  });
  const perIp = refused.labels({ reason: "per-ip" });
  const rate = refused.labels({ reason: "rate" });
  accepted.inc();
  accepted.inc(2);
  perIp.inc();
  rate.inc(4);
  perIp.inc();
  open.labels({ transport: "tcp" }).set(3);
  open.labels({ transport: "ws" }).inc();
  const ws = rtt.labels({ server: "a" });
  ws.observe(0.0005);
  ws.observe(0.001); // on a bound: counted in that bucket (le means <=)
  ws.observe(0.05);
  ws.observe(7);
  assert.equal(
    registry.render(),
    [
      "# HELP netkit_connections_accepted_total Connections accepted.",
      "# TYPE netkit_connections_accepted_total counter",
      "netkit_connections_accepted_total 3",
      "# HELP netkit_connections_refused_total Connections closed at accept, by reason.",
      "# TYPE netkit_connections_refused_total counter",
      'netkit_connections_refused_total{reason="per-ip"} 2',
      'netkit_connections_refused_total{reason="rate"} 4',
      "# HELP netkit_connections_open Connections open now.",
      "# TYPE netkit_connections_open gauge",
      'netkit_connections_open{transport="tcp"} 3',
      'netkit_connections_open{transport="ws"} 1',
      "# HELP netkit_ping_rtt_seconds WebSocket ping round trips.",
      "# TYPE netkit_ping_rtt_seconds histogram",
      'netkit_ping_rtt_seconds_bucket{server="a",le="0.001"} 2',
      'netkit_ping_rtt_seconds_bucket{server="a",le="0.01"} 2',
      'netkit_ping_rtt_seconds_bucket{server="a",le="0.1"} 3',
      'netkit_ping_rtt_seconds_bucket{server="a",le="+Inf"} 4',
      'netkit_ping_rtt_seconds_sum{server="a"} 7.0515',
      'netkit_ping_rtt_seconds_count{server="a"} 4',
      "# HELP netkit_uptime_seconds Seconds since start.",
      "# TYPE netkit_uptime_seconds gauge",
      "netkit_uptime_seconds 12.5",
      "",
    ].join("\n"),
  );
  assert.equal(Registry.contentType, "text/plain; version=0.0.4; charset=utf-8");
});

Deno.test("label values escape backslash, double quote and newline; HELP escapes backslash and newline", () => {
  const registry = new Registry();
  const errors = registry.counter({
    name: "netkit_errors_total",
    help: 'Errors by "cause".\nSecond line with a \\ backslash.',
    labelNames: ["cause", "peer"],
  });
  errors.labels({ cause: 'said "hi"\\n', peer: "line1\nline2" }).inc();
  errors.labels({ peer: "", cause: "ünïcödé ✓" }).inc(); // order of keys does not matter
  assert.equal(
    registry.render(),
    '# HELP netkit_errors_total Errors by "cause".\\nSecond line with a \\\\ backslash.\n' +
      "# TYPE netkit_errors_total counter\n" +
      'netkit_errors_total{cause="said \\"hi\\"\\\\n",peer="line1\\nline2"} 1\n' +
      'netkit_errors_total{cause="ünïcödé ✓",peer=""} 1\n',
  );
});

Deno.test("labels() returns the same child for the same values, so callers can keep it", () => {
  const counter = new Counter({
    name: "x_total",
    help: "x",
    labelNames: ["a", "b"],
  });
  const child = counter.labels({ a: "1", b: "2" });
  assert.equal(counter.labels({ b: "2", a: "1" }), child);
  assert.notEqual(counter.labels({ a: "1", b: "3" }), child);
  // Values that would collide if joined naively stay apart.
  assert.notEqual(counter.labels({ a: "1,b", b: "" }), counter.labels({ a: "1", b: "b," }));
  assert.throws(() => counter.labels({ a: "1" }), /needs a string value for label "b"/);
  assert.throws(() => counter.labels({ a: "1", b: "2", c: "3" }), /has no label "c"/);
  assert.throws(() => counter.inc(), /has labels \(a, b\): call \.labels/);
});

Deno.test("histogram buckets are cumulative, le is <=, +Inf counts everything", () => {
  const h = new Histogram({ name: "h_seconds", help: "h", buckets: [1, 2, 5] });
  for (const v of [0, 1, 1.5, 2, 2.0000001, 5, 6, -1, Infinity]) h.observe(v);
  const registry = new Registry();
  registry.register(h);
  assert.equal(
    registry.render(),
    "# HELP h_seconds h\n# TYPE h_seconds histogram\n" +
      'h_seconds_bucket{le="1"} 3\n' +
      'h_seconds_bucket{le="2"} 5\n' +
      'h_seconds_bucket{le="5"} 7\n' +
      'h_seconds_bucket{le="+Inf"} 9\n' +
      "h_seconds_sum +Inf\n" +
      "h_seconds_count 9\n",
  );
  const child = h.labels({});
  assert.deepEqual(child.cumulative(), [3, 5, 7, 9]);
  assert.equal(child.count, 9);
});

Deno.test("histogram default buckets, a trailing +Inf given, and bad buckets refused", () => {
  const h = new Histogram({ name: "d_seconds", help: "d" });
  assert.deepEqual(h.buckets, DEFAULT_BUCKETS);
  const withInf = new Histogram({ name: "e_seconds", help: "e", buckets: [1, Infinity] });
  assert.deepEqual(withInf.buckets, [1]);
  assert.throws(() => new Histogram({ name: "f", help: "f", buckets: [2, 1] }), /ascending/);
  assert.throws(() => new Histogram({ name: "f", help: "f", buckets: [1, 1] }), /ascending/);
  assert.throws(() => new Histogram({ name: "f", help: "f", buckets: [NaN] }), /finite/);
  assert.throws(
    () => new Histogram({ name: "f", help: "f", labelNames: ["le"] }),
    /label name "le" of f is not valid/,
  );
});

Deno.test("unlabelled metrics show 0 before any update; labelled ones show no samples", () => {
  const registry = new Registry();
  registry.counter({ name: "a_total", help: "a" });
  registry.gauge({ name: "b", help: "b" });
  registry.histogram({ name: "c_seconds", help: "c", buckets: [1] });
  registry.counter({ name: "d_total", help: "d", labelNames: ["k"] });
  assert.equal(
    registry.render(),
    "# HELP a_total a\n# TYPE a_total counter\na_total 0\n" +
      "# HELP b b\n# TYPE b gauge\nb 0\n" +
      '# HELP c_seconds c\n# TYPE c_seconds histogram\nc_seconds_bucket{le="1"} 0\n' +
      'c_seconds_bucket{le="+Inf"} 0\nc_seconds_sum 0\nc_seconds_count 0\n' +
      "# HELP d_total d\n# TYPE d_total counter\n",
  );
});

Deno.test("gauge values: set, inc, dec, special floats, and collect on labelled children", () => {
  const registry = new Registry();
  const g = registry.gauge({ name: "g", help: "g" });
  g.set(10);
  g.inc(0.5);
  g.dec(3);
  assert.equal(g.value, 7.5);
  let calls = 0;
  registry.gauge({
    name: "per_state",
    help: "p",
    labelNames: ["state"],
    collect: (gauge) => {
      calls++;
      gauge.labels({ state: "up" }).set(NaN);
      gauge.labels({ state: "down" }).set(-Infinity);
      gauge.labels({ state: "tiny" }).set(1e-7);
    },
  });
  const text = registry.render();
  assert.equal(calls, 1, "collect runs once per render");
  assert.match(text, /^g 7\.5$/m);
  assert.match(text, /^per_state\{state="up"\} NaN$/m);
  assert.match(text, /^per_state\{state="down"\} -Inf$/m);
  assert.match(text, /^per_state\{state="tiny"\} 1e-7$/m);
});

Deno.test("names follow Prometheus rules: bad names, duplicates and counters without _total refused", () => {
  const registry = new Registry();
  assert.throws(() => registry.counter({ name: "connections", help: "" }), /must end in "_total"/);
  assert.throws(
    () => registry.gauge({ name: "1abc", help: "" }),
    /metric name "1abc" is not valid/,
  );
  assert.throws(() => registry.gauge({ name: "a-b", help: "" }), /not valid/);
  assert.throws(
    () => registry.gauge({ name: "ok", help: "", labelNames: ["__reserved"] }),
    /label name "__reserved"/,
  );
  assert.throws(() => registry.gauge({ name: "ok", help: "", labelNames: ["a-b"] }), /a-b/);
  assert.throws(() => registry.gauge({ name: "ok", help: "", labelNames: ["a", "a"] }), /twice/);
  registry.gauge({ name: "ns:sub_metric", help: "colons are allowed" });
  assert.throws(() => registry.gauge({ name: "ns:sub_metric", help: "" }), /already registered/);
  assert.ok(registry.get("ns:sub_metric") instanceof Gauge);
  assert.equal(registry.unregister("ns:sub_metric"), true);
  assert.equal(registry.get("ns:sub_metric"), undefined);
  const counter = registry.counter({ name: "c_total", help: "" });
  assert.throws(() => counter.inc(-1), /only goes up/);
  assert.throws(() => counter.inc(NaN), /only goes up/);
  assert.equal(counter.value, 0);
});

Deno.test("processMetrics() registers memory and event-loop lag; close() stops its timer", async () => {
  const registry = new Registry();
  const process = processMetrics(registry, { lagInterval: 5, lagWindow: 50 });
  try {
    // Block the loop a little so a probe fires late (no assertion on how late).
    await new Promise((resolve) => setTimeout(resolve, 20));
    const stop = performance.now() + 30;
    while (performance.now() < stop) { /* busy */ }
    await new Promise((resolve) => setTimeout(resolve, 20));
    const text = registry.render();
    for (
      const name of [
        "process_resident_memory_bytes",
        "process_start_time_seconds",
        "deno_heap_used_bytes",
        "deno_heap_total_bytes",
        "deno_event_loop_lag_seconds",
        "deno_event_loop_lag_max_seconds",
      ]
    ) {
      assert.match(text, new RegExp(`^# TYPE ${name} gauge$`, "m"));
      assert.match(text, new RegExp(`^${name} [0-9.e+-]+$`, "m"), name);
    }
    const value = (name: string) => Number(text.match(new RegExp(`^${name} (.+)$`, "m"))![1]);
    assert.ok(value("process_resident_memory_bytes") > 1e6);
    assert.ok(value("deno_heap_used_bytes") <= value("deno_heap_total_bytes"));
    assert.ok(Math.abs(value("process_start_time_seconds") - performance.timeOrigin / 1000) < 1);
    assert.ok(value("deno_event_loop_lag_max_seconds") > 0, "the busy loop made a probe late");
    assert.ok(value("deno_event_loop_lag_max_seconds") >= value("deno_event_loop_lag_seconds"));
    assert.equal(process.lag, value("deno_event_loop_lag_seconds"));
  } finally {
    process.close();
    process.close(); // idempotent
  }
  // The sanitizer checks no timer is left running.
});

Deno.test("RateWindow ('sum'): per-second counts, gaps as zeros, old seconds roll off", () => {
  let now = 10_000_500;
  const w = new RateWindow({ seconds: 4, now: () => now });
  assert.deepEqual(w.series(), { start: 9_996_000, values: [0, 0, 0, 0] });
  w.add();
  w.add(2);
  now += 1000;
  w.add(10);
  now += 2000; // a second with nothing
  w.add(1);
  assert.deepEqual(w.series(), { start: 9_999_000, values: [0, 3, 10, 0] });
  now += 1000;
  assert.deepEqual(w.series(), { start: 10_000_000, values: [3, 10, 0, 1] });
  assert.equal(w.average(2), 0.5);
  assert.equal(w.average(100), 14 / 4, "clamped to the window");
  now += 60_000; // a long idle spell clears everything
  assert.deepEqual(w.series().values, [0, 0, 0, 0]);
  now -= 5000; // a clock that steps back counts into the current second
  w.add(7);
  now += 6000;
  assert.deepEqual(w.series().values, [0, 0, 0, 7]);
});

Deno.test("RateWindow ('last'): a level carried across seconds, moved by add and set", () => {
  let now = 0;
  const open = new RateWindow({ seconds: 3, mode: "last", now: () => now });
  open.add(1);
  open.add(1);
  now += 1000;
  open.add(-1);
  now += 2000;
  open.set(5);
  now += 1000;
  assert.deepEqual(open.series(), { start: 1000, values: [1, 1, 5] });
  now += 10_000;
  assert.deepEqual(open.series().values, [5, 5, 5]);
  assert.throws(() => new RateWindow({ seconds: 0 }), RangeError);
});

Deno.test("hot-path cost of counter inc() and histogram observe() (prints ns per call)", () => {
  const registry = new Registry();
  const child = registry.counter({ name: "hot_total", help: "", labelNames: ["r"] }).labels({
    r: "x",
  });
  const h = registry.histogram({ name: "hot_seconds", help: "" });
  const w = new RateWindow();
  const n = 2_000_000;
  let t = performance.now();
  for (let i = 0; i < n; i++) child.inc();
  const incNs = (performance.now() - t) * 1e6 / n;
  t = performance.now();
  for (let i = 0; i < n; i++) h.observe((i % 1000) / 100);
  const observeNs = (performance.now() - t) * 1e6 / n;
  t = performance.now();
  for (let i = 0; i < n; i++) w.add(1);
  const addNs = (performance.now() - t) * 1e6 / n;
  assert.equal(child.value, n);
  // deno-lint-ignore no-console
  console.log(
    `inc ${incNs.toFixed(1)} ns, observe ${observeNs.toFixed(1)} ns, ` +
      `RateWindow.add ${addNs.toFixed(1)} ns per call`,
  );
});
