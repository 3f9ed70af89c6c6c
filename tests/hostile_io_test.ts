// Lines and frames over every limit io enforces, sent by a hostile peer to a
// server on each transport (tcp, tls, ws, wss) whose handler reads with io:
// readLine (maxBytes), readUntil (maxBytes), DelimiterStream
// (maxFrameSize) and LengthPrefixedDecoderStream (maxFrameSize). A record
// exactly at the limit is served; one byte over, or an endless one, costs
// that connection only — a LimitExceededError naming the limit, reported to
// onEvent, with no more than the limit buffered — and the next client is
// served.
import assert from "node:assert/strict";
import type { Conn, ConnHandler } from "../conn.ts";
import { createDevCerts } from "../certs/mod.ts";
import {
  DelimiterStream,
  encodeLengthPrefixed,
  LengthPrefixedDecoderStream,
  LimitExceededError,
  readExact,
  readLine,
  readUntil,
  writeAll,
} from "../io/mod.ts";
import * as tcp from "../tcp/mod.ts";
import * as tls from "../tls/mod.ts";
import * as websocket from "../websocket/mod.ts";
import { type Outcome, printMatrix } from "./support/hostile/mod.ts";
import { concat } from "./support/bytes.ts";
import { delay as sleep } from "./support/time.ts";

const { ca, cert, key } = await createDevCerts({ hosts: ["localhost", "127.0.0.1"] });
const encoder = new TextEncoder();

/** The io reads under attack, with the limit each handler sets. */
const MODES = {
  L: { name: "readLine", limit: "maxBytes", value: 1024 },
  U: { name: 'readUntil("\\r\\n\\r\\n")', limit: "maxBytes", value: 512 },
  D: { name: 'DelimiterStream("\\n")', limit: "maxFrameSize", value: 1000 },
  P: { name: "LengthPrefixedDecoderStream", limit: "maxFrameSize", value: 4096 },
} as const;
type Mode = keyof typeof MODES;

/**
 * The server side: the first byte picks the io read; each record read is
 * answered with its length on a line (L, U, D), or echoed length-prefixed (P).
 */
const protocol: ConnHandler<Conn> = async (conn) => {
  const mode = String.fromCharCode((await readExact(conn.readable, 1))![0]) as Mode;
  const reply = (n: number) => writeAll(conn.writable, `${n}\n`);
  switch (mode) {
    case "L":
      for (let line; (line = await readLine(conn.readable, { maxBytes: 1024 })) !== null;) {
        await reply(encoder.encode(line).length);
      }
      break;
    case "U":
      for (
        let rec;
        (rec = await readUntil(conn.readable, "\r\n\r\n", { maxBytes: 512 })) !== null;
      ) {
        await reply(rec.length);
      }
      break;
    case "D":
      for await (
        const frame of conn.readable.pipeThrough(
          new DelimiterStream("\n", { maxFrameSize: 1000 }),
        )
      ) await reply(frame.length);
      break;
    case "P":
      for await (
        const payload of conn.readable.pipeThrough(
          new LengthPrefixedDecoderStream({ maxFrameSize: 4096 }),
        )
      ) await writeAll(conn.writable, encodeLengthPrefixed(payload, { maxFrameSize: 4096 }));
      break;
  }
};

type Transport = "tcp" | "tls" | "ws" | "wss";

function serveOn(transport: Transport, onError: (error: unknown) => void) {
  const onEvent = (event: { type: string; error?: unknown }) => {
    if (event.type === "error") onError(event.error);
  };
  switch (transport) {
    case "tcp": {
      const server = tcp.serve({ port: 0, onEvent }, protocol);
      return { server, connect: () => tcp.connect({ port: server.addr.port }) };
    }
    case "tls": {
      const server = tls.serve({ port: 0, cert, key, onEvent }, protocol);
      return {
        server,
        connect: () =>
          tls.connect({ hostname: "localhost", port: server.addr.port, caCerts: [ca] }),
      };
    }
    default: {
      const secure = transport === "wss";
      const server = websocket.serve(
        { port: 0, onEvent, ...(secure ? { cert, key } : {}) },
        protocol,
      );
      const url = `${secure ? "wss" : "ws"}://localhost:${server.addr.port}/`;
      return { server, connect: () => websocket.connect(url, { caCerts: [ca] }) };
    }
  }
}

/** A record of `size` bytes for `mode`, as the peer sends it (size counts what the limit counts). */
function record(mode: Mode, size: number): Uint8Array {
  switch (mode) {
    case "L": // maxBytes counts the line with its "\n"
      return encoder.encode("a".repeat(size - 1) + "\n");
    case "U": // maxBytes counts the record with its delimiter
      return encoder.encode("a".repeat(size - 4) + "\r\n\r\n");
    case "D": // maxFrameSize counts the frame without its delimiter
      return encoder.encode("a".repeat(size) + "\n");
    case "P": // maxFrameSize counts the payload
      return encodeLengthPrefixed(new Uint8Array(size).fill(0x61), { maxFrameSize: size });
  }
}

