/**
 * Flag parsing and listening shared by the bare Deno echo servers, the
 * baselines netkit is measured against. Deliberately free of netkit imports.
 *
 * Flags: `--hostname` (127.0.0.1), `--port` (0 = a free port), for the TCP
 * servers `--nagle` (leave Nagle's algorithm on, as Deno does by default), and
 * for the TLS servers `--cert FILE --key FILE` (PEM).
 *
 * The TCP servers set `TCP_NODELAY` on every connection unless `--nagle` is
 * given: Deno leaves Nagle on for accepted sockets, and on loopback (MSS 65483)
 * every 64 KiB write then ends in a 53-byte segment held back until the peer
 * ACKs, which cost the read/write loop 15-35% of its streaming throughput here.
 * `Deno.TlsConn` has no `setNoDelay`, so the TLS servers cannot do the same.
 *
 * @module
 */
// deno-lint-ignore-file no-console

/** What a bare server was asked to listen on. */
export interface BareOptions {
  hostname: string;
  port: number;
  cert?: string;
  key?: string;
  /** keep Nagle's algorithm on (TCP servers; default: set TCP_NODELAY) */
  nagle: boolean;
}

/** Parses the bare servers' flags; a bad flag prints one line and exits 2. */
export function bareOptions(args: string[] = Deno.args): BareOptions {
  const opts: BareOptions = { hostname: "127.0.0.1", port: 0, nagle: false };
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "--nagle") {
      opts.nagle = true;
      continue;
    }
    const [flag, inline] = args[i].split(/=(.*)/s, 2);
    const value = inline ?? args[++i];
    if (value === undefined) usage(`${flag} needs a value`);
    switch (flag) {
      case "--hostname":
        opts.hostname = value;
        break;
      case "--port":
        if (!/^\d+$/.test(value) || Number(value) > 65535) usage(`bad --port "${value}"`);
        opts.port = Number(value);
        break;
      case "--cert":
        opts.cert = value;
        break;
      case "--key":
        opts.key = value;
        break;
      default:
        usage(`unknown flag ${flag}`);
    }
  }
  return opts;
}

function usage(message: string): never {
  console.error(`${message} (flags: --hostname H --port N [--nagle] [--cert FILE --key FILE])`);
  Deno.exit(2);
}

/** Starts a plain TCP listener and prints the listening line. */
export function listenTcp(opts: BareOptions): Deno.TcpListener {
  const listener = Deno.listen({ hostname: opts.hostname, port: opts.port });
  console.log(`listening on tcp://${hostPort(listener.addr)}`);
  return listener;
}

/** Starts a TLS listener (needs `--cert` and `--key`) and prints the listening line. */
export function listenTls(opts: BareOptions): Deno.TlsListener {
  if (!opts.cert || !opts.key) usage("a TLS server needs --cert and --key");
  let cert: string, key: string;
  try {
    cert = Deno.readTextFileSync(opts.cert);
    key = Deno.readTextFileSync(opts.key);
  } catch (err) {
    console.error(`cannot read the certificate or key: ${(err as Error).message}`);
    Deno.exit(1);
  }
  const listener = Deno.listenTls({ hostname: opts.hostname, port: opts.port, cert, key });
  console.log(`listening on tls://${hostPort(listener.addr)}`);
  return listener;
}

function hostPort(addr: Deno.NetAddr): string {
  return addr.hostname.includes(":")
    ? `[${addr.hostname}]:${addr.port}`
    : `${addr.hostname}:${addr.port}`;
}

/**
 * The read/write loop echo: one 64 KiB buffer per connection; every byte of a
 * read is written before the next read. Closes on EOF or error.
 */
export async function loopEcho(conn: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(64 * 1024);
  try {
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      let off = 0;
      while (off < n) {
        off += await conn.write(buf.subarray(off, n));
      }
    }
  } catch {
    // reset by the peer, failed TLS handshake, ...: this connection only
  } finally {
    try {
      conn.close();
    } catch {
      // already closed
    }
  }
}
