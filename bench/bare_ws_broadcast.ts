/**
 * Bare Deno WebSocket broadcast, "the send-to-every-socket loop":
 * `Deno.serve` + `Deno.upgradeWebSocket`, a Set of open sockets, and on each
 * message `for (const s of sockets) s.send(data)` — every client, the sender
 * included, type kept. The reference for netkit's `ws-server --mode
 * broadcast` in `deno task bench`. No netkit imports.
 *
 *   deno run -A bench/bare_ws_broadcast.ts --port 0
 *
 * @module
 */
import { serveWebSocket } from "./_bare_ws.ts";

const sockets = new Set<WebSocket>();

serveWebSocket((socket) => {
  socket.onopen = () => sockets.add(socket);
  socket.onclose = () => sockets.delete(socket);
  socket.onmessage = (event) => {
    const data = event.data;
    for (const s of sockets) s.send(data);
  };
});
