// A TLS server that closes without a close_notify — as the Boost.Asio SSL
// example and most OpenSSL servers do once the client half-closed — is not a
// failure for a client that got its whole answer: the output is printed, one
// warning line goes to stderr, exit 0 (as openssl s_client, ncat --ssl and
// curl do). `--require-close-notify` keeps the strict behaviour. The peer is
// real Node.js: its `socket.destroy()` cuts the TCP connection without one.
import assert from "node:assert/strict";
import { connect } from "../tls/mod.ts";
import { readAll, runProgram } from "./_helpers.ts";
import { tempDevCerts } from "./support/certs.ts";
import { startProgram } from "./support/process.ts";
import { hasTool } from "./support/tools.ts";

const haveNode = hasTool("node");
const certs = await tempDevCerts({ prefix: "netkit-close-notify-", removeOnUnload: true });
const caFile = certs.files.ca;

// mode "echo": echo until the client half-closes, then cut without close_notify.
// mode "http": answer one request with a body framed by the close, then cut.
const SERVER = `
const tls = require("node:tls");
const server = tls.createServer({ cert: process.env.CERT, key: process.env.KEY }, (socket) => {
  const chunks = [];
  socket.on("data", (d) => {
    if (process.env.MODE === "echo") return socket.write(d);
    chunks.push(d);
    if (Buffer.concat(chunks).includes("\\r\\n\\r\\n")) {
      socket.write("HTTP/1.1 200 OK\\r\\nContent-Type: text/plain\\r\\n\\r\\nbody to the close\\n", () => socket.destroy());
    }
  });
  socket.on("end", () => socket.destroy());
  socket.on("error", () => {});
});
server.listen(0, "127.0.0.1", () => console.log("listening on tls://127.0.0.1:" + server.address().port));
`;

function nodeServer(mode: "echo" | "http") {
  return startProgram({
    command: "node",
    args: ["-e", SERVER],
    env: { CERT: certs.cert, KEY: certs.key, MODE: mode },
    name: "node tls server",
  });
}

/** tls.connect() to the Node echo server on `port`, "hello" sent and the write side closed. */
async function helloThenEnd(port: number, options: { requireCloseNotify?: boolean } = {}) {
  const conn = await connect({ hostname: "localhost", port, caCerts: [certs.ca], ...options });
  const writer = conn.writable.getWriter();
  await writer.write(new TextEncoder().encode("hello"));
  await writer.close();
  return conn;
}

Deno.test({
  name:
    "tls.connect() reads to a clean end and sets truncated when the server sends no close_notify",
  ignore: !haveNode,
  async fn() {
    await using server = await nodeServer("echo");
    await using conn = await helloThenEnd(server.port);
    assert.equal(new TextDecoder().decode(await readAll(conn.readable)), "hello");
    assert.equal(conn.truncated, true);
  },
});

Deno.test({
  name: "tls.connect({ requireCloseNotify }) makes the missing close_notify ERR_TLS_TRUNCATED",
  ignore: !haveNode,
  async fn() {
    await using server = await nodeServer("echo");
    await using conn = await helloThenEnd(server.port, { requireCloseNotify: true });
    await assert.rejects(readAll(conn.readable), (err: Error & { code?: string }) => {
      assert.equal(err.code, "ERR_TLS_TRUNCATED");
      assert.match(err.message, /without a TLS close_notify/);
      return true;
    });
  },
});

Deno.test({
  name:
    "tls-client prints the echo, warns in one line and exits 0 when the server sends no close_notify",
  ignore: !haveNode,
  async fn() {
    await using server = await nodeServer("echo");
    const args = ["--hostname", "localhost", "--port", String(server.port), "--ca", caFile];
    const run = await runProgram("cli/tls_client.ts", [...args, "--message", "Hello, Asio!"]);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, "Hello, Asio!");
    assert.equal(
      run.stderr,
      "tls-client: warning: the server closed the connection without a TLS close_notify, so " +
        "the output may be cut short; pass --require-close-notify to make this an error\n",
    );
    const strict = await runProgram("cli/tls_client.ts", [
      ...args,
      "--message",
      "Hello, Asio!",
      "--require-close-notify",
    ]);
    assert.equal(strict.code, 1);
    assert.equal(strict.stdout, "Hello, Asio!");
    assert.match(
      strict.stderr,
      /^tls-client: the peer closed the connection without a TLS close_notify/,
    );
    assert.equal(strict.stderr.trim().split("\n").length, 1);
  },
});

Deno.test({
  name:
    "http-get prints a body read to the close, warns in one line and exits 0 without close_notify",
  ignore: !haveNode,
  async fn() {
    await using server = await nodeServer("http");
    const url = `https://localhost:${server.port}/`;
    const run = await runProgram("cli/http_get.ts", ["--url", url, "--ca", caFile]);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, "body to the close\n");
    assert.match(
      run.stderr,
      /^http-get: warning: the server closed the connection without a TLS close_notify/,
    );
    const strict = await runProgram("cli/http_get.ts", [
      "--url",
      url,
      "--ca",
      caFile,
      "--require-close-notify",
    ]);
    assert.equal(strict.code, 1);
    assert.match(strict.stderr, /close_notify/);
  },
});
