// Clients through proxies, against the real thing: tinyproxy (HTTP CONNECT)
// and microsocks (SOCKS5), started here on free ports. Tests that need one
// are reported as ignored where it is not installed.
import assert from "node:assert/strict";
import { echo } from "../mod.ts";
import { connect as tcpConnect, serve as tcpServe } from "../tcp/mod.ts";
import { connect as tlsConnect, serve as tlsServe } from "../tls/mod.ts";
import { readExact, readUntil, writeAll } from "../io/mod.ts";
import { createDevCerts } from "../certs/mod.ts";
import { bypassesProxy, openTunnel, ProxyError, proxyForUrl } from "../proxy/mod.ts";
import type { Conn } from "../mod.ts";
import { freePort } from "./support/ports.ts";
import { within } from "./support/time.ts";
import { hasMicrosocks, hasTinyproxy, startMicrosocks, startTinyproxy } from "./support/proxies.ts";

const decoder = new TextDecoder();

async function roundTrip(conn: Conn, line: string): Promise<string> {
  await writeAll(conn.writable, line + "\n");
  return decoder.decode((await readUntil(conn.readable, "\n"))!);
}

/** A server that greets first, SMTP style, then echoes. */
function bannerServer() {
  return tcpServe({ hostname: "127.0.0.1", port: 0, onEvent: () => {} }, async (conn) => {
    await writeAll(conn.writable, BANNER);
    await echo(conn);
  });
}

const BANNER = "220 netkit banner\r\n";

/**
 * Sits between the client and a real proxy for one connection. Bytes pass
 * straight through until the client has sent `handshakeBytes` (its whole
 * handshake); from then on the proxy's bytes are held until `BANNER` has
 * come through too, and delivered in one write. So the proxy's final reply
 * and the target's first bytes are in the client's socket together, and a
 * handshake that read past its reply would swallow the banner.
 */
function coalescingRelay(
  proxyPort: number,
  handshakeBytes: number,
): { port: number; done: Promise<void> } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const done = (async () => {
    const client = await listener.accept();
    listener.close();
    const proxy = await Deno.connect({ hostname: "127.0.0.1", port: proxyPort });
    let sent = 0;
    const up = (async () => {
      const buf = new Uint8Array(4096);
      for (let n; (n = await client.read(buf)) !== null;) {
        sent += n; // counted before forwarding: the reply can only come after
        await proxy.write(buf.subarray(0, n));
      }
    })().catch(() => {}).finally(() => proxy.closeWrite().catch(() => {}));
    const down = (async () => {
      const buf = new Uint8Array(4096);
      let held: number[] = [];
      for (let n; (n = await proxy.read(buf)) !== null;) {
        if (sent < handshakeBytes) {
          await client.write(buf.subarray(0, n));
          continue;
        }
        held.push(...buf.subarray(0, n));
        if (held.length > 0 && decoder.decode(Uint8Array.from(held)).includes(BANNER)) {
          await client.write(Uint8Array.from(held));
          held = [];
          break;
        }
      }
      for (let n; (n = await proxy.read(buf)) !== null;) await client.write(buf.subarray(0, n));
    })().catch(() => {}).finally(() => client.closeWrite().catch(() => {}));
    await Promise.all([up, down]);
    client.close();
    proxy.close();
  })();
  return { port: listener.addr.port, done };
}

/**
 * Fails instead of hanging when the banner never comes (a handshake that
 * swallowed it leaves the reader waiting for bytes that are gone).
 */
/** The proxy's answer must carry the server's banner: one that never comes was swallowed. */
function expectBanner<T>(read: Promise<T>): Promise<T> {
  return within(10_000, read, "the banner (swallowed by the proxy?)");
}

/** A bound port that refuses connections: a listener opened then closed. */
const refusedPort = freePort;

const AUTH = { user: "netkit", pass: "s3cret" };

// ---------------------------------------------------------------- HTTP CONNECT

