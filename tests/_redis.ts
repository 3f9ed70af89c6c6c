// For the Redis bus tests: a throwaway redis-server on a free port (no
// persistence), killable and restartable on the same port, and ws-server
// processes whose stderr can be waited on line by line.
import { BufferedReader } from "../io/buffered_reader.ts";
import { encodeCommand, replyText, RespReader, type RespValue } from "../redis/_resp.ts";
import { delay } from "./support/time.ts";
import { type Program, startProgram } from "./support/process.ts";
import { hasTool } from "./support/tools.ts";

/** Whether `redis-server` is installed (see support/tools.ts). */
export function haveRedis(): boolean {
  return hasTool("redis-server");
}

/** A free TCP port on 127.0.0.1 (free when asked; bind it soon). */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** A redis-server of our own. */
export class RedisProcess implements AsyncDisposable {
  readonly port: number;
  #child: Deno.ChildProcess | undefined;
  #extra: string[];
  #password: string | undefined;

  private constructor(port: number, extra: string[]) {
    this.port = port;
    this.#extra = extra;
    const at = extra.indexOf("--requirepass");
    this.#password = at >= 0 ? extra[at + 1] : undefined;
  }

  /** Starts one on a free port (with `extra` arguments) and waits until it answers PING. */
  static async start(extra: string[] = []): Promise<RedisProcess> {
    for (let attempt = 0;; attempt++) {
      const redis = new RedisProcess(freePort(), extra);
      try {
        await redis.restart();
        return redis;
      } catch (err) {
        if (attempt >= 3) throw err;
      }
    }
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  get running(): boolean {
    return this.#child !== undefined;
  }

  /** (Re)starts it on the same port. */
  async restart(): Promise<void> {
    if (this.#child !== undefined) throw new Error("redis-server is already running");
    const child = new Deno.Command("redis-server", {
      args: [
        "--port",
        String(this.port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--protected-mode",
        "no",
        ...this.#extra,
      ],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    this.#child = child;
    for (let i = 0; i < 200; i++) {
      const exited = await Promise.race([
        child.status.then(() => true),
        delay(25).then(() => false),
      ]);
      if (exited) {
        this.#child = undefined;
        throw new Error(`redis-server exited at start (port ${this.port} taken?)`);
      }
      try {
        if (await this.command(["PING"]) === "PONG") return;
      } catch {
        // Not listening yet.
      }
    }
    await this.kill();
    throw new Error("redis-server did not answer PING within 5s");
  }

  /** Kills it (SIGKILL: as a crash would) and waits for the exit. */
  async kill(signal: Deno.Signal = "SIGKILL"): Promise<void> {
    const child = this.#child;
    if (child === undefined) return;
    this.#child = undefined;
    try {
      child.kill(signal);
    } catch {
      // Already gone.
    }
    await child.status;
  }

  /** Runs one command on a connection of its own and returns the reply. */
  async command(args: (string | Uint8Array)[]): Promise<RespValue | undefined> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: this.port });
    try {
      const auth = this.#password === undefined ? [] : [["AUTH", this.#password]];
      const reader = new RespReader(new BufferedReader(conn).readable, { maxBulk: 1 << 20 });
      let reply: RespValue | undefined;
      for (const command of [...auth, args]) {
        const bytes = encodeCommand(command);
        let off = 0;
        while (off < bytes.length) off += await conn.write(bytes.subarray(off));
        reply = await reader.read();
      }
      return reply;
    } finally {
      conn.close();
    }
  }

  /** `PUBSUB NUMSUB channel`: how many connections subscribe to it. */
  async subscribers(channel: string): Promise<number> {
    const reply = await this.command(["PUBSUB", "NUMSUB", channel]);
    if (!Array.isArray(reply)) throw new Error(`PUBSUB NUMSUB: ${replyText(reply)}`);
    return Number(reply[1]);
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.kill();
  }
}

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
