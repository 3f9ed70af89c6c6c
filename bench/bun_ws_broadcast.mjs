// deno-lint-ignore-file no-console
// Bun's own WebSocket server (uWebSockets inside): the same broadcast as
// netkit's `ws-server --mode broadcast` — every message to every client, the
// sender included, type kept — with topics, as Bun's documentation does it:
// each client subscribes to one topic and every message is published to it
// with `server.publish(topic, data, compress)`. With `--compression shared`
// Bun negotiates permessage-deflate with its shared compressor (uWS's
// SHARED_COMPRESSOR: no context takeover, one compressor for the server) and
// publishes compressed; `--compression off` declines the extension.
//
//   bun bench/bun_ws_broadcast.mjs --port 0 --compression shared
//
// Prints `listening on ws://HOST:PORT` like the other servers.
/* global Bun */
import process from "node:process";

let hostname = "127.0.0.1";
let port = 0;
let compression = "off";
const args = process.argv.slice(2);
for (let i = 0; i < args.length; i++) {
  const [flag, inline] = args[i].split(/=(.*)/s, 2);
  const value = inline ?? args[++i];
  if (flag === "--hostname" && value !== undefined) hostname = value;
  else if (flag === "--port" && /^\d+$/.test(value ?? "") && Number(value) < 65536) {
    port = Number(value);
  } else if (flag === "--compression" && (value === "off" || value === "shared")) {
    compression = value;
  } else {
    console.error(
      `bad flag or value: ${flag} (flags: --hostname H --port N --compression off|shared)`,
    );
    process.exit(2);
  }
}

const TOPIC = "broadcast";
const compress = compression === "shared";
const server = Bun.serve({
  hostname,
  port,
  fetch(request, server) {
    if (server.upgrade(request)) return undefined;
    return new Response("a WebSocket endpoint\n", { status: 426 });
  },
  websocket: {
    perMessageDeflate: compress ? { compress: "shared", decompress: "shared" } : false,
    maxPayloadLength: 1024 * 1024,
    open(ws) {
      ws.subscribe(TOPIC);
    },
    message(_ws, message) {
      server.publish(TOPIC, message, compress);
    },
  },
});
const host = hostname.includes(":") ? `[${hostname}]` : hostname;
console.log(`listening on ws://${host}:${server.port}`);
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => process.exit(0));
