// deno-lint-ignore-file no-console
/**
 * `tcp-server`: a TCP echo server. Every byte a client sends comes back;
 * when a client half-closes, the echo finishes and the server closes too.
 *
 * ```sh
 * deno run -A jsr:@netkit/netkit/tcp-server --port 7000
 * ```
 *
 * @module
 */
import { echo } from "../echo.ts";
import { serve } from "../tcp/serve.ts";
import {
  listeningLine,
  log,
  parseFlags,
  runMain,
  SERVER_FLAGS,
  serverOpsHelp,
  serverOptions,
  shutdownSignal,
} from "./_common.ts";
import { eventLogger } from "./_log.ts";
import { metricsAddress, serveMetrics } from "./_metrics.ts";

const PROGRAM = "tcp-server";

const USAGE = `
tcp-server: a TCP echo server

Usage: tcp-server [--hostname 127.0.0.1] [--port 7000] [options]

  --hostname H          address to listen on (default 127.0.0.1; :: or 0.0.0.0 for all)
  --port N              port to listen on; 0 picks a free one (default 7000)
  --max-connections N   close connections beyond N at once (default: no limit)
  --idle-timeout S      close a connection idle for S seconds; 0 = never (default 0)
  --grace S             on SIGINT/SIGTERM, let connections finish for S seconds (default 5)
  --quiet               log errors only, not every connection
${serverOpsHelp(24)}

Prints "listening on tcp://HOST:PORT" on stdout once ready; logs go to stderr.
`;

/** Runs the program with `args`; resolves to its exit code. */
export async function main(args: string[]): Promise<number> {
  const flags = parseFlags(args, SERVER_FLAGS);
  const options = serverOptions(flags, 7000);
  const metricsAt = flags.metrics === undefined ? undefined : metricsAddress(flags.metrics);
  const signal = shutdownSignal(PROGRAM);
  const server = serve(
    {
      ...options,
      signal,
      onEvent: eventLogger(PROGRAM, { quiet: flags.quiet ?? false }),
    },
    echo,
  );
  await using _metrics = metricsAt === undefined ? undefined : serveMetrics(
    metricsAt,
    server,
    (url) => log(PROGRAM, `metrics on ${url}metrics, live page on ${url}`, { event: "metrics" }),
  );
  console.log(listeningLine("tcp", server.addr));
  await server.finished;
  return 0;
}

if (import.meta.main) await runMain(PROGRAM, USAGE, main);
