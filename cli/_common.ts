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

/** Writes one line to stderr, prefixed with the program's name. */
export function log(program: string, message: string): void {
  console.error(`${program}: ${message}`);
}

/**
 * Returns a signal that aborts on the first SIGINT or SIGTERM. Install it
 * before printing the listening line, so a script that signals right after
 * reading the line never kills the process mid-start. A second signal exits
 * at once with code 130 — the user asked twice.
 */
export function shutdownSignal(program: string): AbortSignal {
  const controller = new AbortController();
  const signals: Deno.Signal[] = Deno.build.os === "windows" ? ["SIGINT"] : ["SIGINT", "SIGTERM"];
  for (const sig of signals) {
    Deno.addSignalListener(sig, () => {
      if (controller.signal.aborted) {
        log(program, `${sig} again: exiting now`);
        Deno.exit(130);
      }
      log(program, `${sig}: shutting down`);
      controller.abort();
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
} as const;

/** Reads the shared server flags into the options every `serve` takes. */
export function serverOptions(
  flags: {
    hostname?: string;
    port?: string;
    "max-connections"?: string;
    "idle-timeout"?: string;
    grace?: string;
  },
  defaultPort: number,
): {
  hostname: string;
  port: number;
  maxConnections: number;
  idleTimeout: number;
  gracePeriod: number;
} {
  return {
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
