import assert from "node:assert/strict";
import { connect } from "../tcp/connect.ts";
import { readLine, writeAll } from "../io/mod.ts";
import { pseudoRandomBytes, readAll, runProgram, startServer } from "./_helpers.ts";
import { hasIPv6Loopback } from "./support/tools.ts";

const SERVER = "cli/tcp_server.ts";
const CLIENT = "cli/tcp_client.ts";

Deno.test("tcp-server prints one listening line with the real port, and tcp-client gets the echo", async () => {
  await using server = await startServer(SERVER, ["--port", "0"]);
  assert.match(server.line, /^listening on tcp:\/\/127\.0\.0\.1:\d+$/);
  assert.notEqual(server.port, 0);
  const run = await runProgram(CLIENT, [
    "--port",
    String(server.port),
    "--message",
    "Hello, netkit!",
  ]);
  assert.equal(run.code, 0, run.stderr);
  assert.equal(run.stdout, "Hello, netkit!");
  const { code, stdout, stderr } = await server.stop("SIGTERM");
  assert.equal(code, 0, stderr);
  assert.equal(stdout, "", "nothing but the listening line on stdout");
  assert.match(stderr, /open 127\.0\.0\.1:\d+/);
  assert.match(stderr, /SIGTERM: shutting down/);
});

Deno.test("tcp-client in netcat mode sends stdin byte for byte and prints the echo", async () => {
  await using server = await startServer(SERVER, ["--port", "0"]);
  // stdin is not a terminal here: netcat mode, so the input is echoed byte for byte.
  const input = pseudoRandomBytes(300_000);
  const run = await runProgram(CLIENT, ["--port", String(server.port)], { stdin: input });
  assert.equal(run.code, 0, run.stderr);
  assert.deepEqual(run.stdoutBytes, input);
});

Deno.test("tcp-client in netcat mode relays stdin lines and prints the replies", async () => {
  await using server = await startServer(SERVER, ["--port", "0"]);
  const run = await runProgram(CLIENT, ["--port", String(server.port)], { stdin: "one\ntwo\n" });
  assert.equal(run.code, 0, run.stderr);
  assert.equal(run.stdout, "one\ntwo\n");
});

Deno.test("tcp-server echoes to many clients at once", async () => {
  await using server = await startServer(SERVER, ["--port", "0", "--quiet"]);
  await Promise.all(Array.from({ length: 20 }, async (_, i) => {
    await using conn = await connect({ port: server.port });
    const data = pseudoRandomBytes(50_000, i + 7);
    const [, back] = await Promise.all([
      writeAll(conn.writable, data).then(() => conn.closeWrite()),
      readAll(conn.readable),
    ]);
    assert.deepEqual(back, data);
  }));
});

Deno.test("tcp-server on SIGINT finishes in-flight echoes and exits 0", async () => {
  const server = await startServer(SERVER, ["--port", "0", "--grace", "5"]);
  const conn = await connect({ port: server.port });
  await writeAll(conn.writable, "before\n");
  assert.equal(await readLine(conn.readable), "before");
  server.child.kill("SIGINT");
  // The session in flight keeps its service until the client is done.
  const data = pseudoRandomBytes(200_000, 3);
  const [, back] = await Promise.all([
    writeAll(conn.writable, data).then(() => conn.closeWrite()),
    readAll(conn.readable),
  ]);
  assert.deepEqual(back, data);
  await conn.close();
  // It exits by itself once the last connection is gone; no second signal.
  await server.child.status;
  const { code, stderr } = await server.stop();
  assert.equal(code, 0, stderr);
  assert.match(stderr, /SIGINT: shutting down/);
});

Deno.test("tcp-server closes connections left open after --grace and exits 0", async () => {
  const server = await startServer(SERVER, ["--port", "0", "--grace", "0.2"]);
  await using conn = await connect({ port: server.port });
  await writeAll(conn.writable, "x\n");
  assert.equal(await readLine(conn.readable), "x");
  const { code } = await server.stop("SIGTERM");
  assert.equal(code, 0);
  assert.equal((await readAll(conn.readable).catch(() => new Uint8Array(0))).length, 0);
});

