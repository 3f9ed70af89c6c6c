// deno-lint-ignore-file no-console
// Shared by the hostile-peer tests: netkit's server programs spawned as a user
// runs them, raw attacking peers (plain TCP, or TLS for attacks after the
// handshake), a well-behaved probe per server, and the outcome table.
//
// Every attack returns what the attacker observed (an HTTP status, a close
// code, a TLS alert, the end of the connection…); the matrix records it next
// to what the server logged for that connection (matched by the attacker's
// local port), and each test prints its table at the end.
import assert from "node:assert/strict";
import { BufferedReader } from "../io/buffered_reader.ts";
import { writeDevCerts } from "../certs/mod.ts";
import { connect as wsConnect } from "../websocket/client.ts";
import { encodeFrame } from "../websocket/sender.ts";
import { pseudoRandomBytes, ROOT } from "./_helpers.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Which server program, and how it is started. */
export type ServerKind = "tcp" | "tls" | "tls-deno" | "ws" | "wss";

/** Development certificate files in a temporary folder. */
export interface CertFiles {
  dir: string;
  ca: string;
  cert: string;
  key: string;
  /** The CA certificate, PEM. */
  caPem: string;
}

/** Writes a CA and a server certificate for localhost/127.0.0.1 to a temporary folder. */
export async function makeCertFiles(): Promise<CertFiles> {
  const dir = await Deno.makeTempDir({ prefix: "netkit-hostile-" });
  const { files } = await writeDevCerts({ out: dir, hosts: ["localhost", "127.0.0.1"] });
  return {
    dir,
    ca: files.ca,
    cert: files.cert,
    key: files.key,
    caPem: await Deno.readTextFile(files.ca),
  };
}

/** A server program under attack. */
export interface Target extends AsyncDisposable {
  kind: ServerKind;
  port: number;
  /** The CA that signed the server's certificate (PEM), for TLS kinds. */
  caPem: string;
  child: Deno.ChildProcess;
  /** Every stderr line so far. */
  readonly log: string[];
  /** Whether the process is still running. */
  alive(): Promise<boolean>;
  /** The stderr lines about the connection from local port `port` (open lines excepted). */
  linesFor(port: number): string[];
  /**
   * Waits (bounded) until the server logged the end of the connection from
   * `port`: its close, rejection, error or refusal. Resolves to its lines.
   */
  settled(port: number, timeoutMs?: number): Promise<string[]>;
  /** SIGTERM, then the exit code, the time it took and the whole stderr. */
  stop(signal?: Deno.Signal): Promise<{ code: number; ms: number; stderr: string }>;
}

const PROGRAMS: Record<ServerKind, string> = {
  tcp: "cli/tcp_server.ts",
  tls: "cli/tls_server.ts",
  "tls-deno": "cli/tls_server.ts",
  ws: "cli/ws_server.ts",
  wss: "cli/ws_server.ts",
};

/** Whether `kind` speaks TLS on its port. */
export function isTls(kind: ServerKind): boolean {
  return kind === "tls" || kind === "tls-deno" || kind === "wss";
}

/** Whether `kind` is a WebSocket server. */
export function isWs(kind: ServerKind): boolean {
  return kind === "ws" || kind === "wss";
}

/**
 * Starts the server program for `kind` on a free port with `args` (the
 * certificate flags are added for TLS kinds) and waits for its listening line.
 */
