/**
 * The matrix runner: every attack of a list against one server, one test
 * step each, followed by a well-behaved probe and a check that the process
 * is alive; each outcome is recorded for the table. {@linkcode survives} is
 * a whole hostile-peer test around it.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { Attack } from "./attacks.ts";
import { probe } from "./probe.ts";
import { type Outcome, printMatrix, shortLog } from "./table.ts";
import { launch, makeCertFiles, type ServerKind, type Target } from "./target.ts";
import { captureClientHello } from "./wire.ts";

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

/**
 * A whole hostile-peer test: the server program for `kind` launched with
 * `args` (and fresh certificates), every attack `attacks` lists for a real
 * ClientHello run against it ({@linkcode runMatrix}), then stopped with
 * SIGTERM. The outcome table is printed under `title`, and the certificates
 * removed, whatever happens. Returns how the server stopped.
 */
export async function survives(
  t: Deno.TestContext,
  { kind, args, attacks, title }: {
    kind: ServerKind;
    args: string[];
    attacks: (hello: Uint8Array) => Attack[];
    title: string;
  },
): Promise<{ code: number; ms: number }> {
  const certs = await makeCertFiles();
  const rows: Outcome[] = [];
  try {
    const hello = await captureClientHello();
    await using target = await launch(kind, certs, args);
    await runMatrix(t, target, kind, attacks(hello), rows);
    return await target.stop();
  } finally {
    printMatrix(title, rows);
    await Deno.remove(certs.dir, { recursive: true });
  }
}
