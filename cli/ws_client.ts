/**
 * `ws-client`: connects to a WebSocket server. With `--message` it sends
 * the message, prints the first message that arrives after it, closes and
 * exits; otherwise each stdin line is sent as a text message and each
 * message received is printed as a line (websocat style), until stdin ends.
 *
 * ```sh
 * deno run -A jsr:@netkit/netkit/ws-client --url ws://127.0.0.1:8080/ --message hi
 * ```
 *
 * @module
 */
import { NetkitError } from "../errors.ts";
import { readLines } from "../io/read_lines.ts";
import { connect, parseWebSocketUrl } from "../websocket/client/client.ts";
import type { Message, WebSocketConn } from "../websocket/connection/conn.ts";
import { WebSocketError } from "../websocket/errors.ts";
import { isToken } from "../internal/http_head.ts";
import { parseFlags, runMain, secondsFlag, UsageError } from "./_common.ts";
import { clientCaCerts } from "./_pem.ts";
import { log, PROXY_FLAGS, proxyFlag, proxyHelp, TRUNCATION_WARNING } from "./_common.ts";

const PROGRAM = "ws-client";

const USAGE = `
ws-client: send a message to a WebSocket server, or relay stdin lines

Usage: ws-client [--url ws://127.0.0.1:8080/] [--message TEXT] [options]

  --url URL          the server: ws://HOST:PORT/PATH or wss://… (default ws://127.0.0.1:8080/)
  --ca FILE          for wss://, also trust this CA certificate (PEM), e.g. certs/ca.pem
                     from "deno task certs"; the system's trusted CAs and Deno's root
                     store are always trusted
  --message T        send T as a text message, print the first message that arrives after
                     it, close and exit
  --header "N: V"    an extra request header, e.g. "Authorization: Bearer x" (repeatable)
  --protocol P       offer subprotocol P (repeatable, or comma-separated)
  --compression      offer permessage-deflate (as browsers do); used when the server
                     agrees, messages of 1 KiB and more then go compressed
  --timeout S        seconds to connect and upgrade, and with --message to wait for the
                     reply (default 10; 0 = no limit)
  --require-close-notify
                     for wss://, a server that closes without a TLS close_notify is an
                     error (exit 1); without it, a warning on stderr
${proxyHelp(21)}

Without --message, each line of stdin is sent as a text message and each message received
is printed as a line on stdout; at the end of stdin the client closes (1000) and exits once
the server has answered. Exit 0 on success, 1 on failure (one line on stderr), 2 on a bad flag.
`;

const encoder = new TextEncoder();
const NEWLINE = new Uint8Array([0x0a]);

async function writeOut(bytes: Uint8Array): Promise<void> {
  let off = 0;
  while (off < bytes.length) off += await Deno.stdout.write(bytes.subarray(off));
}

/** Prints one message as a line: text as it is, binary as its raw bytes. */
async function printMessage(msg: Message): Promise<void> {
  const bytes = typeof msg === "string" ? encoder.encode(msg) : msg;
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  out.set(NEWLINE, bytes.length);
  await writeOut(out);
}

function parseHeader(line: string): [string, string] {
  const colon = line.indexOf(":");
  const name = colon > 0 ? line.slice(0, colon).trim() : "";
  if (!isToken(name)) {
    throw new UsageError(`--header must look like "Name: value", got "${line}"`);
  }
  return [name, line.slice(colon + 1).trim()];
}

/** How the server ended the connection, as a line; `undefined` when that is a normal end. */
function abnormalEnd(ws: WebSocketConn): string | undefined {
  const code = ws.closeCode ?? 1006;
  if (code === 1000 || code === 1001 || code === 1005) return undefined;
  if (code === 1006) return "the connection was lost without a close frame (1006)";
  return `the server closed the connection with ${code}${
    ws.closeReason ? ` (${ws.closeReason})` : ""
  }`;
}

