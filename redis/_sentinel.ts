// Redis Sentinel: which server is the master right now. The Sentinels are
// asked in turn (SENTINEL get-master-addr-by-name), each on a short
// connection of its own; every address one gives is tried by the caller,
// who connects and checks with ROLE that it really is the master (a
// Sentinel may not have seen a failover yet). The first that works is the
// answer, and the Sentinel that gave it is asked first next time. Internal
// to redis/: RedisClient and RedisBus ask again whenever their connection to
// the master is lost (a failover), so nothing is queued for an old master.
import type { Conn } from "../conn.ts";
import { NetkitError } from "../errors.ts";
import { hostPort } from "../internal/host.ts";
import type { ManagedConn } from "../internal/socket_conn.ts";
import { writeAll } from "../io/mod.ts";
import { connect as tcpConnect } from "../tcp/connect.ts";
import { connect as tlsConnect } from "../tls/connect.ts";
import { encodeCommand, RespError, RespReader, type RespValue } from "./_resp.ts";
import type { RedisAddress, RedisSentinelTarget } from "./url.ts";

const decoder = new TextDecoder();

/** How the Sentinels are reached. */
export interface SentinelConnectOptions {
  /** TLS to the Sentinels (`rediss+sentinel://`). */
  tls: boolean;
  caCerts: string[] | undefined;
  /** Per Sentinel: connect, AUTH and the answer. */
  timeout: number;
  signal: AbortSignal;
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message.split("\n")[0] : String(err);
}

function destroy(conn: Conn): void {
  const managed = conn as Partial<ManagedConn>;
  if (typeof managed.destroy === "function") managed.destroy();
  else void conn.close().catch(() => {});
}

/** Whether a ROLE reply says master: `["master", offset, replicas]`. */
export function isMasterRole(reply: RespValue): boolean {
  return Array.isArray(reply) && reply[0] instanceof Uint8Array &&
    decoder.decode(reply[0]) === "master";
}

/** The error for a server that a Sentinel named but ROLE says is not the master (yet, or any more). */
export function notMaster(address: string, reply: RespValue): NetkitError {
  const role = Array.isArray(reply) && reply[0] instanceof Uint8Array
    ? decoder.decode(reply[0])
    : reply instanceof RespError
    ? reply.message
    : String(reply);
  return new NetkitError(
    "ERR_REDIS_NOT_MASTER",
    `Redis at ${address} is not the master (ROLE: ${role.slice(0, 60)}): a failover under way?`,
  );
}

/**
 * Asks one Sentinel for the master's address: `null` when it knows no
 * master of that name.
 */
