/**
 * The bench's report: per (scenario, server) the median over the rounds and
 * its ratio against the family's reference, as markdown tables, followed by
 * notes (bottlenecks, noise, goals met or not) and the load-client commands
 * that reproduce each row; and the same run as JSON.
 *
 * @module
 */
import { procsFor, REWARM_S } from "./_loadgen.ts";
import { groupOf, SERVERS, titleOf } from "./scenarios/mod.ts";
import { DEFLATE_GROUP } from "./scenarios/compression.ts";
import type {
  Ctx,
  Family,
  LoadgenResult,
  Mode,
  Options,
  Sample,
  Scenario,
  ServerDef,
} from "./_types.ts";

/** The median; NaN for none. */
export const median = (xs: number[]): number => {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
};

/** The figure a scenario is judged by: MB/s for streams, operations per second otherwise. */
export const metricOf = (sc: Scenario, r: LoadgenResult): number =>
  sc.mode === "stream" ? r.mb_per_s : r.ops_per_s;
const UNITS: Record<Mode, string> = {
  rr: "rt/s",
  stream: "MB/s",
  handshake: "hs/s",
  "ws-rr": "rt/s",
  "ws-fanout": "deliveries/s",
};
/** The unit of {@linkcode metricOf}. */
export const unitOf = (sc: Scenario): string => UNITS[sc.mode];
/** A whole number with thousands separators. */
export const int = (n: number): string => Math.round(n).toLocaleString("en-US");
/** milliseconds from microseconds, with 2-3 significant digits */
export const ms = (us: number): string => {
  const v = us / 1000;
  return v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0);
};

const HEADER = [
  "scenario",
  "server",
  "result (median ±half-range)",
  "ratio vs read/write loop",
  "server CPU s (% of a core)",
  "server CPU µs/op",
  "server peak RSS MiB",
  "load client CPU %",
  "others' CPU %",
];
/** the WebSocket table: the reference is the bare Deno server; latency and losses too */
const WS_HEADER = [
  ...HEADER.slice(0, 3),
  "ratio vs bare Deno",
  "latency p50 / p99 ms",
  "lost / out of order / closed",
  ...HEADER.slice(4),
];
/** the permessage-deflate table: the reference is netkit uncompressed; bytes and memory too */
const DEFLATE_HEADER = [
  "server",
  "deliveries/s (median ±half-range)",
  "ratio vs uncompressed",
  "server CPU µs/delivery",
  "wire bytes/delivery",
  "server peak RSS MiB",
  "RSS per connection KiB",
  "latency p50 / p99 ms",
  "lost / out of order / closed",
  "compressed conns",
  "load client CPU %",
];
const isDeflate = (sc: Scenario) => groupOf(sc) === DEFLATE_GROUP;
const headerOf = (sc: Scenario) =>
  isDeflate(sc) ? DEFLATE_HEADER : sc.family === "ws" ? WS_HEADER : HEADER;

interface Row {
  scenario: Scenario;
  server: ServerDef;
  cells: string[];
  ratio?: number;
  clientPct?: number;
  othersPct?: number;
  spread?: number;
  ratioSpread?: number;
  /** median p99 latency in µs (ws) */
  p99?: number;
  /** the median of the metric */
  value?: number;
  /** per round: the metric (for ratios between rows other than the reference) */
  byRound?: Map<number, number>;
}

