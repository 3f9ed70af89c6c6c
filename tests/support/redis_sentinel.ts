/**
 * Redis Sentinel for the tests: {@linkcode RedisSentinel}, one
 * `redis-server <config> --sentinel` process with a config file of its own
 * (Sentinels rewrite it); {@linkcode SentinelGroup}, a master, a replica and
 * three Sentinels watching them as `mymaster`, all on free ports, with a
 * readiness check that every Sentinel knows the others and the replica (so
 * that a failover can happen); and {@linkcode FakeSentinel}, a server that
 * answers `SENTINEL get-master-addr-by-name` with whatever the test says.
 *
 * @module
 */
import {
  encodeReply,
  replyText,
  RespError,
  RespReader,
  type RespValue,
} from "../../redis/_resp.ts";
import { freePort, RedisProcess } from "../_redis.ts";
import { redisCommand, spawnRedis } from "./redis_server.ts";
import { delay } from "./time.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * One command on a connection of its own to 127.0.0.1:`port` (AUTH first
 * when `password` is given); an error reply is a `RespError` value.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { sentinelCommand } from "./redis_sentinel.ts";
 *
 * await assert.rejects(sentinelCommand(1, ["PING"]));
 * ```
 */
export function sentinelCommand(
  port: number,
  args: string[],
  password?: string,
): Promise<RespValue | undefined> {
  return redisCommand(port, args, password);
}

/** Polls `check` every `every` ms until it holds; past `ms`, fails naming `what`. */
async function until(
  check: () => Promise<boolean>,
  what: string,
  ms: number,
  every = 100,
): Promise<void> {
  const deadline = performance.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      if (await check()) return;
    } catch (err) {
      last = err;
    }
    if (performance.now() > deadline) {
      throw new Error(
        `timed out after ${ms} ms waiting for ${what}${
          last === undefined ? "" : ` (last error: ${last})`
        }`,
      );
    }
    await delay(every);
  }
}

/** A flat `[field, value, …]` reply (SENTINEL MASTER) as a map. */
function fields(reply: RespValue | undefined): Map<string, string> {
  const out = new Map<string, string>();
  if (!Array.isArray(reply)) return out;
  for (let i = 0; i + 1 < reply.length; i += 2) {
    out.set(replyText(reply[i]), replyText(reply[i + 1]));
  }
  return out;
}

/** Options for {@linkcode RedisSentinel.start}. */
export interface RedisSentinelOptions {
  /** The master's port (on 127.0.0.1). */
  masterPort: number;
  /** @default {"mymaster"} */
  masterName?: string;
  /** Sentinels that must agree the master is down. @default {2} */
  quorum?: number;
  /** The data nodes' password (`sentinel auth-pass`). */
  masterPassword?: string;
  /** The Sentinels' own password (`requirepass`, and `sentinel sentinel-pass` between them). */
  password?: string;
}

/** One Sentinel of our own: `redis-server <its config file> --sentinel`. */
export class RedisSentinel implements AsyncDisposable {
  readonly port: number;
  readonly password: string | undefined;
  #dir: string;
  #child: Deno.ChildProcess | undefined;

  private constructor(port: number, dir: string, password: string | undefined) {
    this.port = port;
    this.#dir = dir;
    this.password = password;
  }

  /** Starts one on a free port (retrying on another if it was taken) and waits until it answers PING. */
  static async start(options: RedisSentinelOptions): Promise<RedisSentinel> {
    for (let attempt = 0;; attempt++) {
      const port = freePort();
      const dir = await Deno.makeTempDir({ prefix: "netkit-sentinel-" });
      const name = options.masterName ?? "mymaster";
      const lines = [
        `port ${port}`,
        "bind 127.0.0.1",
        "protected-mode no",
        `dir ${dir}`,
        `sentinel monitor ${name} 127.0.0.1 ${options.masterPort} ${options.quorum ?? 2}`,
        `sentinel down-after-milliseconds ${name} 500`,
        `sentinel failover-timeout ${name} 2000`,
      ];
      if (options.masterPassword !== undefined) {
        lines.push(`sentinel auth-pass ${name} ${options.masterPassword}`);
      }
      if (options.password !== undefined) {
        lines.push(`requirepass ${options.password}`, `sentinel sentinel-pass ${options.password}`);
      }
      const config = `${dir}/sentinel.conf`;
      await Deno.writeTextFile(config, lines.join("\n") + "\n");
      const sentinel = new RedisSentinel(port, dir, options.password);
      try {
        await sentinel.#spawn(config);
        return sentinel;
      } catch (err) {
        await Deno.remove(dir, { recursive: true }).catch(() => {});
        if (attempt >= 3) throw err;
      }
    }
  }

  async #spawn(config: string): Promise<void> {
    this.#child = await spawnRedis(
      [config, "--sentinel"],
      async () => await this.command(["PING"]) === "PONG",
      `redis-server --sentinel on port ${this.port}`,
    );
  }

  /** `127.0.0.1:port`. */
  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** One command (authenticated with the Sentinel's password). */
  command(args: string[]): Promise<RespValue | undefined> {
    return sentinelCommand(this.port, args, this.password);
  }

  /** The master's address as this Sentinel gives it: `host:port`, or `undefined`. */
  async master(name = "mymaster"): Promise<string | undefined> {
    const reply = await this.command(["SENTINEL", "get-master-addr-by-name", name]);
    return Array.isArray(reply) ? `${replyText(reply[0])}:${replyText(reply[1])}` : undefined;
  }

  /** Kills it (SIGKILL) and waits for the exit. */
  async kill(): Promise<void> {
    const child = this.#child;
    if (child === undefined) return;
    this.#child = undefined;
    try {
      child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
    await child.status;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.kill();
    await Deno.remove(this.#dir, { recursive: true }).catch(() => {});
  }
}

/** Options for {@linkcode SentinelGroup.start}. */
export interface SentinelGroupOptions {
  /** The data nodes' password (`requirepass` and `masterauth`). */
  password?: string;
  /** The Sentinels' own password. */
  sentinelPassword?: string;
}

/**
 * A master and its replica (RedisProcess, no persistence) and three
 * Sentinels watching them as `mymaster` (quorum 2, down after 500 ms,
 * failover timeout 2 s).
 */
export class SentinelGroup implements AsyncDisposable {
  readonly master: RedisProcess;
  readonly replica: RedisProcess;
  readonly sentinels: RedisSentinel[];
  readonly password: string | undefined;
  readonly sentinelPassword: string | undefined;
  #dir: string;

  private constructor(
    master: RedisProcess,
    replica: RedisProcess,
    sentinels: RedisSentinel[],
    options: SentinelGroupOptions,
    dir: string,
  ) {
    this.#dir = dir;
    this.master = master;
    this.replica = replica;
    this.sentinels = sentinels;
    this.password = options.password;
    this.sentinelPassword = options.sentinelPassword;
  }

  /**
   * Starts them all and waits (30 s at most) until the replica is in sync
   * and every Sentinel knows the replica and the two other Sentinels: only
   * then can they agree on a failover.
   */
  static async start(options: SentinelGroupOptions = {}): Promise<SentinelGroup> {
    // A replica writes the RDB it syncs from into its directory: a temporary one.
    const dir = await Deno.makeTempDir({ prefix: "netkit-sentinel-data-" });
    const auth = [
      "--dir",
      dir,
      ...(options.password === undefined
        ? []
        : ["--requirepass", options.password, "--masterauth", options.password]),
    ];
    const started: AsyncDisposable[] = [];
    try {
      const master = await RedisProcess.start(auth);
      started.push(master);
      const replica = await RedisProcess.start([
        ...auth,
        "--replicaof",
        "127.0.0.1",
        String(master.port),
      ]);
      started.push(replica);
      const sentinels: RedisSentinel[] = [];
      for (let i = 0; i < 3; i++) {
        const sentinel = await RedisSentinel.start({
          masterPort: master.port,
          masterPassword: options.password,
          password: options.sentinelPassword,
        });
        started.push(sentinel);
        sentinels.push(sentinel);
      }
      const group = new SentinelGroup(master, replica, sentinels, options, dir);
      await group.#ready();
      return group;
    } catch (err) {
      for (const s of started.reverse()) await s[Symbol.asyncDispose]();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      throw err;
    }
  }

  async #ready(): Promise<void> {
    await until(
      async () => {
        const role = await this.replica.command(["ROLE"]);
        if (!Array.isArray(role) || replyText(role[0]) !== "slave") return false;
        if (replyText(role[3]) !== "connected") return false;
        for (const sentinel of this.sentinels) {
          const master = fields(await sentinel.command(["SENTINEL", "MASTER", "mymaster"]));
          if (master.get("flags") !== "master") return false;
          if (master.get("num-other-sentinels") !== "2") return false;
          if (master.get("num-slaves") !== "1") return false;
          const replicas = await sentinel.command(["SENTINEL", "REPLICAS", "mymaster"]);
          if (!Array.isArray(replicas) || replicas.length !== 1) return false;
          const replica = fields(replicas[0]);
          if (replica.get("flags") !== "slave" || replica.get("master-link-status") !== "ok") {
            return false;
          }
        }
        return true;
      },
      "the replica in sync, and each Sentinel knowing it and the two others",
      30_000,
    );
  }

  /** The Sentinels as a URL's host list: `127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3`. */
  get hosts(): string {
    return this.sentinels.map((s) => s.address).join(",");
  }

  /** `redis+sentinel://[:password@]hosts/mymaster[?sentinelPassword=…]`. */
  get url(): string {
    const auth = this.password === undefined ? "" : `:${encodeURIComponent(this.password)}@`;
    const query = this.sentinelPassword === undefined
      ? ""
      : `?sentinelPassword=${encodeURIComponent(this.sentinelPassword)}`;
    return `redis+sentinel://${auth}${this.hosts}/mymaster${query}`;
  }

  /** Kills the master (SIGKILL, as a crash would); the Sentinels are left to fail over. */
  killMaster(): Promise<void> {
    return this.master.kill();
  }

  /**
   * Waits (30 s at most) until every Sentinel names the replica as the master
   * and the replica says so too (ROLE).
   */
  async promoted(): Promise<void> {
    const want = `127.0.0.1:${this.replica.port}`;
    await until(
      async () => {
        for (const sentinel of this.sentinels) {
          if (await sentinel.master() !== want) return false;
        }
        const role = await this.replica.command(["ROLE"]);
        return Array.isArray(role) && replyText(role[0]) === "master";
      },
      `the Sentinels to promote the replica (${want})`,
      30_000,
    );
  }

  async [Symbol.asyncDispose](): Promise<void> {
    for (const sentinel of this.sentinels) await sentinel[Symbol.asyncDispose]();
    await this.replica.kill();
    await this.master.kill();
    await Deno.remove(this.#dir, { recursive: true }).catch(() => {});
  }
}

