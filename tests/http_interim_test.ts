// http.get / http-get against responses real servers send: interim 1xx
// responses before the final one (RFC 9110 §15.2), and a transfer coding
// other than chunked, read to the close (RFC 9112 §6.3).
import assert from "node:assert/strict";
import { get } from "../http/mod.ts";
import { serve } from "../tcp/mod.ts";
import { readUntil, writeAll } from "../io/mod.ts";
import { runProgram } from "./_helpers.ts";

/** A server that reads one request head and answers with `reply`; closes only if asked. */
function rawServer(reply: string, close: boolean) {
  return serve({ port: 0 }, async (conn) => {
    await readUntil(conn.readable, "\r\n\r\n");
    await writeAll(conn.writable, reply);
    if (close) return;
    // Keep the connection open until the client goes: the body must be framed by its head.
    await conn.readable.pipeTo(new WritableStream()).catch(() => {});
  });
}

const EARLY_HINTS = "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n" +
  "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

Deno.test("http.get() skips a 103 Early Hints and returns the final 200 with its body", async () => {
  await using server = rawServer(EARLY_HINTS, false);
  await using response = await get(`http://127.0.0.1:${server.addr.port}/`);
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("link"), null);
  assert.equal(await new Response(response.body).text(), "hello");
});

Deno.test("http.get() skips several interim responses (100, 102, 103) before the final one", async () => {
  const reply = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n" + EARLY_HINTS;
  await using server = rawServer(reply, false);
  await using response = await get(`http://127.0.0.1:${server.addr.port}/`);
  assert.equal(response.status, 200);
  assert.equal(await new Response(response.body).text(), "hello");
});

Deno.test("http.get() gives up on an endless run of interim responses with a clear error", async () => {
  await using server = rawServer("HTTP/1.1 100 Continue\r\n\r\n".repeat(40), false);
  await assert.rejects(
    get(`http://127.0.0.1:${server.addr.port}/`),
    (err: Error & { code?: string }) => {
      assert.equal(err.code, "ERR_HTTP_MALFORMED");
      assert.match(err.message, /more than 16 interim \(1xx\) responses/);
      return true;
    },
  );
});

Deno.test("http.get() reads a body with a non-chunked transfer coding to the close, ignoring Content-Length", async () => {
  const reply = "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 3\r\n\r\nabcdef";
  await using server = rawServer(reply, true);
  await using response = await get(`http://127.0.0.1:${server.addr.port}/`);
  assert.equal(response.framing, "close");
  assert.equal(await new Response(response.body).text(), "abcdef");
});

Deno.test("http-get --include prints the final head and body after a 103", async () => {
  await using server = rawServer(EARLY_HINTS, false);
  const run = await runProgram("cli/http_get.ts", [
    "--url",
    `http://127.0.0.1:${server.addr.port}/`,
    "--include",
  ]);
  assert.equal(run.code, 0, run.stderr);
  assert.equal(run.stdout, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
});