Deno.test("tcp-server with --max-connections closes the connection beyond the limit", async () => {
  await using server = await startServer(SERVER, ["--port", "0", "--max-connections", "1"]);
  await using first = await connect({ port: server.port });
  await writeAll(first.writable, "1\n");
  assert.equal(await readLine(first.readable), "1");
  await using second = await connect({ port: server.port });
  const got = await readAll(second.readable).catch(() => new Uint8Array(0));
  assert.equal(got.length, 0);
  await writeAll(first.writable, "still\n");
  assert.equal(await readLine(first.readable), "still");
  await first.close();
  const { stderr } = await server.stop();
  assert.match(stderr, /refused 127\.0\.0\.1:\d+: --max-connections reached/);
});

Deno.test("tcp-server prints an IPv6 listening line in brackets", {
  ignore: !hasIPv6Loopback(),
}, async (t) => {
  await using server = await startServer(SERVER, ["--hostname", "::1", "--port", "0"]);
  assert.match(server.line, /^listening on tcp:\/\/\[::1\]:\d+$/);
  await t.step("and serves over it", async () => {
    const run = await runProgram(CLIENT, [
      "--hostname",
      "::1",
      "--port",
      String(server.port),
      "--message",
      "v6",
    ]);
    assert.equal(run.stdout, "v6");
  });
});

Deno.test("tcp-server on a port in use exits 1 with one clear line", async () => {
  await using server = await startServer(SERVER, ["--port", "0"]);
  const run = await runProgram(SERVER, ["--port", String(server.port)]);
  assert.equal(run.code, 1);
  assert.equal(run.stdout, "");
  assert.equal(
    run.stderr,
    `tcp-server: address 127.0.0.1:${server.port} is already in use: stop the other server or pick another port (0 picks a free one)\n`,
  );
});

Deno.test("tcp-server and tcp-client exit 2 on a bad flag, with one line and no stack trace", async () => {
  for (
    const [script, args, pattern] of [
      [SERVER, ["--bogus"], /^tcp-server: Unknown option '--bogus' \(see tcp-server --help\)\n$/],
      [SERVER, ["--port", "70000"], /^tcp-server: --port must be between 0 and 65535, got 70000/],
      [
        SERVER,
        ["--idle-timeout", "soon"],
        /^tcp-server: --idle-timeout must be a number of seconds/,
      ],
      [CLIENT, ["--port", "x"], /^tcp-client: --port must be a whole number, got "x"/],
      [CLIENT, ["--timeout", "1s"], /^tcp-client: --timeout must be a number of seconds/],
    ] as const
  ) {
    const run = await runProgram(script, [...args]);
    assert.equal(run.code, 2, `${script} ${args.join(" ")}`);
    assert.match(run.stderr, pattern);
    assert.equal(run.stderr.trim().split("\n").length, 1);
  }
});

Deno.test("tcp-client exits 1 with one clear line when the connection is refused", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  const run = await runProgram(CLIENT, ["--port", String(port), "--message", "hi"]);
  assert.equal(run.code, 1);
  assert.equal(
    run.stderr,
    `tcp-client: connection refused by 127.0.0.1:${port}: is the server running and listening on that port?\n`,
  );
});

Deno.test("tcp-client --timeout gives up on a server that never closes", async () => {
  // A server that accepts and reads but never answers or closes.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const conn of listener) held.push(conn);
  })();
  try {
    const run = await runProgram(CLIENT, [
      "--port",
      String((listener.addr as Deno.NetAddr).port),
      "--message",
      "hi",
      "--timeout",
      "0.3",
    ]);
    assert.equal(run.code, 1);
    assert.match(run.stderr, /^tcp-client: the peer did not finish within 0\.3s: raise --timeout/);
  } finally {
    listener.close();
    await accepting;
    for (const conn of held) conn.close();
  }
});

Deno.test("tcp-server --help prints usage and exits 0", async () => {
  const run = await runProgram(SERVER, ["--help"]);
  assert.equal(run.code, 0);
  assert.match(run.stdout, /^tcp-server: a TCP echo server/);
  assert.match(run.stdout, /--max-connections N/);
});
