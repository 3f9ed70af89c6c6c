/**
 * Addresses: Deno's types to netkit's.
 *
 * @module
 */
import type { Addr } from "../conn.ts";

/**
 * Converts Deno's address type to netkit's. `Deno.startTls` leaves
 * `transport` unset on its addresses: an address with a hostname and a port
 * is TCP whatever it says.
 */
export function toAddr(addr: Deno.Addr): Addr {
  const a = addr as Partial<Deno.NetAddr> & Partial<Deno.UnixAddr>;
  if (typeof a.hostname === "string" && typeof a.port === "number") {
    return { transport: "tcp", hostname: a.hostname, port: a.port };
  }
  return { transport: "unix", path: typeof a.path === "string" ? a.path : "" };
}
