/**
 * The matrix runner: every attack of a list against one server, one test
 * step each, followed by a well-behaved probe and a check that the process
 * is alive; each outcome is recorded for the table.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { Attack } from "./attacks.ts";
import { probe } from "./probe.ts";
import { type Outcome, shortLog } from "./table.ts";
import type { Target } from "./target.ts";

/**
 * Runs `attacks` against `target`, one test step each: the attack, then a
 * well-behaved probe and a check that the process is alive. Records each
 * outcome in `rows`.
 */
export async function runMatrix(
  t: Deno.TestContext,
  target: Target,
  label: string,
  attacks: Attack[],
  rows: Outcome[],
): Promise<void> {
  for (const attack of attacks) {
    const expected = attack.expect[target.kind];
    if (expected === undefined) continue;
    await t.step(attack.name, async () => {
      const { observed, port } = await attack.run(target);
      const lines = await target.settled(port, 1500);
      const logged = shortLog(lines);
      rows.push({ server: label, attack: attack.name, observed, logged });
      assert.match(observed, expected, `${attack.name}: ${observed}`);
      const wantLog = attack.logged?.[target.kind];
      if (wantLog) assert.match(lines.join("\n"), wantLog, `${attack.name}: logged ${logged}`);
      await probe(target);
      assert.ok(await target.alive(), "the server process is alive");
    });
  }
}
