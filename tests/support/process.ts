/**
 * The one launcher for the programs that tests, bench and soak start: spawn a
 * program, wait (with a deadline) for the `listening on <scheme>://<host>:<port>`
 * line every netkit server prints, collect stderr line by line as it comes,
 * send signals, and stop it with a timeout — always cleaning up (every pipe
 * read to its end or cancelled, every timer cleared, the process reaped) so
 * Deno's test sanitizers pass. {@linkcode runCommand} is the same for a
 * program run to completion.
 *
 * It depends on nothing but Deno: the library it tests may be mid-change.
 *
 * @example Start a server, read its address, stop it
 * ```ts
 * import assert from "node:assert/strict";
 * import { startProgram } from "./process.ts";
 *
 * const script = `
 *   // The handler first: a server's handlers are in place before its listening line.
 *   Deno.addSignalListener("SIGTERM", () => { console.error("bye"); Deno.exit(0); });
 *   const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 *   console.log("listening on tcp://127.0.0.1:" + l.addr.port);
 *   for await (const c of l) c.close();
 * `;
 * await using server = await startProgram({ args: ["eval", script] });
 * assert.equal(server.address.scheme, "tcp");
 * assert.ok(server.port > 0);
 * const { code, stderr } = await server.stop();
 * assert.equal(code, 0);
 * assert.equal(stderr, "bye\n");
 * ```
 *
 * @module
 */

/** The repository root (with a trailing slash): the default working directory. */
export const ROOT: string = new URL("../../", import.meta.url).pathname;

import { concat } from "./bytes.ts";
import { settlesWithin } from "./time.ts";

const encoder = new TextEncoder();

/** Where a server said it listens. */
export interface ListeningAddress {
  /** `tcp`, `tls`, `ws` or `wss`. */
  scheme: "tcp" | "tls" | "ws" | "wss";
  /** The host as printed, without IPv6 brackets (`::1`, `127.0.0.1`, `localhost`). */
  hostname: string;
  /** The port (never 0: a server prints the port it got). */
  port: number;
}

const LISTENING =
  /^listening on (tcp|tls|ws|wss):\/\/(\[[0-9A-Fa-f:.%\w-]+\]|[^\s:/[\]]+):(\d{1,5})$/;

/**
 * Parses a server's listening line (`listening on tls://[::1]:7443`), as the
 * contract fixes it: one of four schemes, IPv6 in brackets, no path. Returns
 * `undefined` for anything else.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseListeningLine } from "./process.ts";
 *
 * assert.deepEqual(parseListeningLine("listening on tcp://[::1]:7000"), {
 *   scheme: "tcp",
 *   hostname: "::1",
 *   port: 7000,
 * });
 * assert.equal(parseListeningLine("listening on ws://127.0.0.1:8080/chat"), undefined);
 * ```
 */
export function parseListeningLine(line: string): ListeningAddress | undefined {
  const m = LISTENING.exec(line);
  if (m === null) return undefined;
  const port = Number(m[3]);
  if (port < 1 || port > 65535) return undefined;
  const host = m[2];
  return {
    scheme: m[1] as ListeningAddress["scheme"],
    hostname: host.startsWith("[") ? host.slice(1, -1) : host,
    port,
  };
}

/** What the launchers share. */
export interface ProgramOptions {
  /** The executable. @default {Deno.execPath()} */
  command?: string;
  /** Its arguments, e.g. `["run", "-A", "--quiet", "cli/tcp_server.ts", "--port", "0"]`. */
  args: string[];
  /** The working directory. @default {ROOT} (the repository root) */
  cwd?: string;
  /** Added to the inherited environment, after `NO_COLOR=1` (so error text has no colour codes). */
  env?: Record<string, string>;
  /** Aborting it kills the process (SIGKILL): the way a runner takes everything down. */
  signal?: AbortSignal;
}

