// deno-lint-ignore-file no-console
/**
 * `tls-server`: the TCP echo server over TLS. Every byte a client sends
 * comes back; when a client half-closes (TLS close_notify), the echo
 * finishes and the server closes too. A connection that has not finished its
 * handshake within `--handshake-timeout` is closed; a plaintext client or
 * garbage costs that connection only.
 *
 * `--cert`/`--key` repeated serve several certificates, chosen by the name
 * the client asks for (SNI); the first is the default. SIGHUP reloads them
 * from their files: new connections get the new ones, open ones go on, and a
 * broken file keeps the old certificates in service (one stderr line says
 * which).
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
  certificateFlags,
  choiceFlag,
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
import { metricsAddress, serveMetrics } from "./_metrics.ts";
import { readPemFile } from "./_pem.ts";

const USAGE = `
tls-server: a TLS echo server

Usage: tls-server [--hostname 127.0.0.1] [--port 7443] [--cert FILE] [--key FILE] [options]

  --hostname H            address to listen on (default 127.0.0.1; :: or 0.0.0.0 for all)
  --port N                port to listen on; 0 picks a free one (default 7443)
  --cert FILE             the server certificate, PEM (default certs/server.pem)
  --key FILE              its private key, PEM (default certs/server-key.pem)
                          Repeat --cert/--key in pairs to serve several certificates,
                          chosen by the name the client asks for (SNI: exact names, then
                          wildcards *.example.com); the first pair is the default, also
                          for clients that send no name. SIGHUP reloads them all from
                          their files; a broken file keeps the old ones in service
  --max-connections N     close connections beyond N at once (default: no limit)
  --idle-timeout S        close an established connection idle for S seconds; 0 = never (default 0)
  --handshake-timeout S   close a connection that has not finished its TLS handshake
                          within S seconds, however slowly it sends; 0 = never (default 10)
  --grace S               on SIGINT/SIGTERM, let connections finish for S seconds (default 5)
  --engine E              node (default): TLS by Deno's node:tls on a socket netkit owns, so
                          --handshake-timeout really closes a stalled handshake; deno:
                          Deno.listenTls, about half the CPU, but Deno keeps the socket of
                          a stalled handshake open until the peer finishes or leaves;
                          one --cert/--key pair only, and no reload on SIGHUP
  --quiet                 log errors only, not every connection
${serverOpsHelp(26)}
                          (--proxy-protocol needs --engine node; the header must come
                          within --handshake-timeout)

Make development certificates with "deno task certs". Prints
"listening on tls://HOST:PORT" on stdout once ready; logs go to stderr.
`;

/** Runs the program with `args`; resolves to its exit code. */
export async function main(args: string[]): Promise<number> {
  const flags = parseFlags(args, {
    ...SERVER_FLAGS,
    cert: { type: "string", multiple: true },
    key: { type: "string", multiple: true },
    "handshake-timeout": { type: "string" },
    engine: { type: "string" },
  });

  const engine = choiceFlag(flags.engine, "engine", ["node", "deno"], "node");
  const options = serverOptions(flags, 7443);
  const handshakeTimeout = secondsFlag(flags["handshake-timeout"], "handshake-timeout", 10);
  const certificates = certificateFlags(flags, {
    cert: "certs/server.pem",
    key: "certs/server-key.pem",
  });
  if (engine === "deno" && options.proxyProtocol) {
    throw new UsageError(
      "--proxy-protocol needs --engine node: Deno.listenTls starts the TLS handshake on the " +
        "first bytes, so no PROXY header can come before it",
    );
  }
  const metricsAt = flags.metrics === undefined ? undefined : metricsAddress(flags.metrics);
  if (engine === "deno" && certificates.length > 1) {
    throw new UsageError(
      "--engine deno serves one certificate (Deno.listenTls has no SNI): give one --cert/--key " +
        "pair, or use --engine node",
    );
  }
  // Read once here for the programs' own messages (a missing file: run
  // `deno task certs`); the library reads them again, and on every SIGHUP.
  for (const { certFile, keyFile } of certificates) {
    await readPemFile(certFile, "cert");
    await readPemFile(keyFile, "key");
  }
  const signal = shutdownSignal("tls-server");
  const server = serve(
    {
      ...options,
      proxyProtocol: options.proxyProtocol &&
        { ...options.proxyProtocol, timeout: handshakeTimeout },
      certificates,
      handshakeTimeout,
      engine,
      signal,
      onEvent: eventLogger("tls-server", { quiet: flags.quiet ?? false }),
    },
    echo,
  );
  const stopReloading = reloadOnSighup("tls-server", server);
  await using _metrics = metricsAt === undefined ? undefined : serveMetrics(
    metricsAt,
    server,
    (url) =>
      log("tls-server", `metrics on ${url}metrics, live page on ${url}`, { event: "metrics" }),
  );
  if (certificates.length > 1 && !flags.quiet) {
    const names = server.certificates.map((c, i) =>
      `${c.names.join(", ") || "(no DNS name)"}${i === 0 ? " (default)" : ""}`
    );
    log("tls-server", `serving ${certificates.length} certificates: ${names.join("; ")}`);
  }
  console.log(listeningLine("tls", server.addr));
  await server.finished;
  stopReloading();
  return 0;
}

if (import.meta.main) await runMain("tls-server", USAGE, main);
