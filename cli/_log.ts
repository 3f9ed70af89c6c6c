// Connection events and errors as one stderr line each.
import { formatAddr } from "../conn.ts";
import type { ServerEvent } from "../internal/stream_server.ts";
import { describeError, log } from "./_common.ts";

/** A server `onEvent` callback that logs to stderr. */
export function eventLogger(
  program: string,
  { quiet = false }: { quiet?: boolean } = {},
): (event: ServerEvent) => void {
  return (event) => {
    switch (event.type) {
      case "open":
        if (!quiet) {
          log(program, `open ${formatAddr(event.remoteAddr)} (${event.connections} open)`);
        }
        break;
      case "close":
        if (!quiet) {
          log(program, `close ${formatAddr(event.remoteAddr)} (${event.connections} open)`);
        }
        break;
      case "refused":
        log(program, `refused ${formatAddr(event.remoteAddr)}: --max-connections reached`);
        break;
      case "idle":
        log(program, `closed idle connection ${formatAddr(event.remoteAddr)}`);
        break;
      case "error": {
        const from = event.remoteAddr ? `${formatAddr(event.remoteAddr)}: ` : "";
        log(program, `error: ${from}${describeError(event.error)}`);
        break;
      }
    }
  };
}
