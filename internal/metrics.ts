// A tiny Prometheus registry: counters, gauges and histograms rendered in the
// text exposition format 0.0.4, plus the process metrics every server exports
// and a per-second ring buffer for the live page. Counting is on the hot path
// (every accept, message, write), so a labelled child is resolved once and its
// `inc()` is an addition; all string work happens at render time, per scrape.

/** Label values by label name, e.g. `{ reason: "per-ip" }`. */
export type LabelValues = Readonly<Record<string, string>>;

/** What every metric is declared with. */
export interface MetricOptions {
  /**
   * The metric's name: `[a-zA-Z_:][a-zA-Z0-9_:]*`, in base units with the
   * unit as suffix (`_seconds`, `_bytes`); counters end in `_total`.
   */
  name: string;
  /** One line saying what it measures, for the `# HELP` line. */
  help: string;
  /** The label names, in the order they are written. @default {[]} */
  labelNames?: readonly string[];
}

/** Options for {@linkcode Gauge}. */
export interface GaugeOptions extends MetricOptions {
  /**
   * Called at every render before the gauge is written: set values on the
   * gauge (or its children) there, or return the value of an unlabelled
   * gauge. For what is cheaper to read on a scrape than to keep up to date
   * (memory, the size of a table).
   */
  collect?: (gauge: Gauge) => number | void;
}

/** Options for {@linkcode Histogram}. */
export interface HistogramOptions extends MetricOptions {
  /**
   * The upper bounds of the buckets, ascending; `+Inf` is added. The label
   * name `le` is taken.
   * @default {DEFAULT_BUCKETS}
   */
  buckets?: readonly number[];
}

/** The Prometheus clients' default buckets, for latencies in seconds. */
export const DEFAULT_BUCKETS: readonly number[] = Object.freeze([
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
]);

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** A sample value as the text format writes it: `+Inf`, `-Inf`, `NaN`, or a Go-parsable float. */
function formatValue(n: number): string {
  if (n === Infinity) return "+Inf";
  if (n === -Infinity) return "-Inf";
  return String(n); // "NaN", "1", "0.25", "1e-7", "1e+21": all valid for Go's ParseFloat
}

