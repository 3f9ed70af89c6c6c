/**
 * What this machine offers the tests that need more than Deno: programs on
 * the `PATH` (chromium, redis-server, openssl, node, …) and an IPv6 loopback.
 * The checks are synchronous and cached, so a test file can write
 * `Deno.test({ ignore: !hasTool("openssl"), … })` at the top level and the
 * runner reports the test as ignored, never as passed. (`.ci/run` installs
 * every tool and fails when one is still missing, so CI ignores nothing.)
 *
 * @module
 */

const found = new Map<string, string | undefined>();

/**
 * The full path of the executable `name` on the `PATH` (or `name` itself when
 * it is a path to an executable), or `undefined` when there is none — Deno
 * standing in for it (its `node` shim) does not count. Cached.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { findTool } from "./tools.ts";
 *
 * assert.equal(findTool("surely-no-such-program-here"), undefined);
 * assert.equal(findTool(Deno.execPath()), Deno.execPath());
 * ```
 */
export function findTool(name: string): string | undefined {
  if (found.has(name)) return found.get(name);
  const candidates = name.includes("/")
    ? [name]
    : (Deno.env.get("PATH") ?? "/usr/local/bin:/usr/bin:/bin").split(":")
      .filter((dir) => dir !== "")
      .map((dir) => `${dir}/${name}`);
  let path: string | undefined;
  for (const candidate of candidates) {
    try {
      const info = Deno.statSync(candidate);
      // Windows has no mode bits: a file is enough there.
      if (!info.isFile || ((info.mode ?? 0o111) & 0o111) === 0) continue;
      // Without a real `node`, Deno puts a `node` of its own on the PATH of what
      // it runs: that is Deno, not the tool a test means to talk to.
      if (!name.includes("/") && name !== "deno" && isDenoItself(candidate)) continue;
      path = candidate;
      break;
    } catch {
      // Not there.
    }
  }
  found.set(name, path);
  return path;
}

function isDenoItself(path: string): boolean {
  try {
    return Deno.realPathSync(path) === Deno.realPathSync(Deno.execPath());
  } catch {
    return false;
  }
}

/**
 * Whether the executable `name` is on the `PATH`. Cached.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { hasTool } from "./tools.ts";
 *
 * assert.equal(hasTool("surely-no-such-program-here"), false);
 * ```
 */
export function hasTool(name: string): boolean {
  return findTool(name) !== undefined;
}

let ipv6: boolean | undefined;

/**
 * Whether `::1` can be bound here (containers often have no IPv6). Cached.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { hasIPv6Loopback } from "./tools.ts";
 *
 * assert.equal(typeof hasIPv6Loopback(), "boolean");
 * ```
 */
export function hasIPv6Loopback(): boolean {
  if (ipv6 === undefined) {
    try {
      Deno.listen({ hostname: "::1", port: 0 }).close();
      ipv6 = true;
    } catch {
      ipv6 = false;
    }
  }
  return ipv6;
}