/** `--message`: send, print the first message that arrives after it, close. */
async function oneMessage(ws: WebSocketConn, message: string, timeout: number): Promise<number> {
  const skip = ws.messagesReceived;
  await ws.send(message);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const reply = (async () => {
    for (let seen = 0;; seen++) {
      const msg = await ws.receive();
      if (msg === null || seen >= skip) return msg;
    }
  })();
  const timedOut = new Promise<"timeout">((resolve) => {
    if (timeout > 0) timer = setTimeout(() => resolve("timeout"), timeout);
  });
  const msg = await Promise.race([reply, timedOut]).finally(() => clearTimeout(timer));
  if (msg === "timeout") {
    ws.destroy();
    throw new NetkitError(
      "ETIMEDOUT",
      `no message from the server within ${
        timeout / 1000
      }s: raise --timeout, or check that it answers`,
    );
  }
  if (msg === null) {
    throw new WebSocketError(
      "ERR_WS_CLOSED",
      `${abnormalEnd(ws) ?? `the server closed the connection (${ws.closeCode})`} before any reply`,
      ws.closeCode ?? 1006,
    );
  }
  await printMessage(msg);
  await ws.close(1000);
  return 0;
}

/** stdin mode: lines out, messages in, until stdin ends (close 1000) or the server closes. */
async function relayStdin(ws: WebSocketConn): Promise<number> {
  const printing = (async () => {
    for await (const msg of ws) await printMessage(msg);
  })();
  const sending = (async () => {
    for await (const line of readLines(Deno.stdin.readable, { maxBytes: 16 * 1024 * 1024 })) {
      if (!(await ws.send(line))) return;
    }
    await ws.close(1000);
  })();
  await Promise.race([sending, ws.closed]);
  await printing;
  await ws.closed;
  // Ended by our close 1000 at the end of stdin, or by the server.
  const problem = abnormalEnd(ws);
  if (problem !== undefined) {
    throw new WebSocketError("ERR_WS_CLOSED", problem, ws.closeCode ?? 1006);
  }
  return 0;
}

/** Runs the program with `args`; resolves to its exit code. */
export async function main(args: string[]): Promise<number> {
  const flags = parseFlags(args, {
    url: { type: "string" },
    ca: { type: "string" },
    message: { type: "string" },
    header: { type: "string", multiple: true },
    protocol: { type: "string", multiple: true },
    compression: { type: "boolean" },
    timeout: { type: "string" },
    "require-close-notify": { type: "boolean" },
    ...PROXY_FLAGS,
  });
  let url: URL;
  try {
    url = parseWebSocketUrl(flags.url ?? "ws://127.0.0.1:8080/");
  } catch (err) {
    throw new UsageError(`--url: ${err instanceof Error ? err.message : err}`);
  }
  const headers = new Headers();
  for (const line of flags.header ?? []) {
    const [name, value] = parseHeader(line);
    try {
      headers.append(name, value);
    } catch {
      throw new UsageError(`--header "${line}" has a value that cannot be sent`);
    }
  }
  const protocols = (flags.protocol ?? []).flatMap((p) => p.split(",")).map((p) => p.trim())
    .filter((p) => p !== "");
  for (const p of protocols) {
    if (!isToken(p)) throw new UsageError(`--protocol "${p}" is not a valid subprotocol name`);
  }
  const timeout = secondsFlag(flags.timeout, "timeout", 10);
  const caCerts = await clientCaCerts(flags.ca);
  const proxy = proxyFlag(flags, url.href);
  const ws = await connect(url, {
    headers,
    protocols,
    timeout,
    caCerts,
    proxy,
    compression: flags.compression ?? false,
  });
  try {
    const code = flags.message !== undefined
      ? await oneMessage(ws, flags.message, timeout)
      : await relayStdin(ws);
    await ws.closed;
    if (ws.truncated) {
      if (flags["require-close-notify"]) {
        throw new NetkitError(
          "ERR_TLS_TRUNCATED",
          "the server closed the connection without a TLS close_notify (--require-close-notify)",
        );
      }
      log(PROGRAM, TRUNCATION_WARNING);
    }
    return code;
  } finally {
    ws.destroy();
  }
}

if (import.meta.main) await runMain(PROGRAM, USAGE, main);
