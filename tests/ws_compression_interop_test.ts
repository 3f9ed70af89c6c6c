// permessage-deflate (RFC 7692) against independent implementations: Node's
// `ws` with perMessageDeflate as client of serve() and as server of connect(),
// for each parameter combination; Python's `websockets` (it offers the
// extension by default) against the ws-server program; and the programs with
// each other (ws-client --compression, ws-server --compression).
import assert from "node:assert/strict";
import type { Buffer } from "node:buffer";
import type { AddressInfo } from "node:net";
// @ts-types="@types/ws"
import WebSocket, { type RawData, WebSocketServer } from "ws";
import { BufferedReader } from "../io/mod.ts";
import { connect, serve } from "../websocket/mod.ts";
import {
  acceptKey,
  DeflateContext,
  encodeFrame,
  Opcode,
  parseExtensions,
} from "../websocket/codec/mod.ts";
import { pseudoRandomBytes, runProgram, startServer } from "./_helpers.ts";
import { concat, equalBytes } from "./support/bytes.ts";
import { jsonMessage } from "./support/messages.ts";

const SERVER = "cli/ws_server.ts";
const CLIENT = "cli/ws_client.ts";
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** ws-server in echo mode on a free port with `--compression <mode>`. */
function echoServer(mode: string) {
  return startServer(SERVER, ["--port", "0", "--mode", "echo", "--compression", mode]);
}

/** What each conversation sends: empty to 200 KiB, text and binary, repeats for the window. */
function conversation(seed: number): (string | Uint8Array)[] {
  const list: (string | Uint8Array)[] = [
    "",
    "x",
    jsonMessage(seed),
    jsonMessage(seed).repeat(3),
    new Uint8Array(0),
    pseudoRandomBytes(1500, seed),
    encoder.encode(jsonMessage(seed + 1).repeat(60)),
    pseudoRandomBytes(200_000, seed + 2),
    jsonMessage(seed).repeat(3), // a repeat: the window holds it under takeover
  ];
  return [...list, ...list.slice(1)];
}

interface WsOptions {
  serverNoContextTakeover?: boolean;
  clientNoContextTakeover?: boolean;
  serverMaxWindowBits?: number;
  clientMaxWindowBits?: number;
}

/** Each combination of the four parameters, as `ws` spells them. */
function combinations(): WsOptions[] {
  const out: WsOptions[] = [];
  for (const serverNoContextTakeover of [false, true]) {
    for (const clientNoContextTakeover of [false, true]) {
      for (const serverMaxWindowBits of [undefined, 8, 10]) {
        for (const clientMaxWindowBits of [undefined, 9]) {
          const o: WsOptions = {};
          if (serverNoContextTakeover) o.serverNoContextTakeover = true;
          if (clientNoContextTakeover) o.clientNoContextTakeover = true;
          if (serverMaxWindowBits !== undefined) o.serverMaxWindowBits = serverMaxWindowBits;
          if (clientMaxWindowBits !== undefined) o.clientMaxWindowBits = clientMaxWindowBits;
          out.push(o);
        }
      }
    }
  }
  return out;
}

/** The same message as `ws` hands it over, for comparison. */
function asBytes(message: string | Uint8Array): Uint8Array {
  return typeof message === "string" ? encoder.encode(message) : message;
}

// ---------------------------------------------------------------------------
// npm:ws as the client.