/** The compression table's cells for a row already summarized (the same samples). */
function deflateCells(row: Row, samples: Sample[]): string[] {
  const sc = row.scenario;
  const mine = samples.filter((s) => s.scenario === sc.id && s.server === row.server.id);
  const ok = mine.filter((s) => s.ok && s.result);
  if (!ok.length) {
    const cells = [row.server.label, row.cells[2]];
    while (cells.length < DEFLATE_HEADER.length) cells.push("");
    return cells;
  }
  const r = (f: (x: LoadgenResult) => number | undefined) =>
    median(ok.map((s) => f(s.result!) ?? NaN));
  const perOp = median(ok.map((s) => (s.result!.server_cpu_s ?? NaN) / s.result!.ops * 1e6));
  const wire = r((x) => x.wire_bytes_per_delivery);
  const peak = Math.max(...ok.map((s) => s.peakRssBytes ?? NaN));
  const idle = Math.max(...ok.map((s) => s.idleRssBytes ?? NaN));
  // every connection the load client opens: the subscribers and the publisher
  const perConn = (peak - idle) / (sc.conns + 1);
  const ran = mine.filter((s) => s.result);
  const sum = (f: (x: LoadgenResult) => number | undefined) =>
    ran.reduce((n, s) => n + (f(s.result!) ?? 0), 0);
  const code = ran.find((s) => s.result!.close_code)?.result?.close_code;
  const agreed = r((x) => x.deflate_conns);
  return [
    row.server.label,
    row.cells[2],
    row.server.baseline ? "1.00 (reference)" : row.ratio === undefined ? "–" : row.ratio.toFixed(2),
    Number.isFinite(perOp) ? perOp.toFixed(perOp < 100 ? 2 : 0) : "–",
    Number.isFinite(wire) ? wire.toFixed(0) : "–",
    Number.isFinite(peak) ? (peak / 1048576).toFixed(0) : "–",
    Number.isFinite(perConn) ? (perConn / 1024).toFixed(0) : "–",
    `${ms(r((x) => x.p50_us))} / ${ms(r((x) => x.p99_us))}`,
    `${sum((x) => x.lost)} / ${sum((x) => x.out_of_order)} / ${sum((x) => x.closes)}${
      code ? ` (${code})` : ""
    }`,
    Number.isFinite(agreed) ? `${agreed.toFixed(0)} of ${sc.conns + 1}` : "–",
    `${r((x) => x.cpu_pct).toFixed(0)}%`,
  ];
}

