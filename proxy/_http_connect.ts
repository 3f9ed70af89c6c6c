// HTTP/1.1 CONNECT (RFC 9110 §9.3.6), with Basic proxy authentication
// (RFC 7617) when the proxy URL carries credentials.
import { ProxyError } from "./errors.ts";
import { hungUp, writeFully } from "./_io.ts";
import { hostPort, type ProxyUrl } from "./_url.ts";

const encoder = new TextEncoder();
const CR = 13;
const LF = 10;

/** Asks an HTTP proxy for a tunnel to `target` over `conn`; resolves once it answered 2xx. */
export async function httpConnect(
  conn: Deno.Conn,
  proxy: ProxyUrl,
  target: { hostname: string; port: number },
  maxHeadBytes: number,
): Promise<void> {
  const authority = hostPort(target.hostname, target.port);
  let request = `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n`;
  if (proxy.username !== "" || proxy.password !== "") {
    request += `Proxy-Authorization: Basic ${basic(proxy.username, proxy.password)}\r\n`;
  }
  await writeFully(conn, encoder.encode(request + "\r\n"));

  const head = await readHead(conn, proxy.at, maxHeadBytes);
  const statusLine = head.slice(0, head.indexOf("\r\n"));
  const status = /^HTTP\/1\.[01] (\d{3})(?: |$)/.exec(statusLine)?.[1];
  if (status === undefined) {
    throw new ProxyError(
      "ERR_PROXY_PROTOCOL",
      `the proxy at ${proxy.at} did not answer CONNECT with HTTP (it sent ` +
        `${
          JSON.stringify(statusLine.slice(0, 80))
        }): is it an HTTP proxy, or a SOCKS one (socks5://)?`,
    );
  }
  if (status.startsWith("2")) return;
  // 407 is the standard answer; tinyproxy says 401 to wrong credentials. A
  // CONNECT answer comes from the proxy itself, so both are about its auth.
  if (status === "407" || status === "401") {
    throw new ProxyError(
      "ERR_PROXY_AUTH",
      proxy.username === "" && proxy.password === ""
        ? `the proxy at ${proxy.at} requires authentication (${statusLine}): ` +
          `give a user name and password in the proxy URL (http://user:pass@${proxy.at})`
        : `the proxy at ${proxy.at} rejected the credentials (${statusLine}): ` +
          "check the user name and password in the proxy URL",
    );
  }
  throw new ProxyError(
    "ERR_PROXY_REFUSED",
    `the proxy at ${proxy.at} refused to connect to ${authority}: ${statusLine}`,
  );
}

function basic(username: string, password: string): string {
  const bytes = encoder.encode(`${username}:${password}`);
  return btoa(String.fromCharCode(...bytes));
}

// Reads the response head up to and including its CRLFCRLF and not one byte
// more: the target may speak first (a banner), and what follows the head is
// the tunnel's. With `matched` bytes of the terminator already seen, it
// cannot end sooner than 4 - matched bytes on, so a read of that many is
// always safe — 1 to 4 bytes a read instead of 1.
async function readHead(conn: Deno.Conn, proxyAt: string, maxHeadBytes: number): Promise<string> {
  const buf = new Uint8Array(maxHeadBytes);
  let length = 0;
  let matched = 0;
  while (matched < 4) {
    const want = 4 - matched;
    if (length + want > maxHeadBytes) {
      throw new ProxyError(
        "ERR_PROXY_PROTOCOL",
        `the proxy at ${proxyAt} sent a response head over ${maxHeadBytes} bytes to CONNECT`,
      );
    }
    const got = await conn.read(buf.subarray(length, length + want));
    if (got === null) throw hungUp(proxyAt, "HTTP CONNECT handshake");
    for (let i = length; i < length + got; i++) {
      const byte = buf[i];
      if (byte === (matched % 2 === 0 ? CR : LF)) matched++;
      else matched = byte === CR ? 1 : 0;
    }
    length += got;
  }
  return new TextDecoder().decode(buf.subarray(0, length));
}
