import assert from "node:assert/strict";
import { connect as tlsConnect } from "../tls/mod.ts";
import * as tcp from "../tcp/mod.ts";
import { readLine, writeAll } from "../io/mod.ts";
import { pseudoRandomBytes, readAll, ROOT, runProgram, startServer } from "./_helpers.ts";
import { tempDevCerts } from "./support/certs.ts";
import { runCommand } from "./support/process.ts";
import { trickleClientHello } from "./support/slowloris.ts";
import { hasTool } from "./support/tools.ts";

const SERVER = "cli/tls_server.ts";
const CLIENT = "cli/tls_client.ts";

// One set of development certificates for the whole file, made by the certs
// module into a temporary folder, removed when the test process ends.
const { dir: DIR, files: FILES, serverArgs: CERT_ARGS, ca: CA } = await tempDevCerts({
  prefix: "netkit-tls-cli-",
  removeOnUnload: true,
});

/** tls-server on a free port with the file's certificates, and `flags`. */
function tlsServer(...flags: string[]) {
  return startServer(SERVER, ["--port", "0", ...flags, ...CERT_ARGS]);
}

/** tls-client to 127.0.0.1:`port` trusting the file's CA (`--ca`), then `args`. */
function trustingClient(port: number | string, ...args: string[]) {
  return runProgram(CLIENT, ["--port", String(port), "--ca", FILES.ca, ...args]);
}

function lines(text: string): string[] {
  return text.trim().split("\n").filter((l) => l !== "");
}

Deno.test("tls-server prints one listening line; tls-client --ca gets the echo; SIGTERM exits 0", async () => {
  await using server = await tlsServer();
  assert.match(server.line, /^listening on tls:\/\/127\.0\.0\.1:\d+$/);
  const run = await trustingClient(server.port, "--message", "Hello over TLS!");
  assert.equal(run.code, 0, run.stderr);
  assert.equal(run.stdout, "Hello over TLS!");
  assert.equal(run.stderr, "");
  // By name too: the certificate covers localhost.
  const byName = ["--hostname", "localhost", "--message", "by name"];
  const named = await trustingClient(server.port, ...byName);
  assert.equal(named.code, 0, named.stderr);
  assert.equal(named.stdout, "by name");
  const { code, stdout, stderr } = await server.stop("SIGTERM");
  assert.equal(code, 0, stderr);
  assert.equal(stdout, "", "nothing but the listening line on stdout");
  assert.match(stderr, /open 127\.0\.0\.1:\d+/);
  assert.match(stderr, /SIGTERM: shutting down/);
});

Deno.test("tls-client in netcat mode relays stdin byte for byte", async () => {
  await using server = await tlsServer("--quiet");
  const input = pseudoRandomBytes(200_000, 11);
  const run = await runProgram(CLIENT, ["--port", String(server.port), "--ca", FILES.ca], {
    stdin: input,
  });
  assert.equal(run.code, 0, run.stderr);
  assert.deepEqual(run.stdoutBytes, input);
});

Deno.test("tls-client without the CA exits 1 with one line saying to pass --ca", async () => {
  await using server = await tlsServer();
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
  await using server = await tlsServer();
  const run = await trustingClient(server.port, "--servername", "example.com");
  assert.equal(run.code, 1);
  assert.equal(lines(run.stderr).length, 1, run.stderr);
  assert.match(
    run.stderr,
    /^tls-client: certificate for "localhost", "127\.0\.0\.1", "::1" does not cover "example\.com": .*--servername/,
  );
  // And a name it covers works through --servername while connecting by address.
  const ok = await trustingClient(server.port, "--servername", "localhost", "--message", "sni");
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(ok.stdout, "sni");
});

Deno.test("tls-client against a plaintext server or a closed port exits 1 with one clear line", async () => {
  await using plain = await startServer("cli/tcp_server.ts", ["--port", "0", "--quiet"]);
  const run = await trustingClient(plain.port);
  assert.equal(run.code, 1);
  assert.match(
    run.stderr,
    new RegExp(`^tls-client: 127\\.0\\.0\\.1:${plain.port} is not speaking TLS`),
  );
  assert.equal(lines(run.stderr).length, 1);
  const port = plain.port;
  await plain.stop();
  const refused = await trustingClient(port);
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
  await using server = await tlsServer();
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
  const run = await trustingClient(server.port, "--message", "alive");
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
  await using server = await tlsServer("--handshake-timeout", "0.3");
  await using slow = await tcp.connect({ port: server.port });
  const trickle = await trickleClientHello(slow);
  await readAll(slow.readable).catch(() => {});
  assert.ok(trickle.sent < 500, "cut off before its hello was complete");
  await slow.close();
  await trickle.done;
  // The server still serves.
  const run = await trustingClient(server.port, "--message", "ok");
  assert.equal(run.stdout, "ok");
  const { stderr } = await server.stop();
  assert.match(stderr, /did not finish its TLS handshake within 0\.3s: closed it/);
});

Deno.test("tls-server --max-connections and --idle-timeout", async () => {
  await using server = await tlsServer("--max-connections", "1", "--idle-timeout", "0.3");
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
  await using server = await tlsServer("--quiet");
  // Stdin stays open until the echo is back, then ends: s_client sends close_notify and exits.
  const { code, stdout, stderr } = await runCommand({
    command: "openssl",
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
    stdin: "hello from openssl\n",
    holdStdinUntil: "hello from openssl\n",
    timeout: 20_000,
  });
  assert.equal(code, 0, stderr);
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
      const run = await trustingClient(port!, "--hostname", "localhost", "--message", "hi node");
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
