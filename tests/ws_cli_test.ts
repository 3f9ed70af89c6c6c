// ws-server and ws-client as a user runs them: spawned with the real Deno.
import assert from "node:assert/strict";
import { connect } from "../websocket/mod.ts";
import { runProgram, startServer } from "./_helpers.ts";
import { tempDevCerts } from "./support/certs.ts";
import { RawClient } from "./ws_helpers.ts";

const SERVER = "cli/ws_server.ts";
const CLIENT = "cli/ws_client.ts";

Deno.test("ws-server broadcasts; ws-client --message prints what comes back; stdin mode relays lines", async () => {
  await using server = await startServer(SERVER, ["--port", "0"]);
  assert.match(server.line, /^listening on ws:\/\/127\.0\.0\.1:\d+$/);
  const url = `ws://127.0.0.1:${server.port}/`;
  // A library client sees every broadcast, the programs' messages included.
  await using watcher = await connect(url);
  const one = await runProgram(CLIENT, ["--url", url, "--message", "hello, ws"]);
  assert.equal(one.code, 0, one.stderr);
  assert.equal(one.stdout, "hello, ws\n");
  assert.equal(await watcher.receive(), "hello, ws");
  const lines = await runProgram(CLIENT, ["--url", url], { stdin: "one\ntwo\nthree\n" });
  assert.equal(lines.code, 0, lines.stderr);
  assert.equal(lines.stdout, "one\ntwo\nthree\n");
  for (const line of ["one", "two", "three"]) assert.equal(await watcher.receive(), line);
  // Binary keeps its type through the broadcast.
  await watcher.send(new Uint8Array([1, 2]));
  assert.deepEqual(await watcher.receive(), new Uint8Array([1, 2]));
  // The chat page on a plain GET.
  await using raw = await RawClient.connect(server.port);
  await raw.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  const page = await raw.readResponse();
  assert.equal(page.status, 200);
  assert.match(page.head, /content-type: text\/html/i);
  assert.match(page.body, /new WebSocket\(/);
  // SIGTERM: the watcher is sent 1001, the server exits 0 with nothing more on stdout.
  const stopping = server.stop("SIGTERM");
  assert.equal(await watcher.receive(), null);
  assert.equal(watcher.closeCode, 1001);
  const { code, stdout, stderr } = await stopping;
  assert.equal(code, 0, stderr);
  assert.equal(stdout, "");
  assert.match(stderr, /SIGTERM: shutting down/);
});

Deno.test("ws-server --mode echo answers the sender only; --max-payload closes with 1009", async () => {
  await using server = await startServer(SERVER, [
    "--port",
    "0",
    "--mode",
    "echo",
    "--path",
    "/echo",
    "--max-payload",
    "100",
    "--quiet",
  ]);
  const url = `ws://127.0.0.1:${server.port}/echo`;
  await using a = await connect(url);
  await using b = await connect(url);
  await a.send("for a");
  await b.send(new Uint8Array([9]));
  assert.equal(await a.receive(), "for a");
  assert.deepEqual(await b.receive(), new Uint8Array([9]));
  await a.send("x".repeat(101));
  assert.equal(await a.receive(), null);
  assert.equal(a.closeCode, 1009);
  await b.send("b is fine");
  assert.equal(await b.receive(), "b is fine");
  // Another path is not found; ws-client says so and exits 1.
  const wrong = await runProgram(CLIENT, [
    "--url",
    `ws://127.0.0.1:${server.port}/`,
    "--message",
    "x",
  ]);
  assert.equal(wrong.code, 1);
  assert.match(wrong.stderr, /^ws-client: .*404 Not Found.*\n$/);
});

Deno.test("ws-server --cert/--key serves wss; ws-client --ca trusts it", async () => {
  await using certs = await tempDevCerts({ hosts: ["localhost", "127.0.0.1"] });
  await using server = await startServer(SERVER, [
    "--port",
    "0",
    ...certs.serverArgs,
    "--mode",
    "echo",
  ]);
  assert.match(server.line, /^listening on wss:\/\/127\.0\.0\.1:\d+$/);
  const url = `wss://localhost:${server.port}/`;
  const trustCa = ["--ca", certs.files.ca];
  const ok = await runProgram(CLIENT, ["--url", url, ...trustCa, "--message", "secure"]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(ok.stdout, "secure\n");
  const untrusted = await runProgram(CLIENT, ["--url", url, "--message", "x"]);
  assert.equal(untrusted.code, 1);
  assert.match(untrusted.stderr, /^ws-client: .*(not trusted|trust|CA).*\n$/);
});

Deno.test("usage errors exit 2, failures exit 1, each with one line on stderr", async () => {
  const cases: [string, string[], number, RegExp][] = [
    [SERVER, ["--bogus"], 2, /--bogus/],
    [SERVER, ["--mode", "shout"], 2, /--mode must be one of broadcast, echo/],
    [SERVER, ["--cert", "x.pem"], 2, /--cert needs --key/],
    [
      SERVER,
      ["--port", "0", "--cert", "nope.pem", "--key", "nope-key.pem"],
      1,
      /nope\.pem not found.*deno task certs/,
    ],
    [CLIENT, ["--url", "http//bad"], 2, /--url/],
    [CLIENT, ["--header", "no colon"], 2, /--header/],
    [CLIENT, ["--url", "ws://127.0.0.1:1/", "--message", "x"], 1, /connection refused/],
  ];
  await Promise.all(cases.map(async ([program, args, code, pattern]) => {
    const run = await runProgram(program, args);
    assert.equal(run.code, code, `${program} ${args.join(" ")}: ${run.stderr}`);
    assert.match(run.stderr, pattern);
    assert.equal(run.stderr.trim().split("\n").length, 1, run.stderr);
    assert.equal(run.stdout, "");
  }));
});
