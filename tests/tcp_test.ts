import assert from "node:assert/strict";
import { echo } from "../echo.ts";
import { NetkitError } from "../errors.ts";
import { connect, listen, NetworkError, serve, type ServerEvent } from "../tcp/mod.ts";
import { readExact, readLine, readUntil, writeAll } from "../io/mod.ts";
import type { Conn } from "../conn.ts";
import { delay, pseudoRandomBytes, readAll } from "./_helpers.ts";
import { hasIPv6Loopback } from "./support/tools.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

Deno.test("tcp.serve() echoes every byte back, in order, with the echo handler", async () => {
  await using server = serve({ port: 0 }, echo);
  await using conn = await connect({ port: server.addr.port });
  await writeAll(conn.writable, "hello\n");
  assert.equal(await readLine(conn.readable), "hello");
  const big = pseudoRandomBytes(3 * 1024 * 1024 + 17);
  const [, back] = await Promise.all([
    (async () => {
      await writeAll(conn.writable, big);
      await conn.closeWrite();
    })(),
    readAll(conn.readable),
  ]);
  assert.equal(back.length, big.length);
  assert.deepEqual(back, big);
});

Deno.test("tcp.serve() runs a session per connection, many at once", async () => {
  await using server = serve({ port: 0 }, echo);
  const clients = 40;
  await Promise.all(Array.from({ length: clients }, async (_, i) => {
    await using conn = await connect({ port: server.addr.port });
    const data = pseudoRandomBytes(64 * 1024 + i, i + 1);
    const [, back] = await Promise.all([
      writeAll(conn.writable, data).then(() => conn.closeWrite()),
      readAll(conn.readable),
    ]);
    assert.deepEqual(back, data, `client ${i} got its own bytes back`);
  }));
});

Deno.test("tcp echo finishes echoing after the client half-closes, then closes its side", async () => {
  await using server = serve({ port: 0 }, echo);
  await using conn = await connect({ port: server.addr.port });
  await writeAll(conn.writable, "one\ntwo\n");
  await conn.closeWrite();
  const back = await readAll(conn.readable);
  assert.equal(decoder.decode(back), "one\ntwo\n");
});

Deno.test("pipeTo() after readUntil() on a Conn keeps the bytes after the delimiter", async () => {
  // A handler reads a header line, then hands the rest of the stream on.
  await using server = serve({ port: 0 }, async (conn) => {
    const head = await readUntil(conn.readable, "\n");
    await writeAll(conn.writable, `head=${decoder.decode(head!)}`);
    await conn.readable.pipeTo(conn.writable);
  });
  await using conn = await connect({ port: server.addr.port });
  // One write: the header and the body arrive in the same segment.
  await writeAll(conn.writable, "HEADER\nbody-1 body-2");
  await conn.closeWrite();
  assert.equal(decoder.decode(await readAll(conn.readable)), "head=HEADER\nbody-1 body-2");
});

Deno.test("a Conn's readable works as a plain web stream too", async () => {
  await using server = serve({ port: 0 }, async (conn) => {
    // Not a netkit writable: the standard pipe runs.
    const chunks: Uint8Array[] = [];
    await conn.readable.pipeTo(new WritableStream({ write: (c) => void chunks.push(c) }));
    const writer = conn.writable.getWriter();
    for (const chunk of chunks) await writer.write(chunk);
    await writer.close();
  });
  await using conn = await connect({ port: server.addr.port });
  await writeAll(conn.writable, "abc");
  await writeAll(conn.writable, "def");
  await conn.closeWrite();
  const got: string[] = [];
  for await (const chunk of conn.readable) got.push(decoder.decode(chunk));
  assert.equal(got.join(""), "abcdef");
});

Deno.test("a handler that throws costs its own connection only", async () => {
  const events: ServerEvent[] = [];
  await using server = serve({ port: 0, onEvent: (e) => void events.push(e) }, async (conn) => {
    const line = await readLine(conn.readable);
    if (line === "boom") throw new Error("handler failed on purpose");
    await writeAll(conn.writable, `ok ${line}\n`);
  });
  {
    await using bad = await connect({ port: server.addr.port });
    await writeAll(bad.writable, "boom\n");
    assert.equal((await readAll(bad.readable)).length, 0, "the failing session is closed");
  }
  await using good = await connect({ port: server.addr.port });
  await writeAll(good.writable, "fine\n");
  assert.equal(await readLine(good.readable), "ok fine");
  const errors = events.filter((e) => e.type === "error");
  assert.equal(errors.length, 1);
  assert.match(String((errors[0] as { error: Error }).error.message), /on purpose/);
});