/** A `ws` client with perMessageDeflate sends `messages` to serve() echoing, and checks each echo. */
async function wsClientWith(
  url: string,
  options: WsOptions,
  messages: (string | Uint8Array)[],
): Promise<void> {
  const socket = new WebSocket(url, { perMessageDeflate: { threshold: 0, ...options } });
  const replies: { bytes: Uint8Array; binary: boolean }[] = [];
  let wake: (() => void) | null = null;
  socket.on("message", (data: RawData, binary: boolean) => {
    replies.push({ bytes: new Uint8Array(data as Buffer), binary });
    wake?.();
  });
  const closed = new Promise<number>((resolve) => socket.once("close", (code) => resolve(code)));
  try {
    await new Promise((resolve, reject) => {
      socket.once("open", resolve);
      socket.once("error", reject);
    });
    for (const [i, message] of messages.entries()) {
      const bytes = asBytes(message);
      const binary = typeof message !== "string";
      if (i % 3 === 2 && bytes.length >= 3) {
        // In three frames: RSV1 on the first only, one deflate stream.
        const third = Math.floor(bytes.length / 3);
        socket.send(bytes.subarray(0, third), { binary, fin: false });
        socket.send(bytes.subarray(third, 2 * third), { binary, fin: false });
        socket.send(bytes.subarray(2 * third), { binary, fin: true });
      } else {
        socket.send(bytes, { binary });
      }
      while (replies.length <= i) await new Promise<void>((resolve) => (wake = resolve));
      assert.ok(equalBytes(replies[i].bytes, bytes), `message ${i} (${bytes.length} B)`);
      assert.equal(replies[i].binary, binary);
    }
    socket.close(1000);
    assert.equal(await closed, 1000);
  } catch (err) {
    socket.terminate();
    await closed;
    throw err;
  }
}

Deno.test("npm:ws client with perMessageDeflate ↔ serve() shared and dedicated, each parameter combination", async () => {
  for (const mode of ["shared", "dedicated"] as const) {
    const agreedHere: string[] = [];
    await using server = serve({ port: 0, compression: mode, compressionThreshold: 0 }, {
      open: (ws) => void agreedHere.push(ws.extensions),
      message: (ws, data) => void ws.send(data),
    });
    for (const [k, options] of combinations().entries()) {
      const label = `${mode}, ws client ${JSON.stringify(options)}`;
      await wsClientWith(`${server.url}/`, options, conversation(k)).catch((err) => {
        throw new Error(`${label}: ${err.message}`, { cause: err });
      });
      // ws reports only the extension's name; the server's side says what was agreed.
      const extensions = agreedHere.pop()!;
      const [agreed] = parseExtensions(extensions);
      assert.equal(agreed?.name, "permessage-deflate", label);
      const names = agreed.params.map((p) => p.name);
      if (mode === "shared") {
        assert.ok(names.includes("server_no_context_takeover"), label);
        assert.ok(names.includes("client_no_context_takeover"), label);
      } else {
        assert.equal(
          names.includes("server_no_context_takeover"),
          options.serverNoContextTakeover === true,
          label,
        );
      }
      if (options.serverMaxWindowBits !== undefined) {
        const bits = agreed.params.find((p) => p.name === "server_max_window_bits")?.value;
        assert.equal(bits, String(options.serverMaxWindowBits), label);
      }
    }
  }
});

Deno.test("npm:ws client: context takeover over 3,000 messages in dedicated mode", async () => {
  await using server = serve({ port: 0, compression: "dedicated", compressionThreshold: 0 }, {
    message: (ws, data) => void ws.send(data),
  });
  const messages = Array.from(
    { length: 3000 },
    (_, i) => i % 10 === 9 ? encoder.encode(jsonMessage(i % 300)) : jsonMessage(i % 300),
  );
  await wsClientWith(`${server.url}/`, {}, messages);
});

// ---------------------------------------------------------------------------
// npm:ws as the server.

