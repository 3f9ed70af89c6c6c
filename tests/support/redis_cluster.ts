/**
 * A throwaway Redis Cluster for the tests: {@linkcode RedisCluster}, masters
 * (and replicas) joined by hand (CLUSTER MEET, ADDSLOTSRANGE, REPLICATE),
 * each a {@linkcode RedisServer} (support/redis_server.ts, re-exported here
 * with its helpers), all on free ports, without persistence, killed on
 * dispose.
 *
 * @module
 */
import { replyText, type RespValue } from "../../redis/_resp.ts";
import { freePort } from "./ports.ts";
import { RedisServer } from "./redis_server.ts";
import { until } from "./time.ts";

export {
  haveRedisServer,
  redisCommand,
  RedisServer,
  type RedisServerOptions,
} from "./redis_server.ts";

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
              String(freePort()),
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
      // One deadline for the three waits (20 s in all), polled every 50 ms.
      const deadline = performance.now() + 20_000;
      const left = () => deadline - performance.now();
      await until(
        async () => {
          for (const node of nodes) {
            const info = replyText(await node.server.command(["CLUSTER", "INFO"]));
            if (!info.includes(`cluster_known_nodes:${nodes.length}`)) return false;
          }
          return true;
        },
        "every node to know every other",
        left(),
        50,
      );
      for (let i = 0; i < replicas.length; i++) {
        // "Unknown node" until the handshake with the master is through.
        await until(
          async () =>
            await replicas[i].server.command(["CLUSTER", "REPLICATE", masters[i].id]) === "OK",
          "CLUSTER REPLICATE to succeed",
          left(),
          50,
        );
      }
      await until(
        async () => {
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
        },
        "cluster_state:ok and the replicas in sync",
        left(),
        50,
      );
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
