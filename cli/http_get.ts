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
import { readCaFile as readCa } from "./_pem.ts";
import { systemCaCerts } from "../tls/system_roots.ts";

const USAGE = `
http-get: fetch a URL with HTTP/1.1 over a raw TCP or TLS connection

Usage: http-get --url URL [--ca FILE] [--include] [--timeout S]

  --url URL      http:// or https:// URL to fetch
  --ca FILE      PEM file of a CA to trust for https (besides the system roots)
  --include      print the response head before the body
  --timeout S    seconds to wait for the connection (default 10; 0 = no limit)

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
  });
  if (flags.url === undefined) {
    throw new UsageError("--url is required, e.g. --url http://127.0.0.1:8080/");
  }
  if (!/^https?:\/\//i.test(flags.url)) {
    throw new UsageError(`--url must start with http:// or https://, got "${flags.url}"`);
  }
  const timeout = secondsFlag(flags.timeout, "timeout", 10);
  // Without --ca: the system's roots (on top of Deno's), as the contract says.
  const caCerts = flags.ca === undefined ? await systemCaCerts() : [await readCa(flags.ca)];
  await using response = await get(flags.url, { caCerts, timeout });
  const out = stdoutSink();
  if (flags.include) {
    const writer = out.writable.getWriter();
    await writer.write(response.rawHead);
    writer.releaseLock();
  }
  await response.body.pipeTo(out.writable);
  await out.finish();
  return 0;
}

if (import.meta.main) await runMain("http-get", USAGE, main);
