// deno-lint-ignore-file no-console
/**
 * `ws-server`: a WebSocket server. Mode `broadcast` (default): every
 * message, text or binary, goes to every connected client, the sender
 * included, type and order kept — and a browser gets a small chat page on
 * a plain GET of the path. Mode `echo`: each message back to its sender.
 * TLS (`wss://`) with `--cert` and `--key`.
 *
 * ```sh
 * deno run -A jsr:@netkit/netkit/ws-server --port 8080
 * ```
 *
 * @module
 */
import { formatAddr } from "../conn.ts";
import { NetkitError } from "../errors.ts";
import type { HttpResponse, UpgradeRequest } from "../websocket/handshake.ts";
import { serve, type WebSocketHandler, type WebSocketServerEvent } from "../websocket/server.ts";
import { CHAT_PAGE } from "./_chat_page.ts";
import {
  choiceFlag,
  intFlag,
  listeningLine,
  log,
  parseFlags,
  portFlag,
  runMain,
  secondsFlag,
  shutdownSignal,
  UsageError,
} from "./_common.ts";
import { eventLogger } from "./_log.ts";

const PROGRAM = "ws-server";
const TOPIC = "broadcast";

const USAGE = `
ws-server: a WebSocket server (broadcast chat or echo)

Usage: ws-server [--hostname 127.0.0.1] [--port 8080] [--mode broadcast|echo] [options]

  --hostname H            address to listen on (default 127.0.0.1; :: or 0.0.0.0 for all)
  --port N                port to listen on; 0 picks a free one (default 8080)
  --cert FILE --key FILE  serve wss:// with this certificate and key (PEM); make
                          development ones with "deno task certs"
  --mode M                broadcast (default): every message goes to every client, the
                          sender included; echo: back to the sender only
  --path P                the path clients connect to (default /); other paths get 404
  --max-payload N         largest message in bytes; a bigger one closes its client with
                          1009 (default 1048576)
  --max-buffered N        unsent bytes a client may fall behind before --policy applies
                          (default 1048576)
  --policy P              close (default): close a slow client with 1008; drop: skip it
                          until it has caught up
  --idle-timeout S        ping a client silent for S seconds, close it if still silent
                          after as long again; 0 = never (default 0)
  --handshake-timeout S   close a connection that has not finished its (TLS and)
                          WebSocket handshake within S seconds (default 10)
  --max-connections N     close connections beyond N at once (default: no limit)
  --grace S               on SIGINT/SIGTERM, clients are sent close 1001 and get S
                          seconds to finish (default 5)
  --quiet                 log errors only, not every connection

In broadcast mode, open http://HOST:PORT/ in a browser for a chat page.
Prints "listening on ws://HOST:PORT" (wss:// with --cert) on stdout once ready;
logs go to stderr.
`;

/** Reads a PEM file the server needs, with one clear line when it cannot. */
async function readPemFile(path: string, flag: "cert" | "key"): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (err) {
    const what = flag === "cert" ? "certificate" : "key";
    if (err instanceof Deno.errors.NotFound) {
      throw new NetkitError(
        "ENOENT",
        `${what} file ${path} not found (--${flag}): run \`deno task certs\` to make development certificates, or pass yours`,
      );
    }
    if (err instanceof Deno.errors.PermissionDenied) {
      throw new NetkitError("EACCES", `cannot read ${path} (--${flag}): permission denied`);
    }
    if (err instanceof Deno.errors.IsADirectory || /directory/i.test(String(err))) {
      throw new NetkitError("EISDIR", `--${flag} ${path} is a directory: pass the PEM file`);
    }
    throw new NetkitError(
      "EIO",
      `cannot read ${path} (--${flag}): ${err instanceof Error ? err.message : err}`,
    );
  }
}

