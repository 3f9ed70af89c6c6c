import assert from "node:assert/strict";
import { BufferedReader, readLine, writeAll } from "../io/mod.ts";
import * as tcp from "../tcp/mod.ts";
import {
  encodeProxyHeaderV1,
  encodeProxyHeaderV2,
  type ProxyHeader,
  ProxyProtocolError,
  type ProxyProtocolErrorReason,
  readProxyHeader,
  type ReadProxyHeaderOptions,
} from "../internal/proxy_protocol.ts";
import { concat } from "./support/bytes.ts";
import { hasIPv6Loopback, hasTool } from "./support/tools.ts";
import { delay, within } from "./support/time.ts";
import { startHaproxy } from "./support/haproxy.ts";
import { freePort } from "./support/ports.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const quiet = { onEvent: () => {} };

function bytes(data: string | Uint8Array): Uint8Array {
  return typeof data === "string" ? encoder.encode(data) : data;
}

/** A stream that delivers `data` in chunks of `chunkSize` bytes, then ends. */
function streamOf(data: string | Uint8Array, chunkSize = Infinity): ReadableStream<Uint8Array> {
  const all = bytes(data);
  const chunks: Uint8Array[] = [];
  for (let i = 0; i < all.length; i += Math.min(chunkSize, all.length)) {
    chunks.push(all.slice(i, i + chunkSize));
  }
  return ReadableStream.from(chunks);
}

async function parse(
  data: string | Uint8Array,
  options?: ReadProxyHeaderOptions,
  chunkSize?: number,
): Promise<{ header: ProxyHeader; rest: string }> {
  const reader = new BufferedReader(streamOf(data, chunkSize));
  const header = await readProxyHeader(reader, options);
  let rest = "";
  for (let chunk; (chunk = await reader.readChunk()) !== null;) rest += decoder.decode(chunk);
  return { header, rest };
}

async function refused(
  data: string | Uint8Array,
  reason: ProxyProtocolErrorReason,
  message: RegExp,
  options?: ReadProxyHeaderOptions,
): Promise<void> {
  await assert.rejects(parse(data, options), (err) => {
    assert.ok(err instanceof ProxyProtocolError, `a ProxyProtocolError, got ${err}`);
    assert.equal(err.code, "ERR_PROXY_PROTOCOL");
    assert.equal(err.reason, reason, err.message);
    assert.match(err.message, message);
    assert.match(err.message, /^bad PROXY protocol header: /);
    return true;
  });
}

const V4 = {
  source: { hostname: "192.0.2.10", port: 51234 },
  destination: { hostname: "198.51.100.20", port: 443 },
};
const V6 = {
  source: { hostname: "2001:db8::10", port: 65535 },
  destination: { hostname: "2001:db8:ffff::20", port: 0 },
};

// ---- version 1 -------------------------------------------------------------

Deno.test("v1 TCP4: source and destination, bytes after the header kept", async () => {
  const { header, rest } = await parse("PROXY TCP4 192.0.2.10 198.51.100.20 51234 443\r\nGET /");
  assert.deepEqual(header, {
    version: 1,
    command: "PROXY",
    protocol: "TCP4",
    ...V4,
    size: 47,
  });
  assert.equal(rest, "GET /");
});

Deno.test("v1 TCP6: canonical addresses, IPv4-mapped written as IPv4", async () => {
  const { header } = await parse(
    "PROXY TCP6 2001:DB8:0:0::10 ::ffff:192.0.2.1 65535 0\r\n",
  );
  assert.equal(header.protocol, "TCP6");
  assert.deepEqual(header.source, { hostname: "2001:db8::10", port: 65535 });
  assert.deepEqual(header.destination, { hostname: "192.0.2.1", port: 0 });
});

Deno.test("v1 UNKNOWN: no addresses, the rest of the line ignored; 107 bytes is the most", async () => {
  const { header, rest } = await parse("PROXY UNKNOWN\r\nafter");
  assert.deepEqual(header, { version: 1, command: "PROXY", protocol: "UNKNOWN", size: 15 });
  assert.equal(rest, "after");
  const full = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
  const longest = `PROXY UNKNOWN ${full} ${full} 65535 65535\r\n`;
  assert.equal(longest.length, 107);
  const ok = await parse(longest + "x");
  assert.equal(ok.header.size, 107);
  assert.equal(ok.rest, "x");
  await refused(`PROXY UNKNOWN ${full} ${full} 65535 655350\r\n`, "oversized", /107 bytes/);
});

