// ws-server's chat page speaks netkit.v1 in a real browser: the tab reaches
// the server through a TCP relay the test controls, so its connection can be
// cut as a network would cut it. After a drop the page resumes and shows
// every line sent meanwhile, once; after a server restart (the in-memory
// history is gone) it says that lines were lost, and goes on.
//
// With --redis the log is a Redis stream that outlives the server: the page
// survives a ws-server restart (and a Redis crash, with persistence) without
// losing a line.
//
// Needs Chromium (Debian: `apt-get install chromium`), and redis-server for
// the second test; without them a test is reported as ignored.
import assert from "node:assert/strict";
import { connect } from "../websocket/mod.ts";
import { Browser, findChromium, type Tab } from "./_browser.ts";
import { startServer } from "./_helpers.ts";
import { haveRedis, RedisProcess, WsServerProcess } from "./_redis.ts";
import { within } from "./support/time.ts";

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

/** Types `line` into the page's box and sends it, as a user would. */
function say(tab: Tab, line: string): Promise<unknown> {
  return tab.evaluate(`(() => {
    document.getElementById("text").value = ${JSON.stringify(line)};
    document.getElementById("form").requestSubmit();
  })()`);
}

Deno.test({
  name:
    "with --redis the chat page survives a ws-server restart and a Redis crash (append-only file) without losing a line",
  ignore: chromium === undefined || !haveRedis(),
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "netkit-redis-aof-" });
    // Every write on disk before Redis answers: a SIGKILL loses nothing.
    const redis = await RedisProcess.start([
      "--appendonly",
      "yes",
      "--appendfsync",
      "always",
      "--dir",
      dir,
    ]);
    const args = ["--quiet", "--redis", redis.url];
    let a: WsServerProcess | undefined;
    let b: WsServerProcess | undefined;
    try {
      a = await WsServerProcess.start(["--port", "0", ...args]);
      const portA = a.port;
      b = await WsServerProcess.start(["--port", "0", ...args]);
      await using browser = await Browser.launch(chromium!);
      const tab = await browser.newTab(`http://127.0.0.1:${portA}/`);
      assert.equal(await within(30_000, connected(tab), "the page connected"), true);
      // A plain client of the other server: it sees every broadcast, in order.
      await using other = await connect(`ws://127.0.0.1:${b.port}/`);
      const otherGot: string[] = [];
      const expectOther = async (...lines: string[]) => {
        for (const _ of lines) {
          otherGot.push(String(await within(15_000, other.receive(), "a broadcast")));
        }
        assert.deepEqual(otherGot.slice(-lines.length), lines);
      };
      await other.send("before the restart");
      await expectOther("before the restart");
      await within(15_000, lineMatching(tab, /^before the restart$/), "the first line on the page");

      // The page's server stops; lines go on through the other meanwhile.
      const stopped = await a.stop();
      assert.equal(stopped.code, 0, stopped.stderr);
      a = undefined;
      for (const m of ["while down 1", "while down 2"]) await other.send(m);
      await expectOther("while down 1", "while down 2");
      a = await WsServerProcess.start(["--port", String(portA), ...args]);
      assert.deepEqual(
        await within(30_000, lineMatching(tab, /^while down 2$/), "the page resumed"),
        ["before the restart", "reconnected: nothing was missed", "while down 1", "while down 2"],
      );

      // Redis crashes and comes back from its append-only file: same log,
      // same epoch. Both servers reconnect and catch up; the page's own
      // connection never dropped.
      await redis.kill("SIGKILL");
      await redis.restart();
      for (const server of [a, b]) {
        await within(30_000, server.waitFor(/redis: back after/), "the servers back on Redis");
      }
      await other.send("after the Redis crash");
      await expectOther("after the Redis crash");
      await say(tab, "from the page");
      await expectOther("from the page");
      assert.deepEqual(
        await within(30_000, lineMatching(tab, /^from the page$/), "the page's own line"),
        [
          "before the restart",
          "reconnected: nothing was missed",
          "while down 1",
          "while down 2",
          "after the Redis crash",
          "from the page",
        ],
      );
      await tab.close();
    } finally {
      await a?.stop();
      await b?.stop();
      await redis.kill();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
