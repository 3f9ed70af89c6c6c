// deno-lint-ignore-file no-console
// Node + the `ws` npm package: the same broadcast as netkit's `ws-server
// --mode broadcast` and bench/bare_ws_broadcast.ts — every message to every
// open client, the sender included, type kept — written as ws's README does
// it (the received Buffer to each client with `{ binary: isBinary }`).
//
//   npm install --prefix bench/.build ws@8     (bench/run.ts does this on demand)
//   node bench/node_ws_broadcast.mjs --port 0
//
// Prints `listening on ws://HOST:PORT` like the other servers.
import { createRequire } from "node:module";
import process from "node:process";
import { parsePeerFlags } from "./_peer_flags.mjs";

const require = createRequire(new URL("./.build/package.json", import.meta.url));
let ws;
try {
  ws = require("ws");
} catch {
  console.error("the ws package is missing: run `npm install --prefix bench/.build ws@8`");
  process.exit(1);
}

const { hostname, port } = parsePeerFlags(process.argv.slice(2));

const wss = new ws.WebSocketServer({ host: hostname, port, perMessageDeflate: false });
wss.on("listening", () => {
  const host = hostname.includes(":") ? `[${hostname}]` : hostname;
  console.log(`listening on ws://${host}:${wss.address().port}`);
});
wss.on("error", (err) => {
  console.error(`node ws server: ${err.message}`);
  process.exit(1);
});
wss.on("connection", (socket) => {
  socket.on("error", () => {});
  socket.on("message", (data, isBinary) => {
    for (const client of wss.clients) {
      if (client.readyState === ws.WebSocket.OPEN) client.send(data, { binary: isBinary });
    }
  });
});
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => process.exit(0));
