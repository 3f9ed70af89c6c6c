import assert from "node:assert/strict";
import { readUntil, writeAll } from "../io/mod.ts";
import { serve } from "../tcp/mod.ts";
import { createDevCerts } from "../certs/mod.ts";
import { runProgram } from "./_helpers.ts";

const PROGRAM = "cli/http_get.ts";
const decoder = new TextDecoder();

/**
 * A hand-written HTTP server that answers one request with `response` and
 * then keeps the connection open until the client goes: a client that
 * waits for the close to end the body hangs here.
 */
function rawHttpServer(response: string | Uint8Array, { closeAfter = false } = {}) {
  const requests: string[] = [];
  const server = serve({ port: 0 }, async (conn) => {
    const head = await readUntil(conn.readable, "\r\n\r\n");
    requests.push(decoder.decode(head!));
    await writeAll(conn.writable, response);
    if (closeAfter) return;
    // Hold the connection open until the client closes it.
    for await (const _ of conn.readable);
  });
  return { server, requests, url: `http://127.0.0.1:${server.addr.port}/path?q=1` };
}

Deno.test("http-get frames the body by Content-Length while the server keeps the connection open", async () => {
  const { server, requests, url } = rawHttpServer(
    "HTTP/1.1 200 OK\r\nContent-Length: 11\r\nConnection: keep-alive\r\n\r\nhello world",
  );
  await using _ = server;
  const run = await runProgram(PROGRAM, ["--url", url]);
  assert.equal(run.code, 0, run.stderr);
  assert.equal(run.stdout, "hello world");
  assert.match(requests[0], /^GET \/path\?q=1 HTTP\/1\.1\r\n/);
  assert.match(requests[0], /\r\nhost: 127\.0\.0\.1:\d+\r\n/);
});

Deno.test("http-get de-chunks a chunked body with extensions and trailers, connection kept open", async () => {
  const { server, url } = rawHttpServer(
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" +
      "5;ext=1\r\nhello\r\n" + "1\r\n \r\n" + "6\r\nchunks\r\n" + "0\r\nX-Trailer: yes\r\n\r\n",
  );
  await using _ = server;
  const run = await runProgram(PROGRAM, ["--url", url]);
  assert.equal(run.code, 0, run.stderr);
  assert.equal(run.stdout, "hello chunks");
});

Deno.test("http-get reads a body with neither length nor chunks until the server closes", async () => {
  const { server, url } = rawHttpServer("HTTP/1.0 200 OK\r\n\r\nuntil close", { closeAfter: true });
  await using _ = server;
  const run = await runProgram(PROGRAM, ["--url", url]);
  assert.equal(run.code, 0, run.stderr);
  assert.equal(run.stdout, "until close");
});

Deno.test("http-get --include prints the head exactly as received, then the body", async () => {
  const head = "HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\nX-A: b\r\n\r\n";
  const { server, url } = rawHttpServer(head + "nope");
  await using _ = server;
  const run = await runProgram(PROGRAM, ["--url", url, "--include"]);
  assert.equal(run.code, 0, run.stderr);
  assert.equal(run.stdout, head + "nope");
});

Deno.test("http-get passes binary bodies through byte for byte", async () => {
  const body = new Uint8Array(200_000).map((_, i) => (i * 7) & 0xff);
  const head = new TextEncoder().encode(
    `HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n`,
  );
  const response = new Uint8Array(head.length + body.length);
  response.set(head);
  response.set(body, head.length);
  const { server, url } = rawHttpServer(response);
  await using _ = server;
  const run = await runProgram(PROGRAM, ["--url", url]);
  assert.equal(run.code, 0, run.stderr);
  assert.deepEqual(run.stdoutBytes, body);
});

Deno.test("http-get exits 1 with a clear line when the body is cut short", async () => {
  const { server, url } = rawHttpServer("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", {
    closeAfter: true,
  });
  await using _ = server;
  const run = await runProgram(PROGRAM, ["--url", url]);
  assert.equal(run.code, 1);
  assert.equal(run.stdout, "short");
  assert.equal(
    run.stderr,
    "http-get: the server closed the connection 95 bytes before the end of the body (Content-Length: 100)\n",
  );
});

Deno.test("http-get exits 1 when the peer does not speak HTTP", async () => {
  const { server, url } = rawHttpServer("SSH-2.0-OpenSSH_9.2\r\n\r\n", { closeAfter: true });
  await using _ = server;
  const run = await runProgram(PROGRAM, ["--url", url]);
  assert.equal(run.code, 1);
  assert.match(
    run.stderr,
    /^http-get: not an HTTP\/1\.x status line: "SSH-2\.0-OpenSSH_9\.2"; is this an HTTP server\?\n$/,
  );
});

Deno.test("http-get works against Deno.serve, an independent HTTP server", async () => {
  await using server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    (request) => new Response(`you asked for ${new URL(request.url).pathname}`),
  );
  const run = await runProgram(PROGRAM, ["--url", `http://127.0.0.1:${server.addr.port}/x`]);
  assert.equal(run.code, 0, run.stderr);
  assert.equal(run.stdout, "you asked for /x");
});

Deno.test("http-get fetches https:// and verifies the server against --ca", async () => {
  const certs = await createDevCerts();
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/ca.pem`, certs.ca);
    await using server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, cert: certs.cert, key: certs.key, onListen() {} },
      () => new Response("secret"),
    );
    const url = `https://localhost:${server.addr.port}/`;
    const trusted = await runProgram(PROGRAM, ["--url", url, "--ca", `${dir}/ca.pem`]);
    assert.equal(trusted.code, 0, trusted.stderr);
    assert.equal(trusted.stdout, "secret");
    const untrusted = await runProgram(PROGRAM, ["--url", url]);
    assert.equal(untrusted.code, 1);
    assert.match(untrusted.stderr, /^http-get: .*--ca/);
    assert.equal(untrusted.stderr.trim().split("\n").length, 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("http-get exits 2 on a missing or unsupported --url", async () => {
  const missing = await runProgram(PROGRAM, []);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /^http-get: --url is required/);
  const ftp = await runProgram(PROGRAM, ["--url", "ftp://example.com/"]);
  assert.equal(ftp.code, 2);
  assert.match(ftp.stderr, /^http-get: --url must start with http:\/\/ or https:\/\//);
});

Deno.test("http-get exits 1 when the connection is refused", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  const run = await runProgram(PROGRAM, ["--url", `http://127.0.0.1:${port}/`]);
  assert.equal(run.code, 1);
  assert.match(run.stderr, /^http-get: connection refused by 127\.0\.0\.1:\d+/);
});