Deno.test("v1 encode/decode round trip for TCP4, TCP6, mixed families and UNKNOWN", async () => {
  assert.equal(
    decoder.decode(encodeProxyHeaderV1(V4)),
    "PROXY TCP4 192.0.2.10 198.51.100.20 51234 443\r\n",
  );
  assert.equal(
    decoder.decode(encodeProxyHeaderV1(V6)),
    "PROXY TCP6 2001:db8::10 2001:db8:ffff::20 65535 0\r\n",
  );
  // One IPv4 and one IPv6 end: both written as IPv6, the IPv4 one mapped.
  const mixed = { source: V4.source, destination: V6.destination };
  assert.equal(
    decoder.decode(encodeProxyHeaderV1(mixed)),
    "PROXY TCP6 ::ffff:192.0.2.10 2001:db8:ffff::20 51234 0\r\n",
  );
  assert.equal(decoder.decode(encodeProxyHeaderV1({ command: "LOCAL" })), "PROXY UNKNOWN\r\n");
  for (const init of [V4, V6, mixed]) {
    const { header } = await parse(encodeProxyHeaderV1(init));
    assert.deepEqual(header.source, init.source);
    assert.deepEqual(header.destination, init.destination);
  }
  assert.throws(() => encodeProxyHeaderV1({ source: V4.source }), TypeError);
  assert.throws(
    () => encodeProxyHeaderV1({ ...V4, source: { hostname: "192.0.2.1", port: 70000 } }),
    RangeError,
  );
  assert.throws(
    () => encodeProxyHeaderV1({ ...V4, source: { hostname: "example.com", port: 1 } }),
    { code: "ERR_BAD_CIDR" },
  );
});