Deno.test("maxConnections closes a connection beyond the limit at once", async () => {
  const events: ServerEvent[] = [];
  await using server = serve(
    { port: 0, maxConnections: 2, onEvent: (e) => void events.push(e) },
    echo,
  );
  await using a = await connect({ port: server.addr.port });
  await using b = await connect({ port: server.addr.port });
  // Make sure both are being served before the third arrives.
  for (const conn of [a, b]) {
    await writeAll(conn.writable, "x\n");
    assert.equal(await readLine(conn.readable), "x");
  }
  await using c = await connect({ port: server.addr.port });
  const rejected = await readAll(c.readable).catch(() => new Uint8Array(0));
  assert.equal(rejected.length, 0, "the third connection is closed without service");
  assert.ok(events.some((e) => e.type === "refused" && e.reason === "max-connections"));
  await writeAll(a.writable, "still\n");
  assert.equal(await readLine(a.readable), "still", "the others keep their service");
});

Deno.test("idleTimeout closes a silent connection and spares a busy one", async () => {
  const events: ServerEvent[] = [];
  await using server = serve(
    { port: 0, idleTimeout: 150, onEvent: (e) => void events.push(e) },
    echo,
  );
  await using silent = await connect({ port: server.addr.port });
  await using busy = await connect({ port: server.addr.port });
  const deadline = Date.now() + 10_000;
  let silentClosed = false;
  const watch = readAll(silent.readable).then(
    () => (silentClosed = true),
    () => (silentClosed = true),
  );
  while (!silentClosed && Date.now() < deadline) {
    await writeAll(busy.writable, "tick\n");
    assert.equal(await readLine(busy.readable), "tick");
    await delay(20);
  }
  await watch;
  assert.ok(silentClosed, "the silent connection was closed");
  await writeAll(busy.writable, "after\n");
  assert.equal(await readLine(busy.readable), "after");
  assert.ok(events.some((e) => e.type === "idle"));
});

Deno.test("shutdown lets in-flight echoes finish, refuses new connections, resolves finished", async () => {
  const controller = new AbortController();
  const server = serve({ port: 0, signal: controller.signal, gracePeriod: 5000 }, echo);
  const conn = await connect({ port: server.addr.port });
  await writeAll(conn.writable, "before\n");
  assert.equal(await readLine(conn.readable), "before");
  controller.abort();
  await assertNoService(server.addr.port);
  // The open session still echoes, byte-exact, until the client is done.
  const data = pseudoRandomBytes(256 * 1024);
  const [, back] = await Promise.all([
    writeAll(conn.writable, data).then(() => conn.closeWrite()),
    readAll(conn.readable),
  ]);
  assert.deepEqual(back, data);
  await server.finished;
  await conn.close();
  assert.equal(await server.close(), undefined, "close() after finishing is a no-op");
});

Deno.test("shutdown closes connections still open after the grace period", async () => {
  const server = serve({ port: 0, gracePeriod: 100 }, echo);
  const conn = await connect({ port: server.addr.port });
  await writeAll(conn.writable, "x\n");
  assert.equal(await readLine(conn.readable), "x");
  await server.close();
  assert.equal(server.connections, 0);
  const rest = await readAll(conn.readable).catch(() => new Uint8Array(0));
  assert.equal(rest.length, 0);
  await conn.close();
});

Deno.test("Conn.close() is idempotent and resolves closed", async () => {
  await using server = serve({ port: 0 }, echo);
  const conn = await connect({ port: server.addr.port });
  const first = conn.close();
  const second = conn.close();
  await Promise.all([first, second, conn.closed]);
  await conn.close();
});

Deno.test("Conn exposes local and remote addresses", async () => {
  let seen: Conn | undefined;
  await using server = serve({ port: 0 }, (conn) => {
    seen = conn;
    return echo(conn);
  });
  await using conn = await connect({ port: server.addr.port });
  await writeAll(conn.writable, "a\n");
  await readLine(conn.readable);
  assert.deepEqual(conn.remoteAddr, {
    transport: "tcp",
    hostname: "127.0.0.1",
    port: server.addr.port,
  });
  assert.equal(conn.localAddr.transport, "tcp");
  assert.deepEqual(seen!.remoteAddr, conn.localAddr);
});

