// ws-server's chat page speaks netkit.v1 in a real browser: the tab reaches
// the server through a TCP relay the test controls, so its connection can be
// cut as a network would cut it. After a drop the page resumes and shows
// every line sent meanwhile, once; after a server restart (the in-memory
// history is gone) it says that lines were lost, and goes on.
//
// Needs Chromium (Debian: `apt-get install chromium`); without it the test
// is reported as ignored.
import assert from "node:assert/strict";
import { connect } from "../websocket/mod.ts";
import { Browser, findChromium, type Tab } from "./_browser.ts";
import { startServer } from "./_helpers.ts";

const SERVER = "cli/ws_server.ts";

/** A TCP relay to `port` whose connections the test can cut. */
function relayTo(port: () => number) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const open = new Set<Deno.Conn>();
  const piping = new Set<Promise<unknown>>();
  const cut = (c: Deno.Conn) => {
    open.delete(c);
    try {
      c.close();
    } catch {
      // Already closed.
    }
  };
  const accepting = (async () => {
    for await (const down of listener) {
      open.add(down);
      const job = (async () => {
        let up: Deno.Conn;
        try {
          up = await Deno.connect({ hostname: "127.0.0.1", port: port() });
        } catch {
          return cut(down);
        }
        open.add(up);
        await Promise.allSettled([
          down.readable.pipeTo(up.writable),
          up.readable.pipeTo(down.writable),
        ]);
        cut(down);
        cut(up);
      })();
      piping.add(job);
      job.finally(() => piping.delete(job));
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    /** Cuts every relayed connection, as a network drop would. */
    cutAll: () => [...open].forEach(cut),
    async close() {
      listener.close();
      [...open].forEach(cut);
      await accepting.catch(() => {});
      await Promise.allSettled([...piping]);
    },
  };
}

/** Resolves once the page says it is connected. */
function connected(tab: Tab): Promise<boolean> {
  return tab.evaluate(`new Promise((resolve) => {
    const status = document.getElementById("status");
    const check = () => status.className === "on" && (resolve(true), true);
    if (!check()) new MutationObserver(check).observe(status, { attributes: true, childList: true, subtree: true });
  })`);
}

/** Resolves with the page's lines once one of them matches `pattern`. */
function lineMatching(tab: Tab, pattern: RegExp): Promise<string[]> {
  return tab.evaluate(`new Promise((resolve) => {
    const log = document.getElementById("log");
    const re = new RegExp(${JSON.stringify(pattern.source)});
    const check = () => {
      const lines = [...log.children].map((li) => li.textContent);
      if (lines.some((l) => re.test(l))) resolve(lines);
    };
    check();
    new MutationObserver(check).observe(log, { childList: true, subtree: true });
  })`) as Promise<string[]>;
}

const chromium = findChromium();

Deno.test({
  name:
    "the chat page resumes after a dropped connection with every line once, and says so when a restarted server lost them",
  ignore: chromium === undefined,
  async fn() {
    let server = await startServer(SERVER, ["--port", "0", "--quiet"]);
    const serverPort = server.port;
    const relay = relayTo(() => serverPort);
    try {
      await using browser = await Browser.launch(chromium!);
      const tab = await browser.newTab(`http://127.0.0.1:${relay.port}/`);
      assert.equal(await connected(tab), true);
      // A library client, straight to the server.
      await using other = await connect(`ws://127.0.0.1:${serverPort}/`);
      await other.send("before the drop");
      await lineMatching(tab, /^before the drop$/);

      relay.cutAll();
      for (const m of ["while away 1", "while away 2"]) await other.send(m);
      const lines = await lineMatching(tab, /^while away 2$/);
      assert.deepEqual(lines, [
        "before the drop",
        "reconnected: nothing was missed",
        "while away 1",
        "while away 2",
      ]);

      // A restart: the page comes back, is told the history is gone, says so.
      const { code, stderr } = await server.stop();
      assert.equal(code, 0, stderr);
      server = await startServer(SERVER, ["--port", String(serverPort), "--quiet"]);
      const after = await lineMatching(tab, /the server restarted/);
      assert.match(after.at(-1)!, /^reconnected, but messages sent meanwhile are lost/);
      assert.equal(await connected(tab), true);
      await using again = await connect(`ws://127.0.0.1:${serverPort}/`);
      await again.send("after the restart");
      await lineMatching(tab, /^after the restart$/);
      await tab.close();
    } finally {
      await relay.close();
      await server.stop();
    }
  },
});
