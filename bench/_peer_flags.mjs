// deno-lint-ignore-file no-console
// The flags of the peer broadcast servers written for Node and Bun
// (node_ws_broadcast.mjs, bun_ws_broadcast.mjs): plain JavaScript that both
// runtimes load as it is, with nothing of netkit's.
import process from "node:process";

/**
 * Parses `--hostname H`, `--port N` and, when `compressionModes` is given,
 * `--compression MODE` (also as `--flag=value`). A bad flag or value prints
 * one line naming the flags and exits 2.
 *
 * @example
 * ```js
 * import assert from "node:assert/strict";
 * import { parsePeerFlags } from "./_peer_flags.mjs";
 *
 * assert.deepEqual(parsePeerFlags(["--port=0", "--compression", "shared"], ["off", "shared"]), {
 *   hostname: "127.0.0.1",
 *   port: 0,
 *   compression: "shared",
 * });
 * ```
 *
 * @param {string[]} args the arguments, `process.argv.slice(2)`
 * @param {string[]} [compressionModes] the values `--compression` takes; the first is the default
 * @returns {{ hostname: string, port: number, compression: string | undefined }}
 */
export function parsePeerFlags(args, compressionModes) {
  let hostname = "127.0.0.1";
  let port = 0;
  let compression = compressionModes?.[0];
  for (let i = 0; i < args.length; i++) {
    const [flag, inline] = args[i].split(/=(.*)/s, 2);
    const value = inline ?? args[++i];
    if (flag === "--hostname" && value !== undefined) hostname = value;
    else if (flag === "--port" && /^\d+$/.test(value ?? "") && Number(value) < 65536) {
      port = Number(value);
    } else if (flag === "--compression" && compressionModes?.includes(value)) {
      compression = value;
    } else {
      const modes = compressionModes ? ` --compression ${compressionModes.join("|")}` : "";
      console.error(`bad flag or value: ${flag} (flags: --hostname H --port N${modes})`);
      process.exit(2);
    }
  }
  return { hostname, port, compression };
}
