// Shared by the tests: spawning netkit's programs as a user would, with the
// real Deno binary (the npm launcher does not pass signals on).
import { BufferedReader } from "../io/buffered_reader.ts";

/** The repository root, where `deno.json` is. */
export const ROOT = new URL("../", import.meta.url).pathname;

/** A finished program run. */
export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
  stdoutBytes: Uint8Array;
}

/** Runs `cli/<name>.ts` (or any script path) with `args` to completion. */
export async function runProgram(
  script: string,
  args: string[],
  { stdin, env, timeout = 30_000 }: {
    stdin?: Uint8Array | string;
    env?: Record<string, string>;
    timeout?: number;
  } = {},
): Promise<RunResult> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", script, ...args],
    cwd: ROOT,
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", ...env },
  }).spawn();
  const killer = setTimeout(() => child.kill("SIGKILL"), timeout);
  try {
    if (stdin !== undefined) {
      const writer = child.stdin.getWriter();
      await writer.write(typeof stdin === "string" ? new TextEncoder().encode(stdin) : stdin);
      await writer.close();
    }
    const out = await child.output();
    return {
      code: out.code,
      stdout: new TextDecoder().decode(out.stdout),
      stderr: new TextDecoder().decode(out.stderr),
      stdoutBytes: out.stdout,
    };
  } finally {
    clearTimeout(killer);
  }
}

/** A server program running in the background. */
export interface RunningServer extends AsyncDisposable {
  /** The line it printed on stdout. */
  line: string;
  /** The port from that line. */
  port: number;
  /** The process. */
  child: Deno.ChildProcess;
  /** Sends a signal and waits for the exit; resolves to the exit code, stdout after the line, and stderr. */
  stop(signal?: Deno.Signal): Promise<{ code: number; stdout: string; stderr: string }>;
}

/** Starts a server program and waits for its listening line. */
export async function startServer(script: string, args: string[]): Promise<RunningServer> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", script, ...args],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const stderr = new Response(child.stderr).text();
  const killer = setTimeout(() => child.kill("SIGKILL"), 60_000);
  const stdout = new BufferedReader(child.stdout);
  const line = await stdout.readLine({ maxBytes: 4096 });
  if (line === null) {
    const status = await child.status;
    clearTimeout(killer);
    await stdout.cancel();
    throw new Error(`${script} exited with ${status.code} before listening:\n${await stderr}`);
  }
  const port = Number(/:(\d+)$/.exec(line)?.[1]);
  let stopped: Promise<{ code: number; stdout: string; stderr: string }> | undefined;
  const stop = (signal: Deno.Signal = "SIGTERM") =>
    stopped ??= (async () => {
      try {
        child.kill(signal);
      } catch {
        // Already exited.
      }
      const rest = (async () => {
        let text = "";
        const decoder = new TextDecoder();
        for (let chunk; (chunk = await stdout.readChunk()) !== null;) {
          text += decoder.decode(chunk, { stream: true });
        }
        return text;
      })();
      const status = await child.status;
      clearTimeout(killer);
      return { code: status.code, stdout: await rest, stderr: await stderr };
    })();
  return { line, port, child, stop, [Symbol.asyncDispose]: async () => void (await stop()) };
}

/** Reads a whole stream into one byte array. */
export async function readAll(readable: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  return new Uint8Array(await new Response(readable).arrayBuffer());
}

/** Deterministic pseudo-random bytes. */
export function pseudoRandomBytes(n: number, seed = 1): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** Resolves after `ms` milliseconds. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
