// --metrics as a person and a scraper see it: handshake failures by cause in
// the Prometheus text, and the live page in headless Chromium — it loads, its
// charts move under load, and a screenshot is kept in test-artifacts/.
import assert from "node:assert/strict";
import { createDevCerts } from "../certs/mod.ts";
import { connect as tcpConnect } from "../tcp/mod.ts";
import { writeAll } from "../io/mod.ts";
import { Browser, findChromium } from "./_browser.ts";
import { runProgram, startServer } from "./_helpers.ts";
import { delay } from "./support/time.ts";

const chromium = findChromium();

async function metricsUrl(server: { waitForStderr(re: RegExp): Promise<string> }) {
  const line = await server.waitForStderr(/metrics on http:/);
  return /http:\/\/127\.0\.0\.1:\d+\//.exec(line)![0];
}

Deno.test("tls-server --metrics counts handshake failures by cause", async () => {
  const { cert, key } = await createDevCerts();
  const dir = await Deno.makeTempDir({ prefix: "netkit-metrics-" });
  try {
    await Deno.writeTextFile(`${dir}/cert.pem`, cert);
    await Deno.writeTextFile(`${dir}/key.pem`, key);
    await using server = await startServer("cli/tls_server.ts", [
      "--port",
      "0",
      "--cert",
      `${dir}/cert.pem`,
      "--key",
      `${dir}/key.pem`,
      "--metrics",
      "127.0.0.1:0",
      "--quiet",
    ]);
    const url = await metricsUrl(server);
    // Plaintext to a TLS port: not TLS.
    {
      await using conn = await tcpConnect({ port: server.port });
      await writeAll(conn.writable, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
      await new Response(conn.readable).arrayBuffer().catch(() => {});
    }
    // A client that does not trust the certificate: it aborts the handshake.
    await runProgram("cli/tls_client.ts", ["--port", String(server.port), "--message", "x"]);
    let metrics = "";
    for (let i = 0; i < 50; i++) {
      metrics = await (await fetch(`${url}metrics`)).text();
      if (/cause="ERR_TLS_NOT_TLS"\} 1/.test(metrics)) break;
      await delay(20);
    }
    assert.match(metrics, /^# TYPE netkit_handshake_failures_total counter$/m);
    assert.match(metrics, /^netkit_handshake_failures_total\{cause="ERR_TLS_NOT_TLS"\} 1$/m);
    assert.match(metrics, /^netkit_handshake_failures_total\{cause="ERR_TLS_[A-Z_]+"\} 1$/m);
    assert.equal((await server.stop("SIGTERM")).code, 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "the live page loads in Chromium and its charts move under load (screenshot kept)",
  ignore: chromium === undefined,
  async fn() {
    await using server = await startServer("cli/tcp_server.ts", [
      "--port",
      "0",
      "--metrics",
      "127.0.0.1:0",
      "--quiet",
    ]);
    const url = await metricsUrl(server);
    await using browser = await Browser.launch(chromium!);
    const tab = await browser.newTab();
    await tab.goto(url);
    assert.equal(await tab.evaluate("document.title"), "netkit — live");
    const points = () =>
      tab.evaluate(
        `document.querySelector("#svg-bytesIn polyline").getAttribute("points").split(" ").length`,
      ) as Promise<number>;
    const nowText = () =>
      tab.evaluate(`document.getElementById("now-bytesIn").textContent`) as Promise<string>;
    // Load for a few seconds: 64 KiB echoed every 20 ms.
    const stop = AbortSignal.timeout(3500);
    const load = (async () => {
      const chunk = new Uint8Array(64 * 1024);
      while (!stop.aborted) {
        await using conn = await tcpConnect({ port: server.port });
        await writeAll(conn.writable, chunk);
        await conn.closeWrite();
        await new Response(conn.readable).arrayBuffer();
        await delay(20);
      }
    })();
    let moved = false;
    for (let i = 0; i < 60 && !moved; i++) {
      await delay(100);
      moved = (await points()) > 1 && (await nowText()) !== "0 B/s" && (await nowText()) !== "–";
    }
    await load;
    assert.ok(moved, `the bytes chart shows traffic (now: ${await nowText()})`);
    const png = await tab.screenshot();
    assert.deepEqual([...png.subarray(1, 4)], [0x50, 0x4e, 0x47]); // "PNG"
    await Deno.mkdir("test-artifacts", { recursive: true });
    await Deno.writeFile("test-artifacts/metrics-live-page.png", png);
    assert.equal((await server.stop("SIGTERM")).code, 0);
  },
});
