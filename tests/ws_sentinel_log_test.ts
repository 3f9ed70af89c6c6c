// ws-server --redis redis+sentinel://… says when the Sentinels name a new
// master: after a failover (the master SIGKILLed, the replica promoted) one
// stderr line naming the master and its new host:port; none for the master
// found at start, none with --quiet. Real processes: a master, its replica
// and three Sentinels (support/redis_sentinel.ts), and two ws-servers.
import assert from "node:assert/strict";
import { haveRedis } from "./_redis.ts";
import { startProgram } from "./support/process.ts";
import { SentinelGroup } from "./support/redis_sentinel.ts";
import { within } from "./support/time.ts";

/** A failover takes seconds: every wait here has a 30 s deadline. */
const WAIT = 30_000;

Deno.test({
  name:
    "ws-server --redis redis+sentinel://…: one line when the Sentinels name a new master after a failover, none with --quiet",
  ignore: !haveRedis(),
  async fn() {
    await using group = await SentinelGroup.start();
    const start = (flags: string[]) =>
      startProgram({
        name: `ws-server ${flags.join(" ")}`.trimEnd(),
        args: [
          "run",
          "-A",
          "--quiet",
          "cli/ws_server.ts",
          "--port",
          "0",
          ...flags,
          "--redis",
          group.url,
        ],
        listenTimeout: 60_000,
        killAfter: 120_000,
      });
    await using loud = await start([]);
    await using quiet = await start(["--quiet"]);
    const isMasterLine = (l: string) => l.includes("redis: master ");
    // The master found at start is no news.
    assert.deepEqual(loud.stderrLines.filter(isMasterLine), []);

    await group.killMaster();
    await within(WAIT, loud.waitForStderr(/redis: lost/), "loud: redis lost");
    await within(WAIT, quiet.waitForStderr(/redis: lost/), "quiet: redis lost");
    await group.promoted();
    const line = `ws-server: redis: master "mymaster" is now 127.0.0.1:${group.replica.port} ` +
      "(failover)";
    assert.equal(
      await within(WAIT, loud.waitForStderr(/redis: master /), "loud: the new master's line"),
      line,
    );
    // The bus is back only through the new master: the line came before, once.
    await within(WAIT, loud.waitForStderr(/redis: back after/), "loud: redis back");
    await within(WAIT, quiet.waitForStderr(/redis: back after/), "quiet: redis back");
    const lines = loud.stderrLines;
    assert.deepEqual(lines.filter(isMasterLine), [line], lines.join("\n"));
    const at = lines.indexOf(line);
    assert.ok(lines.findIndex((l) => /redis: lost/.test(l)) < at, lines.join("\n"));
    assert.ok(lines.findIndex((l) => /redis: back after/.test(l)) > at, lines.join("\n"));
    assert.deepEqual(quiet.stderrLines.filter(isMasterLine), [], quiet.stderr());

    assert.equal((await loud.stop()).code, 0);
    assert.equal((await quiet.stop()).code, 0);
  },
});
