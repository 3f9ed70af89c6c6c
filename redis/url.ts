/**
 * Where a Redis is: {@linkcode parseRedisUrl} for the URL forms every netkit
 * Redis bus (and `ws-server --redis`) accepts, and
 * {@linkcode RedisConnectionOptions}, what both buses take to connect.
 *
 * | URL | what |
 * | --- | --- |
 * | `redis://[[user]:password@]host[:port][/db]` | one server (or a Cluster seed); port 6379 |
 * | `rediss://…` | the same over TLS |
 * | `redis+sentinel://[[user]:password@]host[:port][,host[:port]…]/mastername` | the master that these Sentinels name `mastername`; port 26379 |
 * | `rediss+sentinel://…` | the same, TLS to the Sentinels and to the master |
 *
 * A Sentinel URL's credentials are the data nodes' (the master's `AUTH`);
 * the Sentinels' own, when they have `requirepass`, go in the query:
 * `?sentinelPassword=…` (and `sentinelUsername=…` for an ACL user).
 *
 * @module
 */
import { NetkitError } from "../errors.ts";
import { urlHost } from "../internal/host.ts";

/** A server's address. */
export interface RedisAddress {
  /** Host name or address (IPv6 without brackets). */
  hostname: string;
  /** Port. */
  port: number;
}

/** How the master is found through Redis Sentinel. */
export interface RedisSentinelTarget {
  /** The name the Sentinels monitor the master under (`sentinel monitor <name> …`). */
  masterName: string;
  /** The Sentinels, asked in turn (the one that answers is asked first next time). */
  sentinels: RedisAddress[];
  /** For `AUTH username password` to the Sentinels. */
  username?: string;
  /** For `AUTH` to the Sentinels (their `requirepass`); the data nodes' is the target's `password`. */
  password?: string;
}

/** Where a Redis is, from a `redis://`, `rediss://` or `redis+sentinel://` URL. */
export interface RedisTarget {
  /** Host name or address (IPv6 without brackets); for a Sentinel URL, the first Sentinel's. */
  hostname: string;
  /** Port. @default {6379} */
  port: number;
  /** `rediss://` (or `rediss+sentinel://`): TLS. */
  tls: boolean;
  /** For `AUTH username password` (Redis 6 ACLs). */
  username?: string;
  /** For `AUTH`. */
  password?: string;
  /** The URL without its passwords, for messages. */
  display: string;
  /**
   * Set for a Sentinel URL: the master is the one these Sentinels name, asked
   * again whenever the connection to it is lost (a failover).
   */
  sentinel?: RedisSentinelTarget;
}

/** Options both buses take to connect (`RedisBusOptions`, `RedisStreamBusOptions`). Times are milliseconds. */
export interface RedisConnectionOptions {
  /** Connecting and the handshake, per attempt (per Sentinel asked, too). @default {5000} */
  timeout?: number;
  /** The first reconnect delay; it doubles, with jitter, up to `maxReconnectDelay`. @default {100} */
  reconnectDelay?: number;
  /** The longest reconnect delay. @default {5000} */
  maxReconnectDelay?: number;
  /** For `rediss://`: CA certificates (PEM) to trust besides the system's. */
  caCerts?: string[];
  /**
   * Find the master through these Sentinels, instead of the URL's host and
   * port (of which only the scheme, for TLS, and the credentials are used).
   * Needs `masterName`, here or in a `redis+sentinel://` URL.
   */
  sentinels?: RedisAddress[];
  /** The master's name for the Sentinels; overrides a `redis+sentinel://` URL's. */
  masterName?: string;
  /** For `AUTH` to the Sentinels; overrides the URL's `sentinelPassword`. */
  sentinelPassword?: string;
  /** For `AUTH username password` to the Sentinels; overrides the URL's `sentinelUsername`. */
  sentinelUsername?: string;
}

const SENTINEL_PORT = 26379;
const SENTINEL_PARAMS = new Set(["sentinelPassword", "sentinelUsername"]);

function urlError(url: string | URL, why: string): NetkitError {
  return new NetkitError("ERR_REDIS_URL", `"${url}" ${why}`);
}

