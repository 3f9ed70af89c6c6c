/**
 * What is measured: every server and every scenario, as tables. A new
 * family means a new file here (its servers and scenarios) plus a loadgen
 * mode.
 *
 * @module
 */
import type { Family, Options, Scenario } from "../_types.ts";
import { TCP_SCENARIOS, TCP_SERVERS } from "./tcp.ts";
import { TLS_SCENARIOS, TLS_SERVERS } from "./tls.ts";
import { WS_SCENARIOS, WS_SERVERS } from "./ws.ts";
import { DEFLATE_SCENARIOS, DEFLATE_SERVERS } from "./compression.ts";
import { FANOUT_10K_SCENARIOS, FANOUT_10K_SERVERS } from "./connections.ts";

/** Every server, family by family. */
export const SERVERS = [
  ...TCP_SERVERS,
  ...TLS_SERVERS,
  ...WS_SERVERS,
  ...DEFLATE_SERVERS,
  ...FANOUT_10K_SERVERS,
];
/** Every scenario, family by family. */
export const SCENARIOS = [
  ...TCP_SCENARIOS,
  ...TLS_SCENARIOS,
  ...WS_SCENARIOS,
  ...DEFLATE_SCENARIOS,
  ...FANOUT_10K_SCENARIOS,
];

/** The servers a scenario runs against: its group (ws: echo or broadcast), else its family. */
export const groupOf = (x: { family: Family; group?: string }): string => x.group ?? x.family;

/** The fan-out window in use: `--window`, else the scenario's, else 32. */
export const windowOf = (sc: Scenario, opts: Options): number => opts.window ?? sc.window ?? 32;

/** The scenario's title for the tables, with its window filled in. */
export const titleOf = (sc: Scenario, opts: Options): string =>
  sc.title.replace("{window}", String(windowOf(sc, opts)));