Deno.test({
  name: "tcp.connect() through tinyproxy (HTTP CONNECT) carries bytes both ways",
  ignore: !hasTinyproxy,
  async fn() {
    await using proxy = await startTinyproxy();
    await using server = tcpServe({ port: 0 }, echo);
    await using conn = await tcpConnect({ port: server.addr.port, proxy: `http://${proxy.at}` });
    assert.equal(await roundTrip(conn, "through the proxy"), "through the proxy\n");
    // Many bytes too, not just one segment.
    const big = new Uint8Array(512 * 1024).map((_, i) => i % 251);
    const [, back] = await Promise.all([
      writeAll(conn.writable, big),
      readExact(conn.readable, big.length),
    ]);
    assert.deepEqual(back, big);
  },
});

Deno.test({
  name: "openTunnel() accepts a proxy URL without a scheme as http://",
  ignore: !hasTinyproxy,
  async fn() {
    await using proxy = await startTinyproxy();
    await using server = tcpServe({ port: 0 }, echo);
    await using conn = await tcpConnect({ port: server.addr.port, proxy: proxy.at });
    assert.equal(await roundTrip(conn, "schemeless"), "schemeless\n");
  },
});

Deno.test({
  name: "tcp.connect() through tinyproxy with Basic auth from the URL",
  ignore: !hasTinyproxy,
  async fn() {
    await using proxy = await startTinyproxy(AUTH);
    await using server = tcpServe({ port: 0 }, echo);
    // Percent-encoded in the URL, decoded before it is sent ("s3cret").
    const url = new URL(`http://${proxy.at}`);
    url.username = AUTH.user;
    url.password = "s3cr%65t";
    await using conn = await tcpConnect({ port: server.addr.port, proxy: url });
    assert.equal(await roundTrip(conn, "authenticated"), "authenticated\n");
  },
});

