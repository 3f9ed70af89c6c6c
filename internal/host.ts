/**
 * Host names in URLs and logs: IPv6 in brackets, written once. (No imports:
 * the root `conn.ts` uses it.)
 *
 * @module
 */

/** A hostname as it goes into a URL or `host:port`: IPv6 in brackets. */
export function urlHost(hostname: string): string {
  return hostname.includes(":") ? `[${hostname}]` : hostname;
}

/** `host:port`, with an IPv6 host in brackets: `[::1]:7000`. */
export function hostPort(hostname: string, port: number): string {
  return `${urlHost(hostname)}:${port}`;
}
