/**
 * Throwaway Redis servers for the tests: {@linkcode RedisServer}, one
 * `redis-server` process with any arguments (TLS, ACLs, cluster mode), and
 * {@linkcode RedisCluster}, a Redis Cluster of masters (and replicas) joined
 * by hand (CLUSTER MEET, ADDSLOTSRANGE, REPLICATE), all on free ports,
 * without persistence, killed on dispose.
 *
 * @module
 */
import { BufferedReader } from "../../io/buffered_reader.ts";
import { encodeCommand, replyText, RespReader, type RespValue } from "../../redis/_resp.ts";
import { delay } from "./time.ts";
import { hasTool } from "./tools.ts";

/**
 * Whether `redis-server` is installed.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { haveRedisServer } from "./redis_cluster.ts";
 *
 * assert.equal(typeof haveRedisServer(), "boolean");
 * ```
 */
export function haveRedisServer(): boolean {
  return hasTool("redis-server");
}

/**
 * A free TCP port on 127.0.0.1 (free when asked: bind it soon).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { freeRedisPort } from "./redis_cluster.ts";
 *
 * assert.ok(freeRedisPort() > 0);
 * ```
 */
export function freeRedisPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/**
 * Runs one command on a connection of its own to 127.0.0.1:`port` (plain
 * TCP) and returns the reply (an error reply is a `RespError` value).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { redisCommand } from "./redis_cluster.ts";
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
export interface RedisServerOptions {
  /** Arguments after the defaults (`--port`, `--bind 127.0.0.1`, no persistence); later ones win. */
  args?: string[];
  /**
   * The TLS port instead of a plain one: `--port 0 --tls-port P` is passed
   * and readiness is a TCP connect (the caller adds the certificate flags).
   */
  tls?: boolean;
}

/** One `redis-server` process of our own, on a free port. */
export class RedisServer implements AsyncDisposable {
  /** The port it listens on (the TLS port with `tls`). */
  readonly port: number;
  #args: string[];
  #tls: boolean;
  #child: Deno.ChildProcess | undefined;

  private constructor(port: number, options: RedisServerOptions) {
    this.port = port;
    this.#args = options.args ?? [];
    this.#tls = options.tls ?? false;
  }

  /** Starts one (retrying on another port if the one picked was taken) and waits until it answers. */
  static async start(options: RedisServerOptions = {}): Promise<RedisServer> {
    for (let attempt = 0;; attempt++) {
      const server = new RedisServer(freeRedisPort(), options);
      try {
        await server.restart();
        return server;
      } catch (err) {
        if (attempt >= 3) throw err;
      }
    }
  }

  /** `redis://127.0.0.1:port` (`rediss://` with `tls`). */
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
    const child = new Deno.Command("redis-server", {
      args: [
        ...ports,
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--protected-mode",
        "no",
        ...this.#args,
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
        throw new Error(`redis-server exited at start (port ${this.port} taken, or a bad flag?)`);
      }
      try {
        if (this.#tls) {
          const conn = await Deno.connect({ hostname: "127.0.0.1", port: this.port });
          conn.close();
          return;
        }
        const reply = await redisCommand(this.port, ["PING"]);
        if (reply === "PONG" || replyText(reply).startsWith("NOAUTH")) return;
      } catch {
        // Not listening yet.
      }
    }
    await this.kill();
    throw new Error("redis-server did not answer within 5s");
  }