Deno.test({
  name: "HTTP proxy: a wrong password is ERR_PROXY_AUTH naming the proxy, never the password",
  ignore: !hasTinyproxy,
  async fn() {
    await using proxy = await startTinyproxy(AUTH);
    await using server = tcpServe({ port: 0 }, echo);
    const err = await tcpConnect({
      port: server.addr.port,
      proxy: `http://${AUTH.user}:hunter2@${proxy.at}`,
    }).catch((e) => e);
    assert.ok(err instanceof ProxyError, String(err));
    assert.equal(err.code, "ERR_PROXY_AUTH");
    assert.match(err.message, new RegExp(`proxy at ${proxy.at} rejected the credentials`));
    assert.match(err.message, /\(HTTP\/1\.[01] 40[17] /); // tinyproxy says 401 here
    assert.doesNotMatch(err.message, /hunter2/);
  },
});

Deno.test({
  name: "HTTP proxy: no credentials for a proxy that wants them says to give them in the URL",
  ignore: !hasTinyproxy,
  async fn() {
    await using proxy = await startTinyproxy(AUTH);
    const err = await openTunnel(`http://${proxy.at}`, { hostname: "127.0.0.1", port: 9 })
      .catch((e) => e);
    assert.equal(err.code, "ERR_PROXY_AUTH");
    assert.match(err.message, /requires authentication/);
    assert.match(err.message, new RegExp(`http://user:pass@${proxy.at}`));
  },
});

Deno.test({
  name: "HTTP proxy: a target that refuses is ERR_PROXY_REFUSED with the proxy's status line",
  ignore: !hasTinyproxy,
  async fn() {
    await using proxy = await startTinyproxy();
    const port = refusedPort();
    const err = await openTunnel(`http://${proxy.at}`, { hostname: "127.0.0.1", port })
      .catch((e) => e);
    assert.ok(err instanceof ProxyError, String(err));
    assert.equal(err.code, "ERR_PROXY_REFUSED");
    assert.match(
      err.message,
      new RegExp(`proxy at ${proxy.at} refused to connect to 127.0.0.1:${port}`),
    );
    assert.match(err.message, /HTTP\/1\.[01] 5\d\d /); // tinyproxy: "500 Unable to connect"
  },
});

Deno.test({
  name: "HTTP proxy: a target that speaks first keeps its first bytes (nothing read past the head)",
  ignore: !hasTinyproxy,
  async fn() {
    await using proxy = await startTinyproxy();
    await using server = bannerServer();
    const relay = coalescingRelay(Number(proxy.at.split(":")[1]), 1);
    const socket = await openTunnel(`http://127.0.0.1:${relay.port}`, {
      hostname: "127.0.0.1",
      port: server.addr.port,
    });
    await using conn = await tcpConnect({ port: server.addr.port, proxy: `http://${proxy.at}` });
    try {
      const first = new Uint8Array(BANNER.length);
      for (let got = 0; got < first.length;) {
        got += (await expectBanner(socket.read(first.subarray(got))))!;
      }
      assert.equal(decoder.decode(first), BANNER);
      // tcp.connect with a proxy, too.
      assert.equal(decoder.decode((await expectBanner(readUntil(conn.readable, "\r\n")))!), BANNER);
      assert.equal(await roundTrip(conn, "after the banner"), "after the banner\n");
    } finally {
      socket.close();
      await relay.done;
    }
  },
});

Deno.test({
  name: "HTTP proxy: an IPv6 target goes in brackets in CONNECT",
  ignore: !hasTinyproxy,
  async fn() {
    await using proxy = await startTinyproxy();
    await using server = tcpServe({ hostname: "::1", port: 0 }, echo);
    await using conn = await tcpConnect({
      hostname: "::1",
      port: server.addr.port,
      proxy: `http://${proxy.at}`,
    });
    assert.equal(await roundTrip(conn, "v6"), "v6\n");
  },
});

Deno.test({
  name: "tls.connect() through tinyproxy verifies the server end to end",
  ignore: !hasTinyproxy,
  async fn() {
    const { ca, cert, key } = await createDevCerts();
    await using proxy = await startTinyproxy(AUTH);
    await using server = tlsServe({ hostname: "127.0.0.1", port: 0, cert, key }, echo);
    await using conn = await tlsConnect({
      hostname: "localhost", // resolved by the proxy
      port: server.addr.port,
      caCerts: [ca],
      proxy: `http://${AUTH.user}:${AUTH.pass}@${proxy.at}`,
    });
    assert.equal(await roundTrip(conn, "secret through http proxy"), "secret through http proxy\n");
  },
});

Deno.test({
  name: "tls.connect() through a proxy still rejects an untrusted certificate",
  ignore: !hasTinyproxy,
  async fn() {
    const { cert, key } = await createDevCerts();
    await using proxy = await startTinyproxy();
    // The server sees the client's UnknownCA alert; keep it off the test output.
    const quiet = { onEvent: () => {} };
    await using server = tlsServe({ hostname: "127.0.0.1", port: 0, cert, key, ...quiet }, echo);
    await assert.rejects(
      tlsConnect({ hostname: "localhost", port: server.addr.port, proxy: `http://${proxy.at}` }),
      { code: "ERR_TLS_CERT_UNTRUSTED" },
    );
  },
});

// ---------------------------------------------------------------------- SOCKS5

Deno.test({
  name: "tcp.connect() through microsocks (SOCKS5) carries bytes both ways",
  ignore: !hasMicrosocks,
  async fn() {
    await using proxy = await startMicrosocks();
    await using server = tcpServe({ port: 0 }, echo);
    for (const scheme of ["socks5", "socks5h"]) {
      await using conn = await tcpConnect({
        port: server.addr.port,
        proxy: `${scheme}://${proxy.at}`,
      });
      assert.equal(await roundTrip(conn, `via ${scheme}`), `via ${scheme}\n`);
    }
  },
});

Deno.test({
  name: "SOCKS5: a host name is resolved by the proxy, an IPv6 literal sent as an address",
  ignore: !hasMicrosocks,
  async fn() {
    await using proxy = await startMicrosocks();
    await using v4 = tcpServe({ hostname: "127.0.0.1", port: 0 }, echo);
    await using byName = await tcpConnect({
      hostname: "localhost",
      port: v4.addr.port,
      proxy: `socks5://${proxy.at}`,
    });
    assert.equal(await roundTrip(byName, "by name"), "by name\n");
    await using v6 = tcpServe({ hostname: "::1", port: 0 }, echo);
    await using byV6 = await tcpConnect({
      hostname: "[::1]",
      port: v6.addr.port,
      proxy: `socks5://${proxy.at}`,
    });
    assert.equal(await roundTrip(byV6, "by v6"), "by v6\n");
  },
});

Deno.test({
  name: "SOCKS5 with username/password authentication",
  ignore: !hasMicrosocks,
  async fn() {
    await using proxy = await startMicrosocks(AUTH);
    await using server = tcpServe({ port: 0 }, echo);
    await using conn = await tcpConnect({
      port: server.addr.port,
      proxy: `socks5://${AUTH.user}:${AUTH.pass}@${proxy.at}`,
    });
    assert.equal(await roundTrip(conn, "socks auth"), "socks auth\n");
  },
});

Deno.test({
  name: "SOCKS5: a wrong password, or none, is ERR_PROXY_AUTH naming the proxy",
  ignore: !hasMicrosocks,
  async fn() {
    await using proxy = await startMicrosocks(AUTH);
    await using server = tcpServe({ port: 0 }, echo);
    const target = { hostname: "127.0.0.1", port: server.addr.port };
    const wrong = await openTunnel(`socks5://${AUTH.user}:hunter2@${proxy.at}`, target)
      .catch((e) => e);
    assert.ok(wrong instanceof ProxyError, String(wrong));
    assert.equal(wrong.code, "ERR_PROXY_AUTH");
    assert.match(wrong.message, new RegExp(`SOCKS5 proxy at ${proxy.at} rejected`));
    assert.doesNotMatch(wrong.message, /hunter2/);
    const none = await openTunnel(`socks5://${proxy.at}`, target).catch((e) => e);
    assert.equal(none.code, "ERR_PROXY_AUTH");
    assert.match(none.message, /requires authentication/);
  },
});

Deno.test({
  name: "SOCKS5: a target that refuses is ERR_PROXY_REFUSED saying connection refused",
  ignore: !hasMicrosocks,
  async fn() {
    await using proxy = await startMicrosocks();
    const port = refusedPort();
    const err = await openTunnel(`socks5://${proxy.at}`, { hostname: "127.0.0.1", port })
      .catch((e) => e);
    assert.ok(err instanceof ProxyError, String(err));
    assert.equal(err.code, "ERR_PROXY_REFUSED");
    assert.match(
      err.message,
      new RegExp(`proxy at ${proxy.at} could not connect to 127.0.0.1:${port}`),
    );
    assert.match(err.message, /connection refused \(reply 5\)/);
  },
});

Deno.test({
  name: "SOCKS5: a target that speaks first keeps its first bytes",
  ignore: !hasMicrosocks,
  async fn() {
    await using proxy = await startMicrosocks();
    await using server = bannerServer();
    // Greeting (3 bytes) and CONNECT for an IPv4 address (10 bytes).
    const relay = coalescingRelay(Number(proxy.at.split(":")[1]), 3 + 10);
    try {
      await using conn = await tcpConnect({
        port: server.addr.port,
        proxy: `socks5://127.0.0.1:${relay.port}`,
      });
      assert.equal(decoder.decode((await expectBanner(readUntil(conn.readable, "\r\n")))!), BANNER);
      assert.equal(await roundTrip(conn, "after the banner"), "after the banner\n");
    } finally {
      await relay.done;
    }
  },
});

Deno.test({
  name: "tls.connect() through microsocks verifies the server end to end",
  ignore: !hasMicrosocks,
  async fn() {
    const { ca, cert, key } = await createDevCerts();
    await using proxy = await startMicrosocks(AUTH);
    await using server = tlsServe({ hostname: "127.0.0.1", port: 0, cert, key }, echo);
    await using conn = await tlsConnect({
      hostname: "localhost",
      port: server.addr.port,
      caCerts: [ca],
      proxy: `socks5h://${AUTH.user}:${AUTH.pass}@${proxy.at}`,
    });
    assert.equal(await roundTrip(conn, "secret through socks"), "secret through socks\n");
  },
});

// --------------------------------------------------------- failures, no proxy

Deno.test("openTunnel() to a proxy that is not listening is ERR_PROXY_UNREACHABLE", async () => {
  const port = refusedPort();
  for (const scheme of ["http", "socks5"]) {
    const err = await openTunnel(`${scheme}://127.0.0.1:${port}`, {
      hostname: "example.com",
      port: 443,
    }).catch((e) => e);
    assert.ok(err instanceof ProxyError, String(err));
    assert.equal(err.code, "ERR_PROXY_UNREACHABLE");
    assert.match(err.message, new RegExp(`could not reach the proxy at 127.0.0.1:${port}: `));
    assert.match(err.message, /connection refused/);
  }
  await assert.rejects(
    tcpConnect({ port: 9, proxy: `http://127.0.0.1:${port}` }),
    { code: "ERR_PROXY_UNREACHABLE" },
  );
});

/** A "proxy" that accepts and never answers; resolves to what it saw once the client hung up. */
function silentPeer(): { port: number; hungUp: Promise<boolean>; close(): void } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const hungUp = (async () => {
    const conn = await listener.accept();
    const buf = new Uint8Array(1024);
    try {
      while ((await conn.read(buf)) !== null) { /* drain the request */ }
      return true;
    } catch {
      return true; // reset counts as closed too
    } finally {
      conn.close();
    }
  })();
  return { port: listener.addr.port, hungUp, close: () => listener.close() };
}

