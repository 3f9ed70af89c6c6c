// SOCKS5 CONNECT (RFC 1928) with username/password authentication
// (RFC 1929). Host names go to the proxy to resolve (socks5h semantics);
// IP literals are sent as addresses.
import { ProxyError } from "./errors.ts";
import { readExactly, writeFully } from "./_io.ts";
import { parseIPv4, parseIPv6 } from "./_ip.ts";
import { hostPort, type ProxyUrl } from "./_url.ts";

const encoder = new TextEncoder();
const NO_AUTH = 0x00;
const USER_PASS = 0x02;
const NO_ACCEPTABLE = 0xff;

const REPLIES: Record<number, string> = {
  1: "general SOCKS server failure",
  2: "connection not allowed by the proxy's ruleset",
  3: "network unreachable",
  4: "host unreachable",
  5: "connection refused",
  6: "TTL expired",
  7: "command not supported",
  8: "address type not supported",
};

/** Asks a SOCKS5 proxy for a tunnel to `target` over `conn`; resolves once it succeeded. */
export async function socks5Connect(
  conn: Deno.Conn,
  proxy: ProxyUrl,
  target: { hostname: string; port: number },
): Promise<void> {
  const at = proxy.at;
  const withAuth = proxy.username !== "" || proxy.password !== "";
  const user = encoder.encode(proxy.username);
  const pass = encoder.encode(proxy.password);
  if (user.length > 255 || pass.length > 255) {
    throw new ProxyError(
      "ERR_PROXY_URL",
      `the user name and password for the SOCKS5 proxy at ${at} must be at most 255 bytes each`,
    );
  }
  const address = encodeAddress(target.hostname);

  await writeFully(conn, Uint8Array.of(5, ...(withAuth ? [2, NO_AUTH, USER_PASS] : [1, NO_AUTH])));
  const [version, method] = await readExactly(conn, 2, at, "SOCKS5 greeting");
  if (version !== 5) throw notSocks5(at);
  if (method === NO_ACCEPTABLE) {
    throw new ProxyError(
      "ERR_PROXY_AUTH",
      withAuth
        ? `the SOCKS5 proxy at ${at} accepts none of the authentication methods offered`
        : `the SOCKS5 proxy at ${at} requires authentication: give a user name and password ` +
          `in the proxy URL (socks5://user:pass@${at})`,
    );
  }
  if (method === USER_PASS && withAuth) {
    await writeFully(conn, Uint8Array.of(1, user.length, ...user, pass.length, ...pass));
    const [, status] = await readExactly(conn, 2, at, "SOCKS5 authentication");
    if (status !== 0) {
      throw new ProxyError(
        "ERR_PROXY_AUTH",
        `the SOCKS5 proxy at ${at} rejected the user name and password: ` +
          "check the credentials in the proxy URL",
      );
    }
  } else if (method !== NO_AUTH) {
    throw new ProxyError(
      "ERR_PROXY_PROTOCOL",
      `the SOCKS5 proxy at ${at} chose authentication method ${method}, which was not offered`,
    );
  }

  await writeFully(
    conn,
    Uint8Array.of(5, 1, 0, ...address, target.port >> 8, target.port & 0xff),
  );
  const [replyVersion, reply, , type] = await readExactly(conn, 4, at, "SOCKS5 connect");
  if (replyVersion !== 5) throw notSocks5(at);
  if (reply !== 0) {
    const reason = REPLIES[reply] ?? "unknown failure";
    throw new ProxyError(
      "ERR_PROXY_REFUSED",
      `the SOCKS5 proxy at ${at} could not connect to ${
        hostPort(target.hostname, target.port)
      }: ${reason} (reply ${reply})`,
    );
  }
  // The bound address follows; read exactly it, so the tunnel starts clean.
  let rest: number;
  if (type === 1) rest = 4 + 2;
  else if (type === 4) rest = 16 + 2;
  else if (type === 3) rest = (await readExactly(conn, 1, at, "SOCKS5 connect"))[0] + 2;
  else throw notSocks5(at);
  await readExactly(conn, rest, at, "SOCKS5 connect");
}

// ATYP and address: 1 = IPv4, 4 = IPv6, 3 = a name the proxy resolves.
function encodeAddress(hostname: string): number[] {
  const v4 = parseIPv4(hostname);
  if (v4 !== null) return [1, ...v4];
  const v6 = parseIPv6(hostname);
  if (v6 !== null) return [4, ...v6];
  const name = encoder.encode(hostname); // at most 255 bytes: openTunnel checked
  return [3, name.length, ...name];
}

function notSocks5(at: string): ProxyError {
  return new ProxyError(
    "ERR_PROXY_PROTOCOL",
    `the proxy at ${at} does not speak SOCKS5: is it an HTTP proxy (http://)?`,
  );
}
