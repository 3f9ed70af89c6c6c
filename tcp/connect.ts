import type { Conn } from "../conn.ts";
import { formatAddr } from "../conn.ts";
import { SocketConn } from "../internal/socket_conn.ts";
import { connectError, timedOut } from "./errors.ts";
import { openTunnel } from "../proxy/mod.ts";

/** Options for {@linkcode connect}. */
export type ConnectOptions =
  & {
    /**
     * Milliseconds to wait for the connection (name resolution included)
     * before failing with `ETIMEDOUT`; 0 waits as long as the OS does.
     * @default {0}
     */
    timeout?: number;
    /** Gives up on connecting when aborted. */
    signal?: AbortSignal;
  }
  & (
    | {
      /** A host name or IP address; names are resolved. @default {"127.0.0.1"} */
      hostname?: string;
      /** The port. */
      port: number;
      /** Disables Nagle's algorithm, so small writes go out at once. @default {true} */
      noDelay?: boolean;
      /** Enables TCP keep-alive probes. @default {false} */
      keepAlive?: boolean;
      /**
       * Connect through this proxy: `http://[user:pass@]host:port` (HTTP
       * CONNECT) or `socks5://[user:pass@]host:port` (the proxy resolves
       * `hostname`). Failures are a `ProxyError` from `@netkit/netkit/proxy`.
       * No environment variables are read here.
       */
      proxy?: string | URL;
      path?: never;
    }
    | {
      /** A Unix socket path to connect to instead of a TCP port. */
      path: string;
      hostname?: never;
      port?: never;
      noDelay?: never;
      keepAlive?: never;
      proxy?: never;
    }
  );

/**
 * Connects to a TCP server (or a Unix socket) and resolves to a
 * {@linkcode Conn}.
 *
 * @throws {NetworkError} `ECONNREFUSED`, `ETIMEDOUT`, `ENOTFOUND`, … with a
 *   message that says what to check.
 *
 * @example Send a line, read the echo
 * ```ts
 * import { connect, serve } from "@netkit/netkit/tcp";
 * import { readUntil, writeAll } from "@netkit/netkit/io";
 * import assert from "node:assert/strict";
 *
 * await using server = serve({ port: 0 }, (conn) => conn.readable.pipeTo(conn.writable));
 * await using conn = await connect({ port: server.addr.port });
 * await writeAll(conn.writable, "hello\n");
 * assert.equal(new TextDecoder().decode((await readUntil(conn.readable, "\n"))!), "hello\n");
 * ```
 */
export async function connect(options: ConnectOptions): Promise<Conn> {
  const socket = await connectSocket(options);
  return new SocketConn(socket);
}

/** Connects with Deno: timeout, signal and error translation. Internal to netkit. */
export async function connectSocket(options: ConnectOptions): Promise<Deno.Conn> {
  if (options.proxy !== undefined && options.path === undefined) {
    const tunnel = await openTunnel(
      options.proxy,
      { hostname: options.hostname ?? "127.0.0.1", port: options.port },
      { timeout: options.timeout, signal: options.signal },
    );
    if (options.noDelay !== false) tunnel.setNoDelay(true);
    if (options.keepAlive) tunnel.setKeepAlive(true);
    return tunnel;
  }
  const target: { path: string } | { hostname: string; port: number } = options.path !== undefined
    ? { path: options.path }
    : { hostname: options.hostname ?? "127.0.0.1", port: options.port! };
  const timeout = options.timeout ?? 0;
  const controller = new AbortController();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const signals = [controller.signal];
  if (options.signal) signals.push(options.signal);
  const onUserAbort = () => controller.abort(options.signal!.reason);
  options.signal?.addEventListener("abort", onUserAbort, { once: true });
  options.signal?.throwIfAborted();
  let timedOutFlag = false;
  if (timeout > 0) {
    timer = setTimeout(() => {
      timedOutFlag = true;
      controller.abort();
    }, timeout);
  }
  try {
    const attempt = "path" in target
      ? Deno.connect({ transport: "unix", path: target.path })
      : Deno.connect({ hostname: target.hostname, port: target.port, signal: controller.signal });
    // Deno.connect may not stop name resolution on abort: race it, and
    // close a connection that arrives after we gave up.
    const aborted = new Promise<never>((_, reject) => {
      controller.signal.addEventListener("abort", () => reject(controller.signal.reason), {
        once: true,
      });
    });
    attempt.then((late) => controller.signal.aborted && late.close(), () => {});
    const socket = await Promise.race([attempt, aborted]);
    if (socket.remoteAddr.transport === "tcp") {
      const tcp = socket as Deno.TcpConn;
      if (options.noDelay !== false) tcp.setNoDelay(true);
      if (options.keepAlive) tcp.setKeepAlive(true);
    }
    return socket;
  } catch (err) {
    if (timedOutFlag) {
      throw timedOut("path" in target ? target.path : formatAddr(target), timeout, err);
    }
    if (options.signal?.aborted) throw options.signal.reason;
    throw connectError(err, target, timeout || undefined);
  } finally {
    clearTimeout(timer);
    options.signal?.removeEventListener("abort", onUserAbort);
  }
}
