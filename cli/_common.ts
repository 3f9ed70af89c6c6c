// deno-lint-ignore-file no-console
/**
 * What every netkit program shares: flag parsing with usage errors (exit 2),
 * one clear line on failure (exit 1), the listening line and signal handling.
 *
 * Programs stay thin: they parse flags, call the library and print.
 *
 * @module
 */
import { parseArgs, type ParseArgsConfig } from "node:util";
import { NetkitError } from "../errors.ts";
import { hostPort } from "../internal/host.ts";
import { CidrSet } from "../internal/cidr.ts";
import { raiseOpenFilesLimit } from "../internal/rlimit.ts";
import { bypassesProxy, proxyForUrl } from "../proxy/env.ts";

/** A bad flag or flag value: the program prints it and exits with code 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** The flags a program takes, in `node:util` `parseArgs` form. */
export type FlagSpec = NonNullable<ParseArgsConfig["options"]>;

/** Parses `args` strictly: unknown flags and positionals are usage errors. */
export function parseFlags<const O extends FlagSpec>(
  args: string[],
  options: O,
): ReturnType<typeof parseArgs<{ options: O; strict: true; allowPositionals: false }>>["values"] {
  try {
    return parseArgs({ args, options, strict: true, allowPositionals: false }).values;
  } catch (err) {
    // node's messages are good but long ("Unknown option '--x'. To specify a
    // positional argument starting with a '-', place it at the end ...").
    const first = err instanceof Error ? err.message.split("\n")[0] : String(err);
    const message = first.split(". ")[0].replace(/\.$/, "");
    throw new UsageError(message);
  }
}

/** Reads a whole-number flag within `[min, max]`. */
export function intFlag(
  value: string | undefined,
  name: string,
  fallback: number,
  { min = 0, max = Number.MAX_SAFE_INTEGER }: { min?: number; max?: number } = {},
): number {
  if (value === undefined) return fallback;
  if (!/^\d+$/.test(value)) {
    throw new UsageError(`--${name} must be a whole number, got "${value}"`);
  }
  const n = Number(value);
  if (n < min || n > max) {
    throw new UsageError(`--${name} must be between ${min} and ${max}, got ${value}`);
  }
  return n;
}

/** Reads a port flag (0 picks a free port). */
export function portFlag(value: string | undefined, fallback: number): number {
  return intFlag(value, "port", fallback, { min: 0, max: 65535 });
}

/** Reads a duration in seconds (decimals allowed) and returns milliseconds. */
export function secondsFlag(
  value: string | undefined,
  name: string,
  fallbackSeconds: number,
): number {
  if (value === undefined) return fallbackSeconds * 1000;
  if (!/^\d+(\.\d+)?$|^\.\d+$/.test(value)) {
    throw new UsageError(`--${name} must be a number of seconds, like 5 or 0.5, got "${value}"`);
  }
  return Math.round(Number(value) * 1000);
}

/** Reads a flag that must be one of `choices`. */
export function choiceFlag<const T extends string>(
  value: string | undefined,
  name: string,
  choices: readonly T[],
  fallback: T,
): T {
  if (value === undefined) return fallback;
  if (!(choices as readonly string[]).includes(value)) {
    throw new UsageError(`--${name} must be one of ${choices.join(", ")}, got "${value}"`);
  }
  return value as T;
}

/** The line a server prints once it accepts connections. */
export function listeningLine(scheme: string, addr: { hostname: string; port: number }): string {
  return `listening on ${scheme}://${hostPort(addr.hostname, addr.port)}`;
}

/**
 * The one warning every client prints when a TLS server closed without a
 * close_notify (and `--require-close-notify` was not given).
 */
export const TRUNCATION_WARNING =
  "warning: the server closed the connection without a TLS close_notify, so the output may " +
  "be cut short; pass --require-close-notify to make this an error";

let logFormat: "text" | "json" = "text";