/**
 * Parses a Redis URL: `redis://[[username]:password@]host[:port][/db]`
 * (`rediss://` for TLS), or, for a master found through Redis Sentinel,
 * `redis+sentinel://[[username]:password@]host[:port][,host[:port]…]/mastername`
 * (`rediss+sentinel://` for TLS to the Sentinels and the master; Sentinel
 * port 26379 by default; `?sentinelPassword=…&sentinelUsername=…` for
 * Sentinels with a password of their own). The database number is accepted
 * and ignored: pub/sub channels and the buses' keys are the same in every
 * database.
 *
 * @example Three Sentinels watching "mymaster"
 * ```ts
 * import { parseRedisUrl } from "@netkit/netkit/redis";
 * import assert from "node:assert/strict";
 *
 * const target = parseRedisUrl("redis+sentinel://:secret@s1,s2:26380,[::1]/mymaster");
 * assert.equal(target.password, "secret"); // the master's
 * assert.deepEqual(target.sentinel, {
 *   masterName: "mymaster",
 *   sentinels: [
 *     { hostname: "s1", port: 26379 },
 *     { hostname: "s2", port: 26380 },
 *     { hostname: "::1", port: 26379 },
 *   ],
 *   username: undefined,
 *   password: undefined,
 * });
 * assert.equal(target.display, "redis+sentinel://s1:26379,s2:26380,[::1]:26379/mymaster");
 * ```
 *
 * @throws {NetkitError} `ERR_REDIS_URL`: not such a URL.
 */
export function parseRedisUrl(url: string | URL): RedisTarget {
  const text = String(url);
  const scheme = /^([a-z+]+):\/\//i.exec(text)?.[1].toLowerCase();
  if (scheme === "redis+sentinel" || scheme === "rediss+sentinel") {
    return parseSentinelUrl(text, scheme === "rediss+sentinel");
  }
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    throw urlError(url, "is not a Redis URL: use redis://host:port (or rediss:// for TLS)");
  }
  if (u.protocol !== "redis:" && u.protocol !== "rediss:") {
    throw urlError(
      url,
      "is not a Redis URL: the scheme must be redis:// (or rediss:// for TLS, " +
        "redis+sentinel:// for a master found through Sentinel)",
    );
  }
  const hostname = u.hostname.replace(/^\[(.*)\]$/, "$1");
  if (hostname === "") throw urlError(url, "has no host: use redis://host:port");
  if (!/^(\/\d*)?$/.test(u.pathname)) {
    throw urlError(url, "the path must be a database number (redis://host:port/0), or nothing");
  }
  const port = u.port === "" ? 6379 : Number(u.port);
  const username = u.username === "" ? undefined : decodeURIComponent(u.username);
  const password = u.password === "" ? undefined : decodeURIComponent(u.password);
  return {
    hostname,
    port,
    tls: u.protocol === "rediss:",
    username,
    password,
    display: `${u.protocol}//${urlHost(hostname)}:${port}`,
  };
}

/**
 * `redis+sentinel://[[user]:pass@]h1[:p1],h2[:p2]/name[?sentinelPassword=…]`:
 * parsed by hand, since a URL parser takes the comma-separated host list
 * for one host with an invalid port. Each host is checked as a URL's would be.
 */