/** Options for {@linkcode startProgram}. */
export interface StartOptions extends ProgramOptions {
  /** Named in error messages. @default {the first argument ending in .ts/.mjs/.js, else the command} */
  name?: string;
  /** `"piped"`: write to {@linkcode Program.child}`.stdin` (closed by `stop()` unless locked). @default {"null"} */
  stdin?: "null" | "piped";
  /** `"inherit"` shows the server's log instead of collecting it. @default {"piped"} */
  stderr?: "piped" | "inherit" | "null";
  /** How long to wait for the listening line, in ms; then the process is killed and it rejects. @default {30_000} */
  listenTimeout?: number;
  /** SIGKILL the process this many ms after the start whatever happens (0: never). @default {0} */
  killAfter?: number;
  /** Keep only the last N stderr lines in {@linkcode Program.stderrLines} (long runs). @default {Infinity} */
  maxStderrLines?: number;
  /** Called with each stderr line (without its newline) as it arrives. */
  onStderrLine?: (line: string) => void;
}

/** How a started program ended. */
export interface Stopped {
  /** The exit code (128 + n when killed by signal n). */
  code: number;
  /** The signal that ended it, if one did. */
  signal: Deno.Signal | null;
  /** Milliseconds from `stop()` to the exit. */
  ms: number;
  /** What it printed on stdout after the listening line. */
  stdout: string;
  /** Its stderr (the kept lines), with the final newline if it wrote one. */
  stderr: string;
}

/** Options for {@linkcode Program.stop}. */
export interface StopOptions {
  /** After this many ms without an exit, SIGKILL. @default {30_000} */
  timeout?: number;
}

/** Why a program could not be started. */
export class ProgramStartError extends Error {
  /** What went wrong, e.g. `exited with code 1 before listening`. */
  readonly reason: string;
  /** The exit code when it exited before listening, else `undefined`. */
  readonly code: number | undefined;
  /** Its stderr up to then. */
  readonly stderr: string;
  /** Its first stdout line when that was not a listening line. */
  readonly line: string | undefined;

  constructor(
    name: string,
    { reason, code, stderr, line }: {
      reason: string;
      code?: number;
      stderr: string;
      line?: string;
    },
  ) {
    super(`${name} ${reason}; stderr:\n${stderr.trimEnd() || "(empty)"}`);
    this.name = "ProgramStartError";
    this.reason = reason;
    this.code = code;
    this.stderr = stderr;
    this.line = line;
  }
}

/** A program that printed its listening line; dispose (or `stop()`) it. */
export interface Program extends AsyncDisposable {
  readonly child: Deno.ChildProcess;
  readonly pid: number;
  /** The listening line as printed. */
  readonly line: string;
  /** The address from that line. */
  readonly address: ListeningAddress;
  /** `address.port`. */
  readonly port: number;
  /** The stderr lines so far (a live array; the last `maxStderrLines`). */
  readonly stderrLines: string[];
  /** The exit status once it has exited. */
  readonly exited: Deno.CommandStatus | undefined;
  /** Resolves at the exit. */
  readonly status: Promise<Deno.CommandStatus>;
  /** The stderr kept so far, as text. */
  stderr(): string;
  /**
   * Resolves with the first stderr line, from index `from` of
   * {@linkcode stderrLines} on, that matches `re`; rejects when stderr ends
   * without one.
   */
  waitForStderr(re: RegExp, from?: number): Promise<string>;
  /** Sends `signal` without waiting; `false` when it has exited already. */
  kill(signal: Deno.Signal): boolean;
  /**
   * Sends `signal` (`null`: none, it was signalled already) and waits for the
   * exit, SIGKILLing it after `timeout`. Idempotent: later calls get the first
   * call's result.
   */
  stop(signal?: Deno.Signal | null, options?: StopOptions): Promise<Stopped>;
}

type Waiter = {
  re: RegExp;
  from: number;
  resolve: (line: string) => void;
  reject: (err: Error) => void;
};

function killQuietly(child: Deno.ChildProcess, signal: Deno.Signal): boolean {
  try {
    child.kill(signal);
    return true;
  } catch {
    // Exited already.
    return false;
  }
}

