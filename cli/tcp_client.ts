/**
 * `tcp-client`: connects, sends `--message`, prints the reply until the
 * server closes. With no `--message` and stdin not a terminal it is netcat:
 * stdin to the server, the server to stdout, until both ends are done.
 *
 * ```sh
 * deno run -A jsr:@netkit/netkit/tcp-client --port 7000 --message hi
 * ```
 *
 * @module
 */
import { connect } from "../tcp/connect.ts";
import {
  parseFlags,
  portFlag,
  PROXY_FLAGS,
  proxyFlag,
  proxyHelp,
  runMain,
  secondsFlag,
} from "./_common.ts";
import { hostPort } from "../internal/host.ts";
import { sendAndPrint } from "./_stdout.ts";

const USAGE = `
tcp-client: send a message to a TCP server and print the reply

Usage: tcp-client [--hostname 127.0.0.1] [--port 7000] [--message TEXT] [--timeout S]
                  [--proxy URL | --no-proxy]

  --hostname H   server to connect to (default 127.0.0.1)
  --port N       its port (default 7000)
  --message T    the bytes to send (default "Hello, server!"); without it and with
                 stdin not a terminal, stdin is sent instead (netcat style)
  --timeout S    seconds to wait for the connection and, with a message, for the
                 reply to end (default 10; 0 = no limit)
${proxyHelp(17)}

The reply is printed to stdout as it arrives; the client half-closes after
sending and exits 0 when the server closes.
`;

/** Runs the program with `args`; resolves to its exit code. */
export async function main(args: string[]): Promise<number> {
  const flags = parseFlags(args, {
    hostname: { type: "string" },
    port: { type: "string" },
    message: { type: "string" },
    timeout: { type: "string" },
    ...PROXY_FLAGS,
  });
  const hostname = flags.hostname ?? "127.0.0.1";
  const port = portFlag(flags.port, 7000);
  const timeout = secondsFlag(flags.timeout, "timeout", 10);
  const proxy = proxyFlag(flags, `tcp://${hostPort(hostname, port)}`);
  await using conn = await connect({ hostname, port, timeout, proxy });
  await sendAndPrint(conn, flags.message, timeout);
  return 0;
}

if (import.meta.main) await runMain("tcp-client", USAGE, main);
