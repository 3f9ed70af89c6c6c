// deno-lint-ignore-file no-console
/**
 * `deno task demo`: netkit's echo server and client talking over TCP, in one
 * process, with a transcript of what went over the wire.
 *
 * @module
 */
import { echo } from "../echo.ts";
import { readLine, writeAll } from "../io/mod.ts";
import { connect, serve } from "../tcp/mod.ts";

if (import.meta.main) {
  await using server = serve({ hostname: "127.0.0.1", port: 0 }, echo);
  console.log(`listening on tcp://127.0.0.1:${server.addr.port}`);
  await using conn = await connect({ port: server.addr.port });
  for (const line of ["Hello, server!", "netkit speaks TCP", "bye"]) {
    await writeAll(conn.writable, line + "\n");
    console.log(`client > ${line}`);
    console.log(`server < ${await readLine(conn.readable)}`);
  }
}