Deno.test("connect({ compression }) ↔ npm:ws server with perMessageDeflate, each parameter combination", async () => {
  for (const options of combinations()) {
    const label = `ws server ${JSON.stringify(options)}`;
    // ws's server refuses (400) an offer it cannot meet instead of declining;
    // netkit's offer asks for nothing, so every setting can be met.
    const wss = new WebSocketServer({
      host: "127.0.0.1",
      port: 0,
      perMessageDeflate: { threshold: 0, ...options },
    });
    const errors: Error[] = [];
    let offered: string | undefined;
    wss.on("connection", (socket: WebSocket, request: { headers: Record<string, string> }) => {
      offered = request.headers["sec-websocket-extensions"];
      socket.on("error", (err: Error) => errors.push(err));
      socket.on(
        "message",
        (data: RawData, binary: boolean) => socket.send(data as Buffer, { binary }),
      );
    });
    await new Promise<void>((resolve) => wss.once("listening", () => resolve()));
    const { port } = wss.address() as AddressInfo;
    try {
      const ws = await connect(`ws://127.0.0.1:${port}/`, {
        compression: true,
        compressionThreshold: 0,
        maxPayload: 1 << 20,
      });
      try {
        assert.equal(offered, "permessage-deflate; client_max_window_bits", label);
        const [agreed] = parseExtensions(ws.extensions);
        assert.equal(agreed?.name, "permessage-deflate", label);
        if (options.serverNoContextTakeover) {
          assert.ok(agreed.params.some((p) => p.name === "server_no_context_takeover"), label);
        }
        for (let round = 0; round < 3; round++) {
          for (const [i, message] of conversation(port + round).entries()) {
            await ws.send(message);
            const reply = await ws.receive();
            if (typeof message === "string") assert.equal(reply, message, `${label}: ${i}`);
            else assert.ok(equalBytes(reply as Uint8Array, message), `${label}: ${i}`);
          }
        }
        await ws.close();
        assert.equal(ws.closeCode, 1000);
      } finally {
        ws.destroy();
      }
      assert.deepEqual(errors, [], label);
    } finally {
      for (const socket of wss.clients) socket.terminate();
      await new Promise((resolve) => wss.close(resolve));
    }
  }
});

// ---------------------------------------------------------------------------
// Python's websockets.

/** A Python 3 with the `websockets` package (Debian: python3-websockets), or undefined. */
function findPythonWebsockets(): string | undefined {
  for (const python of ["/usr/bin/python3", "python3"]) {
    try {
      const out = new Deno.Command(python, {
        args: ["-c", "import websockets"],
        stdout: "null",
        stderr: "null",
      }).outputSync();
      if (out.success) return python;
    } catch {
      // Not there.
    }
  }
  return undefined;
}

const python = findPythonWebsockets();

/** The client: JSON-like text (some in fragments) and binary, each echo checked. */
const PYTHON_CLIENT = `
import asyncio, json, sys
import websockets

def message(i):
    items = [{"id": (i * 7919 + k * 104729) % 1000003, "sym": ["AAPL", "MSFT", "GOOG", "AMZN"][(i + k) % 4],
              "px": ((i * 31 + k * 17) % 100000) / 100, "side": "buy" if (i + k) % 3 == 0 else "sell"}
             for k in range(30)]
    return json.dumps({"type": "trades", "seq": i, "items": items})

async def main(url):
    async with websockets.connect(url, max_size=2 ** 22) as ws:
        n = 0
        for i in range(400):
            m = message(i % 50)
            if i % 5 == 0:
                await ws.send([m[:10], m[10:700], m[700:]])  # three frames
            else:
                await ws.send(m)
            assert await ws.recv() == m, i
            n += 1
        b = bytes(range(256)) * 400
        await ws.send(b)
        assert await ws.recv() == b
        print(json.dumps({"extensions": ws.response_headers.get("Sec-WebSocket-Extensions"), "echoed": n + 1}))

asyncio.run(main(sys.argv[1]))
`;

