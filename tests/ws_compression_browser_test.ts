// permessage-deflate with a real browser: headless Chromium (driven over the
// DevTools Protocol, see _browser.ts) loads ws-server's chat page with
// `--compression shared`; the page's own WebSocket agrees on the extension
// (checked from the page, `ws.extensions`) and chat lines, long ones included,
// flow both ways. Chromium offers permessage-deflate on every connection.
//
// Needs Chromium; without it the test is reported as ignored.
import assert from "node:assert/strict";
import { connect } from "../websocket/mod.ts";
import { Browser, findChromium, type Tab } from "./_browser.ts";
import { startServer } from "./_helpers.ts";
import { shown } from "./support/chat_page.ts";

const chromium = findChromium();

// Runs before the page's scripts: keeps every WebSocket the page makes.
const RECORD_SOCKETS = `
  window.__sockets = [];
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      window.__sockets.push(this);
    }
  };
`;

/** Resolves with the page's first WebSocket's `extensions` once it is open. */
function openExtensions(tab: Tab): Promise<string> {
  return tab.evaluate(`new Promise((resolve) => {
    const check = () => {
      const ws = window.__sockets[0];
      if (ws && ws.readyState === 1) return resolve(ws.extensions), true;
      return false;
    };
    if (!check()) {
      const timer = setInterval(() => check() && clearInterval(timer), 10);
    }
  })`);
}

Deno.test({
  name: "Chromium's chat page agrees on permessage-deflate with ws-server --compression shared",
  ignore: chromium === undefined,
  fn: async () => {
    await using server = await startServer("cli/ws_server.ts", [
      "--port",
      "0",
      "--compression",
      "shared",
    ]);
    const page = `http://127.0.0.1:${server.port}/`;
    await using browser = await Browser.launch(chromium!);
    const tab = await browser.newTab();
    await tab.cdp.send(
      "Page.addScriptToEvaluateOnNewDocument",
      { source: RECORD_SOCKETS },
      tab.sessionId,
    );
    await tab.goto(page);
    assert.equal(await tab.evaluate("document.title"), "netkit chat");
    const extensions = await openExtensions(tab);
    assert.match(extensions, /^permessage-deflate\b/);
    assert.match(extensions, /server_no_context_takeover/);
    assert.match(extensions, /client_no_context_takeover/);

    // A library client in the room, compressed too.
    await using watcher = await connect(page, { compression: true, timeout: 10_000 });
    assert.match(watcher.extensions, /^permessage-deflate/);
    // Over the 1 KiB threshold both ways, and a short one.
    const long = "the quick brown fox jumps over the lazy dog; ".repeat(60).trim();
    await tab.evaluate(`document.getElementById("text").value = ${JSON.stringify(long)}`);
    await tab.evaluate(`document.getElementById("form").requestSubmit()`);
    assert.equal(await shown(tab, long), "self");
    assert.equal(await watcher.receive(), long);
    const fromTerminal = "from a terminal: " + "0123456789".repeat(200);
    await watcher.send(fromTerminal);
    assert.equal(await shown(tab, fromTerminal), "");
    await watcher.send("short");
    assert.equal(await shown(tab, "short"), "");

    await tab.close();
    await watcher.close();
    const { code, stderr } = await server.stop();
    assert.equal(code, 0, stderr);
    assert.match(stderr, /compression shared/);
    assert.doesNotMatch(stderr, /ERR_WS|error:/, stderr);
  },
});
