// `--metrics HOST:PORT`: a second HTTP listener with Prometheus text at
// /metrics and a live page at /, fed by the server's own counters. Programs
// stay thin: this reads `server.stats()` (and the hub's) and formats it.
import type { ServerStats } from "../internal/stream_server.ts";
import { processMetrics, RateWindow, Registry } from "../internal/metrics.ts";
import { hostPort } from "../internal/host.ts";
import { METRICS_PAGE } from "./_metrics_page.ts";
import { UsageError } from "./_common.ts";

/** What a program exports: its server's counters, and a WebSocket hub's if it has one. */
export interface MetricsSource {
  stats(): ServerStats & { websockets?: number };
  hub?: { stats(): { published: number; delivered: number; dropped: number } };
}

/** A running metrics listener. */
export interface MetricsServer extends AsyncDisposable {
  readonly addr: { hostname: string; port: number };
  /** Records a ping's round trip (WebSocket servers). */
  roundTrip(ms: number): void;
  /** Counts a slow consumer closed by its policy (WebSocket servers). */
  slowClosed(): void;
  close(): Promise<void>;
}

/** Parses `--metrics HOST:PORT` (`[::1]:9100` for IPv6, `:9100` for 127.0.0.1). */
export function metricsAddress(value: string): { hostname: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(value);
  const port = match ? Number(match[3]) : NaN;
  if (!match || port > 65535) {
    throw new UsageError(`--metrics "${value}": use HOST:PORT, e.g. 127.0.0.1:9100`);
  }
  return { hostname: match[1] ?? (match[2] || "127.0.0.1"), port };
}

const REASONS = ["max-connections", "per-ip", "rate", "proxy-source", "proxy-header"] as const;

/** Starts the metrics listener for `source`. */
export function serveMetrics(
  at: { hostname: string; port: number },
  source: MetricsSource,
  onListen: (url: string) => void,
): MetricsServer {
  const registry = new Registry();
  const process = processMetrics(registry);
  let stats = source.stats();
  let hub = source.hub?.stats();
  // Counters follow the server's totals: each scrape adds what happened since.
  const counter = (name: string, help: string, read: () => number) => {
    const metric = registry.counter({ name, help });
    let last = 0;
    return () => {
      const now = read();
      if (now > last) metric.inc(now - last);
      last = now;
    };
  };
  const refused = registry.counter({
    name: "netkit_connections_refused_total",
    help: "Connections closed at once, by reason.",
    labelNames: ["reason"],
  });
  const refusedChildren = REASONS.map((reason) => refused.labels({ reason }));
  const refusedLast = REASONS.map(() => 0);
  const failures = registry.counter({
    name: "netkit_handshake_failures_total",
    help: "Connections whose PROXY header, TLS handshake or WebSocket upgrade failed, by cause.",
    labelNames: ["cause"],
  });
  const failuresLast = new Map<string, number>();
  registry.gauge({
    name: "netkit_connections_open",
    help: "Connections open now (setups in progress included).",
    collect: () => stats.open,
  });
  const syncs = [
    counter("netkit_connections_accepted_total", "Connections accepted.", () => stats.accepted),
    counter(
      "netkit_connections_idle_closed_total",
      "Connections the idle timeout closed.",
      () => stats.idleClosed,
    ),
    counter("netkit_received_bytes_total", "Bytes received.", () => stats.bytesRead),
    counter("netkit_sent_bytes_total", "Bytes sent.", () => stats.bytesWritten),
  ];
  const rtt = source.hub
    ? registry.histogram({
      name: "netkit_websocket_ping_rtt_seconds",
      help: "Round trips of pings answered by a pong.",
      buckets: [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
    })
    : undefined;
  const slow = source.hub
    ? registry.counter({
      name: "netkit_slow_consumer_closes_total",
      help: "Clients closed for falling behind by more than --max-buffered.",
    })
    : undefined;
  if (source.hub) {
    registry.gauge({
      name: "netkit_websocket_connections_open",
      help: "WebSocket connections open now.",
      collect: () => stats.websockets ?? 0,
    });
    syncs.push(
      counter("netkit_messages_published_total", "Messages published.", () => hub!.published),
      counter("netkit_deliveries_total", "Messages queued to subscribers.", () => hub!.delivered),
      counter(
        "netkit_deliveries_dropped_total",
        "Deliveries skipped: slow consumers, closing connections.",
        () => hub!.dropped,
      ),
    );
  }
  const refresh = () => {
    stats = source.stats();
    hub = source.hub?.stats();
    for (const sync of syncs) sync();
    for (const [cause, count] of Object.entries(stats.failedSetupsByCause)) {
      const last = failuresLast.get(cause) ?? 0;
      if (count > last) failures.labels({ cause }).inc(count - last);
      failuresLast.set(cause, count);
    }
    REASONS.forEach((reason, i) => {
      const now = stats.refused[reason];
      if (now > refusedLast[i]) refusedChildren[i].inc(now - refusedLast[i]);
      refusedLast[i] = now;
    });
  };

  // The live page's series: one sample a second, five minutes kept.
  const series = {
    open: new RateWindow({ mode: "last" }),
    accepted: new RateWindow(),
    bytesIn: new RateWindow(),
    bytesOut: new RateWindow(),
    deliveries: new RateWindow(),
  };
  let previous = source.stats();
  let previousHub = source.hub?.stats();
  const sampler = setInterval(() => {
    const now = source.stats();
    const nowHub = source.hub?.stats();
    series.open.set(now.open);
    series.accepted.add(now.accepted - previous.accepted);
    series.bytesIn.add(now.bytesRead - previous.bytesRead);
    series.bytesOut.add(now.bytesWritten - previous.bytesWritten);
    series.deliveries.add((nowHub?.delivered ?? 0) - (previousHub?.delivered ?? 0));
    previous = now;
    previousHub = nowHub;
  }, 1000);
  Deno.unrefTimer(sampler);

  const server = Deno.serve({
    hostname: at.hostname,
    port: at.port,
    onListen: (addr) => onListen(`http://${hostPort(addr.hostname, addr.port)}/`),
  }, (request) => {
    const path = new URL(request.url).pathname;
    if (path === "/metrics") {
      refresh();
      return new Response(registry.render(), {
        headers: { "content-type": Registry.contentType },
      });
    }
    if (path === "/series") {
      const body: Record<string, number[]> = {};
      for (const [name, window] of Object.entries(series)) body[name] = window.series().values;
      return Response.json(body, { headers: { "cache-control": "no-store" } });
    }
    if (path === "/") {
      return new Response(METRICS_PAGE, {
        headers: { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" },
      });
    }
    return new Response("not found: try /metrics or /\n", { status: 404 });
  });
  let closed: Promise<void> | undefined;
  const close = () =>
    closed ??= (async () => {
      clearInterval(sampler);
      process.close();
      await server.shutdown();
    })();
  return {
    addr: { hostname: server.addr.hostname, port: server.addr.port },
    roundTrip: (ms) => rtt?.observe(ms / 1000),
    slowClosed: () => slow?.inc(),
    close,
    [Symbol.asyncDispose]: close,
  };
}
