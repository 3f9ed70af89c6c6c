/**
 * One throwaway `redis-server` of the tests' own: on a free port on
 * 127.0.0.1, without persistence (unless its arguments ask for it),
 * killable and restartable on the same port, killed on dispose. Any
 * arguments can be added (TLS, a password, cluster mode);
 * {@linkcode redisCommand} talks to one without a client library.
 *
 * @module
 */
import { tmpdir } from "node:os";
import { BufferedReader } from "../../io/buffered_reader.ts";
import { RedisDownError } from "../../redis/_client.ts";
import { encodeCommand, replyText, RespReader, type RespValue } from "../../redis/_resp.ts";
import { freePort } from "./ports.ts";
import { settlesWithin } from "./time.ts";
import { hasTool } from "./tools.ts";

/**
 * Whether `redis-server` is installed (tests that need it are ignored otherwise).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { haveRedisServer } from "./redis_server.ts";
 *
 * assert.equal(typeof haveRedisServer(), "boolean");
 * ```
 */
export function haveRedisServer(): boolean {
  return hasTool("redis-server");
}

/**
 * Runs one command on a connection of its own to 127.0.0.1:`port` (plain
 * TCP), after `AUTH password` when one is given, and returns the reply (an
 * error reply is a `RespError` value).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { redisCommand } from "./redis_server.ts";
 *
 * await assert.rejects(redisCommand(1, ["PING"]));
 * ```
 */
export async function redisCommand(
  port: number,
  args: (string | Uint8Array)[],
  password?: string,
): Promise<RespValue | undefined> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const reader = new RespReader(new BufferedReader(conn).readable, {
      maxBulk: 1 << 20,
      maxArray: 1 << 16,
      maxDepth: 8,
    });
    const commands = password === undefined ? [args] : [["AUTH", password], args];
    let reply: RespValue | undefined;
    for (const command of commands) {
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

/** Options for {@linkcode RedisServer.start}. */
/**
 * Starts `redis-server` with `args` and waits (5 s at most) until `ready()`
 * says it answers; rejects if it exits first (`what` names it in errors) or
 * never answers (then it is killed). Shared by every test Redis: plain,
 * TLS, replica, Sentinel.
 */
export async function spawnRedis(
  args: string[],
  ready: () => Promise<boolean>,
  what: string,
): Promise<Deno.ChildProcess> {
  const child = new Deno.Command("redis-server", {
    args,
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  for (let i = 0; i < 200; i++) {
    if (await settlesWithin(child.status, 25)) {
      throw new Error(`${what} exited at start (port taken, or a bad flag?)`);
    }
    try {
      if (await ready()) return child;
    } catch {
      // Not listening yet.
    }
  }
  try {
    child.kill("SIGKILL");
  } catch {
    // Already gone.
  }
  await child.status;
  throw new Error(`${what} did not answer within 5s`);
}

/**
 * A GET right after a kill may be written before the client has seen the
 * connection end: it rejects with ERR_REDIS_DOWN, `sent: true` (the client
 * never retries what may have run). A read is safe to retry: retried (3 times).
 */
export async function idempotent<T>(call: () => Promise<T>): Promise<T> {
  for (let attempt = 0;; attempt++) {
    try {
      return await call();
    } catch (err) {
      if (!(err instanceof RedisDownError) || !err.sent || attempt >= 3) throw err;
    }
  }
}

export interface RedisServerOptions {
  /**
   * Arguments after the defaults (`--port`, `--bind 127.0.0.1`, no
   * persistence); later ones win. A `--requirepass` among them is used by
   * {@linkcode RedisServer.command}. @default {[]}
   */
  args?: string[];
  /**
   * The TLS port instead of a plain one: `--port 0 --tls-port P` is passed
   * and readiness is a TCP connect (the caller adds the certificate flags).
   * @default {false}
   */
  tls?: boolean;
}

/** One `redis-server` process of our own, on a free port. */
export class RedisServer implements AsyncDisposable {
  /** The port it listens on (the TLS port with `tls`). */
  readonly port: number;
  #args: string[];
  #tls: boolean;
  #password: string | undefined;
  #child: Deno.ChildProcess | undefined;

  private constructor(port: number, options: RedisServerOptions) {
    this.port = port;
    this.#args = options.args ?? [];
    this.#tls = options.tls ?? false;
    const at = this.#args.lastIndexOf("--requirepass");
    this.#password = at >= 0 ? this.#args[at + 1] : undefined;
  }

  /** Starts one (retrying on another port if the one picked was taken) and waits until it answers. */
  static async start(options: RedisServerOptions = {}): Promise<RedisServer> {
    for (let attempt = 0;; attempt++) {
      const server = new RedisServer(freePort(), options);
      try {
        await server.restart();
        return server;
      } catch (err) {
        if (attempt >= 3) throw err;
      }
    }
  }

  /** `redis://127.0.0.1:port` (`rediss://` with `tls`), without the password. */
  get url(): string {
    return `${this.#tls ? "rediss" : "redis"}://127.0.0.1:${this.port}`;
  }

  /** Whether the process runs. */
  get running(): boolean {
    return this.#child !== undefined;
  }

  /** (Re)starts it on the same port and waits until it answers (5 s at most). */
  async restart(): Promise<void> {
    if (this.#child !== undefined) throw new Error("redis-server is already running");
    const ports = this.#tls
      ? ["--port", "0", "--tls-port", String(this.port)]
      : ["--port", String(this.port)];
    this.#child = await spawnRedis(
      [
        ...ports,
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--protected-mode",
        "no",
        // Whatever it writes anyway (a replica's copy of its master's data)
        // goes to the temp folder, never into the checkout; tests that want
        // persistence pass a --dir of their own, which wins.
        "--dir",
        tmpdir(),
        ...this.#args,
      ],
      async () => {
        if (this.#tls) {
          const conn = await Deno.connect({ hostname: "127.0.0.1", port: this.port });
          conn.close();
          return true;
        }
        // NOAUTH: a password set some other way (an ACL file) — it answers all the same.
        const reply = await redisCommand(this.port, ["PING"], this.#password);
        return reply === "PONG" || replyText(reply).startsWith("NOAUTH");
      },
      `redis-server on port ${this.port}`,
    );
  }

  /**
   * Runs one command on a connection of its own (plain TCP only; after
   * `AUTH` with the `--requirepass` of its arguments) and returns the reply.
   */
  command(args: (string | Uint8Array)[]): Promise<RespValue | undefined> {
    return redisCommand(this.port, args, this.#password);
  }

  /** `PUBSUB NUMSUB channel`: how many connections subscribe to it. */
  async subscribers(channel: string): Promise<number> {
    const reply = await this.command(["PUBSUB", "NUMSUB", channel]);
    if (!Array.isArray(reply)) throw new Error(`PUBSUB NUMSUB: ${replyText(reply)}`);
    return Number(reply[1]);
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

  /** Kills it. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.kill();
  }
}
