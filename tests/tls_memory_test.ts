// What the node TLS engine keeps per connection, as mechanisms (the memory
// itself is a benchmark figure, bench/README.md): every connection of a
// listener shares one server-side TLS setup (no node:tls context made per
// connection), a reload makes one new setup for new connections while open
// ones keep theirs, acceptTls reuses the setup of a certificate it has seen,
// and the read buffer under a TLS socket grows for a bulk transfer and goes
// back to its small size once the connection is quiet.
import assert from "node:assert/strict";
import type { Buffer } from "node:buffer";
import { echo } from "../mod.ts";
import { createCA, createServerCert } from "../certs/mod.ts";
import { type Acceptor, openAcceptor } from "../tls/acceptor.ts";
import { serverFor } from "../tls/accept_tls.ts";
import { BULK_READ_SIZE, contextsMade, IDLE_READ_SIZE, SocketDuplex } from "../tls/_node_tls.ts";
import type { TlsConn } from "../tls/mod.ts";
import { within } from "./support/time.ts";

const ca = await createCA();
const first = await createServerCert(ca, { hosts: ["localhost", "127.0.0.1"] });
const second = await createServerCert(ca, { hosts: ["localhost", "127.0.0.1"] });

/** How long a network wait may take before the test fails saying what it waited for. */
const WAIT = 10_000;

/** Accepts, handshakes and echoes every connection of `acceptor` until the listener closes. */
function acceptAndEcho(acceptor: Acceptor): { handled: Promise<void>; conns: TlsConn[] } {
  const conns: TlsConn[] = [];
  const running: Promise<unknown>[] = [];
  const handled = (async () => {
    for (;;) {
      let socket: Deno.Conn;
      try {
        socket = await acceptor.listener.accept();
      } catch {
        break;
      }
      running.push(
        acceptor.handshake(socket).done.then((conn) => {
          conns.push(conn);
          return echo(conn).catch(() => {}).finally(() => conn.close().catch(() => {}));
        }, () => {}),
      );
    }
    await Promise.all(running);
  })();
  return { handled, conns };
}

function portOf(acceptor: Acceptor): number {
  return (acceptor.listener.addr as Deno.NetAddr).port;
}

/** A client connection that has seen one byte echoed. */
async function echoedOnce(port: number): Promise<Deno.TlsConn> {
  const conn = await within(
    WAIT,
    Deno.connectTls({ hostname: "127.0.0.1", port, caCerts: [ca.cert] }),
    "connect",
  );
  await conn.write(new Uint8Array([42]));
  const one = new Uint8Array(1);
  assert.equal(await within(WAIT, conn.read(one), "the echo"), 1);
  assert.equal(one[0], 42);
  return conn;
}

Deno.test("every connection of a TLS listener shares one node:tls server: no context is made per connection", async () => {
  const acceptor = openAcceptor({ port: 0, cert: first.cert, key: first.key });
  const { handled } = acceptAndEcho(acceptor);
  const server = acceptor.nodeServer!;
  assert.ok(server);
  const made = contextsMade.count;
  const clients: Deno.TlsConn[] = [];
  try {
    for (let i = 0; i < 5; i++) clients.push(await echoedOnce(portOf(acceptor)));
    assert.equal(acceptor.nodeServer, server);
    assert.equal(server.handshakes, 5);
    assert.equal(contextsMade.count, made);
  } finally {
    for (const client of clients) client.close();
    acceptor.listener.close();
    await within(WAIT, handled, "the connections' end");
  }
});

Deno.test("a certificate reload makes one new node:tls server for new connections; open ones keep theirs", async () => {
  const dir = await Deno.makeTempDir({ prefix: "netkit-tls-memory-" });
  const certFile = `${dir}/server.pem`;
  const keyFile = `${dir}/server-key.pem`;
  await Deno.writeTextFile(certFile, first.cert);
  await Deno.writeTextFile(keyFile, first.key);
  const acceptor = openAcceptor({ port: 0, certFile, keyFile });
  const { handled } = acceptAndEcho(acceptor);
  const clients: Deno.TlsConn[] = [];
  try {
    const before = acceptor.nodeServer!;
    clients.push(await echoedOnce(portOf(acceptor)));
    await Deno.writeTextFile(certFile, second.cert);
    await Deno.writeTextFile(keyFile, second.key);
    const made = contextsMade.count;
    const reload = await within(WAIT, acceptor.reloadCertificates(), "the reload");
    assert.equal(reload.changed, 1);
    const after = acceptor.nodeServer!;
    assert.notEqual(after, before);
    assert.equal(contextsMade.count, made + 1);
    assert.equal(
      acceptor.certificates[0].serialNumber.toLowerCase(),
      second.serialNumber.toLowerCase(),
    );
    clients.push(await echoedOnce(portOf(acceptor)));
    clients.push(await echoedOnce(portOf(acceptor)));
    assert.equal(before.handshakes, 1);
    assert.equal(after.handshakes, 2);
    // The connection made before the reload goes on.
    await clients[0].write(new Uint8Array([7]));
    const one = new Uint8Array(1);
    assert.equal(await within(WAIT, clients[0].read(one), "the old connection's echo"), 1);
    assert.equal(one[0], 7);
  } finally {
    for (const client of clients) client.close();
    acceptor.listener.close();
    await within(WAIT, handled, "the connections' end");
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("acceptTls reuses the node:tls server of a certificate it has upgraded with before", () => {
  const credentials = { cert: first.cert, key: first.key };
  const made = contextsMade.count;
  const server = serverFor(credentials, { alpnProtocols: ["smtp"] });
  assert.equal(serverFor({ ...credentials }, { alpnProtocols: ["smtp"] }), server);
  assert.notEqual(serverFor(credentials, { alpnProtocols: ["imap"] }), server);
  assert.notEqual(serverFor({ cert: second.cert, key: second.key }, {}), server);
  assert.ok(contextsMade.count <= made + 3);
});

Deno.test("the read buffer under a TLS socket grows for a bulk transfer and shrinks back when the peer goes quiet", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const client = await within(
    WAIT,
    Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port }),
    "connect",
  );
  const accepted = await within(WAIT, listener.accept(), "accept");
  const duplex = new SocketDuplex(accepted);
  let received = 0;
  let biggest = 0;
  let arrived: (() => void) | undefined;
  let wanted = 0;
  duplex.on("data", (chunk: Buffer) => {
    received += chunk.length;
    biggest = Math.max(biggest, duplex.nextReadSize);
    if (received >= wanted) arrived?.();
  });
  const receive = async (bytes: Uint8Array, what: string) => {
    wanted = received + bytes.length;
    const done = new Promise<void>((resolve) => (arrived = resolve));
    let off = 0;
    while (off < bytes.length) off += await client.write(bytes.subarray(off));
    await within(WAIT, done, what);
  };
  try {
    assert.equal(duplex.nextReadSize, IDLE_READ_SIZE);
    await receive(new Uint8Array(1024 * 1024).fill(1), "the bulk transfer");
    assert.equal(biggest, BULK_READ_SIZE);
    // The quiet peer's small messages: the first may still be read into
    // the bulk buffer (the rest of a burst keeps it), the next is not.
    await receive(new Uint8Array([2]), "the first small message");
    await receive(new Uint8Array([3]), "the second small message");
    assert.equal(duplex.nextReadSize, IDLE_READ_SIZE);
    assert.equal(duplex.activity > 0, true);
  } finally {
    client.close();
    const closed = new Promise((resolve) => duplex.once("close", resolve));
    duplex.destroy();
    await within(WAIT, closed, "the duplex's close");
  }
});
