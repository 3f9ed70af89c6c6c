import { NetkitError } from "../errors.ts";
import { formatAddr } from "../conn.ts";

/**
 * A connection or listener could not be set up. `code` is one of
 * `ECONNREFUSED`, `ETIMEDOUT`, `ENOTFOUND`, `EADDRINUSE`, `EADDRNOTAVAIL`,
 * `EACCES`, `ECONNRESET` or `ENETWORK` (anything else), and the message says
 * what to do.
 *
 * @example
 * ```ts
 * import { connect, NetworkError } from "@netkit/netkit/tcp";
 * import assert from "node:assert/strict";
 *
 * await assert.rejects(connect({ hostname: "127.0.0.1", port: 1 }), (err) => {
 *   assert.ok(err instanceof NetworkError);
 *   assert.equal(err.code, "ECONNREFUSED"); // nothing listens on port 1
 *   return true;
 * });
 * ```
 */
export class NetworkError extends NetkitError {}

type Where = { hostname: string; port: number } | { path: string };

function where(target: Where): string {
  return "path" in target ? target.path : formatAddr(target);
}

/** Turns an error from `Deno.connect` into a {@linkcode NetworkError} a person can act on. */
export function connectError(err: unknown, target: Where, timeoutMs?: number): unknown {
  const at = where(target);
  if (err instanceof NetkitError) return err;
  if (err instanceof Deno.errors.ConnectionRefused) {
    return new NetworkError(
      "ECONNREFUSED",
      `connection refused by ${at}: is the server running and listening on that port?`,
      { cause: err },
    );
  }
  if (err instanceof Deno.errors.TimedOut) {
    return timedOut(at, timeoutMs, err);
  }
  if (err instanceof Deno.errors.NotFound && "path" in target) {
    return new NetworkError("ENOENT", `no socket at ${at}: is the server running?`, { cause: err });
  }
  const message = err instanceof Error ? err.message : String(err);
  if (
    /lookup address|Name or service not known|No address associated|nodename nor servname/i.test(
      message,
    )
  ) {
    const host = "hostname" in target ? target.hostname : at;
    return new NetworkError(
      "ENOTFOUND",
      `host "${host}" not found: check the spelling, or use an IP address`,
      { cause: err },
    );
  }
  if (err instanceof Deno.errors.ConnectionReset) {
    return new NetworkError("ECONNRESET", `connection to ${at} was reset by the peer`, {
      cause: err,
    });
  }
  return new NetworkError("ENETWORK", `cannot connect to ${at}: ${message}`, { cause: err });
}

/** The error for a connection attempt that took longer than its timeout. */
export function timedOut(at: string, timeoutMs: number | undefined, cause?: unknown): NetworkError {
  const after = timeoutMs === undefined ? "" : ` within ${timeoutMs / 1000}s`;
  return new NetworkError(
    "ETIMEDOUT",
    `no answer from ${at}${after}: check the address and firewall, or allow more time`,
    { cause },
  );
}

/** Turns an error from `Deno.listen` into a {@linkcode NetworkError} a person can act on. */
export function listenError(err: unknown, target: Where): unknown {
  const at = where(target);
  if (err instanceof Deno.errors.AddrInUse) {
    return new NetworkError(
      "EADDRINUSE",
      `address ${at} is already in use: stop the other server or pick another port (0 picks a free one)`,
      { cause: err },
    );
  }
  if (err instanceof Deno.errors.AddrNotAvailable) {
    return new NetworkError(
      "EADDRNOTAVAIL",
      `cannot listen on ${at}: that address is not one of this machine's`,
      { cause: err },
    );
  }
  if (err instanceof Deno.errors.PermissionDenied) {
    return new NetworkError(
      "EACCES",
      `not allowed to listen on ${at}: ports below 1024 need privileges; pick a higher port`,
      { cause: err },
    );
  }
  const message = err instanceof Error ? err.message : String(err);
  if (/lookup address|Name or service not known/i.test(message)) {
    return new NetworkError("ENOTFOUND", `cannot listen on ${at}: host not found`, { cause: err });
  }
  return new NetworkError("ENETWORK", `cannot listen on ${at}: ${message}`, { cause: err });
}