function nameOf(options: StartOptions): string {
  return options.name ?? options.args.find((a) => /\.(ts|mjs|js)$/.test(a)) ??
    options.command ?? "deno";
}

/** Reads a byte stream as text, line by line, to its end; a final unterminated line counts. */
async function pumpLines(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  onLine: (line: string) => void,
): Promise<boolean> {
  const decoder = new TextDecoder();
  let partial = "";
  try {
    for (let r; !(r = await reader.read()).done;) {
      partial += decoder.decode(r.value, { stream: true });
      const lines = partial.split("\n");
      partial = lines.pop()!;
      for (const line of lines) onLine(line.endsWith("\r") ? line.slice(0, -1) : line);
    }
  } catch {
    // Cancelled (a grandchild kept the pipe open past the timeout).
  }
  partial += decoder.decode();
  if (partial !== "") onLine(partial);
  return partial === "";
}

/** At most this much of stdout after the listening line is kept (servers print nothing more). */
const MAX_STDOUT = 1 << 20;
/** A first line longer than this is not a listening line. */
const MAX_LINE = 4096;
/** What the wait for the listening line resolves to at its deadline. */
const TIMEOUT = Symbol("timeout");

/**
 * Starts a program and waits for its listening line. Rejects with a
 * {@linkcode ProgramStartError} (carrying its stderr, and its exit code when it
 * exited) when it exits first, prints something else, or says nothing within
 * `listenTimeout` — having killed and reaped it.
 */
