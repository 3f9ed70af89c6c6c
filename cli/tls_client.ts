/**
 * `tls-client`: the TCP client over TLS. Connects, verifies the server's
 * certificate against the system's CAs, Deno's root store and `--ca`, sends
 * `--message`, half-closes (TLS close_notify), and prints the reply until
 * the server closes. With no `--message` and stdin not a terminal it is
 * netcat over TLS: stdin to the server, the server to stdout.
 *
 * ```sh
 * deno run -A jsr:@netkit/netkit/tls-client --port 7443 --ca certs/ca.pem --message hi
 * ```
 *
 * @module
 */
import { connect } from "../tls/connect.ts";
import { parseFlags, portFlag, runMain, secondsFlag } from "./_common.ts";
import { sendAndPrint } from "./_stdout.ts";
import { clientCaCerts } from "./_pem.ts";
import { log, PROXY_FLAGS, proxyFlag, proxyHelp, TRUNCATION_WARNING } from "./_common.ts";
import { hostPort } from "../internal/host.ts";

const USAGE = `
tls-client: send a message to a TLS server and print the reply

Usage: tls-client [--hostname 127.0.0.1] [--port 7443] [--ca FILE] [--servername NAME]
                  [--message TEXT] [--timeout S] [--require-close-notify]
                  [--proxy URL | --no-proxy]

  --hostname H      server to connect to (default 127.0.0.1)
  --port N          its port (default 7443)
  --ca FILE         also trust this CA certificate (PEM), e.g. certs/ca.pem from
                    "deno task certs"; the system's trusted CAs and Deno's root store
                    are always trusted
  --servername N    the name the server's certificate must cover, also sent as SNI
                    (default: --hostname)
  --message T       the bytes to send (default "Hello, server!"); without it and with
                    stdin not a terminal, stdin is sent instead (netcat style)
  --timeout S       seconds to wait for the connection and handshake and, with a
                    message, for the reply to end (default 10; 0 = no limit)
  --require-close-notify
                    a server that closes without a TLS close_notify is an error
                    (exit 1); without it the reply is printed, a warning goes to
                    stderr and the exit code is 0, as openssl s_client and curl do
${proxyHelp(20)}

The reply is printed to stdout as it arrives; the client half-closes after
sending and exits 0 when the server closes.
`;

const PROGRAM = "tls-client";

/** Runs the program with `args`; resolves to its exit code. */
export async function main(args: string[]): Promise<number> {
  const flags = parseFlags(args, {
    hostname: { type: "string" },
    port: { type: "string" },
    ca: { type: "string" },
    servername: { type: "string" },
    message: { type: "string" },
    timeout: { type: "string" },
    "require-close-notify": { type: "boolean" },
    ...PROXY_FLAGS,
  });
  const hostname = flags.hostname ?? "127.0.0.1";
  const port = portFlag(flags.port, 7443);
  const timeout = secondsFlag(flags.timeout, "timeout", 10);
  const caCerts = await clientCaCerts(flags.ca);
  await using conn = await connect({
    hostname,
    port,
    caCerts,
    serverName: flags.servername,
    timeout,
    requireCloseNotify: flags["require-close-notify"] ?? false,
    proxy: proxyFlag(flags, `tls://${hostPort(hostname, port)}`),
  });
  await sendAndPrint(conn, flags.message, timeout);
  if (conn.truncated) log(PROGRAM, TRUNCATION_WARNING);
  return 0;
}

if (import.meta.main) await runMain(PROGRAM, USAGE, main);