/** `--log-format`: `text` (a line per event) or `json` (an object per line). */
export function setLogFormat(format: "text" | "json"): void {
  logFormat = format;
}

/** What a log line may carry besides its message, for `--log-format json`. */
export interface LogFields {
  /** `info` (default), `warn` or `error`. */
  level?: "info" | "warn" | "error";
  /** What happened: `open`, `close`, `refused`, `error`, … */
  event?: string;
  /** The peer's address. */
  remote?: string;
  /** Why (a refusal's reason, an error's code). */
  reason?: string;
}

/**
 * Writes one line to stderr: `program: message`, or with `--log-format json`
 * one JSON object with at least `time`, `level` and `msg`.
 */
export function log(program: string, message: string, fields: LogFields = {}): void {
  if (logFormat === "json") {
    console.error(JSON.stringify({
      time: new Date().toISOString(),
      level: fields.level ?? "info",
      program,
      msg: message,
      ...(fields.event ? { event: fields.event } : {}),
      ...(fields.remote ? { remote: fields.remote } : {}),
      ...(fields.reason ? { reason: fields.reason } : {}),
    }));
    return;
  }
  console.error(`${program}: ${message}`);
}

/**
 * Returns a signal that aborts on the first SIGINT or SIGTERM. Install it
 * before printing the listening line, so a script that signals right after
 * reading the line never kills the process mid-start. A second signal exits
 * at once with code 130 — the user asked twice.
 *
 * Every server program calls it first, so it also prepares the process to
 * hold many connections: the open-files soft limit is raised to the hard
 * limit (as nginx and Go do; best effort, see `internal/rlimit.ts`).
 * `ws-server --workers` calls it in the primary before it starts the
 * workers, and a child process inherits its parent's limits.
 */
export function shutdownSignal(program: string): AbortSignal {
  raiseOpenFilesLimit();
  const controller = new AbortController();
  const signals: Deno.Signal[] = Deno.build.os === "windows" ? ["SIGINT"] : ["SIGINT", "SIGTERM"];
  for (const sig of signals) {
    Deno.addSignalListener(sig, () => {
      if (controller.signal.aborted) {
        log(program, `${sig} again: exiting now`);
        Deno.exit(130);
      }
      // Stop accepting first (the servers close their listeners on abort),
      // then say so: whoever reads the line finds the port closed.
      controller.abort();
      log(program, `${sig}: shutting down`);
    });
  }
  return controller.signal;
}

/**
 * Runs a program's `main`, turning errors into one clear line on stderr and
 * the programs' exit codes (README): 2 for usage errors, 1 for everything else, no
 * stack trace. `main` may return an exit code (default 0).
 */
export async function runMain(
  program: string,
  usage: string,
  main: (args: string[]) => Promise<number | void>,
): Promise<never> {
  const args = Deno.args;
  if (args.includes("--help") || args.includes("-h")) {
    console.log(usage.trim());
    Deno.exit(0);
  }
  let code: number;
  try {
    code = (await main(args)) ?? 0;
  } catch (err) {
    if (err instanceof UsageError) {
      log(program, `${err.message} (see ${program} --help)`);
      code = 2;
    } else {
      log(program, describeError(err));
      code = 1;
    }
  }
  Deno.exit(code);
}

/** One line that says what failed, from any error netkit or Deno throws. */
export function describeError(err: unknown): string {
  if (err instanceof NetkitError) return err.message;
  if (err instanceof Deno.errors.NotFound) return `file not found: ${err.message}`;
  if (err instanceof Deno.errors.PermissionDenied) return `permission denied: ${err.message}`;
  if (err instanceof Error) return err.message.split("\n")[0];
  return String(err);
}

/** The flags every server program shares, in `parseFlags` form. */
export const SERVER_FLAGS = {
  hostname: { type: "string" },
  port: { type: "string" },
  "max-connections": { type: "string" },
  "idle-timeout": { type: "string" },
  grace: { type: "string" },
  quiet: { type: "boolean" },
  "max-connections-per-ip": { type: "string" },
  "accept-rate": { type: "string" },
  "proxy-protocol": { type: "boolean" },
  "proxy-protocol-from": { type: "string", multiple: true },
  metrics: { type: "string" },
  "log-format": { type: "string" },
} as const;

