/**
 * permessage-deflate: broadcast of 1 KiB JSON-like messages (different per
 * message) to 1,000 subscribers that all offer the extension, as browsers
 * do, against netkit's ws-server with `--compression off` (the reference),
 * `shared` and `dedicated`, and Bun with its shared compressor (and without
 * compression, for scale). Reported besides deliveries/s and server CPU per
 * delivery: bytes on the wire per delivery and the server's RSS per
 * connection. Runs with the `ws` family (`--only ws`).
 *
 * @module
 */
import type { Scenario, ServerDef } from "../_types.ts";

/** The group these servers and the scenario share. */
export const DEFLATE_GROUP = "ws-deflate";

/** netkit in each mode, and Bun. */
export const DEFLATE_SERVERS: ServerDef[] = [
  {
    id: "netkit-deflate-off",
    family: "ws",
    group: DEFLATE_GROUP,
    label: "netkit ws-server --compression off",
    script: "cli/ws_server.ts",
    args: () => ["--mode", "broadcast", "--port", "0", "--quiet", "--compression", "off"],
    baseline: true,
  },
  {
    id: "netkit-deflate-shared",
    family: "ws",
    group: DEFLATE_GROUP,
    label: "netkit ws-server --compression shared",
    script: "cli/ws_server.ts",
    args: () => ["--mode", "broadcast", "--port", "0", "--quiet", "--compression", "shared"],
  },
  {
    id: "netkit-deflate-dedicated",
    family: "ws",
    group: DEFLATE_GROUP,
    label: "netkit ws-server --compression dedicated",
    script: "cli/ws_server.ts",
    args: () => ["--mode", "broadcast", "--port", "0", "--quiet", "--compression", "dedicated"],
  },
  {
    id: "bun-deflate-shared",
    family: "ws",
    group: DEFLATE_GROUP,
    label: "Bun, shared compressor",
    script: "bench/bun_ws_broadcast.mjs",
    runtime: "bun",
    args: () => ["--port", "0", "--compression", "shared"],
    optional: true,
  },
  {
    id: "bun-deflate-off",
    family: "ws",
    group: DEFLATE_GROUP,
    label: "Bun, no compression",
    script: "bench/bun_ws_broadcast.mjs",
    runtime: "bun",
    args: () => ["--port", "0", "--compression", "off"],
    optional: true,
  },
];

/** The load: every connection offers permessage-deflate; 1 KiB JSON-like payloads. */
export const DEFLATE_SCENARIOS: Scenario[] = [
  {
    id: "ws-deflate-1000",
    family: "ws",
    group: DEFLATE_GROUP,
    title: "permessage-deflate fan-out to 1,000 subscribers, deliveries/s " +
      "(1 KiB JSON-like, window {window})",
    mode: "ws-fanout",
    conns: 1000,
    size: 1024,
    window: 32,
    extra: ["--deflate", "--json"],
  },
];