export async function startProgram(options: StartOptions): Promise<Program> {
  const name = nameOf(options);
  const maxLines = options.maxStderrLines ?? Infinity;
  const child = new Deno.Command(options.command ?? Deno.execPath(), {
    args: options.args,
    cwd: options.cwd ?? ROOT,
    env: { NO_COLOR: "1", ...options.env },
    stdin: options.stdin ?? "null",
    stdout: "piped",
    stderr: options.stderr ?? "piped",
  }).spawn();

  let exited: Deno.CommandStatus | undefined;
  const status = child.status.then((s) => exited = s);
  const killer = options.killAfter
    ? setTimeout(() => killQuietly(child, "SIGKILL"), options.killAfter)
    : undefined;
  const onAbort = () => killQuietly(child, "SIGKILL");
  options.signal?.addEventListener("abort", onAbort, { once: true });
  if (options.signal?.aborted) onAbort();

  // stderr: line by line, to waiters and the callback, kept in a (bounded) array.
  const stderrLines: string[] = [];
  const waiters: Waiter[] = [];
  let stderrEndsWithNewline = true;
  let stderrReader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  let stderrDone: Promise<void> = Promise.resolve();
  let stderrEnded = false;
  let lineCount = 0;
  if ((options.stderr ?? "piped") === "piped") {
    stderrReader = child.stderr.getReader();
    stderrDone = pumpLines(stderrReader, (line) => {
      stderrLines.push(line);
      lineCount++;
      if (stderrLines.length > maxLines) stderrLines.shift();
      options.onStderrLine?.(line);
      for (const w of [...waiters]) {
        if (lineCount - 1 >= w.from && w.re.test(line)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(line);
        }
      }
    }).then((endedWithNewline) => {
      stderrEndsWithNewline = endedWithNewline;
      stderrEnded = true;
      for (const w of waiters.splice(0)) {
        w.reject(new Error(`${name}: stderr ended without a line matching ${w.re}`));
      }
    });
  }
  const stderrText = () =>
    stderrLines.length === 0
      ? ""
      : stderrLines.join("\n") + (stderrEndsWithNewline || !stderrEnded ? "\n" : "");

  // stdout: the first line, then drained (a server prints nothing more, but must never block).
  const stdoutReader = child.stdout.getReader();
  let buffered = new Uint8Array(0);
  let rest = "";
  const decoder = new TextDecoder();
  const firstLine = (async (): Promise<string | undefined> => {
    for (;;) {
      const nl = buffered.indexOf(0x0a);
      if (nl >= 0) {
        const line = decoder.decode(buffered.subarray(0, nl)).replace(/\r$/, "");
        rest = decoder.decode(buffered.subarray(nl + 1), { stream: true });
        return line;
      }
      if (buffered.length > MAX_LINE) return decoder.decode(buffered.subarray(0, MAX_LINE));
      const r = await stdoutReader.read().catch(() => ({ done: true as const, value: undefined }));
      if (r.done) return buffered.length > 0 ? decoder.decode(buffered) : undefined;
      const joined = new Uint8Array(buffered.length + r.value.length);
      joined.set(buffered);
      joined.set(r.value, buffered.length);
      buffered = joined;
    }
  })();
  let listenTimer: ReturnType<typeof setTimeout> | undefined;
  const listenTimeout = options.listenTimeout ?? 30_000;
  const line = await Promise.race([
    firstLine,
    new Promise<typeof TIMEOUT>((resolve) =>
      listenTimer = setTimeout(() => resolve(TIMEOUT), listenTimeout)
    ),
  ]);
  clearTimeout(listenTimer);
  const stdoutDone = (async () => {
    if (line === TIMEOUT) await firstLine;
    try {
      for (let r; !(r = await stdoutReader.read()).done;) {
        if (rest.length < MAX_STDOUT) rest += decoder.decode(r.value, { stream: true });
      }
    } catch {
      // Cancelled.
    }
    rest += decoder.decode();
  })();

  /** Waits for the exit, then for both pipes (cancelling them after `timeout`). */
  const reap = async (timeout: number) => {
    if (!(await settlesWithin(status, timeout))) {
      killQuietly(child, "SIGKILL");
      await status;
    }
    clearTimeout(killer);
    options.signal?.removeEventListener("abort", onAbort);
    if (options.stdin === "piped" && !child.stdin.locked) await child.stdin.close().catch(() => {});
    // A grandchild that inherited a pipe can hold it open: wait, but not forever.
    if (!(await settlesWithin(Promise.all([stdoutDone, stderrDone]), timeout))) {
      await stdoutReader.cancel().catch(() => {});
      await stderrReader?.cancel().catch(() => {});
      await Promise.all([stdoutDone, stderrDone]);
    }
    return (await status) as Deno.CommandStatus;
  };

  const address = typeof line === "string" ? parseListeningLine(line) : undefined;
  if (address === undefined) {
    if (line === TIMEOUT || exited === undefined) killQuietly(child, "SIGKILL");
    const s = await reap(5_000);
    const why = line === TIMEOUT
      ? `printed no listening line within ${listenTimeout / 1000} s`
      : line === undefined
      ? `exited with code ${s.code} before listening`
      : `printed "${line}" instead of a listening line`;
    throw new ProgramStartError(name, {
      reason: why,
      code: line === TIMEOUT ? undefined : s.code,
      stderr: stderrText(),
      line: typeof line === "string" ? line : undefined,
    });
  }

  let stopped: Promise<Stopped> | undefined;
  const program: Program = {
    child,
    pid: child.pid,
    line: line as string,
    address,
    port: address.port,
    stderrLines,
    get exited() {
      return exited;
    },
    status: status as Promise<Deno.CommandStatus>,
    stderr: stderrText,
    waitForStderr(re, from = 0) {
      const offset = lineCount - stderrLines.length;
      const seen = stderrLines.slice(Math.max(0, from - offset)).find((l) => re.test(l));
      if (seen !== undefined) return Promise.resolve(seen);
      if (stderrEnded) {
        return Promise.reject(new Error(`${name}: stderr ended without a line matching ${re}`));
      }
      return new Promise((resolve, reject) => waiters.push({ re, from, resolve, reject }));
    },
    kill: (signal) => exited === undefined && killQuietly(child, signal),
    stop(signal = "SIGTERM", { timeout = 30_000 } = {}) {
      return stopped ??= (async () => {
        const started = performance.now();
        if (signal !== null && exited === undefined) killQuietly(child, signal);
        const s = await reap(timeout);
        return {
          code: s.code,
          signal: s.signal,
          ms: performance.now() - started,
          stdout: rest,
          stderr: stderrText(),
        };
      })();
    },
    async [Symbol.asyncDispose]() {
      await program.stop();
    },
  };
  return program;
}

