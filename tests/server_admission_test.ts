// Per-address admission and the PROXY protocol on real servers: at, over and
// under each limit, with real sockets, and HAProxy in front where installed.
import assert from "node:assert/strict";
import { type Conn, echo, type NetAddr } from "../mod.ts";
import { readAll, runProgram, startServer } from "./_helpers.ts";
import { readLine, writeAll } from "../io/mod.ts";
import * as tcp from "../tcp/mod.ts";
import * as tls from "../tls/mod.ts";
import * as websocket from "../websocket/mod.ts";
import { createDevCerts } from "../certs/mod.ts";
import { encodeProxyHeaderV1, encodeProxyHeaderV2 } from "../internal/proxy_protocol.ts";
import { hasIPv6Loopback, hasTool } from "./support/tools.ts";
import { startHaproxy } from "./support/haproxy.ts";
import { freePort } from "./support/ports.ts";
import { delay } from "./support/time.ts";

const encoder = new TextEncoder();

/** Connects and sends `first`; resolves to what comes back before the server closes. */
async function exchange(
  port: number,
  first: Uint8Array | string,
  hostname = "127.0.0.1",
): Promise<string> {
  await using conn = await tcp.connect({ hostname, port });
  const writer = conn.writable.getWriter();
  await writer.write(typeof first === "string" ? encoder.encode(first) : first);
  await writer.close();
  return new TextDecoder().decode(await readAll(conn.readable));
}

/** Holds a connection open (an echoed line proves it was served). */
async function hold(port: number, hostname = "127.0.0.1"): Promise<Conn> {
  const conn = await tcp.connect({ hostname, port });
  await writeAll(conn.writable, "hello\n");
  assert.equal(await readLine(conn.readable), "hello");
  return conn;
}

Deno.test("maxConnectionsPerIp: at the limit served, one over closed at once, a slot freed by a close is reused", async () => {
  const events: tcp.ServerEvent[] = [];
  await using server = tcp.serve(
    { port: 0, maxConnectionsPerIp: 2, onEvent: (e) => events.push(e) },
    echo,
  );
  const port = server.addr.port;
  const a = await hold(port);
  const b = await hold(port);
  // Over: closed before anything is echoed.
  assert.equal(await exchange(port, "over\n"), "");
  assert.deepEqual(
    events.filter((e) => e.type === "refused").map((e) => e.type === "refused" && e.reason),
    ["per-ip"],
  );
  await a.close();
  await delay(50); // the session ends after the close is seen
  assert.equal(await exchange(port, "under again\n"), "under again\n");
  await b.close();
  assert.equal(server.stats().refused["per-ip"], 1);
});

Deno.test({
  name: "maxConnectionsPerIp counts each address apart (127.0.0.1 and ::1)",
  ignore: !hasIPv6Loopback(),
  async fn() {
    await using server = tcp.serve({ hostname: "::", port: 0, maxConnectionsPerIp: 1 }, echo);
    const port = server.addr.port;
    await using v4 = await hold(port, "127.0.0.1");
    await using v6 = await hold(port, "::1");
    assert.equal(await exchange(port, "over\n", "127.0.0.1"), "");
    assert.equal(await exchange(port, "over\n", "::1"), "");
    assert.ok(v4 && v6);
  },
});

Deno.test("acceptRate: a burst of ceil(rate) is served, the next new connection closed at once", async () => {
  await using server = tcp.serve({ port: 0, acceptRate: 2 }, echo);
  const port = server.addr.port;
  assert.equal(await exchange(port, "1\n"), "1\n");
  assert.equal(await exchange(port, "2\n"), "2\n");
  assert.equal(await exchange(port, "3\n"), "");
  assert.equal(server.stats().refused.rate, 1);
});

Deno.test("ws:// over a per-address limit answers HTTP 429 before reading the request", async () => {
  await using server = websocket.serve({ port: 0, maxConnectionsPerIp: 1 }, {
    message: (ws, data) => void ws.send(data),
  });
  await using first = await websocket.connect(server.url);
  const answer = await exchange(
    server.addr.port,
    "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
  );
  assert.match(answer, /^HTTP\/1\.1 429 Too Many Requests\r\n/);
  assert.match(answer, /\r\nretry-after: 1\r\n/);
  await first.send("still served");
  assert.equal(await first.receive(), "still served");
  assert.equal(server.stats().refused["per-ip"], 1);
});