Deno.test("openTunnel() gives up after its timeout and closes the socket", async () => {
  const peer = silentPeer();
  try {
    const err = await openTunnel(`http://127.0.0.1:${peer.port}`, {
      hostname: "example.com",
      port: 443,
    }, { timeout: 200 }).catch((e) => e);
    assert.ok(err instanceof ProxyError, String(err));
    assert.equal(err.code, "ERR_PROXY_TIMEOUT");
    assert.match(err.message, new RegExp(`proxy at 127.0.0.1:${peer.port} to example.com:443`));
    assert.equal(await peer.hungUp, true);
  } finally {
    peer.close();
  }
});

Deno.test("openTunnel() stops when its signal aborts and closes the socket", async () => {
  const peer = silentPeer();
  try {
    const controller = new AbortController();
    const reason = new Error("user gave up");
    const attempt = openTunnel(`socks5://127.0.0.1:${peer.port}`, {
      hostname: "example.com",
      port: 443,
    }, { signal: controller.signal });
    setTimeout(() => controller.abort(reason), 100);
    await assert.rejects(attempt, (err) => err === reason);
    assert.equal(await peer.hungUp, true);
  } finally {
    peer.close();
  }
});

Deno.test("openTunnel() refuses other proxy schemes without showing the password", async () => {
  for (const url of ["https://u:hunter2@127.0.0.1:1", "socks4://u:hunter2@127.0.0.1:1"]) {
    const err = await openTunnel(url, { hostname: "example.com", port: 443 }).catch((e) => e);
    assert.equal(err.code, "ERR_PROXY_URL");
    assert.match(err.message, /use http:\/\/ \(HTTP CONNECT\) or socks5:\/\//);
    assert.doesNotMatch(err.message, /hunter2/);
  }
  const bad = await openTunnel("http://u:hunter2@[bad", { hostname: "x", port: 1 }).catch((e) => e);
  assert.equal(bad.code, "ERR_PROXY_URL");
  assert.doesNotMatch(bad.message, /hunter2/);
});

Deno.test("openTunnel() refuses a target host that could inject a header", async () => {
  const err = await openTunnel("http://127.0.0.1:1", {
    hostname: "example.com\r\nX-Evil: 1",
    port: 443,
  }).catch((e) => e);
  assert.equal(err.code, "ERR_PROXY_TARGET");
  await assert.rejects(
    openTunnel("http://127.0.0.1:1", { hostname: "example.com", port: 70000 }),
    { code: "ERR_PROXY_TARGET" },
  );
});

Deno.test("tls.connect() refuses a client certificate with a proxy, before connecting", async () => {
  const { cert, key } = await createDevCerts();
  await assert.rejects(
    tlsConnect({ port: 1, cert, key, proxy: "http://127.0.0.1:1" }),
    { code: "ERR_TLS_BAD_CREDENTIALS", message: /through a proxy/ },
  );
});

// ------------------------------------------------------- proxyForUrl (pure)

Deno.test("proxyForUrl() picks the variable by the target's scheme, as curl does", () => {
  const env = {
    https_proxy: "http://https-proxy:1",
    http_proxy: "http://http-proxy:2",
    all_proxy: "socks5://all-proxy:3",
  };
  assert.equal(proxyForUrl("https://example.com/", env), "http://https-proxy:1");
  assert.equal(proxyForUrl("wss://example.com/", env), "http://https-proxy:1");
  assert.equal(proxyForUrl("http://example.com/", env), "http://http-proxy:2");
  assert.equal(proxyForUrl("ws://example.com/", env), "http://http-proxy:2");
  assert.equal(proxyForUrl("tcp://example.com:7000", env), "socks5://all-proxy:3");
  assert.equal(proxyForUrl("tls://example.com:7443", env), "socks5://all-proxy:3");
  // ALL_PROXY is the fallback for every scheme.
  assert.equal(proxyForUrl("https://example.com/", { ALL_PROXY: "h:4" }), "http://h:4");
  // A variable named after the scheme, curl's [scheme]_proxy.
  assert.equal(
    proxyForUrl("tcp://example.com:1", { tcp_proxy: "socks5://t:5", all_proxy: "a:6" }),
    "socks5://t:5",
  );
  assert.equal(proxyForUrl("https://example.com/", {}), undefined);
  assert.equal(proxyForUrl(new URL("https://example.com/"), { HTTPS_PROXY: "" }), undefined);
});

Deno.test("proxyForUrl() prefers lower case, and reads HTTP_PROXY only outside CGI", () => {
  assert.equal(
    proxyForUrl("https://e.com/", { https_proxy: "lower:1", HTTPS_PROXY: "upper:2" }),
    "http://lower:1",
  );
  assert.equal(proxyForUrl("https://e.com/", { HTTPS_PROXY: "upper:2" }), "http://upper:2");
  assert.equal(proxyForUrl("http://e.com/", { HTTP_PROXY: "upper:3" }), "http://upper:3");
  // httpoxy: under CGI, HTTP_PROXY is the client's "Proxy:" header.
  assert.equal(
    proxyForUrl("http://e.com/", { HTTP_PROXY: "evil:3", REQUEST_METHOD: "GET" }),
    undefined,
  );
  assert.equal(
    proxyForUrl("http://e.com/", { http_proxy: "mine:4", REQUEST_METHOD: "GET" }),
    "http://mine:4",
  );
  // A lookup function works as well as an object.
  assert.equal(
    proxyForUrl("wss://e.com/", (name) => name === "ALL_PROXY" ? "socks5://s:5" : undefined),
    "socks5://s:5",
  );
});

Deno.test("proxyForUrl() honours NO_PROXY: names, suffixes, *, IPs, CIDRs and ports", () => {
  const via = (target: string, noProxy: string, name = "NO_PROXY") =>
    proxyForUrl(target, { ALL_PROXY: "p:1", [name]: noProxy }) !== undefined;
  // Names match themselves and their subdomains, with or without a leading dot.
  assert.equal(via("https://example.com/", "example.com"), false);
  assert.equal(via("https://www.example.com/", "example.com"), false);
  assert.equal(via("https://www.example.com/", ".example.com"), false);
  assert.equal(via("https://www.example.com/", "*.example.com"), false);
  assert.equal(via("https://notexample.com/", "example.com"), true);
  assert.equal(via("https://WWW.Example.COM./", "EXAMPLE.com"), false);
  // Lists, with spaces, and *.
  assert.equal(via("tcp://db.internal:5432", "localhost, .internal ,10.0.0.0/8"), false);
  assert.equal(via("tcp://other.net:5432", "localhost, .internal"), true);
  assert.equal(via("tcp://anything.at.all:1", "*"), false);
  // Ports: an entry with a port matches that port only; schemes give defaults.
  assert.equal(via("https://example.com/", "example.com:443"), false);
  assert.equal(via("https://example.com:8443/", "example.com:443"), true);
  assert.equal(via("http://example.com/", "example.com:80"), false);
  assert.equal(via("tcp://10.1.2.3:22", "10.0.0.0/8:22"), false);
  assert.equal(via("tcp://10.1.2.3:23", "10.0.0.0/8:22"), true);
  // IP addresses and ranges; names are not resolved.
  assert.equal(via("tcp://127.0.0.1:7000", "127.0.0.1"), false);
  assert.equal(via("tcp://127.0.0.2:7000", "127.0.0.1"), true);
  assert.equal(via("tcp://127.0.0.1:7000", "localhost"), true);
  assert.equal(via("tcp://192.168.7.9:1", "192.168.0.0/16"), false);
  assert.equal(via("tcp://192.169.0.1:1", "192.168.0.0/16"), true);
  assert.equal(via("tcp://[::1]:7000", "::1"), false);
  assert.equal(via("tcp://[::1]:7000", "[::1]:7000"), false);
  assert.equal(via("tcp://[::1]:7001", "[::1]:7000"), true);
  assert.equal(via("tcp://[fd00::1234]:1", "fd00::/8"), false);
  assert.equal(via("tcp://[fe80::1]:1", "fd00::/8"), true);
  assert.equal(via("tcp://10.0.0.1:1", "::/0"), true, "an IPv6 range never matches IPv4");
  assert.equal(via("tcp://example.com:1", "0.0.0.0/0"), true, "a range never matches a name");
  // Lower case no_proxy wins over NO_PROXY.
  assert.equal(
    proxyForUrl("https://a.com/", { ALL_PROXY: "p:1", no_proxy: "b.com", NO_PROXY: "a.com" }),
    "http://p:1",
  );
  assert.equal(via("https://a.com/", "a.com", "no_proxy"), false);
});

Deno.test("bypassesProxy() is the NO_PROXY rule on its own, for an explicit proxy", () => {
  assert.equal(bypassesProxy("[::1]", 80, "::1"), true);
  assert.equal(bypassesProxy("api.example.com", undefined, "example.com"), true);
  assert.equal(bypassesProxy("api.example.com", undefined, "example.com:443"), false);
  assert.equal(bypassesProxy("host", 1, ""), false);
  assert.equal(bypassesProxy("host", 1, " , ,"), false);
});

Deno.test("proxyForUrl() reads Deno.env by default", () => {
  const saved = { all: Deno.env.get("all_proxy"), no: Deno.env.get("no_proxy") };
  Deno.env.set("all_proxy", "socks5://from-env:1080");
  Deno.env.set("no_proxy", "skip.example");
  try {
    assert.equal(proxyForUrl("tcp://example.com:7"), "socks5://from-env:1080");
    assert.equal(proxyForUrl("tcp://skip.example:7"), undefined);
  } finally {
    for (const [name, value] of [["all_proxy", saved.all], ["no_proxy", saved.no]]) {
      if (value === undefined) Deno.env.delete(name!);
      else Deno.env.set(name!, value);
    }
  }
});

Deno.test("proxyForUrl() without permission to read the environment counts it as unset", async () => {
  const mod = new URL("../proxy/mod.ts", import.meta.url).href;
  const dir = await Deno.makeTempDir({ prefix: "netkit_proxy_env_" });
  const script = `${dir}/main.ts`;
  await Deno.writeTextFile(
    script,
    `import { proxyForUrl } from ${JSON.stringify(mod)};\n` +
      `console.log(String(proxyForUrl("https://example.com/")));\n`,
  );
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-prompt", "--quiet", script], // no --allow-env
    env: { HTTPS_PROXY: "http://should-not-be-read:1", NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  await Deno.remove(dir, { recursive: true });
  assert.equal(decoder.decode(out.stderr), "");
  assert.equal(decoder.decode(out.stdout).trim(), "undefined");
  assert.equal(out.code, 0);
});
