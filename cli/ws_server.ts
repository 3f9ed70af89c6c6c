// deno-lint-ignore-file no-console
/**
 * `ws-server`: a WebSocket server. Mode `broadcast` (default): every
 * message, text or binary, goes to every connected client, the sender
 * included, type and order kept — and a browser gets a small chat page on
 * a plain GET of the path. Mode `echo`: each message back to its sender.
 * TLS (`wss://`) with `--cert` and `--key`. With `--redis`, every server
 * sharing that Redis shares the broadcast through a per-topic log (a Redis
 * Stream, `RedisStreamBus`); `--workers N` runs N processes on one port that
 * way. `--history N` (default 1000) keeps the last messages so that
 * `netkit.v1` clients (the chat page) resume after a reconnect with nothing
 * lost — with `--redis`, against any of the servers (docs/netkit-v1.md).
 *
 * ```sh
 * deno run -A jsr:@netkit/netkit/ws-server --port 8080
 * deno run -A jsr:@netkit/netkit/ws-server --redis redis://127.0.0.1:6379 --workers 4
 * deno run -A jsr:@netkit/netkit/ws-server --redis redis+sentinel://s1,s2,s3/mymaster
 * ```
 *
 * @module
 */
import { formatAddr } from "../conn.ts";
import { NetkitError } from "../errors.ts";
import { listenSocket } from "../tcp/listen.ts";
import { DEFAULT_HIGH_WATER_MARK } from "../websocket/codec/constants.ts";
import type { PlainResponse, UpgradeRequest } from "../websocket/mod.ts";
import { parseRedisUrl } from "../redis/bus.ts";
import { RedisStreamBus, type RedisStreamBusEvent } from "../redis/stream_bus.ts";
import {
  serve,
  type WebSocketHandler,
  type WebSocketServerEvent,
} from "../websocket/server/server.ts";
import { CHAT_PAGE } from "./_chat_page.ts";
import { Supervisor, withoutFlags, workerShutdownSignal } from "../internal/supervisor.ts";
import {
  certificateFlags,
  choiceFlag,
  describeError,
  intFlag,
  listeningLine,
  log,
  parseFlags,
  reloadOnSighup,
  runMain,
  secondsFlag,
  SERVER_FLAGS,
  serverOpsHelp,
  serverOptions,
  shutdownSignal,
  UsageError,
} from "./_common.ts";
import { eventLogger } from "./_log.ts";
import { metricsAddress, type MetricsServer, serveMetrics } from "./_metrics.ts";
import { CidrSet } from "../internal/cidr.ts";
import { readPemFile } from "./_pem.ts";

const PROGRAM = "ws-server";
const TOPIC = "broadcast";
// The program's name in its log lines: "ws-server", or "ws-server[2]" in worker 2.
let program = PROGRAM;
// The metrics listener, when --metrics is given: the event log feeds it pings and slow closes.
let metrics: MetricsServer | undefined;

