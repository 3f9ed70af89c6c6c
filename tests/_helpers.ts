// Shared by the tests: netkit's programs run as a user runs them, with the
// real Deno binary (the npm launcher does not pass signals on), through the
// one launcher in support/process.ts.
import { type Program, ROOT, runCommand, type RunResult, startProgram } from "./support/process.ts";

export { ROOT };
export type { RunResult };
export { pseudoRandomBytes } from "./support/bytes.ts";
export { delay } from "./support/time.ts";

/** Runs `cli/<name>.ts` (or any script path) with `args` to completion. */
export function runProgram(
  script: string,
  args: string[],
  { stdin, holdStdinUntil, env, timeout = 30_000 }: {
    stdin?: Uint8Array | string;
    /** Keep stdin open until stdout shows this (see {@linkcode runCommand}). */
    holdStdinUntil?: string;
    env?: Record<string, string>;
    timeout?: number;
  } = {},
): Promise<RunResult> {
  return runCommand({
    args: ["run", "-A", "--quiet", script, ...args],
    stdin,
    holdStdinUntil,
    env,
    timeout,
  });
}

/** A server program running in the background (see {@linkcode Program}). */
export type RunningServer = Program;

/** Starts a server program and waits for its listening line. */
export function startServer(script: string, args: string[]): Promise<RunningServer> {
  return startProgram({
    args: ["run", "-A", "--quiet", script, ...args],
    listenTimeout: 60_000,
    killAfter: 60_000,
  });
}

/** Reads a whole stream into one byte array. */
export async function readAll(readable: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  return new Uint8Array(await new Response(readable).arrayBuffer());
}