function summarize(
  sc: Scenario,
  def: ServerDef,
  baseline: ServerDef | undefined,
  samples: Sample[],
  opts: Options,
): Row {
  const mine = samples.filter((s) => s.scenario === sc.id && s.server === def.id);
  const ok = mine.filter((s) => s.ok && s.result);
  if (!ok.length) {
    const err = mine.find((s) => s.error)?.error ?? "no samples";
    const cells = [titleOf(sc, opts), def.label, `FAILED: ${err.replaceAll("|", "/")}`];
    while (cells.length < headerOf(sc).length) cells.push("");
    return { scenario: sc, server: def, cells };
  }
  const values = ok.map((s) => metricOf(sc, s.result!));
  const value = median(values);
  const spread = values.length > 1 ? (Math.max(...values) - Math.min(...values)) / 2 / value : 0;
  let ratio: number | undefined;
  let ratioSpread: number | undefined;
  if (baseline) {
    const ratios: number[] = [];
    for (const s of ok) {
      const b = samples.find((x) =>
        x.scenario === sc.id && x.server === baseline.id && x.round === s.round && x.ok && x.result
      );
      if (b) ratios.push(metricOf(sc, s.result!) / metricOf(sc, b.result!));
    }
    if (ratios.length) ratio = median(ratios);
    if (ratios.length > 1) {
      ratioSpread = (Math.max(...ratios) - Math.min(...ratios)) / 2 / ratio!;
    }
  }
  const serverCpu = median(ok.map((s) => s.result!.server_cpu_s ?? NaN));
  const serverPct = median(ok.map((s) => s.result!.server_cpu_pct ?? NaN));
  const perOp = median(ok.map((s) => (s.result!.server_cpu_s ?? NaN) / s.result!.ops * 1e6));
  const rss = Math.max(...ok.map((s) => s.peakRssBytes ?? NaN));
  const clientPct = median(ok.map((s) => s.result!.cpu_pct));
  const othersPct = median(ok.map((s) => s.result!.others_cpu_pct ?? NaN));
  const result = `${int(value)} ${unitOf(sc)}` +
    (opts.rounds > 1 ? ` ±${(spread * 100).toFixed(0)}%` : "") +
    (ok.length < mine.length ? ` (${mine.length - ok.length} failed)` : "");
  const wsCells: string[] = [];
  let p99: number | undefined;
  if (sc.family === "ws") {
    const p50 = median(ok.map((s) => s.result!.p50_us ?? NaN));
    p99 = median(ok.map((s) => s.result!.p99_us ?? NaN));
    wsCells.push(Number.isFinite(p99) ? `${ms(p50)} / ${ms(p99)}` : "–");
    // every run that got as far as a result line, failed ones too: losses fail a run
    const ran = mine.filter((s) => s.result);
    const sum = (f: (r: LoadgenResult) => number | undefined) =>
      ran.reduce((n, s) => n + (f(s.result!) ?? 0), 0);
    const code = ran.find((s) => s.result!.close_code)?.result?.close_code;
    const closed = `${sum((r) => r.closes)}${code ? ` (${code})` : ""}`;
    wsCells.push(
      sc.mode === "ws-fanout"
        ? `${sum((r) => r.lost)} / ${sum((r) => r.out_of_order)} / ${closed}`
        : `– / – / ${closed}`,
    );
  }
  return {
    scenario: sc,
    server: def,
    ratio,
    ratioSpread,
    clientPct,
    othersPct,
    spread,
    p99,
    value,
    byRound: new Map(ok.map((s) => [s.round, metricOf(sc, s.result!)])),
    cells: [
      titleOf(sc, opts),
      def.label,
      result,
      def.baseline ? "1.00 (reference)" : ratio === undefined ? "–" : ratio.toFixed(2),
      ...wsCells,
      Number.isFinite(serverCpu) ? `${serverCpu.toFixed(2)} (${serverPct.toFixed(0)}%)` : "–",
      Number.isFinite(perOp) ? perOp.toFixed(perOp < 100 ? 1 : 0) : "–",
      Number.isFinite(rss) ? (rss / 1048576).toFixed(0) : "–",
      `${clientPct.toFixed(0)}%`,
      Number.isFinite(othersPct) ? `${othersPct.toFixed(0)}%` : "–",
    ],
  };
}

function markdownTable(header: string[], rows: string[][]): string {
  const line = (cells: string[]) => `| ${cells.join(" | ")} |`;
  return [line(header), line(header.map(() => "---")), ...rows.map(line)].join("\n");
}

/** Everything a finished run hands the report. */
export interface RunRecord {
  opts: Options;
  /** The command line, for the header and the JSON. */
  cmd: string;
  /** Seconds the measurements took. */
  elapsed: number;
  model: string | undefined;
  load0: number | undefined;
  load1: number | undefined;
  cpusAllowed: string | undefined;
  /** The families measured (TLS is dropped when no certificate could be made). */
  families: Family[];
  scenarios: Scenario[];
  /** The servers that ran. */
  servers: ServerDef[];
  /** server id -> why its rows are skipped */
  skipped: Map<string, string>;
  samples: Sample[];
  /** Notes gathered while setting up; the report adds its own after them. */
  notes: string[];
  pin: [number, number] | undefined;
  ctx: Ctx;
}

