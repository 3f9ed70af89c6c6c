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
import { parsePeerFlags } from "./_peer_flags.mjs";

const { hostname, port, compression } = parsePeerFlags(process.argv.slice(2), ["off", "shared"]);

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
