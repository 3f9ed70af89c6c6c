import assert from "node:assert/strict";
import { writeDevCerts } from "../certs/mod.ts";
import { connect as tlsConnect } from "../tls/mod.ts";
import * as tcp from "../tcp/mod.ts";
import { readLine, writeAll } from "../io/mod.ts";
import { pseudoRandomBytes, readAll, ROOT, runProgram, startServer } from "./_helpers.ts";
import { hasTool } from "./support/tools.ts";

const SERVER = "cli/tls_server.ts";
const CLIENT = "cli/tls_client.ts";

// One set of development certificates for the whole file, made by the certs
// module into a temporary folder, removed when the test process ends.
const DIR = await Deno.makeTempDir({ prefix: "netkit-tls-cli-" });
globalThis.addEventListener("unload", () => Deno.removeSync(DIR, { recursive: true }));
const FILES = (await writeDevCerts({ out: DIR })).files;
const CERT_ARGS = ["--cert", FILES.cert, "--key", FILES.key];
const CA = await Deno.readTextFile(FILES.ca);

function lines(text: string): string[] {
  return text.trim().split("\n").filter((l) => l !== "");
}

Deno.test("tls-server prints one listening line; tls-client --ca gets the echo; SIGTERM exits 0", async () => {
  await using server = await startServer(SERVER, ["--port", "0", ...CERT_ARGS]);
  assert.match(server.line, /^listening on tls:\/\/127\.0\.0\.1:\d+$/);
  const run = await runProgram(CLIENT, [
    "--port",
    String(server.port),
    "--ca",
    FILES.ca,
    "--message",
    "Hello over TLS!",
  ]);
  assert.equal(run.code, 0, run.stderr);
  assert.equal(run.stdout, "Hello over TLS!");
  assert.equal(run.stderr, "");
  // By name too: the certificate covers localhost.
  const byName = await runProgram(CLIENT, [
    "--hostname",
    "localhost",
    "--port",
    String(server.port),
    "--ca",
    FILES.ca,
    "--message",
    "by name",
  ]);
  assert.equal(byName.code, 0, byName.stderr);
  assert.equal(byName.stdout, "by name");
  const { code, stdout, stderr } = await server.stop("SIGTERM");
  assert.equal(code, 0, stderr);
  assert.equal(stdout, "", "nothing but the listening line on stdout");
  assert.match(stderr, /open 127\.0\.0\.1:\d+/);
  assert.match(stderr, /SIGTERM: shutting down/);
});

Deno.test("tls-client in netcat mode relays stdin byte for byte", async () => {
  await using server = await startServer(SERVER, ["--port", "0", "--quiet", ...CERT_ARGS]);
  const input = pseudoRandomBytes(200_000, 11);
  const run = await runProgram(CLIENT, ["--port", String(server.port), "--ca", FILES.ca], {
    stdin: input,
  });
  assert.equal(run.code, 0, run.stderr);
  assert.deepEqual(run.stdoutBytes, input);
});

