// deno-lint-ignore-file no-console
/**
 * `tls-server`: the TCP echo server over TLS. Every byte a client sends
 * comes back; when a client half-closes (TLS close_notify), the echo
 * finishes and the server closes too. A connection that has not finished its
 * handshake within `--handshake-timeout` is closed; a plaintext client or
 * garbage costs that connection only.
 *
 * ```sh
 * deno task certs   # once: certs/ca.pem, certs/server.pem, certs/server-key.pem
 * deno run -A jsr:@netkit/netkit/tls-server --port 7443
 * ```
 *
 * @module
 */
import { echo } from "../echo.ts";
import { serve } from "../tls/serve.ts";
import {
  choiceFlag,
  listeningLine,
  parseFlags,
  runMain,
  secondsFlag,
  SERVER_FLAGS,
  serverOptions,
  shutdownSignal,
} from "./_common.ts";
import { eventLogger } from "./_log.ts";
import { readPemFile } from "./_pem.ts";

const USAGE = `
tls-server: a TLS echo server

Usage: tls-server [--hostname 127.0.0.1] [--port 7443] [--cert FILE] [--key FILE] [options]

  --hostname H            address to listen on (default 127.0.0.1; :: or 0.0.0.0 for all)
  --port N                port to listen on; 0 picks a free one (default 7443)
  --cert FILE             the server certificate, PEM (default certs/server.pem)
  --key FILE              its private key, PEM (default certs/server-key.pem)
  --max-connections N     close connections beyond N at once (default: no limit)
  --idle-timeout S        close an established connection idle for S seconds; 0 = never (default 0)
  --handshake-timeout S   close a connection that has not finished its TLS handshake
                          within S seconds, however slowly it sends; 0 = never (default 10)
  --grace S               on SIGINT/SIGTERM, let connections finish for S seconds (default 5)
  --engine E              node (default): TLS by Deno's node:tls on a socket netkit owns, so
                          --handshake-timeout really closes a stalled handshake; deno:
                          Deno.listenTls, about half the CPU, but Deno keeps the socket of
                          a stalled handshake open until the peer finishes or leaves
  --quiet                 log errors only, not every connection

Make development certificates with "deno task certs". Prints
"listening on tls://HOST:PORT" on stdout once ready; logs go to stderr.
`;

/** Runs the program with `args`; resolves to its exit code. */
export async function main(args: string[]): Promise<number> {
  const flags = parseFlags(args, {
    ...SERVER_FLAGS,
    cert: { type: "string" },
    key: { type: "string" },
    "handshake-timeout": { type: "string" },
    engine: { type: "string" },
  });

  const engine = choiceFlag(flags.engine, "engine", ["node", "deno"], "node");
  const options = serverOptions(flags, 7443);
  const handshakeTimeout = secondsFlag(flags["handshake-timeout"], "handshake-timeout", 10);
  const cert = await readPemFile(flags.cert ?? "certs/server.pem", "cert");
  const key = await readPemFile(flags.key ?? "certs/server-key.pem", "key");
  const signal = shutdownSignal("tls-server");
  const server = serve(
    {
      ...options,
      cert,
      key,
      handshakeTimeout,
      engine,
      signal,
      onEvent: eventLogger("tls-server", { quiet: flags.quiet ?? false }),
    },
    echo,
  );
  console.log(listeningLine("tls", server.addr));
  await server.finished;
  return 0;
}

if (import.meta.main) await runMain("tls-server", USAGE, main);