/** The help lines of the operations flags every server shares, text at `column`. */
export function serverOpsHelp(column: number): string {
  const lines: [string, string][] = [
    ["--max-connections-per-ip N", "connections at once per client address (IPv6 per /64);"],
    ["", "one more is closed at once (ws: HTTP 429) (default: no limit)"],
    ["--accept-rate R", "new connections per second per client address, bursts of R;"],
    ["", "over it: closed at once (ws: HTTP 429) (default: no limit)"],
    ["--proxy-protocol", "expect a PROXY protocol v1/v2 header first (HAProxy send-proxy);"],
    ["", "the client's address is then the one it names"],
    ["--proxy-protocol-from C", "CIDR allowed to send it (repeatable; default loopback)"],
    ["--metrics HOST:PORT", "Prometheus text at /metrics and a live page at / on a second"],
    ["", "listener; its address is logged to stderr"],
    ["--log-format F", "text (default) or json: one JSON object per stderr line"],
  ];
  return lines.map(([flag, text]) =>
    `${`  ${flag}`.padEnd(column)}${
      flag.length > column - 3 ? `\n${" ".repeat(column)}` : ""
    }${text}`
  ).join("\n");
}

/** Reads the shared server flags into the options every `serve` takes. */
export function serverOptions(
  flags: {
    hostname?: string;
    port?: string;
    "max-connections"?: string;
    "idle-timeout"?: string;
    grace?: string;
    "max-connections-per-ip"?: string;
    "accept-rate"?: string;
    "proxy-protocol"?: boolean;
    "proxy-protocol-from"?: string[];
    "log-format"?: string;
  },
  defaultPort: number,
): {
  hostname: string;
  port: number;
  maxConnections: number;
  idleTimeout: number;
  gracePeriod: number;
  maxConnectionsPerIp: number;
  acceptRate: number;
  proxyProtocol: false | { from?: string[] };
} {
  setLogFormat(choiceFlag(flags["log-format"], "log-format", ["text", "json"], "text"));
  const from = flags["proxy-protocol-from"];
  if (from !== undefined && !flags["proxy-protocol"]) {
    throw new UsageError("--proxy-protocol-from needs --proxy-protocol");
  }
  for (const cidr of from ?? []) {
    try {
      new CidrSet([cidr]);
    } catch (err) {
      throw new UsageError(`--proxy-protocol-from: ${(err as Error).message}`);
    }
  }
  return {
    maxConnectionsPerIp: intFlag(flags["max-connections-per-ip"], "max-connections-per-ip", 0, {
      min: 1,
    }) || Infinity,
    acceptRate: positiveNumber(flags["accept-rate"], "accept-rate"),
    proxyProtocol: flags["proxy-protocol"] ? (from ? { from } : {}) : false,
    hostname: flags.hostname ?? "127.0.0.1",
    port: portFlag(flags.port, defaultPort),
    maxConnections: intFlag(flags["max-connections"], "max-connections", 0, { min: 1 }) ||
      Infinity,
    idleTimeout: secondsFlag(flags["idle-timeout"], "idle-timeout", 0),
    gracePeriod: secondsFlag(flags.grace, "grace", 5),
  };
}

/** The flags every client takes to choose a proxy. */
export const PROXY_FLAGS = {
  proxy: { type: "string" },
  "no-proxy": { type: "boolean" },
} as const;

/** The help lines for {@linkcode PROXY_FLAGS}, the same in every client, text at `column`. */
export function proxyHelp(column: number): string {
  const flag = (name: string) => `  ${name}`.padEnd(column);
  const more = " ".repeat(column);
  return `${flag("--proxy URL")}go through this proxy: http://[user:pass@]host:port (CONNECT)
${more}or socks5://[user:pass@]host:port; without it HTTPS_PROXY,
${more}HTTP_PROXY, ALL_PROXY and NO_PROXY apply (either case) as in curl
${flag("--no-proxy")}connect directly, whatever the environment says`;
}

