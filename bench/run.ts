/**
 * `deno task bench`: netkit's servers against bare Deno ones (and, for
 * WebSocket broadcast, Node with `ws`), in one run, with one external load
 * client (bench/loadgen.c, compiled on demand).
 *
 *   deno task bench [--quick] [--only tcp|tls|ws|conns] [--rounds N] [--duration S]
 *                   [--warmup S] [--pin] [--procs N] [--verify] [--ws-binary]
 *                   [--servers a,b] [--json FILE] [--connections N] [--workers N]
 *                   [--settle S] [--more M]
 *
 * Every (scenario, server) pair runs once per round against a fresh server
 * process; within a round the servers take turns in a rotated order. The
 * tables show medians over the rounds; the ratio is the median of the
 * per-round ratios against the reference (bare read/write loop, bare Deno
 * WebSocket server) of the same round.
 *
 * Server and scenario definitions are tables (bench/scenarios/): a new
 * family means new rows there plus a loadgen mode.
 *
 * @module
 * This file is the command line and the orchestration; the parts are
 * `_types.ts` (the vocabulary), `scenarios/` (what is measured),
 * `_processes.ts` and `_setup.ts` (children, certificate, Node, limits),
 * `_loadgen.ts` (building and running the load client) and `_report.ts`
 * (tables, notes, JSON).
 *
 * @module
 */
// deno-lint-ignore-file no-console
import { parseArgs } from "node:util";
import type { Program } from "../tests/support/process.ts";
import { ensureLoadgen, REWARM_S, runLoad } from "./_loadgen.ts";
import {
  allowedCpus,
  cpuModel,
  loadAverage,
  parseCpuList,
  peakRssBytes,
  rssBytes,
} from "./_procstat.ts";
import { killAll, run, startServer, stopServer, useBun } from "./_processes.ts";
import { int, metricOf, ms, renderReport, unitOf, writeJson } from "./_report.ts";
import { ensureBun, ensureNodeWs, fdLimits, makeCert } from "./_setup.ts";
import { groupOf, SCENARIOS, SERVERS } from "./scenarios/mod.ts";
import { CONN_SERVERS, FANOUT_10K_GROUP } from "./scenarios/connections.ts";
import {
  type ConnOptions,
  killConnections,
  renderConnections,
  runConnections,
} from "./_connections.ts";
import {
  type Ctx,
  FAMILIES,
  type Family,
  type Options,
  type Sample,
  type Scenario,
  type ServerDef,
} from "./_types.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

// ---------------------------------------------------------------------------
// Options

/** `ids` comma-separated in lines of at most `width` characters, each indented by `indent`. */
function wrapIds(ids: string[], indent: number, width: number): string {
  const lines: string[] = [];
  let line = "";
  for (const id of ids) {
    const next = line ? `${line}, ${id}` : id;
    if (indent + next.length + 1 > width && line) {
      lines.push(`${line},`);
      line = id;
    } else line = next;
  }
  lines.push(line);
  return lines.map((l) => " ".repeat(indent) + l).join("\n");
}

const USAGE = `usage: deno task bench [flags]
  --quick          one short round (0.5 s warm-up + 1 s per server)
  --only tcp|tls|ws|conns  only these scenarios (comma-separated; default all four)
  --rounds N       rounds, results are medians (default 5)
  --duration S     measured seconds per run (default 1.5)
  --warmup S       warm-up before a server's first run (default 1; later runs 0.3)
  --servers IDS    only these servers, e.g. loop,pipe; ids (loop-nagle only when named):
${wrapIds(SERVERS.map((s) => s.id), 19, 100)}
  --pin            taskset: server on the first allowed CPU, load client on the second
  --procs N        load client processes (default 1; 2 for handshakes)
  --verify         TLS: the load client verifies the server against the generated CA
  --ws-binary      WebSocket scenarios send binary messages (default: text)
  --window N       fan-out: most messages outstanding (default 32)
  --json FILE      also write every sample as JSON
  --connections N  conns: idle connections held per server (default 10000)
  --settle S       conns: seconds of quiet before each memory reading (default 2;
                   30 lets V8's memory reducer give back what the setup burst grew)
  --more M         conns, one process: M more connections after the readings, and
                   a last reading: the cost of one more connection, and what one
                   process would need for 100,000 (at most 19,000 in all)
  --workers N      conns: ws-server worker processes (default: 0 up to 16,000
                   connections, else one per 17,000); memory ids:
${wrapIds(CONN_SERVERS.map((s) => s.id), 19, 100)}`;

