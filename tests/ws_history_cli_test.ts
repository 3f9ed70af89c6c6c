// ws-server --history / --history-ttl as a user runs them: a netkit.v1
// client (ReconnectingWebSocket with resume) loses nothing when its
// connection drops, and is told recovered:false (epoch) when the server
// restarts, since the history is in the process's memory.
import assert from "node:assert/strict";
import { connect, ReconnectingWebSocket } from "../websocket/mod.ts";
import { NETKIT_V1 } from "../websocket/codec/mod.ts";
import { runProgram, startServer } from "./_helpers.ts";
import { until } from "./support/time.ts";

const SERVER = "cli/ws_server.ts";
const TOPIC = "broadcast"; // ws-server's one topic

Deno.test("ws-server --history: a dropped netkit.v1 client resumes with nothing lost; a restarted server says recovered:false (epoch)", async () => {
  const first = await startServer(SERVER, ["--port", "0", "--history", "100"]);
  const port = first.port;
  const url = `ws://127.0.0.1:${port}/`;
  const recovered: { topic: string; recovered: boolean; reason?: string }[] = [];
  await using rws = new ReconnectingWebSocket(url, {
    resume: true,
    reconnect: { minDelay: 20, maxDelay: 100, onRecovered: (e) => recovered.push(e) },
  });
  try {
    await first.waitForStderr(/history 100 messages up to 300s \(netkit\.v1\)/);
    assert.equal((await rws.ready()).protocol, NETKIT_V1);
    await until(() => rws.positions[TOPIC] !== undefined, "subscribed");
    await using other = await connect(url); // a plain client in the same room
    for (const m of ["one", "two"]) await other.send(m);
    assert.equal(await rws.receive(), "one");
    assert.equal(await rws.receive(), "two");

    // The client's connection drops; the room goes on meanwhile.
    const seen = rws.positions[TOPIC].offset;
    rws.current!.destroy();
    for (const m of ["three", "four", "five"]) await other.send(m);
    for (const m of ["three", "four", "five"]) assert.equal(await rws.receive(), m);
    assert.deepEqual(recovered, [{ topic: TOPIC, recovered: true }]);
    assert.equal(rws.positions[TOPIC].offset, seen + 3);
    // Its own messages come back once too.
    await rws.send("six");
    assert.equal(await rws.receive(), "six");
  } finally {
    const { code, stderr } = await first.stop();
    assert.equal(code, 0, stderr);
  }

  // The server restarts on the same port: the in-memory log is gone.
  await using second = await startServer(SERVER, ["--port", String(port), "--history", "100"]);
  await until(() => recovered.length >= 2, "the resume answer after the restart");
  assert.deepEqual(recovered[1], { topic: TOPIC, recovered: false, reason: "epoch" });
  await using other = await connect(url);
  await other.send("after the restart");
  assert.equal(await rws.receive(), "after the restart");
  await rws.close();
  await other.close();
  const { code, stderr } = await second.stop();
  assert.equal(code, 0, stderr);
});

Deno.test("ws-server --history 0 speaks plainly to a client that offers netkit.v1", async () => {
  await using server = await startServer(SERVER, ["--port", "0", "--history", "0", "--quiet"]);
  await using ws = await connect(`ws://127.0.0.1:${server.port}/`, { protocols: [NETKIT_V1] });
  assert.equal(ws.protocol, "");
  await ws.send("plain");
  assert.equal(await ws.receive(), "plain");
});

Deno.test("ws-server --history and --history-ttl: bad values and --mode echo are usage errors; --help lists them", async () => {
  for (
    const [args, message] of [
      [["--history", "1.5"], /--history must be a whole number/],
      [["--history", "ten"], /--history must be a whole number/],
      [["--history-ttl", "soon"], /--history-ttl must be a number of seconds/],
      [
        ["--mode", "echo", "--history", "10"],
        /--history keeps broadcasts: it has no use with --mode echo/,
      ],
    ] as const
  ) {
    const { code, stdout, stderr } = await runProgram(SERVER, ["--port", "0", ...args]);
    assert.equal(code, 2, stderr);
    assert.equal(stdout, "");
    assert.match(stderr, message);
  }
  const help = await runProgram(SERVER, ["--help"]);
  assert.equal(help.code, 0);
  assert.match(
    help.stdout,
    /--history N +broadcast mode: keep the last N messages \(default 1000\)/,
  );
  assert.match(help.stdout, /--history-ttl S +keep each message at most S seconds \(default 300/);
});
