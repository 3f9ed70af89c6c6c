// Every client program through real proxies: --proxy, the curl-style
// environment variables, --no-proxy, and one clear line when the proxy says no.
import assert from "node:assert/strict";
import { runProgram, startServer } from "./_helpers.ts";
import { tempDevCerts } from "./support/certs.ts";
import { freePort } from "./support/ports.ts";
import { hasMicrosocks, hasTinyproxy, startMicrosocks, startTinyproxy } from "./support/proxies.ts";

const certs = await tempDevCerts({ prefix: "netkit-proxy-cli-", removeOnUnload: true });

// No proxy variables from the machine running the tests leak in.
const CLEAN_ENV: Record<string, string> = {
  http_proxy: "",
  https_proxy: "",
  all_proxy: "",
  no_proxy: "",
  HTTP_PROXY: "",
  HTTPS_PROXY: "",
  ALL_PROXY: "",
  NO_PROXY: "",
};

/**
 * A client in netcat mode: stdin stays open until the echo of `line` is
 * back, and only then ends. Proxies such as tinyproxy and microsocks tear
 * the tunnel down at the client's half-close, so a reply still on its way
 * then is lost (README, "Clients through proxies"); this keeps the test to
 * what every proxy does.
 */
function netcat(
  script: string,
  args: string[],
  env: Record<string, string>,
  line: string,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return runProgram(script, args, { stdin: line, holdStdinUntil: line, env });
}

Deno.test({
  name: "tcp-client --proxy http://user:pass@… relays through tinyproxy (CONNECT), byte for byte",
  ignore: !hasTinyproxy,
  async fn() {
    await using proxy = await startTinyproxy({ user: "netkit", pass: "s3cret" });
    await using server = await startServer("cli/tcp_server.ts", ["--port", "0"]);
    const run = await netcat(
      "cli/tcp_client.ts",
      [
        "--port",
        String(server.port),
        "--proxy",
        `http://netkit:s3cr%65t@${proxy.at}`,
      ],
      CLEAN_ENV,
      "through the proxy\n",
    );
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, "through the proxy\n");
    await server.stop("SIGTERM");
  },
});

Deno.test({
  name:
    "tls-client takes ALL_PROXY=socks5://… from the environment; TLS runs end to end through it",
  ignore: !hasMicrosocks,
  async fn() {
    await using proxy = await startMicrosocks();
    await using server = await startServer("cli/tls_server.ts", [
      "--port",
      "0",
      ...certs.serverArgs,
    ]);
    const run = await netcat(
      "cli/tls_client.ts",
      [
        "--hostname",
        "localhost",
        "--port",
        String(server.port),
        "--ca",
        certs.files.ca,
      ],
      { ...CLEAN_ENV, ALL_PROXY: `socks5://${proxy.at}` },
      "proxied tls\n",
    );
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, "proxied tls\n");
    await server.stop("SIGTERM");
  },
});

Deno.test({
  name:
    "ws-client takes http_proxy=socks5://… for a ws:// target; http-get takes http_proxy=http://…",
  ignore: !hasTinyproxy || !hasMicrosocks,
  async fn() {
    await using socks = await startMicrosocks();
    await using http = await startTinyproxy();
    await using server = await startServer("cli/ws_server.ts", ["--port", "0", "--mode", "echo"]);
    const ws = await runProgram("cli/ws_client.ts", [
      "--url",
      `ws://127.0.0.1:${server.port}/`,
      "--message",
      "ws via socks",
    ], { env: { ...CLEAN_ENV, http_proxy: `socks5://${socks.at}` } });
    assert.equal(ws.code, 0, ws.stderr);
    assert.equal(ws.stdout, "ws via socks\n");
    const page = await runProgram(
      "cli/http_get.ts",
      ["--url", `http://127.0.0.1:${server.port}/`],
      {
        env: { ...CLEAN_ENV, http_proxy: `http://${http.at}` },
      },
    );
    assert.equal(page.code, 0, page.stderr);
    assert.equal(page.stdout, "this is a WebSocket endpoint: connect with a WebSocket client\n");
    await server.stop("SIGTERM");
  },
});

Deno.test("--no-proxy connects directly even when the environment names a dead proxy", async () => {
  await using server = await startServer("cli/tcp_server.ts", ["--port", "0"]);
  const dead = `http://127.0.0.1:${freePort()}`;
  const args = ["--port", String(server.port), "--message", "direct"];
  const env = { ...CLEAN_ENV, ALL_PROXY: dead };
  const viaEnv = await runProgram("cli/tcp_client.ts", args, { env });
  assert.equal(viaEnv.code, 1);
  assert.equal(viaEnv.stdout, "");
  assert.match(viaEnv.stderr, /^tcp-client: could not reach the proxy at 127\.0\.0\.1:\d+/);
  assert.equal(viaEnv.stderr.trim().split("\n").length, 1);
  const direct = await runProgram("cli/tcp_client.ts", [...args, "--no-proxy"], { env });
  assert.equal(direct.code, 0, direct.stderr);
  assert.equal(direct.stdout, "direct");
  await server.stop("SIGTERM");
});

Deno.test("NO_PROXY sends a listed host direct, also past --proxy (as curl does)", async () => {
  await using server = await startServer("cli/tcp_server.ts", ["--port", "0"]);
  const run = await runProgram("cli/tcp_client.ts", [
    "--port",
    String(server.port),
    "--message",
    "not proxied",
    "--proxy",
    `http://127.0.0.1:${freePort()}`,
  ], { env: { ...CLEAN_ENV, NO_PROXY: "127.0.0.1" } });
  assert.equal(run.code, 0, run.stderr);
  assert.equal(run.stdout, "not proxied");
  await server.stop("SIGTERM");
});

Deno.test({
  name: "a wrong proxy password is exit 1 with one line that names the proxy, never the password",
  ignore: !hasTinyproxy,
  async fn() {
    await using proxy = await startTinyproxy({ user: "netkit", pass: "right" });
    const run = await runProgram("cli/tcp_client.ts", [
      "--port",
      "7",
      "--proxy",
      `http://netkit:wrong-secret@${proxy.at}`,
    ], { env: CLEAN_ENV });
    assert.equal(run.code, 1);
    assert.match(run.stderr, new RegExp(`^tcp-client: .*${proxy.at.replace(/\./g, "\\.")}`));
    assert.doesNotMatch(run.stderr, /wrong-secret/);
    assert.equal(run.stderr.trim().split("\n").length, 1);
  },
});

Deno.test("--proxy with --no-proxy, or an unknown scheme, is a usage error (exit 2)", async () => {
  const both = await runProgram("cli/tcp_client.ts", ["--proxy", "http://x:1", "--no-proxy"], {
    env: CLEAN_ENV,
  });
  assert.equal(both.code, 2);
  assert.match(both.stderr, /--proxy and --no-proxy cannot be used together/);
  const scheme = await runProgram("cli/ws_client.ts", ["--proxy", "ftp://x:1", "--message", "m"], {
    env: CLEAN_ENV,
  });
  assert.equal(scheme.code, 2);
  assert.match(
    scheme.stderr,
    /--proxy "ftp:\/\/x:1": use http:\/\/host:port or socks5:\/\/host:port/,
  );
});