/** \`--only conns\`: the connections-and-memory scenario and the 10,000-subscriber fan-out. */
const CONNS = "conns";

function usage(message: string): never {
  console.error(`${message}\n${USAGE}`);
  Deno.exit(2);
}

function parseOptions(args: string[]): Options & { conns?: ConnOptions } {
  let values;
  try {
    values = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        quick: { type: "boolean" },
        only: { type: "string" },
        rounds: { type: "string" },
        duration: { type: "string" },
        warmup: { type: "string" },
        servers: { type: "string" },
        pin: { type: "boolean" },
        procs: { type: "string" },
        verify: { type: "boolean" },
        "ws-binary": { type: "boolean" },
        window: { type: "string" },
        json: { type: "string" },
        connections: { type: "string" },
        workers: { type: "string" },
        settle: { type: "string" },
        more: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    }).values;
  } catch (err) {
    usage((err as Error).message.split(". ")[0]);
  }
  if (values.help) {
    console.log(USAGE);
    Deno.exit(0);
  }
  const num = (v: string | undefined, name: string, fallback: number, min: number) => {
    if (v === undefined) return fallback;
    const n = Number(v);
    if (!/^\d*\.?\d+$/.test(v) || !(n >= min)) usage(`--${name} must be a number >= ${min}`);
    return n;
  };
  const quick = values.quick ?? false;
  const only = (values.only ?? [...FAMILIES, CONNS].join(",")).split(",").map((f) => f.trim());
  for (const f of only) {
    if (!FAMILIES.includes(f as Family) && f !== CONNS) {
      usage(`--only takes tcp, tls, ws and/or conns, got "${f}"`);
    }
  }
  const families = only.filter((f) => f !== CONNS);
  const servers = values.servers?.split(",").map((s) => s.trim());
  for (const s of servers ?? []) {
    if (!SERVERS.some((d) => d.id === s) && !CONN_SERVERS.some((d) => d.id === s)) {
      usage(`unknown server "${s}" in --servers`);
    }
  }
  const connections = Math.round(num(values.connections, "connections", 10_000, 1));
  const conns: ConnOptions | undefined = only.includes(CONNS)
    ? {
      connections,
      workers: values.workers === undefined
        ? connections > 16_000 ? Math.ceil(connections / 17_000) : 0
        : Math.round(num(values.workers, "workers", 0, 0)),
      servers: servers?.filter((s) => CONN_SERVERS.some((d) => d.id === s)),
      settle: num(values.settle, "settle", 2, 0),
      more: Math.round(num(values.more, "more", 0, 0)),
    }
    : undefined;
  if (conns?.servers?.length === 0) conns.servers = undefined;
  if (conns?.more && (conns.workers > 0 || conns.connections + conns.more > 19_000)) {
    usage("--more needs one server process: --connections + --more at most 19,000, no --workers");
  }
  return {
    rounds: Math.round(num(values.rounds, "rounds", quick ? 1 : 5, 1)),
    duration: num(values.duration, "duration", quick ? 1 : 1.5, 0.1),
    warmup: num(values.warmup, "warmup", quick ? 0.5 : 1, 0),
    families: families as Family[],
    servers,
    pin: values.pin ?? false,
    procs: values.procs === undefined ? undefined : Math.round(num(values.procs, "procs", 1, 1)),
    verify: values.verify ?? false,
    wsBinary: values["ws-binary"] ?? false,
    window: values.window === undefined
      ? undefined
      : Math.round(num(values.window, "window", 32, 1)),
    json: values.json,
    conns,
  };
}

/** The temporary folder (certificates), removed on the way out. */
let tmpDir: string | undefined;

// ---------------------------------------------------------------------------
// One scenario

/**
 * One scenario: fresh servers (all of the family at once; an idle server costs
 * nothing), then `rounds` rounds in which each server takes its turn, in an
 * order rotated every round. The first run against each server warms it up
 * for `--warmup` seconds, later ones for REWARM_S only, so runs that are
 * compared stay close in time.
 */
