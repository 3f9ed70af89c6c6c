// Connection events and errors as one stderr line each (or one JSON object
// each, with --log-format json).
import { formatAddr } from "../conn.ts";
import type { ServerEvent } from "../internal/stream_server.ts";
import { describeError, log } from "./_common.ts";

const REFUSED: Record<string, string> = {
  "max-connections": "--max-connections reached",
  "per-ip": "--max-connections-per-ip reached for its address",
  rate: "--accept-rate exceeded for its address",
  "proxy-source": "not allowed to send a PROXY header (--proxy-protocol-from)",
  "proxy-header": "no valid PROXY protocol header",
};

/** A server `onEvent` callback that logs to stderr. */
export function eventLogger(
  program: string,
  { quiet = false }: { quiet?: boolean } = {},
): (event: ServerEvent) => void {
  return (event) => {
    const remote = "remoteAddr" in event && event.remoteAddr
      ? formatAddr(event.remoteAddr)
      : undefined;
    switch (event.type) {
      case "open":
        if (!quiet) {
          log(program, `open ${remote} (${event.connections} open)`, { event: "open", remote });
        }
        break;
      case "close":
        if (!quiet) {
          log(program, `close ${remote} (${event.connections} open)`, { event: "close", remote });
        }
        break;
      case "refused": {
        const why = event.error === undefined ? "" : `: ${describeError(event.error)}`;
        log(program, `refused ${remote}: ${REFUSED[event.reason] ?? event.reason}${why}`, {
          level: "warn",
          event: "refused",
          remote,
          reason: event.reason,
        });
        break;
      }
      case "idle":
        log(program, `closed idle connection ${remote}`, { event: "idle", remote });
        break;
      case "error": {
        const from = remote ? `${remote}: ` : "";
        const code = (event.error as { code?: unknown })?.code;
        log(program, `error: ${from}${describeError(event.error)}`, {
          level: "error",
          event: "error",
          remote,
          reason: typeof code === "string" ? code : undefined,
        });
        break;
      }
    }
  };
}
