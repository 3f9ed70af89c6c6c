/**
 * The well-behaved client run after every attack: it must still get correct
 * service from the server that was just attacked.
 *
 * @module
 */
import assert from "node:assert/strict";
import { connect as wsConnect } from "../../../websocket/mod.ts";
import { equalBytes, pseudoRandomBytes } from "../bytes.ts";
import { isTls, isWs, type Target } from "./target.ts";

let probeSeq = 0;

/**
 * A well-behaved client: 64 KiB (tcp/tls) or a 10 KiB message (ws/wss)
 * there and back, byte-exact.
 */
export async function probe(target: Target): Promise<void> {
  const seq = ++probeSeq;
  if (isWs(target.kind)) {
    const scheme = target.kind === "wss" ? "wss" : "ws";
    await using ws = await wsConnect(`${scheme}://localhost:${target.port}/`, {
      caCerts: [target.caPem],
      timeout: 10_000,
    });
    const payload = pseudoRandomBytes(10_000, seq);
    await ws.send(payload);
    for (;;) {
      const msg = await ws.receive();
      assert.ok(msg !== null, "the probe got its message back");
      if (msg instanceof Uint8Array && equalBytes(msg, payload)) break;
    }
    return;
  }
  const tcp = await Deno.connect({ hostname: "127.0.0.1", port: target.port });
  const conn: Deno.Conn = isTls(target.kind)
    ? await Deno.startTls(tcp, { hostname: "localhost", caCerts: [target.caPem] })
    : tcp;
  try {
    const payload = pseudoRandomBytes(64 * 1024, seq);
    const writing = (async () => {
      let off = 0;
      while (off < payload.length) off += await conn.write(payload.subarray(off));
      await conn.closeWrite();
    })();
    const got = new Uint8Array(await new Response(conn.readable).arrayBuffer());
    await writing;
    assert.ok(
      equalBytes(got, payload),
      `the probe got ${got.length} of ${payload.length} bytes back`,
    );
  } finally {
    try {
      conn.close();
    } catch {
      // The readable closed it already.
    }
  }
}