/** The whole report, as markdown. */
export function renderReport(record: RunRecord): string {
  // The run and its machine, then what ran.
  const { opts, cmd, elapsed, model, load0, load1, cpusAllowed, pin, ctx } = record;
  const { families, scenarios, servers, skipped, samples } = record;
  const notes = [...record.notes];
  const out: string[] = [];
  out.push(`## netkit bench`);
  out.push("");
  out.push(
    `machine: nproc=${navigator.hardwareConcurrency} (CPUs allowed: ${cpusAllowed ?? "?"}), ` +
      `${model ?? "unknown CPU"}, ${Deno.build.os} ${Deno.osRelease()}; ` +
      `deno ${Deno.version.deno} (v8 ${Deno.version.v8}); ` +
      `load average ${load0?.toFixed(2) ?? "?"} before, ${load1?.toFixed(2) ?? "?"} after`,
  );
  out.push(`command: \`${cmd}\` (${elapsed.toFixed(0)} s)`);
  out.push(
    `method: fresh servers per scenario; ${opts.rounds} round(s) in which each server gets ` +
      `${opts.duration} s of measured load (after ${opts.warmup} s warm-up on its first run, ` +
      `${
        Math.min(REWARM_S, opts.warmup)
      } s later), order rotated per round; load client bench/loadgen.c (single-threaded epoll` +
      `${
        opts.procs === undefined
          ? scenarios.some((sc) => (sc.procs ?? 1) > 1) ? "; 2 processes for handshakes" : ""
          : opts.procs > 1
          ? `, ${opts.procs} processes`
          : ""
      }), every echoed byte verified` +
      `${families.includes("ws") ? " (WebSocket: every message, its order and loss)" : ""}` +
      `${
        pin ? `; pinned: servers on CPU ${pin[0]}, load client on CPU ${pin[1]}` : "; not pinned"
      }` +
      `${
        families.includes("tls")
          ? `; TLS client ${
            opts.verify ? "verifies the server against the CA" : "does NOT verify the certificate"
          } (OpenSSL, full handshakes, no resumption)`
          : ""
      }`,
  );
  out.push("");
  const rows: Row[] = [];
  for (const sc of scenarios) {
    const baseline = servers.find((d) => groupOf(d) === groupOf(sc) && d.baseline);
    for (const def of SERVERS.filter((d) => groupOf(d) === groupOf(sc))) {
      if (opts.servers ? !opts.servers.includes(def.id) : def.onRequest) continue;
      const why = skipped.get(def.id);
      if (why !== undefined) {
        const cells = [titleOf(sc, opts), def.label, `skipped: ${why.replaceAll("|", "/")}`];
        while (cells.length < headerOf(sc).length) cells.push("");
        rows.push({ scenario: sc, server: def, cells });
        continue;
      }
      rows.push(summarize(sc, def, def.baseline ? undefined : baseline, samples, opts));
    }
  }
  const plain = rows.filter((r) => r.scenario.family !== "ws");
  const ws = rows.filter((r) => r.scenario.family === "ws" && !isDeflate(r.scenario));
  const deflate = rows.filter((r) => isDeflate(r.scenario));
  if (plain.length) {
    out.push(markdownTable(HEADER, plain.map((r) => r.cells)));
    out.push("");
    out.push(
      "op = one round trip (rr), one 64 KiB chunk echoed (stream), one handshake; " +
        "MB = 10^6 bytes; CPU % is of one core; others' CPU % = the whole machine's busy " +
        "time during the measured window minus server and load client (noise from other work).",
    );
  }
  if (ws.length) {
    if (plain.length) out.push("");
    out.push(markdownTable(WS_HEADER, ws.map((r) => r.cells)));
    out.push("");
    out.push(
      `WebSocket: ${opts.wsBinary ? "binary" : "text"} messages; op = one echo round trip ` +
        "(ws-rr), one message delivered to one subscriber (fan-out). Fan-out: one publisher " +
        "sends messages carrying a sequence number and a timestamp, with at most `window` of " +
        "them outstanding (not yet received by every subscriber); latency is from the " +
        "publisher's send to a subscriber's receipt, so it is about (deliveries in flight) / " +
        "(deliveries/s) plus the server's jitter. The server sends every message to every " +
        "client, the publisher included (its copies are not counted). lost / out of order / " +
        "closed: summed over all runs (closed: subscribers the server closed, with the first " +
        "close code). Peak RSS is VmHWM over the whole scenario.",
    );
  }
  for (const sc of scenarios.filter(isDeflate)) {
    const these = deflate.filter((r) => r.scenario === sc);
    if (!these.length) continue;
    out.push("");
    out.push(`### ${titleOf(sc, opts)}`);
    out.push("");
    out.push(markdownTable(DEFLATE_HEADER, these.map((r) => deflateCells(r, samples))));
    out.push("");
    out.push(
      "Every connection offers permessage-deflate as browsers do; the publisher sends " +
        "uncompressed, and every subscriber inflates (or, for a frame identical to one already " +
        "inflated, compares) and checks each message. wire bytes/delivery: frame headers and " +
        "payloads received per delivery. RSS per connection: (peak RSS − RSS once listening) / " +
        "connections (subscribers and publisher), buffers and compression contexts included. " +
        "Ratio: deliveries/s against netkit uncompressed in the same round.",
    );
  }

  // ---- observations
  for (const r of rows) {
    const procs = procsFor(r.scenario, opts);
    if (r.clientPct !== undefined && r.clientPct / procs > 85) {
      notes.push(
        `${r.scenario.id} / ${r.server.id}: the load client used ${r.clientPct.toFixed(0)}% ` +
          `of a core${procs > 1 ? ` over ${procs} processes` : ""}: it is (close to) ` +
          `the bottleneck, so this row says more about the client than the server; compare ` +
          `server CPU µs/op instead.`,
      );
    }
  }
  const noisy = rows.filter((r) => r.othersPct !== undefined && r.othersPct > 25);
  if (noisy.length) {
    const pcts = noisy.map((r) => r.othersPct!);
    notes.push(
      `other processes kept ${Math.min(...pcts).toFixed(0)}–${Math.max(...pcts).toFixed(0)}% ` +
        `of a core busy during ${
          noisy.length === rows.filter((r) => r.othersPct !== undefined).length
            ? "all"
            : noisy.length
        } rows' runs (last column): the numbers are noisy; server CPU µs/op is the steadier ` +
        `measure, and a re-run on a quiet machine gives better throughput figures.`,
    );
  }
  const spreads = rows.filter((r) => r.spread !== undefined && opts.rounds > 1).map((r) =>
    r.spread!
  );
  const ratioSpreads = rows.filter((r) => r.ratioSpread !== undefined).map((r) => r.ratioSpread!);
  const ratioNote = ratioSpreads.length
    ? `; of the ratios: median ${(median(ratioSpreads) * 100).toFixed(1)}%, worst ${
      (Math.max(...ratioSpreads) * 100).toFixed(1)
    }%`
    : "";
  if (spreads.length) {
    notes.push(
      `run-to-run spread (half-range / median over ${opts.rounds} rounds): median ` +
        `${(median(spreads) * 100).toFixed(1)}%, worst ${
          (Math.max(...spreads) * 100).toFixed(1)
        }%${ratioNote}${pin ? " (pinned)" : " (not pinned)"}.`,
    );
  }
  for (const r of deflate.filter((r) => r.server.id === "netkit-deflate-shared")) {
    if (r.ratio !== undefined) {
      notes.push(
        `goal (shared compression ≥ 0.8 × the uncompressed fan-out) for ${r.scenario.id}: ` +
          `${r.ratio.toFixed(2)} — ${r.ratio >= 0.8 ? "met" : "NOT met"}`,
      );
    }
    const bun = deflate.find((b) =>
      b.scenario === r.scenario && b.server.id === "bun-deflate-shared" && b.byRound
    );
    if (bun && r.byRound) {
      const ratios = [...r.byRound].flatMap(([round, v]) => {
        const b = bun.byRound!.get(round);
        return b ? [v / b] : [];
      });
      if (ratios.length) {
        const x = median(ratios);
        notes.push(
          `goal (shared compression ≥ 0.5 × Bun's compressed fan-out) for ${r.scenario.id}: ` +
            `${x.toFixed(2)}× — ${x >= 0.5 ? "met" : "NOT met"}`,
        );
      }
    }
  }
  for (const r of rows) {
    if (r.server.optional && r.ratio !== undefined && r.scenario.family === "tcp") {
      const met = r.ratio >= 0.95;
      notes.push(
        `goal (netkit ≥ 0.95 × read/write loop) for ${r.scenario.id}: ${r.ratio.toFixed(2)} — ` +
          (met ? "met" : "NOT met"),
      );
    }
    if (r.server.id === "netkit-ws-echo" && r.ratio !== undefined) {
      notes.push(
        `goal (netkit ≥ 1.0 × bare Deno echo; Bun did 1.45×) for ${r.scenario.id}: ` +
          `${r.ratio.toFixed(2)} — ${r.ratio >= 1 ? "met" : "NOT met"}`,
      );
    }
    if (r.server.id === "netkit-ws-bcast" && r.ratio !== undefined) {
      const fast = r.ratio >= 12;
      const wantP99 = r.scenario.conns <= 100;
      const lowP99 = r.p99 !== undefined && r.p99 < 5000;
      notes.push(
        `goal (netkit ≥ 12 × the bare Deno loop, half of Bun's fan-out` +
          `${wantP99 ? ", p99 < 5 ms" : ""}) for ${r.scenario.id}: ${r.ratio.toFixed(2)}×` +
          `${r.p99 !== undefined ? `, p99 ${ms(r.p99)} ms` : ""} — ` +
          (fast && (!wantP99 || lowP99) ? "met" : "NOT met"),
      );
    }
  }
  const bad = samples.filter((s) =>
    s.result &&
    (s.result.mismatches || s.result.errors || s.result.lost || s.result.out_of_order)
  );
  if (bad.length) {
    notes.push(
      `${bad.length} run(s) had echo mismatches, lost or reordered messages, or lost ` +
        `connections: ` +
        bad.map((s) => `${s.scenario}/${s.server} round ${s.round + 1}`).join(", "),
    );
  }
  const closedRuns = samples.filter((s) => s.result?.closes);
  if (closedRuns.length) {
    const first = closedRuns[0].result!;
    notes.push(
      `the server closed subscribers in ${closedRuns.length} run(s) (first: ` +
        `${first.close_code} "${first.close_reason ?? ""}"): ` +
        closedRuns.map((s) => `${s.scenario}/${s.server} round ${s.round + 1}: ${s.result!.closes}`)
          .join(", "),
    );
  }
  const tlsInfo = samples.find((s) => s.result?.tls_version)?.result;
  if (tlsInfo) notes.push(`TLS negotiated: ${tlsInfo.tls_version} ${tlsInfo.cipher}.`);
  if (scenarios.some((s) => s.mode === "handshake")) {
    notes.push(
      "handshake: the load client sets TCP_QUICKACK after sending its byte; Deno.listenTls " +
        "sockets do not set TCP_NODELAY, so otherwise the echo queued behind the session " +
        "tickets waits ~40 ms for a delayed ACK and every server measures that timer.",
    );
  }
  if (notes.length) {
    out.push("");
    out.push("notes:");
    for (const n of notes) out.push(`- ${n}`);
  }
  out.push("");
  out.push("load client commands (port and pid vary):");
  for (const sc of scenarios) {
    const s = samples.find((x) => x.scenario === sc.id && x.command);
    if (s) out.push(`- ${sc.id}: \`${s.command!.replace(ctx.caFile || "\0", "CA.pem")}\``);
  }
  return out.join("\n");
}

/** Writes every sample, the machine and the options as JSON to `path`. */
export async function writeJson(path: string, record: RunRecord): Promise<void> {
  const { cmd, opts, samples, model, load0, load1, cpusAllowed } = record;
  await Deno.writeTextFile(
    path,
    JSON.stringify(
      {
        command: cmd,
        machine: {
          nproc: navigator.hardwareConcurrency,
          cpus_allowed: cpusAllowed,
          model,
          os: Deno.osRelease(),
          deno: Deno.version,
          load_before: load0,
          load_after: load1,
        },
        options: opts,
        samples,
      },
      null,
      2,
    ) + "\n",
  );
}
