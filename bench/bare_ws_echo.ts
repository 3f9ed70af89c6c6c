/**
 * Bare Deno WebSocket echo: `Deno.serve` + `Deno.upgradeWebSocket`, each
 * message sent straight back as it came (a string for text, an ArrayBuffer
 * for binary: the server side's default `binaryType`). The reference for
 * netkit's `ws-server --mode echo` in `deno task bench`. No netkit imports.
 *
 *   deno run -A bench/bare_ws_echo.ts --port 0
 *
 * @module
 */
import { serveWebSocket } from "./_bare_ws.ts";

serveWebSocket((socket) => {
  socket.onmessage = (event) => socket.send(event.data);
});
