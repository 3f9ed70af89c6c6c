// For the Redis bus tests: a throwaway redis-server on a free port (no
// persistence), killable and restartable on the same port (the one in
// support/redis_server.ts), and ws-server processes whose stderr can be
// waited on line by line.
import { RedisServer } from "./support/redis_server.ts";
import { type Program, startProgram } from "./support/process.ts";

export { freePort } from "./support/ports.ts";
export { haveRedisServer as haveRedis } from "./support/redis_server.ts";

/**
 * A redis-server of our own, plain TCP: a {@linkcode RedisServer} (url,
 * port, running, restart, kill, command — after AUTH with its
 * `--requirepass` —, subscribers, dispose).
 */
export type RedisProcess = RedisServer;

export const RedisProcess = {
  /** Starts one on a free port (with `extra` arguments) and waits until it answers PING. */
  start(extra: string[] = []): Promise<RedisProcess> {
    return RedisServer.start({ args: extra });
  },
};

/** A ws-server process, with its stderr readable line by line as it comes. */
export interface WsServerProcess extends Program {
  /** Resolves with the first stderr line (from `from` on) matching `re`. */
  waitFor(re: RegExp, from?: number): Promise<string>;
}

export const WsServerProcess = {
  /**
   * Starts `cli/ws_server.ts` with `args` and waits for its listening line;
   * rejects (with its `code` and `stderr`) if it exits first.
   */
  async start(args: string[]): Promise<WsServerProcess> {
    const server = await startProgram({
      name: "ws-server",
      args: ["run", "-A", "--quiet", "cli/ws_server.ts", ...args],
      listenTimeout: 60_000,
      killAfter: 60_000,
    });
    return Object.assign(server, { waitFor: server.waitForStderr });
  },
};

/** The child pids of `pid` (Linux: /proc), or `undefined` where there is no /proc. */
export function childPids(pid: number): number[] | undefined {
  try {
    const text = Deno.readTextFileSync(`/proc/${pid}/task/${pid}/children`);
    return text.trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return undefined;
  }
}

/** Whether a process is alive (not gone, not a zombie); Linux /proc. */
export function alive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return !/^\d+ \(.*\) [ZX] /.test(stat);
  } catch {
    return false;
  }
}
