/**
 * What the bare Deno WebSocket servers share: flags, and `Deno.serve` with the
 * listening line netkit's `ws-server` prints. Deliberately free of netkit
 * imports: these are the baselines netkit is measured against.
 *
 * Flags: `--hostname` (127.0.0.1), `--port` (0 = a free port), and
 * `--cert FILE --key FILE` for `wss://`.
 *
 * @module
 */
// deno-lint-ignore-file no-console
import { bareOptions } from "./_bare_common.ts";

/** Upgrades every request to a WebSocket and hands the socket to `onSocket`; others get 426. */
export function serveWebSocket(onSocket: (socket: WebSocket) => void): Deno.HttpServer {
  const opts = bareOptions();
  let tls: { cert: string; key: string } | undefined;
  if (opts.cert || opts.key) {
    if (!opts.cert || !opts.key) {
      console.error("wss needs both --cert and --key");
      Deno.exit(2);
    }
    try {
      tls = { cert: Deno.readTextFileSync(opts.cert), key: Deno.readTextFileSync(opts.key) };
    } catch (err) {
      console.error(`cannot read the certificate or key: ${(err as Error).message}`);
      Deno.exit(1);
    }
  }
  const scheme = tls ? "wss" : "ws";
  // exit 0 on a signal, as netkit's servers do (and so `--cpu-prof` gets written)
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => Deno.exit(0));
  }
  return Deno.serve({
    hostname: opts.hostname,
    port: opts.port,
    ...tls,
    onListen(addr) {
      const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
      console.log(`listening on ${scheme}://${host}:${addr.port}`);
    },
  }, (request) => {
    if (request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      return new Response("WebSocket only\n", { status: 426, headers: { upgrade: "websocket" } });
    }
    const { socket, response } = Deno.upgradeWebSocket(request);
    onSocket(socket);
    return response;
  });
}
