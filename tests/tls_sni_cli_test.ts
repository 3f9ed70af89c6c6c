// tls-server with several --cert/--key pairs, chosen by SNI, reloaded on
// SIGHUP: tls-client --servername verifies each name against the certificate
// it is served, so a client that succeeds was served the right one.
import assert from "node:assert/strict";
import { type CertificateAndKey, createCA, createServerCert } from "../certs/mod.ts";
import { runProgram, startServer } from "./_helpers.ts";

const SERVER = "cli/tls_server.ts";
const CLIENT = "cli/tls_client.ts";

const DIR = await Deno.makeTempDir({ prefix: "netkit-sni-cli-" });
globalThis.addEventListener("unload", () => Deno.removeSync(DIR, { recursive: true }));
const ca = await createCA();
const CA_FILE = `${DIR}/ca.pem`;
await Deno.writeTextFile(CA_FILE, ca.cert);

/** Writes a pair as NAME.pem / NAME-key.pem in a fresh folder; returns the paths. */
async function writePair(dir: string, name: string, pair: CertificateAndKey) {
  const cert = `${dir}/${name}.pem`;
  const key = `${dir}/${name}-key.pem`;
  await Deno.writeTextFile(cert, pair.cert);
  await Deno.writeTextFile(key, pair.key);
  return { cert, key };
}

async function freshDir(): Promise<string> {
  return await Deno.makeTempDir({ dir: DIR });
}

/** A fresh folder with a pair for a.test and one for b.test, in that order. */
async function twoPairs() {
  const dir = await freshDir();
  const a = await writePair(dir, "a", await createServerCert(ca, { hosts: ["a.test"] }));
  const b = await writePair(dir, "b", await createServerCert(ca, { hosts: ["b.test"] }));
  return { dir, a, b };
}

/** `--cert`/`--key` flags for each pair, in order: the first is the default. */
function certArgs(...pairs: { cert: string; key: string }[]): string[] {
  return pairs.flatMap(({ cert, key }) => ["--cert", cert, "--key", key]);
}

/** tls-client to the server, verifying `servername`; its exit code, stdout and stderr. */
function client(port: number, servername: string, message = servername) {
  return runProgram(CLIENT, [
    "--port",
    String(port),
    "--servername",
    servername,
    "--ca",
    CA_FILE,
    "--message",
    message,
  ]);
}

Deno.test("tls-server with two --cert/--key pairs serves each name its certificate; unknown names get the first", async () => {
  const { a, b } = await twoPairs();
  await using server = await startServer(SERVER, ["--port", "0", ...certArgs(a, b)]);
  for (const name of ["a.test", "b.test"]) {
    const run = await client(server.port, name);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, name);
  }
  // Served a.test's certificate (the default), which does not cover c.test.
  const unknown = await client(server.port, "c.test");
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /a\.test/);
  const { code, stdout, stderr } = await server.stop("SIGTERM");
  assert.equal(code, 0, stderr);
  assert.equal(stdout, "");
  assert.match(stderr, /serving 2 certificates: a\.test \(default\); b\.test/);
});

Deno.test("tls-server reloads its certificates on SIGHUP: new connections see the new one, and it keeps running", async () => {
  const { dir, a, b } = await twoPairs();
  await using server = await startServer(SERVER, ["--port", "0", "--quiet", ...certArgs(a, b)]);
  // new.b.test is not covered yet: the default certificate is served for it.
  assert.equal((await client(server.port, "new.b.test")).code, 1);

  await writePair(dir, "b", await createServerCert(ca, { hosts: ["b.test", "new.b.test"] }));
  const from = server.stderrLines.length;
  assert.ok(server.kill("SIGHUP"));
  assert.equal(
    await server.waitForStderr(/SIGHUP/, from),
    "tls-server: SIGHUP: reloaded 2 certificates (1 changed)",
  );
  const run = await client(server.port, "new.b.test", "renewed");
  assert.equal(run.code, 0, run.stderr);
  assert.equal(run.stdout, "renewed");
  assert.equal((await client(server.port, "a.test")).code, 0);
  assert.equal(server.exited, undefined, "still running");
  const { code } = await server.stop("SIGTERM");
  assert.equal(code, 0);
});

Deno.test("tls-server on SIGHUP with a broken file logs one line naming it and keeps the old certificates", async () => {
  const { a, b } = await twoPairs();
  await using server = await startServer(SERVER, ["--port", "0", "--quiet", ...certArgs(a, b)]);
  await Deno.writeTextFile(b.cert, "not a certificate\n");
  const from = server.stderrLines.length;
  assert.ok(server.kill("SIGHUP"));
  const line = await server.waitForStderr(/SIGHUP/, from);
  assert.equal(
    line,
    `tls-server: SIGHUP: kept the old certificates: the certificate file ${b.cert} is not PEM ` +
      `(no "-----BEGIN CERTIFICATE-----"): pass the certificate file, e.g. certs/server.pem`,
  );
  const run = await client(server.port, "b.test");
  assert.equal(run.code, 0, run.stderr);
  assert.equal(run.stdout, "b.test");
  assert.equal(server.exited, undefined, "still running");
  const { code } = await server.stop("SIGTERM");
  assert.equal(code, 0);
});

Deno.test("tls-server refuses --cert/--key counts that do not pair up, and several with --engine deno (exit 2)", async () => {
  const dir = await freshDir();
  const a = await writePair(dir, "a", await createServerCert(ca, { hosts: ["a.test"] }));
  const cases: [string[], RegExp][] = [
    [
      ["--cert", a.cert, "--key", a.key, "--cert", a.cert],
      /--cert is given 2 times and --key 1: give each --cert its --key, in the same order/,
    ],
    [["--cert", a.cert, "--cert", a.cert], /--cert needs --key/],
    [
      ["--engine", "deno", "--cert", a.cert, "--key", a.key, "--cert", a.cert, "--key", a.key],
      /--engine deno serves one certificate/,
    ],
  ];
  for (const [args, message] of cases) {
    const run = await runProgram(SERVER, ["--port", "0", ...args]);
    assert.equal(run.code, 2, `${args.join(" ")}: ${run.stderr}`);
    assert.equal(run.stdout, "");
    assert.match(run.stderr, message);
    assert.equal(run.stderr.trim().split("\n").length, 1, "one line");
  }
});

Deno.test("tls-server with several pairs names a missing second file and exits 1", async () => {
  const dir = await freshDir();
  const a = await writePair(dir, "a", await createServerCert(ca, { hosts: ["a.test"] }));
  const missing = { cert: `${dir}/missing.pem`, key: a.key };
  const run = await runProgram(SERVER, ["--port", "0", ...certArgs(a, missing)]);
  assert.equal(run.code, 1);
  assert.equal(
    run.stderr,
    `tls-server: certificate file ${dir}/missing.pem not found: run \`deno task certs\` to make ` +
      "development certificates, or pass --cert with yours\n",
  );
});