const USAGE = `
ws-server: a WebSocket server (broadcast chat or echo)

Usage: ws-server [--hostname 127.0.0.1] [--port 8080] [--mode broadcast|echo] [options]

  --hostname H            address to listen on (default 127.0.0.1; :: or 0.0.0.0 for all)
  --port N                port to listen on; 0 picks a free one (default 8080)
  --cert FILE --key FILE  serve wss:// with this certificate and key (PEM); make
                          development ones with "deno task certs". Repeat the pair to
                          serve several, chosen by SNI (the first is the default);
                          SIGHUP reloads them, a broken file keeps the old ones
  --mode M                broadcast (default): every message goes to every client, the
                          sender included; echo: back to the sender only
  --path P                the path clients connect to (default /); other paths get 404
  --max-payload N         largest message in bytes; a bigger one closes its client with
                          1009 (default 1048576)
  --max-buffered N        unsent bytes a client may fall behind before --policy applies
                          (default 1048576)
  --policy P              close (default): close a slow client with 1008; drop: skip it
                          until it has caught up
  --compression M         permessage-deflate for clients that offer it (browsers do):
                          off (default); shared: one compressor for the whole server,
                          each broadcast compressed once for every client that agreed;
                          dedicated: one per client, context kept between messages
                          (better ratio, ~350 KiB and one compression per client per
                          message); messages under 1 KiB always go uncompressed
  --idle-timeout S        close a client that sends nothing (not even a pong) for S
                          seconds; it is pinged halfway; 0 = never (default 0)
  --handshake-timeout S   close a connection that has not finished its (TLS and)
                          WebSocket handshake within S seconds (default 10)
  --max-connections N     close connections beyond N at once (default: no limit)
  --grace S               on SIGINT/SIGTERM, clients are sent close 1001 and get S
                          seconds to finish (default 5)
  --redis URL             share broadcasts with every ws-server using this Redis
                          (redis://[:PASSWORD@]HOST:PORT, rediss:// for TLS): a message
                          reaches the clients of all of them, exactly once, through a
                          per-topic log (a Redis Stream) that netkit.v1 clients resume
                          from on any server; Redis lost: local broadcast goes on, and
                          what was published meanwhile is relayed once it is back.
                          With Redis Sentinel, the master the Sentinels name, found
                          again after a failover:
                          redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER
                          (Sentinel port 26379 by default; rediss+sentinel:// for
                          TLS; ?sentinelPassword=P for the Sentinels' own password)
  --redis-ca FILE         trust this CA (PEM) for a rediss:// (rediss+sentinel://)
                          --redis
  --workers N             run N server processes on the one port (Linux reusePort),
                          sharing broadcasts through --redis (required)
  --history N             broadcast mode: keep the last N messages (default 1000) so
                          that clients speaking the netkit.v1 subprotocol resume after
                          a reconnect with nothing lost, or are told they cannot; other
                          clients see no difference; 0 = off. Without --redis, in
                          memory per process: a restart answers "recovered: false";
                          with --redis, the Redis stream keeps N too
  --history-ttl S         keep each message at most S seconds (default 300; 0 = no
                          age limit)
  --trust-proxy CIDR      take the client's address from X-Forwarded-For when the
                          direct peer is in CIDR (repeatable)
  --quiet                 log errors only, not every connection
${serverOpsHelp(26)}

In broadcast mode, open http://HOST:PORT/ in a browser for a chat page.
Prints "listening on ws://HOST:PORT" (wss:// with --cert) on stdout once ready;
logs go to stderr.
`;

function logEvents(quiet: boolean): (event: WebSocketServerEvent) => void {
  const base = eventLogger(program, { quiet });
  return (event) => {
    switch (event.type) {
      case "rejected": {
        const answer = event.status > 0 ? ` (answered ${event.status})` : "";
        if (!quiet || event.status === 0) {
          log(program, `rejected ${formatAddr(event.remoteAddr)}: ${event.error.message}${answer}`);
        }
        break;
      }
      case "request":
        if (!quiet) {
          log(
            program,
            `${formatAddr(event.remoteAddr)} ${event.method} ${event.target} -> ${event.status}`,
          );
        }
        break;
      case "ping":
        metrics?.roundTrip(event.roundTrip);
        break;
      case "slow": {
        const who = formatAddr(event.remoteAddr);
        if (event.action === "closed") {
          metrics?.slowClosed();
          log(program, `closed slow client ${who} (1008): its backlog passed --max-buffered`);
        } else if (event.action === "dropping") {
          log(
            program,
            `slow client ${who}: backlog over --max-buffered, skipping it until it drains`,
          );
        } else {
          log(program, `slow client ${who} caught up; ${event.dropped} messages were skipped`);
        }
        break;
      }
      default:
        base(event);
    }
  };
}

