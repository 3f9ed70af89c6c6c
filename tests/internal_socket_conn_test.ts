// SocketConn's lazy parts: the reader is let go only when it holds nothing.
import assert from "node:assert/strict";
import { SocketConn } from "../internal/socket_conn.ts";

Deno.test("SocketConn.releaseReader() keeps a reader with buffered bytes and lets an empty one go", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const client = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
  const conn = new SocketConn(await listener.accept());
  try {
    assert.equal(conn.releaseReader(), true, "no reader yet");
    await client.write(new TextEncoder().encode("head\r\nrest"));
    const head = await conn.reader.readUntil("\r\n");
    assert.equal(new TextDecoder().decode(head!), "head\r\n");
    // One write on loopback arrives in one read: "rest" is buffered.
    assert.equal(conn.reader.buffered, 4);
    assert.equal(conn.releaseReader(), false, "bytes buffered");
    const rest = await conn.reader.readExact(4);
    assert.equal(new TextDecoder().decode(rest!), "rest");
    assert.equal(conn.releaseReader(), true, "nothing buffered: let go");
    // A stream made from the reader keeps it.
    void conn.readable;
    assert.equal(conn.releaseReader(), false, "its readable is out");
  } finally {
    client.close();
    conn.destroy();
  }
});