/**
 * A stand-in Sentinel: answers `SENTINEL get-master-addr-by-name` with
 * {@linkcode FakeSentinel.master} (`null`: no such master), `AUTH` against
 * its password, and an error to anything else.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { FakeSentinel, sentinelCommand } from "./redis_sentinel.ts";
 *
 * await using fake = FakeSentinel.start({ master: { hostname: "127.0.0.1", port: 6379 } });
 * const reply = await sentinelCommand(fake.port, ["SENTINEL", "get-master-addr-by-name", "x"]);
 * assert.deepEqual((reply as Uint8Array[]).map((b) => new TextDecoder().decode(b)), [
 *   "127.0.0.1",
 *   "6379",
 * ]);
 * ```
 */
export class FakeSentinel implements AsyncDisposable {
  readonly port: number;
  /** What it names as the master. */
  master: { hostname: string; port: number } | null;
  /** How many times it was asked for the master. */
  asked = 0;
  /** The master names it was asked about. */
  names: string[] = [];
  #listener: Deno.Listener;
  #password: string | undefined;
  #conns = new Set<Deno.Conn>();
  #loop: Promise<void>;
  #handlers = new Set<Promise<void>>();

  private constructor(
    listener: Deno.Listener,
    master: { hostname: string; port: number } | null,
    password: string | undefined,
  ) {
    this.#listener = listener;
    this.port = (listener.addr as Deno.NetAddr).port;
    this.master = master;
    this.#password = password;
    this.#loop = this.#accept();
  }