/** Answers a plain request on the path in broadcast mode: the chat page. */
function chatPage(request: UpgradeRequest): PlainResponse {
  if (request.method !== "GET" && request.method !== "HEAD") {
    return { status: 405, headers: { allow: "GET" }, body: "use GET, or a WebSocket client\n" };
  }
  return {
    status: 200,
    headers: { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" },
    body: CHAT_PAGE,
  };
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

/**
 * Logs what the Redis bus reports: losses, retries, recoveries with counts;
 * with Sentinel, a new master (not with `--quiet`: the bus goes on by itself).
 */
function logRedis(url: string, quiet: boolean): (event: RedisStreamBusEvent) => void {
  return (event) => {
    switch (event.type) {
      case "lost":
        log(
          program,
          `redis: lost ${url} (${
            describeError(event.error)
          }); local broadcast goes on, reconnecting`,
        );
        break;
      case "retry":
        // The first few, then about once a minute: a long outage must not flood the log.
        if (event.attempt <= 3 || event.attempt % 12 === 0) {
          log(
            program,
            `redis: still down after ${plural(event.attempt, "attempt")} (${
              describeError(event.error)
            }); next in ${(event.delay / 1000).toFixed(1)}s`,
          );
        }
        break;
      case "back":
        log(
          program,
          `redis: back after ${(event.downtime / 1000).toFixed(1)}s, ${
            plural(event.queued, "message")
          } published meanwhile now relayed, ${event.dropped} dropped`,
        );
        break;
      case "master":
        if (!quiet) {
          log(program, `redis: master "${event.masterName}" is now ${event.node} (failover)`);
        }
        break;
      case "missed":
        log(
          program,
          `redis: ${plural(event.count, "message")} of "${event.topic}" were trimmed from the ` +
            "log before this server read them",
        );
        break;
      case "epoch":
        log(
          program,
          `redis: the log of "${event.topic}" was lost (new epoch ${event.epoch}): ` +
            "resuming clients are told recovered: false",
        );
        break;
      case "error":
        log(program, `redis: ${describeError(event.error)}`);
        break;
    }
  };
}

/**
 * `--workers N`: checks what a worker would fail on (Redis, the port) so
 * that a failure is one line, starts worker 1 (which picks the port when it
 * is 0), then the others on its port, and prints one listening line once
 * every worker has printed its own — each only once subscribed to the bus.
 * SIGINT/SIGTERM stops them all; a worker that dies is logged, and started
 * again if it had been running a while.
 */
async function runPrimary(
  args: string[],
  options: {
    workers: number;
    hostname: string;
    port: number;
    redis: string;
    redisCa: string[] | undefined;
    maxPayload: number;
    gracePeriod: number;
    quiet: boolean;
    metrics: { hostname: string; port: number } | undefined;
  },
): Promise<number> {
  if (Deno.build.os !== "linux") {
    throw new NetkitError(
      "ENOTSUP",
      "--workers needs Linux, where reusePort spreads connections over processes: " +
        "run one ws-server per port with --redis instead",
    );
  }
  const signal = shutdownSignal(PROGRAM);
  const probe = await RedisStreamBus.connect(options.redis, {
    maxPayload: options.maxPayload,
    caCerts: options.redisCa,
  });
  await probe.close();
  if (options.port !== 0) {
    // reusePort would quietly share the port with another server started the
    // same way: make sure nothing has it.
    listenSocket({ hostname: options.hostname, port: options.port }).close();
  }
  const script = import.meta.filename ?? import.meta.url;
  const base = withoutFlags(args, ["--workers", "--port", "--metrics"]);
  // Each worker serves its own metrics: worker N on the given port + N - 1.
  const metricsFor = (id: number) => {
    const at = options.metrics;
    if (at === undefined) return [];
    const host = at.hostname.includes(":") ? `[${at.hostname}]` : at.hostname;
    return ["--metrics", `${host}:${at.port === 0 ? 0 : at.port + id - 1}`];
  };
  let pool: Supervisor;
  try {
    pool = await Supervisor.start({
      count: options.workers,
      port: options.port,
      gracePeriod: options.gracePeriod,
      // Workers share the port with reusePort, behind --unstable-net.
      args: (id, port) => [
        "run",
        "-A",
        "--unstable-net",
        "--quiet",
        script,
        ...base,
        "--port",
        String(port),
        "--worker-id",
        String(id),
        ...metricsFor(id),
      ],
      onLog: (line) => log(PROGRAM, line),
    });
  } catch (err) {
    if (signal.aborted) return 0;
    throw err;
  }
  if (signal.aborted) {
    await pool.stop();
    return 0;
  }
  // SIGHUP reaches every worker: each holds its own certificates.
  const onHup = () => pool.signal("SIGHUP");
  Deno.addSignalListener("SIGHUP", onHup); // Linux only here (checked above)
  console.log(pool.listeningLine);
  if (!options.quiet) {
    log(PROGRAM, `${plural(options.workers, "worker")} on one port (pids ${pool.pids.join(", ")})`);
  }
  const aborted = new Promise<void>((resolve) => {
    if (signal.aborted) resolve();
    signal.addEventListener("abort", () => resolve(), { once: true });
  });
  await Promise.race([aborted, pool.lost]);
  const lostAll = !signal.aborted;
  Deno.removeSignalListener("SIGHUP", onHup);
  await pool.stop();
  return lostAll ? 1 : 0;
}

/** Reads `--redis-ca`: a missing or certificate-less file is a usage error (exit 2). */
async function readRedisCa(path: string): Promise<string> {
  let pem: string;
  try {
    pem = await Deno.readTextFile(path);
  } catch (err) {
    throw new UsageError(`--redis-ca: cannot read ${path}: ${describeError(err)}`);
  }
  if (!pem.includes("-----BEGIN CERTIFICATE-----")) {
    throw new UsageError(`--redis-ca: ${path} holds no PEM certificate`);
  }
  return pem;
}

/** Runs the program with `args`; resolves to its exit code. */
export async function main(args: string[]): Promise<number> {
  const flags = parseFlags(args, {
    ...SERVER_FLAGS,
    cert: { type: "string", multiple: true },
    key: { type: "string", multiple: true },
    "trust-proxy": { type: "string", multiple: true },
    mode: { type: "string" },
    path: { type: "string" },
    "max-payload": { type: "string" },
    "max-buffered": { type: "string" },
    policy: { type: "string" },
    compression: { type: "string" },
    "handshake-timeout": { type: "string" },
    redis: { type: "string" },
    "redis-ca": { type: "string" },
    workers: { type: "string" },
    history: { type: "string" },
    "history-ttl": { type: "string" },
    // Internal: set by --workers on the processes it starts.
    "worker-id": { type: "string" },
  });
  const ops = serverOptions(flags, 8080);
  const { hostname, port } = ops;
  const metricsAt = flags.metrics === undefined ? undefined : metricsAddress(flags.metrics);
  const trustProxy = flags["trust-proxy"] ?? [];
  for (const cidr of trustProxy) {
    try {
      new CidrSet([cidr]);
    } catch (err) {
      throw new UsageError(`--trust-proxy: ${describeError(err)}`);
    }
  }
  const mode = choiceFlag(flags.mode, "mode", ["broadcast", "echo"], "broadcast");
  const path = flags.path ?? "/";
  if (!path.startsWith("/")) throw new UsageError(`--path must start with "/", got "${path}"`);
  const maxPayload = intFlag(flags["max-payload"], "max-payload", 1048576, { min: 1 });
  const maxBuffered = intFlag(flags["max-buffered"], "max-buffered", 1048576, { min: 1 });
  const policy = choiceFlag(flags.policy, "policy", ["close", "drop"], "close");
  const compression = choiceFlag(
    flags.compression,
    "compression",
    ["off", "shared", "dedicated"],
    "off",
  );
  const { idleTimeout, maxConnections, gracePeriod } = ops;
  const handshakeTimeout = secondsFlag(flags["handshake-timeout"], "handshake-timeout", 10);
  const certificates = certificateFlags(flags);
  if (handshakeTimeout <= 0) throw new UsageError("--handshake-timeout must be more than 0");
  const redis = flags.redis;
  if (redis !== undefined) {
    try {
      parseRedisUrl(redis);
    } catch (err) {
      throw new UsageError(`--redis: ${describeError(err)}`);
    }
    if (mode === "echo") {
      throw new UsageError("--redis shares broadcasts: it has no use with --mode echo");
    }
  }
  if (mode === "echo" && flags.history !== undefined && flags.history !== "0") {
    throw new UsageError("--history keeps broadcasts: it has no use with --mode echo");
  }
  if (flags["redis-ca"] !== undefined && redis === undefined) {
    throw new UsageError("--redis-ca is the CA for a rediss:// --redis: give --redis too");
  }
  const redisCa = flags["redis-ca"] === undefined
    ? undefined
    : [await readRedisCa(flags["redis-ca"])];
  const history = mode === "echo" ? 0 : intFlag(flags.history, "history", 1000, { min: 0 });
  const historyTtl = secondsFlag(flags["history-ttl"], "history-ttl", 300);
  const workers = intFlag(flags.workers, "workers", 0, { min: 1, max: 256 });
  if (flags.workers !== undefined && redis === undefined) {
    throw new UsageError(
      "--workers needs --redis: the worker processes share their broadcasts through it",
    );
  }
  const workerId = flags["worker-id"] === undefined
    ? undefined
    : intFlag(flags["worker-id"], "worker-id", 0, { min: 1 });
  if (workerId !== undefined) program = `${PROGRAM}[${workerId}]`;
  // Read once here for the program's own messages (a missing file: run
  // `deno task certs`); the library reads them again, and on every SIGHUP.
  for (const { certFile, keyFile } of certificates) {
    await readPemFile(certFile, "cert");
    await readPemFile(keyFile, "key");
  }
  const quiet = flags.quiet ?? false;

  if (workers > 0 && workerId === undefined) {
    return await runPrimary(args, {
      workers,
      hostname,
      port,
      redis: redis!,
      redisCa,
      maxPayload,
      gracePeriod,
      quiet,
      metrics: metricsAt,
    });
  }

  const handler: WebSocketHandler = mode === "broadcast"
    ? {
      open: (ws) => void ws.subscribe(TOPIC),
      message: (ws, data) => void ws.publish(TOPIC, data, { includeSelf: true }),
    }
    : {
      // Under the high-water mark `send` has nothing to wait for: return
      // nothing, so the next message is handled at once; over it, hold the
      // next messages back until the client has caught up.
      message: (ws, data) => {
        const sent = ws.send(data);
        return ws.bufferedAmount > DEFAULT_HIGH_WATER_MARK ? sent.then(() => {}) : undefined;
      },
    };

  const signal = workerId === undefined
    ? shutdownSignal(PROGRAM)
    : workerShutdownSignal((why) => log(program, `${why}: shutting down`));
  let bus: RedisStreamBus | undefined;
  if (redis !== undefined) {
    // Before listening: an unreachable Redis is one line and exit 1, and the
    // broadcast topic's log is being read before the first client comes.
    bus = await RedisStreamBus.connect(redis, {
      maxPayload,
      historySize: history > 0 ? history : 1000,
      historyTtl: historyTtl > 0 ? historyTtl : undefined,
      caCerts: redisCa,
      onEvent: logRedis(parseRedisUrl(redis).display, quiet),
    });
    await bus.subscribe(TOPIC);
    if (signal.aborted) {
      await bus.close();
      return 0;
    }
  }
  let server;
  try {
    server = serve({
      hostname,
      port,
      reusePort: workerId !== undefined,
      certificates: certificates.length > 0 ? certificates : undefined,
      path,
      maxPayload,
      maxBuffered,
      policy,
      compression,
      idleTimeout,
      handshakeTimeout,
      maxConnections,
      maxConnectionsPerIp: ops.maxConnectionsPerIp,
      acceptRate: ops.acceptRate,
      proxyProtocol: ops.proxyProtocol && { ...ops.proxyProtocol, timeout: handshakeTimeout },
      trustProxy,
      gracePeriod,
      signal,
      bus,
      historySize: history,
      historyTtl,
      onEvent: logEvents(quiet),
      onRequest: mode === "broadcast" ? chatPage : undefined,
    }, handler);
  } catch (err) {
    await bus?.close();
    throw err;
  }
  const stopReloading = server.secure ? reloadOnSighup(program, server) : () => {};
  await using _metrics = metrics = metricsAt === undefined ? undefined : serveMetrics(
    metricsAt,
    server,
    (url) => log(program, `metrics on ${url}metrics, live page on ${url}`, { event: "metrics" }),
  );
  console.log(listeningLine(server.secure ? "wss" : "ws", server.addr));
  if (!quiet) {
    log(
      program,
      `mode ${mode}, path ${path}${
        compression === "off" ? "" : `, compression ${compression} (permessage-deflate)`
      }${
        history > 0
          ? `, history ${plural(history, "message")}${
            historyTtl > 0 ? ` up to ${historyTtl / 1000}s` : ""
          } (netkit.v1)`
          : ""
      }${bus ? `, broadcasts shared through ${bus.url}` : ""}`,
    );
  }
  await server.finished;
  stopReloading();
  await bus?.close();
  return 0;
}

if (import.meta.main) await runMain(PROGRAM, USAGE, main);
