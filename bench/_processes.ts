/**
 * The bench's child processes: every server and command it starts goes
 * through the shared launcher (tests/support/process.ts) with one abort
 * signal, so a Ctrl-C or an error takes them all down ({@linkcode killAll}).
 *
 * @module
 */
import {
  type Program,
  ProgramStartError,
  runCommand,
  startProgram,
} from "../tests/support/process.ts";
import type { Ctx, ServerDef } from "./_types.ts";

const aborter = new AbortController();
/** Every exit still pending, to wait for once they are killed. */
const pending = new Set<Promise<unknown>>();

function track<T>(promise: Promise<T>): Promise<T> {
  pending.add(promise);
  const settled = () => void pending.delete(promise);
  promise.then(settled, settled);
  return promise;
}

/** SIGKILLs every child still running and waits (briefly, 2 s at most) until they are reaped. */
export async function killAll(): Promise<void> {
  aborter.abort();
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    Promise.allSettled([...pending]),
    new Promise((resolve) => timer = setTimeout(resolve, 2000)),
  ]);
  clearTimeout(timer);
}

/** Runs a command to completion with a time limit; output is collected. */
export function run(
  cmd: string,
  args: string[],
  timeoutMs: number,
): Promise<{ code: number; stdout: string; stderr: string; timedOut: boolean }> {
  return track(runCommand({ command: cmd, args, timeout: timeoutMs, signal: aborter.signal }));
}

/** The Bun executable to run Bun servers with (set by the harness once found). */
let bunPath: string | undefined;

/** Sets the Bun executable {@linkcode startServer} uses for `runtime: "bun"`. */
export function useBun(path: string): void {
  bunPath = path;
}

/**
 * Starts a server and waits for its listening line, through `wrap` (e.g.
 * `sh -c 'ulimit -n N; exec "$@"'`) and pinned to `pinCpu` with taskset when
 * given. Its stderr is kept (the last lines) for failure reports.
 */
export async function startServer(
  def: ServerDef,
  ctx: Ctx,
  pinCpu: number | undefined,
  wrap: string[],
): Promise<Program> {
  const argv = def.runtime === "node"
    ? ["node", def.script, ...def.args(ctx)]
    : def.runtime === "bun"
    ? [bunPath ?? "bun", def.script, ...def.args(ctx)]
    : [Deno.execPath(), "run", "-A", def.script, ...def.args(ctx)];
  const [command, ...args] = [
    ...wrap,
    ...(pinCpu === undefined ? argv : ["taskset", "-c", String(pinCpu), ...argv]),
  ];
  try {
    const server = await startProgram({
      command,
      args,
      name: def.label,
      maxStderrLines: 100,
      signal: aborter.signal,
    });
    track(server.status);
    return server;
  } catch (err) {
    if (!(err instanceof ProgramStartError)) throw err;
    throw new Error(
      `${def.label}: ${err.reason}; stderr: ${err.stderr.trim().slice(-500) || "(empty)"}`,
    );
  }
}

/** SIGTERM, then SIGKILL after 3 s. */
export async function stopServer(server: Program): Promise<void> {
  await server.stop("SIGTERM", { timeout: 3000 });
}