/** Options for {@linkcode runCommand}. */
export interface RunOptions extends ProgramOptions {
  /** Written to its stdin, which is then closed; without it stdin is `/dev/null`. */
  stdin?: Uint8Array | string;
  /**
   * With `stdin`: keep stdin open until stdout shows this text (or ends), and
   * only then close it. For a peer that stops answering once its input ends:
   * a proxy that tears the tunnel down at the client's half-close, `openssl
   * s_client` reading stdin only after its handshake.
   * @default {undefined: stdin is closed as soon as it is written}
   */
  holdStdinUntil?: string;
  /** SIGKILL after this many ms (the result then says `timedOut`). @default {30_000} */
  timeout?: number;
}

/** A finished run. */
export interface RunResult {
  code: number;
  signal: Deno.Signal | null;
  stdout: string;
  stderr: string;
  stdoutBytes: Uint8Array;
  /** Whether it was killed for taking longer than `timeout`. */
  timedOut: boolean;
}

/**
 * Runs a program to completion and collects its output. A missing executable
 * rejects with `Deno.errors.NotFound`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { runCommand } from "./process.ts";
 *
 * const run = await runCommand({ args: ["eval", "console.log(await new Response(Deno.stdin.readable).text())"], stdin: "hi" });
 * assert.equal(run.code, 0);
 * assert.equal(run.stdout, "hi\n");
 * ```
 */
export async function runCommand(options: RunOptions): Promise<RunResult> {
  const child = new Deno.Command(options.command ?? Deno.execPath(), {
    args: options.args,
    cwd: options.cwd ?? ROOT,
    env: { NO_COLOR: "1", ...options.env },
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let timedOut = false;
  const killer = setTimeout(() => {
    timedOut = killQuietly(child, "SIGKILL");
  }, options.timeout ?? 30_000);
  const onAbort = () => killQuietly(child, "SIGKILL");
  options.signal?.addEventListener("abort", onAbort, { once: true });
  if (options.signal?.aborted) onAbort();
  try {
    const stderr = new Response(child.stderr).arrayBuffer();
    const { promise: seen, resolve: see } = Promise.withResolvers<void>();
    if (options.holdStdinUntil === undefined) see();
    const stdout = readAndWatch(child.stdout, options.holdStdinUntil, see);
    if (options.stdin !== undefined) {
      const writer = child.stdin.getWriter();
      const bytes = typeof options.stdin === "string"
        ? encoder.encode(options.stdin)
        : options.stdin;
      // A program that exits without reading all of it is not an error here.
      await writer.write(bytes).catch(() => {});
      await seen;
      await writer.close().catch(() => {});
    }
    const [status, stdoutBytes, stderrBytes] = await Promise.all([child.status, stdout, stderr]);
    const decoder = new TextDecoder();
    return {
      code: status.code,
      signal: status.signal,
      stdout: decoder.decode(stdoutBytes),
      stderr: decoder.decode(stderrBytes),
      stdoutBytes,
      timedOut,
    };
  } finally {
    clearTimeout(killer);
    options.signal?.removeEventListener("abort", onAbort);
  }
}

/** Reads `stream` to its end; calls `onSeen` once `text` has shown in it, or at the end. */
async function readAndWatch(
  stream: ReadableStream<Uint8Array>,
  text: string | undefined,
  onSeen: () => void,
): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  const decoder = new TextDecoder();
  let decoded = "";
  let watching = text !== undefined;
  try {
    for await (const chunk of stream) {
      chunks.push(chunk);
      if (!watching) continue;
      decoded += decoder.decode(chunk, { stream: true });
      if (decoded.includes(text!)) {
        watching = false;
        onSeen();
      }
    }
  } finally {
    onSeen();
  }
  return concat(chunks);
}
