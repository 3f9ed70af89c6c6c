// The WebSocket server in production: X-Forwarded-For from trusted proxies,
// per-address limits on the client behind them, several certificates by SNI
// with SIGHUP reload, and --metrics with the hub's counters.
import assert from "node:assert/strict";
import { connect, serve } from "../websocket/mod.ts";
import { connect as tlsConnect } from "../tls/mod.ts";
import { createCA, createServerCert } from "../certs/mod.ts";
import { startServer } from "./_helpers.ts";
import { delay } from "./support/time.ts";

Deno.test("trustProxy: the client's address comes from X-Forwarded-For, the right-most untrusted hop", async () => {
  const seen: string[] = [];
  await using server = serve({ port: 0, trustProxy: ["127.0.0.1/32", "10.0.0.0/8"] }, {
    open: (ws) => void seen.push((ws.remoteAddr as { hostname: string }).hostname),
  });
  const viaProxies = { "x-forwarded-for": "203.0.113.5, 198.51.100.7, 10.1.2.3" };
  await using a = await connect(server.url, { headers: viaProxies });
  await using b = await connect(server.url);
  await using c = await connect(server.url, { headers: { "x-forwarded-for": "not an ip" } });
  await delay(20);
  assert.deepEqual(seen, ["198.51.100.7", "127.0.0.1", "127.0.0.1"]);
  assert.ok(a && b && c);
});

Deno.test("X-Forwarded-For is ignored from peers that are not trusted", async () => {
  const seen: string[] = [];
  await using server = serve({ port: 0, trustProxy: ["10.0.0.0/8"] }, {
    open: (ws) => void seen.push((ws.remoteAddr as { hostname: string }).hostname),
  });
  await using _a = await connect(server.url, { headers: { "x-forwarded-for": "198.51.100.7" } });
  await delay(20);
  assert.deepEqual(seen, ["127.0.0.1"]);
});

Deno.test("behind a trusted proxy, maxConnectionsPerIp counts each forwarded client: 429 over it", async () => {
  await using server = serve({ port: 0, trustProxy: ["127.0.0.1/32"], maxConnectionsPerIp: 1 }, {
    message: (ws, data) => void ws.send(data),
  });
  const as = (ip: string) => connect(server.url, { headers: { "x-forwarded-for": ip } });
  await using one = await as("198.51.100.1");
  await using two = await as("198.51.100.2");
  await assert.rejects(as("198.51.100.1"), (err: Error & { status?: number }) => {
    assert.match(err.message, /429/);
    return true;
  });
  await one.send("ok");
  assert.equal(await one.receive(), "ok");
  assert.equal(server.stats().refused["per-ip"], 1);
  assert.ok(two);
});

Deno.test("ws-server serves two certificates by SNI and reloads them on SIGHUP", async () => {
  const ca = await createCA();
  const dir = await Deno.makeTempDir({ prefix: "netkit-ws-sni-" });
  try {
    const write = async (name: string, hosts: string[]) => {
      const { cert, key } = await createServerCert(ca, { hosts });
      await Deno.writeTextFile(`${dir}/${name}.pem`, cert);
      await Deno.writeTextFile(`${dir}/${name}-key.pem`, key);
    };
    await write("a", ["a.test"]);
    await write("b", ["b.test"]);
    await using server = await startServer("cli/ws_server.ts", [
      "--port",
      "0",
      "--cert",
      `${dir}/a.pem`,
      "--key",
      `${dir}/a-key.pem`,
      "--cert",
      `${dir}/b.pem`,
      "--key",
      `${dir}/b-key.pem`,
    ]);
    assert.match(server.line, /^listening on wss:\/\//);
    const handshake = (serverName: string) =>
      tlsConnect({ hostname: "127.0.0.1", port: server.port, serverName, caCerts: [ca.cert] });
    for (const name of ["a.test", "b.test"]) (await handshake(name)).close();
    // b.pem now covers c.test instead: SIGHUP swaps it in for new handshakes.
    await write("b", ["c.test"]);
    server.kill("SIGHUP");
    await server.waitForStderr(/SIGHUP: reloaded 2 certificates \(1 changed\)/);
    (await handshake("c.test")).close();
    await assert.rejects(handshake("b.test"), (err: Error & { code?: string }) => {
      assert.equal(err.code, "ERR_TLS_CERT_NAME_MISMATCH"); // the default (a.test) was served
      return true;
    });
    const stopped = await server.stop("SIGTERM");
    assert.equal(stopped.code, 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ws-server --metrics counts publishes, deliveries and ping round trips", async () => {
  await using server = await startServer("cli/ws_server.ts", [
    "--port",
    "0",
    "--metrics",
    "127.0.0.1:0",
    "--idle-timeout",
    "0.3",
  ]);
  const line = await server.waitForStderr(/metrics on http:/);
  const url = /http:\/\/127\.0\.0\.1:\d+\//.exec(line)![0];
  const url2 = `ws://127.0.0.1:${server.port}/`;
  await using a = await connect(url2);
  await using b = await connect(url2);
  await delay(20); // both subscribed
  await a.send("hello");
  assert.equal(await a.receive(), "hello");
  assert.equal(await b.receive(), "hello");
  await delay(400); // silent for half the idle timeout: each client is pinged, and answers
  const metrics = await (await fetch(`${url}metrics`)).text();
  assert.match(metrics, /^# TYPE netkit_websocket_ping_rtt_seconds histogram$/m);
  const pings = Number(/^netkit_websocket_ping_rtt_seconds_count (\d+)$/m.exec(metrics)?.[1]);
  assert.ok(pings >= 2, `pings answered: ${pings}`);
  assert.match(metrics, /^netkit_slow_consumer_closes_total 0$/m);
  assert.match(metrics, /^netkit_messages_published_total 1$/m);
  assert.match(metrics, /^netkit_deliveries_total 2$/m);
  assert.match(metrics, /^netkit_websocket_connections_open 2$/m);
  // Each client got one 7-byte frame ("hello") after its 101 response; pings are counted too.
  const sent = Number(/^netkit_sent_bytes_total (\d+)$/m.exec(metrics)?.[1]);
  assert.ok(sent > 2 * 129 + 2 * 7, `bytes sent: ${sent}`);
  assert.match(metrics, /^netkit_connections_open 2$/m);
  await a.close();
  await b.close();
  assert.equal((await server.stop("SIGTERM")).code, 0);
});