/** Escapes a label value: backslash, double quote and line feed. */
function escapeLabel(value: string): string {
  return value.replace(/[\\"\n]/g, (c) => c === "\\" ? "\\\\" : c === '"' ? '\\"' : "\\n");
}

/** Escapes HELP text: backslash and line feed. */
function escapeHelp(text: string): string {
  return text.replace(/[\\\n]/g, (c) => c === "\\" ? "\\\\" : "\\n");
}

/** `name="value",…` (no braces), names in declared order. */
function labelPairs(names: readonly string[], values: LabelValues): string {
  let out = "";
  for (const name of names) {
    if (out !== "") out += ",";
    out += `${name}="${escapeLabel(values[name])}"`;
  }
  return out;
}

function braces(pairs: string): string {
  return pairs === "" ? "" : `{${pairs}}`;
}

/**
 * The common part of every metric: name, help, label names, and its children
 * by label values. Extended by {@linkcode Counter}, {@linkcode Gauge} and
 * {@linkcode Histogram}; not meant to be extended elsewhere.
 */
export abstract class Metric<Child> {
  /** The metric's name. */
  readonly name: string;
  /** Its HELP text. */
  readonly help: string;
  /** Its label names. */
  readonly labelNames: readonly string[];
  /** `counter`, `gauge` or `histogram`. */
  abstract readonly type: "counter" | "gauge" | "histogram";
  readonly #children = new Map<string, Child>();
  #default: Child | undefined;

  /**
   * Checks and keeps the name, help and label names.
   *
   * @param options Name, help and label names.
   * @param reserved Label names the metric type keeps for itself (`le`).
   * @throws {RangeError} A bad metric or label name, or a label name twice.
   */
  constructor(options: MetricOptions, reserved: readonly string[] = []) {
    const { name, help } = options;
    const labelNames = Object.freeze([...(options.labelNames ?? [])]);
    if (!METRIC_NAME.test(name)) {
      throw new RangeError(
        `metric name ${JSON.stringify(name)} is not valid: use letters, digits, '_' and ':', ` +
          "not starting with a digit, e.g. netkit_connections_total",
      );
    }
    for (const label of labelNames) {
      if (!LABEL_NAME.test(label) || label.startsWith("__") || reserved.includes(label)) {
        throw new RangeError(
          `label name ${JSON.stringify(label)} of ${name} is not valid: use letters, digits and ` +
            `'_', not starting with a digit or "__"${
              reserved.length ? `, and not ${reserved.join(", ")}` : ""
            }`,
        );
      }
    }
    if (new Set(labelNames).size !== labelNames.length) {
      throw new RangeError(`metric ${name} lists a label name twice`);
    }
    this.name = name;
    this.help = help;
    this.labelNames = labelNames;
  }

  /**
   * The child for these label values, created on first use and kept. Resolve
   * it once (when the server starts, or the first time a reason occurs) and
   * keep it: its `inc()`/`observe()` is then the whole hot-path cost.
   *
   * @throws {TypeError} A label name missing or not declared, or a value not a string.
   */
  labels(values: LabelValues): Child {
    const names = this.labelNames;
    let key = "";
    for (const name of names) {
      const value = values[name];
      if (typeof value !== "string") {
        throw new TypeError(`metric ${this.name} needs a string value for label "${name}"`);
      }
      key += value + "\u0000";
    }
    for (const name in values) {
      if (!names.includes(name)) {
        throw new TypeError(
          `metric ${this.name} has no label "${name}" (its labels: ${names.join(", ") || "none"})`,
        );
      }
    }
    let child = this.#children.get(key);
    if (child === undefined) {
      child = this.newChild(labelPairs(names, values));
      this.#children.set(key, child);
    }
    return child;
  }

  /** The unlabelled child, for a metric declared without labels. */
  protected get default(): Child {
    if (this.#default !== undefined) return this.#default;
    if (this.labelNames.length > 0) {
      throw new TypeError(
        `metric ${this.name} has labels (${this.labelNames.join(", ")}): ` +
          "call .labels({...}) and use the child it returns",
      );
    }
    return this.#default = this.labels({});
  }

  /** The children, in creation order. */
  protected children(): IterableIterator<Child> {
    return this.#children.values();
  }

  /** Makes the child for one set of label values, given as rendered `name="value"` pairs. */
  protected abstract newChild(pairs: string): Child;

  /** Appends this metric's sample lines (no HELP/TYPE) to `out`. */
  abstract writeSamples(out: string[]): void;

  /** Appends HELP, TYPE and sample lines to `out`. */
  write(out: string[]): void {
    out.push(`# HELP ${this.name} ${escapeHelp(this.help)}\n# TYPE ${this.name} ${this.type}\n`);
    this.writeSamples(out);
  }
}

/** One labelled series of a {@linkcode Counter}. */
export class CounterChild {
  #value = 0;
  /** @internal The rendered labels, `a="x",b="y"`. */
  readonly pairs: string;

  /**
   * Made by {@linkcode Counter.labels}; not constructed directly.
   *
   * @param pairs The rendered labels.
   */
  constructor(pairs: string) {
    this.pairs = pairs;
  }

  /**
   * Adds `n` (default 1).
   * @throws {RangeError} `n` is negative or NaN: a counter only goes up.
   */
  inc(n = 1): void {
    if (!(n >= 0)) throw new RangeError(`a counter only goes up: inc(${n})`);
    this.#value += n;
  }

  /** The current count. */
  get value(): number {
    return this.#value;
  }
}

/**
 * A count that only goes up: connections accepted, bytes sent, refusals by
 * reason. Its name ends in `_total`.
 *
 * @example A labelled counter, children resolved once
 * ```ts
 * import { Registry } from "./metrics.ts";
 * import assert from "node:assert/strict";
 *
 * const registry = new Registry();
 * const refused = registry.counter({
 *   name: "netkit_connections_refused_total",
 *   help: "Connections closed at accept, by reason.",
 *   labelNames: ["reason"],
 * });
 * const perIp = refused.labels({ reason: "per-ip" }); // once, at start-up
 * perIp.inc();
 * perIp.inc();
 * assert.equal(perIp.value, 2);
 * assert.match(registry.render(), /^netkit_connections_refused_total\{reason="per-ip"\} 2$/m);
 * ```
 */
export class Counter extends Metric<CounterChild> {
  /** Always `"counter"`. */
  readonly type = "counter" as const;

  /**
   * Declares a counter; register it with {@linkcode Registry.register}, or
   * use {@linkcode Registry.counter} to do both.
   *
   * @param options Name (ending in `_total`), help and label names.
   * @throws {RangeError} A bad metric or label name.
   */
  constructor(options: MetricOptions) {
    super(options);
    if (!options.name.endsWith("_total")) {
      throw new RangeError(
        `counter name ${JSON.stringify(options.name)} must end in "_total" (Prometheus naming)`,
      );
    }
  }

  /** Adds `n` (default 1) to the unlabelled counter. */
  inc(n = 1): void {
    this.default.inc(n);
  }

  /** The unlabelled counter's value. */
  get value(): number {
    return this.default.value;
  }

  /** Makes the child for one set of label values. */
  protected newChild(pairs: string): CounterChild {
    return new CounterChild(pairs);
  }

  /** Appends the sample lines. */
  writeSamples(out: string[]): void {
    if (this.labelNames.length === 0) void this.default; // an unlabelled counter shows 0
    for (const child of this.children()) {
      out.push(`${this.name}${braces(child.pairs)} ${formatValue(child.value)}\n`);
    }
  }
}

/** One labelled series of a {@linkcode Gauge}. */
export class GaugeChild {
  #value = 0;
  /** @internal The rendered labels. */
  readonly pairs: string;

  /**
   * Made by {@linkcode Gauge.labels}; not constructed directly.
   *
   * @param pairs The rendered labels.
   */
  constructor(pairs: string) {
    this.pairs = pairs;
  }

  /** Sets the value. */
  set(value: number): void {
    this.#value = value;
  }

  /** Adds `n` (default 1). */
  inc(n = 1): void {
    this.#value += n;
  }

  /** Subtracts `n` (default 1). */
  dec(n = 1): void {
    this.#value -= n;
  }

  /** The current value. */
  get value(): number {
    return this.#value;
  }
}

/**
 * A value that goes up and down: connections open now, memory. Either kept
 * up to date (`set`, `inc`, `dec`) or read at scrape time by `collect`.
 *
 * @example Set, and collected
 * ```ts
 * import { Registry } from "./metrics.ts";
 * import assert from "node:assert/strict";
 *
 * const registry = new Registry();
 * const open = registry.gauge({ name: "netkit_connections", help: "Connections open now." });
 * open.inc();
 * open.inc();
 * open.dec();
 * let tableSize = 42;
 * registry.gauge({ name: "netkit_admission_keys", help: "Addresses tracked.", collect: () => tableSize });
 * const text = registry.render();
 * assert.match(text, /^netkit_connections 1$/m);
 * assert.match(text, /^netkit_admission_keys 42$/m);
 * ```
 */
export class Gauge extends Metric<GaugeChild> {
  /** Always `"gauge"`. */
  readonly type = "gauge" as const;
  readonly #collect: ((gauge: Gauge) => number | void) | undefined;

  /**
   * Declares a gauge; {@linkcode Registry.gauge} declares and registers.
   *
   * @param options Name, help, label names and an optional `collect`.
   * @throws {RangeError} A bad metric or label name.
   */
  constructor(options: GaugeOptions) {
    super(options);
    this.#collect = options.collect;
  }

  /** Sets the unlabelled gauge. */
  set(value: number): void {
    this.default.set(value);
  }

  /** Adds `n` (default 1) to the unlabelled gauge. */
  inc(n = 1): void {
    this.default.inc(n);
  }

  /** Subtracts `n` (default 1) from the unlabelled gauge. */
  dec(n = 1): void {
    this.default.dec(n);
  }

  /** The unlabelled gauge's value. */
  get value(): number {
    return this.default.value;
  }

  /** Makes the child for one set of label values. */
  protected newChild(pairs: string): GaugeChild {
    return new GaugeChild(pairs);
  }

  /** Runs `collect`, then appends the sample lines. */
  writeSamples(out: string[]): void {
    if (this.#collect !== undefined) {
      const value = this.#collect(this);
      if (typeof value === "number") this.set(value);
    }
    if (this.labelNames.length === 0) void this.default;
    for (const child of this.children()) {
      out.push(`${this.name}${braces(child.pairs)} ${formatValue(child.value)}\n`);
    }
  }
}

/** One labelled series of a {@linkcode Histogram}. */
export class HistogramChild {
  readonly #bounds: Float64Array;
  // Per bucket, not cumulative: observe() adds to one slot; render sums.
  readonly #counts: Float64Array;
  #sum = 0;
  #count = 0;
  /** @internal The rendered labels. */
  readonly pairs: string;

  /**
   * Made by {@linkcode Histogram.labels}; not constructed directly.
   *
   * @param pairs The rendered labels.
   * @param bounds The bucket upper bounds, ascending, without `+Inf`.
   */
  constructor(pairs: string, bounds: Float64Array) {
    this.pairs = pairs;
    this.#bounds = bounds;
    this.#counts = new Float64Array(bounds.length + 1);
  }

  /** Records one observation, e.g. a round trip in seconds. */
  observe(value: number): void {
    const bounds = this.#bounds;
    let i = 0;
    while (i < bounds.length && value > bounds[i]) i++;
    this.#counts[i]++;
    this.#sum += value;
    this.#count++;
  }

  /** How many observations. */
  get count(): number {
    return this.#count;
  }

  /** Their sum. */
  get sum(): number {
    return this.#sum;
  }

  /** Cumulative counts per bucket, `+Inf` last (as rendered). */
  cumulative(): number[] {
    const out: number[] = [];
    let total = 0;
    for (const c of this.#counts) out.push(total += c);
    return out;
  }
}

/**
 * A distribution in fixed buckets: ping round trips, handshake times.
 * Rendered as cumulative `_bucket{le="…"}` series (with `+Inf`), `_sum` and
 * `_count`. `observe()` scans the bucket bounds (a dozen) and adds.
 *
 * @example
 * ```ts
 * import { Registry } from "./metrics.ts";
 * import assert from "node:assert/strict";
 *
 * const registry = new Registry();
 * const rtt = registry.histogram({
 *   name: "netkit_ping_rtt_seconds",
 *   help: "WebSocket ping round trips.",
 *   buckets: [0.01, 0.1],
 * });
 * rtt.observe(0.005);
 * rtt.observe(0.05);
 * rtt.observe(2);
 * assert.equal(
 *   registry.render(),
 *   "# HELP netkit_ping_rtt_seconds WebSocket ping round trips.\n" +
 *     "# TYPE netkit_ping_rtt_seconds histogram\n" +
 *     'netkit_ping_rtt_seconds_bucket{le="0.01"} 1\n' +
 *     'netkit_ping_rtt_seconds_bucket{le="0.1"} 2\n' +
 *     'netkit_ping_rtt_seconds_bucket{le="+Inf"} 3\n' +
 *     "netkit_ping_rtt_seconds_sum 2.055\n" +
 *     "netkit_ping_rtt_seconds_count 3\n",
 * );
 * ```
 */
export class Histogram extends Metric<HistogramChild> {
  /** Always `"histogram"`. */
  readonly type = "histogram" as const;
  /** The bucket upper bounds, without `+Inf`. */
  readonly buckets: readonly number[];
  readonly #bounds: Float64Array;
  readonly #les: string[];

  /**
   * Declares a histogram; {@linkcode Registry.histogram} declares and registers.
   *
   * @param options Name, help, label names and buckets.
   * @throws {RangeError} A bad name, the label `le`, or buckets not finite and ascending.
   */
  constructor(options: HistogramOptions) {
    super(options, ["le"]);
    const buckets = [...(options.buckets ?? DEFAULT_BUCKETS)];
    if (buckets.at(-1) === Infinity) buckets.pop();
    for (let i = 0; i < buckets.length; i++) {
      if (!Number.isFinite(buckets[i]) || (i > 0 && buckets[i] <= buckets[i - 1])) {
        throw new RangeError(
          `histogram ${options.name}: buckets must be finite and strictly ascending, got ${
            JSON.stringify(options.buckets)
          }`,
        );
      }
    }
    this.buckets = Object.freeze(buckets);
    this.#bounds = Float64Array.from(buckets);
    this.#les = [...buckets.map(formatValue), "+Inf"];
  }

  /** Records one observation on the unlabelled histogram. */
  observe(value: number): void {
    this.default.observe(value);
  }

  /** Makes the child for one set of label values. */
  protected newChild(pairs: string): HistogramChild {
    return new HistogramChild(pairs, this.#bounds);
  }

  /** Appends the `_bucket`, `_sum` and `_count` lines of every child. */
  writeSamples(out: string[]): void {
    if (this.labelNames.length === 0) void this.default;
    const les = this.#les;
    for (const child of this.children()) {
      const sep = child.pairs === "" ? "" : ",";
      const cumulative = child.cumulative();
      for (let i = 0; i < les.length; i++) {
        out.push(
          `${this.name}_bucket{${child.pairs}${sep}le="${les[i]}"} ${formatValue(cumulative[i])}\n`,
        );
      }
      out.push(`${this.name}_sum${braces(child.pairs)} ${formatValue(child.sum)}\n`);
      out.push(`${this.name}_count${braces(child.pairs)} ${formatValue(child.count)}\n`);
    }
  }
}

/** Any metric a {@linkcode Registry} holds. */
export type AnyMetric = Counter | Gauge | Histogram;

/**
 * A set of metrics rendered together, in registration order, as the
 * Prometheus text exposition format 0.0.4 — what `/metrics` answers, with
 * the header `Content-Type: text/plain; version=0.0.4; charset=utf-8`
 * ({@linkcode Registry.contentType}).
 *
 * @example The whole output, byte for byte
 * ```ts
 * import { Registry } from "./metrics.ts";
 * import assert from "node:assert/strict";
 *
 * const registry = new Registry();
 * const accepted = registry.counter({
 *   name: "netkit_connections_accepted_total",
 *   help: "Connections accepted.",
 * });
 * const open = registry.gauge({ name: "netkit_connections", help: "Connections open now." });
 * accepted.inc();
 * open.set(1);
 * assert.equal(
 *   registry.render(),
 *   "# HELP netkit_connections_accepted_total Connections accepted.\n" +
 *     "# TYPE netkit_connections_accepted_total counter\n" +
 *     "netkit_connections_accepted_total 1\n" +
 *     "# HELP netkit_connections Connections open now.\n" +
 *     "# TYPE netkit_connections gauge\n" +
 *     "netkit_connections 1\n",
 * );
 * ```
 */
export class Registry {
  /** The `Content-Type` of {@linkcode Registry.render}'s output. */
  static readonly contentType = "text/plain; version=0.0.4; charset=utf-8";
  readonly #metrics = new Map<string, AnyMetric>();

  /**
   * Adds a metric made elsewhere.
   * @throws {RangeError} A metric of that name is already registered.
   */
  register<M extends AnyMetric>(metric: M): M {
    if (this.#metrics.has(metric.name)) {
      throw new RangeError(`a metric named ${metric.name} is already registered`);
    }
    this.#metrics.set(metric.name, metric);
    return metric;
  }

  /** Creates and registers a {@linkcode Counter}. */
  counter(options: MetricOptions): Counter {
    return this.register(new Counter(options));
  }

  /** Creates and registers a {@linkcode Gauge}. */
  gauge(options: GaugeOptions): Gauge {
    return this.register(new Gauge(options));
  }

  /** Creates and registers a {@linkcode Histogram}. */
  histogram(options: HistogramOptions): Histogram {
    return this.register(new Histogram(options));
  }

  /** The metric of that name, if registered. */
  get(name: string): AnyMetric | undefined {
    return this.#metrics.get(name);
  }

  /** Removes a metric; returns whether it was there. */
  unregister(name: string): boolean {
    return this.#metrics.delete(name);
  }

  /** Every metric with its HELP and TYPE lines, each line ending in `\n`. */
  render(): string {
    const out: string[] = [];
    for (const metric of this.#metrics.values()) metric.write(out);
    return out.join("");
  }
}

/** Options for {@linkcode processMetrics}. */
export interface ProcessMetricsOptions {
  /**
   * How often the event-loop probe runs, in milliseconds. Each run measures
   * how late its timer fired; a blocked loop makes it late.
   * @default {100}
   */
  lagInterval?: number;
  /**
   * The window the `…_lag_max_seconds` gauge covers, in milliseconds.
   * @default {10000}
   */
  lagWindow?: number;
}

/** What {@linkcode processMetrics} returns: stop its probe with `close()`. */
export interface ProcessMetrics extends Disposable {
  /** The last measured event-loop lag, in seconds. */
  readonly lag: number;
  /** Stops the event-loop probe timer. Idempotent. */
  close(): void;
}

/**
 * Registers the process's own metrics on `registry`:
 * `process_resident_memory_bytes`, `process_start_time_seconds`,
 * `deno_heap_used_bytes`, `deno_heap_total_bytes`,
 * `deno_event_loop_lag_seconds` (how late the last probe timer fired) and
 * `deno_event_loop_lag_max_seconds` (the worst in the last `lagWindow`).
 * Memory is read at render time; lag by a probe timer that does not keep
 * the process alive (`Deno.unrefTimer`). Call `close()` when the server
 * stops, so the timer is gone (tests' sanitizers check).
 *
 * @example
 * ```ts
 * import { processMetrics, Registry } from "./metrics.ts";
 * import assert from "node:assert/strict";
 *
 * const registry = new Registry();
 * using _process = processMetrics(registry);
 * const text = registry.render();
 * assert.match(text, /^process_resident_memory_bytes \d+$/m);
 * assert.match(text, /^deno_heap_used_bytes \d+$/m);
 * assert.match(text, /^# TYPE deno_event_loop_lag_seconds gauge$/m);
 * ```
 */
export function processMetrics(
  registry: Registry,
  options: ProcessMetricsOptions = {},
): ProcessMetrics {
  const interval = options.lagInterval ?? 100;
  const window = options.lagWindow ?? 10_000;
  if (!(interval >= 1) || !(window >= interval)) {
    throw new RangeError("processMetrics needs lagInterval >= 1 and lagWindow >= lagInterval");
  }
  // Memory is read once per render and shared by the three gauges.
  let memory: Deno.MemoryUsage | undefined;
  registry.gauge({
    name: "process_resident_memory_bytes",
    help: "Resident memory size in bytes.",
    collect: () => (memory = Deno.memoryUsage()).rss,
  });
  registry.gauge({
    name: "process_start_time_seconds",
    help: "Start time of the process since unix epoch in seconds.",
  }).set(Math.round(performance.timeOrigin) / 1000);
  registry.gauge({
    name: "deno_heap_used_bytes",
    help: "V8 heap in use, in bytes.",
    collect: () => (memory ?? Deno.memoryUsage()).heapUsed,
  });
  registry.gauge({
    name: "deno_heap_total_bytes",
    help: "V8 heap reserved, in bytes.",
    collect: () => {
      const total = (memory ?? Deno.memoryUsage()).heapTotal;
      memory = undefined;
      return total;
    },
  });

  const ring = new Float64Array(Math.ceil(window / interval));
  let at = 0;
  let lag = 0;
  let closed = false;
  let expected = performance.now() + interval;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const probe = () => {
    const now = performance.now();
    lag = Math.max(0, now - expected) / 1000;
    ring[at] = lag;
    at = (at + 1) % ring.length;
    schedule(now);
  };
  const schedule = (now: number) => {
    if (closed) return;
    expected = now + interval;
    const t = setTimeout(probe, interval);
    Deno.unrefTimer(t);
    timer = t;
  };
  schedule(performance.now());
  registry.gauge({
    name: "deno_event_loop_lag_seconds",
    help: "How late the last event-loop probe timer fired, in seconds.",
    collect: () => lag,
  });
  registry.gauge({
    name: "deno_event_loop_lag_max_seconds",
    help: `The latest an event-loop probe timer fired in the last ${window / 1000} s, in seconds.`,
    collect: () => {
      let max = 0;
      for (const v of ring) if (v > max) max = v;
      return max;
    },
  });

  const close = () => {
    closed = true;
    if (timer !== undefined) clearTimeout(timer);
    timer = undefined;
  };
  return {
    get lag() {
      return lag;
    },
    close,
    [Symbol.dispose]: close,
  };
}

/** Options for {@linkcode RateWindow}. */
export interface RateWindowOptions {
  /** How many seconds of history to keep. @default {300} (five minutes) */
  seconds?: number;
  /**
   * `"sum"`: each second's value is what was `add`ed during it (messages,
   * bytes). `"last"`: a level carried from second to second (connections
   * open), moved by `add(±n)` or `set`.
   * @default {"sum"}
   */
  mode?: "sum" | "last";
  /** The clock, in milliseconds since the epoch. @default {Date.now} */
  now?: () => number;
}

/** A {@linkcode RateWindow}'s history, ready for a chart (and `JSON.stringify`). */
export interface RateSeries {
  /** The start of the first second, in milliseconds since the epoch. */
  start: number;
  /** One value per second, oldest first; the current, unfinished second is not included. */
  values: number[];
}

/**
 * Per-second values over the last few minutes, in a ring buffer: what the
 * live page charts (messages/s, bytes/s, connections). `add` is O(1) and
 * allocates nothing; seconds with nothing added read as 0 (`"sum"`) or as the
 * level before (`"last"`). No timer: the clock is read when values arrive or
 * are read, so an idle window costs nothing and needs no `close()`.
 *
 * `add` reads the clock (tens of nanoseconds): for a count already kept by
 * a {@linkcode Counter} on a hot path (every message, every write), feed the
 * window once a second from the page's own timer instead,
 * `window.add(counter.value - last)`.
 *
 * @example Messages per second, on an injected clock
 * ```ts
 * import { RateWindow } from "./metrics.ts";
 * import assert from "node:assert/strict";
 *
 * let now = 1_000_000;
 * const messages = new RateWindow({ seconds: 3, now: () => now });
 * messages.add(5);
 * now += 1000;
 * messages.add(2);
 * now += 2000;
 * assert.deepEqual(messages.series(), { start: 1_000_000, values: [5, 2, 0] });
 * assert.equal(messages.average(3), 7 / 3);
 * ```
 */
export class RateWindow {
  readonly #ring: Float64Array; // one slot per second, plus the current one
  readonly #last: boolean;
  readonly #now: () => number;
  #second: number; // the current second, in seconds since the epoch
  #pos = 0; // its slot

  /**
   * Makes an empty window (all zeros) ending at the current second.
   *
   * @param options History length, mode and clock.
   * @throws {RangeError} `seconds` is not a positive integer.
   */
  constructor(options: RateWindowOptions = {}) {
    const seconds = options.seconds ?? 300;
    if (!Number.isSafeInteger(seconds) || seconds < 1) {
      throw new RangeError(`seconds must be a positive integer, got ${seconds}`);
    }
    this.#ring = new Float64Array(seconds + 1);
    this.#last = options.mode === "last";
    this.#now = options.now ?? Date.now;
    this.#second = Math.floor(this.#now() / 1000);
  }

  /** Adds `n` (default 1) to the current second (or, in `"last"` mode, to the level). */
  add(n = 1): void {
    this.#advance();
    this.#ring[this.#pos] += n;
  }

  /** Sets the current second's value (the level, in `"last"` mode). */
  set(value: number): void {
    this.#advance();
    this.#ring[this.#pos] = value;
  }

  /** The finished seconds, oldest first, and when the first began. */
  series(): RateSeries {
    this.#advance();
    const ring = this.#ring;
    const values: number[] = [];
    for (let i = 1; i < ring.length; i++) values.push(ring[(this.#pos + i) % ring.length]);
    return { start: (this.#second - (ring.length - 1)) * 1000, values };
  }

  /** The mean over the last `seconds` finished seconds. */
  average(seconds = 10): number {
    const { values } = this.series();
    const n = Math.min(Math.max(1, Math.floor(seconds)), values.length);
    let sum = 0;
    for (let i = values.length - n; i < values.length; i++) sum += values[i];
    return sum / n;
  }

  /** Moves the current slot to this second, clearing (or carrying) skipped ones. */
  #advance(): void {
    const second = Math.floor(this.#now() / 1000);
    // A clock that steps back keeps counting into the current second.
    if (second <= this.#second) return;
    const ring = this.#ring;
    const steps = Math.min(second - this.#second, ring.length);
    for (let i = 0; i < steps; i++) {
      const next = (this.#pos + 1) % ring.length;
      ring[next] = this.#last ? ring[this.#pos] : 0;
      this.#pos = next;
    }
    this.#second = second;
  }
}