function logEvents(quiet: boolean): (event: WebSocketServerEvent) => void {
  const base = eventLogger(PROGRAM, { quiet });
  return (event) => {
    switch (event.type) {
      case "rejected": {
        const answer = event.status > 0 ? ` (answered ${event.status})` : "";
        if (!quiet || event.status === 0) {
          log(PROGRAM, `rejected ${formatAddr(event.remoteAddr)}: ${event.error.message}${answer}`);
        }
        break;
      }
      case "request":
        if (!quiet) {
          log(
            PROGRAM,
            `${formatAddr(event.remoteAddr)} ${event.method} ${event.target} -> ${event.status}`,
          );
        }
        break;
      case "slow": {
        const who = formatAddr(event.remoteAddr);
        if (event.action === "closed") {
          log(PROGRAM, `closed slow client ${who} (1008): its backlog passed --max-buffered`);
        } else if (event.action === "dropping") {
          log(
            PROGRAM,
            `slow client ${who}: backlog over --max-buffered, skipping it until it drains`,
          );
        } else {
          log(PROGRAM, `slow client ${who} caught up; ${event.dropped} messages were skipped`);
        }
        break;
      }
      default:
        base(event);
    }
  };
}

/** Answers a plain request on the path in broadcast mode: the chat page. */
function chatPage(request: UpgradeRequest): HttpResponse {
  if (request.method !== "GET" && request.method !== "HEAD") {
    return { status: 405, headers: { allow: "GET" }, body: "use GET, or a WebSocket client\n" };
  }
  return {
    status: 200,
    headers: { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" },
    body: CHAT_PAGE,
  };
}

/** Runs the program with `args`; resolves to its exit code. */
export async function main(args: string[]): Promise<number> {
  const flags = parseFlags(args, {
    hostname: { type: "string" },
    port: { type: "string" },
    cert: { type: "string" },
    key: { type: "string" },
    mode: { type: "string" },
    path: { type: "string" },
    "max-payload": { type: "string" },
    "max-buffered": { type: "string" },
    policy: { type: "string" },
    "idle-timeout": { type: "string" },
    "handshake-timeout": { type: "string" },
    "max-connections": { type: "string" },
    grace: { type: "string" },
    quiet: { type: "boolean" },
  });
  const hostname = flags.hostname ?? "127.0.0.1";
  const port = portFlag(flags.port, 8080);
  const mode = choiceFlag(flags.mode, "mode", ["broadcast", "echo"], "broadcast");
  const path = flags.path ?? "/";
  if (!path.startsWith("/")) throw new UsageError(`--path must start with "/", got "${path}"`);
  const maxPayload = intFlag(flags["max-payload"], "max-payload", 1048576, { min: 1 });
  const maxBuffered = intFlag(flags["max-buffered"], "max-buffered", 1048576, { min: 1 });
  const policy = choiceFlag(flags.policy, "policy", ["close", "drop"], "close");
  const idleTimeout = secondsFlag(flags["idle-timeout"], "idle-timeout", 0);
  const handshakeTimeout = secondsFlag(flags["handshake-timeout"], "handshake-timeout", 10);
  const maxConnections = intFlag(flags["max-connections"], "max-connections", 0, { min: 1 }) ||
    Infinity;
  const gracePeriod = secondsFlag(flags.grace, "grace", 5);
  if ((flags.cert === undefined) !== (flags.key === undefined)) {
    throw new UsageError(
      flags.cert === undefined ? "--key needs --cert as well" : "--cert needs --key as well",
    );
  }
  if (handshakeTimeout <= 0) throw new UsageError("--handshake-timeout must be more than 0");
  const cert = flags.cert === undefined ? undefined : await readPemFile(flags.cert, "cert");
  const key = flags.key === undefined ? undefined : await readPemFile(flags.key, "key");
  const quiet = flags.quiet ?? false;

  const handler: WebSocketHandler = mode === "broadcast"
    ? {
      open: (ws) => void ws.subscribe(TOPIC),
      message: (ws, data) => void ws.publish(TOPIC, data, { includeSelf: true }),
    }
    : {
      message: async (ws, data) => void (await ws.send(data)),
    };

  const signal = shutdownSignal(PROGRAM);
  const server = serve({
    hostname,
    port,
    cert,
    key,
    path,
    maxPayload,
    maxBuffered,
    policy,
    idleTimeout,
    handshakeTimeout,
    maxConnections,
    gracePeriod,
    signal,
    onEvent: logEvents(quiet),
    onRequest: mode === "broadcast" ? chatPage : undefined,
  }, handler);
  console.log(listeningLine(server.secure ? "wss" : "ws", server.addr));
  if (!quiet) log(PROGRAM, `mode ${mode}, path ${path}`);
  await server.finished;
  return 0;
}

if (import.meta.main) await runMain(PROGRAM, USAGE, main);
