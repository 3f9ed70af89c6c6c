/**
 * `http-get`: an HTTP/1.1 GET over a raw TCP or TLS connection, written with
 * `writeAll` and read with `readUntil`. Prints the body (or the head too).
 *
 * ```sh
 * deno run -A jsr:@netkit/netkit/http-get --url http://127.0.0.1:8080/
 * ```
 *
 * @module
 */
import { get } from "../http/get.ts";
import { parseFlags, runMain, secondsFlag, UsageError } from "./_common.ts";
import { stdoutSink } from "./_stdout.ts";
import { clientCaCerts } from "./_pem.ts";
import { log, PROXY_FLAGS, proxyFlag, proxyHelp, TRUNCATION_WARNING } from "./_common.ts";

const USAGE = `
http-get: fetch a URL with HTTP/1.1 over a raw TCP or TLS connection

Usage: http-get --url URL [--ca FILE] [--include] [--timeout S] [--require-close-notify]
                [--proxy URL | --no-proxy]

  --url URL      http:// or https:// URL to fetch
  --ca FILE      for https, also trust this CA certificate (PEM); the system's
                 trusted CAs and Deno's root store are always trusted
  --include      print the response head before the body
  --timeout S    seconds to wait for the connection (default 10; 0 = no limit)
  --require-close-notify
                 an https server that closes without a TLS close_notify is an
                 error (exit 1); without it the body is printed, a warning goes
                 to stderr and the exit code is 0
${proxyHelp(17)}

The body is framed by Content-Length, chunked encoding, or the end of the
connection. Exits 0 when a response arrived, whatever its status.
`;

/** Runs the program with `args`; resolves to its exit code. */
export async function main(args: string[]): Promise<number> {
  const flags = parseFlags(args, {
    url: { type: "string" },
    ca: { type: "string" },
    include: { type: "boolean" },
    timeout: { type: "string" },
    "require-close-notify": { type: "boolean" },
    ...PROXY_FLAGS,
  });
  if (flags.url === undefined) {
    throw new UsageError("--url is required, e.g. --url http://127.0.0.1:8080/");
  }
  if (!/^https?:\/\//i.test(flags.url)) {
    throw new UsageError(`--url must start with http:// or https://, got "${flags.url}"`);
  }
  const timeout = secondsFlag(flags.timeout, "timeout", 10);
  const caCerts = await clientCaCerts(flags.ca);
  await using response = await get(flags.url, {
    caCerts,
    timeout,
    requireCloseNotify: flags["require-close-notify"] ?? false,
    proxy: proxyFlag(flags, flags.url),
  });
  const out = stdoutSink();
  if (flags.include) {
    const writer = out.writable.getWriter();
    await writer.write(response.rawHead);
    writer.releaseLock();
  }
  await response.body.pipeTo(out.writable);
  await out.finish();
  if ((response.conn as { truncated?: boolean }).truncated) log("http-get", TRUNCATION_WARNING);
  return 0;
}

if (import.meta.main) await runMain("http-get", USAGE, main);
