/**
 * HTTP/1.1 by hand over netkit connections: a response reader built on
 * `readUntil` and a `GET` client over TCP or TLS.
 *
 * @example
 * ```ts
 * import { get } from "@netkit/netkit/http";
 * import assert from "node:assert/strict";
 *
 * await using server = Deno.serve({ port: 0, onListen() {} }, () => new Response("hello"));
 * await using response = await get(`http://127.0.0.1:${server.addr.port}/`);
 * assert.equal(await new Response(response.body).text(), "hello");
 * ```
 *
 * @module
 */
export { get, type GetOptions, type GetResult } from "./get.ts";
export { type HttpResponse, readResponse, type ReadResponseOptions } from "./response.ts";
export { HttpError } from "./errors.ts";