/** What the peer would see as its answer to an accepted record (a hang fails after 5 s). */
async function readAnswer(conn: Conn, mode: Mode, size: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<"no answer">((r) => (timer = setTimeout(() => r("no answer"), 5000)));
  const answer = (async () => {
    if (mode === "P") {
      const header = (await readExact(conn.readable, 4))!;
      const n = new DataView(header.buffer, header.byteOffset, 4).getUint32(0);
      return n === size && (await readExact(conn.readable, n))!.length === size ? "ok" : `${n}`;
    }
    return await readLine(conn.readable);
  })();
  const got = await Promise.race([answer, late]);
  clearTimeout(timer);
  if (got === "no answer") {
    // Unblock the pending read, so that the failure is reported, not a stuck test.
    await conn.close().catch(() => {});
    await answer.catch(() => {});
  }
  assert.equal(got, mode === "P" ? "ok" : String(mode === "L" ? size - 1 : size));
}

/** How the connection ended for the peer: FIN, RST, a WebSocket close code, or still open. */
async function ending(conn: Conn, ms = 3000): Promise<string> {
  const reader = conn.readable.getReader();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<string>((r) => (timer = setTimeout(() => r("still open"), ms)));
  const ended = (async () => {
    try {
      while (!(await reader.read()).done) {
        // Discard.
      }
      const code = (conn as Partial<websocket.WebSocketConn>).closeCode;
      return code === undefined ? "closed (FIN)" : `close ${code}`;
    } catch (err) {
      const code = (conn as Partial<websocket.WebSocketConn>).closeCode;
      if (code !== undefined) return `close ${code}`;
      if (err instanceof Deno.errors.ConnectionReset) return "reset (RST)";
      const errCode = (err as { code?: string }).code;
      return errCode === "ERR_TLS_TRUNCATED" ? "cut off (no TLS close_notify)" : `error ${err}`;
    }
  })();
  try {
    return await Promise.race([ended, late]);
  } finally {
    clearTimeout(timer);
    reader.releaseLock();
  }
}

for (const transport of ["tcp", "tls", "ws", "wss"] as const) {
  Deno.test(`${transport}: lines and frames over every io limit cost their own connection only`, async (t) => {
    const errors: unknown[] = [];
    const rows: Outcome[] = [];
    const { server, connect } = serveOn(transport, (e) => errors.push(e));
    try {
      for (const mode of Object.keys(MODES) as Mode[]) {
        const { name, limit, value } = MODES[mode];
        await t.step(`${name}: exactly ${limit} (${value}) is served`, async () => {
          await using conn = await connect();
          await writeAll(conn.writable, concat([encoder.encode(mode), record(mode, value)]));
          await readAnswer(conn, mode, value);
          rows.push({
            server: transport,
            attack: `${name}, exactly ${limit}`,
            observed: "served",
            logged: "-",
          });
        });
        for (
          const [what, bytes] of [
            [`one byte over ${limit} (${value + 1})`, record(mode, value + 1)],
            [
              mode === "P"
                ? "a header announcing 1 GiB, no payload"
                : `an endless record (${value * 64} bytes, no delimiter)`,
              mode === "P"
                ? new Uint8Array([0x40, 0, 0, 0])
                : encoder.encode("b".repeat(value * 64)),
            ],
          ] as const
        ) {
          await t.step(`${name}: ${what} costs that connection`, async () => {
            const before = errors.length;
            await using conn = await connect();
            // Big writes may fail once the server gave up: that is the point.
            await writeAll(conn.writable, concat([encoder.encode(mode), bytes])).catch(() => {});
            const observed = await ending(conn);
            assert.notEqual(observed, "still open", "the server ends the connection");
            // Reported as a LimitExceededError naming the limit.
            for (let i = 0; i < 100 && errors.length === before; i++) await sleep(20);
            const error = errors[before];
            assert.ok(error instanceof LimitExceededError, `${error}`);
            assert.equal(error.limit, limit);
            assert.equal(error.value, value);
            rows.push({
              server: transport,
              attack: `${name}, ${what}`,
              observed,
              logged: `LimitExceededError ${error.limit} ${error.value}`,
            });
            // The next client is served.
            await using next = await connect();
            await writeAll(next.writable, concat([encoder.encode(mode), record(mode, 10)]));
            await readAnswer(next, mode, 10);
          });
        }
      }
    } finally {
      await server.close();
      printMatrix(`${transport}: io limits under attack`, rows);
    }
  });
}
