import assert from "node:assert/strict";
import { runProgram } from "./_helpers.ts";

Deno.test("deno task demo runs the secure broadcast chat and both clients see every message", async () => {
  const run = await runProgram("cli/demo.ts", []);
  assert.equal(run.code, 0, run.stderr);
  assert.equal(run.stderr, "");
  const lines = run.stdout.split("\n");
  assert.match(lines[0], /^certs {3}made a CA and a certificate for localhost in \d+ ms$/);
  assert.match(lines[1], /^server {2}listening on wss:\/\/127\.0\.0\.1:\d+ \(broadcast mode\)$/);
  for (const text of ["alice: hello, bob!", "bob: hi alice, this went over TLS"]) {
    assert.ok(
      run.stdout.includes(
        `  alice got  ${JSON.stringify(text)}\n  bob   got  ${JSON.stringify(text)}`,
      ),
    );
  }
  assert.ok(run.stdout.includes("  bob   got  binary [ca fe]"));
  assert.match(run.stdout, /bob saw close code 1001 "server shutting down"\n$/);
});