async function runScenario(
  sc: Scenario,
  defs: ServerDef[],
  ctx: Ctx,
  opts: Options,
  pin: [number, number] | undefined,
  fdWrap: string[],
  progress: (s: Sample) => void,
): Promise<Sample[]> {
  const samples: Sample[] = [];
  const running = new Map<string, Program>();
  const failed = new Map<string, string>();
  /** each server's RSS once it listened: what connections add is measured from there */
  const idle = new Map<string, number | undefined>();
  try {
    for (const def of defs) {
      try {
        const server = await startServer(def, ctx, pin?.[0], fdWrap);
        running.set(def.id, server);
        idle.set(def.id, await rssBytes(server.pid));
      } catch (err) {
        failed.set(def.id, (err as Error).message);
      }
    }
    for (let round = 0; round < opts.rounds; round++) {
      const rotated = defs.map((_, i) => defs[(i + round) % defs.length]);
      for (const def of rotated) {
        const server = running.get(def.id);
        let sample: Sample;
        if (!server || server.exited) {
          const error = failed.get(def.id) ?? "the server exited in an earlier round";
          sample = { round, scenario: sc.id, server: def.id, ok: false, error };
        } else {
          sample = await runLoad(
            round,
            sc,
            def,
            server,
            round === 0 ? opts.warmup : Math.min(REWARM_S, opts.warmup),
            ctx,
            opts,
            pin,
            fdWrap,
          );
          if (server.exited) failed.set(def.id, sample.error!);
        }
        samples.push(sample);
        progress(sample);
      }
    }
    for (const [id, server] of running) {
      const rss = await peakRssBytes(server.pid);
      for (const s of samples) {
        if (s.server !== id) continue;
        s.peakRssBytes = rss;
        s.idleRssBytes = idle.get(id);
      }
    }
  } finally {
    await Promise.all([...running.values()].map((r) => stopServer(r)));
  }
  return samples;
}

// ---------------------------------------------------------------------------