Deno.test({
  name:
    "Python websockets (permessage-deflate by default) ↔ ws-server --compression shared and dedicated",
  ignore: python === undefined,
  fn: async () => {
    for (const mode of ["shared", "dedicated"]) {
      await using server = await echoServer(mode);
      const run = await new Deno.Command(python!, {
        args: ["-c", PYTHON_CLIENT, `ws://127.0.0.1:${server.port}/`],
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.equal(run.code, 0, decoder.decode(run.stderr));
      const result = JSON.parse(decoder.decode(run.stdout));
      assert.equal(result.echoed, 401);
      assert.equal(
        result.extensions,
        mode === "shared"
          ? "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
          : "permessage-deflate", // a bare client_max_window_bits needs no answer
        mode,
      );
      const { code, stderr } = await server.stop();
      assert.equal(code, 0, stderr);
      assert.match(stderr, new RegExp(`compression ${mode}`));
    }
  },
});

// ---------------------------------------------------------------------------
// The programs.

Deno.test("ws-client --compression ↔ ws-server --compression dedicated and shared", async () => {
  const text = jsonMessage(42).repeat(4); // well over the 1 KiB threshold
  for (const mode of ["dedicated", "shared", "off"]) {
    await using server = await echoServer(mode);
    const url = `ws://127.0.0.1:${server.port}/`;
    const run = await runProgram(CLIENT, ["--url", url, "--compression", "--message", text]);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, text + "\n");
    // stdin mode too, several lines.
    const lines = [jsonMessage(1).repeat(2), "short", jsonMessage(2).repeat(2)];
    const relay = await runProgram(CLIENT, ["--url", url, "--compression"], {
      stdin: lines.join("\n") + "\n",
    });
    assert.equal(relay.code, 0, relay.stderr);
    assert.equal(relay.stdout, lines.join("\n") + "\n");
    const { code, stderr } = await server.stop();
    assert.equal(code, 0, stderr);
  }
});

Deno.test("ws-client --compression offers permessage-deflate and inflates what the server compresses", async () => {
  const text = jsonMessage(7).repeat(3);
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  const serving = (async () => {
    const conn = await listener.accept();
    listener.close();
    const reader = new BufferedReader(conn);
    const write = async (bytes: Uint8Array) => {
      for (let off = 0; off < bytes.length;) off += await conn.write(bytes.subarray(off));
    };
    try {
      const head = decoder.decode((await reader.readUntil("\r\n\r\n"))!);
      assert.match(
        head,
        /\r\nsec-websocket-extensions: permessage-deflate; client_max_window_bits\r\n/i,
      );
      const key = /\r\nsec-websocket-key: ([^\r]*)/i.exec(head)![1];
      await write(encoder.encode(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
          `Sec-WebSocket-Accept: ${await acceptKey(key)}\r\n` +
          "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n\r\n",
      ));
      // The client's message: compressed (RSV1), masked.
      const b = (await reader.readExact(2))!;
      assert.equal(b[0] & 0x40, 0x40, "RSV1: the client compressed its message");
      let length = b[1] & 0x7f;
      if (length === 126) {
        const ext = (await reader.readExact(2))!;
        length = (ext[0] << 8) | ext[1];
      }
      const mask = (await reader.readExact(4))!.slice();
      const payload = (await reader.readExact(length))!.slice();
      for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i & 3];
      using inflate = new DeflateContext();
      assert.equal(decoder.decode(inflate.decompress(payload)), text);
      // The answer, compressed in two frames.
      using deflate = new DeflateContext({ noContextTakeover: true });
      const answer = deflate.compress(encoder.encode(text.toUpperCase()));
      await write(concat([
        encodeFrame(Opcode.Text, answer.subarray(0, 20), { fin: false, rsv1: true }),
        encodeFrame(Opcode.Continuation, answer.subarray(20)),
      ]));
      // Its close, answered.
      await reader.readExact(2);
      await write(encodeFrame(Opcode.Close, new Uint8Array([0x03, 0xe8])));
      await reader.readChunk().catch(() => null);
    } finally {
      conn.close();
    }
  })();
  const run = await runProgram(CLIENT, [
    "--url",
    `ws://127.0.0.1:${port}/`,
    "--compression",
    "--message",
    text,
  ]);
  await serving;
  assert.equal(run.code, 0, run.stderr);
  assert.equal(run.stdout, text.toUpperCase() + "\n");
});

Deno.test("ws-server --compression takes off, shared or dedicated; anything else is a usage error", async () => {
  const run = await runProgram(SERVER, ["--port", "0", "--compression", "gzip"]);
  assert.equal(run.code, 2);
  assert.equal(run.stdout, "");
  assert.equal(run.stderr.trim().split("\n").length, 1, run.stderr);
  assert.match(run.stderr, /--compression must be one of off, shared, dedicated, got "gzip"/);
  const help = await runProgram(SERVER, ["--help"]);
  assert.match(help.stdout + help.stderr, /--compression M/);
  const client = await runProgram(CLIENT, ["--compression=yes"]);
  assert.equal(client.code, 2);
});
