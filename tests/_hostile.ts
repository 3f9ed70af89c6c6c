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
  settled(port: number, timeoutMs?: number, done?: RegExp): Promise<string[]>;
  /**
   * Sends `signal` (null: none, the process was signalled already), then
   * resolves to the exit code, the time it took and the whole stderr.
   */
  stop(signal?: Deno.Signal | null): Promise<{ code: number; ms: number; stderr: string }>;
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
  const stop = (signal: Deno.Signal | null = "SIGTERM") =>
    stopped ??= (async () => {
      const started = performance.now();
      try {
        if (signal !== null) child.kill(signal);
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
    async settled(p, timeoutMs = 3000, until?: RegExp) {
      const end = performance.now() + timeoutMs;
      const done = until ?? new RegExp(
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
    const timeout = new Promise<"timeout">((
      r,
    ) => (timer = setTimeout(() => r("timeout"), timeoutMs)));
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
    frames = false,
  ): Promise<string> {
    const started = performance.now();
    const { bytes, end } = await this.drain(timeoutMs);
    const ms = performance.now() - started;
    const parts: string[] = [];
    if (bytes.length > 0) parts.push(frames ? describeFrames(bytes) : describeBytes(bytes, sent));
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
      return `closed (FIN)${ms > 900 ? ` after ${(ms / 1000).toFixed(1)}s` : ""}`;
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
  if (bytes[0] === 0x16 && bytes[1] === 0x03) {
    return `TLS handshake records (${bytes.length} bytes)`;
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

/** Server frames after an upgrade: the messages and pongs that came, then the close frame. */
export function describeFrames(bytes: Uint8Array): string {
  let off = 0;
  let messages = 0;
  let messageBytes = 0;
  let pongs = 0;
  let close: string | undefined;
  while (off + 2 <= bytes.length && close === undefined) {
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
    if (at + length > bytes.length) break;
    if (opcode === 0x1 || opcode === 0x2) {
      messages++;
      messageBytes += length;
    } else if (opcode === 0xa) pongs++;
    else if (opcode === 0x8) close = closeFrameIn(bytes.subarray(off));
    off = at + length;
  }
  const parts: string[] = [];
  if (messages > 0) {
    parts.push(`${messages} message${messages > 1 ? "s" : ""} back (${messageBytes} B)`);
  }
  if (pongs > 0) parts.push(`${pongs} pongs`);
  if (close !== undefined) parts.push(`close ${close}`);
  return parts.length > 0 ? parts.join(", ") : `${bytes.length} bytes`;
}

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
    assert.ok(
      equalBytes(got, payload),
      `the probe got ${got.length} of ${payload.length} bytes back`,
    );
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

// --- attacks --------------------------------------------------------------------

/** What one attack produced. */
export interface Hit {
  /** What the attacker observed. */
  observed: string;
  /** The attacker's local port (the server logs it). */
  port: number;
}

/** One row of the matrix: an attack and the outcome it must have on each server kind. */
export interface Attack {
  name: string;
  /** The outcome it must have, per server kind; a kind without an entry is not attacked. */
  expect: Partial<Record<ServerKind, RegExp>>;
  /** Also required of the server's log lines about the connection. */
  logged?: Partial<Record<ServerKind, RegExp>>;
  /** The bytes it sends, when it is one write (for the echo servers' combined step). */
  bytes?: Uint8Array;
  run(target: Target): Promise<Hit>;
}

/**
 * Opens a raw connection (`"tcp"`: plain TCP whatever the server speaks;
 * `"native"`: TLS for the TLS kinds, after the handshake; `"upgraded"`: a
 * finished WebSocket upgrade), lets `act` attack, then observes the answer.
 */
export async function hit(
  target: Target,
  transport: "tcp" | "native" | "upgraded",
  act: (peer: RawPeer) => Promise<Uint8Array | void>,
  { timeout = 3000 }: { timeout?: number } = {},
): Promise<Hit> {
  const peer = transport === "tcp"
    ? await RawPeer.tcp(target.port)
    : transport === "native"
    ? await RawPeer.open(target)
    : await RawPeer.upgraded(target);
  await using _peer = peer;
  let sent: Uint8Array | void;
  try {
    sent = await act(peer);
  } catch (err) {
    // The server may hang up while the attack is still writing.
    const what = err instanceof Error ? err.name : String(err);
    const rest = await peer.observe(timeout);
    return { observed: `write failed (${what}); ${rest}`, port: peer.localPort };
  }
  return {
    observed: await peer.observe(timeout, sent ?? undefined, transport === "upgraded"),
    port: peer.localPort,
  };
}

/** Sends `bytes` on the given transport (and a FIN when `fin`), then observes. */
export function sendBytes(
  target: Target,
  transport: "tcp" | "native" | "upgraded",
  bytes: Uint8Array | string,
  { fin = false, timeout = 3000 }: { fin?: boolean; timeout?: number } = {},
): Promise<Hit> {
  const data = typeof bytes === "string" ? encoder.encode(bytes) : bytes;
  return hit(target, transport, async (peer) => {
    await peer.write(data);
    if (fin) await peer.closeWrite();
    return data;
  }, { timeout });
}

/**
 * Writes one byte every `everyMs` until the server cuts the peer off, or for
 * `maxMs`: a slowloris peer is never idle, so only a deadline stops it.
 */
export async function trickle(
  target: Target,
  transport: "tcp" | "native",
  bytes: Uint8Array,
  { everyMs = 100, maxMs = 4000 }: { everyMs?: number; maxMs?: number } = {},
): Promise<Hit> {
  const peer = transport === "tcp" ? await RawPeer.tcp(target.port) : await RawPeer.open(target);
  await using _peer = peer;
  const started = performance.now();
  let cut = false;
  const answer = peer.drain(maxMs + 1000).then((r) => {
    cut = r.end !== "timeout";
    return r;
  });
  let sent = 0;
  while (!cut && performance.now() - started < maxMs && sent < bytes.length) {
    try {
      await peer.write(bytes.subarray(sent, sent + 1));
    } catch {
      cut = true;
      break;
    }
    sent++;
    await sleep(everyMs);
  }
  const ms = performance.now() - started;
  const seconds = (ms / 1000).toFixed(1);
  if (!cut) {
    // Still served after maxMs: stop here (closing ends the drain too).
    peer.close();
    const { bytes: got } = await answer;
    const answered = got.length > 0 ? `${describeBytes(got)} back, ` : "";
    return {
      observed: `${answered}not cut off: ${sent} bytes in ${seconds}s`,
      port: peer.localPort,
    };
  }
  const { bytes: got } = await answer;
  const answered = got.length > 0 ? `${describeBytes(got)}, ` : "";
  return {
    observed: `${answered}cut off after ${sent} bytes in ${seconds}s`,
    port: peer.localPort,
  };
}

/**
 * Writes `total` bytes without reading any answer; after `afterMs` closes
 * with the echo unread, which sends a RST while the server is writing.
 */
export async function resetMidWrite(
  target: Target,
  transport: "native" | "upgraded",
  { total = 8 << 20, afterMs = 300 }: { total?: number; afterMs?: number } = {},
): Promise<Hit> {
  const peer = transport === "native" ? await RawPeer.open(target) : await RawPeer.upgraded(target);
  const port = peer.localPort;
  let written = 0;
  const writing = (async () => {
    const chunk = transport === "upgraded"
      ? encodeFrame(0x2, pseudoRandomBytes(32 * 1024, 9), { mask: true })
      : pseudoRandomBytes(64 * 1024, 9);
    try {
      while (written < total) {
        await peer.write(chunk);
        written += chunk.length;
      }
    } catch {
      // The socket was closed under the write: that is the point.
    }
  })();
  await sleep(afterMs);
  // Unread bytes in the receive buffer: closing now sends a RST.
  peer.close();
  await writing;
  await peer.reader.cancel().catch(() => {});
  return { observed: `RST sent after writing ${(written / 1024).toFixed(0)} KiB`, port };
}

/**
 * Sends a little, then goes silent without closing: never reads, never
 * writes, never sends a FIN. The server's idle timeout must reap it; the
 * outcome is what reached the attacker and when the server ended it.
 */
export async function vanish(
  target: Target,
  transport: "native" | "upgraded",
  { timeout = 9000 }: { timeout?: number } = {},
): Promise<Hit> {
  const peer = transport === "native" ? await RawPeer.open(target) : await RawPeer.upgraded(target);
  await using _peer = peer;
  if (transport === "upgraded") await peer.send(0x1, "last words");
  else await peer.write("last words\n");
  // Not reading is part of vanishing; the kernel still buffers what arrives.
  const started = performance.now();
  // Reaped means released: wait for the session's end, not only the idle notice.
  const lines = await target.settled(
    peer.localPort,
    timeout,
    new RegExp(`: (close|error:) 127\\.0\\.0\\.1:${peer.localPort}\\b`),
  );
  const ms = performance.now() - started;
  const { bytes } = await peer.drain(100);
  const got = bytes.length > 0 ? `got ${describeBytes(bytes)}; ` : "";
  const reaped = lines.some((l) => /: close 127|closed idle|error: 127/.test(l));
  return {
    observed: `${got}${
      reaped ? `server ended it after ${(ms / 1000).toFixed(1)}s` : "never reaped"
    }`,
    port: peer.localPort,
  };
}

/**
 * Stops reading while the server has lots to send it, and never closes: the
 * server's write blocks. tcp/tls: the idle timeout must reap it; ws: the
 * slow-consumer policy.
 */
export async function stopReading(
  target: Target,
  transport: "native" | "upgraded",
  { timeout = 9000 }: { timeout?: number } = {},
): Promise<Hit> {
  const peer = transport === "native" ? await RawPeer.open(target) : await RawPeer.upgraded(target);
  await using _peer = peer;
  const started = performance.now();
  let written = 0;
  const writing = (async () => {
    const chunk = transport === "upgraded"
      ? encodeFrame(0x2, pseudoRandomBytes(32 * 1024, 5), { mask: true })
      : pseudoRandomBytes(64 * 1024, 5);
    try {
      while (written < 64 << 20 && performance.now() - started < timeout) {
        await peer.write(chunk);
        written += chunk.length;
      }
    } catch {
      // Cut off by the server.
    }
  })();
  const lines = await target.settled(peer.localPort, timeout);
  const ms = performance.now() - started;
  peer.close();
  await writing;
  const what = lines.some((l) => /closed idle/.test(l))
    ? "idle timeout"
    : lines.some((l) => /slow client/.test(l))
    ? "slow-consumer policy"
    : lines.length > 0
    ? "closed"
    : undefined;
  return {
    observed: what
      ? `wrote ${(written / 1024 / 1024).toFixed(1)} MiB unread; server ended it (${what}) after ${
        (ms / 1000).toFixed(1)
      }s`
      : "never reaped",
    port: peer.localPort,
  };
}

/**
 * Runs `attacks` against `target`, one test step each: the attack, then a
 * well-behaved probe and a check that the process is alive. Records each
 * outcome in `rows`.
 */
export async function runMatrix(
  t: Deno.TestContext,
  target: Target,
  label: string,
  attacks: Attack[],
  rows: Outcome[],
): Promise<void> {
  for (const attack of attacks) {
    const expected = attack.expect[target.kind];
    if (expected === undefined) continue;
    await t.step(attack.name, async () => {
      const { observed, port } = await attack.run(target);
      const lines = await target.settled(port, 1500);
      const logged = shortLog(lines);
      rows.push({ server: label, attack: attack.name, observed, logged });
      assert.match(observed, expected, `${attack.name}: ${observed}`);
      const wantLog = attack.logged?.[target.kind];
      if (wantLog) assert.match(lines.join("\n"), wantLog, `${attack.name}: logged ${logged}`);
      await probe(target);
      assert.ok(await target.alive(), "the server process is alive");
    });
  }
}

// --- the attack lists -------------------------------------------------------------

// Outcomes that mean "closed at once, nothing served": a FIN or a RST, no delay.
// (Well before the 1 s handshake timeout, also on a loaded machine.)
const CLOSED_AT_ONCE =
  /^(no answer|TLS alert \d+ \(\w+\)), (closed \(FIN\)( after 0\.\ds)?|reset \(RST\))$/;
const NOT_TLS = /not speaking TLS/;

/**
 * Bytes-level attacks every server faces: garbage, the wrong protocol, a
 * handshake cut short, resets, half-closes and peers that vanish.
 * `hello` is a real ClientHello ({@linkcode captureClientHello}).
 */
export function byteAttacks(hello: Uint8Array): Attack[] {
  const plaintext = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
  return [
    {
      name: "garbage bytes (64 KiB), then FIN",
      expect: {
        tcp: /^echoed all 65536 bytes, closed \(FIN\)$/,
        tls: CLOSED_AT_ONCE,
        "tls-deno": CLOSED_AT_ONCE,
        ws: /^HTTP 431 .*closed \(FIN\)$/,
        wss: CLOSED_AT_ONCE,
      },
      logged: { tls: NOT_TLS, "tls-deno": NOT_TLS, wss: NOT_TLS, ws: /over maxHeadSize/ },
      run: (t) => sendBytes(t, "tcp", garbage(64 * 1024, 1), { fin: true }),
    },
    {
      name: "garbage bytes (300), then silence",
      expect: {
        tcp: /^echoed all 300 bytes, closed \(FIN\)/,
        tls: CLOSED_AT_ONCE,
        "tls-deno": CLOSED_AT_ONCE,
        ws: /^(HTTP 400 .*closed \(FIN\)|no answer, closed \(FIN\) after [12]\.\ds)$/,
        wss: CLOSED_AT_ONCE,
      },
      logged: { tcp: /closed idle/, tls: NOT_TLS, "tls-deno": NOT_TLS, wss: NOT_TLS },
      run: (t) => sendBytes(t, "tcp", garbage(300, 2)),
    },
    {
      name: "a TLS ClientHello to a plain port",
      expect: {
        tcp: new RegExp(`^echoed all ${hello.length} bytes, closed \\(FIN\\)`),
        ws: /^(HTTP 400 .*closed \(FIN\)|no answer, closed \(FIN\) after [12]\.\ds)$/,
      },
      run: (t) => sendBytes(t, "tcp", hello),
    },
    {
      name: "plaintext HTTP to a TLS port",
      expect: { tls: CLOSED_AT_ONCE, "tls-deno": CLOSED_AT_ONCE, wss: CLOSED_AT_ONCE },
      logged: { tls: NOT_TLS, "tls-deno": NOT_TLS, wss: NOT_TLS },
      run: (t) => sendBytes(t, "tcp", plaintext),
    },
    {
      name: "a truncated TLS handshake (half a ClientHello), then FIN",
      expect: {
        tcp: /^echoed all 100 bytes, closed \(FIN\)$/,
        tls: CLOSED_AT_ONCE,
        "tls-deno": CLOSED_AT_ONCE,
        ws: /^no answer, closed \(FIN\)$/,
        wss: CLOSED_AT_ONCE,
      },
      run: (t) => sendBytes(t, "tcp", hello.subarray(0, 100), { fin: true }),
    },
    {
      name: "a truncated TLS handshake (half a ClientHello), then silence",
      expect: {
        tcp: /^echoed all 100 bytes, closed \(FIN\)/,
        tls: /^no answer, closed \(FIN\) after [12]\.\ds$/,
        "tls-deno": /^no answer, (still open|closed \(FIN\) after [12]\.\ds)$/,
        ws: /^(HTTP 400 .*closed \(FIN\)|no answer, closed \(FIN\) after [12]\.\ds)$/,
        wss: /^no answer, closed \(FIN\) after [12]\.\ds$/,
      },
      logged: {
        tcp: /closed idle/,
        tls: /did not finish its TLS handshake within 1s/,
        "tls-deno": /did not finish its TLS handshake within 1s/,
        wss: /no complete TLS handshake and WebSocket upgrade within 1s/,
      },
      run: (t) => sendBytes(t, "tcp", hello.subarray(0, 100), { timeout: 2500 }),
    },
    {
      name: "slowloris: the handshake a byte per 100 ms",
      expect: {
        tcp: /not cut off: \d+ bytes in [12]\.\ds$/,
        tls: /^cut off after \d+ bytes in [12]\.\ds$/,
        "tls-deno": /cut off after \d+ bytes in [12]\.\ds$|not cut off/,
        ws: /cut off after \d+ bytes in [12]\.\ds$/,
        wss: /cut off after \d+ bytes in [12]\.\ds$/,
      },
      logged: {
        tls: /within 1s/,
        "tls-deno": /within 1s/,
        ws: /within 1s/,
        wss: /within 1s/,
      },
      run: (t) =>
        trickle(
          t,
          "tcp",
          isWs(t.kind) && !isTls(t.kind) ? encoder.encode(upgradeRequest()) : hello,
          {
            maxMs: t.kind === "tcp" ? 1500 : 3000,
          },
        ),
    },
    {
      name: "a peer that resets mid-write (RST with the echo unread)",
      expect: {
        tcp: /^RST sent/,
        tls: /^RST sent/,
        "tls-deno": /^RST sent/,
        ws: /^RST sent/,
        wss: /^RST sent/,
      },
      // ws: less than --max-buffered, or the slow-consumer policy ends it first.
      run: (t) =>
        isWs(t.kind)
          ? resetMidWrite(t, "upgraded", { total: 768 * 1024, afterMs: 100 })
          : resetMidWrite(t, "native"),
    },
    {
      name: "a peer that half-closes after sending",
      expect: {
        tcp: /^echoed all 262144 bytes, closed \(FIN\)$/,
        tls: /^echoed all 262144 bytes, closed \(FIN\)$/,
        "tls-deno": /^echoed all 262144 bytes, closed \(FIN\)$/,
        ws: /^3 messages back \(180000 B\)(, close [^,]+)?, closed \(FIN\)$/,
        wss: /^3 messages back \(180000 B\)(, close [^,]+)?, closed \(FIN\)$/,
      },
      run: (t) => halfClose(t),
    },
    {
      name: "a peer that vanishes without a FIN (silent, never reads)",
      expect: {
        tcp: /server ended it after [0-2]\.\ds$/,
        tls: /server ended it after [0-2]\.\ds$/,
        "tls-deno": /server ended it after [0-2]\.\ds$/,
        ws: /server ended it after \d\.\ds$/,
        wss: /server ended it after \d\.\ds$/,
      },
      logged: {
        tcp: /closed idle/,
        tls: /closed idle/,
        "tls-deno": /closed idle/,
        ws: /idle/,
        wss: /idle/,
      },
      run: (t) => vanish(t, isWs(t.kind) ? "upgraded" : "native"),
    },
    {
      name: "a peer that stops reading while the server writes",
      expect: {
        tcp: /server ended it \(idle timeout\) after [0-3]\.\ds$/,
        tls: /server ended it \(idle timeout\) after [0-3]\.\ds$/,
        "tls-deno": /server ended it \(idle timeout\) after [0-3]\.\ds$/,
        ws: /server ended it \(slow-consumer policy\)/,
        wss: /server ended it \(slow-consumer policy\)/,
      },
      run: (t) => stopReading(t, isWs(t.kind) ? "upgraded" : "native"),
    },
  ];
}

/**
 * Sends, half-closes, and reads everything that comes back until the server
 * closes: tcp/tls 256 KiB echoed byte-exact; ws/wss three 60 kB messages.
 */
export function halfClose(target: Target): Promise<Hit> {
  if (isWs(target.kind)) {
    return hit(target, "upgraded", async (peer) => {
      for (let i = 0; i < 3; i++) await peer.send(0x2, pseudoRandomBytes(60_000, i));
      await peer.closeWrite();
    });
  }
  return echoExchange(target, pseudoRandomBytes(256 * 1024, 4));
}

/**
 * For the echo servers: every WebSocket attack's bytes, back to back, in one
 * half-closed exchange; they must come back exactly.
 */
export function wsBytesToEchoServer(attacks: Attack[]): Attack {
  const data = concat(attacks.flatMap((a) => (a.bytes ? [a.bytes] : [])));
  const want = new RegExp(`^echoed all ${data.length} bytes, closed \\(FIN\\)$`);
  return {
    name: `the bytes of all ${attacks.length} WebSocket attacks (upgrades and frames), then FIN`,
    expect: { tcp: want, tls: want, "tls-deno": want },
    run: (t) => echoExchange(t, data),
  };
}

/** Sends `data` over the server's own transport, half-closes, reads to the end. */
async function echoExchange(target: Target, data: Uint8Array): Promise<Hit> {
  const peer = await RawPeer.open(target);
  await using _peer = peer;
  // Read while writing: the echo would otherwise fill both buffers.
  const reading = peer.drain(5000);
  await peer.write(data);
  await peer.closeWrite();
  const { bytes, end } = await reading;
  return {
    observed: `${describeBytes(bytes, data)}, ${end === "fin" ? "closed (FIN)" : end}`,
    port: peer.localPort,
  };
}

/** Upgrade requests a WebSocket server must refuse, each with its status. */
export function upgradeAttacks(): Attack[] {
  const both = (re: RegExp) => ({ ws: re, wss: re });
  const request = (name: string, head: string, status: RegExp): Attack => ({
    name,
    expect: both(status),
    bytes: encoder.encode(head),
    run: (t) => sendBytes(t, "native", head),
  });
  return [
    request(
      "upgrade without an Upgrade header (a plain GET)",
      upgradeRequest({ drop: ["Upgrade"] }),
      /^HTTP 200 .*closed \(FIN\)$/,
    ),
    request(
      "upgrade without Connection: Upgrade",
      upgradeRequest({ drop: ["Connection"] }),
      /^HTTP 400 "no Connection: Upgrade header", closed \(FIN\)$/,
    ),
    request(
      "upgrade without Sec-WebSocket-Key",
      upgradeRequest({ drop: ["Sec-WebSocket-Key"] }),
      /^HTTP 400 "Sec-WebSocket-Key missing.*, closed \(FIN\)$/,
    ),
    request(
      "upgrade with a Sec-WebSocket-Key that is not 16 bytes",
      upgradeRequest({ drop: ["Sec-WebSocket-Key"], extra: ["Sec-WebSocket-Key: c2hvcnQ="] }),
      /^HTTP 400 "Sec-WebSocket-Key missing.*, closed \(FIN\)$/,
    ),
    request(
      "upgrade without Host",
      upgradeRequest({ drop: ["Host"] }),
      /^HTTP 400 "no Host header", closed \(FIN\)$/,
    ),
    request(
      "upgrade with Sec-WebSocket-Version: 8",
      upgradeRequest({ drop: ["Sec-WebSocket-Version"], extra: ["Sec-WebSocket-Version: 8"] }),
      /^HTTP 426 "Sec-WebSocket-Version 8: only 13 is supp.*closed \(FIN\)$/,
    ),
    request(
      "upgrade without Sec-WebSocket-Version",
      upgradeRequest({ drop: ["Sec-WebSocket-Version"] }),
      /^HTTP 426 "no Sec-WebSocket-Version header", closed \(FIN\)$/,
    ),
    request(
      "upgrade with method POST",
      upgradeRequest({ method: "POST" }),
      /^HTTP 405 .*closed \(FIN\)$/,
    ),
    request(
      "upgrade over HTTP/1.0",
      upgradeRequest({ version: "1.0" }),
      /^HTTP 400 .*closed \(FIN\)$/,
    ),
    request(
      "upgrade on another path",
      upgradeRequest({ path: "/nope" }),
      /^HTTP 404 .*closed \(FIN\)$/,
    ),
    request(
      "a request line of garbage",
      "\x01\x02 nonsense \x7f\r\nHost: x\r\n\r\n",
      /^HTTP 400 .*closed \(FIN\)$/,
    ),
    request(
      "a header line without a colon",
      upgradeRequest({ extra: ["this is not a header"] }),
      /^HTTP 400 .*closed \(FIN\)$/,
    ),
    request(
      "a request head over maxHeadSize (16 KiB, io readUntil limit)",
      upgradeRequest({ extra: [`X-Pad: ${"a".repeat(17 * 1024)}`] }),
      /^HTTP 431 .*closed \(FIN\)$/,
    ),
  ];
}

// A served attacker goes silent after its message: the idle timeout (0.5 s)
// may begin to close it before the look ends.
const IDLE_MAYBE = '(, close 1001 "idle timeout")?';

/** Frames that break RFC 6455 or a limit, each with the close code it must get. */
export function frameAttacks(maxPayload: number): Attack[] {
  const both = (re: RegExp) => ({ ws: re, wss: re });
  const code = (c: number) => new RegExp(`(^|, )close ${c}\\b.*closed \\(FIN\\)$`);
  const frame = (name: string, bytes: Uint8Array, want: RegExp): Attack => ({
    name,
    expect: both(want),
    bytes,
    // An attack the server must serve leaves the connection open: look briefly.
    run: (t) =>
      sendBytes(t, "upgraded", bytes, { timeout: /still open/.test(want.source) ? 1200 : 3000 }),
  });
  const masked = (op: number, payload: string | Uint8Array, fin = true) =>
    encodeFrame(op, payload, { mask: true, fin });
  const closeWith = (c: number, reason: Uint8Array = new Uint8Array(0)) => {
    const p = new Uint8Array(2 + reason.length);
    p[0] = c >> 8;
    p[1] = c & 0xff;
    p.set(reason, 2);
    return masked(0x8, p);
  };
  const badUtf8 = new Uint8Array([0x68, 0xc3, 0x28]);
  const bigHeader = (len: bigint) => {
    const h = new Uint8Array(14);
    h[0] = 0x82;
    h[1] = 0xff;
    new DataView(h.buffer).setBigUint64(2, len);
    h.set([1, 2, 3, 4], 10);
    return h;
  };
  const fragments = (count: number, bytesEach: number) =>
    concat([
      masked(0x2, new Uint8Array(bytesEach), false),
      ...Array.from(
        { length: count - 1 },
        (_, i) => masked(0x0, new Uint8Array(bytesEach), i === count - 2),
      ),
    ]);
  const attacks: Attack[] = [
    frame("an unmasked client frame", encodeFrame(0x1, "hi", { mask: false }), code(1002)),
    frame("RSV1 set (no extension agreed)", withRsv(masked(0x1, "hi"), 0x40), code(1002)),
    frame("RSV2 set", withRsv(masked(0x1, "hi"), 0x20), code(1002)),
    frame("RSV3 set", withRsv(masked(0x1, "hi"), 0x10), code(1002)),
    frame("reserved data opcode 0x3", masked(0x3, "hi"), code(1002)),
    frame("reserved data opcode 0x7", masked(0x7, "hi"), code(1002)),
    frame("reserved control opcode 0xB", masked(0xb, ""), code(1002)),
    frame("reserved control opcode 0xF", masked(0xf, ""), code(1002)),
    frame("invalid UTF-8 in a text message", masked(0x1, badUtf8), code(1007)),
    frame(
      "invalid UTF-8 split across fragments",
      concat([masked(0x1, new Uint8Array([0x68, 0xe2, 0x82]), false), masked(0x0, badUtf8)]),
      code(1007),
    ),
    frame("invalid UTF-8 in a close reason", closeWith(1000, badUtf8), code(1007)),
    frame(
      `a message of exactly --max-payload (${maxPayload} B): served`,
      masked(0x2, pseudoRandomBytes(maxPayload, 3)),
      new RegExp(`^1 message back \\(${maxPayload} B\\)${IDLE_MAYBE}, still open$`),
    ),
    frame(
      `a message one byte over --max-payload (${maxPayload + 1} B)`,
      masked(0x2, new Uint8Array(maxPayload + 1)),
      code(1009),
    ),
    frame("a frame header announcing 1 TiB (no payload sent)", bigHeader(1n << 40n), code(1009)),
    frame("a 64-bit length with its top bit set", bigHeader(1n << 63n), code(1002)),
    frame(
      "1024 one-byte fragments (maxFragments): served",
      fragments(1024, 1),
      new RegExp(`^1 message back \\(1024 B\\)${IDLE_MAYBE}, still open$`),
    ),
    frame("a stream of 1025 empty fragments", fragments(1025, 0), code(1009)),
    frame("a 1-byte close payload", masked(0x8, new Uint8Array([3])), code(1002)),
    frame("a ping with FIN clear (fragmented control)", masked(0x9, "x", false), code(1002)),
    frame("a ping over 125 bytes", masked(0x9, "x".repeat(126)), code(1002)),
    frame("a continuation with nothing to continue", masked(0x0, "x"), code(1002)),
    frame(
      "a new message inside a fragmented one",
      concat([masked(0x1, "a", false), masked(0x1, "b")]),
      code(1002),
    ),
    frame("a valid close code (4000): echoed", closeWith(4000), /^close 4000, closed \(FIN\)$/),
  ];
  for (const c of [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000]) {
    attacks.push(frame(`a close frame with invalid code ${c}`, closeWith(c), code(1002)));
  }
  attacks.push({
    name: "a ping flood (20,000 pings, pongs never read)",
    // Every ping answered; the peer goes silent after the flood, so the idle
    // timeout (0.5 s) may start closing it before the look ends.
    expect: both(/^20000 pongs(, close 1001 "idle timeout")?, still open$/),
    run: (t) =>
      hit(t, "upgraded", async (peer) => {
        const ping = masked(0x9, "flood");
        const batch = concat(Array.from({ length: 1000 }, () => ping));
        for (let i = 0; i < 20; i++) await peer.write(batch);
      }, { timeout: 1500 }),
  });
  return attacks;
}
