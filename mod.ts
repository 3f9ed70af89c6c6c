/**
 * netkit: TCP, TLS and WebSocket servers and clients for Deno behind one
 * {@linkcode Conn} interface, with the io helpers line protocols and
 * HTTP/1.1 are built from.
 *
 * Each transport is a namespace here (they share names such as `serve` and
 * `connect`), and a sub-path of its own: `@netkit/netkit/tcp`, `/tls`,
 * `/websocket`, `/io`, `/certs`, `/http`.
 *
 * @example An echo server over TCP, and a client
 * ```ts
 * import { echo, io, tcp } from "@netkit/netkit";
 * import assert from "node:assert/strict";
 *
 * await using server = tcp.serve({ port: 0 }, echo);
 * await using conn = await tcp.connect({ port: server.addr.port });
 * await io.writeAll(conn.writable, "hello\n");
 * assert.equal(await io.readLine(conn.readable), "hello");
 * ```
 *
 * @module
 */
export type { Addr, Conn, ConnHandler, NetAddr, Server, UnixAddr } from "./conn.ts";
export { formatAddr } from "./conn.ts";
export { NetkitError } from "./errors.ts";
export { echo } from "./echo.ts";
export { relay, type RelayOptions } from "./relay.ts";
export * as tcp from "./tcp/mod.ts";
export * as tls from "./tls/mod.ts";
export * as websocket from "./websocket/mod.ts";
export * as io from "./io/mod.ts";
export * as certs from "./certs/mod.ts";
export * as http from "./http/mod.ts";