/**
 * The proxy a client uses for `target` (`tcp://host:port`, `wss://…`, …),
 * as curl chooses: `--no-proxy` → none; `--proxy URL` → it, unless
 * `NO_PROXY` lists the host; else the environment's `*_PROXY` variables.
 */
export function proxyFlag(
  flags: { proxy?: string; "no-proxy"?: boolean },
  target: string,
): string | undefined {
  if (flags.proxy !== undefined && flags["no-proxy"]) {
    throw new UsageError("--proxy and --no-proxy cannot be used together");
  }
  if (flags["no-proxy"]) return undefined;
  if (flags.proxy === undefined) return proxyForUrl(target);
  if (!/^(https?|socks5h?):\/\//i.test(flags.proxy) && flags.proxy.includes("://")) {
    throw new UsageError(
      `--proxy "${
        flags.proxy.replace(/\/\/[^@/]*@/, "//…@")
      }": use http://host:port or socks5://host:port`,
    );
  }
  const url = new URL(target);
  const noProxy = Deno.env.get("no_proxy") || Deno.env.get("NO_PROXY") || "";
  const port = url.port === "" ? undefined : Number(url.port);
  return bypassesProxy(url.hostname.replace(/^\[|\]$/g, ""), port, noProxy)
    ? undefined
    : flags.proxy;
}

function positiveNumber(value: string | undefined, name: string): number {
  if (value === undefined) return 0;
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) {
    throw new UsageError(`--${name} must be a number above 0, got "${value}"`);
  }
  return n;
}

/**
 * `--cert F --key F`, each given any number of times: the certificate and key
 * pairs in the order given (the first is the server's default). `defaults`
 * (tls-server) stands in when neither flag is given, and for the other flag
 * when one is given once. Different counts are a usage error.
 */
export function certificateFlags(
  flags: { cert?: string[]; key?: string[] },
  defaults?: { cert: string; key: string },
): { certFile: string; keyFile: string }[] {
  let certs = flags.cert ?? [];
  let keys = flags.key ?? [];
  if (defaults !== undefined) {
    if (certs.length === 0 && keys.length <= 1) certs = [defaults.cert];
    if (keys.length === 0 && certs.length === 1) keys = [defaults.key];
  }
  if (certs.length > 0 && keys.length === 0) throw new UsageError("--cert needs --key");
  if (keys.length > 0 && certs.length === 0) throw new UsageError("--key needs --cert");
  if (certs.length !== keys.length) {
    throw new UsageError(
      `--cert is given ${certs.length} times and --key ${keys.length}: ` +
        "give each --cert its --key, in the same order",
    );
  }
  return certs.map((certFile, i) => ({ certFile, keyFile: keys[i] }));
}

/**
 * On SIGHUP, reloads `server`'s certificates and logs one line: how many were
 * reloaded, or why the old ones stay in service. Returns a function that
 * removes the handler. (No SIGHUP on Windows: nothing to do there.)
 */
export function reloadOnSighup(
  program: string,
  server: { reloadCertificates(): Promise<{ certificates: unknown[]; changed: number }> },
): () => void {
  if (Deno.build.os === "windows") return () => {};
  const onHup = () => {
    server.reloadCertificates().then(
      ({ certificates, changed }) =>
        log(
          program,
          `SIGHUP: reloaded ${certificates.length} certificate${
            certificates.length === 1 ? "" : "s"
          } (${changed} changed)`,
        ),
      (err) => log(program, `SIGHUP: kept the old certificates: ${describeError(err)}`),
    );
  };
  Deno.addSignalListener("SIGHUP", onHup);
  return () => Deno.removeSignalListener("SIGHUP", onHup);
}
