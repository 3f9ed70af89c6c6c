// End to end in a real browser: ws-server in broadcast mode serves its chat
// page on a plain GET; two tabs of a headless Chromium (driven over the
// DevTools Protocol with netkit's own WebSocket client) load it, and what is
// typed in one appears in the other, over ws:// and wss://.
//
// Needs Chromium (Debian: `apt-get install chromium`; `.ci/run` installs
// it). Without it the test is reported as ignored. Set
// NETKIT_SCREENSHOTS=<dir> to keep a PNG of each chat page.
//
// wss://: Chromium is told to accept exactly the test server's key with
// --ignore-certificate-errors-spki-list (the SHA-256 of its certificate's
// SubjectPublicKeyInfo). Unlike --ignore-certificate-errors, which accepts
// anything, a wrong or swapped certificate still fails; and unlike importing
// the dev CA into an NSS database, it needs no certutil and touches nothing
// outside the temporary profile.
import assert from "node:assert/strict";
import { connect } from "../websocket/mod.ts";
import { Browser, findChromium, spkiHash } from "./_browser.ts";
import { startServer } from "./_helpers.ts";
import { tempDevCerts } from "./support/certs.ts";
import { connected, say, shown } from "./support/chat_page.ts";

const SERVER = "cli/ws_server.ts";

const chromium = findChromium();

Deno.test(
  "the chat page in headless Chromium: two tabs talk through ws-server over ws:// and wss://",
  {
    ignore: chromium === undefined,
  },
  async (t) => {
    await using certs = await tempDevCerts({
      hosts: ["localhost", "127.0.0.1"],
      prefix: "netkit-browser-",
    });
    await using browser = await Browser.launch(chromium!, {
      extraArgs: [`--ignore-certificate-errors-spki-list=${await spkiHash(certs.cert)}`],
    });

    for (const scheme of ["ws", "wss"] as const) {
      await t.step(`${scheme}://`, async () => {
        const tls = scheme === "wss" ? certs.serverArgs : [];
        await using server = await startServer(SERVER, ["--port", "0", ...tls]);
        assert.match(server.line, new RegExp(`^listening on ${scheme}://127\\.0\\.0\\.1:\\d+$`));
        const page = scheme === "wss"
          ? `https://localhost:${server.port}/`
          : `http://127.0.0.1:${server.port}/`;
        // A library client in the room too: the tabs' messages go through the server.
        await using watcher = await connect(page, { caCerts: [certs.ca], timeout: 10_000 });

        const a = await browser.newTab(page);
        const b = await browser.newTab(page);
        for (const tab of [a, b]) {
          assert.equal(await tab.evaluate("document.title"), "netkit chat");
          assert.equal(
            await tab.evaluate("location.protocol"),
            scheme === "wss" ? "https:" : "http:",
          );
          // No external assets: nothing loaded besides the page itself.
          assert.deepEqual(
            await tab.evaluate(
              `performance.getEntriesByType("resource").map((e) => e.name).filter((u) => new URL(u).origin !== location.origin)`,
            ),
            [],
          );
          assert.equal(await connected(tab), true);
        }

        // Typed in A, shown in B (and in A as its own), received by the watcher.
        const fromA = `hello from tab A over ${scheme} ✓`;
        await say(a, fromA);
        assert.equal(await shown(b, fromA), "");
        assert.equal(await shown(a, fromA), "self");
        assert.equal(await a.evaluate(`document.getElementById("text").value`), "");
        assert.equal(await watcher.receive(), fromA);

        // And back.
        const fromB = "hi A, B here <b>not bold</b>";
        await say(b, fromB);
        assert.equal(await shown(a, fromB), "");
        assert.equal(await shown(b, fromB), "self");
        assert.equal(await watcher.receive(), fromB);
        // Markup is shown as text, never parsed.
        assert.equal(await a.evaluate(`document.querySelectorAll("#log b").length`), 0);

        // A message from outside the browser reaches both tabs.
        await watcher.send("from a terminal");
        for (const tab of [a, b]) assert.equal(await shown(tab, "from a terminal"), "");

        const shots = Deno.env.get("NETKIT_SCREENSHOTS");
        if (shots) {
          await Deno.mkdir(shots, { recursive: true });
          await Deno.writeFile(`${shots}/chat-${scheme}-a.png`, await a.screenshot());
          await Deno.writeFile(`${shots}/chat-${scheme}-b.png`, await b.screenshot());
        }

        for (const tab of [a, b]) await tab.close();
        await watcher.close();
        const { code, stderr } = await server.stop();
        assert.equal(code, 0, stderr);
        // The page asked for nothing the server had to refuse (e.g. /favicon.ico → 404).
        // (Chromium's idle preconnects may be logged as cut off by the shutdown: fine.)
        assert.doesNotMatch(stderr, /\(answered [45]\d\d\)|-> [45]\d\d/, stderr);
      });
    }
  },
);