Deno.test("tcp.connect() to a closed port fails with ECONNREFUSED and says what to check", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  await assert.rejects(connect({ port }), (err: unknown) => {
    assert.ok(err instanceof NetworkError);
    assert.ok(err instanceof NetkitError);
    assert.equal(err.code, "ECONNREFUSED");
    assert.equal(
      err.message,
      `connection refused by 127.0.0.1:${port}: is the server running and listening on that port?`,
    );
    return true;
  });
});

Deno.test("tcp.connect() to an unknown host fails with ENOTFOUND", async () => {
  await assert.rejects(
    connect({ hostname: "no-such-host.invalid", port: 80, timeout: 20_000 }),
    (err: NetworkError) => {
      assert.equal(err.code, "ENOTFOUND");
      assert.match(err.message, /host "no-such-host\.invalid" not found/);
      return true;
    },
  );
});

Deno.test("tcp.connect() with an aborted signal rejects with its reason", async () => {
  const reason = new Error("stop");
  await assert.rejects(
    connect({ port: 1, signal: AbortSignal.abort(reason) }),
    (err) => err === reason,
  );
});

Deno.test("tcp.serve() on a port in use fails with EADDRINUSE and suggests port 0", async () => {
  await using server = serve({ port: 0 }, echo);
  assert.throws(() => serve({ port: server.addr.port }, echo), (err: NetworkError) => {
    assert.equal(err.code, "EADDRINUSE");
    assert.match(
      err.message,
      /already in use: stop the other server or pick another port \(0 picks a free one\)/,
    );
    return true;
  });
});

Deno.test("tcp works over IPv6 loopback", { ignore: !hasIPv6Loopback() }, async () => {
  await using server = serve({ hostname: "::1", port: 0 }, echo);
  assert.equal(server.addr.hostname, "::1");
  await using conn = await connect({ hostname: "::1", port: server.addr.port });
  await writeAll(conn.writable, "six\n");
  assert.equal(await readLine(conn.readable), "six");
});

Deno.test({
  name: "tcp.serve() and connect() work over Unix sockets with the same handler",
  ignore: Deno.build.os === "windows",
  fn: async () => {
    const dir = await Deno.makeTempDir();
    const path = `${dir}/echo.sock`;
    try {
      await using _server = serve({ path }, echo);
      await using conn = await connect({ path });
      assert.equal(conn.remoteAddr.transport, "unix");
      await writeAll(conn.writable, "unix\n");
      assert.equal(await readLine(conn.readable), "unix");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("tcp.listen() yields Conns for a hand-written accept loop", async () => {
  await using listener = listen({ port: 0 });
  const port = (listener.addr as { port: number }).port;
  const serving = (async () => {
    for await (const conn of listener) {
      const bytes = await readExact(conn.readable, 4);
      await writeAll(conn.writable, bytes!.reverse());
      await conn.close();
      break;
    }
  })();
  await using conn = await connect({ port });
  await writeAll(conn.writable, encoder.encode("abcd"));
  assert.equal(decoder.decode((await readExact(conn.readable, 4))!), "dcba");
  await serving;
});

Deno.test("a peer that resets mid-stream costs its own connection only", async () => {
  const events: ServerEvent[] = [];
  await using server = serve({ port: 0, onEvent: (e) => void events.push(e) }, echo);
  const raw = await Deno.connect({ hostname: "127.0.0.1", port: server.addr.port });
  await raw.write(pseudoRandomBytes(100_000));
  // SO_LINGER 0 is not exposed; closing with unread data makes the kernel send a RST.
  raw.close();
  await delay(50);
  await using conn = await connect({ port: server.addr.port });
  await writeAll(conn.writable, "alive\n");
  assert.equal(await readLine(conn.readable), "alive");
});

/**
 * A connection to `port` is refused — or, while the closing listener's
 * backlog drains, reset or ended without a byte of service.
 */
async function assertNoService(port: number): Promise<void> {
  let conn: Conn;
  try {
    conn = await connect({ port });
  } catch (err) {
    assert.ok(err instanceof NetworkError);
    assert.ok(["ECONNREFUSED", "ECONNRESET"].includes(err.code), err.code);
    return;
  }
  try {
    await writeAll(conn.writable, "anyone?\n").catch(() => {});
    const got = await readAll(conn.readable).catch(() => new Uint8Array(0));
    assert.equal(got.length, 0, "no service after shutdown");
  } finally {
    await conn.close();
  }
}