Deno.test("proxyProtocol: v1 and v2 headers set remoteAddr; bytes right after the header are kept", async () => {
  const seen: string[] = [];
  await using server = tcp.serve({ port: 0, proxyProtocol: true }, async (conn) => {
    const addr = conn.remoteAddr as NetAddr;
    seen.push(`${addr.hostname}:${addr.port}`);
    await echo(conn);
  });
  const port = server.addr.port;
  const v1 = encodeProxyHeaderV1({
    source: { hostname: "203.0.113.7", port: 5555 },
    destination: { hostname: "10.0.0.1", port: 7000 },
  });
  const v2 = encodeProxyHeaderV2({
    source: { hostname: "2001:db8::42", port: 6666 },
    destination: { hostname: "2001:db8::1", port: 7000 },
  });
  const withData = (header: Uint8Array, text: string) => {
    const out = new Uint8Array(header.length + text.length);
    out.set(header);
    out.set(encoder.encode(text), header.length);
    return out;
  };
  assert.equal(await exchange(port, withData(v1, "after v1\n")), "after v1\n");
  assert.equal(await exchange(port, withData(v2, "after v2\n")), "after v2\n");
  assert.deepEqual(seen, ["203.0.113.7:5555", "2001:db8::42:6666"]);
});

Deno.test("proxyProtocol: a missing or malformed header, or a source not in `from`, costs that connection only", async () => {
  const events: tcp.ServerEvent[] = [];
  await using server = tcp.serve(
    { port: 0, proxyProtocol: true, onEvent: (e) => events.push(e) },
    echo,
  );
  const port = server.addr.port;
  assert.equal(await exchange(port, "GET / HTTP/1.1\r\n\r\n"), "");
  assert.equal(await exchange(port, "PROXY TCP4 1.2.3.4\r\n"), "");
  const good = encodeProxyHeaderV1({
    source: { hostname: "198.51.100.1", port: 1 },
    destination: { hostname: "198.51.100.2", port: 2 },
  });
  const ok = new Uint8Array([...good, ...encoder.encode("fine\n")]);
  assert.equal(await exchange(port, ok), "fine\n");
  const refused = events.filter((e) => e.type === "refused");
  assert.equal(refused.length, 2);
  for (const e of refused) {
    assert.equal(e.type === "refused" && e.reason, "proxy-header");
    assert.match(String((e as { error?: Error }).error?.message), /PROXY/);
  }

  await using strict = tcp.serve({ port: 0, proxyProtocol: { from: ["10.0.0.0/8"] } }, echo);
  assert.equal(await exchange(strict.addr.port, ok), "");
  assert.equal(strict.stats().refused["proxy-source"], 1);
});

Deno.test("per-address limits key on the PROXY header's client address, not the balancer's", async () => {
  await using server = tcp.serve({ port: 0, proxyProtocol: true, maxConnectionsPerIp: 1 }, echo);
  const port = server.addr.port;
  const from = (ip: string) =>
    encodeProxyHeaderV1({
      source: { hostname: ip, port: 1000 },
      destination: { hostname: "127.0.0.1", port },
    });
  const open = async (ip: string) => {
    const conn = await tcp.connect({ port });
    await writeAll(conn.writable, new Uint8Array([...from(ip), ...encoder.encode("hi\n")]));
    return { conn, line: await readLine(conn.readable) };
  };
  const a = await open("192.0.2.1");
  const b = await open("192.0.2.2");
  const c = await open("192.0.2.1");
  assert.deepEqual([a.line, b.line, c.line], ["hi", "hi", null]);
  for (const x of [a, b, c]) await x.conn.close();
});

Deno.test("tls.serve with proxyProtocol reads the header before the TLS handshake (node engine)", async () => {
  const { ca, cert, key } = await createDevCerts();
  let remote = "";
  await using server = tls.serve({ port: 0, cert, key, proxyProtocol: true }, async (conn) => {
    remote = (conn.remoteAddr as NetAddr).hostname;
    await echo(conn);
  });
  // A plain socket: the header, then TLS over the same socket.
  const raw = await tcp.connect({ port: server.addr.port });
  await writeAll(
    raw.writable,
    encodeProxyHeaderV2({
      source: { hostname: "192.0.2.9", port: 4242 },
      destination: { hostname: "127.0.0.1", port: server.addr.port },
    }),
  );
  await using conn = await tls.startTls(raw, { serverName: "localhost", caCerts: [ca] });
  await writeAll(conn.writable, "secret\n");
  assert.equal(await readLine(conn.readable), "secret");
  assert.equal(remote, "192.0.2.9");
  assert.throws(
    () => tls.serve({ port: 0, cert, key, proxyProtocol: true, engine: "deno" }, echo),
    (err: Error & { code?: string }) => err.code === "ERR_TLS_ENGINE_UNSUPPORTED",
  );
});