Deno.test("tls-client without the CA exits 1 with one line saying to pass --ca", async () => {
  await using server = await startServer(SERVER, ["--port", "0", ...CERT_ARGS]);
  const run = await runProgram(CLIENT, ["--port", String(server.port), "--message", "hi"]);
  assert.equal(run.code, 1);
  assert.equal(run.stdout, "");
  assert.equal(
    run.stderr,
    "tls-client: the server's certificate is not trusted: it was signed by a CA this client does not know; " +
      "pass --ca (caCerts) with the CA that signed it\n",
  );
  const { stderr } = await server.stop();
  assert.match(stderr, /the client rejected this server's certificate \(alert UnknownCA\)/);
});

Deno.test("tls-client --servername with a name the certificate lacks exits 1 naming both", async () => {
  await using server = await startServer(SERVER, ["--port", "0", ...CERT_ARGS]);
  const run = await runProgram(CLIENT, [
    "--port",
    String(server.port),
    "--ca",
    FILES.ca,
    "--servername",
    "example.com",
  ]);
  assert.equal(run.code, 1);
  assert.equal(lines(run.stderr).length, 1, run.stderr);
  assert.match(
    run.stderr,
    /^tls-client: certificate for "localhost", "127\.0\.0\.1", "::1" does not cover "example\.com": .*--servername/,
  );
  // And a name it covers works through --servername while connecting by address.
  const ok = await runProgram(CLIENT, [
    "--port",
    String(server.port),
    "--ca",
    FILES.ca,
    "--servername",
    "localhost",
    "--message",
    "sni",
  ]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(ok.stdout, "sni");
});

Deno.test("tls-client against a plaintext server or a closed port exits 1 with one clear line", async () => {
  await using plain = await startServer("cli/tcp_server.ts", ["--port", "0", "--quiet"]);
  const run = await runProgram(CLIENT, ["--port", String(plain.port), "--ca", FILES.ca]);
  assert.equal(run.code, 1);
  assert.match(
    run.stderr,
    new RegExp(`^tls-client: 127\\.0\\.0\\.1:${plain.port} is not speaking TLS`),
  );
  assert.equal(lines(run.stderr).length, 1);
  const port = plain.port;
  await plain.stop();
  const refused = await runProgram(CLIENT, ["--port", String(port), "--ca", FILES.ca]);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /^tls-client: connection refused by 127\.0\.0\.1:\d+/);
});

Deno.test("tls-client with a missing --ca file exits 1; bad flags exit 2", async () => {
  const run = await runProgram(CLIENT, ["--port", "1", "--ca", `${DIR}/nope.pem`]);
  assert.equal(run.code, 1);
  assert.match(run.stderr, /^tls-client: CA file .*nope\.pem not found \(--ca\)/);
  assert.equal(lines(run.stderr).length, 1);
  for (
    const [script, args, pattern] of [
      [CLIENT, ["--port", "x"], /^tls-client: --port must be a whole number, got "x"/],
      [CLIENT, ["--timeout", "soon"], /^tls-client: --timeout must be a number of seconds/],
      [CLIENT, ["--bogus"], /^tls-client: Unknown option '--bogus'/],
      [
        SERVER,
        ["--handshake-timeout", "10s"],
        /^tls-server: --handshake-timeout must be a number of seconds/,
      ],
      [SERVER, ["--port", "70000"], /^tls-server: --port must be between 0 and 65535/],
    ] as const
  ) {
    const bad = await runProgram(script, [...args]);
    assert.equal(bad.code, 2, `${script} ${args.join(" ")}: ${bad.stderr}`);
    assert.match(bad.stderr, pattern);
    assert.equal(lines(bad.stderr).length, 1);
  }
});

Deno.test("tls-server with missing certificate files exits 1, saying to run deno task certs", async () => {
  const run = await runProgram(SERVER, [
    "--port",
    "0",
    "--cert",
    `${DIR}/missing.pem`,
    "--key",
    FILES.key,
  ]);
  assert.equal(run.code, 1);
  assert.equal(run.stdout, "");
  assert.equal(
    run.stderr,
    `tls-server: certificate file ${DIR}/missing.pem not found: run \`deno task certs\` to make development certificates, or pass --cert with yours\n`,
  );
  // The defaults, certs/server.pem and certs/server-key.pem, in a folder without them.
  const empty = await Deno.makeTempDir();
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--quiet", `${ROOT}${SERVER}`, "--port", "0"],
      cwd: empty,
      stdin: "null",
      env: { NO_COLOR: "1" },
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 1);
    assert.equal(out.stdout.length, 0);
    assert.match(
      stderr,
      /^tls-server: certificate file certs\/server\.pem not found: run `deno task certs`/,
    );
    assert.equal(lines(stderr).length, 1);
  } finally {
    await Deno.remove(empty, { recursive: true });
  }
});