async function ask(
  sentinel: RedisAddress,
  target: RedisSentinelTarget,
  options: SentinelConnectOptions,
): Promise<RedisAddress | null> {
  const { hostname, port } = sentinel;
  const { timeout, signal } = options;
  const at = hostPort(hostname, port);
  const conn = options.tls
    ? await tlsConnect({ hostname, port, timeout, signal, caCerts: options.caCerts })
    : await tcpConnect({ hostname, port, timeout, signal });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    destroy(conn);
  }, timeout);
  const onAbort = () => destroy(conn);
  signal.addEventListener("abort", onAbort, { once: true });
  // Replies are a few short strings: small bounds.
  const reader = new RespReader(conn.readable, { maxBulk: 4096, maxArray: 16, maxDepth: 2 });
  try {
    const { username, password } = target;
    const commands: string[][] = [];
    if (password !== undefined) {
      commands.push(username === undefined ? ["AUTH", password] : ["AUTH", username, password]);
    }
    commands.push(["SENTINEL", "get-master-addr-by-name", target.masterName]);
    const parts = commands.map(encodeCommand);
    const bytes = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let offset = 0;
    for (const p of parts) {
      bytes.set(p, offset);
      offset += p.length;
    }
    await writeAll(conn.writable, bytes);
    if (password !== undefined) {
      const auth = await reader.read();
      if (auth instanceof RespError) {
        throw new NetkitError(
          "ERR_REDIS_AUTH",
          `the Sentinel at ${at} refused the Sentinel credentials (sentinelPassword): ${auth.message}`,
        );
      }
    }
    const reply = await reader.read();
    if (reply === undefined) throw new Error("it closed the connection");
    if (reply instanceof RespError) {
      if (/^NOAUTH/.test(reply.message)) {
        throw new NetkitError(
          "ERR_REDIS_AUTH",
          `the Sentinel at ${at} needs a password: give sentinelPassword ` +
            "(?sentinelPassword=… in a redis+sentinel:// URL)",
        );
      }
      throw new Error(reply.message);
    }
    if (reply === null) return null;
    if (
      Array.isArray(reply) && reply.length === 2 && reply[0] instanceof Uint8Array &&
      reply[1] instanceof Uint8Array
    ) {
      const host = decoder.decode(reply[0]);
      const masterPort = Number(decoder.decode(reply[1]));
      if (host !== "" && Number.isInteger(masterPort) && masterPort > 0 && masterPort < 65536) {
        return { hostname: host, port: masterPort };
      }
    }
    throw new Error(`an answer that is not an address: ${String(reply).slice(0, 60)}`);
  } catch (err) {
    if (signal.aborted) throw signal.reason;
    if (timedOut) {
      throw new NetkitError(
        "ETIMEDOUT",
        `no answer from the Sentinel at ${at} within ${timeout}ms`,
      );
    }
    throw err;
  } finally {
    clearTimeout(timer);
    signal.removeEventListener("abort", onAbort);
    try {
      reader.releaseLock();
    } catch {
      // A read pending on a destroyed socket: nothing to release.
    }
    destroy(conn);
    await conn.closed.catch(() => {});
  }
}

/**
 * The master, as the Sentinels of `target` name it: each Sentinel is asked
 * in turn, and each address given is handed to `attempt` (which connects
 * and checks ROLE) until one works; its result is returned. An address
 * that failed is not tried twice. Refused credentials end the search at
 * once (`ERR_REDIS_AUTH`): every server would refuse them.
 *
 * @throws {NetkitError} `ERR_REDIS_SENTINEL`: no Sentinel named a master
 *   that `attempt` could use; the message says what each answered.
 */
export async function viaSentinels<T>(
  target: RedisSentinelTarget,
  options: SentinelConnectOptions,
  attempt: (master: RedisAddress) => Promise<T>,
): Promise<T> {
  const sentinels = target.sentinels;
  const failures: string[] = [];
  const tried = new Set<string>();
  let lastError: unknown;
  for (const sentinel of [...sentinels]) {
    options.signal.throwIfAborted();
    const at = hostPort(sentinel.hostname, sentinel.port);
    let master: RedisAddress | null;
    try {
      master = await ask(sentinel, target, options);
    } catch (err) {
      if (options.signal.aborted) throw options.signal.reason;
      if (err instanceof NetkitError && err.code === "ERR_REDIS_AUTH") throw err;
      failures.push(`Sentinel ${at}: ${errorText(err)}`);
      lastError = err;
      continue;
    }
    if (master === null) {
      failures.push(`Sentinel ${at} knows no master "${target.masterName}"`);
      continue;
    }
    const address = hostPort(master.hostname, master.port);
    if (tried.has(address)) continue;
    tried.add(address);
    try {
      const result = await attempt(master);
      // This Sentinel knew: ask it first next time.
      const i = sentinels.indexOf(sentinel);
      if (i > 0) {
        sentinels.splice(i, 1);
        sentinels.unshift(sentinel);
      }
      return result;
    } catch (err) {
      if (options.signal.aborted) throw options.signal.reason;
      if (err instanceof NetkitError && err.code === "ERR_REDIS_AUTH") throw err;
      failures.push(`master ${address} (named by Sentinel ${at}): ${errorText(err)}`);
      lastError = err;
    }
  }
  throw new NetkitError(
    "ERR_REDIS_SENTINEL",
    `no master "${target.masterName}" could be reached through the Sentinels: ${
      failures.join("; ")
    }`,
    { cause: lastError },
  );
}
