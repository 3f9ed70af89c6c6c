/**
 * The server under attack: one of netkit's server programs (`tcp-server`,
 * `tls-server` with either engine, `ws-server` over ws or wss), spawned as a
 * user runs it on a free port, with its stderr kept line by line so each
 * attack can be matched to what the server logged about it (by the
 * attacker's local port).
 *
 * @module
 */
import { writeDevCerts } from "../../../certs/mod.ts";
import { startProgram } from "../process.ts";

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
  const program = await startProgram({
    args: ["run", "-A", "--quiet", PROGRAMS[kind], ...full],
    listenTimeout: 60_000,
    killAfter: 120_000,
  });
  const log = program.stderrLines;
  const about = (p: number) => new RegExp(`127\\.0\\.0\\.1:${p}\\b`);
  const linesFor = (p: number) =>
    log.filter((l) => about(p).test(l) && !/: open 127\.0\.0\.1:/.test(l));
  const stop = (signal: Deno.Signal | null = "SIGTERM") => program.stop(signal);
  return {
    kind,
    port: program.port,
    caPem: certs.caPem,
    child: program.child,
    log,
    alive: async () => {
      await new Promise((r) => setTimeout(r, 0));
      return program.exited === undefined;
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