  /** Runs one command on a connection of its own (plain TCP only). */
  command(args: (string | Uint8Array)[]): Promise<RespValue | undefined> {
    return redisCommand(this.port, args);
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

/** Options for {@linkcode RedisCluster.start}. */
export interface RedisClusterOptions {
  /** How many masters; the 16384 slots are split evenly. @default {3} */
  masters?: number;
  /** Replicas per master. @default {0} */
  replicas?: 0 | 1;
  /** `cluster-node-timeout`, ms. @default {1000} */
  nodeTimeout?: number;
}

/** One node of a {@linkcode RedisCluster}. */
export interface ClusterNode {
  server: RedisServer;
  /** The node id (CLUSTER MYID). */
  id: string;
  /** `127.0.0.1:port`. */
  address: string;
}

/**
 * A Redis Cluster of `redis-server --cluster-enabled yes` processes, joined
 * by hand and ready (`cluster_state:ok` everywhere, replicas in sync).
 */
export class RedisCluster implements AsyncDisposable {
  /** The masters, in slot order: master `i` owns the `i`-th even share of the slots. */
  readonly masters: ClusterNode[];
  /** `replicas[i]`: master `i`'s replica, if replicas were asked for. */
  readonly replicas: ClusterNode[];
  #dir: string;

  private constructor(masters: ClusterNode[], replicas: ClusterNode[], dir: string) {
    this.masters = masters;
    this.replicas = replicas;
    this.#dir = dir;
  }

  /**
   * Starts the processes, joins them and waits until the cluster is up
   * (throws after 20 s).
   */
  static async start(options: RedisClusterOptions = {}): Promise<RedisCluster> {
    const masterCount = options.masters ?? 3;
    const replicaCount = options.replicas ?? 0;
    const dir = await Deno.makeTempDir({ prefix: "netkit-redis-cluster-" });
    const servers: RedisServer[] = [];
    try {
      const total = masterCount * (1 + replicaCount);
      // In parallel; a replica's first sync starts at once (no diskless delay).
      const started = await Promise.allSettled(
        Array.from({ length: total }, (_, i) =>
          RedisServer.start({
            args: [
              "--cluster-enabled",
              "yes",
              "--cluster-config-file",
              `${dir}/nodes-${i}-${crypto.randomUUID()}.conf`,
              "--cluster-port",
              String(freeRedisPort()),
              "--cluster-node-timeout",
              String(options.nodeTimeout ?? 1000),
              "--repl-diskless-sync-delay",
              "0",
              "--dir",
              dir,
            ],
          })),
      );
      for (const result of started) if (result.status === "fulfilled") servers.push(result.value);
      const failed = started.find((r) => r.status === "rejected");
      if (failed !== undefined) throw (failed as PromiseRejectedResult).reason;
      const nodes: ClusterNode[] = [];
      for (const server of servers) {
        const id = replyText(await server.command(["CLUSTER", "MYID"]));
        nodes.push({ server, id, address: `127.0.0.1:${server.port}` });
      }
      const masters = nodes.slice(0, masterCount);
      const replicas = nodes.slice(masterCount);
      // Slots: an even share each.
      for (let i = 0; i < masterCount; i++) {
        const start = Math.floor((16384 * i) / masterCount);
        const end = Math.floor((16384 * (i + 1)) / masterCount) - 1;
        await expectOk(
          masters[i].server.command(["CLUSTER", "ADDSLOTSRANGE", String(start), String(end)]),
        );
      }
      // Everyone meets node 0; gossip does the rest.
      for (const node of nodes.slice(1)) {
        const busPort = await clusterBusPort(node.server);
        await expectOk(
          nodes[0].server.command([
            "CLUSTER",
            "MEET",
            "127.0.0.1",
            String(node.server.port),
            busPort,
          ]),
        );
      }
      const deadline = performance.now() + 20_000;
      await until(deadline, "every node to know every other", async () => {
        for (const node of nodes) {
          const info = replyText(await node.server.command(["CLUSTER", "INFO"]));
          if (!info.includes(`cluster_known_nodes:${nodes.length}`)) return false;
        }
        return true;
      });
      for (let i = 0; i < replicas.length; i++) {
        // "Unknown node" until the handshake with the master is through.
        await until(
          deadline,
          "CLUSTER REPLICATE to succeed",
          async () =>
            await replicas[i].server.command(["CLUSTER", "REPLICATE", masters[i].id]) === "OK",
        );
      }
      await until(deadline, "cluster_state:ok and the replicas in sync", async () => {
        for (const node of nodes) {
          const info = replyText(await node.server.command(["CLUSTER", "INFO"]));
          if (!info.includes("cluster_state:ok")) return false;
        }
        for (const replica of replicas) {
          const info = replyText(await replica.server.command(["INFO", "replication"]));
          if (!info.includes("master_link_status:up")) return false;
        }
        // Every node has the whole map. (Replicas show in CLUSTER SLOTS only
        // once gossip carried their replication offset: not waited for.)
        for (const node of nodes) {
          const slots = await node.server.command(["CLUSTER", "SLOTS"]);
          if (!Array.isArray(slots) || slots.length !== masterCount) return false;
        }
        return true;
      });
      return new RedisCluster(masters, replicas, dir);
    } catch (err) {
      await Promise.all(servers.map((s) => s.kill()));
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      throw err;
    }
  }

  /** The seed URLs: every master's. */
  get urls(): string[] {
    return this.masters.map((m) => m.server.url);
  }

  /** The master that owns `slot` now (asked of a live node's CLUSTER SLOTS), as `127.0.0.1:port`. */
  async ownerOf(slot: number): Promise<string> {
    for (const node of [...this.masters, ...this.replicas]) {
      if (!node.server.running) continue;
      const slots = await node.server.command(["CLUSTER", "SLOTS"]);
      if (!Array.isArray(slots)) continue;
      for (const range of slots) {
        if (!Array.isArray(range)) continue;
        const [start, end, master] = range;
        if (Number(start) <= slot && slot <= Number(end) && Array.isArray(master)) {
          return `127.0.0.1:${Number(master[1])}`;
        }
      }
    }
    throw new Error(`no live node knows who owns slot ${slot}`);
  }

  /**
   * Kills master `i` (SIGKILL). With `promote` (the default) its replica
   * takes over at once (`CLUSTER FAILOVER TAKEOVER`); without, the cluster
   * fails over by itself after the node timeout.
   */
  async killMaster(i: number, options: { promote?: boolean } = {}): Promise<void> {
    await this.masters[i].server.kill();
    const replica = this.replicas[i];
    if (replica !== undefined && options.promote !== false) {
      await expectOk(replica.server.command(["CLUSTER", "FAILOVER", "TAKEOVER"]));
    }
  }

  /** Kills every process and removes the config files. */
  async [Symbol.asyncDispose](): Promise<void> {
    await Promise.all([...this.masters, ...this.replicas].map((n) => n.server.kill()));
    await Deno.remove(this.#dir, { recursive: true }).catch(() => {});
  }
}

async function clusterBusPort(server: RedisServer): Promise<string> {
  const reply = await server.command(["CONFIG", "GET", "cluster-port"]);
  if (!Array.isArray(reply)) throw new Error(`CONFIG GET cluster-port: ${replyText(reply)}`);
  return replyText(reply[1]);
}

async function expectOk(reply: Promise<RespValue | undefined>): Promise<void> {
  const value = await reply;
  if (value !== "OK") throw new Error(`redis-server answered ${replyText(value)}`);
}

async function until(deadline: number, what: string, check: () => Promise<boolean>) {
  while (!(await check())) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await delay(50);
  }
}
