/**
 * Bytes the attackers send: random garbage with no line end, WebSocket
 * upgrade requests with headers dropped or changed, frames with reserved
 * bits set, and a real TLS ClientHello to cut short or trickle.
 *
 * @module
 */
import { BufferedReader } from "../../../io/mod.ts";
import { concat, pseudoRandomBytes } from "../bytes.ts";

/** Random bytes that contain no CR or LF (so never an HTTP head's end). */
export function garbage(n: number, seed: number): Uint8Array {
  const bytes = pseudoRandomBytes(n, seed);
  for (let i = 0; i < bytes.length; i++) if (bytes[i] === 0x0d || bytes[i] === 0x0a) bytes[i] = 0;
  return bytes;
}

/** A valid upgrade request head, with header lines replaced or added. */
export function upgradeRequest(
  { method = "GET", path = "/", version = "1.1", drop = [], extra = [] }: {
    method?: string;
    path?: string;
    version?: string;
    drop?: string[];
    extra?: string[];
  } = {},
): string {
  const headers: [string, string][] = [
    ["Host", "localhost"],
    ["Upgrade", "websocket"],
    ["Connection", "Upgrade"],
    ["Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="],
    ["Sec-WebSocket-Version", "13"],
  ];
  const kept = headers.filter(([name]) => !drop.includes(name)).map(([n, v]) => `${n}: ${v}`);
  return [`${method} ${path} HTTP/${version}`, ...kept, ...extra, "", ""].join("\r\n");
}

/**
 * The first flight of a real TLS client (Deno's rustls): a ClientHello,
 * captured from a listener that never answers it.
 */
export async function captureClientHello(): Promise<Uint8Array> {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted = listener.accept();
  const tcp = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
  const client = await Deno.startTls(tcp, { hostname: "localhost" });
  const handshake = client.handshake().catch(() => {});
  using server = await accepted;
  const reader = new BufferedReader(server);
  const header = (await reader.readExact(5))!;
  const length = (header[3] << 8) | header[4];
  const body = (await reader.readExact(length))!;
  client.close();
  await handshake;
  return concat([header, body]);
}

/** Sets the RSV bits given (0x40, 0x20, 0x10) on an encoded frame. */
export function withRsv(frame: Uint8Array, bits: number): Uint8Array {
  const out = frame.slice();
  out[0] |= bits;
  return out;
}