function parseSentinelUrl(text: string, tls: boolean): RedisTarget {
  const scheme = tls ? "rediss+sentinel" : "redis+sentinel";
  const usage = `use ${scheme}://host:port[,host:port…]/mastername`;
  const rest = text.slice(text.indexOf("://") + 3);
  const hashAt = rest.indexOf("#");
  const noHash = hashAt < 0 ? rest : rest.slice(0, hashAt);
  const queryAt = noHash.indexOf("?");
  const beforeQuery = queryAt < 0 ? noHash : noHash.slice(0, queryAt);
  const query = new URLSearchParams(queryAt < 0 ? "" : noHash.slice(queryAt + 1));
  const slash = beforeQuery.indexOf("/");
  const authority = slash < 0 ? beforeQuery : beforeQuery.slice(0, slash);
  const path = slash < 0 ? "" : beforeQuery.slice(slash + 1);
  const at = authority.lastIndexOf("@");
  const userinfo = at < 0 ? "" : authority.slice(0, at);
  const hostList = authority.slice(at + 1);

  let username: string | undefined;
  let password: string | undefined;
  if (userinfo !== "") {
    const colon = userinfo.indexOf(":");
    const user = colon < 0 ? userinfo : userinfo.slice(0, colon);
    const pass = colon < 0 ? "" : userinfo.slice(colon + 1);
    try {
      username = user === "" ? undefined : decodeURIComponent(user);
      password = pass === "" ? undefined : decodeURIComponent(pass);
    } catch {
      throw urlError(text, "has credentials that are not percent-encoded right");
    }
  }

  if (hostList === "") throw urlError(text, `names no Sentinel: ${usage}`);
  const sentinels: RedisAddress[] = [];
  for (const part of hostList.split(",")) {
    let u: URL;
    try {
      u = new URL(`redis://${part}`);
    } catch {
      throw urlError(text, `has a Sentinel address that is not host[:port] ("${part}"): ${usage}`);
    }
    const hostname = u.hostname.replace(/^\[(.*)\]$/, "$1");
    if (hostname === "" || u.pathname !== "" || u.username !== "" || u.search !== "") {
      throw urlError(text, `has a Sentinel address that is not host[:port] ("${part}"): ${usage}`);
    }
    sentinels.push({ hostname, port: u.port === "" ? SENTINEL_PORT : Number(u.port) });
  }

  let masterName: string;
  try {
    masterName = decodeURIComponent(path);
  } catch {
    throw urlError(text, `has a master name that is not percent-encoded right: ${usage}`);
  }
  if (masterName === "" || masterName.includes("/")) {
    throw urlError(
      text,
      `must name the master, as the Sentinels monitor it, in its path and only there: ${usage}`,
    );
  }
  for (const key of query.keys()) {
    if (!SENTINEL_PARAMS.has(key)) {
      throw urlError(
        text,
        `has an unknown parameter "${key}": only sentinelPassword and sentinelUsername`,
      );
    }
  }
  const first = sentinels[0];
  return {
    hostname: first.hostname,
    port: first.port,
    tls,
    username,
    password,
    display: `${scheme}://${sentinels.map((s) => `${urlHost(s.hostname)}:${s.port}`).join(",")}/${
      encodeURIComponent(masterName)
    }`,
    sentinel: {
      masterName,
      sentinels,
      username: query.get("sentinelUsername") ?? undefined,
      password: query.get("sentinelPassword") ?? undefined,
    },
  };
}

/**
 * The target a bus connects to: the URL's, with the Sentinel options laid
 * over it (`sentinels`, `masterName`, and the Sentinels' credentials).
 *
 * @throws {NetkitError} `ERR_REDIS_URL`: a malformed URL, or Sentinels
 *   without a master name.
 */
export function redisTarget(url: string | URL, options: RedisConnectionOptions = {}): RedisTarget {
  const target = parseRedisUrl(url);
  const { sentinels, masterName, sentinelPassword, sentinelUsername } = options;
  if (
    sentinels === undefined && masterName === undefined && sentinelPassword === undefined &&
    sentinelUsername === undefined
  ) {
    return target;
  }
  const base = target.sentinel;
  const list = sentinels ?? base?.sentinels;
  if (list === undefined || list.length === 0) {
    throw new NetkitError(
      "ERR_REDIS_URL",
      "masterName and the Sentinel credentials need Sentinels: give `sentinels`, " +
        "or a redis+sentinel:// URL",
    );
  }
  const name = masterName ?? base?.masterName;
  if (name === undefined || name === "") {
    throw new NetkitError(
      "ERR_REDIS_URL",
      "Sentinels need the master's name: give `masterName` (as in `sentinel monitor <name> …`)",
    );
  }
  const scheme = target.tls ? "rediss+sentinel" : "redis+sentinel";
  const sentinelList = list.map((s) => ({ hostname: s.hostname, port: s.port }));
  return {
    ...target,
    hostname: sentinelList[0].hostname,
    port: sentinelList[0].port,
    display: `${scheme}://${
      sentinelList.map((s) => `${urlHost(s.hostname)}:${s.port}`).join(",")
    }/${encodeURIComponent(name)}`,
    sentinel: {
      masterName: name,
      sentinels: sentinelList,
      username: sentinelUsername ?? base?.username,
      password: sentinelPassword ?? base?.password,
    },
  };
}