  /** Listens on a free port of 127.0.0.1. */
  static start(
    options: { master: { hostname: string; port: number } | null; password?: string },
  ): FakeSentinel {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    return new FakeSentinel(listener, options.master, options.password);
  }

  /** `127.0.0.1:port`. */
  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  async #accept(): Promise<void> {
    for (;;) {
      let conn: Deno.Conn;
      try {
        conn = await this.#listener.accept();
      } catch {
        return; // closed
      }
      this.#conns.add(conn);
      const handler = this.#serve(conn).finally(() => {
        this.#conns.delete(conn);
        this.#handlers.delete(handler);
      });
      this.#handlers.add(handler);
    }
  }

  async #serve(conn: Deno.Conn): Promise<void> {
    const reader = new RespReader(conn.readable, { maxBulk: 4096, maxArray: 16 });
    let authed = this.#password === undefined;
    try {
      for (;;) {
        const command = await reader.read();
        if (!Array.isArray(command)) return;
        const words = command.map((w) => w instanceof Uint8Array ? decoder.decode(w) : "");
        let reply: RespValue;
        const verb = words[0].toUpperCase();
        if (verb === "AUTH") {
          authed = words.at(-1) === this.#password;
          reply = authed ? "OK" : new RespError("WRONGPASS invalid username-password pair");
        } else if (!authed) {
          reply = new RespError("NOAUTH Authentication required.");
        } else if (
          verb === "SENTINEL" && words[1]?.toLowerCase() === "get-master-addr-by-name"
        ) {
          this.asked++;
          this.names.push(words[2]);
          reply = this.master === null
            ? null
            : [encoder.encode(this.master.hostname), encoder.encode(String(this.master.port))];
        } else {
          reply = new RespError(`ERR unknown command '${words[0]}'`);
        }
        const bytes = encodeReply(reply);
        let off = 0;
        while (off < bytes.length) off += await conn.write(bytes.subarray(off));
      }
    } catch {
      // The client went away.
    } finally {
      try {
        conn.close();
      } catch {
        // Closed by close().
      }
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.#listener.close();
    for (const conn of this.#conns) {
      try {
        conn.close();
      } catch {
        // Closed already.
      }
    }
    await this.#loop;
    await Promise.all([...this.#handlers]);
  }
}