async function main() {
  const opts = parseOptions(Deno.args);
  const bail = (code: number) => () => {
    killConnections();
    return killAll()
      .then(() => tmpDir ? Deno.remove(tmpDir, { recursive: true }) : undefined)
      .catch(() => {})
      .finally(() => Deno.exit(code));
  };
  Deno.addSignalListener("SIGINT", bail(130));
  Deno.addSignalListener("SIGTERM", bail(143));

  let pin: [number, number] | undefined;
  if (opts.pin) {
    const cpus = parseCpuList((await allowedCpus()) ?? "");
    if (cpus.length < 2) usage("--pin needs at least two usable CPUs");
    try {
      await run("taskset", ["-c", String(cpus[0]), "true"], 10_000);
    } catch {
      usage("--pin needs taskset (util-linux)");
    }
    pin = [cpus[0], cpus[1]];
  }

  await ensureLoadgen();

  const notes: string[] = [];
  const tmp = tmpDir = await Deno.makeTempDir({ prefix: "netkit-bench-" });
  try {
    let ctx: Ctx = { certFile: "", keyFile: "", caFile: "", serverName: "localhost" };
    const families = [...opts.families];
    if (families.includes("tls") || opts.conns) {
      try {
        ctx = await makeCert(tmp);
      } catch (err) {
        notes.push(`TLS skipped: no certificate (${(err as Error).message})`);
        if (families.includes("tls")) families.splice(families.indexOf("tls"), 1);
      }
    }

    // The 10,000-subscriber fan-out belongs to `conns`, not to `ws`.
    const selected = (x: { family: Family; group?: string }) =>
      x.group === FANOUT_10K_GROUP ? opts.conns !== undefined : families.includes(x.family);
    const scenarios = SCENARIOS.filter(selected);
    const servers: ServerDef[] = [];
    /** server id -> why its rows are skipped */
    const skipped = new Map<string, string>();
    let nodeProblem: string | undefined | null = null; // null: not checked yet
    let bun: { path: string } | { problem: string } | undefined; // undefined: not checked yet
    for (const def of SERVERS) {
      if (!selected(def)) continue;
      if (opts.servers ? !opts.servers.includes(def.id) : def.onRequest) continue;
      try {
        await Deno.stat(`${ROOT}/${def.script}`);
      } catch {
        if (!def.optional) throw new Error(`${def.script} is missing`);
        skipped.set(def.id, `${def.script} not found`);
        notes.push(`${def.label} rows skipped: ${def.script} does not exist yet.`);
        continue;
      }
      if (def.runtime === "bun") {
        bun ??= await ensureBun();
        if ("problem" in bun) {
          skipped.set(def.id, bun.problem);
          notes.push(`${def.label} rows skipped: ${bun.problem}.`);
          continue;
        }
        useBun(bun.path);
      }
      if (def.runtime === "node") {
        if (nodeProblem === null) nodeProblem = await ensureNodeWs();
        if (nodeProblem) {
          skipped.set(def.id, nodeProblem);
          notes.push(`${def.label} rows skipped: ${nodeProblem}.`);
          continue;
        }
      }
      servers.push(def);
    }

    // 1,000 subscribers and more need that many descriptors in the server and the client
    const fdsNeeded = Math.max(0, ...scenarios.map((sc) => sc.conns + 1)) + 256;
    const limits = await fdLimits();
    // Deno, Node and loadgen all raise their soft open-files limit to the hard one;
    // when even the hard one is too low for the connections a scenario opens, the
    // servers and the load client are started through `sh -c 'ulimit -n N; exec …'`
    // (Deno.Command cannot set rlimits).
    let fdWrap: string[] = [];
    if (limits && limits[1] < fdsNeeded) {
      fdWrap = ["sh", "-c", `ulimit -n ${fdsNeeded} && exec "$@"`, "sh"];
      notes.push(
        `the open-files limit (hard ${limits[1]}) is below the ${fdsNeeded} the largest ` +
          `scenario needs: servers and load client were started with \`ulimit -n ${fdsNeeded}\`.`,
      );
    }

    const [model, load0, cpusAllowed] = await Promise.all([
      cpuModel(),
      loadAverage(),
      allowedCpus(),
    ]);
    const started = Date.now();
    const samples: Sample[] = [];
    const serversOf = (sc: Scenario) => servers.filter((d) => groupOf(d) === groupOf(sc));
    const total = opts.rounds * scenarios.reduce((n, sc) => n + serversOf(sc).length, 0);
    let done = 0;
    for (const sc of scenarios) {
      const defs = serversOf(sc);
      const got = await runScenario(sc, defs, ctx, opts, pin, fdWrap, (s) => {
        done++;
        const v = s.result ? metricOf(sc, s.result) : NaN;
        const p99 = sc.family === "ws" && s.result?.p99_us !== undefined
          ? `, p99 ${ms(s.result.p99_us)} ms`
          : "";
        console.error(
          `[${done}/${total}] ${sc.id} round ${s.round + 1} ${s.server}: ` +
            (s.ok
              ? `${int(v)} ${unitOf(sc)}${p99}, client CPU ${s.result!.cpu_pct.toFixed(0)}%`
              : `FAILED ${s.error}`),
        );
      });
      samples.push(...got);
    }
    let connReport: string | undefined;
    if (opts.conns) {
      let bunPath: string | undefined;
      const wantsBun = CONN_SERVERS.some((d) =>
        d.runtime === "bun" && (opts.conns!.servers?.includes(d.id) ?? true)
      );
      if (wantsBun && opts.conns.workers === 0) {
        bun ??= await ensureBun();
        if ("path" in bun) bunPath = bun.path;
      }
      if (nodeProblem === null) nodeProblem = await ensureNodeWs();
      const { samples: connSamples, notes: connNotes } = await runConnections(
        ctx,
        opts.conns,
        { node: !nodeProblem, bun: bunPath },
        (s) => {
          const per = s.base && s.after && s.connected
            ? ((s.after.rss.reduce((a, b) => a + b, 0) - s.base.rss.reduce((a, b) => a + b, 0)) /
              s.connected / 1024).toFixed(1)
            : "?";
          console.error(
            `[conns] ${s.proto} ${s.server}: ` +
              (s.ok
                ? `${s.connected} connected in ${s.setupS?.toFixed(1)} s, ${per} KiB/conn`
                : `FAILED ${s.error}`),
          );
        },
      );
      connReport = renderConnections(connSamples, opts.conns, connNotes);
      if (opts.json) {
        await Deno.writeTextFile(
          opts.json.replace(/(\.json)?$/, ".connections.json"),
          JSON.stringify({ opts: opts.conns, samples: connSamples }, null, 2),
        );
      }
    }
    const elapsed = (Date.now() - started) / 1000;
    const load1 = await loadAverage();

    const cmd = `deno run -A bench/run.ts${Deno.args.length ? " " + Deno.args.join(" ") : ""}`;
    const record = {
      opts,
      cmd,
      elapsed,
      model,
      load0,
      load1,
      cpusAllowed,
      families,
      scenarios,
      servers,
      skipped,
      samples,
      notes,
      pin,
      ctx,
    };
    if (scenarios.length > 0) console.log(renderReport(record));
    else console.log(`## netkit bench\n\ncommand: \`${cmd}\` (${elapsed.toFixed(0)} s)`);
    if (connReport !== undefined) console.log(`\n${connReport}`);
    if (opts.json && scenarios.length > 0) await writeJson(opts.json, record);
  } finally {
    killConnections();
    await killAll();
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) {
  try {
    await main();
  } catch (err) {
    await killAll();
    console.error(`bench: ${(err as Error).message}`);
    Deno.exit(1);
  }
}