Deno.test("v1 malformations are refused, each named", async () => {
  const cases: [string, ProxyProtocolErrorReason, RegExp][] = [
    ["PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "malformed", /"TCP5" is not TCP4, TCP6 or UNKNOWN/],
    ["PROXY \r\n", "malformed", /"" is not TCP4/],
    ["PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", "malformed", /"tcp4"/],
    ["PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "malformed", /3 fields after the protocol, not 4/],
    ["PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "malformed", /5 fields/],
    ["PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "malformed", /5 fields/],
    ["PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "malformed", /5 fields/],
    ["PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "malformed", /"::1" is not an IPv4 address/],
    ["PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "malformed", /"1.2.3.4" is not an IPv6 address/],
    ["PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "malformed", /is not an IPv6 address/],
    ["PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", "malformed", /"1.2.3.256" is not an IPv4/],
    ["PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "malformed", /"65536" is not a port/],
    ["PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n", "malformed", /"080" is not a port/],
    ["PROXY TCP4 1.2.3.4 5.6.7.8 1 -2\r\n", "malformed", /"-2" is not a port/],
    ["PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n\r\n", "malformed", /byte 0x0a at offset 30/],
    ["PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n", "malformed", /byte 0x09/],
    ["PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", "malformed", /byte 0x0d/],
    ["PROXY TCP4 1.2.3.4 5.6.7.é 1 2\r\n", "malformed", /byte 0xc3/],
  ];
  for (const [text, reason, message] of cases) await refused(text, reason, message);
});

Deno.test("v1 without a CRLF within 107 bytes is refused without reading on", async () => {
  await refused("PROXY TCP4 " + "1".repeat(200), "oversized", /no CRLF within 107 bytes/);
  // A lone LF does not end the line; more bytes follow without a CRLF.
  await refused(
    "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n" + "x".repeat(100),
    "oversized",
    /no CRLF within 107 bytes/,
  );
  // ...and when the peer then closes, the header was truncated.
  await refused("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "truncated", /before the CRLF/);
});

// ---- version 2 -------------------------------------------------------------

Deno.test("v2 TCP4 and TCP6 (PROXY): addresses and ports, bytes after kept", async () => {
  const four = await parse(concat([encodeProxyHeaderV2(V4), bytes("\x16\x03\x01 hello")]));
  assert.deepEqual(four.header, {
    version: 2,
    command: "PROXY",
    protocol: "TCP4",
    ...V4,
    size: 28,
  });
  assert.equal(four.rest, "\x16\x03\x01 hello");
  const six = await parse(concat([encodeProxyHeaderV2(V6), bytes("rest")]));
  assert.deepEqual(six.header, { version: 2, command: "PROXY", protocol: "TCP6", ...V6, size: 52 });
  assert.equal(six.rest, "rest");
});

Deno.test("v2 LOCAL: no addresses, whatever block follows is skipped", async () => {
  const local = await parse(concat([encodeProxyHeaderV2({ command: "LOCAL" }), bytes("hc")]));
  assert.deepEqual(local.header, { version: 2, command: "LOCAL", protocol: "UNSPEC", size: 16 });
  assert.equal(local.rest, "hc");
  // LOCAL with an address block (some balancers send one): ignored, skipped.
  const withBlock = encodeProxyHeaderV2(V4);
  withBlock[12] = 0x20;
  const parsed = await parse(concat([withBlock, bytes("hc")]));
  assert.deepEqual(parsed.header, { version: 2, command: "LOCAL", protocol: "TCP4", size: 28 });
  assert.equal(parsed.rest, "hc");
});

Deno.test("v2 UNSPEC, UDP and Unix: known families, the socket's address kept", async () => {
  const unspec = await parse(encodeProxyHeaderV2({}));
  assert.deepEqual(unspec.header, {
    version: 2,
    command: "PROXY",
    protocol: "UNSPEC",
    size: 16,
  });
  const udp = encodeProxyHeaderV2(V4);
  udp[13] = 0x12;
  const u = await parse(udp);
  assert.equal(u.header.protocol, "UDP4");
  assert.deepEqual(u.header.source, V4.source);
  const unix = new Uint8Array(16 + 216);
  unix.set(encodeProxyHeaderV2({ command: "LOCAL" }).subarray(0, 12));
  unix.set([0x21, 0x31, 0, 216], 12);
  unix.set(encoder.encode("/run/client.sock"), 16);
  const x = await parse(concat([unix, bytes("z")]));
  assert.deepEqual(x.header, {
    version: 2,
    command: "PROXY",
    protocol: "UNIX_STREAM",
    size: 232,
  });
  assert.equal(x.rest, "z");
});

Deno.test("v2 TLVs are skipped, bounded by maxSize", async () => {
  const tlvs = [
    { type: 0x02, value: encoder.encode("example.com") }, // PP2_TYPE_AUTHORITY
    { type: 0x05, value: new Uint8Array(300) }, // PP2_TYPE_UNIQUE_ID, oversized on purpose
  ];
  const header = encodeProxyHeaderV2({ ...V6, tlvs });
  assert.equal(header.length, 16 + 36 + 3 + 11 + 3 + 300);
  const { header: parsed, rest } = await parse(concat([header, bytes("after")]));
  assert.deepEqual(parsed.source, V6.source);
  assert.equal(parsed.size, header.length);
  assert.equal(rest, "after");
  // At the bound: accepted. One byte over: refused before the body is read.
  await parse(header, { maxSize: header.length });
  await refused(header, "oversized", new RegExp(`${header.length} bytes, over the 368-byte`), {
    maxSize: header.length - 1,
  });
  const huge = new Uint8Array(16);
  huge.set(header.subarray(0, 14));
  huge.set([0xff, 0xff], 14); // a 65,535-byte body announced
  await refused(huge, "oversized", /65551 bytes, over the 4096-byte limit/);
  await assert.rejects(parse(header, { maxSize: 15 }), RangeError);
});

Deno.test("v2 malformations are refused, each named", async () => {
  const good = encodeProxyHeaderV2(V4);
  const mutate = (at: number, value: number) => {
    const copy = good.slice();
    copy[at] = value;
    return copy;
  };
  await refused(
    mutate(5, 0x00),
    "signature",
    /byte 5 is 0x00 where the version 2 signature has 0x0d/,
  );
  await refused(mutate(11, 0x0d), "signature", /byte 11/);
  await refused(mutate(12, 0x11), "malformed", /version 1 after the v2 signature/);
  await refused(mutate(12, 0x31), "malformed", /version 3/);
  await refused(mutate(12, 0x22), "malformed", /command 2 is neither LOCAL/);
  await refused(mutate(13, 0x41), "malformed", /family and transport 0x41 are not one the spec/);
  await refused(mutate(13, 0x13), "malformed", /0x13/);
  await refused(mutate(13, 0x10), "malformed", /0x10/);
  await refused(mutate(13, 0x01), "malformed", /0x01/);
  await refused(
    mutate(15, 11),
    "malformed",
    /TCP4 header needs 12 address bytes, its length says 11/,
  );
  const six = encodeProxyHeaderV2(V6);
  six[15] = 12; // an IPv4-sized block for TCP6
  await refused(six, "malformed", /TCP6 header needs 36/);
  // A v2 header whose length promises more than arrives.
  await refused(mutate(15, 13), "truncated", /closed after 28 bytes, in the middle of/);
});

Deno.test("a connection that does not start with a header is refused at its first byte", async () => {
  await refused("", "eof", /closed before sending anything/);
  await refused("GET / HTTP/1.1\r\n\r\n", "signature", /starts with 0x47 \('G'\)/);
  await refused(new Uint8Array([0x16, 0x03, 0x01, 0x02, 0x00]), "signature", /TLS ClientHello/);
  await refused("\x00\x00", "signature", /starts with 0x00/);
  await refused("PRXY TCP4 ...\r\n", "signature", /starts with "PRXY T", not "PROXY "/);
  await refused("proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "signature", /0x70/);
  // Only the first byte was needed to say no: a peer that sends one and waits is refused.
  const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>();
  const writer = writable.getWriter();
  void writer.write(bytes("G"));
  await assert.rejects(readProxyHeader(readable), { reason: "signature" });
  await writer.close();
});

Deno.test("a header truncated at every byte is refused as eof or truncated", async () => {
  const headers = [
    encodeProxyHeaderV1(V4),
    encodeProxyHeaderV1(V6),
    encodeProxyHeaderV1({}),
    encodeProxyHeaderV2(V4),
    encodeProxyHeaderV2(V6),
    encodeProxyHeaderV2({ command: "LOCAL" }),
    encodeProxyHeaderV2({ ...V4, tlvs: [{ type: 0x04, value: new Uint8Array(5) }] }),
  ];
  for (const header of headers) {
    for (let n = 0; n < header.length; n++) {
      await refused(header.subarray(0, n), n === 0 ? "eof" : "truncated", /closed/);
    }
  }
});

Deno.test("a header arriving one byte at a time is read whole, the rest kept", async () => {
  for (const header of [encodeProxyHeaderV1(V6), encodeProxyHeaderV2(V6)]) {
    const { header: parsed, rest } = await parse(concat([header, bytes("tail bytes")]), {}, 1);
    assert.deepEqual(parsed.source, V6.source);
    assert.equal(rest, "tail bytes");
  }
});

Deno.test("readProxyHeader() reads only the header from a BufferedReader, not a byte more", async () => {
  const data = concat([encodeProxyHeaderV2(V4), bytes("PROXY UNKNOWN\r\n")]);
  const reader = new BufferedReader(streamOf(data));
  await readProxyHeader(reader);
  // A repeated header is the next layer's bytes: here it is still buffered, unread.
  assert.equal(reader.buffered, 15);
  assert.equal(decoder.decode(reader.takeBuffered()), "PROXY UNKNOWN\r\n");
});

// ---- real sockets ----------------------------------------------------------

/**
 * A netkit TCP server that reads a PROXY header and answers with one line
 * naming what it saw (or the error's reason), then echoes the rest.
 */
function headerEchoServer(onHeader?: (header: ProxyHeader) => void) {
  return tcp.serve({ port: 0, ...quiet }, async (conn) => {
    let header: ProxyHeader;
    try {
      header = await readProxyHeader(conn.readable);
    } catch (err) {
      if (err instanceof ProxyProtocolError) {
        await writeAll(conn.writable, `refused ${err.reason}\n`).catch(() => {});
        return; // the server closes this connection only
      }
      throw err;
    }
    onHeader?.(header);
    const src = header.source;
    await writeAll(
      conn.writable,
      `v${header.version} ${header.command} ${src ? `${src.hostname} ${src.port}` : "-"}\n`,
    );
    await conn.readable.pipeTo(conn.writable);
  });
}

Deno.test("over a netkit TCP Conn: the header is read and the bytes after it are echoed", async () => {
  await using server = headerEchoServer();
  for (
    const [header, line] of [
      [encodeProxyHeaderV1(V4), "v1 PROXY 192.0.2.10 51234"],
      [encodeProxyHeaderV2(V6), "v2 PROXY 2001:db8::10 65535"],
    ] as const
  ) {
    await using conn = await tcp.connect({ port: server.addr.port });
    // Header and payload in one write: they arrive in one segment.
    await writeAll(conn.writable, concat([header, bytes("payload after the header\n")]));
    assert.equal(await readLine(conn.readable), line);
    assert.equal(await readLine(conn.readable), "payload after the header");
    await conn.closeWrite();
    assert.equal(await readLine(conn.readable), null);
  }
});

Deno.test("over a netkit TCP Conn: a header trickled in pieces, then a bad one, then a good one", async () => {
  await using server = headerEchoServer();
  {
    await using conn = await tcp.connect({ port: server.addr.port });
    const header = encodeProxyHeaderV2(V4);
    for (const piece of [header.subarray(0, 1), header.subarray(1, 13), header.subarray(13)]) {
      await writeAll(conn.writable, piece);
      await delay(5); // separate segments
    }
    await writeAll(conn.writable, "x\n");
    assert.equal(await readLine(conn.readable), "v2 PROXY 192.0.2.10 51234");
    assert.equal(await readLine(conn.readable), "x");
  }
  {
    await using conn = await tcp.connect({ port: server.addr.port });
    await writeAll(conn.writable, "PROXY TCP4 999.1.1.1 1.1.1.1 1 2\r\n");
    assert.equal(await readLine(conn.readable), "refused malformed");
    assert.equal(await readLine(conn.readable), null, "that connection is closed");
  }
  {
    await using conn = await tcp.connect({ port: server.addr.port });
    await writeAll(conn.writable, encodeProxyHeaderV1({}));
    assert.equal(await readLine(conn.readable), "v1 PROXY -", "the server serves on");
  }
});

// ---- HAProxy ---------------------------------------------------------------

/** Rejects, naming `what`, if `promise` has not settled in `ms`: a guard against a hang, not a timing check. */
/** Starts HAProxy with `config` and waits until `port` accepts connections. */
Deno.test({
  name: "HAProxy send-proxy and send-proxy-v2: the parser reports the client's own address",
  ignore: !hasTool("haproxy"),
  async fn() {
    const locals: ProxyHeader[] = [];
    const checked = Promise.withResolvers<void>();
    await using server = headerEchoServer((header) => {
      if (header.command === "LOCAL") {
        locals.push(header);
        checked.resolve();
      }
    });
    const v6 = hasIPv6Loopback();
    const fronts = [
      { hostname: "127.0.0.1", port: freePort("127.0.0.1"), send: "send-proxy" },
      { hostname: "127.0.0.1", port: freePort("127.0.0.1"), send: "send-proxy-v2" },
      ...(v6
        ? [
          { hostname: "::1", port: freePort("::1"), send: "send-proxy" },
          { hostname: "::1", port: freePort("::1"), send: "send-proxy-v2" },
        ]
        : []),
    ];
    const config = [
      "global",
      "  maxconn 256",
      "defaults",
      "  mode tcp",
      "  timeout connect 5s",
      "  timeout client 30s",
      "  timeout server 30s",
      ...fronts.flatMap((f, i) => [
        `frontend f${i}`,
        `  bind ${f.hostname.includes(":") ? `[${f.hostname}]` : f.hostname}:${f.port}`,
        `  default_backend b${i}`,
        `backend b${i}`,
        // Health checks carry the header too: LOCAL in v2 (v1 names the
        // check's own socket). The check waits for the server's answer, so the
        // server reads the header before HAProxy resets the check connection.
        "  option tcp-check",
        "  tcp-check connect default",
        "  tcp-check expect rstring ^v[12]",
        `  server s1 127.0.0.1:${server.addr.port} ${f.send} check check-send-proxy inter 100ms`,
      ]),
      "",
    ].join("\n");
    const haproxy = await startHaproxy(config, fronts);
    try {
      for (const front of fronts) {
        await using conn = await tcp.connect({ hostname: front.hostname, port: front.port });
        const me = conn.localAddr as { hostname: string; port: number };
        await writeAll(conn.writable, "through haproxy\n");
        const version = front.send === "send-proxy" ? 1 : 2;
        assert.equal(
          await within(30_000, readLine(conn.readable), `the answer through ${front.send}`),
          `v${version} PROXY ${me.hostname} ${me.port}`,
          `${front.send} on ${front.hostname}`,
        );
        assert.equal(await readLine(conn.readable), "through haproxy");
      }
      // HAProxy's own send-proxy-v2 health checks: a LOCAL header, no addresses.
      await within(30_000, checked.promise, "a send-proxy-v2 health check");
      assert.deepEqual(locals[0], { version: 2, command: "LOCAL", protocol: "UNSPEC", size: 16 });
    } finally {
      await haproxy.stop();
    }
  },
});