export async function launch(kind: ServerKind, certs: CertFiles, args: string[]): Promise<Target> {
  const full = ["--port", "0", ...args];
  if (isTls(kind)) full.push("--cert", certs.cert, "--key", certs.key);
  if (kind === "tls-deno") full.push("--engine", "deno");
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", PROGRAMS[kind], ...full],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const killer = setTimeout(() => child.kill("SIGKILL"), 120_000);
  const log: string[] = [];
  const stderrDone = (async () => {
    let partial = "";
    const dec = new TextDecoder();
    for await (const chunk of child.stderr) {
      partial += dec.decode(chunk, { stream: true });
      const lines = partial.split("\n");
      partial = lines.pop()!;
      log.push(...lines);
    }
    if (partial !== "") log.push(partial);
  })();
  const stdout = new BufferedReader(child.stdout);
  const line = await stdout.readLine({ maxBytes: 4096 });
  if (line === null) {
    await child.status;
    clearTimeout(killer);
    await stdout.cancel();
    await stderrDone;
    throw new Error(`${PROGRAMS[kind]} exited before listening:\n${log.join("\n")}`);
  }
  const port = Number(/:(\d+)$/.exec(line)?.[1]);
  const stdoutDone = (async () => {
    while ((await stdout.readChunk()) !== null) {
      // Nothing more is expected on stdout.
    }
  })();
  let exited = false;
  void child.status.then(() => (exited = true));
  const about = (p: number) => new RegExp(`127\\.0\\.0\\.1:${p}\\b`);
  const linesFor = (p: number) =>
    log.filter((l) => about(p).test(l) && !/: open 127\.0\.0\.1:/.test(l));
  let stopped: Promise<{ code: number; ms: number; stderr: string }> | undefined;
  const stop = (signal: Deno.Signal = "SIGTERM") =>
    stopped ??= (async () => {
      const started = performance.now();
      try {
        child.kill(signal);
      } catch {
        // Already gone.
      }
      const status = await child.status;
      const ms = performance.now() - started;
      clearTimeout(killer);
      await stdoutDone;
      await stderrDone;
      return { code: status.code, ms, stderr: log.join("\n") };
    })();
  return {
    kind,
    port,
    caPem: certs.caPem,
    child,
    log,
    alive: async () => {
      await new Promise((r) => setTimeout(r, 0));
      return !exited;
    },
    linesFor,
    async settled(p, timeoutMs = 3000) {
      const end = performance.now() + timeoutMs;
      const done = new RegExp(
        `(: close |rejected |error: |closed idle connection |refused |closed slow client )127\\.0\\.0\\.1:${p}\\b`,
      );
      while (performance.now() < end) {
        if (log.some((l) => done.test(l))) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      return linesFor(p);
    },
    stop,
    [Symbol.asyncDispose]: async () => void (await stop()),
  };
}

// --- raw peers ----------------------------------------------------------------

/** How a read on a raw peer ended. */
export type End = "fin" | "reset" | "timeout" | "closed";

/** A raw connection to a target: TCP, or TLS for the TLS kinds when `tls` is set. */
export class RawPeer implements AsyncDisposable {
  readonly conn: Deno.Conn;
  readonly reader: BufferedReader;
  readonly localPort: number;
  #closed = false;

  private constructor(conn: Deno.Conn, localPort: number) {
    this.conn = conn;
    this.localPort = localPort;
    this.reader = new BufferedReader(conn);
  }

  /** A plain TCP connection to the target's port. */
  static async tcp(port: number): Promise<RawPeer> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    return new RawPeer(conn, conn.localAddr.port);
  }

  /** A TLS connection (handshake done) to a TLS target, trusting its CA. */
  static async tls(target: Target): Promise<RawPeer> {
    const tcp = await Deno.connect({ hostname: "127.0.0.1", port: target.port });
    const localPort = tcp.localAddr.port;
    const conn = await Deno.startTls(tcp, { hostname: "localhost", caCerts: [target.caPem] });
    await conn.handshake();
    return new RawPeer(conn, localPort);
  }

  /** The transport the target speaks after its handshake: TLS or TCP. */
  static open(target: Target): Promise<RawPeer> {
    return isTls(target.kind) ? RawPeer.tls(target) : RawPeer.tcp(target.port);
  }

  /** Opens the transport and completes a valid WebSocket upgrade. */
  static async upgraded(target: Target): Promise<RawPeer> {
    const peer = await RawPeer.open(target);
    await peer.write(upgradeRequest());
    const head = await peer.readHead();
    if (!head.startsWith("HTTP/1.1 101 ")) throw new Error(`no upgrade: ${head}`);
    return peer;
  }

  /** Writes everything; rejects if the peer is gone. */
  async write(data: string | Uint8Array): Promise<void> {
    const bytes = typeof data === "string" ? encoder.encode(data) : data;
    let off = 0;
    while (off < bytes.length) off += await this.conn.write(bytes.subarray(off));
  }

  /** Sends a masked client frame. */
  send(opcode: number, payload: string | Uint8Array = "", fin = true): Promise<void> {
    return this.write(encodeFrame(opcode, payload, { mask: true, fin }));
  }

  /** Half-closes (FIN, or close_notify and FIN). */
  async closeWrite(): Promise<void> {
    await this.conn.closeWrite();
  }

  /** Reads a response head, as text. */
  async readHead(): Promise<string> {
    const head = await this.reader.readUntil("\r\n\r\n");
    if (head === null) throw new Error("closed before a response");
    return decoder.decode(head);
  }

  /** Reads one server frame; `null` at the end of the stream. */
  async readFrame(): Promise<{ fin: boolean; opcode: number; payload: Uint8Array } | null> {
    const head = await this.reader.readExact(2);
    if (head === null) return null;
    let length = head[1] & 0x7f;
    if (length === 126) {
      const ext = (await this.reader.readExact(2))!;
      length = (ext[0] << 8) | ext[1];
    } else if (length === 127) {
      const ext = (await this.reader.readExact(8))!;
      length = Number(new DataView(ext.buffer, ext.byteOffset, 8).getBigUint64(0));
    }
    const payload = length === 0 ? new Uint8Array(0) : (await this.reader.readExact(length))!;
    return { fin: (head[0] & 0x80) !== 0, opcode: head[0] & 0x0f, payload };
  }

  /**
   * Reads until the end of the connection or `timeoutMs`; resolves to the
   * bytes and how it ended. A timeout leaves the connection open.
   */
  async drain(timeoutMs = 3000): Promise<{ bytes: Uint8Array; end: End; error?: string }> {
    const parts: Uint8Array[] = [];
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<"timeout">((r) => (timer = setTimeout(() => r("timeout"), timeoutMs)));
    let end: End;
    let error: string | undefined;
    try {
      for (;;) {
        const chunk = await Promise.race([this.reader.readChunk(), timeout]);
        if (chunk === "timeout") {
          end = "timeout";
          break;
        }
        if (chunk === null) {
          end = "fin";
          break;
        }
        parts.push(chunk.slice());
      }
    } catch (err) {
      end = err instanceof Deno.errors.ConnectionReset ? "reset" : "closed";
      error = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    } finally {
      clearTimeout(timer);
    }
    return { bytes: concat(parts), end, error };
  }

  /**
   * Reads what the server answers until it ends the connection (bounded by
   * `timeoutMs`) and describes it: the HTTP status, the close frame, a TLS
   * alert, echoed bytes, and how the connection ended.
   */
  async observe(
    timeoutMs = 3000,
    sent?: Uint8Array,
  ): Promise<string> {
    const started = performance.now();
    const { bytes, end } = await this.drain(timeoutMs);
    const ms = performance.now() - started;
    const parts: string[] = [];
    if (bytes.length > 0) parts.push(describeBytes(bytes, sent));
    else parts.push("no answer");
    parts.push(endText(end, ms));
    return parts.join(", ");
  }

  /** Closes the socket (a RST if received bytes are still unread). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.conn.close();
    } catch {
      // Already closed.
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
    await this.reader.cancel().catch(() => {});
  }
}

function endText(end: End, ms: number): string {
  switch (end) {
    case "fin":
      return `closed (FIN)${ms > 700 ? ` after ${(ms / 1000).toFixed(1)}s` : ""}`;
    case "reset":
      return "reset (RST)";
    case "closed":
      return "connection error";
    case "timeout":
      return "still open";
  }
}

/** What a server's bytes say: HTTP status, WebSocket close code, TLS alert, or an echo. */
export function describeBytes(bytes: Uint8Array, sent?: Uint8Array): string {
  if (sent !== undefined && equalBytes(bytes, sent)) return `echoed all ${bytes.length} bytes`;
  const text = decoder.decode(bytes.subarray(0, 200));
  const http = /^HTTP\/1\.1 (\d{3})[^\r]*\r\n/.exec(text);
  if (http) {
    const body = text.split("\r\n\r\n")[1]?.split("\n")[0] ?? "";
    const status = Number(http[1]);
    if (status === 101) {
      const close = closeFrameIn(bytes.subarray(text.indexOf("\r\n\r\n") + 4));
      return close ? `101, then close ${close}` : "101";
    }
    return `HTTP ${status}${body ? ` "${body.slice(0, 60)}"` : ""}`;
  }
  if (bytes[0] === 0x15 && bytes.length >= 7) {
    return `TLS alert ${bytes[6]} (${ALERTS[bytes[6]] ?? "?"})`;
  }
  const close = closeFrameIn(bytes);
  if (close) return `close ${close}`;
  return `${bytes.length} bytes`;
}

const ALERTS: Record<number, string> = {
  0: "close_notify",
  10: "unexpected_message",
  20: "bad_record_mac",
  22: "record_overflow",
  40: "handshake_failure",
  42: "bad_certificate",
  47: "illegal_parameter",
  50: "decode_error",
  70: "protocol_version",
  80: "internal_error",
  109: "missing_extension",
};

/** The code (and reason) of the first close frame in a run of server frames, if any. */
function closeFrameIn(bytes: Uint8Array): string | undefined {
  let off = 0;
  while (off + 2 <= bytes.length) {
    const opcode = bytes[off] & 0x0f;
    let length = bytes[off + 1] & 0x7f;
    let at = off + 2;
    if (length === 126) {
      length = (bytes[at] << 8) | bytes[at + 1];
      at += 2;
    } else if (length === 127) {
      length = Number(new DataView(bytes.buffer, bytes.byteOffset + at, 8).getBigUint64(0));
      at += 8;
    }
    if (opcode === 0x8) {
      const p = bytes.subarray(at, at + length);
      if (p.length < 2) return "(no code)";
      const reason = decoder.decode(p.subarray(2));
      return `${(p[0] << 8) | p[1]}${reason ? ` "${reason}"` : ""}`;
    }
    off = at + length;
  }
  return undefined;
}

/** The code of the close frame in a server's answer, or undefined. */
export function closeCodeOf(outcome: string): number | undefined {
  const m = /close (\d{4})/.exec(outcome);
  return m ? Number(m[1]) : undefined;
}

// --- probes: a well-behaved client gets correct service -------------------------

let probeSeq = 0;

/**
 * A well-behaved client: 64 KiB (tcp/tls) or a 10 KiB message (ws/wss)
 * there and back, byte-exact.
 */
export async function probe(target: Target): Promise<void> {
  const seq = ++probeSeq;
  if (isWs(target.kind)) {
    const scheme = target.kind === "wss" ? "wss" : "ws";
    await using ws = await wsConnect(`${scheme}://localhost:${target.port}/`, {
      caCerts: [target.caPem],
      timeout: 10_000,
    });
    const payload = pseudoRandomBytes(10_000, seq);
    await ws.send(payload);
    for (;;) {
      const msg = await ws.receive();
      assert.ok(msg !== null, "the probe got its message back");
      if (msg instanceof Uint8Array && equalBytes(msg, payload)) break;
    }
    return;
  }
  const tcp = await Deno.connect({ hostname: "127.0.0.1", port: target.port });
  const conn: Deno.Conn = isTls(target.kind)
    ? await Deno.startTls(tcp, { hostname: "localhost", caCerts: [target.caPem] })
    : tcp;
  try {
    const payload = pseudoRandomBytes(64 * 1024, seq);
    const writing = (async () => {
      let off = 0;
      while (off < payload.length) off += await conn.write(payload.subarray(off));
      await conn.closeWrite();
    })();
    const got = new Uint8Array(await new Response(conn.readable).arrayBuffer());
    await writing;
    assert.ok(equalBytes(got, payload), `the probe got ${got.length} of ${payload.length} bytes back`);
  } finally {
    try {
      conn.close();
    } catch {
      // The readable closed it already.
    }
  }
}

// --- the outcome table ----------------------------------------------------------

/** One attack on one server: what the attacker saw, what the server logged. */
export interface Outcome {
  server: string;
  attack: string;
  observed: string;
  logged: string;
}

/** Shortens a server log line for the table: the program and address dropped. */
export function shortLog(lines: string[]): string {
  const interesting = lines.filter((l) => !/: close 127\.0\.0\.1:\d+ \(/.test(l));
  const shown = interesting.map((l) =>
    l.replace(/^[a-z-]+: /, "").replace(/127\.0\.0\.1:\d+:? ?/g, "").replace(/\s+/g, " ").trim()
  );
  if (shown.length === 0) return lines.length > 0 ? "close" : "-";
  return shown.join("; ").slice(0, 140);
}

/** Prints the outcome table as markdown. */
export function printMatrix(title: string, rows: Outcome[]): void {
  const lines = [
    `\n${title}`,
    "| server | attack | attacker observed | server logged |",
    "| --- | --- | --- | --- |",
    ...rows.map((r) => `| ${r.server} | ${r.attack} | ${r.observed} | ${r.logged} |`),
  ];
  console.log(lines.join("\n"));
}

// --- bytes ----------------------------------------------------------------------

/** Joins byte arrays. */
export function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** Byte-for-byte equality. */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

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

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