Deno.test({
  name:
    "tcp-server --proxy-protocol behind HAProxy (send-proxy-v2) logs and limits the client's address",
  ignore: !hasTool("haproxy"),
  async fn() {
    await using server = await startServer("cli/tcp_server.ts", [
      "--port",
      "0",
      "--proxy-protocol",
      "--max-connections-per-ip",
      "1",
      "--log-format",
      "json",
    ]);
    const front = { hostname: "127.0.0.1", port: freePort() };
    const haproxy = await startHaproxy(
      [
        "global",
        "  maxconn 64",
        "defaults",
        "  mode tcp",
        "  timeout connect 5s",
        "  timeout client 30s",
        "  timeout server 30s",
        "frontend f",
        `  bind 127.0.0.1:${front.port}`,
        "  default_backend b",
        "backend b",
        `  server s1 127.0.0.1:${server.port} send-proxy-v2`,
        "",
      ].join("\n"),
      [front],
    );
    try {
      // HAProxy's readiness probe may reach the server too, and hold the one
      // slot for a moment: the first client retries until it is served.
      let first: Conn | undefined;
      for (let attempt = 0; first === undefined && attempt < 50; attempt++) {
        const conn = await tcp.connect(front);
        await writeAll(conn.writable, "one\n");
        if (await readLine(conn.readable) === "one") first = conn;
        else {
          await conn.close();
          await delay(20);
        }
      }
      assert.ok(first, "served once the probe was gone");
      const clientPort = (first.localAddr as NetAddr).port;
      // The same client address through HAProxy again: over the limit of 1.
      const second = await tcp.connect(front);
      await writeAll(second.writable, "two\n");
      assert.equal(await readLine(second.readable), null);
      await second.close();
      await first.close();
      // HAProxy's own readiness probe came through first; find our client's line.
      const opened = await server.waitForStderr(
        new RegExp(`"event":"open","remote":"127\\.0\\.0\\.1:${clientPort}"`),
      );
      assert.equal(JSON.parse(opened).event, "open");
      const refused = await server.waitForStderr(/"event":"refused"/);
      assert.equal(JSON.parse(refused).reason, "per-ip");
    } finally {
      await haproxy.stop();
    }
    await server.stop("SIGTERM");
  },
});

Deno.test("--metrics serves Prometheus text and the live page; --log-format json writes JSON lines", async () => {
  await using server = await startServer("cli/tcp_server.ts", [
    "--port",
    "0",
    "--metrics",
    "127.0.0.1:0",
    "--log-format",
    "json",
  ]);
  const line = await server.waitForStderr(/"event":"metrics"/);
  const url = /http:\/\/127\.0\.0\.1:\d+\//.exec(JSON.parse(line).msg)![0];
  assert.equal(await exchange(server.port, "twelve bytes"), "twelve bytes");
  await delay(50);
  const metrics = await (await fetch(`${url}metrics`)).text();
  assert.match(metrics, /^# HELP netkit_connections_accepted_total /m);
  assert.match(metrics, /^# TYPE netkit_connections_accepted_total counter$/m);
  assert.match(metrics, /^netkit_connections_accepted_total 1$/m);
  assert.match(metrics, /^netkit_received_bytes_total 12$/m);
  assert.match(metrics, /^netkit_sent_bytes_total 12$/m);
  assert.match(metrics, /^netkit_connections_refused_total\{reason="per-ip"\} 0$/m);
  assert.match(metrics, /^process_resident_memory_bytes \d+$/m);
  const page = await fetch(url);
  assert.equal(page.headers.get("content-type"), "text/html; charset=utf-8");
  assert.match(await page.text(), /<svg/);
  const series = await (await fetch(`${url}series`)).json();
  assert.deepEqual(Object.keys(series).sort(), [
    "accepted",
    "bytesIn",
    "bytesOut",
    "deliveries",
    "open",
  ]);
  for (const l of server.stderrLines) {
    const entry = JSON.parse(l);
    assert.equal(typeof entry.time, "string");
    assert.ok(["info", "warn", "error"].includes(entry.level));
    assert.equal(typeof entry.msg, "string");
  }
  const stopped = await server.stop("SIGTERM");
  assert.equal(stopped.code, 0);
});

Deno.test("the new server flags are checked: bad values are usage errors (exit 2)", async () => {
  for (
    const [args, message] of [
      [["--accept-rate", "0"], /--accept-rate must be a number above 0/],
      [["--max-connections-per-ip", "x"], /--max-connections-per-ip/],
      [["--proxy-protocol-from", "10.0.0.0/8"], /--proxy-protocol-from needs --proxy-protocol/],
      [["--proxy-protocol", "--proxy-protocol-from", "nope"], /--proxy-protocol-from: .*nope/],
      [["--metrics", "nowhere"], /--metrics "nowhere": use HOST:PORT/],
      [["--log-format", "xml"], /--log-format must be one of text, json/],
    ] as const
  ) {
    const run = await runProgram("cli/tcp_server.ts", ["--port", "0", ...args]);
    assert.equal(run.code, 2, `${args.join(" ")}: ${run.stderr}`);
    assert.match(run.stderr, message);
    assert.equal(run.stdout, "");
  }
});