Deno.test("a plaintext client and garbage bytes cost tls-server that connection only", async () => {
  await using server = await startServer(SERVER, ["--port", "0", ...CERT_ARGS]);
  {
    await using conn = await tcp.connect({ port: server.port });
    await writeAll(conn.writable, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    await readAll(conn.readable).catch(() => {});
  }
  {
    await using conn = await tcp.connect({ port: server.port });
    await writeAll(conn.writable, pseudoRandomBytes(10_000, 3));
    await readAll(conn.readable).catch(() => {});
  }
  const run = await runProgram(CLIENT, [
    "--port",
    String(server.port),
    "--ca",
    FILES.ca,
    "--message",
    "alive",
  ]);
  assert.equal(run.code, 0, run.stderr);
  assert.equal(run.stdout, "alive");
  const { code, stderr } = await server.stop();
  assert.equal(code, 0);
  assert.match(
    stderr,
    /error: 127\.0\.0\.1:\d+: the client is not speaking TLS \(it sent plaintext or garbage\)/,
  );
});

Deno.test("tls-server --handshake-timeout closes a slowloris peer that keeps trickling bytes", async () => {
  await using server = await startServer(SERVER, [
    "--port",
    "0",
    "--handshake-timeout",
    "0.3",
    ...CERT_ARGS,
  ]);
  await using slow = await tcp.connect({ port: server.port });
  await writeAll(slow.writable, new Uint8Array([0x16, 0x03, 0x01, 0x02, 0x00]));
  let sent = 0;
  const trickle = (async () => {
    while (sent < 500) {
      await new Promise((r) => setTimeout(r, 20));
      try {
        await writeAll(slow.writable, new Uint8Array([0x01]));
      } catch {
        return;
      }
      sent++;
    }
  })();
  await readAll(slow.readable).catch(() => {});
  assert.ok(sent < 500, "cut off before its hello was complete");
  await slow.close();
  await trickle;
  // The server still serves.
  const run = await runProgram(CLIENT, [
    "--port",
    String(server.port),
    "--ca",
    FILES.ca,
    "--message",
    "ok",
  ]);
  assert.equal(run.stdout, "ok");
  const { stderr } = await server.stop();
  assert.match(stderr, /did not finish its TLS handshake within 0\.3s: closed it/);
});

Deno.test("tls-server --max-connections and --idle-timeout", async () => {
  await using server = await startServer(SERVER, [
    "--port",
    "0",
    "--max-connections",
    "1",
    "--idle-timeout",
    "0.3",
    ...CERT_ARGS,
  ]);
  await using first = await tlsConnect({ hostname: "localhost", port: server.port, caCerts: [CA] });
  await writeAll(first.writable, "1\n");
  assert.equal(await readLine(first.readable), "1");
  {
    await using second = await tcp.connect({ port: server.port });
    assert.equal((await readAll(second.readable).catch(() => new Uint8Array(0))).length, 0);
  }
  // Now idle: the server closes it.
  await readAll(first.readable).catch(() => {});
  const { stderr } = await server.stop();
  assert.match(stderr, /refused 127\.0\.0\.1:\d+: --max-connections reached/);
  assert.match(stderr, /closed idle connection 127\.0\.0\.1:\d+/);
});

Deno.test("openssl s_client verifies tls-server's certificate and gets its echo", {
  ignore: !hasTool("openssl"),
}, async () => {
  await using server = await startServer(SERVER, ["--port", "0", "--quiet", ...CERT_ARGS]);
  const child = new Deno.Command("openssl", {
    args: [
      "s_client",
      "-connect",
      `127.0.0.1:${server.port}`,
      "-CAfile",
      FILES.ca,
      "-servername",
      "localhost",
      "-verify_hostname",
      "localhost",
      "-verify_return_error",
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const killer = setTimeout(() => child.kill("SIGKILL"), 20_000);
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode("hello from openssl\n"));
  // Read until the echo is back, then end stdin: s_client sends close_notify and exits.
  let stdout = "";
  const decoder = new TextDecoder();
  const reader = child.stdout.getReader();
  while (!stdout.includes("hello from openssl\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    stdout += decoder.decode(value, { stream: true });
  }
  await writer.close();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    stdout += decoder.decode(value, { stream: true });
  }
  const status = await child.status;
  const stderr = await new Response(child.stderr).text();
  clearTimeout(killer);
  assert.equal(status.code, 0, stderr);
  assert.match(stdout, /Verify return code: 0 \(ok\)/);
  assert.match(stdout, /hello from openssl\n/);
});

Deno.test(
  "tls-client against Node's tls server (OpenSSL): echo with --ca, and the untrusted error",
  { ignore: !hasTool("node") },
  async () => {
    const script = `
    const tls = require("tls"), fs = require("fs");
    const server = tls.createServer(
      { cert: fs.readFileSync(process.argv[1]), key: fs.readFileSync(process.argv[2]), allowHalfOpen: true },
      (socket) => { socket.on("error", () => {}); socket.pipe(socket); },
    );
    server.on("tlsClientError", () => {});
    server.listen(0, "127.0.0.1", () => console.log(server.address().port));
    process.stdin.on("end", () => process.exit(0)); process.stdin.resume();
  `;
    const child = new Deno.Command("node", {
      args: ["-e", script, FILES.cert, FILES.key],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    try {
      const port = await readLine(child.stdout);
      const run = await runProgram(CLIENT, [
        "--hostname",
        "localhost",
        "--port",
        port!,
        "--ca",
        FILES.ca,
        "--message",
        "hi node",
      ]);
      assert.equal(run.code, 0, run.stderr);
      assert.equal(run.stdout, "hi node");
      const untrusted = await runProgram(CLIENT, ["--port", port!, "--message", "x"]);
      assert.equal(untrusted.code, 1);
      assert.match(untrusted.stderr, /^tls-client: the server's certificate is not trusted/);
    } finally {
      await child.stdin.close();
      await child.status;
      await child.stdout.cancel().catch(() => {});
    }
  },
);

Deno.test("tls-server and tls-client --help print usage and exit 0", async () => {
  const run = await runProgram(SERVER, ["--help"]);
  assert.equal(run.code, 0);
  assert.match(run.stdout, /^tls-server: a TLS echo server/);
  const client = await runProgram(CLIENT, ["--help"]);
  assert.equal(client.code, 0);
  assert.match(client.stdout, /^tls-client: send a message to a TLS server/);
});
